"""HL7 v2 data types → FHIR data types (plain dicts), after the IG's data type maps (CX[Identifier], XPN[HumanName],
XAD[Address], XTN[ContactPoint], CWE[CodeableConcept], DTM[dateTime], XCN[Practitioner], EI[Identifier], CQ/SN …).

The hot path of ``v2_to_fhir``: fields are read from the ER7 text of each segment and turned into dicts; nothing
here builds a pydantic model. A component list (``comps``) is the raw text of one repetition split on the component
separator. Speed (see ``tests/bench/bench_fhir.py``):

* a message (or segment) with no escape and no subcomponent character outside MSH-2 — the usual case — is read
  without any decoding step (:class:`V2` picks plain readers per message);
* what recurs from message to message — codes (CWE), practitioners (XCN), places (PL), units, times, numbers — is
  cached per tables (bounded), and every call still gets its own dicts: callers may change what they get;
* per-patient values (names, addresses, identifiers) are not cached: they would not recur in production.
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


_NULL = '""'
_PAD = [""] * 64  # components padded to the highest position a converter reads
_PADS = [[""] * k for k in range(64)]


def _c_plain(comps: list[str], i: int) -> str:
    """``V2.c`` for a message without escape or subcomponent characters: the component as written ('""' → '')."""
    if i > len(comps):
        return ""
    v = comps[i - 1]
    return "" if v == _NULL else v


def _dec_plain(comps: list[str], n: int) -> list[str]:
    """``V2.dec`` for a message without escape or subcomponent characters."""
    if _NULL in comps:
        comps = ["" if x == _NULL else x for x in comps]
    k = len(comps)
    return comps if k >= n else comps + _PADS[n - k]


def _full_readers(enc: Any, codec: str) -> tuple[Any, Any]:
    """``V2.c`` and ``V2.dec`` for a message with escapes or subcomponents (closures: no reference to the V2)."""
    ss, esc, cs = enc.subcomponent, enc.escape, enc.component

    def c(comps: list[str], i: int) -> str:
        if i > len(comps):
            return ""
        v = comps[i - 1]
        if not v:
            return ""
        if ss and ss in v:
            v = v.split(ss, 1)[0]
        if esc and esc in v:
            return "" if v == _NULL else unescape(v, enc, codec=codec)
        return "" if v == _NULL else v

    def dec(comps: list[str], n: int) -> list[str]:
        joined = cs.join(comps)
        if not ((esc and esc in joined) or (ss and ss in joined)):  # most fields of such a message are still plain
            return _dec_plain(comps, n)
        out = [c(comps, i) for i in range(1, len(comps) + 1)]
        k = len(out)
        return out if k >= n else out + _PADS[n - k]

    return c, dec


class Seg:
    """A segment's fields as written (``f[n]`` is field n; MSH numbered the standard way)."""

    __slots__ = ("name", "f", "index", "plain")

    def __init__(self, name: str, fields: list[str], index: int, plain: bool = False) -> None:
        self.name = name
        self.f = fields
        self.index = index  # position in the message (0 = MSH)
        self.plain = plain  # no escape or subcomponent character in its fields: values are read as written

    def raw(self, n: int) -> str:
        f = self.f
        return f[n] if n < len(f) else ""


