"""The ER7 (pipe-and-hat) reader/writer: :func:`parse`, :class:`Hl7Message`, :class:`Segment`, :func:`meta`.

Why hand-written: the hot path (every message a source receives) needs to read MSH and a few fields in
microseconds and give back *exactly* the bytes it was sent. hl7apy builds a full typed tree (~17 ms per ADT) and
python-hl7 re-serialises with its own separators; neither keeps the original bytes. So this module:

* decodes the bytes once (``encoding`` argument, else MSH-18 via table 0211, else UTF-8 with a latin-1 fallback);
* splits the text into segments once (``\\r``, ``\\n`` or ``\\r\\n``, even mixed), checking segment IDs;
* splits a segment into fields only when one of its fields is first read, and fields into repetitions,
  components and subcomponents only along the path being read (``str.split`` with ``maxsplit``);
* keeps the original bytes: an unmodified message's :meth:`Hl7Message.to_bytes` returns them unchanged; a
  modified one is written with ``\\r`` after every segment, re-joining only the segments that changed.

Reading rules (the choices other modules rely on):

* ``get(path)`` returns ``None`` for an absent or empty element.
* A *leaf* (an element with no lower-level separators in it, or any subcomponent) is returned decoded:
  ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\P\\ \\Xhh\\`` are unescaped. Formatting escapes (``\\.br\\``, ``\\H\\``, ``\\N\\``,
  ``\\.sp\\`` …) and charset escapes stay verbatim (see :mod:`.escaping`); ``unescape(v, formatting=True)``
  renders them for display.
* A *composite* (``PID-5`` = ``DOE^JANE``) is returned as its ER7 text exactly as written — separators kept,
  nothing unescaped — as an :class:`Er7` (a ``str``). :meth:`Hl7Message.set` recognises an :class:`Er7` and writes
  it back as structure (converting delimiters if the two messages differ), so ``dst.set(p, src.get(q))`` copies a
  composite intact, while a plain ``str`` is always escaped.
* The HL7 null ``""`` (two double quotes: "delete this value at the receiver") is returned as the two-character
  string ``'""'`` (constant :data:`NULL`), distinct from ``None`` (not sent).
* Without an index, ``get`` reads the first segment and the first repetition; ``get_all`` reads every matching
  segment and every repetition, skipping empty values.
* ``MSH-1`` is the field separator, ``MSH-2`` the encoding characters (both returned as written).
* A path naming only a segment (``PV1``, ``OBX[2]``) reads the segment's ER7 text; ``delete`` of such a path
  removes the segment.

Writing rules:

* ``set`` escapes a plain ``str`` (delimiters → ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``, CR/LF →
  ``\\X0D\\``/``\\X0A\\``; formatting escapes already in the text are kept), writes an :class:`Er7` as structure,
  ``'""'`` as the HL7 null and ``None`` as a delete. ``set("PID-3", v)`` replaces the whole field (all repetitions).
* Missing segments are created after the last segment of the same name (else at the end); ``OBX[5]`` with two
  OBX creates OBX 3, 4 and 5. Missing fields, repetitions, components and subcomponents are created empty.
* ``delete`` empties the element; trailing empty components/repetitions/fields of what changed are dropped.
* Only the segments that changed are re-joined; the others keep their text exactly as received.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from random import getrandbits as _random_bits
from typing import Any

from hub.errors import Hl7ParseError, MappingError

from .charsets import charset_for_codec, codec_for_charset
from .escaping import DEFAULT_ENCODING_CHARS, EncodingChars, escape, unescape
from .escaping import encoding_chars as _as_enc
from .paths import Hl7Path, parse_path

__all__ = ["parse", "Hl7Message", "Segment", "Er7", "NULL", "meta", "new_message", "format_ts"]

NULL = '""'
"""The HL7 null value: the receiver should delete what it holds for this element."""

_BOM = b"\xef\xbb\xbf"
_SEG_ID_RE = re.compile(r"[A-Z][A-Z0-9]{2}\Z")
_valid_ids: set[str] = set()  # segment IDs already checked (they repeat across messages)
_HEADERS = ("MSH", "FHS", "BHS")  # segments whose field 1 is the separator itself
_BATCH_SEGMENTS = ("FHS", "BHS", "BTS", "FTS")
_NOT_IN_MESSAGE = frozenset(("MSH",) + _BATCH_SEGMENTS)  # allowed only as the first segment (MSH)
_LINE_SPLIT_RE = re.compile(r"(\r\n|\r|\n)")
# Standard segment IDs: only these are quoted in error messages (anything else might be a name or an MRN).
_STANDARD_IDS = frozenset(
    [
        "ABS",
        "ACC",
        "ADD",
        "AFF",
        "AIG",
        "AIL",
        "AIP",
        "AIS",
        "AL1",
        "APR",
        "ARQ",
        "AUT",
        "BHS",
        "BLC",
        "BLG",
        "BPO",
        "BPX",
        "BTS",
        "BTX",
        "CDM",
        "CER",
        "CM0",
        "CM1",
        "CM2",
        "CNS",
        "CON",
        "CSP",
        "CSR",
        "CSS",
        "CTD",
        "CTI",
        "DB1",
        "DG1",
        "DRG",
        "DSC",
        "DSP",
        "ECD",
        "ECR",
        "EDU",
        "EQP",
        "EQU",
        "ERR",
        "EVN",
        "FAC",
        "FHS",
        "FT1",
        "FTS",
        "GOL",
        "GP1",
        "GP2",
        "GT1",
        "IAM",
        "IIM",
        "IN1",
        "IN2",
        "IN3",
        "INV",
        "IPC",
        "ISD",
        "LAN",
        "LCC",
        "LCH",
        "LDP",
        "LOC",
        "LRL",
        "MFA",
        "MFE",
        "MFI",
        "MRG",
        "MSA",
        "MSH",
        "NCK",
        "NDS",
        "NK1",
        "NPU",
        "NSC",
        "NST",
        "NTE",
        "OBR",
        "OBX",
        "ODS",
        "ODT",
        "OM1",
        "OM2",
        "OM3",
        "OM4",
        "OM5",
        "OM6",
        "OM7",
        "ORC",
        "ORG",
        "OVR",
        "PCR",
        "PD1",
        "PDA",
        "PDC",
        "PEO",
        "PES",
        "PID",
        "PR1",
        "PRA",
        "PRB",
        "PRC",
        "PRD",
        "PRT",
        "PSH",
        "PTH",
        "PV1",
        "PV2",
        "QAK",
        "QID",
        "QPD",
        "QRD",
        "QRF",
        "QRI",
        "RCP",
        "RDF",
        "RDT",
        "RF1",
        "RGS",
        "RMI",
        "ROL",
        "RQ1",
        "RQD",
        "RXA",
        "RXC",
        "RXD",
        "RXE",
        "RXG",
        "RXO",
        "RXR",
        "SAC",
        "SCH",
        "SFT",
        "SID",
        "SPM",
        "SPR",
        "STF",
        "TCC",
        "TCD",
        "TQ1",
        "TQ2",
        "TXA",
        "UB1",
        "UB2",
        "URD",
        "URS",
        "VAR",
        "VTQ",
    ]
)


class Er7(str):
    """A composite value as written in ER7 (separators kept, escapes not decoded), from :meth:`Hl7Message.get`.

    It is a plain ``str`` to everyone else; ``enc`` remembers the delimiters it was written with so that
    :meth:`Hl7Message.set` can write it back as structure into another message.
    """

    enc: EncodingChars

    def __new__(cls, text: str, enc: EncodingChars = DEFAULT_ENCODING_CHARS) -> Er7:
        obj = super().__new__(cls, text)
        obj.enc = enc
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (Er7, (str(self), self.enc))

    def components(self) -> list[str]:
        """The components, each decoded when it is a leaf (subcomponents kept as ER7 otherwise)."""
        enc = self.enc
        out = []
        for c in _split(str(self), enc.component):
            out.append(c if enc.subcomponent and enc.subcomponent in c else unescape(c, enc))
        return out


def _pad(items: list[str], index: int) -> None:
    """Grow ``items`` with empty strings so that ``items[index]`` exists."""
    if index >= len(items):
        items.extend([""] * (index + 1 - len(items)))


def _split(value: str, sep: str) -> list[str]:
    return value.split(sep) if sep and sep in value else [value]


def _trim(parts: list[str]) -> list[str]:
    while len(parts) > 1 and not parts[-1]:
        parts.pop()
    return parts


class Segment:
    """One segment. ``text`` is its ER7 as written; fields are split on first access.

    ``field(n)`` is field *n* as written (ER7), numbered the standard way: for MSH/FHS/BHS field 1 is the field
    separator and field 2 the encoding characters. ``get("3.1")``/``get_all("3")`` read decoded values like
    :meth:`Hl7Message.get` with the segment part of the path left out.
    """

    __slots__ = ("_codec", "_enc", "_fields", "_text", "name")

    def __init__(self, name: str, text: str, enc: EncodingChars, codec: str) -> None:
        self.name = name
        self._text: str | None = text
        self._fields: list[str] | None = None
        self._enc = enc
        self._codec = codec

    @property
    def text(self) -> str:
        if self._text is None:
            f = self._fields
            assert f is not None
            fs = self._enc.field
            if self.name in _HEADERS:
                self._text = self.name + fs + fs.join(f[2:])
            else:
                self._text = fs.join(f)
        return self._text

    @property
    def fields(self) -> list[str]:
        """All fields as written: ``fields[n]`` is field *n* (``fields[0]`` is the segment ID). Do not mutate."""
        f = self._fields
        if f is None:
            assert self._text is not None
            fs = self._enc.field
            f = self._text.split(fs)
            if self.name in _HEADERS:
                f.insert(1, fs)
            self._fields = f
        return f

    def field(self, n: int) -> str:
        f = self.fields
        return f[n] if n < len(f) else ""

    def __len__(self) -> int:
        """The number of the last field present."""
        return len(self.fields) - 1

    def _set_field(self, n: int, value: str) -> None:
        f = self.fields
        if n >= len(f):
            f.extend([""] * (n + 1 - len(f)))
        f[n] = value
        minimum = 3 if self.name in _HEADERS else 1
        while len(f) > minimum and not f[-1]:
            f.pop()
        self._text = None

    # reading (here rather than on the message, so a segment does not point back at its message: no cycles)
    def _decode(self, value: str, level: int) -> str:
        """Decode a raw value read at ``level`` (1 field/repetition, 2 component, 3 subcomponent)."""
        enc = self._enc
        if level == 1:
            if (enc.component and enc.component in value) or (enc.subcomponent and enc.subcomponent in value):
                return Er7(value, enc)
        elif level == 2:
            if enc.subcomponent and enc.subcomponent in value:
                return Er7(value, enc)
        if enc.escape and enc.escape in value:
            return unescape(value, enc, codec=self._codec)
        return value

    def _narrow(self, rep: str, p: Hl7Path) -> tuple[str, int]:
        """From one repetition down to the component/subcomponent of ``p``: (raw value, level)."""
        if p.component is None:
            return rep, 1
        c = p.component
        sep = self._enc.component
        if c == 1:
            value = rep.partition(sep)[0] if sep else rep
        else:
            parts = rep.split(sep, c) if sep else [rep]
            value = parts[c - 1] if len(parts) >= c else ""
        if p.subcomponent is None:
            return value, 2
        s = p.subcomponent
        sep = self._enc.subcomponent
        if s == 1:
            return (value.partition(sep)[0] if sep else value), 3
        parts = value.split(sep, s) if sep else [value]
        return (parts[s - 1] if len(parts) >= s else ""), 3

    def _header_field(self, p: Hl7Path) -> str | None:
        """MSH-1 / MSH-2 (and FHS/BHS): returned as written, never split or unescaped."""
        if p.field == 1:
            return self._enc.field
        return self.field(2) or None

    def _read_first(self, p: Hl7Path) -> str | None:
        n = p.field
        if n is None:
            return self.text
        if n <= 2 and self.name in _HEADERS:
            return self._header_field(p)
        f = self.field(n)
        if not f:
            return None
        sep = self._enc.repetition
        r = p.repetition
        if r is None or r == 1:
            rep = f.partition(sep)[0] if sep else f
        else:
            parts = f.split(sep, r) if sep else [f]
            if len(parts) < r:
                return None
            rep = parts[r - 1]
        value, level = self._narrow(rep, p)
        return self._decode(value, level) if value else None

    def _read_all(self, p: Hl7Path, out: list[str]) -> None:
        n = p.field
        if n is None:
            out.append(self.text)
            return
        if n <= 2 and self.name in _HEADERS:
            v = self._header_field(p)
            if v:
                out.append(v)
            return
        f = self.field(n)
        if not f:
            return
        if p.repetition is not None:
            v = self._read_first(p)
            if v:
                out.append(v)
            return
        for rep in _split(f, self._enc.repetition):
            value, level = self._narrow(rep, p)
            if value:
                out.append(self._decode(value, level))

    def get(self, spec: str) -> str | None:
        """``seg.get("5.1")`` is ``msg.get("<SEG>[k]-5.1")`` for this very segment."""
        return self._read_first(parse_path(f"{self.name}-{spec}"))

    def get_all(self, spec: str) -> list[str]:
        out: list[str] = []
        self._read_all(parse_path(f"{self.name}-{spec}"), out)
        return out

    def __repr__(self) -> str:  # no content: segments hold PHI
        return f"<Segment {self.name} ({len(self)} fields)>"


class Hl7Message:
    """A parsed HL7 v2 message (ER7). Implements the :class:`hub.transforms.document.Document` protocol.

    Build one with :func:`parse` or :func:`new_message`. ``segments`` is the list of :class:`Segment` in order;
    treat it as read-only and change content with :meth:`set`, :meth:`delete`, :meth:`append_segment` and
    :meth:`remove_segment`.
    """

    __slots__ = ("_dirty", "_index", "_raw", "_segs", "_text", "_texts", "codec", "enc")

    def __init__(self, segments_text: list[str], enc: EncodingChars, codec: str, raw: bytes | None, text: str) -> None:
        self.enc = enc
        """The delimiters (MSH-1 and MSH-2)."""
        self.codec = codec
        """The Python codec the bytes were decoded with (and modified messages are encoded with)."""
        self._raw = raw
        self._text = text
        self._dirty = False
        self._index: dict[str, list[int]] | None = None  # segment ID → positions in the message
        # Segment objects are made when first touched: meta() on an ADT needs only MSH and PID.
        self._texts: list[str] | None = segments_text
        self._segs: list[Segment | None] = [None] * len(segments_text)

    # ------------------------------------------------------------------ segments
    def _at(self, i: int) -> Segment:
        seg = self._segs[i]
        if seg is None:
            assert self._texts is not None
            t = self._texts[i]
            seg = self._segs[i] = Segment(t[:3], t, self.enc, self.codec)
        return seg

    @property
    def segments(self) -> list[Segment]:
        """Every segment in order (read-only: use set/delete/append_segment/remove_segment to change them)."""
        if self._texts is not None:
            for i in range(len(self._segs)):
                self._at(i)
            self._texts = None
        return self._segs  # type: ignore[return-value]

    def _idx(self) -> dict[str, list[int]]:
        idx = self._index
        if idx is None:
            idx = {}
            for i, name in enumerate(self.segment_names):
                lst = idx.get(name)
                if lst is None:
                    idx[name] = [i]
                else:
                    lst.append(i)
            self._index = idx
        return idx

    def segment(self, name: str, occurrence: int = 1) -> Segment | None:
        """The ``occurrence``-th segment called ``name`` (1-based, counted over the whole message), or None."""
        lst = self._idx().get(name)
        if lst is None or occurrence < 1 or occurrence > len(lst):
            return None
        return self._at(lst[occurrence - 1])

    def segments_named(self, name: str) -> list[Segment]:
        """Every segment called ``name``, in order."""
        return [self._at(i) for i in self._idx().get(name, ())]

    @property
    def segment_names(self) -> list[str]:
        if self._texts is not None:
            return [t[:3] for t in self._texts]
        return [s.name for s in self.segments]

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.segments)

    def __len__(self) -> int:
        return len(self._segs)

    def append_segment(self, text: str, *, after: Segment | None = None) -> Segment:
        """Add a segment written as ER7 with this message's delimiters (``"ZPI|1|x"``), at the end or after
        ``after``."""
        name = text[:3]
        if not _SEG_ID_RE.match(name) or (len(text) > 3 and text[3] != self.enc.field):
            raise MappingError(
                f"{text[:4]!r} does not start a segment (a 3-character segment ID and the field separator)"
            )
        if name in _HEADERS or name in _BATCH_SEGMENTS:
            raise MappingError(f"a message cannot hold a second {name} segment")
        seg = Segment(name, text, self.enc, self.codec)
        segments = self.segments
        if after is None:
            segments.append(seg)
        else:
            segments.insert(next(i for i, s in enumerate(segments) if s is after) + 1, seg)
        self._index = None
        self._dirty = True
        return seg

    def remove_segment(self, name: str, occurrence: int | None = None) -> int:
        """Remove the given occurrence of ``name`` (every one when None); returns how many were removed."""
        if name == "MSH":
            raise MappingError("the MSH segment cannot be removed")
        lst = self._idx().get(name, [])
        victims = set(lst if occurrence is None else lst[occurrence - 1 : occurrence])
        if not victims:
            return 0
        self._segs = [s for i, s in enumerate(self.segments) if i not in victims]
        self._index = None
        self._dirty = True
        return len(victims)

    # ------------------------------------------------------------------ reading
    def get(self, path: str) -> str | None:
        """The first value at ``path`` (see the module docstring for leaves, composites and ``""``), or None."""
        p = parse_path(path)
        seg = self.segment(p.segment, p.occurrence or 1)
        if seg is None:
            return None
        return seg._read_first(p)

    def get_all(self, path: str) -> list[str]:
        """Every non-empty value at ``path``: all matching segments × all repetitions unless indexed."""
        p = parse_path(path)
        out: list[str] = []
        if p.occurrence is not None:
            seg = self.segment(p.segment, p.occurrence)
            if seg is not None:
                seg._read_all(p, out)
        else:
            for i in self._idx().get(p.segment, ()):
                self._at(i)._read_all(p, out)
        return out

    def has(self, path: str) -> bool:
        return self.get(path) is not None

    # ------------------------------------------------------------------ writing
    def _encode_value(self, value: str, p: Hl7Path) -> str:
        enc = self.enc
        if isinstance(value, Er7):
            src = value.enc
            text = str(value)
            if src != enc:
                text = _convert_delimiters(text, src, enc)
            # Structure must fit where it goes: a composite cannot go into a subcomponent, repetitions only
            # into a whole field. Anything that does not fit is written as text (escaped), never mis-nested.
            forbidden = [enc.field]
            if p.repetition is not None or p.component is not None:
                forbidden.append(enc.repetition)
            if p.component is not None:
                forbidden.append(enc.component)
            if p.subcomponent is not None:
                forbidden.append(enc.subcomponent)
            if not any(ch and ch in text for ch in forbidden):
                return text
            value = unescape(text, enc, codec=self.codec)
        if value == NULL:
            return value
        return escape(value, enc)

    def _check_charset(self, value: str) -> None:
        if self.codec in ("utf-8", "utf_8") or value.isascii():
            return
        try:
            value.encode(self.codec)
        except UnicodeError:  # UnicodeEncodeError, and the plain UnicodeError some codecs raise
            raise MappingError(
                f"the value cannot be written in the message's character set ({self.codec}, MSH-18)"
            ) from None
        except LookupError:  # pragma: no cover - codec came from a successful decode
            return

    def _target(self, p: Hl7Path, create: bool) -> Segment | None:
        occurrence = p.occurrence or 1
        pos = self._idx().get(p.segment, ())
        if occurrence <= len(pos):
            return self._at(pos[occurrence - 1])
        if not create:
            return None
        if p.segment in _HEADERS or p.segment in _BATCH_SEGMENTS:
            raise MappingError(
                f"{p}: a message has exactly one {p.segment}"
                if p.segment == "MSH"
                else f"{p}: {p.segment} belongs to batch envelopes, not messages"
            )
        # Missing segments are appended after the last one of the same name (so OBX[2] follows OBX[1]),
        # or at the end of the message when there is none.
        after = self._at(pos[-1]) if pos else None
        seg: Segment | None = None
        for _ in range(occurrence - len(pos)):
            seg = self.append_segment(p.segment, after=after)
            after = seg
        return seg

    def _put(self, seg: Segment, p: Hl7Path, value: str) -> None:
        enc = self.enc
        n = p.field
        assert n is not None
        if p.repetition is None and p.component is None:
            seg._set_field(n, value)
        else:
            f = seg.field(n)
            reps = _split(f, enc.repetition) if f else [""]
            ri = (p.repetition or 1) - 1
            if ri > 0 and not enc.repetition:
                raise MappingError(f"{p}: the message has no repetition separator (MSH-2)")
            _pad(reps, ri)
            if p.component is None:
                reps[ri] = value
            else:
                if not enc.component:
                    raise MappingError(f"{p}: the message has no component separator (MSH-2)")
                comps = _split(reps[ri], enc.component)
                ci = p.component - 1
                _pad(comps, ci)
                if p.subcomponent is None:
                    comps[ci] = value
                else:
                    if not enc.subcomponent:
                        raise MappingError(f"{p}: the message has no subcomponent separator (MSH-2)")
                    subs = _split(comps[ci], enc.subcomponent)
                    si = p.subcomponent - 1
                    _pad(subs, si)
                    subs[si] = value
                    comps[ci] = enc.subcomponent.join(_trim(subs))
                reps[ri] = enc.component.join(_trim(comps))
            seg._set_field(n, enc.repetition.join(_trim(reps)) if enc.repetition else reps[0])
        self._dirty = True

    def set(self, path: str, value: str | None) -> None:
        """Write ``value`` at ``path``, escaping it, creating the segment/field/repetition/component as needed.

        ``set("PID-3", v)`` replaces the whole field (every repetition); ``set("PID-3[2]", v)`` one repetition.
        A plain ``str`` is escaped (``^`` becomes ``\\S\\`` …); an :class:`Er7` from :meth:`get` is written as
        structure. ``'""'`` writes the HL7 null. ``None`` is :meth:`delete`. MSH-1/MSH-2 cannot be set.
        """
        if value is None:
            self.delete(path)
            return
        p = parse_path(path)
        if p.field is None:
            raise MappingError(
                f"{path!r} names a whole segment; set one of its fields (e.g. {p.segment}-1)", location=path
            )
        if p.segment in _HEADERS and p.field <= 2:
            raise MappingError(f"{path}: the delimiters (MSH-1, MSH-2) cannot be changed by set", location=path)
        if not isinstance(value, str):
            value = str(value)
        self._check_charset(value)
        encoded = self._encode_value(value, p)
        seg = self._target(p, create=True)
        assert seg is not None
        self._put(seg, p, encoded)

    def delete(self, path: str) -> None:
        """Empty the element at ``path``; a path naming a segment (``ZPD``, ``OBX[2]``) removes the segment(s).

        A missing element is not an error. Trailing empty components/repetitions/fields are dropped.
        """
        p = parse_path(path)
        if p.field is None:
            self.remove_segment(p.segment, p.occurrence)
            return
        if p.segment in _HEADERS and p.field <= 2:
            raise MappingError(f"{path}: the delimiters (MSH-1, MSH-2) cannot be deleted", location=path)
        seg = self._target(p, create=False)
        if seg is None:
            return
        if p.repetition is None and p.component is None:
            if seg.field(p.field):
                self._put(seg, p, "")
        elif seg._read_first(p) is not None:
            self._put(seg, p, "")

    # ------------------------------------------------------------------ output
    @property
    def modified(self) -> bool:
        return self._dirty

    def to_text(self, separator: str | None = None) -> str:
        """The message as text: unmodified, the decoded original; else segments each followed by ``\\r``.

        ``separator`` (e.g. ``"\\n"`` for display) forces re-joining the segments with it.
        """
        if separator is None and not self._dirty:
            return self._text
        sep = "\r" if separator is None else separator
        return sep.join(s.text for s in self.segments) + sep

    def to_bytes(self) -> bytes:
        """The original bytes when unmodified; otherwise the segments, ``\\r``-terminated, in the message's codec."""
        if not self._dirty and self._raw is not None:
            return self._raw
        text = self.to_text()
        try:
            data = text.encode(self.codec)
        except (UnicodeError, LookupError):
            data = text.encode("utf-8")
        if not self._dirty:
            self._raw = data
        return data

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def copy(self) -> Hl7Message:
        """An independent copy (parsed again from this message's bytes)."""
        return parse(self.to_bytes(), encoding=self.codec)

    # ------------------------------------------------------------------ header properties
    @property
    def control_id(self) -> str | None:
        """MSH-10."""
        return self.get("MSH-10")

    @property
    def message_type(self) -> str | None:
        """MSH-9.1 (``ADT``)."""
        return self.get("MSH-9.1")

    @property
    def trigger(self) -> str | None:
        """MSH-9.2 (``A01``)."""
        return self.get("MSH-9.2")

    @property
    def structure(self) -> str | None:
        """MSH-9.3 (``ADT_A01``)."""
        return self.get("MSH-9.3")

    @property
    def version(self) -> str | None:
        """MSH-12.1 (``2.5.1``)."""
        return self.get("MSH-12.1")

    @property
    def processing_id(self) -> str | None:
        """MSH-11.1 (``P``, ``T``, ``D``)."""
        return self.get("MSH-11.1")

    @property
    def sending_app(self) -> str | None:
        return self.get("MSH-3.1")

    @property
    def sending_facility(self) -> str | None:
        return self.get("MSH-4.1")

    @property
    def receiving_app(self) -> str | None:
        return self.get("MSH-5.1")

    @property
    def receiving_facility(self) -> str | None:
        return self.get("MSH-6.1")

    @property
    def charset(self) -> str | None:
        """MSH-18 (first repetition) as written, e.g. ``UNICODE UTF-8``; None when not sent."""
        return self.get("MSH-18[1].1")

    @property
    def encoding_chars(self) -> EncodingChars:
        return self.enc

    def __repr__(self) -> str:  # identifiers only, never content
        kind = "^".join(x for x in (self.message_type, self.trigger) if x) or "?"
        return f"<Hl7Message {kind} control_id={self.control_id!r} segments={len(self)}>"


