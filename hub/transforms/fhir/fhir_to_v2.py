"""FHIR R4 → HL7 v2 (the reverse of :mod:`.v2_to_fhir`, with the same tables read backwards).

What becomes what (a Bundle, or a single resource):

* Patient (+ Encounter, RelatedPerson, AllergyIntolerance, Condition) → ADT, trigger by configuration
  (``adt_trigger: A04`` or ``A08``, the default): MSH, EVN, PID, NK1, PV1, AL1, DG1.
* ServiceRequest → ORM^O01 (``order_message: ORM``) or OML^O21: PID, PV1, ORC, TQ1 (OML), OBR, DG1.
* Appointment → SIU (S12 booked, S15 cancelled; ``siu_trigger`` forces one): SCH, PID, PV1, RGS, AIS, AIL, AIP.
* MedicationRequest → RDE^O11: PID, PV1, ORC, RXE, TQ1, RXR.
* DiagnosticReport + Observation → ORU^R01: PID, PV1, ORC, OBR, OBX (NM, ST, TX, CWE, SN, DT/DTM, TM), NTE.

Identifiers go back to CX with the assigning authority looked up from ``identifier_systems`` (the first key
listed for a system), codes through the code maps' first matching row, times to DTM (an offset equal to the
channel's ``timezone`` is left out, as it was added on the way in). Round trips v2 → FHIR → v2 keep the mapped
fields (tests/transforms/fhir/test_fhir_to_v2.py shows them field by field).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import Field

from hub.errors import Issue, MappingError
from hub.message import Message
from hub.spec import TransformConfig
from hub.transforms.hl7v2 import Hl7Message, new_message

from .document import FhirDocument
from .document import parse as parse_fhir
from .maps import Tables, load_tables
from .validate import validate as validate_fhir

__all__ = ["FhirToV2", "to_v2"]

_DEGREES = {"MD", "DO", "RN", "NP", "PA", "PHD", "DDS", "DPM", "OD", "PHARMD", "LPN", "CNM", "CRNA", "MA", "DC", "PT"}
_PHONE = re.compile(r"^\+(\d{1,3}) \((\d+)\) (\d{3})-(\d{4})(?: x(\d+))?$")
_DT = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$")


class _Out:
    """Builds one v2 message from one Bundle."""

    def __init__(self, data: dict[str, Any], tables: Tables, cfg: FhirToV2.Config) -> None:
        self.t = tables
        self.cfg = cfg
        self.data = data
        if data.get("resourceType") == "Bundle":
            self.entries = [
                e for e in data.get("entry") or [] if isinstance(e, dict) and isinstance(e.get("resource"), dict)
            ]
        else:
            self.entries = [{"resource": data}]
        self.by_url: dict[str, dict[str, Any]] = {}
        for e in self.entries:
            r = e["resource"]
            if e.get("fullUrl"):
                self.by_url[e["fullUrl"]] = r
            if r.get("id"):
                self.by_url[f"{r['resourceType']}/{r['id']}"] = r
        self.msg: Hl7Message | None = None

    # ------------------------------------------------------------------ lookups
    def all(self, rtype: str) -> list[dict[str, Any]]:
        return [e["resource"] for e in self.entries if e["resource"].get("resourceType") == rtype]

    def first(self, rtype: str) -> dict[str, Any] | None:
        found = self.all(rtype)
        return found[0] if found else None

    def deref(self, ref: Any) -> dict[str, Any] | None:
        if not isinstance(ref, dict):
            return None
        r = ref.get("reference")
        if isinstance(r, str):
            return self.by_url.get(r)
        ident = ref.get("identifier")
        if isinstance(ident, dict) and ref.get("type"):
            for res in self.all(ref["type"]):
                if any(
                    i.get("value") == ident.get("value") and i.get("system", "") == ident.get("system", "")
                    for i in res.get("identifier") or []
                ):
                    return res
        return None

    # ------------------------------------------------------------------ writing
    def put(self, path: str, value: Any) -> None:
        if value is None or value == "":
            return
        assert self.msg is not None
        self.msg.set(path, str(value))

    def comps(self, path: str, values: list[Any]) -> None:
        """Write components 1..n of ``path`` (a field or a repetition); empty ones are skipped."""
        for i, v in enumerate(values, 1):
            if v not in (None, ""):
                self.put(f"{path}.{i}", v)

    def dtm(self, value: str | None) -> str:
        if not value:
            return ""
        m = _DT.match(value)
        if m is None:
            return ""
        y, mo, d, h, mi, s, frac, tz = m.groups()
        out = y + (mo or "") + (d or "")
        if h is not None:
            out += h + mi + (s or "00") + (frac or "")
            if tz and tz != self.cfg.timezone:
                out += "+0000" if tz == "Z" else tz.replace(":", "")
        return out

    def cwe(self, cc: dict[str, Any] | None) -> list[str]:
        if not cc:
            return []
        codings = [c for c in cc.get("coding") or [] if isinstance(c, dict)]
        out = ["", "", ""]
        if codings:
            c = codings[0]
            out = [c.get("code", ""), c.get("display", ""), self.t.system_name(c.get("system"))]
        if len(codings) > 1 and not self.t.is_translation(codings[0].get("code"), codings[1]):
            c = codings[1]
            out += [c.get("code", ""), c.get("display", ""), self.t.system_name(c.get("system"))]
        if cc.get("text") and not (codings and codings[0].get("display") == cc["text"]):
            out += [""] * (8 - len(out)) + [cc["text"]]
            if not codings:
                out = ["", cc["text"]]
        return out

    def code_back(self, table: str, cc_or_code: Any) -> str:
        """A FHIR code (or the first coding of a CodeableConcept) → the v2 code of a code map."""
        cm = self.t.code_map(table)
        if isinstance(cc_or_code, dict):
            for c in cc_or_code.get("coding") or []:
                back = cm.back(c.get("code"))
                if back:
                    return back
            first = (cc_or_code.get("coding") or [{}])[0]
            return str(first.get("code", ""))
        return cm.back(cc_or_code, str(cc_or_code or "")) or ""

    def cx(self, ident: dict[str, Any]) -> list[str]:
        auth, key_type = self.t.authority_of(ident.get("system"))
        typ = ((ident.get("type") or {}).get("coding") or [{}])[0].get("code") or key_type
        if ident.get("system") == "http://hl7.org/fhir/sid/us-ssn":
            auth = auth if auth != ident.get("system") else "SSA"
        out = [ident.get("value", ""), "", "", auth, typ]
        period = ident.get("period") or {}
        if period:
            out += ["", self.dtm(period.get("start")), self.dtm(period.get("end"))]
        return out

    def ei(self, ident: dict[str, Any] | None) -> list[str]:
        if not ident:
            return []
        auth, _ = self.t.authority_of(ident.get("system"))
        return [ident.get("value", ""), auth]

    def ident_typed(self, res: dict[str, Any], typ: str) -> dict[str, Any] | None:
        idents: list[dict[str, Any]] = res.get("identifier") or []
        for i in idents:
            if ((i.get("type") or {}).get("coding") or [{}])[0].get("code") == typ:
                return i
        return None

    def xpn(self, name: dict[str, Any]) -> list[str]:
        given = name.get("given") or []
        use = self.t.code_map("name_type").back(name.get("use"), "") if name.get("use") else ""
        return [
            name.get("family", ""),
            given[0] if given else "",
            " ".join(given[1:]),
            (name.get("suffix") or [""])[0],
            (name.get("prefix") or [""])[0],
            "",
            use,
        ]

    def xad(self, a: dict[str, Any]) -> list[str]:
        line = a.get("line") or []
        use = self.t.code_map("address_use").back(a.get("use"), "") if a.get("use") else ""
        if not use and a.get("type") == "postal":
            use = "M"
        out = [
            line[0] if line else "",
            " ".join(line[1:]),
            a.get("city", ""),
            a.get("state", ""),
            a.get("postalCode", ""),
            a.get("country", ""),
            use,
        ]
        if a.get("district"):
            out += ["", a["district"]]
        return out

    def xtn(self, cp: dict[str, Any]) -> list[str]:
        system, value, use = cp.get("system"), cp.get("value", ""), cp.get("use")
        if system == "email":
            return ["", "NET", "Internet", value]
        use_code = self.t.code_map("telecom_use").back(use, "") if use and use != "mobile" else ""
        equip = {"phone": "PH", "fax": "FX", "pager": "BP"}.get(system or "", "PH")
        if use == "mobile":
            equip = "CP"
        m = _PHONE.match(value)
        if m:
            country, area, a, b, ext = m.groups()
            return ["", use_code, equip, "", country, area, a + b, ext or ""]
        return [value, use_code, equip]

    def xcn(self, ref: Any) -> list[str]:
        res = self.deref(ref)
        if res is not None and res.get("resourceType") == "PractitionerRole" and res.get("practitioner"):
            return self.xcn(res["practitioner"])  # (a requester with its facility: the person is the practitioner)
        if res is None:
            display = (ref or {}).get("display", "") if isinstance(ref, dict) else ""
            parts = display.split()
            return ["", parts[-1] if parts else "", parts[0] if len(parts) > 1 else "", " ".join(parts[1:-1])]
        ident = (res.get("identifier") or [{}])[0]
        name = (res.get("name") or [{}])[0]
        given = name.get("given") or []
        suffix = name.get("suffix") or []
        s5, s7 = "", ""
        if len(suffix) >= 2:
            s5, s7 = suffix[0], suffix[1]
        elif suffix:
            (s7, s5) = (suffix[0], "") if suffix[0].upper().replace(".", "") in _DEGREES else ("", suffix[0])
        auth, key_type = self.t.authority_of(ident.get("system"))
        typ = ((ident.get("type") or {}).get("coding") or [{}])[0].get("code") or key_type
        out = [
            ident.get("value", ""),
            name.get("family", ""),
            given[0] if given else "",
            " ".join(given[1:]),
            s5,
            (name.get("prefix") or [""])[0],
            s7,
        ]
        if auth or typ:
            out += ["", auth if auth != typ else typ, "", "", "", typ]
        return out

    def pl(self, ref: Any) -> list[str]:
        res = self.deref(ref)
        if res is None:
            return [((ref or {}).get("display") or "")] if isinstance(ref, dict) else []
        for i in res.get("identifier") or []:
            if i.get("system") == self.t.location_system:
                out: list[str] = i.get("value", "").split("^")
                if res.get("description"):
                    out = out + [""] * (8 - len(out)) + [res["description"]]
                return out
        return [res.get("name", "")]

    def quantity_units(self, q: dict[str, Any]) -> list[str]:
        code, unit, system = q.get("code", ""), q.get("unit", ""), q.get("system", "")
        if not code and not unit:
            return []
        name = "UCUM" if system == "http://unitsofmeasure.org" else self.t.system_name(system)
        if name == "UCUM" and (hit := self.t.code_map("units").get(unit)) and hit[0] == code and unit != code:
            return [unit]  # it came in as a local unit mapped to UCUM: give the local unit back
        return [code or unit, unit, name]

    @staticmethod
    def num(v: Any) -> str:
        if isinstance(v, bool):
            return ""
        if isinstance(v, float) and v.is_integer() and False:
            return str(int(v))
        return json.dumps(v) if isinstance(v, (int, float)) else str(v or "")

    # ------------------------------------------------------------------ segments
    def header(self, mtype: str) -> None:
        c = self.cfg
        sent = self.data.get("identifier")
        ident: dict[str, Any] = sent if isinstance(sent, dict) else {}
        control = ident.get("value") if c.keep_control_id else None
        self.msg = new_message(
            mtype,
            control_id=control or None,
            version=c.version,
            sending_app=c.sending_application,
            sending_facility=c.sending_facility,
            receiving_app=c.receiving_application,
            receiving_facility=c.receiving_facility,
        )
        ts = self.dtm(self.data.get("timestamp"))
        if ts:
            self.put("MSH-7", ts)

    def pid(self, p: dict[str, Any]) -> None:
        self.put("PID-1", "1")
        rep = 0
        ssn = None
        for ident in p.get("identifier") or []:
            if ident.get("system") == "http://hl7.org/fhir/sid/us-ssn":
                ssn = ident.get("value")
                continue
            rep += 1
            self.comps(f"PID-3[{rep}]", self.cx(ident))
        for i, name in enumerate(p.get("name") or [], 1):
            self.comps(f"PID-5[{i}]", self.xpn(name))
        for e in p.get("extension") or []:
            if e.get("url") == "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName":
                self.put("PID-6.1", e.get("valueString"))
            elif e.get("url", "").endswith("us-core-race") or e.get("url", "").endswith("us-core-ethnicity"):
                field = 10 if e["url"].endswith("race") else 22
                n = 0
                for sub in e.get("extension") or []:
                    if sub.get("url") == "ombCategory":
                        n += 1
                        vc = sub.get("valueCoding") or {}
                        self.comps(
                            f"PID-{field}[{n}]",
                            [vc.get("code"), vc.get("display"), "CDCREC"],
                        )
            elif e.get("url") == "http://hl7.org/fhir/StructureDefinition/patient-religion":
                self.comps("PID-17", self.cwe(e.get("valueCodeableConcept")))
        bd = p.get("birthDate")
        bt = next(
            (
                x.get("valueDateTime")
                for x in (p.get("_birthDate") or {}).get("extension") or []
                if x.get("url", "").endswith("patient-birthTime")
            ),
            None,
        )
        self.put("PID-7", self.dtm(bt or bd))
        if p.get("gender"):
            self.put("PID-8", self.code_back("administrative_sex", p["gender"]))
        for i, a in enumerate(p.get("address") or [], 1):
            self.comps(f"PID-11[{i}]", self.xad(a))
        home = [c for c in p.get("telecom") or [] if c.get("use") != "work"]
        work = [c for c in p.get("telecom") or [] if c.get("use") == "work"]
        for i, c in enumerate(home, 1):
            self.comps(f"PID-13[{i}]", self.xtn(c))
        for i, c in enumerate(work, 1):
            self.comps(f"PID-14[{i}]", self.xtn(c))
        comm = (p.get("communication") or [{}])[0].get("language")
        if comm:
            self.comps("PID-15", self.cwe(comm))
        if p.get("maritalStatus"):
            code = self.code_back("marital_status", p["maritalStatus"])
            disp = self.t.code_map("marital_status").v2_display.get(code, "")
            self.comps("PID-16", [code, disp, "HL70002"])
        self.put("PID-19", ssn)
        if "deceasedDateTime" in p:
            self.put("PID-29", self.dtm(p["deceasedDateTime"]))
            self.put("PID-30", "Y")
        elif "deceasedBoolean" in p:
            self.put("PID-30", "Y" if p["deceasedBoolean"] else "N")
        if "multipleBirthInteger" in p:
            self.put("PID-24", "Y")
            self.put("PID-25", p["multipleBirthInteger"])
        elif "multipleBirthBoolean" in p:
            self.put("PID-24", "Y" if p["multipleBirthBoolean"] else "N")

    def pv1(self, enc: dict[str, Any] | None) -> None:
        if enc is None:
            return
        self.put("PV1-1", "1")
        cls = enc.get("class") or {}
        code = cls.get("code", "")
        back = self.t.code_map("patient_class").back(code)
        self.put("PV1-2", back or (code if cls.get("system", "").endswith("v2-0004") else "U"))
        locs = enc.get("location") or []
        active = [x for x in locs if x.get("status") != "completed"] or locs[:1]
        if active:
            self.comps("PV1-3", self.pl(active[0].get("location")))
        prior = [x for x in locs if x.get("status") == "completed" and x not in active]
        if prior:
            self.comps("PV1-6", self.pl(prior[0].get("location")))
        for t in enc.get("type") or []:
            self.put("PV1-4", ((t.get("coding") or [{}])[0]).get("code"))
        field_of = {"ATND": 7, "REF": 8, "CON": 9, "ADM": 17}
        counts: dict[int, int] = {}
        for part in enc.get("participant") or []:
            code = (((part.get("type") or [{}])[0].get("coding") or [{}])[0]).get("code")
            n = field_of.get(code or "")
            if n:
                counts[n] = counts.get(n, 0) + 1
                self.comps(f"PV1-{n}[{counts[n]}]", self.xcn(part.get("individual")))
        st = enc.get("serviceType")
        if st:
            self.put("PV1-10", self.code_back("hospital_service", st))
        visit = next(
            (
                i
                for i in enc.get("identifier") or []
                if not i.get("system", "").startswith(self.t.derived_system("").rstrip(":") or "\0")
            ),
            None,
        )
        if visit is not None and self.t.derived_system("Encounter") != visit.get("system"):
            cx = self.cx(visit)
            self.comps("PV1-19", cx)
        hosp = enc.get("hospitalization") or {}
        for key, n in (("admitSource", 14), ("reAdmission", 13), ("dischargeDisposition", 36)):
            if hosp.get(key):
                self.put(f"PV1-{n}", ((hosp[key].get("coding") or [{}])[0]).get("code"))
        period = enc.get("period") or {}
        self.put("PV1-44", self.dtm(period.get("start")))
        self.put("PV1-45", self.dtm(period.get("end")))
        for _i, rc in enumerate(enc.get("reasonCode") or [], 1):
            self.comps("PV2-3", self.cwe(rc))

    def nk1(self, rps: list[dict[str, Any]]) -> None:
        assert self.msg is not None
        for i, rp in enumerate(rps, 1):
            seg = f"NK1[{i}]"
            self.put(f"{seg}-1", i)
            names = rp.get("name") or []
            if names:
                self.comps(f"{seg}-2", self.xpn(names[0]))
            rels = rp.get("relationship") or []
            if rels:
                self.comps(
                    f"{seg}-3",
                    self.cwe(
                        {
                            "coding": [
                                c
                                for c in rels[0].get("coding") or []
                                if "v2-0063" in c.get("system", "") or not c.get("system")
                            ][:1]
                            or rels[0].get("coding", [])[:1]
                        }
                    ),
                )
            for j, a in enumerate(rp.get("address") or [], 1):
                self.comps(f"{seg}-4[{j}]", self.xad(a))
            home = [c for c in rp.get("telecom") or [] if c.get("use") != "work"]
            for j, c in enumerate(home, 1):
                self.comps(f"{seg}-5[{j}]", self.xtn(c))
            if len(rels) > 1:
                self.comps(f"{seg}-7", self.cwe(rels[1]))
            if rp.get("gender"):
                self.put(f"{seg}-15", self.code_back("administrative_sex", rp["gender"]))
            self.put(f"{seg}-16", self.dtm(rp.get("birthDate")))

    def al1(self, allergies: list[dict[str, Any]]) -> None:
        for i, a in enumerate(allergies, 1):
            seg = f"AL1[{i}]"
            self.put(f"{seg}-1", i)
            cat = (a.get("category") or [""])[0]
            self.put(f"{seg}-2", self.code_back("allergen_type", cat) if cat else "")
            self.comps(f"{seg}-3", self.cwe(a.get("code")))
            if a.get("criticality"):
                self.put(f"{seg}-4", self.code_back("allergy_severity", a["criticality"]))
            elif (a.get("reaction") or [{}])[0].get("severity"):
                self.put(
                    f"{seg}-4", {"severe": "SV", "moderate": "MO", "mild": "MI"}.get(a["reaction"][0]["severity"], "")
                )
            texts = [
                m.get("text")
                for r in a.get("reaction") or []
                for m in r.get("manifestation") or []
                if m.get("text") and m.get("text") != "unspecified"
            ]
            for j, t in enumerate(texts, 1):
                self.put(f"{seg}-5[{j}]", t)
            self.put(f"{seg}-6", self.dtm(a.get("onsetDateTime")))

    def dg1(self, conditions: list[dict[str, Any]], enc: dict[str, Any] | None) -> None:
        uses: dict[int, str] = {}
        if enc is not None:
            for d in enc.get("diagnosis") or []:
                target = self.deref(d.get("condition"))
                if target is not None and d.get("use"):
                    uses[id(target)] = self.code_back("diagnosis_type", d["use"])
        for i, c in enumerate(conditions, 1):
            seg = f"DG1[{i}]"
            self.put(f"{seg}-1", i)
            self.comps(f"{seg}-3", self.cwe(c.get("code")))
            self.put(f"{seg}-5", self.dtm(c.get("onsetDateTime")))
            ver = (((c.get("verificationStatus") or {}).get("coding") or [{}])[0]).get("code")
            self.put(f"{seg}-6", uses.get(id(c)) or ("F" if ver == "confirmed" else "W"))

    def orc_obr(self, sr: dict[str, Any] | None, i: int, *, control: str, report: dict[str, Any] | None = None) -> None:
        res = sr or report or {}
        self.put(f"ORC[{i}]-1", control)
        placer = self.ident_typed(res, "PLAC") or (self.ident_typed(report, "PLAC") if report else None)
        filler = self.ident_typed(res, "FILL") or (self.ident_typed(report, "FILL") if report else None)
        group = self.ident_typed(res, "PGN") or res.get("requisition")  # (the IG: ORC-4 → requisition)
        self.comps(f"ORC[{i}]-2", self.ei(placer))
        self.comps(f"ORC[{i}]-3", self.ei(filler))
        self.comps(f"ORC[{i}]-4", self.ei(group))
        if sr is not None:
            status = self.t.code_map("order_status").back(sr.get("status"))
            if status and sr.get("status") != "active":
                self.put(f"ORC[{i}]-5", status)
            self.put(f"ORC[{i}]-9", self.dtm(sr.get("authoredOn")))
            if sr.get("requester"):
                self.comps(f"ORC[{i}]-12", self.xcn(sr["requester"]))
        self.put(f"OBR[{i}]-1", i)
        self.comps(f"OBR[{i}]-2", self.ei(placer))
        self.comps(f"OBR[{i}]-3", self.ei(filler))
        self.comps(f"OBR[{i}]-4", self.cwe(res.get("code")))
        if sr is not None and sr.get("requester"):
            self.comps(f"OBR[{i}]-16", self.xcn(sr["requester"]))

    # ------------------------------------------------------------------ messages
    def adt(self) -> None:
        trig = self.cfg.adt_trigger
        self.header(f"ADT^{trig}^{'ADT_A05' if trig in ('A28', 'A31', 'A05') else 'ADT_A01'}")
        self.put("EVN-1", trig)
        self.put("EVN-2", self.dtm(self.data.get("timestamp")) or self.msg.get("MSH-7"))  # type: ignore[union-attr]
        p = self.first("Patient")
        if p is None:
            raise MappingError("FHIR → ADT needs a Patient", location="Patient")
        self.pid(p)
        self.nk1(self.all("RelatedPerson"))
        enc = self.first("Encounter")
        if enc is not None:
            self.pv1(enc)
        else:
            self.put("PV1-1", "1")
            self.put("PV1-2", "N")
        self.al1(self.all("AllergyIntolerance"))
        self.dg1(self.all("Condition"), enc)

    def orders(self, kind: str) -> None:
        self.header("ORM^O01^ORM_O01" if kind == "ORM" else "OML^O21^OML_O21")
        p = self.first("Patient") or self.deref((self.first("ServiceRequest") or {}).get("subject"))
        if p is not None:
            self.pid(p)
        self.pv1(self.first("Encounter"))
        for i, sr in enumerate(self.all("ServiceRequest"), 1):
            control = {"revoked": "CA", "on-hold": "HD", "completed": "SC"}.get(sr.get("status", ""), "NW")
            self.orc_obr(sr, i, control=control)
            prio = {"stat": "S", "asap": "A", "routine": "R", "urgent": "T"}.get(sr.get("priority", ""))
            start = sr.get("occurrenceDateTime") or (
                ((sr.get("occurrenceTiming") or {}).get("repeat") or {}).get("boundsPeriod") or {}
            ).get("start")
            if kind == "OML" and (prio or start):
                self.put(f"TQ1[{i}]-1", i)
                self.put(f"TQ1[{i}]-7", self.dtm(start))
                self.put(f"TQ1[{i}]-9", prio)
            elif prio:
                self.put(f"ORC[{i}]-7.6", prio)
                self.put(f"OBR[{i}]-27.6", prio)
        self.dg1([c for c in self.all("Condition")], None)

    def siu(self) -> None:
        apt = self.first("Appointment")
        assert apt is not None
        status = apt.get("status", "booked")
        trig = self.cfg.siu_trigger or ("S15" if status == "cancelled" else "S12")
        self.header(f"SIU^{trig}^SIU_S12")
        self.comps("SCH-1", self.ei(self.ident_typed(apt, "PLAC")))
        self.comps("SCH-2", self.ei(self.ident_typed(apt, "FILL")))
        if apt.get("reasonCode"):
            self.comps("SCH-7", self.cwe(apt["reasonCode"][0]))
        if apt.get("appointmentType"):
            self.comps("SCH-8", self.cwe(apt["appointmentType"]))
        if apt.get("minutesDuration"):
            self.put("SCH-9", apt["minutesDuration"])
            self.comps("SCH-10", ["min", "minutes", "ANS+"])
        self.put("SCH-11.3", apt.get("minutesDuration"))
        self.put("SCH-11.4", self.dtm(apt.get("start")))
        self.put("SCH-11.5", self.dtm(apt.get("end")))
        back = self.t.code_map("appointment_status").back(status)
        if back:
            self.comps("SCH-25", [back, back, "HL70278"])
        if apt.get("comment"):
            self.put("NTE-1", "1")
            self.put("NTE-3", apt["comment"])
        people = [self.deref(p.get("actor")) for p in apt.get("participant") or []]
        patient = next((r for r in people if r and r.get("resourceType") == "Patient"), None) or self.first("Patient")
        if patient:
            self.pid(patient)
        self.pv1(self.first("Encounter"))
        self.put("RGS-1", "1")
        self.put("RGS-2", "A")
        for i, st in enumerate(apt.get("serviceType") or [], 1):
            self.put(f"AIS[{i}]-1", i)
            self.put(f"AIS[{i}]-2", "A")
            self.comps(f"AIS[{i}]-3", self.cwe(st))
            self.put(f"AIS[{i}]-4", self.dtm(apt.get("start")))
        n_l = n_p = 0
        for part in apt.get("participant") or []:
            r = self.deref(part.get("actor"))
            if r is None or part.get("required") == "information-only":  # SCH-12/16/20 contacts: not resources booked
                continue
            if r.get("resourceType") == "Location":
                n_l += 1
                self.put(f"AIL[{n_l}]-1", n_l)
                self.put(f"AIL[{n_l}]-2", "A")
                self.comps(f"AIL[{n_l}]-3", self.pl(part["actor"]))
            elif r.get("resourceType") == "Practitioner":
                n_p += 1
                self.put(f"AIP[{n_p}]-1", n_p)
                self.put(f"AIP[{n_p}]-2", "A")
                self.comps(f"AIP[{n_p}]-3", self.xcn(part["actor"]))
                if part.get("type"):
                    self.comps(f"AIP[{n_p}]-4", self.cwe(part["type"][0]))

    def rde(self) -> None:
        self.header("RDE^O11^RDE_O11")
        mrs = self.all("MedicationRequest")
        p = self.first("Patient") or self.deref(mrs[0].get("subject"))
        if p is not None:
            self.pid(p)
        self.pv1(self.first("Encounter"))
        self.al1(self.all("AllergyIntolerance"))
        for i, mr in enumerate(mrs, 1):
            self.put(
                f"ORC[{i}]-1", {"cancelled": "CA", "on-hold": "HD", "stopped": "DC"}.get(mr.get("status", ""), "NW")
            )
            self.comps(f"ORC[{i}]-2", self.ei(self.ident_typed(mr, "PLAC")))
            self.comps(f"ORC[{i}]-3", self.ei(self.ident_typed(mr, "FILL")))
            self.put(f"ORC[{i}]-9", self.dtm(mr.get("authoredOn")))
            if mr.get("requester"):
                self.comps(f"ORC[{i}]-12", self.xcn(mr["requester"]))
            dose = (mr.get("dosageInstruction") or [{}])[0]
            timing = (((dose.get("timing") or {}).get("code") or {}).get("coding") or [{}])[0].get("code")
            self.put(f"RXE[{i}]-1.2", timing)
            self.comps(f"RXE[{i}]-2", self.cwe(mr.get("medicationCodeableConcept")))
            dq = ((dose.get("doseAndRate") or [{}])[0]).get("doseQuantity") or {}
            if "value" in dq:
                self.put(f"RXE[{i}]-3", self.num(dq["value"]))
                self.comps(f"RXE[{i}]-5", self.quantity_units(dq))
            self.put(f"RXE[{i}]-7", dose.get("text"))
            disp = mr.get("dispenseRequest") or {}
            q = disp.get("quantity") or {}
            if "value" in q:
                self.put(f"RXE[{i}]-10", self.num(q["value"]))
                self.comps(f"RXE[{i}]-11", self.quantity_units(q))
            self.put(f"RXE[{i}]-12", disp.get("numberOfRepeatsAllowed"))
            bounds = ((dose.get("timing") or {}).get("repeat") or {}).get("boundsPeriod") or {}
            if timing or bounds:
                self.put(f"TQ1[{i}]-1", i)
                self.put(f"TQ1[{i}]-3", timing)
                self.put(f"TQ1[{i}]-7", self.dtm(bounds.get("start")))
                self.put(f"TQ1[{i}]-8", self.dtm(bounds.get("end")))
            if dose.get("route"):
                self.comps(f"RXR[{i}]-1", self.cwe(dose["route"]))

    def oru(self) -> None:
        self.header("ORU^R01^ORU_R01")
        reports = self.all("DiagnosticReport")
        p = self.first("Patient") or self.deref(reports[0].get("subject"))
        if p is not None:
            self.pid(p)
        self.pv1(self.first("Encounter"))
        assert self.msg is not None
        for i, dr in enumerate(reports, 1):
            sr = next((self.deref(b) for b in dr.get("basedOn") or [] if self.deref(b)), None)
            self.orc_obr(sr, i, control="RE", report=dr)
            if sr is None:
                self.msg.delete(f"ORC[{i}]")
            self.put(
                f"OBR[{i}]-7", self.dtm(dr.get("effectiveDateTime") or (dr.get("effectivePeriod") or {}).get("start"))
            )
            self.put(f"OBR[{i}]-8", self.dtm((dr.get("effectivePeriod") or {}).get("end")))
            self.put(f"OBR[{i}]-22", self.dtm(dr.get("issued")))
            section = (((dr.get("category") or [{}])[0].get("coding") or [{}])[0]).get("code")
            if section and section != "LAB":
                self.put(f"OBR[{i}]-24", section)
            self.put(
                f"OBR[{i}]-25",
                self.code_back("result_status", dr.get("status")) if dr.get("status") != "unknown" else "",
            )
            obr_text = self.msg.get(f"OBR[{i}]")
            lines = []
            if dr.get("conclusion"):
                lines.append(f"NTE|1||{_esc(dr['conclusion'], self.msg)}")
            for j, ref in enumerate(dr.get("result") or [], 1):
                obs = self.deref(ref)
                if obs is not None:
                    lines.extend(self.obx(obs, j))
            # OBX/NTE go right after their OBR (the writer appends segments at the end otherwise)
            self._insert_after(f"OBR[{i}]", obr_text, lines)

    def _insert_after(self, seg_path: str, _text: Any, lines: list[str]) -> None:
        assert self.msg is not None
        name, _, occ = seg_path.partition("[")
        anchor = self.msg.segment(name, int(occ.rstrip("]")) if occ else 1)
        for line in lines:
            anchor = self.msg.append_segment(line, after=anchor)

    def obx(self, o: dict[str, Any], n: int) -> list[str]:
        """One Observation → OBX (+ NTE) lines in this message's delimiters."""
        tmp = new_message("ORU^R01", encoding_chars=self.msg.enc)  # type: ignore[union-attr]
        keep = self.msg
        self.msg = tmp
        try:
            self.put("OBX-1", n)
            vt, value, units = "", "", []
            if "valueQuantity" in o:
                q = o["valueQuantity"]
                units = self.quantity_units(q)
                if q.get("comparator"):
                    vt = "SN"
                    self.comps("OBX-5", [q["comparator"], self.num(q.get("value"))])
                else:
                    vt, value = "NM", self.num(q.get("value"))
            elif "valueString" in o:
                vt, value = (
                    ("TX" if "\n" in o["valueString"] or len(o["valueString"]) > 199 else "ST"),
                    o["valueString"],
                )
            elif "valueCodeableConcept" in o:
                vt = "CWE"
                self.comps("OBX-5", self.cwe(o["valueCodeableConcept"]))
            elif "valueRange" in o:
                r = o["valueRange"]
                vt = "SN"
                units = self.quantity_units(r.get("low") or {})
                self.comps(
                    "OBX-5",
                    [
                        "",
                        self.num((r.get("low") or {}).get("value")),
                        "-",
                        self.num((r.get("high") or {}).get("value")),
                    ],
                )
            elif "valueRatio" in o:
                r = o["valueRatio"]
                vt = "SN"
                units = self.quantity_units(r.get("numerator") or {})
                self.comps(
                    "OBX-5",
                    [
                        "",
                        self.num((r.get("numerator") or {}).get("value")),
                        ":",
                        self.num((r.get("denominator") or {}).get("value")),
                    ],
                )
            elif "valueDateTime" in o:
                vt, value = ("DT" if len(o["valueDateTime"]) <= 10 else "DTM"), self.dtm(o["valueDateTime"])
            elif "valueTime" in o:
                vt, value = "TM", o["valueTime"].replace(":", "")[:6]
            elif "valueBoolean" in o:
                vt, value = "ST", "true" if o["valueBoolean"] else "false"
            elif "valueInteger" in o:
                vt, value = "NM", str(o["valueInteger"])
            self.put("OBX-2", vt)
            self.comps("OBX-3", self.cwe(o.get("code")))
            if value != "":
                if vt == "TX" and "\n" in value:
                    for k, part in enumerate(value.split("\n"), 1):
                        self.put(f"OBX-5[{k}]", part)
                else:
                    self.put("OBX-5", value)
            self.comps("OBX-6", units)
            rr = (o.get("referenceRange") or [{}])[0]
            self.put(
                "OBX-7",
                rr.get("text")
                or "-".join(self.num((rr.get(k) or {}).get("value")) for k in ("low", "high") if rr.get(k)),
            )
            for k, it in enumerate(o.get("interpretation") or [], 1):
                self.put(f"OBX-8[{k}]", self.code_back("abnormal_flags", it))
            if o.get("status") and o["status"] != "unknown":
                self.put("OBX-11", self.code_back("observation_status", o["status"]))
            self.put("OBX-14", self.dtm(o.get("effectiveDateTime")))
            for k, ref in enumerate(o.get("performer") or [], 1):
                self.comps(f"OBX-16[{k}]", self.xcn(ref))
            lines = [tmp.segment("OBX").text]  # type: ignore[union-attr]
        finally:
            self.msg = keep
        for k, note in enumerate(o.get("note") or [], 1):
            lines.append(f"NTE|{k}||{_esc(note.get('text', ''), self.msg)}")
        return lines

    def run(self) -> Hl7Message:
        kind = self.cfg.message
        if kind == "auto":
            if self.all("DiagnosticReport"):
                kind = "ORU"
            elif self.all("MedicationRequest"):
                kind = "RDE"
            elif self.all("ServiceRequest"):
                kind = self.cfg.order_message
            elif self.all("Appointment"):
                kind = "SIU"
            elif self.all("Patient") or self.all("Encounter"):
                kind = "ADT"
            else:
                types = sorted({e["resource"].get("resourceType", "?") for e in self.entries})
                raise MappingError(
                    f"fhir_to_v2 finds nothing to map in {', '.join(types) or 'an empty Bundle'} (it maps "
                    "Patient/Encounter, ServiceRequest, Appointment, MedicationRequest, DiagnosticReport)"
                )
        if kind == "ADT":
            self.adt()
        elif kind in ("ORM", "OML"):
            self.orders(kind)
        elif kind == "SIU":
            if not self.all("Appointment"):
                raise MappingError("FHIR → SIU needs an Appointment", location="Appointment")
            self.siu()
        elif kind == "RDE":
            self.rde()
        elif kind == "ORU":
            self.oru()
        self.extensions()
        assert self.msg is not None
        return self.msg

    def extensions(self) -> None:
        for rule in self.t.extensions:
            res = self.first(rule.resource)
            if res is None:
                continue
            found = [e for e in res.get("extension") or [] if e.get("url") == rule.url]
            for k, e in enumerate(found if rule.repeat else found[:1], 1):
                path = (
                    rule.source
                    if not rule.repeat
                    else re.sub(r"^([A-Z0-9]{3}(?:\[\d+\])?-\d+)", rf"\1[{k}]", rule.source)
                )
                if "valueCodeableConcept" in e:
                    cw = self.cwe(e["valueCodeableConcept"])
                    for i, c in enumerate(cw, 1):
                        if c:
                            self.put(f"{path}.{i}", c)
                    continue
                v = next((val for key, val in e.items() if key.startswith("value")), None)
                if isinstance(v, bool):
                    v = "Y" if v else "N"
                elif rule.type in ("date", "dateTime"):
                    v = self.dtm(v)
                self.put(path, v if not isinstance(v, (int, float)) else json.dumps(v))


