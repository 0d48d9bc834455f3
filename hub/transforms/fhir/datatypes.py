"""Reading HL7 v2 for the converters: :class:`V2` (fast access to one message's segments, fields, repetitions and
components, decoding escapes only where the message has any), :class:`Seg`, and the v2 date/time → FHIR conversions
(:func:`dtm`, :func:`date_of`). What a field becomes is said by the tables under ``mappings/fhir`` (:mod:`.mapdefs`).

A message (or segment) with no escape and no subcomponent character outside MSH-2 — the usual case — is read without
any decoding step (:class:`V2` picks plain readers per message).
"""

from __future__ import annotations

import re
from typing import Any

from hub.transforms.hl7v2 import Hl7Message, unescape

__all__ = ["V2", "Seg", "dtm", "date_of"]

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

    __slots__ = ("f", "index", "name", "plain")

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

    __slots__ = ("_by_name", "c", "ckey", "codec", "cs", "dec", "enc", "esc", "msg", "plain", "rs", "segs", "ss")

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
        for i, s in enumerate(msg.segments):
            name = s.name
            fields = s.fields
            if check:
                text = s.text
                if name == "MSH":  # MSH-1/MSH-2 are the delimiters themselves (MSH-2 is never decoded)
                    text = text[4 + len(fields[2]) :] if len(fields) > 2 else ""
                plain = not ((esc and esc in text) or (ss and ss in text))
            seg = Seg(name, fields, i, plain)
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