class V2:
    """Fast read access to one message for the converters (decoding on demand).

    A message (or segment) whose fields hold no escape and no subcomponent character — the common case — is read
    without decoding: ``c``/``dec`` are then plain list lookups (``c`` and ``dec`` are functions chosen per message).
    """

    __slots__ = ("msg", "segs", "cs", "rs", "ss", "esc", "enc", "codec", "plain", "c", "dec", "ckey", "_by_name")

    def __init__(self, msg: Hl7Message) -> None:
        self.msg = msg
        enc = msg.enc
        self.enc = enc
        self.codec = msg.codec
        cs, rs, ss, esc = enc.component, enc.repetition, enc.subcomponent, enc.escape
        self.cs, self.rs, self.ss, self.esc = cs, rs, ss, esc
        segs = []
        by_name: dict[str, list[Seg]] = {}
        # The usual message has no escape and no subcomponent character but the ones in MSH-2: one look at the
        # whole text tells (else each segment is looked at).
        text = msg.to_text()
        msh2 = enc.msh2
        all_plain = (not esc or text.count(esc) == msh2.count(esc)) and (not ss or text.count(ss) == msh2.count(ss))
        check = not all_plain
        plain = True
        i = 0
        for s in msg.segments:
            name = s.name
            fields = s.fields
            if check:
                text = s.text
                if name == "MSH":  # MSH-1/MSH-2 are the delimiters themselves (MSH-2 is never decoded)
                    text = text[4 + len(fields[2]) :] if len(fields) > 2 else ""
                plain = not ((esc and esc in text) or (ss and ss in text))
            seg = Seg(name, fields, i, plain)
            i += 1
            segs.append(seg)
            lst = by_name.get(name)
            if lst is None:
                by_name[name] = [seg]
            else:
                lst.append(seg)
        self.segs = segs
        self._by_name = by_name
        self.plain = all_plain
        # what decoding depends on, for caches keyed by raw components: nothing when no value needs decoding
        self.ckey = "" if all_plain else f"{enc}\x00{self.codec}"  # str(enc): MSH-1 and MSH-2
        if all_plain:
            self.c = _c_plain
            self.dec = _dec_plain
        else:
            self.c, self.dec = _full_readers(enc, self.codec)

    # ---------------------------------------------------------------- decoding
    def d(self, s: str) -> str:
        """Decode one leaf (escapes) — '' stays ''. The HL7 null '""' reads as ''."""
        if not s:
            return s
        if s == _NULL:
            return ""
        esc = self.esc
        if esc and esc in s:
            return unescape(s, self.enc, codec=self.codec)
        return s

    def text(self, s: str) -> str:
        """Decode a text value, rendering formatting escapes (\\.br\\ → newline) — for TX/FT."""
        if not s or s == _NULL:
            return ""
        esc = self.esc
        if esc and esc in s:
            return unescape(s, self.enc, formatting=True, codec=self.codec)
        return s

    def each(self, seg: Seg | None, n: int, convert: Any, *args: Any) -> list[Any]:
        """``convert(components, *args)`` of every repetition of field n, leaving out the empty results."""
        if seg is None or n >= len(seg.f) or not seg.f[n]:  # the usual empty field: no call to reps
            return []
        out = []
        for comps in self.reps(seg, n):
            x = convert(comps, *args)
            if x:
                out.append(x)
        return out

    @staticmethod
    def _field(seg: Seg | None, n: int) -> str:
        """Field n of ``seg`` as written, or "" when absent, empty or the HL7 null."""
        if seg is None or n >= len(seg.f):
            return ""
        raw = seg.f[n]
        return "" if raw == _NULL else raw

    def reps(self, seg: Seg | None, n: int) -> list[list[str]]:
        """Field n of ``seg``: each non-empty repetition as its list of raw components."""
        raw = self._field(seg, n)
        if not raw:
            return []
        if n == 2 and seg.name == "MSH":  # type: ignore[union-attr]
            return [[raw]]
        rs, cs = self.rs, self.cs
        if rs and rs in raw:
            return [rep.split(cs) if cs and cs in rep else [rep] for rep in raw.split(rs) if rep]
        return [raw.split(cs) if cs and cs in raw else [raw]]

    def first(self, seg: Seg | None, n: int) -> list[str]:
        """The components of the first repetition of field n ([] when empty, or when that repetition is empty)."""
        raw = self._field(seg, n)
        if not raw:
            return []
        if n == 2 and seg.name == "MSH":  # type: ignore[union-attr]
            return [raw]
        rs = self.rs
        if rs and rs in raw:
            if raw[0] == rs:  # an empty first repetition: first() means the first one as written
                return []
            raw = raw.split(rs, 1)[0]
        cs = self.cs
        return raw.split(cs) if cs and cs in raw else [raw]

    def val(self, seg: Seg | None, n: int, c: int = 1) -> str:
        """Decoded component c of the first repetition of field n (first subcomponent); '' when absent."""
        if seg is None:
            return ""
        f = seg.f
        if n >= len(f):
            return ""
        raw = f[n]
        if not raw:
            return ""
        if not seg.plain or (n == 2 and seg.name == "MSH"):
            return self._c_full(self.first(seg, n), c)
        rs = self.rs
        if rs and rs in raw:
            if raw[0] == rs:
                return ""
            raw = raw.split(rs, 1)[0]
        cs = self.cs
        if cs and cs in raw:
            if c == 1:
                raw = raw.split(cs, 1)[0]
            else:
                comps = raw.split(cs)
                if c > len(comps):
                    return ""
                raw = comps[c - 1]
        elif c != 1:
            return ""
        return "" if raw == _NULL else raw

    def _c_full(self, comps: list[str], i: int) -> str:
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
        if (esc and esc in v) or v == _NULL:
            return self.d(v)
        return v

    # ``c(comps, i)``: decoded component i (1-based, its first subcomponent; '' when absent).
    # ``dec(comps, n)``: the decoded components (``dec(comps, n)[i - 1] == c(comps, i)``), at least n of them.

    def sub(self, comps: list[str], i: int) -> list[str]:
        """Decoded subcomponents of component i ([''] when empty)."""
        if i > len(comps):
            return [""]
        v = comps[i - 1]
        ss = self.ss
        return [self.d(x) for x in v.split(ss)] if ss and ss in v else [self.d(v)]

    def seg(self, name: str) -> Seg | None:
        lst = self._by_name.get(name)
        return lst[0] if lst else None

    def all(self, name: str) -> list[Seg]:
        return list(self._by_name.get(name, ()))