def _convert_delimiters(text: str, src: EncodingChars, dst: EncodingChars) -> str:
    """Rewrite ER7 ``text`` from ``src`` delimiters to ``dst`` (leaf values are unescaped then escaped again)."""

    def conv(value: str, seps: list[tuple[str, str]]) -> str:
        if not seps:
            return escape(unescape(value, src), dst)
        (s, d), rest = seps[0], seps[1:]
        if not s or not d:
            return conv(value, rest)
        return d.join(conv(part, rest) for part in _split(value, s))

    return conv(
        text,
        [
            (src.repetition, dst.repetition),
            (src.component, dst.component),
            (src.subcomponent, dst.subcomponent),
        ],
    )


# ---------------------------------------------------------------------- parsing
def _fail(message: str, *, code: str = "100", location: str = "", control_id: str | None = None) -> Hl7ParseError:
    return Hl7ParseError(message, code=code, location=location, control_id=control_id or None)


def _header_line_bytes(data: bytes) -> bytes:
    """The first line of ``data`` (after leading whitespace), without decoding it."""
    data = data[:4096].lstrip(b" \t\r\n\x0b")  # \x0b: an MLLP start block left in front of the message
    end = len(data)
    for sep in (b"\r", b"\n"):
        i = data.find(sep, 0, end)
        if i >= 0:
            end = i
    return data[:end]