def _esc(text: str, msg: Hl7Message | None) -> str:
    from hub.transforms.hl7v2 import escape

    enc = msg.enc if msg is not None else None
    return escape(text.replace("\r\n", "\n").replace("\n", "\\.br\\") if False else text, enc).replace(
        "\\X0A\\", "\\.br\\"
    )


# Validator messages that say a value has the wrong JSON shape (a list where R4 has one value, an object where it has
# a string, a number where it has a string, null, no resourceType …): the mapper reads the JSON as R4 shapes it, so
# such content is refused before mapping instead of crashing it or being written to v2 as "['x']".
_SHAPE_PROBLEMS = (
    "is a list in R4",
    "is a single value in R4",
    "must be a JSON object",
    ": a JSON object",
    ": must be a JSON",
    "null is not allowed",
    "a resource needs a resourceType",
    "must be a JSON array like",
    "an element extension must be a non-empty JSON object",
)


def _shape_issues(data: Any) -> list[Issue]:
    if not isinstance(data, dict):
        return [Issue("error", "a FHIR resource must be a JSON object", "", "structure")]
    return [i for i in validate_fhir(data) if i.severity == "error" and any(s in i.message for s in _SHAPE_PROBLEMS)]


def _shape_error(issues: list[Issue]) -> MappingError:
    first = issues[0]
    more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
    return MappingError(
        f"fhir_to_v2 cannot read the content: {first.location + ': ' if first.location else ''}{first.message}{more}",
        code="structure",
        location=first.location,
        issues=issues,
    )