def _cc_copy(cc: dict[str, Any]) -> dict[str, Any]:
    """A copy of a CodeableConcept made by ``Types.cc`` (its coding list and codings are new objects too)."""
    out = cc.copy()
    codings = cc.get("coding")
    if codings is not None:
        out["coding"] = [codings[0].copy()] if len(codings) == 1 else [c.copy() for c in codings]
    return out


def _ident_copy(ident: dict[str, Any]) -> dict[str, Any]:
    """A copy of an Identifier made by ``Types.cx``/``ei``/``xcn_identifier``."""
    out = ident.copy()
    typ = ident.get("type")
    if typ is not None:
        out["type"] = _cc_copy(typ)
    period = ident.get("period")
    if period is not None:
        out["period"] = period.copy()
    return out


def _name_copy(name: dict[str, Any]) -> dict[str, Any]:
    """A copy of a HumanName made by ``Types.xpn``/``xcn_name``."""
    out = name.copy()
    for k in ("given", "prefix", "suffix"):
        x = name.get(k)
        if x is not None:
            out[k] = x.copy()
    return out


def _coding3(system: str, code: str, display: str) -> dict[str, Any]:
    """A Coding of the non-empty ones of system, code and display."""
    out: dict[str, Any] = {}
    if system:
        out["system"] = system
    if code:
        out["code"] = code
    if display:
        out["display"] = display
    return out


_MISS = object()
_CACHE_MAX = 4096  # per cache of values that repeat across messages (times, numbers); cleared when full
_dt_caches: dict[tuple[str, bool], dict[str, str | None]] = {}


def _number(text: str) -> int | float | None:
    t = text.strip()
    if not t:
        return None
    try:
        if _is_int(t):
            return int(t)
        f = float(t)
    except ValueError:
        return None
    if f != f or f in (float("inf"), float("-inf")):
        return None
    return f


_numbers: dict[str, int | float | None] = {}


def _is_int(t: str) -> bool:
    """``re.fullmatch(r"[+-]?\\d+", t)`` (``\\d`` is a Unicode decimal digit, as ``str.isdecimal``)."""
    if t[0] in "+-":
        t = t[1:]
    return t.isdecimal()


def _human_name(
    family: str, first: str, middle: str, suffix: str, prefix: str, degree: str, use: str | None = None
) -> dict[str, Any] | None:
    """The HumanName of XPN-1..6 / XCN-2..7 (family, given, middle, suffix, prefix, degree), or None when unnamed."""
    given = [g for g in (first, middle) if g]
    if not family and not given:
        return None
    out: dict[str, Any] = {}
    if use:
        out["use"] = use
    if family:
        out["family"] = family
    if given:
        out["given"] = given
    if prefix:
        out["prefix"] = [prefix]
    if suffix or degree:
        out["suffix"] = [s for s in (suffix, degree) if s]
    return out