def _control_id_from_bytes(data: bytes) -> str | None:
    """MSH-10 read from the raw header (for the AR of input that cannot be decoded)."""
    line = _header_line_bytes(data)
    if len(line) < 4 or line[:3] != b"MSH":
        return None
    parts = line.split(line[3:4])
    return parts[9].decode("latin-1").strip() or None if len(parts) > 9 else None


def _declared_codec(data: bytes) -> tuple[str | None, str | None]:
    """(MSH-18 as written, its codec) read from the raw header bytes, before decoding."""
    line = _header_line_bytes(data)
    if len(line) < 8 or line[:3] != b"MSH":
        return None, None
    fs = line[3:4]
    if line.count(fs) < 17:
        return None, None
    parts = line.split(fs)
    if len(parts) <= 17:
        return None, None
    value = parts[17]
    enc = parts[1]
    if len(enc) >= 2:  # first repetition, first component
        value = value.split(enc[1:2])[0]
    if len(enc) >= 1:
        value = value.split(enc[0:1])[0]
    charset = value.decode("latin-1").strip()
    if charset and not charset.isprintable():  # a NUL or control character: not a table-0211 name, not a codec
        raise _fail(
            "MSH-18 (character set) holds a control character",
            code="102",
            location="MSH-18",
            control_id=_control_id_from_bytes(data),
        )
    return charset or None, codec_for_charset(charset)


