"""HL7 v2 → FHIR R4 Bundle, after the HL7 v2-to-FHIR Implementation Guide's message, segment, data type and
vocabulary maps (the IG's CSV tables are in the shared corpus; README lists what is covered).

Messages and what they become (``resource ← segment``):

* ADT A01/A02/A03/A04/A05/A08/A11/A13/A28/A31: Patient ← PID+PD1, Encounter ← PV1+PV2 (status from the event:
  A03 finished, A11 cancelled …), RelatedPerson ← NK1, Coverage (+ payer Organization) ← IN1,
  AllergyIntolerance ← AL1, Condition ← DG1 (and Encounter.diagnosis), Observation ← OBX, Practitioner ← XCN.
* ADT A40 (merge): the surviving Patient ← PID gets ``link`` *replaces* → the merged Patient ← MRG, which is
  marked inactive with ``link`` *replaced-by*.
* SIU S12–S15: Appointment ← SCH+AIS+AIG+AIL+AIP (S15 cancelled), Patient, Location, Practitioner.
* ORM^O01, OML^O21: ServiceRequest ← ORC+OBR(+TQ1, NTE), Specimen ← SPM, Condition ← DG1, Coverage ← IN1.
* ORU^R01: DiagnosticReport ← OBR (+ORC), ServiceRequest (basedOn), Observation ← OBX (NM, ST, TX, FT, CE/CWE,
  SN, DT, TS/DTM, TM, ED; units, reference range, abnormal flags, status), notes ← NTE.
* RDE^O11: MedicationRequest ← ORC+RXE+TQ1+RXR;  VXU^V04: Immunization ← ORC+RXA+RXR (+OBX);
  MDM^T02: DocumentReference ← TXA+OBX;  DFT^P03: ChargeItem ← FT1.

The result is a Bundle (``transaction`` by default, or ``batch``/``collection``) built by
:class:`~.bundle.BundleBuilder`: conditional create/update on business identifiers, stable fullUrls.
Everything is plain dicts serialised once (no pydantic on this path; validation is the ``fhir_validate`` step).

Speed (``tests/bench/bench_fhir.py``; targets ≥ 2,000 ADT^A01/s and ≥ 500 ORU^R01/s per core): segments are read
through :class:`~.datatypes.V2` (no decoding step for values without escapes); codes, practitioners, places,
units, times and fullUrls that recur across messages are cached (bounded, per tables) and copied into each Bundle,
so a Bundle never shares an object with another one. ``tests/transforms/fhir/golden/`` pins the output.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any, Callable, Literal

from pydantic import Field

from hub.errors import Hl7ParseError, MappingError
from hub.message import Message
from hub.spec import TransformConfig
from hub.transforms.hl7v2 import Hl7Message, parse_path
from hub.transforms.hl7v2 import parse as parse_v2

from .bundle import BundleBuilder
from .document import FhirDocument
from .datatypes import V2, Seg, Types, date_of
from .maps import Tables, load_tables

try:  # orjson is several times faster; the standard library is the fallback
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

except ImportError:  # pragma: no cover - depends on the environment

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


__all__ = ["V2ToFhir", "convert", "SUPPORTED", "dumps"]

SUPPORTED = {
    "ADT": {"A01", "A02", "A03", "A04", "A05", "A08", "A11", "A13", "A28", "A31", "A40"},
    "SIU": {"S12", "S13", "S14", "S15"},
    "ORM": {"O01"},
    "OML": {"O21"},
    "ORU": {"R01"},
    "RDE": {"O11"},
    "VXU": {"V04"},
    "MDM": {"T02"},
    "DFT": {"P03"},
}

_OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
_DAR = "http://terminology.hl7.org/CodeSystem/data-absent-reason"


_MISS = object()
_CACHE_MAX = 4096  # entries per cache of values that recur across messages (cleared when full)
_segment_of: dict[str, str | None] = {}


def _path_segment(path: str) -> str | None:
    """The segment an extension rule's path reads (None when the path does not parse)."""
    try:
        return _segment_of[path]
    except KeyError:
        pass
    try:
        name: str | None = parse_path(path).segment
    except Exception:  # noqa: BLE001 - reported by load_tables; here such a rule just reads nothing
        name = None
    if len(_segment_of) < 1000:
        _segment_of[path] = name
    return name


def _h(*parts: str) -> str:
    return hashlib.sha1("|".join(parts).encode("utf-8")).hexdigest()[:20]