class Types:
    """The data type converters, bound to the mapping tables and the default time zone."""

    def __init__(self, v: V2, tables: Tables, default_tz: str = "Z") -> None:
        self.v = v
        self.t = tables
        self.tz = default_tz
        lk = tables.code_lookups()  # lk.name[code] is tables.code_map(name).get(code)
        self.m_idtype = lk.identifier_type
        self.m_nametype = lk.name_type
        self.m_tel_use = lk.telecom_use
        self.m_tel_eq = lk.telecom_equipment
        self.m_addr_use = lk.address_use
        self.m_units = lk.units
        self._idt_cache = tables._idt_cache
        dts = _dt_caches.get((default_tz, False))
        if dts is None:
            dts = _dt_caches[(default_tz, False)] = {}
            _dt_caches[(default_tz, True)] = {}
        self._dt = dts
        self._dti = _dt_caches[(default_tz, True)]
        self._cc_cache = tables._cc_cache
        self._xcn_cache = tables._xcn_cache

    # ---------------------------------------------------------------- time
    def dt(self, value: str, instant: bool = False) -> str | None:
        cache = self._dti if instant else self._dt
        hit = cache.get(value, _MISS)
        if hit is not _MISS:
            return hit  # type: ignore[return-value]
        out = dtm(value, self.tz, instant=instant)
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[value] = out
        return out

    # ---------------------------------------------------------------- codes
    def coding(self, comps: list[str], off: int = 0) -> dict[str, Any] | None:
        """CWE components off+1..off+3 → a Coding (identifier, text, coding system)."""
        d = self.v.dec(comps, off + 3)
        code = d[off]
        display = d[off + 1]
        if not code and not display:
            return None
        out: dict[str, Any] = {}
        system = self.t.system_uri(d[off + 2])
        if system:
            out["system"] = system
        if code:
            out["code"] = code
        if display:
            out["display"] = display
        return out

    def cc(self, comps: list[str]) -> dict[str, Any] | None:
        """CWE/CE/CNE → CodeableConcept: the primary and alternate codings, CWE-9 (original text) as text.

        Codes recur from message to message (LOINC, units, diagnoses …): the result is cached per tables and
        decoding context, and each call gets its own copy (callers add codings to it)."""
        if not comps:
            return None
        key = (self.v.ckey, *comps)
        cache = self._cc_cache
        hit = cache.get(key, _MISS)
        if hit is _MISS:
            hit = self._cc(comps)
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            cache[key] = hit
        return None if hit is None else _cc_copy(hit)  # type: ignore[arg-type]

    def _cc(self, comps: list[str]) -> dict[str, Any] | None:
        d = self.v.dec(comps, 9)
        system_uri = self.t.system_uri
        out: dict[str, Any] = {}
        code, display = d[0], d[1]
        if code:
            first: dict[str, Any] = {}
            system = system_uri(d[2])
            if system:
                first["system"] = system
            first["code"] = code
            if display:
                first["display"] = display
            codings = [first]
        else:
            codings = []
        code = d[3]
        if code and len(comps) > 3:  # the alternate coding
            alt: dict[str, Any] = {}
            system = system_uri(d[5])
            if system:
                alt["system"] = system
            alt["code"] = code
            if d[4]:
                alt["display"] = d[4]
            codings.append(alt)
        if codings:
            out["coding"] = codings
        text = d[8]
        if not text and not d[0] and display:
            text = display
        if text:
            out["text"] = text
        return out or None

    def cc_field(self, seg: Seg | None, n: int) -> dict[str, Any] | None:
        if seg is None or n >= len(seg.f) or not seg.f[n]:
            return None
        comps = self.v.first(seg, n)
        return self.cc(comps) if comps else None

    def cc_all(self, seg: Seg | None, n: int) -> list[dict[str, Any]]:
        return self.v.each(seg, n, self.cc)

    def mapped(self, table: str, v2_code: str, fallback_system: str = "") -> dict[str, Any] | None:
        """A v2 code (ID/IS) → a Coding through a code map; unmapped codes keep the HL7 table system given."""
        if not v2_code:
            return None
        hit = self.t.code_map(table).get(v2_code)
        if hit:
            code, system, display = hit
            return _coding3(system, code, display)
        return _coding3(fallback_system, v2_code, "")

    # ---------------------------------------------------------------- identifiers
    def cx(self, comps: list[str], *, with_type: bool = True) -> dict[str, Any] | None:
        """CX → Identifier: CX-1 value, CX-4 (HD) → system, CX-5 → type, CX-7/8 → period."""
        v = self.v
        d = v.dec(comps, 8)
        value = d[0]
        if not value:
            return None
        if len(comps) < 4:
            hd = _PAD
        elif v.plain:  # no subcomponents: CX-4.1 is CX-4
            hd = [d[3], "", ""]
        else:
            hd = v.sub(comps, 4)
            if len(hd) < 3:
                hd = hd + ["", ""]
        type_code = d[4]
        out: dict[str, Any] = {}
        if with_type and type_code:
            out["type"] = {"coding": [self._id_type(type_code)]}
        out["system"] = self.t.identifier_system(hd[0], type_code, hd[1], hd[2])
        out["value"] = value
        if d[6] or d[7]:
            start, end = self.dt(d[6]), self.dt(d[7])
            if start or end:
                period = {}
                if start:
                    period["start"] = start
                if end:
                    period["end"] = end
                out["period"] = period
        return out

    def _id_type(self, type_code: str) -> dict[str, Any]:
        tpl = self._idt_cache.get(type_code)
        if tpl is None:
            hit = self.m_idtype[type_code]
            tpl = _coding3(hit[1], hit[0], hit[2]) if hit else {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": type_code}
            if len(self._idt_cache) >= _CACHE_MAX:
                self._idt_cache.clear()
            self._idt_cache[type_code] = tpl
        return tpl.copy()

    def ei(self, comps: list[str], type_code: str = "") -> dict[str, Any] | None:
        """EI → Identifier: EI-1 value, EI-2/3/4 (namespace, universal id, type) → system, optional type."""
        d = self.v.dec(comps, 4)
        value = d[0]
        if not value:
            return None
        out: dict[str, Any] = {}
        if type_code:
            out["type"] = {"coding": [self._id_type(type_code)]}
        out["system"] = self.t.identifier_system(d[1], type_code, d[2], d[3])
        out["value"] = value
        return out

    # ---------------------------------------------------------------- people
    def xpn(self, comps: list[str]) -> dict[str, Any] | None:
        """XPN → HumanName: family (XPN-1.1), given (XPN-2, XPN-3), suffix (4, 6), prefix (5), use (XPN-7)."""
        d = self.v.dec(comps, 7)
        use = None
        if d[6] and (d[0] or d[1] or d[2]):
            hit = self.m_nametype[d[6]]
            use = hit[0] if hit else None
        return _human_name(d[0], d[1], d[2], d[3], d[4], d[5], use)

    def xpn_all(self, seg: Seg | None, n: int) -> list[dict[str, Any]]:
        return self.v.each(seg, n, self.xpn)

    def xad(self, comps: list[str]) -> dict[str, Any] | None:
        """XAD → Address: lines (1, 2), city (3), state (4), postal code (5), country (6), use/type (7), district (9)."""
        d = self.v.dec(comps, 9)
        out: dict[str, Any] = {}
        addr_type = d[6]
        if addr_type:
            hit = self.m_addr_use[addr_type]
            use = hit[0] if hit else None
            if use:
                out["use"] = use
            elif addr_type == "M":
                out["type"] = "postal"
            elif addr_type == "SH":
                out["type"] = "physical"
        if d[0] or d[1]:
            out["line"] = [x for x in (d[0], d[1]) if x]
        elif not (d[2] or d[4] or d[3]):
            return None
        if d[2]:
            out["city"] = d[2]
        if d[8]:
            out["district"] = d[8]
        if d[3]:
            out["state"] = d[3]
        if d[4]:
            out["postalCode"] = d[4]
        if d[5]:
            out["country"] = d[5]
        return out

    def xad_all(self, seg: Seg | None, n: int) -> list[dict[str, Any]]:
        return self.v.each(seg, n, self.xad)

    def xtn(self, comps: list[str], default_use: str = "") -> dict[str, Any] | None:
        """XTN → ContactPoint: XTN-12 or the parts (country 5, area 6, local 7, extension 8), XTN-4 for email."""
        d = self.v.dec(comps, 12)
        equip = d[2]
        use_code = d[1]
        out: dict[str, Any] = {}
        system = None
        if equip:
            hit = self.m_tel_eq[equip]
            if hit:
                if hit[0] == "mobile":
                    system = "phone"
                    out["use"] = "mobile"
                else:
                    system = hit[0]
        if system == "email" or (not equip and d[3] and "@" in d[3]):
            value = d[3]
            system = "email"
        else:
            value = d[11]
            if not value:
                local = d[6]
                if local:
                    area, country, ext = d[5], d[4], d[7]
                    if len(local) == 7 and local.isdigit():
                        local = f"{local[:3]}-{local[3:]}"
                    value = (f"+{country} " if country else "") + (f"({area}) " if area else "") + local + (f" x{ext}" if ext else "")
                else:
                    value = d[0]
            if value and system is None:
                system = "phone"
        if not value:
            return None
        if system:
            out["system"] = system
        out["value"] = value
        if "use" not in out:
            hit = self.m_tel_use[use_code] if use_code and use_code != "NET" else None
            use = hit[0] if hit else None
            if use:
                out["use"] = use
            elif default_use and system != "email":
                out["use"] = default_use
        return out

    def xtn_all(self, seg: Seg | None, n: int, default_use: str = "") -> list[dict[str, Any]]:
        return self.v.each(seg, n, self.xtn, default_use)

    def xcn(self, comps: list[str], key: tuple[str, ...] | None = None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """XCN → (``xcn_identifier``, ``xcn_name``), new objects each time (practitioners recur: cached).

        ``key`` is ``(v.ckey, *comps)`` when the caller has it already."""
        if key is None:
            key = (self.v.ckey, *comps)
        cache = self._xcn_cache
        hit = cache.get(key)
        if hit is None:
            hit = (self.xcn_identifier(comps), self.xcn_name(comps))
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            cache[key] = hit
        ident, name = hit
        return (None if ident is None else _ident_copy(ident)), (None if name is None else _name_copy(name))

    def xcn_name(self, comps: list[str]) -> dict[str, Any] | None:
        """XCN-2..7 → HumanName (family, given, middle, suffix, prefix, degree)."""
        d = self.v.dec(comps, 7)
        return _human_name(d[1], d[2], d[3], d[4], d[5], d[6])

    def xcn_identifier(self, comps: list[str]) -> dict[str, Any] | None:
        """XCN-1 with XCN-9 (assigning authority) and XCN-13 (identifier type) → Identifier."""
        v = self.v
        d = v.dec(comps, 13)
        value = d[0]
        if not value:
            return None
        if v.plain:  # no subcomponents: XCN-9.1 is XCN-9
            hd = [d[8], "", ""]
        else:
            hd = v.sub(comps, 9)
            if len(hd) < 3:
                hd = hd + ["", ""]
        type_code = d[12]
        authority = hd[0] or (type_code if type_code == "NPI" else "")
        out: dict[str, Any] = {}
        if type_code:
            out["type"] = {"coding": [self._id_type(type_code)]}
        out["system"] = self.t.identifier_system(authority, type_code, hd[1], hd[2])
        out["value"] = value
        return out

    # ---------------------------------------------------------------- quantities
    def number(self, text: str) -> int | float | None:
        hit = _numbers.get(text, _MISS)
        if hit is not _MISS:
            return hit  # type: ignore[return-value]
        out = _number(text)
        if len(_numbers) >= _CACHE_MAX:
            _numbers.clear()
        _numbers[text] = out
        return out

    def unit(self, comps: list[str]) -> dict[str, Any]:
        """CWE units (OBX-6, RXA-7 …) → the unit/system/code part of a Quantity (UCUM when known).

        The dict is shared (cached): callers only spread it into a Quantity (``{"value": n, **unit}``)."""
        d = self.v.dec(comps, 3)
        key = (d[0], d[1], d[2])
        cache = self.t._unit_cache
        hit = cache.get(key)
        if hit is None:
            hit = self._unit(*key)
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            cache[key] = hit
        return hit

    def _unit(self, code: str, text: str, cs: str) -> dict[str, Any]:
        if cs == "UCUM":
            unit, system = text or code, "http://unitsofmeasure.org"
        elif cs == "":
            hit = self.m_units[code]
            if hit:
                unit, system, code = text or code, hit[1], hit[0]
            elif code or text:
                return {"unit": text or code}
            else:
                return {}
        else:
            unit, system = text or code, self.t.system_uri(cs)
        out: dict[str, Any] = {}
        if unit:
            out["unit"] = unit
        if system:
            out["system"] = system
        if code:
            out["code"] = code
        return out