def _decode(data: bytes, encoding: str | None) -> tuple[str, str]:
    """Decode the raw bytes: (text, codec used)."""
    if data[:3] == _BOM:
        data = data[3:]
        if encoding is None:
            encoding = "utf-8"  # a UTF-8 BOM outranks MSH-18
    if encoding is not None:
        try:
            return data.decode(encoding), encoding
        except LookupError:
            raise _fail(f"unknown character encoding {encoding!r}", code="207") from None
        except UnicodeError as exc:  # UnicodeDecodeError, or the plain UnicodeError of codecs such as idna
            raise _fail(
                f"the bytes are not valid {encoding}"
                + (f" (byte {exc.start})" if isinstance(exc, UnicodeDecodeError) else ""),
                code="102",
                location="MSH-18",
                control_id=_control_id_from_bytes(data),
            ) from None
    _charset, codec = _declared_codec(data)
    tried = []
    for name in (codec, "utf-8"):
        if name and name not in tried:
            tried.append(name)
            try:
                return data.decode(name), name
            except (UnicodeError, LookupError):
                continue
    return data.decode("latin-1"), "latin-1"


_enc_cache: dict[str, EncodingChars] = {}


def _parse_header(first: str) -> tuple[EncodingChars, str | None]:
    """Delimiters from the first segment (which must be MSH), and MSH-10 for error reports."""
    fs = first[3:4]
    if fs:
        end = first.find(fs, 4)
        key = first[3:end] if end > 0 else first[3:]
        enc = _enc_cache.get(key)
        if enc is not None:  # delimiters seen before: only MSH-10 is left to read
            parts = first.split(fs, 10)
            control_id = parts[9].strip() if len(parts) > 9 else None
            if control_id and enc.escape and enc.escape in control_id:
                control_id = unescape(control_id, enc)
            return enc, control_id
    if not fs or fs.isalnum() or fs.isspace():
        raise _fail("MSH-1 (field separator) is missing or not a delimiter", code="101", location="MSH-1")
    parts = first.split(fs, 10)
    control_id = parts[9].strip() if len(parts) > 9 else None
    msh2 = parts[1] if len(parts) > 1 else ""
    if not msh2:
        raise _fail("MSH-2 (encoding characters) is empty", code="101", location="MSH-2", control_id=control_id)
    if len(msh2) > 5:
        raise _fail(
            "MSH-2 (encoding characters) is longer than 5 characters",
            code="102",
            location="MSH-2",
            control_id=control_id,
        )
    chars = fs + msh2
    if len(set(chars)) != len(chars) or any(c.isalnum() or c.isspace() for c in msh2):
        raise _fail(
            "MSH-2 (encoding characters) repeats a delimiter or uses a letter, digit or space",
            code="102",
            location="MSH-2",
            control_id=control_id,
        )
    enc = EncodingChars.from_string(chars)
    if enc == DEFAULT_ENCODING_CHARS:
        enc = DEFAULT_ENCODING_CHARS  # share the cached escape tables
    if len(_enc_cache) < 64:
        _enc_cache[chars] = enc
    if control_id and enc.escape and enc.escape in control_id:
        control_id = unescape(control_id, enc)
    return enc, control_id