class _Conv:
    """One message's conversion (state: the V2 reader, the type converters, the bundle being built)."""

    __slots__ = (
        "v", "t", "tables", "cfg", "msh", "mtype", "trigger", "control_id", "b", "patient_ref", "patient_key",
        "encounter_ref", "coverage_refs", "condition_refs", "cm", "m", "_xcn",
    )  # fmt: skip

    def __init__(self, msg: Hl7Message, tables: Tables, cfg: V2ToFhir.Config) -> None:
        self.v = V2(msg)
        self.t = Types(self.v, tables, cfg.timezone)
        self.tables = tables
        self.cfg = cfg
        self.msh = self.v.segs[0]
        v = self.v
        self.mtype = v.val(self.msh, 9, 1)
        self.trigger = v.val(self.msh, 9, 2)
        self.control_id = v.val(self.msh, 10)
        self.b = BundleBuilder(cfg.bundle, f"{v.val(self.msh, 3)}|{v.val(self.msh, 4)}|{self.control_id}")
        self.patient_ref: dict[str, Any] | None = None
        self.patient_key = ""
        self.encounter_ref: dict[str, Any] | None = None
        self.coverage_refs: list[dict[str, Any]] = []
        self.condition_refs: list[dict[str, Any]] = []
        self.cm = tables.code_map
        self.m = tables.code_maps()
        self._xcn: dict[tuple[str, ...], dict[str, Any] | None] = {}  # XCN as written → its reference (see practitioner)

    # ================================================================ common helpers
    def ident_key(self, ident: dict[str, Any] | None) -> str:
        return f"{ident.get('system', '')}|{ident.get('value', '')}" if ident else ""

    def derived(self, resource: str, *parts: str) -> dict[str, Any]:
        return {"system": self.tables.derived_system(resource), "value": _h(self.patient_key, *parts)}

    def practitioner(self, comps: list[str]) -> dict[str, Any] | None:
        """XCN → a Practitioner entry (conditional create on its identifier) and a reference to it.

        Without an id number the reference carries only the name as ``display`` (no resource is made).
        The same XCN named again in the message (attending and admitting doctor …) gives a copy of the first answer."""
        if not comps:
            return None
        key = (self.v.ckey, *comps)
        hit = self._xcn.get(key, _MISS)
        if hit is not _MISS:
            return None if hit is None else dict(hit)
        ref = self._practitioner(comps, key)
        self._xcn[key] = None if ref is None else dict(ref)
        return ref

    def _practitioner(self, comps: list[str], key: tuple[str, ...]) -> dict[str, Any] | None:
        ident, name = self.t.xcn(comps, key)
        if ident is None:
            if name is None:
                return None
            return {"display": " ".join([*name.get("given", []), name.get("family", "")]).strip()}
        res: dict[str, Any] = {"resourceType": "Practitioner", "identifier": [ident]}
        if name:
            res["name"] = [name]
        ref = dict(self.b.add(res, ident, mode="create"))
        if name and "reference" in ref:
            ref["display"] = " ".join([*name.get("given", []), name.get("family", "")]).strip()
        return ref

    def practitioner_field(self, seg: Seg | None, n: int) -> list[dict[str, Any]]:
        return self.v.each(seg, n, self.practitioner)

    def location(self, comps: list[str]) -> dict[str, Any] | None:
        """PL → a Location entry identified by its components (point of care, room, bed, facility)."""
        if not comps:
            return None
        key = (self.v.ckey, *comps)
        cache = self.tables._pl_cache
        hit = cache.get(key, _MISS)
        if hit is _MISS:  # places recur from message to message: their strings are cached
            hit = self._pl(comps)
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            cache[key] = hit
        if hit is None:
            return None
        value, name, physical, desc = hit
        res: dict[str, Any] = {
            "resourceType": "Location",
            "identifier": [{"system": self.tables.location_system, "value": value}],
            "name": name,
            "mode": "instance",
        }
        if physical:
            res["physicalType"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/location-physical-type", "code": physical}]}
        if desc:
            res["description"] = desc
        return self.b.add(res, res["identifier"][0], mode="create")

    def _pl(self, comps: list[str]) -> tuple[str, str, str, str] | None:
        d = self.v.dec(comps, 9)
        parts = d[:3]
        facility = d[3]
        if not any(parts) and not facility:
            return None
        # the identifier keeps point of care, room, bed, facility, building and floor in their PL positions
        value = "^".join([*parts, facility, "", "", d[6], d[7]]).rstrip("^")
        name = " ".join(p for p in parts if p) or facility
        physical = "bd" if parts[2] else "ro" if parts[1] else ""
        return value, name, physical, d[8]

    def notes(self, segs: list[Seg]) -> list[dict[str, Any]]:
        out = []
        for s in segs:
            texts = [self.v.text("^".join(c) if len(c) > 1 else c[0]) for c in self.v.reps(s, 3)]
            text = "\n".join(x for x in texts if x)
            if text:
                out.append({"text": text})
        return out

    def following(self, seg: Seg, names: tuple[str, ...]) -> list[Seg]:
        """The segments named ``names`` that directly follow ``seg`` (e.g. the NTEs of an OBX)."""
        out = []
        segs = self.v.segs
        i, n = seg.index + 1, len(segs)
        while i < n and segs[i].name in names:
            out.append(segs[i])
            i += 1
        return out

    # ================================================================ Patient (PID, PD1)
    def patient(self, pid: Seg | None, pd1: Seg | None = None, *, mode: str | None = None) -> dict[str, Any] | None:
        if pid is None:
            return None
        v, t = self.v, self.t
        res: dict[str, Any] = {"resourceType": "Patient"}
        idents = []
        for n in (3, 2, 4):
            for comps in v.reps(pid, n):
                x = t.cx(comps)
                if x:
                    idents.append(x)
        ssn = v.val(pid, 19)
        if ssn:
            idents.append(
                {
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "SS"}]},
                    "system": "http://hl7.org/fhir/sid/us-ssn",
                    "value": ssn,
                }
            )
        if idents:
            res["identifier"] = idents
        names = t.xpn_all(pid, 5) + t.xpn_all(pid, 9)
        if names:
            res["name"] = names
        telecom = t.xtn_all(pid, 13, "home") + t.xtn_all(pid, 14, "work") + t.xtn_all(pid, 40)
        if telecom:
            res["telecom"] = telecom
        sex = v.val(pid, 8)
        if sex:
            g = self.m.administrative_sex.code(sex)
            if g:
                res["gender"] = g
        birth = v.val(pid, 7)
        if birth:
            bd = date_of(birth)
            if bd:
                res["birthDate"] = bd
                if len(birth) > 8:
                    full = t.dt(birth)
                    if full and "T" in full:
                        res["_birthDate"] = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": full}]}
        death = v.val(pid, 29)
        if death:
            dd = t.dt(death)
            if dd:
                res["deceasedDateTime"] = dd
        else:
            flag = v.val(pid, 30)
            b = self.m.yes_no.code(flag) if flag else None
            if b in ("true", "false"):
                res["deceasedBoolean"] = b == "true"
        addr = t.xad_all(pid, 11)
        county = v.val(pid, 12)
        if county and addr and "district" not in addr[0]:
            addr[0]["district"] = county
        if addr:
            res["address"] = addr
        ms = t.cc_field(pid, 16)
        if ms:
            code = ms.get("coding", [{}])[0].get("code")
            hit = self.m.marital_status.get(code) if code else None
            if hit:
                mapped: dict[str, Any] = {"coding": [{"system": hit[1], "code": hit[0], "display": hit[2]}]}
                if "text" in ms:
                    mapped["text"] = ms["text"]
                ms = mapped
            res["maritalStatus"] = ms
        order = v.val(pid, 25)
        if order and order.isdigit():
            res["multipleBirthInteger"] = int(order)
        else:
            flag = v.val(pid, 24)
            b = self.m.yes_no.code(flag) if flag else None
            if b in ("true", "false"):
                res["multipleBirthBoolean"] = b == "true"
        lang = t.cc_field(pid, 15)
        if lang:
            res["communication"] = [{"language": lang, "preferred": True}]
        ext = []
        mmn = t.xpn_all(pid, 6)
        if mmn and mmn[0].get("family"):
            ext.append({"url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName", "valueString": mmn[0]["family"]})
        religion = t.cc_field(pid, 17)
        if religion:
            ext.append({"url": "http://hl7.org/fhir/StructureDefinition/patient-religion", "valueCodeableConcept": religion})
        # US Core race/ethnicity (PID-10/PID-22): the IG leaves them to local rules; CDC REC codes go in ombCategory
        for n, url in ((10, "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"), (22, "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity")):
            parts = []
            texts = []
            for comps in v.reps(pid, n):
                code, disp = v.c(comps, 1), v.c(comps, 2)
                if code:
                    coding = {"system": "urn:oid:2.16.840.1.113883.6.238", "code": code}
                    if disp:
                        coding["display"] = disp
                    parts.append({"url": "ombCategory", "valueCoding": coding})
                if disp or code:
                    texts.append(disp or code)
            if parts:
                ext.append({"url": url, "extension": [*parts, {"url": "text", "valueString": ", ".join(texts)}]})
        if ext:
            res["extension"] = ext
        # the business identifier: the first MR (else the first identifier)
        key_ident = None
        for x in idents:
            typ = x.get("type")
            if typ is not None and typ["coding"][0].get("code") == "MR":  # cx() types have one coding
                key_ident = x
                break
        if key_ident is None and idents:
            key_ident = idents[0]
        self.patient_key = self.ident_key(key_ident)
        pmode = mode or self.cfg.patient
        if pmode == "auto":
            pmode = "update" if self.mtype in ("ADT", "SIU") else "create"
        ref = self.b.add(res, key_ident, mode=pmode)
        self.patient_ref = ref
        if pd1 is not None:  # after the Patient, so the Patient is the first entry
            gps = self.practitioner_field(pd1, 4)
            if gps:
                res["generalPractitioner"] = gps
        return ref

    # ================================================================ Encounter (PV1, PV2)
    def encounter(self, pv1: Seg | None, pv2: Seg | None = None, *, event: str = "") -> dict[str, Any] | None:
        if pv1 is None:
            return None
        v, t = self.v, self.t
        klass = v.val(pv1, 2)
        visit = v.first(pv1, 19)
        if (not klass or klass == "N") and not visit and self.mtype != "ADT":
            return None
        if klass == "N" and not visit:
            return None
        res: dict[str, Any] = {"resourceType": "Encounter"}
        ident = None
        if visit:
            ident = t.cx(visit, with_type=False)
            if ident:
                ident["type"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "VN"}]}
                res["identifier"] = [ident]
        if ident is None:  # no visit number: one derived from the visit's start, place and class, so a resend updates
            ident = self.derived("Encounter", v.val(pv1, 44), v.msg.get("PV1-3") or "", klass)
            res["identifier"] = [ident]
        # status: the event (A03 finished, A11 cancelled …), else the patient class, else unknown
        status = self.m.event_encounter_status.code(event) if event else None
        if status in (None, "unknown"):
            if v.val(pv1, 45):
                status = "finished"
            elif status is None:
                status = self.m.patient_class_status.code(klass) or "unknown"
        res["status"] = status
        cls = self.m.patient_class.get(klass) if klass else None
        if cls:
            res["class"] = {"system": cls[1], "code": cls[0], "display": cls[2]} if cls[2] else {"system": cls[1], "code": cls[0]}
        elif klass:
            res["class"] = {"system": "http://terminology.hl7.org/CodeSystem/v2-0004", "code": klass}
        else:
            res["class"] = {"system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK"}
        adm_type = v.val(pv1, 4)
        if adm_type:
            res["type"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0007", "code": adm_type}]}]
        svc = v.val(pv1, 10)
        if svc:
            res["serviceType"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0069", "code": svc}]}
        if self.patient_ref:
            res["subject"] = self.patient_ref
        parts = []
        for n, code, disp in ((7, "ATND", "attender"), (8, "REF", "referrer"), (9, "CON", "consultant"), (17, "ADM", "admitter")):
            for ref in self.practitioner_field(pv1, n):
                parts.append(
                    {
                        "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": code, "display": disp}]}],
                        "individual": ref,
                    }
                )
        if parts:
            res["participant"] = parts
        start, end = t.dt(v.val(pv1, 44)), t.dt(v.val(pv1, 45))
        if start or end:
            period = {}
            if start:
                period["start"] = start
            if end:
                period["end"] = end
            res["period"] = period
        locs = []
        loc = self.location(v.first(pv1, 3))
        if loc:
            locs.append({"location": loc, "status": "completed" if status == "finished" else "active"})
        prior = self.location(v.first(pv1, 6))
        if prior:
            locs.append({"location": prior, "status": "completed"})
        if locs:
            res["location"] = locs
        disp = v.val(pv1, 36)
        adm_src = v.val(pv1, 14)
        hosp: dict[str, Any] = {}
        if adm_src:
            hosp["admitSource"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0023", "code": adm_src}]}
        readmission = v.val(pv1, 13)
        if readmission:
            hosp["reAdmission"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0092", "code": readmission}]}
        if disp:
            hosp["dischargeDisposition"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0112", "code": disp}]}
        if hosp:
            res["hospitalization"] = hosp
        if pv2 is not None:
            reason = t.cc_field(pv2, 3)
            if reason:
                res["reasonCode"] = [reason]
            adm_reason = v.val(pv2, 12)
            if adm_reason:
                res.setdefault("text", {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{_xml(adm_reason)}</div>'})
        ref = self.b.add(res, ident, mode="update")
        self.encounter_ref = ref
        return ref

    # ================================================================ RelatedPerson (NK1)
    def related_person(self, nk1: Seg) -> dict[str, Any] | None:
        v, t = self.v, self.t
        if self.patient_ref is None:
            return None
        res: dict[str, Any] = {"resourceType": "RelatedPerson"}
        names = t.xpn_all(nk1, 2) + t.xpn_all(nk1, 30)
        rels = []
        for n, table in ((3, "relationship"), (7, "contact_role")):
            for comps in v.reps(nk1, n):
                cc = t.cc(comps)
                if not cc:
                    continue
                code = v.c(comps, 1)
                hit = self.cm(table).get(code)
                if hit and n == 3:
                    coding = {"system": hit[1], "code": hit[0]}
                    if hit[2]:
                        coding["display"] = hit[2]
                    cc.setdefault("coding", []).append(coding)
                rels.append(cc)
        ids = [x for x in (t.cx(c) for c in v.reps(nk1, 12)) if x] + [x for x in (t.cx(c) for c in v.reps(nk1, 33)) if x]
        ssn = v.val(nk1, 37)
        if ssn:
            ids.append({"system": "http://hl7.org/fhir/sid/us-ssn", "value": ssn})
        key = ids[0] if ids else None
        if key is None:
            first_name = names[0] if names else {}
            key = self.derived("RelatedPerson", first_name.get("family", ""), " ".join(first_name.get("given", [])), v.val(nk1, 3))
            ids.append(key)
        res["identifier"] = ids
        res["patient"] = self.patient_ref
        if rels:
            res["relationship"] = rels
        if names:
            res["name"] = names
        telecom = t.xtn_all(nk1, 5, "home") + t.xtn_all(nk1, 6, "work") + t.xtn_all(nk1, 31) + t.xtn_all(nk1, 40)
        if telecom:
            res["telecom"] = telecom
        sex = v.val(nk1, 15)
        gender = self.m.administrative_sex.code(sex) if sex else None
        if gender:
            res["gender"] = gender
        bd = date_of(v.val(nk1, 16))
        if bd:
            res["birthDate"] = bd
        addr = t.xad_all(nk1, 4) + t.xad_all(nk1, 32)
        if addr:
            res["address"] = addr
        start, end = t.dt(v.val(nk1, 8)), t.dt(v.val(nk1, 9))
        if start or end:
            res["period"] = {k: x for k, x in (("start", start), ("end", end)) if x}
        lang = t.cc_field(nk1, 20)
        if lang:
            res["communication"] = [{"language": lang}]
        return self.b.add(res, key, mode="update")

    # ================================================================ AllergyIntolerance (AL1)
    def allergy(self, al1: Seg) -> dict[str, Any] | None:
        v, t = self.v, self.t
        code = t.cc_field(al1, 3)
        if code is None or self.patient_ref is None:
            return None
        res: dict[str, Any] = {"resourceType": "AllergyIntolerance"}
        code_value = v.val(al1, 3) or code.get("text", "")
        ident = self.derived("AllergyIntolerance", v.val(al1, 3, 3), code_value)
        res["identifier"] = [ident]
        res["clinicalStatus"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]}
        atype = v.val(al1, 2)
        if atype:
            cat = self.m.allergen_type.code(atype)
            if cat:
                res["category"] = [cat]
            if atype in ("DA", "FA", "EA", "MA", "AA", "PA", "LA"):
                res["type"] = "allergy"
            elif atype in ("DI", "FI", "EI", "MI"):
                res["type"] = "intolerance"
        sev = v.val(al1, 4)
        if sev:
            crit = self.m.allergy_severity.code(sev)
            if crit:
                res["criticality"] = crit
        res["code"] = code
        res["patient"] = self.patient_ref
        onset = t.dt(v.val(al1, 6))
        if onset:
            res["onsetDateTime"] = onset
        reactions = [v.d(c[0]) for c in v.reps(al1, 5) if c and c[0]]
        if reactions or sev:
            reaction: dict[str, Any] = {"manifestation": [{"text": r} for r in reactions] or [{"text": "unspecified"}]}
            sev_map = {"SV": "severe", "MO": "moderate", "MI": "mild"}
            if sev in sev_map:
                reaction["severity"] = sev_map[sev]
            res["reaction"] = [reaction]
        return self.b.add(res, ident, mode="update")

    # ================================================================ Condition (DG1)
    def condition(self, dg1: Seg) -> tuple[dict[str, Any], str] | None:
        v, t = self.v, self.t
        code = t.cc_field(dg1, 3)
        if code is None and v.val(dg1, 4):
            code = {"text": v.val(dg1, 4)}
        if code is None or self.patient_ref is None:
            return None
        res: dict[str, Any] = {"resourceType": "Condition"}
        ident_comps = v.first(dg1, 20)
        ident = t.ei(ident_comps) if ident_comps else None
        if ident is None:
            ident = self.derived("Condition", v.val(dg1, 3, 3), v.val(dg1, 3))
        res["identifier"] = [ident]
        res["clinicalStatus"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]}
        res["verificationStatus"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed" if v.val(dg1, 6) == "F" else "provisional"}]
        }
        res["category"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "encounter-diagnosis"}]}]
        res["code"] = code
        res["subject"] = self.patient_ref
        if self.encounter_ref:
            res["encounter"] = self.encounter_ref
        onset = t.dt(v.val(dg1, 5))
        if onset:
            res["onsetDateTime"] = onset
        rec = t.dt(v.val(dg1, 19))
        if rec:
            res["recordedDate"] = rec
        clin = self.practitioner_field(dg1, 16)
        if clin:
            res["asserter"] = clin[0]
        ref = self.b.add(res, ident, mode="update")
        self.condition_refs.append(ref)
        return ref, v.val(dg1, 6)

    # ================================================================ Coverage (IN1)
    def coverage(self, in1: Seg) -> dict[str, Any] | None:
        v, t = self.v, self.t
        if self.patient_ref is None:
            return None
        res: dict[str, Any] = {"resourceType": "Coverage"}
        payer_ids = [x for x in (t.cx(c) for c in v.reps(in1, 3)) if x]
        payer_name = v.val(in1, 4)
        payer_ref = None
        if payer_ids or payer_name:
            org: dict[str, Any] = {"resourceType": "Organization"}
            if payer_ids:
                org["identifier"] = payer_ids
            if payer_name:
                org["name"] = payer_name
            addr = t.xad_all(in1, 5)
            if addr:
                org["address"] = addr
            tel = t.xtn_all(in1, 7, "work")
            if tel:
                org["telecom"] = tel
            org_key = payer_ids[0] if payer_ids else {"system": self.tables.derived_system("Organization"), "value": _h(payer_name)}
            if not payer_ids:
                org["identifier"] = [org_key]
            payer_ref = self.b.add(org, org_key, mode="create")
        policy = v.val(in1, 36)
        idents = []
        if policy:
            auth = payer_ids[0]["system"] if payer_ids else self.tables.identifier_system(payer_name or "payer", "MB")
            idents.append(
                {
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MB"}]},
                    "system": auth,
                    "value": policy,
                }
            )
        key = idents[0] if idents else self.derived("Coverage", v.val(in1, 2), v.val(in1, 3))
        if not idents:
            idents.append(key)
        res["identifier"] = idents
        res["status"] = "active"
        plan_type = v.val(in1, 15)
        if plan_type:
            res["type"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0086", "code": plan_type}]}
        if policy:
            res["subscriberId"] = policy
        res["beneficiary"] = self.patient_ref
        rel = v.val(in1, 17)
        rel_map = {"SEL": "self", "SPO": "spouse", "CHD": "child", "EME": "other", "OTH": "other", "PAR": "parent", "DOM": "common"}
        if rel:
            res["relationship"] = {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/subscriber-relationship", "code": rel_map.get(rel, "other")}],
                "text": rel,
            }
        start, end = t.dt(v.val(in1, 12)), t.dt(v.val(in1, 13))
        if start or end:
            res["period"] = {k: x for k, x in (("start", start), ("end", end)) if x}
        res["payor"] = [payer_ref] if payer_ref else [{"display": payer_name or "unknown payer"}]
        classes = []
        plan = v.first(in1, 2)
        if plan and v.c(plan, 1):
            classes.append(
                {
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "plan"}]},
                    "value": v.c(plan, 1),
                    **({"name": v.c(plan, 2)} if v.c(plan, 2) else {}),
                }
            )
        group = v.val(in1, 8)
        if group:
            classes.append(
                {
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "group"}]},
                    "value": group,
                    **({"name": v.val(in1, 9)} if v.val(in1, 9) else {}),
                }
            )
        if classes:
            res["class"] = classes
        order = v.val(in1, 22)
        if order.isdigit():
            res["order"] = int(order)
        ref = self.b.add(res, key, mode="update")
        self.coverage_refs.append(ref)
        return ref

    # ================================================================ Observation (OBX)
    def observation(
        self,
        obx: Seg,
        *,
        category: str | None = None,
        based_on: dict[str, Any] | None = None,
        default_time: str | None = None,
        key_prefix: str = "",
        key_system: str = "",
    ) -> dict[str, Any] | None:
        v, t = self.v, self.t
        val = v.val
        code = t.cc_field(obx, 3)
        if code is None:
            return None
        res: dict[str, Any] = {"resourceType": "Observation"}
        ident = None
        inst = v.first(obx, 21)
        if inst:
            ident = t.ei(inst)
        if ident is None:
            obs_id, sub_id = val(obx, 3), val(obx, 4)
            if key_prefix:
                ident = {"system": key_system, "value": f"{key_prefix}-{obs_id or _h(json.dumps(code))}" + (f"-{sub_id}" if sub_id else "")}
            else:
                ident = self.derived("Observation", obs_id, sub_id, val(obx, 14), self.control_id, val(obx, 1))
        res["identifier"] = [ident]
        if based_on:
            res["basedOn"] = [based_on]
        st = val(obx, 11)
        res["status"] = self.m.observation_status.code(st, "unknown") if st else "unknown"
        if category:
            res["category"] = [{"coding": [{"system": _OBS_CAT, "code": category}]}]
        res["code"] = code
        if self.patient_ref:
            res["subject"] = self.patient_ref
        if self.encounter_ref:
            res["encounter"] = self.encounter_ref
        eff = t.dt(val(obx, 14)) or default_time
        if eff:
            res["effectiveDateTime"] = eff
        issued = val(obx, 19)
        if issued:
            issued = t.dt(issued, instant=True)
            if issued:
                res["issued"] = issued
        perf = self.practitioner_field(obx, 16)
        if perf:
            res["performer"] = perf
        self._obs_value(obx, res)
        flags = v.reps(obx, 8)
        if flags:
            interp = []
            abnormal = self.m.abnormal_flags
            for comps in flags:
                flag = v.c(comps, 1)
                hit = abnormal.get(flag)
                if hit:
                    coding = {"system": hit[1], "code": hit[0]}
                    if hit[2]:
                        coding["display"] = hit[2]
                    interp.append({"coding": [coding]})
                elif flag:
                    interp.append({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0078", "code": flag}]})
            if interp:
                res["interpretation"] = interp
        rr = val(obx, 7)
        if rr:
            res["referenceRange"] = [self._range(rr, v.first(obx, 6))]
        method = t.cc_field(obx, 17)
        if method:
            res["method"] = method
        nxt = obx.index + 1
        segs = v.segs
        if nxt < len(segs) and segs[nxt].name == "NTE":
            notes = self.notes(self.following(obx, ("NTE",)))
            if notes:
                res["note"] = notes
        return self.b.add(res, ident, mode="update")

    def _range(self, text: str, unit_comps: list[str]) -> dict[str, Any]:
        t = self.t
        out: dict[str, Any] = {}
        unit = t.unit(unit_comps) if unit_comps else {}
        s = text.strip()
        lo = hi = None
        if "-" in s[1:]:
            i = s.index("-", 1)
            lo, hi = t.number(s[:i]), t.number(s[i + 1 :])
        elif s.startswith((">=", "<=")):
            n = t.number(s[2:])
            if s.startswith(">="):
                lo = n
            else:
                hi = n
        elif s[:1] in (">", "<"):
            n = t.number(s[1:])
            if s[0] == ">":
                lo = n
            else:
                hi = n
        if lo is not None:
            out["low"] = {"value": lo, **unit}
        if hi is not None:
            out["high"] = {"value": hi, **unit}
        out["text"] = s
        return out

    def _obs_value(self, obx: Seg, res: dict[str, Any]) -> None:
        v, t = self.v, self.t
        vt = v.val(obx, 2)
        reps = v.reps(obx, 5)
        if not reps:
            st = res.get("status")
            res["dataAbsentReason"] = {"coding": [{"system": _DAR, "code": "not-performed" if st == "cancelled" else "unknown"}]}
            return
        comps = reps[0]
        if vt == "NM":
            n = t.number(v.d(comps[0]))
            if n is None:
                raise MappingError(f"OBX-{v.val(obx, 1) or '?'}: OBX-5 is not a number though OBX-2 is NM", location=f"OBX[{self._occ(obx)}]-5", code="102")
            q = {"value": n, **t.unit(v.first(obx, 6))}
            res["valueQuantity"] = q
        elif vt == "ST":
            res["valueString"] = " ".join(v.d(v.cs.join(c)) for c in reps)
        elif vt in ("TX", "FT"):
            res["valueString"] = "\n".join(v.text(v.cs.join(c)) for c in reps)
        elif vt in ("CE", "CWE", "CNE", "CF"):
            cc = t.cc(comps)
            if cc:
                res["valueCodeableConcept"] = cc
        elif vt == "SN":
            comp = v.c(comps, 1)
            n1, sep, n2 = t.number(v.c(comps, 2)), v.c(comps, 3), t.number(v.c(comps, 4))
            unit = t.unit(v.first(obx, 6))
            if sep in (":", "/") and n1 is not None and n2 is not None:
                res["valueRatio"] = {"numerator": {"value": n1, **unit}, "denominator": {"value": n2}}
            elif sep == "-" and n1 is not None and n2 is not None:
                res["valueRange"] = {"low": {"value": n1, **unit}, "high": {"value": n2, **unit}}
            elif n1 is not None:
                q: dict[str, Any] = {"value": n1}
                if comp in ("<", ">", "<=", ">="):
                    q["comparator"] = comp
                res["valueQuantity"] = {**q, **unit}
            else:
                res["valueString"] = v.d(v.cs.join(comps))
        elif vt in ("DT", "TS", "DTM"):
            d = t.dt(v.c(comps, 1))
            if d:
                res["valueDateTime"] = d
        elif vt == "TM":
            raw = v.c(comps, 1)
            if len(raw) >= 4 and raw[:4].isdigit():
                res["valueTime"] = f"{raw[:2]}:{raw[2:4]}:{raw[4:6] if len(raw) >= 6 else '00'}"
        elif vt == "ED":
            sub = v.c(comps, 2)
            kind = v.c(comps, 3)
            enc = v.c(comps, 4)
            data = v.c(comps, 5)
            mime = {"TEXT": "text", "IMAGE": "image", "AP": "application", "Application": "application", "AUDIO": "audio", "VIDEO": "video"}.get(sub, "application")
            mime = f"{mime}/{(kind or 'octet-stream').lower()}"
            if enc.upper() == "BASE64":
                b64 = data
            else:
                b64 = base64.b64encode(data.encode("utf-8")).decode("ascii")
            # R4's Observation has no valueAttachment: the cross-version extension carries R5's value[x]
            res.setdefault("extension", []).append(
                {"url": "http://hl7.org/fhir/5.0/StructureDefinition/extension-Observation.value", "valueAttachment": {"contentType": mime, "data": b64}}
            )
        elif vt in ("CX", "EI"):
            res["valueString"] = v.c(comps, 1)
        else:
            res["valueString"] = v.d(v.cs.join(comps))

    def _occ(self, seg: Seg) -> int:
        n = 0
        for s in self.v.segs[: seg.index + 1]:
            if s.name == seg.name:
                n += 1
        return n

    # ================================================================ orders (ORC + OBR)
    def service_request(self, orc: Seg | None, obr: Seg | None, tq1: Seg | None = None, *, status: str | None = None) -> dict[str, Any] | None:
        v, t = self.v, self.t
        if orc is None and obr is None:
            return None
        res: dict[str, Any] = {"resourceType": "ServiceRequest"}
        idents = []
        placer = v.first(orc, 2) or v.first(obr, 2)
        filler = v.first(orc, 3) or v.first(obr, 3)
        group = v.first(orc, 4)
        for comps, typ in ((placer, "PLAC"), (filler, "FILL"), (group, "PGN")):
            if comps:
                x = t.ei(comps, typ)
                if x:
                    idents.append(x)
        if idents:
            res["identifier"] = idents
        if status is None:
            st5 = v.val(orc, 5)
            status = self.m.order_status.code(st5) if st5 else None
            if status is None:
                st1 = v.val(orc, 1)
                status = self.m.order_control_status.code(st1) if st1 else None
        res["status"] = status or "unknown"
        res["intent"] = "order"
        prio = v.val(tq1, 9) if tq1 is not None else ""
        if not prio:
            prio = v.val(orc, 7, 6) or v.val(obr, 27, 6)
        pmap = {"S": "stat", "A": "asap", "R": "routine", "P": "routine", "T": "urgent", "C": "urgent"}
        if prio in pmap:
            res["priority"] = pmap[prio]
        code = t.cc_field(obr, 4)
        if code:
            res["code"] = code
        if self.patient_ref:
            res["subject"] = self.patient_ref
        if self.encounter_ref:
            res["encounter"] = self.encounter_ref
        when = None
        if tq1 is not None:
            when = t.dt(v.val(tq1, 7))
        if not when:
            when = t.dt(v.val(orc, 7, 4)) or t.dt(v.val(obr, 27, 4))
        if when:
            res["occurrenceDateTime"] = when
        authored = t.dt(v.val(orc, 9))
        if authored:
            res["authoredOn"] = authored
        req = self.practitioner_field(orc, 12) or self.practitioner_field(obr, 16)
        if req:
            res["requester"] = req[0]
        if self.coverage_refs:
            res["insurance"] = list(self.coverage_refs)
        key = idents[0] if idents else None
        return self.b.add(res, key, mode="update")

    # ================================================================ the message types
    def adt(self) -> None:
        v = self.v
        trig = self.trigger or v.val(v.seg("EVN"), 1)
        pid = v.seg("PID")
        if pid is None:
            raise MappingError(f"ADT^{trig} has no PID segment", location="PID", code="100")
        if trig == "A40":
            self.merge(pid)
            return
        self.patient(pid, v.seg("PD1"))
        self.encounter(v.seg("PV1"), v.seg("PV2"), event=trig)
        for s in v.all("NK1"):
            self.related_person(s)
        for s in v.all("AL1"):
            self.allergy(s)
        diags = []
        for s in v.all("DG1"):
            r = self.condition(s)
            if r:
                diags.append(r)
        if diags and self.encounter_ref:
            enc = self._resource_of(self.encounter_ref)
            if enc is not None:
                dmap = self.m.diagnosis_type
                enc["diagnosis"] = []
                for ref, typ in diags:
                    d: dict[str, Any] = {"condition": ref}
                    hit = dmap.get(typ)
                    if hit:
                        d["use"] = {"coding": [{"system": hit[1], "code": hit[0]}]}
                    enc["diagnosis"].append(d)
        for s in v.all("IN1"):
            self.coverage(s)
        obxs = v.all("OBX")
        if obxs:
            category = self.cfg.adt_observation_category or None
            default_time = self.t.dt(v.val(v.seg("EVN"), 2))
            for s in obxs:
                self.observation(s, category=category, default_time=default_time)

    def _resource_of(self, ref: dict[str, Any]) -> dict[str, Any] | None:
        return self.b.resource_of(ref)

    def merge(self, pid: Seg) -> None:
        v, t = self.v, self.t
        survivor_ref = self.patient(pid, v.seg("PD1"), mode="update")
        survivor = self._resource_of(survivor_ref) if survivor_ref else None
        for mrg in v.all("MRG"):
            old_ids = [x for x in (t.cx(c) for c in v.reps(mrg, 1)) if x]
            if not old_ids:
                raise MappingError("ADT^A40: MRG-1 (prior patient identifier list) is empty", location="MRG-1", code="101")
            key = next((x for x in old_ids if x.get("type", {}).get("coding", [{}])[0].get("code") == "MR"), old_ids[0])
            old: dict[str, Any] = {"resourceType": "Patient", "identifier": old_ids, "active": False}
            names = t.xpn_all(mrg, 7)
            if names:
                old["name"] = names
            if survivor_ref:
                old["link"] = [{"other": survivor_ref, "type": "replaced-by"}]
            old_ref = self.b.add(old, key, mode="update")
            if survivor is not None:
                survivor.setdefault("link", []).append({"other": old_ref, "type": "replaces"})
                survivor["active"] = True

    def siu(self) -> None:
        v, t = self.v, self.t
        sch = v.seg("SCH")
        if sch is None:
            raise MappingError(f"SIU^{self.trigger} has no SCH segment", location="SCH", code="100")
        self.patient(v.seg("PID"), v.seg("PD1"))
        self.encounter(v.seg("PV1"), v.seg("PV2"))
        res: dict[str, Any] = {"resourceType": "Appointment"}
        idents = []
        for n, typ in ((1, "PLAC"), (2, "FILL")):
            x = t.ei(v.first(sch, n), typ) if v.first(sch, n) else None
            if x:
                idents.append(x)
        if idents:
            res["identifier"] = idents
        st = v.val(sch, 25)
        status = self.m.appointment_status.code(st) if st else None
        if status is None:
            status = {"S15": "cancelled", "S17": "entered-in-error", "S26": "noshow"}.get(self.trigger, "booked")
        if self.trigger == "S15":
            status = "cancelled"
        res["status"] = status
        if status == "cancelled":
            reason = t.cc_field(sch, 6)
            if reason:
                res["cancelationReason"] = reason
        reason = t.cc_field(sch, 7)
        if reason:
            res["reasonCode"] = [reason]
        atype = t.cc_field(sch, 8)
        if atype:
            res["appointmentType"] = atype
        services = [x for x in (t.cc_field(s, 3) for s in v.all("AIS")) if x]
        if services:
            res["serviceType"] = services
        start = t.dt(v.val(sch, 11, 4), instant=True)
        end = t.dt(v.val(sch, 11, 5), instant=True)
        ais = v.seg("AIS")
        if not start and ais is not None:
            start = t.dt(v.val(ais, 4), instant=True)
        if start:
            res["start"] = start
        if end:
            res["end"] = end
        dur = v.val(sch, 9)
        if dur.isdigit() and (v.val(sch, 10) in ("", "min", "MIN", "m")):
            res["minutesDuration"] = int(dur)
        notes = self.notes([s for s in v.all("NTE") if v.segs[s.index - 1].name in ("SCH", "NTE") and s.index < (v.seg("PID").index if v.seg("PID") else 10**9)])
        if notes:
            res["comment"] = "\n".join(n["text"] for n in notes)
        parts: list[dict[str, Any]] = []
        if self.patient_ref:
            parts.append({"actor": self.patient_ref, "status": "accepted"})
        for aip in v.all("AIP"):
            for ref in self.practitioner_field(aip, 3):
                p: dict[str, Any] = {"actor": ref, "status": "accepted"}
                role = t.cc_field(aip, 4)
                if role:
                    p["type"] = [role]
                parts.append(p)
        for ail in v.all("AIL"):
            loc = self.location(v.first(ail, 3))
            if loc:
                parts.append({"actor": loc, "status": "accepted"})
        for aig in v.all("AIG"):
            comps = v.first(aig, 3)
            if comps and v.c(comps, 1) and not any(True for aip in v.all("AIP") if v.val(aip, 3) == v.c(comps, 1)):
                p = {"status": "accepted", "type": [t.cc(comps) or {"text": v.c(comps, 1)}]}
                parts.append(p)
        if not parts:
            parts.append({"status": "needs-action", "type": [{"text": "unspecified"}]})
        res["participant"] = parts
        created = t.dt(self.v.val(self.msh, 7))
        if created:
            res["created"] = created
        self.b.add(res, idents[0] if idents else None, mode="update")

    def orders(self) -> None:
        v = self.v
        self.patient(v.seg("PID"), v.seg("PD1"))
        self.encounter(v.seg("PV1"), v.seg("PV2"))
        for s in v.all("IN1"):
            self.coverage(s)
        for s in v.all("AL1"):
            self.allergy(s)
        conds = [r[0] for r in (self.condition(s) for s in v.all("DG1")) if r]
        for orc, group in self._order_groups():
            obr = next((s for s in group if s.name == "OBR"), None)
            tq1 = next((s for s in group if s.name == "TQ1"), None)
            ref = self.service_request(orc, obr, tq1)
            sr = self._resource_of(ref) if ref else None
            if sr is None:
                continue
            if conds:
                sr["reasonReference"] = list(conds)
            specs = []
            for spm in (s for s in group if s.name == "SPM"):
                sp = self.specimen(spm, ref)
                if sp:
                    specs.append(sp)
            if specs:
                sr["specimen"] = specs
            notes = self.notes([s for s in group if s.name == "NTE"])
            if notes:
                sr["note"] = notes

    def _order_groups(self) -> list[tuple[Seg | None, list[Seg]]]:
        """Split the message at each ORC (or each OBR without an ORC before it)."""
        groups: list[tuple[Seg | None, list[Seg]]] = []
        cur: list[Seg] | None = None
        orc: Seg | None = None
        for s in self.v.segs:
            if s.name == "ORC":
                orc = s
                cur = []
                groups.append((orc, cur))
            elif s.name == "OBR":
                if cur is None or any(x.name == "OBR" for x in cur):
                    cur = []
                    groups.append((orc if cur is None else None, cur))
                cur.append(s)
            elif cur is not None and s.name not in ("PID", "PD1", "PV1", "PV2", "IN1", "IN2", "GT1", "AL1"):
                cur.append(s)
        return groups

    def specimen(self, spm: Seg, sr_ref: dict[str, Any] | None) -> dict[str, Any] | None:
        v, t = self.v, self.t
        res: dict[str, Any] = {"resourceType": "Specimen"}
        ident = None
        sid = v.first(spm, 2)
        if sid:
            ident = t.ei(sid)
            if ident:
                res["identifier"] = [ident]
        typ = t.cc_field(spm, 4)
        if typ:
            res["type"] = typ
        if self.patient_ref:
            res["subject"] = self.patient_ref
        if sr_ref:
            res["request"] = [sr_ref]
        coll = t.dt(v.val(spm, 17))
        if coll:
            res.setdefault("collection", {})["collectedDateTime"] = coll
        site = t.cc_field(spm, 8)
        if site:
            res.setdefault("collection", {})["bodySite"] = site
        recv = t.dt(v.val(spm, 18))
        if recv:
            res["receivedTime"] = recv
        return self.b.add(res, ident, mode="update")

    def oru(self) -> None:
        v, t = self.v, self.t
        self.patient(v.seg("PID"), v.seg("PD1"))
        self.encounter(v.seg("PV1"), v.seg("PV2"))
        for s in v.all("NK1"):
            self.related_person(s)
        for orc, group in self._order_groups():
            obr = next((s for s in group if s.name == "OBR"), None)
            if obr is None:
                continue
            tq1 = next((s for s in group if s.name == "TQ1"), None)
            sr_ref = self.service_request(orc, obr, tq1) if orc is not None else None
            dr: dict[str, Any] = {"resourceType": "DiagnosticReport"}
            idents = []
            for comps, typ in ((v.first(obr, 3) or v.first(orc, 3), "FILL"), (v.first(obr, 2) or v.first(orc, 2), "PLAC")):
                if comps:
                    x = t.ei(comps, typ)
                    if x:
                        idents.append(x)
            if idents:
                dr["identifier"] = idents
            if sr_ref:
                dr["basedOn"] = [sr_ref]
            st = v.val(obr, 25)
            dr["status"] = self.m.result_status.code(st, "unknown") if st else "unknown"
            section = v.val(obr, 24)
            cats = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": section or "LAB"}]}]
            dr["category"] = cats
            code = t.cc_field(obr, 4)
            dr["code"] = code or {"text": "unknown"}
            if self.patient_ref:
                dr["subject"] = self.patient_ref
            if self.encounter_ref:
                dr["encounter"] = self.encounter_ref
            start, end = t.dt(v.val(obr, 7)), t.dt(v.val(obr, 8))
            if start and end:
                dr["effectivePeriod"] = {"start": start, "end": end}
            elif start:
                dr["effectiveDateTime"] = start
            issued = t.dt(v.val(obr, 22), instant=True)
            if issued:
                dr["issued"] = issued
            interp = self.practitioner_field(obr, 32)
            if interp:
                dr["resultsInterpreter"] = interp
            key = idents[0] if idents else None
            key_prefix = key["value"] if key else ""
            key_system = key["system"] if key else ""
            results = []
            specs = []
            for s in group:
                if s.name == "OBX":
                    r = self.observation(s, category="laboratory", based_on=sr_ref, default_time=start, key_prefix=key_prefix, key_system=key_system)
                    if r:
                        results.append(r)
                elif s.name == "SPM":
                    sp = self.specimen(s, sr_ref)
                    if sp:
                        specs.append(sp)
            if specs:
                dr["specimen"] = specs
            if results:
                dr["result"] = results
            # NTEs right after the OBR are about the order: the report's conclusion text here
            notes = self.notes(self.following(obr, ("NTE",)))
            if notes:
                dr["conclusion"] = "\n".join(n["text"] for n in notes)
            self.b.add(dr, key, mode="update")

    def rde(self) -> None:
        v, t = self.v, self.t
        self.patient(v.seg("PID"), v.seg("PD1"))
        self.encounter(v.seg("PV1"), v.seg("PV2"))
        for s in v.all("AL1"):
            self.allergy(s)
        for s in v.all("IN1"):
            self.coverage(s)
        for orc, group in self._rx_groups("RXE"):
            rxe = next((s for s in group if s.name == "RXE"), None)
            if rxe is None:
                continue
            res: dict[str, Any] = {"resourceType": "MedicationRequest"}
            idents = []
            for n, typ in ((2, "PLAC"), (3, "FILL"), (4, "PGN")):
                x = t.ei(v.first(orc, n), typ) if v.first(orc, n) else None
                if x:
                    idents.append(x)
            if idents:
                res["identifier"] = idents
            st5 = v.val(orc, 5)
            status = self.m.order_status.code(st5) if st5 else None
            if status is None:
                st1 = v.val(orc, 1)
                status = self.m.order_control_status.code(st1) if st1 else None
            res["status"] = {"revoked": "cancelled", "draft": "draft", "on-hold": "on-hold", "completed": "completed", "entered-in-error": "entered-in-error"}.get(
                status or "", "active" if status == "active" else "unknown"
            )
            res["intent"] = "order"
            med = t.cc_field(rxe, 2)
            res["medicationCodeableConcept"] = med or {"text": "unknown"}
            if self.patient_ref:
                res["subject"] = self.patient_ref
            if self.encounter_ref:
                res["encounter"] = self.encounter_ref
            authored = t.dt(v.val(orc, 9))
            if authored:
                res["authoredOn"] = authored
            req = self.practitioner_field(orc, 12)
            if req:
                res["requester"] = req[0]
            dosage: dict[str, Any] = {}
            instr = v.val(rxe, 7)  # RXE-7 provider's administration instructions (CWE: text in .1 or .2)
            instr_text = v.val(rxe, 7, 2) or instr
            if instr_text:
                dosage["text"] = instr_text
            tq1 = next((s for s in group if s.name == "TQ1"), None)
            timing_code = v.val(tq1, 3) if tq1 is not None else ""
            if not timing_code:
                timing_code = v.val(rxe, 1, 2)
            timing: dict[str, Any] = {}
            if timing_code:
                timing["code"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation", "code": timing_code}]}
            if tq1 is not None:
                start, end = t.dt(v.val(tq1, 7)), t.dt(v.val(tq1, 8))
                if start or end:
                    timing["repeat"] = {"boundsPeriod": {k: x for k, x in (("start", start), ("end", end)) if x}}
            if timing:
                dosage["timing"] = timing
            rxr = next((s for s in group if s.name == "RXR"), None)
            if rxr is not None:
                route = t.cc_field(rxr, 1)
                if route:
                    dosage["route"] = route
            amount = t.number(v.val(rxe, 3))
            if amount is not None:
                dosage["doseAndRate"] = [{"doseQuantity": {"value": amount, **t.unit(v.first(rxe, 5))}}]
            if dosage:
                res["dosageInstruction"] = [dosage]
            disp: dict[str, Any] = {}
            qty = t.number(v.val(rxe, 10))
            if qty is not None:
                disp["quantity"] = {"value": qty, **t.unit(v.first(rxe, 11))}
            refills = v.val(rxe, 12)
            if refills.isdigit():
                disp["numberOfRepeatsAllowed"] = int(refills)
            if disp:
                res["dispenseRequest"] = disp
            if self.coverage_refs:
                res["insurance"] = list(self.coverage_refs)
            notes = self.notes([s for s in group if s.name == "NTE"])
            if notes:
                res["note"] = notes
            self.b.add(res, idents[0] if idents else None, mode="update")

    def _rx_groups(self, main: str) -> list[tuple[Seg | None, list[Seg]]]:
        groups: list[tuple[Seg | None, list[Seg]]] = []
        cur: list[Seg] | None = None
        for s in self.v.segs:
            if s.name == "ORC":
                cur = []
                groups.append((s, cur))
            elif cur is not None:
                cur.append(s)
            elif s.name == main:
                cur = [s]
                groups.append((None, cur))
        return groups

    def vxu(self) -> None:
        v, t = self.v, self.t
        self.patient(v.seg("PID"), v.seg("PD1"))
        self.encounter(v.seg("PV1"), v.seg("PV2"))
        for s in v.all("NK1"):
            self.related_person(s)
        for s in v.all("IN1"):
            self.coverage(s)
        for orc, group in self._rx_groups("RXA"):
            rxa = next((s for s in group if s.name == "RXA"), None)
            if rxa is None:
                continue
            res: dict[str, Any] = {"resourceType": "Immunization"}
            idents = []
            for n, typ in ((3, "FILL"), (2, "PLAC")):
                x = t.ei(v.first(orc, n), typ) if v.first(orc, n) else None
                if x:
                    idents.append(x)
            key = idents[0] if idents else self.derived("Immunization", v.val(rxa, 5), v.val(rxa, 3), v.val(rxa, 15))
            if not idents:
                idents.append(key)
            res["identifier"] = idents
            cs = v.val(rxa, 20)
            status = self.m.completion_status.code(cs) if cs else "completed"
            if v.val(rxa, 21) == "D":
                status = "entered-in-error"
            res["status"] = status or "completed"
            if status == "not-done":
                reason = t.cc_field(rxa, 18)
                if reason:
                    res["statusReason"] = reason
            res["vaccineCode"] = t.cc_field(rxa, 5) or {"text": "unknown"}
            if self.patient_ref:
                res["patient"] = self.patient_ref
            if self.encounter_ref:
                res["encounter"] = self.encounter_ref
            when = t.dt(v.val(rxa, 3))
            if when:
                res["occurrenceDateTime"] = when
            else:
                res["occurrenceString"] = "unknown"
            info = v.val(rxa, 9)
            res["primarySource"] = info in ("", "00")
            if info and info != "00":
                res["reportOrigin"] = t.cc_field(rxa, 9)
            lot = v.val(rxa, 15)
            if lot:
                res["lotNumber"] = lot
            exp = date_of(v.val(rxa, 16))
            if exp:
                res["expirationDate"] = exp
            mvx = v.first(rxa, 17)
            if mvx and v.c(mvx, 1):
                man: dict[str, Any] = {"identifier": {"system": self.tables.system_uri(v.c(mvx, 3) or "MVX"), "value": v.c(mvx, 1)}}
                if v.c(mvx, 2):
                    man["display"] = v.c(mvx, 2)
                res["manufacturer"] = man
            rxr = next((s for s in group if s.name == "RXR"), None)
            if rxr is not None:
                site = t.cc_field(rxr, 2)
                if site:
                    res["site"] = site
                route = t.cc_field(rxr, 1)
                if route:
                    res["route"] = route
            amount = t.number(v.val(rxa, 6))
            if amount is not None and amount != 999:
                res["doseQuantity"] = {"value": amount, **t.unit(v.first(rxa, 7))}
            perf = []
            for ref in self.practitioner_field(rxa, 10):
                perf.append({"function": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0443", "code": "AP"}]}, "actor": ref})
            for ref in self.practitioner_field(orc, 12):
                perf.append({"function": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0443", "code": "OP"}]}, "actor": ref})
            if perf:
                res["performer"] = perf
            obxs = [s for s in group if s.name == "OBX"]
            for obx in obxs:
                if v.val(obx, 3) == "64994-7":
                    elig = t.cc_field(obx, 5)
                    if elig:
                        res.setdefault("programEligibility", []).append(elig)
                else:
                    self.observation(obx, default_time=when)
            self.b.add(res, key, mode="update")

    def mdm(self) -> None:
        v, t = self.v, self.t
        self.patient(v.seg("PID"), v.seg("PD1"))
        self.encounter(v.seg("PV1"), v.seg("PV2"))
        txa = v.seg("TXA")
        if txa is None:
            raise MappingError("MDM^T02 has no TXA segment", location="TXA", code="100")
        res: dict[str, Any] = {"resourceType": "DocumentReference"}
        unique = v.first(txa, 12)
        master = t.ei(unique) if unique else None
        if master:
            res["masterIdentifier"] = master
            res["identifier"] = [master]
        res["status"] = "current"
        comp = v.val(txa, 17)
        doc_status = {"AU": "final", "LA": "final", "DO": "final", "DI": "preliminary", "IP": "preliminary", "IN": "preliminary", "PA": "preliminary"}.get(comp)
        if doc_status:
            res["docStatus"] = doc_status
        dtype = v.val(txa, 2)
        if dtype:
            res["type"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0270", "code": dtype}]}
        obxs = v.all("OBX")
        if obxs:
            code = t.cc_field(obxs[0], 3)
            if code and code.get("coding"):
                res.setdefault("type", {"coding": []})["coding"].append(code["coding"][0])
        if self.patient_ref:
            res["subject"] = self.patient_ref
        date = t.dt(v.val(txa, 7), instant=True) or t.dt(v.val(txa, 4), instant=True) or t.dt(v.val(self.msh, 7), instant=True)
        if date:
            res["date"] = date
        authors = self.practitioner_field(txa, 5) or self.practitioner_field(txa, 9)
        if authors:
            res["author"] = authors
        auth = self.practitioner_field(txa, 22)
        if auth:
            res["authenticator"] = auth[0]
        lines = []
        for obx in obxs:
            vt = v.val(obx, 2)
            if vt in ("TX", "FT", "ST", ""):
                lines.extend(v.text(v.cs.join(c)) for c in v.reps(obx, 5))
        content = "\n".join(lines)
        res["content"] = [
            {
                "attachment": {
                    "contentType": "text/plain; charset=utf-8",
                    "data": base64.b64encode(content.encode("utf-8")).decode("ascii"),
                    **({"creation": t.dt(v.val(txa, 4))} if t.dt(v.val(txa, 4)) else {}),
                }
            }
        ]
        ctx: dict[str, Any] = {}
        if self.encounter_ref:
            ctx["encounter"] = [self.encounter_ref]
        when = t.dt(v.val(txa, 4))
        if when:
            ctx["period"] = {"start": when}
        if ctx:
            res["context"] = ctx
        self.b.add(res, master, mode="update")

    def dft(self) -> None:
        v, t = self.v, self.t
        self.patient(v.seg("PID"), v.seg("PD1"))
        self.encounter(v.seg("PV1"), v.seg("PV2"))
        for s in v.all("DG1"):
            self.condition(s)
        for s in v.all("IN1"):
            self.coverage(s)
        for ft1 in v.all("FT1"):
            res: dict[str, Any] = {"resourceType": "ChargeItem"}
            tid = v.val(ft1, 2)
            ident = {"system": self.tables.identifier_system(v.val(self.msh, 4) or v.val(self.msh, 3), "TXN"), "value": tid} if tid else None
            if ident is None:
                ident = self.derived("ChargeItem", v.val(ft1, 7), v.val(ft1, 4), self.control_id, v.val(ft1, 1))
            res["identifier"] = [ident]
            ttype = v.val(ft1, 6)
            res["status"] = {"CG": "billable", "CD": "aborted", "PY": "billed", "AJ": "billed"}.get(ttype, "billable")
            code = t.cc_field(ft1, 7) or t.cc_field(ft1, 25)
            res["code"] = code or {"text": v.val(ft1, 8) or "unknown"}
            if self.patient_ref:
                res["subject"] = self.patient_ref
            if self.encounter_ref:
                res["context"] = self.encounter_ref
            when = v.first(ft1, 4)
            start, end = t.dt(v.c(when, 1)), t.dt(v.c(when, 2))
            if start and end:
                res["occurrencePeriod"] = {"start": start, "end": end}
            elif start:
                res["occurrenceDateTime"] = start
            posted = t.dt(v.val(ft1, 5))
            if posted:
                res["enteredDate"] = posted
            qty = t.number(v.val(ft1, 10))
            if qty is not None:
                res["quantity"] = {"value": qty}
            price = v.sub(v.first(ft1, 11), 1) if v.first(ft1, 11) else [""]
            amt = t.number(price[0]) if price and price[0] else None
            if amt is not None:
                res["priceOverride"] = {"value": amt, **({"currency": price[1]} if len(price) > 1 and price[1] else {})}
            ext_price = v.sub(v.first(ft1, 22), 1) if v.first(ft1, 22) else [""]
            if ext_price and ext_price[0] and amt is None:
                n = t.number(ext_price[0])
                if n is not None:
                    res["priceOverride"] = {"value": n, **({"currency": ext_price[1]} if len(ext_price) > 1 and ext_price[1] else {})}
            reasons = t.cc_all(ft1, 19)
            if reasons:
                res["reason"] = reasons
            perf = self.practitioner_field(ft1, 20)
            if perf:
                res["performer"] = [{"actor": perf[0]}]
            orderer = self.practitioner_field(ft1, 21)
            if orderer:
                res["enterer"] = orderer[0]
            dept = v.first(ft1, 13)
            if dept and v.c(dept, 1):
                res["performingOrganization"] = {"display": v.c(dept, 2) or v.c(dept, 1)}
            mods = t.cc_all(ft1, 26)
            if mods:
                res["extension"] = [{"url": "urn:hub:extension:procedure-code-modifier", "valueCodeableConcept": m} for m in mods]
            self.b.add(res, ident, mode="update")

    # ================================================================ extensions by rule
    def apply_extensions(self) -> None:
        rules = self.tables.extensions
        if not rules:
            return
        v = self.v
        msg = v.msg
        for rule in rules:
            seg_name = _path_segment(rule.source)
            if seg_name is not None and v.seg(seg_name) is None:  # the usual case: the message has no such Z-segment
                continue
            target = self.b.first(rule.resource)
            if target is None:
                continue
            try:
                values = msg.get_all(rule.source) if rule.repeat else [x for x in [msg.get(rule.source)] if x]
            except Exception:  # noqa: BLE001 - a path the message does not have
                continue
            for raw in values:
                ext = self._ext_value(rule.type, raw)
                if ext is not None:
                    target.setdefault("extension", []).append({"url": rule.url, **ext})

    def _ext_value(self, typ: str, raw: str) -> dict[str, Any] | None:
        if raw in ("", '""'):
            return None
        t = self.t
        if typ == "CodeableConcept":
            comps = str(raw).split(self.v.cs) if self.v.cs in str(raw) else [str(raw)]
            cc = t.cc(comps)
            return {"valueCodeableConcept": cc} if cc else None
        text = str(raw)
        if typ == "boolean":
            b = self.m.yes_no.code(text)
            return {"valueBoolean": b == "true"} if b in ("true", "false") else None
        if typ == "integer":
            return {"valueInteger": int(text)} if text.lstrip("-").isdigit() else None
        if typ == "decimal":
            n = t.number(text)
            return {"valueDecimal": n} if n is not None else None
        if typ == "date":
            d = date_of(text)
            return {"valueDate": d} if d else None
        if typ == "dateTime":
            d = t.dt(text)
            return {"valueDateTime": d} if d else None
        if typ == "code":
            return {"valueCode": text}
        return {"valueString": text}

    # ================================================================ entry point
    def run(self) -> dict[str, Any]:
        name = _HANDLERS.get(self.mtype)
        handler: Callable[[], None] | None = getattr(self, name) if name else None
        triggers = SUPPORTED.get(self.mtype)
        if handler is None or (self.cfg.strict_types and self.trigger not in (triggers or ())):
            known = ", ".join(f"{k}^{t}" for k in SUPPORTED for t in sorted(SUPPORTED[k]))
            raise MappingError(
                f"v2_to_fhir has no mapping for {self.mtype or '?'}^{self.trigger or '?'} (supported: {known})", location="MSH-9", code="200"
            )
        handler()
        self.apply_extensions()
        meta: dict[str, Any] = {}
        if self.control_id:
            meta["identifier"] = {"system": f"urn:hub:message:{self.v.val(self.msh, 3) or 'unknown'}", "value": self.control_id}
        ts = self.t.dt(self.v.val(self.msh, 7), instant=True)
        if ts:
            meta["timestamp"] = ts
        return self.b.build(meta)


_HANDLERS = {"ADT": "adt", "SIU": "siu", "ORM": "orders", "OML": "orders", "ORU": "oru", "RDE": "rde", "VXU": "vxu", "MDM": "mdm", "DFT": "dft"}


def convert(msg: Hl7Message | bytes | str, tables: Tables | None = None, config: V2ToFhir.Config | None = None) -> dict[str, Any]:
    """One v2 message → a FHIR Bundle (a dict). Raises MappingError for what cannot be mapped."""
    if not isinstance(msg, Hl7Message):
        msg = parse_v2(msg)
    return _Conv(msg, tables or load_tables(None), config or V2ToFhir.Config(type="v2_to_fhir")).run()


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class V2ToFhir:
    class Config(TransformConfig):
        """HL7 v2 → a FHIR R4 Bundle (IG v2-to-FHIR maps): ``{type: v2_to_fhir, bundle: transaction}``."""

        type: Literal["v2_to_fhir"] = "v2_to_fhir"
        bundle: Literal["transaction", "batch", "collection"] = Field(
            "transaction",
            description="Bundle type. transaction: all-or-nothing with conditional create/update and references between "
            "entries; batch: independent entries (references by identifier); collection: just the resources.",
        )
        patient: Literal["auto", "update", "create"] = Field(
            "auto",
            description="How the Patient entry is written: update = conditional PUT on the MRN (create or overwrite), "
            "create = POST with ifNoneExist (never overwrite demographics); auto = update for ADT/SIU, create otherwise.",
        )
        timezone: str = Field(
            "Z",
            pattern=r"^(Z|[+-]\d\d:\d\d)$",
            description="Offset given to v2 times that have none (FHIR times need one).",
            examples=["Z", "-06:00"],
        )
        mappings: str = Field(
            "fhir", description="Folder of the code maps, systems and extension rules, relative to the mappings folder."
        )
        strict_types: bool = Field(
            True, description="Reject message types/triggers the converter does not list (false: map what it can)."
        )
        adt_observation_category: str = Field(
            "vital-signs", description="Observation category for OBX in ADT messages ('' for none)."
        )

    def __init__(self, config: Config, ctx: Any) -> None:
        self.config = config
        folder = ctx.mappings_dir / config.mappings if ctx is not None else None
        self.tables = load_tables(folder)

    def __call__(self, message: Message) -> Message:
        if message.content_type != "hl7v2":
            raise MappingError(f"v2_to_fhir needs an HL7 v2 message, got {message.content_type}")
        msg = message.parsed if isinstance(message.parsed, Hl7Message) else None
        if msg is None:
            try:
                msg = parse_v2(message.raw)
            except Hl7ParseError:
                raise
        bundle = _Conv(msg, self.tables, self.config).run()
        out = message.replace(dumps(bundle), "fhir")
        out.parsed = FhirDocument(bundle, out.raw)
        return out
