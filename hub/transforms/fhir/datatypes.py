"""HL7 v2 data types → FHIR data types (plain dicts), after the IG's data type maps (CX[Identifier], XPN[HumanName],
XAD[Address], XTN[ContactPoint], CWE[CodeableConcept], DTM[dateTime], XCN[Practitioner], EI[Identifier], CQ/SN …).

The hot path of ``v2_to_fhir``: fields are read from the ER7 text of each segment (split once per field, escapes
decoded only where an escape character occurs) and turned into dicts; nothing here builds a pydantic model.
A component list (``comps``) is the raw text of one repetition split on the component separator.
"""

from __future__ import annotations

import re
from typing import Any

from hub.transforms.hl7v2 import Hl7Message, unescape

from .maps import Tables

__all__ = ["V2", "Seg", "Types", "dtm", "date_of"]

_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?\d*([+-]\d{4}|Z)?$")


def _tz(tz: str) -> str:
    if tz == "Z":
        return "Z"
    return f"{tz[:3]}:{tz[3:]}"


def dtm(value: str | None, default_tz: str = "Z", *, instant: bool = False) -> str | None:
    """A v2 DTM/TS → a FHIR dateTime (or instant); None when empty or not a date.

    ``YYYY[MM[DD]]`` stays a (partial) date; with a time, minutes and seconds are filled with 00 and the offset
    (``-0600`` → ``-06:00``) or ``default_tz`` is added, as FHIR requires a zone on every time. ``instant``
    requires a full date and time (None otherwise).
    """
    if not value:
        return None
    m = _DTM.match(value.strip())
    if m is None:
        return None
    y, mo, d, h, mi, s, frac, tz = m.groups()
    if h is None:
        if instant:
            return None
        if mo is None:
            return y
        if d is None:
            return f"{y}-{mo}"
        return f"{y}-{mo}-{d}"
    if d is None:
        return None
    out = f"{y}-{mo}-{d}T{h}:{mi or '00'}:{s or '00'}{frac or ''}"
    return out + (_tz(tz) if tz else default_tz)


def date_of(value: str | None) -> str | None:
    """A v2 DT/DTM → a FHIR date (the time is dropped)."""
    if not value:
        return None
    m = _DTM.match(value.strip())
    if m is None:
        return None
    y, mo, d = m.group(1), m.group(2), m.group(3)
    return y if mo is None else f"{y}-{mo}" if d is None else f"{y}-{mo}-{d}"


class Seg:
    """A segment's fields as written (``f[n]`` is field n; MSH numbered the standard way)."""

    __slots__ = ("name", "f", "index", "cache")

    def __init__(self, name: str, fields: list[str], index: int) -> None:
        self.name = name
        self.f = fields
        self.index = index  # position in the message (0 = MSH)
        self.cache: dict[int, list[list[str]]] = {}  # field → its split repetitions (fields are read several times)

    def raw(self, n: int) -> str:
        f = self.f
        return f[n] if n < len(f) else ""