def _is_segment_start(line: str, fs: str) -> bool:
    name = line[:3]
    if name not in _valid_ids:
        if not _SEG_ID_RE.match(name):
            return False
        _valid_ids.add(name)
    return len(line) == 3 or line[3] == fs


def _shape(line: str, fs: str) -> str:
    """What is wrong with a segment's start, without quoting it (it may be a name or an MRN)."""
    head = line.split(fs, 1)[0]
    if re.fullmatch(r"[A-Z][A-Z0-9]{3,}", head):
        return f"its ID has {len(head)} characters"
    if re.fullmatch(r"[A-Z][A-Z0-9]?", head):
        return f"its ID has {len(head)} character{'s' if len(head) > 1 else ''}"
    return "found text instead of a segment ID"


def _split_lines(body: str) -> list[str]:
    if "\n" not in body:
        return body.split("\r")
    if "\r" not in body:
        return body.split("\n")
    # Mixed separators. Where the message ends its segments with CR (or CRLF), a lone LF followed by text that is
    # not a segment start is a line break some sender left inside a field value: keep it in that value.
    pieces = _LINE_SPLIT_RE.split(body)
    fs = ""
    head = pieces[0].lstrip()
    if head[:3] == "MSH":
        fs = head[3:4]
    lines = [pieces[0]]
    for i in range(1, len(pieces), 2):
        sep, line = pieces[i], pieces[i + 1]
        if sep == "\n" and fs and line.strip() and not _is_segment_start(line, fs) and lines:
            lines[-1] = lines[-1] + "\n" + line
        else:
            lines.append(line)
    return lines