def _convert(data: Any, tables: Tables, cfg: FhirToV2.Config) -> Hl7Message:
    """Map after checking the JSON has the shapes R4 gives it; refuse with the validator's first shape problem."""
    issues = _shape_issues(data)
    if issues:
        raise _shape_error(issues)
    try:
        return _Out(data, tables, cfg).run()
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        # Content of the right shapes that this mapper still cannot read (a bug, or an R4 oddity it does not
        # expect): the project's error with the validator's first problem when it has one, never a traceback.
        errors = [i for i in validate_fhir(data) if i.severity == "error"]
        if errors:
            raise _shape_error(errors) from exc
        raise MappingError(f"fhir_to_v2 could not map the content ({type(exc).__name__})", code="exception") from exc


def to_v2(
    data: dict[str, Any] | FhirDocument | bytes, tables: Tables | None = None, config: FhirToV2.Config | None = None
) -> Hl7Message:
    """A Bundle or resource → an HL7 v2 message. Raises MappingError when nothing maps or the content is not shaped
    as R4 has it (the location is the validator's: ``Bundle.entry[0].resource.name[0]``)."""
    if isinstance(data, (bytes, str)):
        data = parse_fhir(data)
    if isinstance(data, FhirDocument):
        data = data.data
    return _convert(data, tables or load_tables(None), config or FhirToV2.Config.model_validate({"type": "fhir_to_v2"}))