class V2:
    """Fast read access to one message for the converters (decoding on demand)."""

    __slots__ = ("msg", "segs", "cs", "rs", "ss", "esc", "enc", "codec")

    def __init__(self, msg: Hl7Message) -> None:
        self.msg = msg
        enc = msg.enc
        self.enc = enc
        self.codec = msg.codec
        self.cs, self.rs, self.ss, self.esc = enc.component, enc.repetition, enc.subcomponent, enc.escape
        self.segs = [Seg(s.name, s.fields, i) for i, s in enumerate(msg.segments)]

    # ---------------------------------------------------------------- decoding
    def d(self, s: str) -> str:
        """Decode one leaf (escapes) — '' stays ''. The HL7 null '""' reads as ''."""
        if not s:
            return s
        if s == '""':
            return ""
        esc = self.esc
        if esc and esc in s:
            return unescape(s, self.enc, codec=self.codec)
        return s

    def text(self, s: str) -> str:
        """Decode a text value, rendering formatting escapes (\\.br\\ → newline) — for TX/FT."""
        if not s or s == '""':
            return ""
        esc = self.esc
        if esc and esc in s:
            return unescape(s, self.enc, formatting=True, codec=self.codec)
        return s

    def reps(self, seg: Seg | None, n: int) -> list[list[str]]:
        """Field n of ``seg``: each non-empty repetition as its list of raw components."""
        if seg is None:
            return []
        hit = seg.cache.get(n)
        if hit is not None:
            return hit
        f = seg.f
        out: list[list[str]] = []
        raw = f[n] if n < len(f) else ""
        if raw and raw != '""':
            rs, cs = self.rs, self.cs
            if seg.name == "MSH" and n == 2:
                out = [[raw]]
            else:
                for rep in raw.split(rs) if rs and rs in raw else (raw,):
                    if rep:
                        out.append(rep.split(cs) if cs and cs in rep else [rep])
        seg.cache[n] = out
        return out

    def first(self, seg: Seg | None, n: int) -> list[str]:
        """The components of the first repetition of field n ([] when empty)."""
        if seg is None:
            return []
        reps = seg.cache.get(n)
        if reps is None:
            reps = self.reps(seg, n)
        if not reps:
            return []
        raw = seg.f[n]
        if self.rs and raw[:1] == self.rs:  # an empty first repetition: first() means the first one as written
            return []
        return reps[0]

    def val(self, seg: Seg | None, n: int, c: int = 1) -> str:
        """Decoded component c of the first repetition of field n (first subcomponent); '' when absent."""
        comps = self.first(seg, n)
        return self.c(comps, c)

    def c(self, comps: list[str], i: int) -> str:
        """Decoded component i (1-based) — its first subcomponent when it has several."""
        if i > len(comps):
            return ""
        v = comps[i - 1]
        if not v:
            return ""
        ss = self.ss
        if ss and ss in v:
            v = v.split(ss, 1)[0]
        esc = self.esc
        if (esc and esc in v) or v == '""':
            return self.d(v)
        return v

    def sub(self, comps: list[str], i: int) -> list[str]:
        """Decoded subcomponents of component i ([''] when empty)."""
        if i > len(comps):
            return [""]
        v = comps[i - 1]
        ss = self.ss
        return [self.d(x) for x in v.split(ss)] if ss and ss in v else [self.d(v)]

    def seg(self, name: str) -> Seg | None:
        for s in self.segs:
            if s.name == name:
                return s
        return None

    def all(self, name: str) -> list[Seg]:
        return [s for s in self.segs if s.name == name]


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v not in (None, "", [], {})}