def parse(raw: bytes | str, *, encoding: str | None = None) -> Hl7Message:
    """Read one ER7 message. Costs microseconds: fields are split only when read.

    Character set: ``encoding`` wins, else a UTF-8 BOM, else MSH-18 (table 0211: ``UNICODE UTF-8``, ``8859/1``,
    ``ASCII`` …), else UTF-8 with a latin-1 fallback when the bytes are not valid UTF-8. Leading/trailing
    whitespace and blank lines are tolerated, as are ``\\r``, ``\\n`` and ``\\r\\n`` segment separators (mixed too).

    Raises :class:`hub.errors.Hl7ParseError` (``code`` from table 0357, ``location``, ``control_id`` = MSH-10 when
    it can be read) when the input is not one message: no MSH first, bad delimiters, a line that is not a
    segment, a batch envelope or a second MSH (use :func:`split_batch`). Field contents are not checked here —
    see :func:`check_basic` and :func:`validate`. Error messages never quote field values (they may be PHI).
    """
    if isinstance(raw, str):
        text = raw[1:] if raw[:1] == "\ufeff" else raw
        data: bytes | None = None
        codec = encoding
        if codec is None:
            _, codec = _declared_codec(text[:4096].encode("latin-1", "replace"))
            codec = codec or "utf-8"
    elif isinstance(raw, (bytes, bytearray, memoryview)):
        data = bytes(raw)
        text, codec = _decode(data, encoding)
    else:
        raise TypeError(f"parse() takes bytes or str, not {type(raw).__name__}")

    body = text.strip("\r\n")
    if not body.strip():
        raise _fail("the message is empty", location="MSH")
    lines = _split_lines(body)
    # Skip blank lines (and leading whitespace before the header).
    lines = [ln for ln in lines if ln and not ln.isspace()]
    first = lines[0].lstrip()
    lines[0] = first
    head = first[:3]
    if head != "MSH":
        if head in ("FHS", "BHS"):
            raise _fail(
                f"the input is an HL7 batch ({head} header); split it into messages with split_batch",
                location=head,
            )
        shown = f"a {head} segment" if head in _STANDARD_IDS else "something else"
        raise _fail(f"the message does not start with an MSH segment (found {shown})", location="MSH")
    enc, control_id = _parse_header(first)
    fs = enc.field
    for i, line in enumerate(lines):
        name = line[:3]
        if name in _valid_ids and (line[3:4] == fs or len(line) == 3):
            if name not in _NOT_IN_MESSAGE or not i:
                continue  # the common case: a known-good segment ID followed by the field separator
        elif not _is_segment_start(line, fs):
            raise _fail(
                f"segment {i + 1} does not start with a 3-character segment ID and the field separator "
                f"({_shape(line, fs)})",
                location=f"segment {i + 1}",
                control_id=control_id,
            )
        if i and name in _NOT_IN_MESSAGE:
            if name == "MSH":
                reason = f"a second MSH at segment {i + 1}: the input holds several messages; split it with split_batch"
            else:
                reason = f"batch segment {name} at segment {i + 1} inside a message; split the input with split_batch"
            raise _fail(reason, location=f"{name}", control_id=control_id)
    return Hl7Message(lines, enc, codec, data, text)