class FhirToV2:
    class Config(TransformConfig):
        """FHIR (a Bundle or a resource) → HL7 v2: ``{type: fhir_to_v2, adt_trigger: A04}``."""

        type: Literal["fhir_to_v2"] = "fhir_to_v2"
        message: Literal["auto", "ADT", "ORM", "OML", "SIU", "RDE", "ORU"] = Field(
            "auto",
            description="The message to build; auto picks by content (DiagnosticReport → ORU, MedicationRequest → RDE, "
            "ServiceRequest → ORM/OML, Appointment → SIU, Patient/Encounter → ADT).",
        )
        adt_trigger: Literal["A01", "A04", "A08", "A28", "A31"] = Field(
            "A08", description="ADT trigger for Patient/Encounter content."
        )
        order_message: Literal["ORM", "OML"] = Field("ORM", description="ServiceRequest → ORM^O01 or OML^O21.")
        siu_trigger: Literal["S12", "S13", "S14", "S15"] | None = Field(
            None, description="Force the SIU trigger (default: S15 when cancelled, else S12)."
        )
        version: str = Field("2.5.1", description="MSH-12.")
        sending_application: str = Field("HUB", description="MSH-3.")
        sending_facility: str = Field("", description="MSH-4.")
        receiving_application: str = Field("", description="MSH-5.")
        receiving_facility: str = Field("", description="MSH-6.")
        keep_control_id: bool = Field(
            True, description="Reuse Bundle.identifier.value as MSH-10 (else a new control id)."
        )
        timezone: str = Field(
            "Z", pattern=r"^(Z|[+-]\d\d:\d\d)$", description="An offset equal to this is left out of v2 times."
        )
        mappings: str = Field(
            "fhir", description="Folder of the code maps and systems, relative to the mappings folder."
        )

    def __init__(self, config: Config, ctx: Any) -> None:
        self.config = config
        self.tables = load_tables(ctx.mappings_dir / config.mappings if ctx is not None else None)

    def __call__(self, message: Message) -> Message:
        if message.content_type != "fhir":
            raise MappingError(f"fhir_to_v2 needs FHIR content, got {message.content_type}")
        doc = message.parsed if isinstance(message.parsed, FhirDocument) else parse_fhir(message.raw)
        msg = _convert(doc.data, self.tables, self.config)
        out = message.replace(msg.to_bytes(), "hl7v2", parsed=msg)
        from hub.transforms.hl7v2 import meta as v2meta

        out.meta.update({k: v for k, v in v2meta(msg).items() if v})
        return out