class Types:
    """The data type converters, bound to the mapping tables and the default time zone."""

    def __init__(self, v: V2, tables: Tables, default_tz: str = "Z") -> None:
        self.v = v
        self.t = tables
        self.tz = default_tz
        cm = tables.code_map
        self.m_idtype = cm("identifier_type")
        self.m_nametype = cm("name_type")
        self.m_tel_use = cm("telecom_use")
        self.m_tel_eq = cm("telecom_equipment")
        self.m_addr_use = cm("address_use")
        self.m_units = cm("units")

    # ---------------------------------------------------------------- time
    def dt(self, value: str, instant: bool = False) -> str | None:
        return dtm(value, self.tz, instant=instant)

    # ---------------------------------------------------------------- codes
    def coding(self, comps: list[str], off: int = 0) -> dict[str, Any] | None:
        """CWE components off+1..off+3 → a Coding (identifier, text, coding system)."""
        c = self.v.c
        code = c(comps, off + 1)
        display = c(comps, off + 2)
        if not code and not display:
            return None
        out: dict[str, Any] = {}
        system = self.t.system_uri(c(comps, off + 3))
        if system:
            out["system"] = system
        if code:
            out["code"] = code
        if display:
            out["display"] = display
        return out

    def cc(self, comps: list[str]) -> dict[str, Any] | None:
        """CWE/CE/CNE → CodeableConcept: the primary and alternate codings, CWE-9 (original text) as text."""
        if not comps:
            return None
        codings = []
        first = self.coding(comps)
        if first is not None and "code" in first:
            codings.append(first)
        alt = self.coding(comps, 3) if len(comps) > 3 else None
        if alt is not None and "code" in alt:
            codings.append(alt)
        out: dict[str, Any] = {}
        if codings:
            out["coding"] = codings
        text = self.v.c(comps, 9) if len(comps) >= 9 else ""
        if not text and first is not None and "code" not in first and first.get("display"):
            text = first["display"]
        if text:
            out["text"] = text
        return out or None

    def cc_field(self, seg: Seg | None, n: int) -> dict[str, Any] | None:
        return self.cc(self.v.first(seg, n))

    def cc_all(self, seg: Seg | None, n: int) -> list[dict[str, Any]]:
        out = []
        for comps in self.v.reps(seg, n):
            x = self.cc(comps)
            if x:
                out.append(x)
        return out

    def mapped(self, table: str, v2_code: str, fallback_system: str = "") -> dict[str, Any] | None:
        """A v2 code (ID/IS) → a Coding through a code map; unmapped codes keep the HL7 table system given."""
        if not v2_code:
            return None
        hit = self.t.code_map(table).get(v2_code)
        if hit:
            code, system, display = hit
            return _clean({"system": system, "code": code, "display": display})
        return _clean({"system": fallback_system, "code": v2_code})

    # ---------------------------------------------------------------- identifiers
    def cx(self, comps: list[str], *, with_type: bool = True) -> dict[str, Any] | None:
        """CX → Identifier: CX-1 value, CX-4 (HD) → system, CX-5 → type, CX-7/8 → period."""
        v = self.v
        value = v.c(comps, 1)
        if not value:
            return None
        hd = v.sub(comps, 4) if len(comps) >= 4 else [""]
        hd = hd + ["", "", ""]
        type_code = v.c(comps, 5)
        out: dict[str, Any] = {}
        if with_type and type_code:
            out["type"] = {"coding": [self._id_type(type_code)]}
        out["system"] = self.t.identifier_system(hd[0], type_code, hd[1], hd[2])
        out["value"] = value
        start, end = self.dt(v.c(comps, 7)), self.dt(v.c(comps, 8))
        if start or end:
            out["period"] = _clean({"start": start, "end": end})
        return out

    def _id_type(self, type_code: str) -> dict[str, Any]:
        hit = self.m_idtype.get(type_code)
        if hit:
            return _clean({"system": hit[1], "code": hit[0], "display": hit[2]})
        return {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": type_code}

    def ei(self, comps: list[str], type_code: str = "") -> dict[str, Any] | None:
        """EI → Identifier: EI-1 value, EI-2/3/4 (namespace, universal id, type) → system, optional type."""
        v = self.v
        value = v.c(comps, 1)
        if not value:
            return None
        out: dict[str, Any] = {}
        if type_code:
            out["type"] = {"coding": [self._id_type(type_code)]}
        out["system"] = self.t.identifier_system(v.c(comps, 2), type_code, v.c(comps, 3), v.c(comps, 4))
        out["value"] = value
        return out

    # ---------------------------------------------------------------- people
    def xpn(self, comps: list[str]) -> dict[str, Any] | None:
        """XPN → HumanName: family (XPN-1.1), given (XPN-2, XPN-3), suffix (4, 6), prefix (5), use (XPN-7)."""
        v = self.v
        family = v.c(comps, 1)
        given = [g for g in (v.c(comps, 2), v.c(comps, 3)) if g]
        if not family and not given:
            return None
        out: dict[str, Any] = {}
        use_code = v.c(comps, 7)
        if use_code:
            use = self.m_nametype.code(use_code)
            if use:
                out["use"] = use
        if family:
            out["family"] = family
        if given:
            out["given"] = given
        prefix = v.c(comps, 5)
        if prefix:
            out["prefix"] = [prefix]
        suffix = [s for s in (v.c(comps, 4), v.c(comps, 6)) if s]
        if suffix:
            out["suffix"] = suffix
        return out

    def xpn_all(self, seg: Seg | None, n: int) -> list[dict[str, Any]]:
        return [x for x in (self.xpn(c) for c in self.v.reps(seg, n)) if x]

    def xad(self, comps: list[str]) -> dict[str, Any] | None:
        """XAD → Address: lines (1, 2), city (3), state (4), postal code (5), country (6), use/type (7), district (9)."""
        v = self.v
        line = [x for x in (v.c(comps, 1), v.c(comps, 2)) if x]
        out: dict[str, Any] = {}
        addr_type = v.c(comps, 7)
        if addr_type:
            use = self.m_addr_use.code(addr_type)
            if use:
                out["use"] = use
            elif addr_type == "M":
                out["type"] = "postal"
            elif addr_type == "SH":
                out["type"] = "physical"
        if line:
            out["line"] = line
        for key, i in (("city", 3), ("district", 9), ("state", 4), ("postalCode", 5), ("country", 6)):
            x = v.c(comps, i)
            if x:
                out[key] = x
        if not (line or "city" in out or "postalCode" in out or "state" in out):
            return None
        return out

    def xad_all(self, seg: Seg | None, n: int) -> list[dict[str, Any]]:
        return [x for x in (self.xad(c) for c in self.v.reps(seg, n)) if x]

    def xtn(self, comps: list[str], default_use: str = "") -> dict[str, Any] | None:
        """XTN → ContactPoint: XTN-12 or the parts (country 5, area 6, local 7, extension 8), XTN-4 for email."""
        v = self.v
        equip = v.c(comps, 3)
        use_code = v.c(comps, 2)
        out: dict[str, Any] = {}
        system = None
        if equip:
            hit = self.m_tel_eq.get(equip)
            if hit:
                if hit[0] == "mobile":
                    system, out_use = "phone", "mobile"
                    out["use"] = out_use
                else:
                    system = hit[0]
        if system == "email" or (not equip and v.c(comps, 4) and "@" in v.c(comps, 4)):
            value = v.c(comps, 4)
            system = "email"
        else:
            value = v.c(comps, 12)
            if not value:
                local = v.c(comps, 7)
                if local:
                    area, country, ext = v.c(comps, 6), v.c(comps, 5), v.c(comps, 8)
                    if len(local) == 7 and local.isdigit():
                        local = f"{local[:3]}-{local[3:]}"
                    value = (f"+{country} " if country else "") + (f"({area}) " if area else "") + local + (f" x{ext}" if ext else "")
                else:
                    value = v.c(comps, 1)
            if value and system is None:
                system = "phone"
        if not value:
            return None
        if system:
            out["system"] = system
        out["value"] = value
        if "use" not in out:
            use = self.m_tel_use.code(use_code) if use_code and use_code != "NET" else None
            if use:
                out["use"] = use
            elif default_use and system != "email":
                out["use"] = default_use
        return out

    def xtn_all(self, seg: Seg | None, n: int, default_use: str = "") -> list[dict[str, Any]]:
        return [x for x in (self.xtn(c, default_use) for c in self.v.reps(seg, n)) if x]

    def xcn_name(self, comps: list[str]) -> dict[str, Any] | None:
        """XCN-2..7 → HumanName (family, given, middle, suffix, prefix, degree)."""
        v = self.v
        family = v.c(comps, 2)
        given = [g for g in (v.c(comps, 3), v.c(comps, 4)) if g]
        if not family and not given:
            return None
        out: dict[str, Any] = {}
        if family:
            out["family"] = family
        if given:
            out["given"] = given
        prefix = v.c(comps, 6)
        if prefix:
            out["prefix"] = [prefix]
        suffix = [s for s in (v.c(comps, 5), v.c(comps, 7)) if s]
        if suffix:
            out["suffix"] = suffix
        return out

    def xcn_identifier(self, comps: list[str]) -> dict[str, Any] | None:
        """XCN-1 with XCN-9 (assigning authority) and XCN-13 (identifier type) → Identifier."""
        v = self.v
        value = v.c(comps, 1)
        if not value:
            return None
        hd = v.sub(comps, 9) + ["", "", ""]
        type_code = v.c(comps, 13)
        authority = hd[0] or (type_code if type_code == "NPI" else "")
        out: dict[str, Any] = {}
        if type_code:
            out["type"] = {"coding": [self._id_type(type_code)]}
        out["system"] = self.t.identifier_system(authority, type_code, hd[1], hd[2])
        out["value"] = value
        return out

    # ---------------------------------------------------------------- quantities
    def number(self, text: str) -> int | float | None:
        t = text.strip()
        if not t:
            return None
        try:
            if re.fullmatch(r"[+-]?\d+", t):
                return int(t)
            f = float(t)
        except ValueError:
            return None
        if f != f or f in (float("inf"), float("-inf")):
            return None
        return f

    def unit(self, comps: list[str]) -> dict[str, Any]:
        """CWE units (OBX-6, RXA-7 …) → the unit/system/code part of a Quantity (UCUM when known)."""
        v = self.v
        code, text, cs = v.c(comps, 1), v.c(comps, 2), v.c(comps, 3)
        out: dict[str, Any] = {}
        if cs == "UCUM" or cs == "":
            if cs == "UCUM":
                out = {"unit": text or code, "system": "http://unitsofmeasure.org", "code": code}
            else:
                hit = self.m_units.get(code)
                if hit:
                    out = {"unit": text or code, "system": hit[1], "code": hit[0]}
                elif code or text:
                    out = {"unit": text or code}
        else:
            out = {"unit": text or code, "system": self.t.system_uri(cs), "code": code}
        return _clean(out)