# ---------------------------------------------------------------------- building
_NOW: list[tuple[int, str]] = [(-1, "")]  # [(second, its DTM)]: every ACK wants "now"; two strftime calls cost ~5 µs


def format_ts(now: datetime | None = None) -> str:
    """An HL7 DTM: ``YYYYMMDDHHMMSS`` plus ``+/-ZZZZ`` when the datetime is aware (default: now, UTC)."""
    if now is None:
        second = int(time.time())
        cached_second, cached = _NOW[0]
        if cached_second == second:
            return cached
        now = datetime.fromtimestamp(second, UTC)
        out = now.strftime("%Y%m%d%H%M%S%z")
        _NOW[0] = (second, out)
        return out
    out = now.strftime("%Y%m%d%H%M%S")
    if now.tzinfo is not None:
        out += now.strftime("%z")
    return out


def new_control_id() -> str:
    """A fresh MSH-10: 20 random hex characters (MSH-10 is at most 20 characters before v2.7).

    From ``random`` (reseeded in a forked child), not ``os.urandom``: an id must be unique, not secret, and the
    system call cost ~3 µs on every ACK (measured under MLLP load)."""
    return f"{_random_bits(80):020X}"


def new_message(
    message_type: str,
    *,
    control_id: str | None = None,
    version: str = "2.5.1",
    processing_id: str = "P",
    sending_app: str = "",
    sending_facility: str = "",
    receiving_app: str = "",
    receiving_facility: str = "",
    charset: str | None = None,
    encoding_chars: EncodingChars | str | None = None,
    now: datetime | None = None,
    codec: str = "utf-8",
) -> Hl7Message:
    """A new message holding only its MSH, to fill with :meth:`Hl7Message.set`.

    ``message_type`` is written as ER7 (``"ADT^A01^ADT_A01"``, with ``^`` standing for the component separator).
    """
    enc = _as_enc(encoding_chars)
    fs = enc.field
    mtype = enc.component.join(escape(p, enc) for p in message_type.split("^"))
    fields = [
        "MSH",
        enc.msh2,
        escape(sending_app, enc),
        escape(sending_facility, enc),
        escape(receiving_app, enc),
        escape(receiving_facility, enc),
        format_ts(now),
        "",
        mtype,
        escape(control_id or new_control_id(), enc),
        escape(processing_id, enc),
        escape(version, enc),
    ]
    cs = charset if charset is not None else ("" if codec in ("utf-8", "ascii") else charset_for_codec(codec))
    if cs:
        fields += ["", "", "", "", "", escape(cs, enc)]
    text = fs.join(fields)
    return Hl7Message([text], enc, codec, None, text + "\r")


# ---------------------------------------------------------------------- metadata
def meta(msg: Hl7Message) -> dict[str, str | None]:
    """Metadata for the store's indexed columns (DESIGN.md §2); a missing value is None.

    ``message_type`` is ``MSH-9.1^MSH-9.2`` (``ADT^A04``; just ``ADT`` without a trigger), ``patient_id`` is
    PID-3.1 of the first repetition, falling back to PID-2.1 (the external id of old v2.3 messages).
    """
    # The hot path of every source: pre-parsed paths on the MSH/PID segments, no path or segment lookups.
    msh = msg._at(0)
    read = msh._read_first
    mtype = read(_M_TYPE)
    trigger = read(_M_TRIGGER)
    pid_seg = msg.segment("PID")
    pid = (pid_seg._read_first(_M_PID3) or pid_seg._read_first(_M_PID2)) if pid_seg is not None else None
    if pid == NULL:
        pid = None
    return {
        "control_id": read(_M_CONTROL),
        "message_type": f"{mtype}^{trigger}" if mtype and trigger else mtype,
        "trigger": trigger,
        "sending_app": read(_M_APP),
        "sending_facility": read(_M_FAC),
        "patient_id": pid,
        "version": read(_M_VERSION),
    }


_M_TYPE, _M_TRIGGER, _M_CONTROL, _M_APP, _M_FAC, _M_VERSION, _M_PID3, _M_PID2 = (
    parse_path(p) for p in ("MSH-9.1", "MSH-9.2", "MSH-10", "MSH-3.1", "MSH-4.1", "MSH-12.1", "PID-3.1", "PID-2.1")
)
