"""The path-addressable X12 document (the :class:`hub.transforms.document.Document` protocol).

Paths (DESIGN.md §5)::

    CLM01               element 01 of the first CLM
    CLM05-1             component 1 of CLM05 (``CLM05.1`` works too)
    NM1[85]03           the NM1 whose NM101 is 85 (qualifier selector)
    CLP[2]01            the second CLP (index selector: CLP01 is not a qualifier)
    NM1[#2]03           always the second NM1, whatever NM101 holds
    NM1[82][2]03        the second NM1 with NM101 = 82
    HL[22]              the HL whose HL03 is 22 (the level code)
    2300[2]/CLM01       scoped to the second 2300 loop of the document
    ST[2]/2400/SV102    every SV102 of the 2400 loops of the second transaction (with get_all)
    ISA06               envelope values (ISA elements are returned without their padding)

A bracketed number is a *qualifier* for segments whose first element is a code (NM1, REF, DTP, CAS, AMT …,
see :data:`QUALIFIED`) and an *occurrence number* (1-based) for the others; ``#n`` forces an occurrence.
Without an element (``CLM``) the path reads the whole segment text.

The document keeps each segment's original text, so :meth:`X12Document.to_bytes` of an unmodified document
gives back exactly the input bytes, line breaks included; changed segments are re-serialised.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from hub.errors import Issue, MappingError, X12ParseError

from .loops import LoopTracker, spec_for
from .reader import DEFAULT_CHUNK_SIZE, ISA_LENGTH, Delimiters, Segment, SegmentReader, read_isa_header

__all__ = [
    "X12Document",
    "LoopView",
    "parse_document",
    "parse_path",
    "X12Path",
    "QUALIFIED",
    "iter_loops",
    "tokenize_text",
]

# Segments whose element 01 (HL: 03) is a qualifier code, so ``SEG[code]`` selects on it.
QUALIFIED = frozenset(
    {
        "NM1",
        "N1",
        "REF",
        "DTP",
        "DTM",
        "AMT",
        "QTY",
        "PER",
        "CAS",
        "HI",
        "PRV",
        "NTE",
        "TRN",
        "PWK",
        "CRC",
        "MEA",
        "CUR",
        "LQ",
        "STC",
        "SBR",
        "PAT",
        "CN1",
        "HCP",
        "MOA",
        "MIA",
        "DMG",
        "HL",
        "BPR",
        "RDM",
        "K3",
        "FRM",
        "OI",
        "CR1",
        "CR2",
        "CR3",
        "TS3",
        "TS2",
        "CTX",
        "PS1",
    }
)

_PATH = re.compile(r"^(?P<seg>[A-Z][A-Z0-9]{1,2}?)(?P<sel>(?:\[[^\]]*\])*)(?P<ele>\d{2})?(?:[-.](?P<comp>\d{1,2}))?$")
_SCOPE = re.compile(r"^(?P<name>ISA|GS|ST|HEADER|\d{4}[A-Z]{0,2})(?:\[(?P<idx>\d+)\])?$")


@dataclass(frozen=True)
class X12Path:
    scopes: tuple[tuple[str, int | None], ...]
    segment: str
    selectors: tuple[str, ...]
    element: int | None
    component: int | None
    text: str


_path_cache: dict[str, X12Path] = {}


def parse_path(path: str) -> X12Path:
    """Parse an X12 path (see module docstring); ``MappingError`` when it is not one."""
    cached = _path_cache.get(path)
    if cached is not None:
        return cached
    parts = path.strip().split("/")
    scopes: list[tuple[str, int | None]] = []
    for part in parts[:-1]:
        m = _SCOPE.match(part)
        if not m:
            raise MappingError(
                f"bad X12 path {path!r}: {part!r} is not a loop id (2300, 2010BA, ST[2] …)", location=path
            )
        scopes.append((m["name"], int(m["idx"]) if m["idx"] else None))
    m = _PATH.match(parts[-1])
    if not m:
        raise MappingError(
            f"bad X12 path {path!r}: expected SEGnn, SEG[qualifier]nn or SEGnn-c (e.g. CLM01, NM1[85]03)",
            location=path,
        )
    selectors = tuple(s for s in re.findall(r"\[([^\]]*)\]", m["sel"] or ""))
    result = X12Path(
        tuple(scopes),
        m["seg"],
        selectors,
        int(m["ele"]) if m["ele"] else None,
        int(m["comp"]) if m["comp"] else None,
        path,
    )
    if len(_path_cache) < 4096:
        _path_cache[path] = result
    return result


class _Entry:
    __slots__ = ("frames", "orig", "seg")

    def __init__(self, seg: Segment, orig: str | None, frames: tuple[tuple[str, int], ...]) -> None:
        self.seg = seg
        self.orig = orig  # original text incl. terminator and following whitespace; None once modified
        self.frames = frames  # (("ISA",1),("GS",1),("ST",1),("2000A",1),("2010AA",1)) …


def tokenize_text(text: str) -> tuple[str, list[tuple[str, str, Delimiters]]]:
    """Split a whole X12 text into (segment text, trailer, delimiters); the prefix is leading BOM/whitespace."""
    pos = 0
    n = len(text)
    while pos < n and text[pos] in "\ufeff \t\r\n":
        pos += 1
    prefix = text[:pos]
    out: list[tuple[str, str, Delimiters]] = []
    if not text.startswith("ISA", pos):
        first = text[pos : pos + 40].split("\n", 1)[0]
        if not first:
            raise X12ParseError("empty input: no X12 segments", code="023", location="ISA")
        raise X12ParseError(
            f"missing ISA: an X12 interchange must start with an ISA segment, found {first!r}",
            code="022",
            location="ISA",
        )
    delims = read_isa_header(text[pos : pos + ISA_LENGTH + 2])
    while pos < n:
        if text.startswith("ISA", pos) and out:
            delims = read_isa_header(text[pos : pos + ISA_LENGTH + 2])
        term = delims.segment
        end = text.find(term, pos)
        if end < 0:
            tail = text[pos:].strip()
            if tail:
                raise X12ParseError(
                    f"file ends without a segment terminator {term!r} after {tail[:20]!r}",
                    code="023",
                    location=f"segment {len(out) + 1}",
                )
            # trailing whitespace only: attach it to the last trailer
            if out:
                seg_text, trailer, d = out[-1]
                out[-1] = (seg_text, trailer + text[pos:], d)
            break
        seg_text = text[pos:end]
        nxt = end + 1
        while nxt < n and text[nxt] in " \t\r\n":
            nxt += 1
        trailer = text[end:nxt]
        if term == "\n" and seg_text.endswith("\r"):
            seg_text, trailer = seg_text[:-1], "\r" + trailer
        out.append((seg_text, trailer, delims))
        pos = nxt
    return prefix, out


class _Framer:
    """Gives every segment its loop frames: ``(("ISA",1),("GS",1),("ST",1),("2000A",1),("2010AA",1))``."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.counters: dict[str, int] = {}
        self.base: tuple[tuple[str, int], ...] = ()
        self.tracker: LoopTracker | None = None

    def _next(self, name: str) -> tuple[str, int]:
        self.counters[name] = self.counters.get(name, 0) + 1
        return (name, self.counters[name])

    def frames(self, seg: Segment, env: SegmentReader) -> tuple[tuple[str, int], ...]:
        sid = seg.elements[0]
        if sid == "ISA":
            self.base = (self._next("ISA"),)
            return self.base
        if sid == "GS":
            self.base = self.base[:1] + (self._next("GS"),)
            return self.base
        if sid == "ST":
            self.base = self.base[:2] + (self._next("ST"),)
            gs = env.gs
            spec = spec_for(seg[1], seg[3] or (gs[8] if gs is not None else ""))
            self.tracker = LoopTracker(spec, strict=self.strict, counters=self.counters) if spec else None
            return self.base
        if sid == "GE":
            frames = self.base[:2]
            self.base = frames[:-1]
            return frames
        if sid == "IEA":
            frames = self.base[:1]
            self.base = ()
            return frames
        if sid == "SE":
            frames = self.base
            self.base = self.base[:2]
            self.tracker = None
            return frames
        if self.tracker is not None:
            self.tracker.feed(seg)
            return self.base + self.tracker.frames
        return self.base


def _select(p: X12Path, entries: list[_Entry]) -> list[_Entry]:
    sid = p.segment
    found = [e for e in entries if e.seg.elements[0] == sid]
    for name, idx in p.scopes:
        if name == "HEADER":
            found = [e for e in found if len(e.frames) <= 3]
        elif idx is None:
            found = [e for e in found if any(f[0] == name for f in e.frames)]
        else:
            # the idx-th instance of the loop among those in scope so far
            instances: list[tuple[str, int]] = []
            for e in entries:
                for f in e.frames:
                    if f[0] == name and f not in instances:
                        instances.append(f)
            if idx > len(instances):
                return []
            target = instances[idx - 1]
            found = [e for e in found if target in e.frames]
    qualified = False
    for sel in p.selectors:
        # a number is an occurrence for unqualified segments and after a qualifier (NM1[82][2])
        if sel.startswith("#") or (sel.isdigit() and (sid not in QUALIFIED or qualified)):
            n = int(sel.lstrip("#") or "0")
            found = [found[n - 1]] if 0 < n <= len(found) else []
        else:
            pos = 3 if sid == "HL" else 1
            found = [e for e in found if e.seg[pos] == sel or e.seg.get(pos, 1) == sel]
            qualified = True
    return found


def _values(path: str, entries: list[_Entry]) -> Iterator[str]:
    p = parse_path(path)
    for e in _select(p, entries):
        seg = e.seg
        if p.element is None:
            yield seg.delimiters.element.join(seg.elements)
            continue
        if p.component:
            yield seg.get(p.element, p.component)
            continue
        value = seg[p.element]
        if seg.elements[0] == "ISA":
            yield value.rstrip() if p.element not in (11, 16) else value
        elif seg.delimiters.repetition and seg.delimiters.repetition in value:
            yield from value.split(seg.delimiters.repetition)
        else:
            yield value


class X12Document:
    """A whole X12 file in memory, addressable by path; see the module docstring for the notation."""

    def __init__(self, raw: bytes, *, strict: bool = True) -> None:
        self._raw = raw
        text = raw.decode("utf-8", "surrogateescape")
        self._prefix, tokens = tokenize_text(text)
        self.envelope = SegmentReader(b"")
        self._entries: list[_Entry] = []
        self.modified = False
        env = self.envelope
        framer = _Framer(strict)
        for seg_text, trailer, delims in tokens:
            seg = Segment(seg_text.split(delims.element), 0, delims)
            env.observe(seg)
            frames = framer.frames(seg, env)
            self._entries.append(_Entry(seg, seg_text + trailer, frames))
        env.finish()

    # -- introspection ----------------------------------------------------------------------------------
    @property
    def segments(self) -> list[Segment]:
        return [e.seg for e in self._entries]

    @property
    def delimiters(self) -> Delimiters:
        return self._entries[0].seg.delimiters

    @property
    def envelope_issues(self) -> list[Issue]:
        """Control-number and count mismatches found while reading (see :class:`SegmentReader`)."""
        return self.envelope.envelope_issues

    def loop_id(self, seg: Segment) -> str:
        for e in self._entries:
            if e.seg is seg:
                loops = [f[0] for f in e.frames if f[0] not in ("ISA", "GS", "ST")]
                return loops[-1] if loops else ""
        return ""

    def loops(self, loop_id: str) -> list[LoopView]:
        """Every instance of a loop (e.g. ``"2300"``), in document order."""
        views: dict[tuple[str, int], LoopView] = {}
        for e in self._entries:
            for frame in e.frames:
                if frame[0] == loop_id:
                    view = views.get(frame)
                    if view is None:
                        view = views[frame] = LoopView(self, frame, [])
                    view._entries.append(e)
        return list(views.values())

    def transactions(self) -> list[LoopView]:
        return self.loops("ST")

    # -- Document protocol ------------------------------------------------------------------------------
    def get(self, path: str) -> str | None:
        for value in self._values(path, self._entries):
            if value:
                return value
        return None

    def get_all(self, path: str) -> list[str]:
        return [v for v in self._values(path, self._entries) if v]

    def set(self, path: str, value: str) -> None:
        p = parse_path(path)
        if p.element is None:
            raise MappingError(f"X12 path {path!r} names no element (e.g. {p.segment}01)", location=path)
        matches = self._select(p, self._entries)
        entry = matches[0] if matches else self._create(p)
        self._write(entry, p, value)

    def delete(self, path: str) -> None:
        p = parse_path(path)
        if p.element is None:
            raise MappingError(f"X12 path {path!r} names no element", location=path)
        for entry in self._select(p, self._entries)[:1]:
            self._write(entry, p, "", trim=True)

    def to_bytes(self) -> bytes:
        if not self.modified:
            return self._raw
        parts = [self._prefix]
        for e in self._entries:
            if e.orig is not None:
                parts.append(e.orig)
            else:
                d = e.seg.delimiters
                parts.append(d.element.join(e.seg.elements) + d.segment + d.suffix)
        return "".join(parts).encode("utf-8", "surrogateescape")

    # -- internals --------------------------------------------------------------------------------------
    def _select(self, p: X12Path, entries: list[_Entry]) -> list[_Entry]:
        return _select(p, entries)

    def _values(self, path: str, entries: list[_Entry]) -> Iterator[str]:
        return _values(path, entries)

    def _create(self, p: X12Path) -> _Entry:
        """A new segment at the end of the path's scope (its loop instance, else the first transaction)."""
        scope_entries = self._entries
        # find the scope frame: the last scope of the path, or the first ST
        target: tuple[str, int] | None = None
        if p.scopes:
            name, idx = p.scopes[-1]
            instances: list[tuple[str, int]] = []
            for e in scope_entries:
                for f in e.frames:
                    if f[0] == name and f not in instances:
                        instances.append(f)
            if instances:
                target = instances[(idx or 1) - 1] if (idx or 1) <= len(instances) else None
        else:
            target = next((f for e in scope_entries for f in e.frames if f[0] == "ST"), None)
        if target is None:
            raise MappingError(
                f"cannot create {p.text!r}: its loop or transaction is not in the document", location=p.text
            )
        last = self._insert_after(target, p.segment)
        anchor = self._entries[last]
        d = anchor.seg.delimiters
        elements = [p.segment]
        for sel in p.selectors:
            if not sel.startswith("#") and not (sel.isdigit() and p.segment not in QUALIFIED):
                pos = 3 if p.segment == "HL" else 1
                elements += [""] * (pos + 1 - len(elements))
                elements[pos] = sel
                break
        seg = Segment(elements, 0, d)
        frames = anchor.frames[: anchor.frames.index(target) + 1] if target in anchor.frames else anchor.frames
        entry = _Entry(seg, None, frames)
        self._entries.insert(last + 1, entry)
        # keep SE01 right
        st_frame = next((f for f in frames if f[0] == "ST"), None)
        if st_frame is not None:
            for e in self._entries[last + 1 :]:
                if e.seg.id == "SE" and st_frame in e.frames:
                    try:
                        e.seg.elements[1] = str(int(e.seg[1]) + 1)
                        e.orig = None
                    except ValueError:
                        pass
                    break
        self.modified = True
        return entry

    def _insert_after(self, target: tuple[str, int], sid: str) -> int:
        """Index of the segment a new ``sid`` of loop ``target`` goes after: among the loop's own segments
        (before its child loops), after the last one the guide orders at or before ``sid``."""
        own = [
            i
            for i, e in enumerate(self._entries)
            if e.frames and e.frames[-1] == target and e.seg.id not in ("SE", "GE", "IEA")
        ]
        if not own:
            own = [i for i, e in enumerate(self._entries) if target in e.frames and e.seg.id != "SE"]
        members: tuple[str, ...] = ()
        st_frame = next((f for f in self._entries[own[0]].frames if f[0] == "ST"), None)
        st = next((e.seg for e in self._entries if e.seg.id == "ST" and e.frames[-1:] == (st_frame,)), None)
        if st is not None:
            spec = spec_for(st[1], st[3])
            if spec is not None:
                loop = spec.by_id.get(target[0])
                members = (loop.trigger,) + loop.members if loop else ("ST",) + spec.header
        if sid in members:
            rank = members.index(sid)
            before = [
                i for i in own if self._entries[i].seg.id in members and members.index(self._entries[i].seg.id) <= rank
            ]
            if before:
                return before[-1]
            return own[0]
        return own[-1]

    def _write(self, entry: _Entry, p: X12Path, value: str, trim: bool = False) -> None:
        seg = entry.seg
        d = seg.delimiters
        assert p.element is not None
        forbidden = {d.element, d.segment} | ({d.component} if p.component else set())
        if d.repetition:
            forbidden.add(d.repetition)
        if any(ch in value for ch in forbidden if ch):
            raise MappingError(
                f"value for {p.text} contains an X12 delimiter ({''.join(sorted(forbidden))})", location=p.text
            )
        if seg.id == "ISA":
            raise MappingError(
                "ISA elements are fixed-width envelope data; set them through partner settings", location=p.text
            )
        elements = seg.elements
        if len(elements) <= p.element:
            elements.extend([""] * (p.element + 1 - len(elements)))
        if p.component:
            comps = elements[p.element].split(d.component) if elements[p.element] else []
            if len(comps) < p.component:
                comps.extend([""] * (p.component - len(comps)))
            comps[p.component - 1] = value
            while comps and not comps[-1]:
                comps.pop()
            elements[p.element] = d.component.join(comps)
        else:
            elements[p.element] = value
        if trim or not value:
            while len(elements) > 1 and not elements[-1]:
                elements.pop()
        entry.orig = None
        self.modified = True


class LoopView:
    """One loop instance: its segments (child loops included) and paths relative to it.

    From :func:`iter_loops`, ``context`` holds the latest instance of every loop that encloses this one or sits
    beside one of its ancestors (for a 2300 claim: ``2010AA`` billing provider, ``2010BA`` subscriber,
    ``2010BB`` payer, ``2010CA`` patient when there is one, ``1000A`` submitter, ``ST`` …), each with its own
    segments only.
    """

    def __init__(
        self,
        doc: X12Document | None,
        frame: tuple[str, int],
        entries: list[_Entry],
        context: dict[str, LoopView] | None = None,
    ) -> None:
        self._doc = doc
        self.frame = frame
        self._entries = entries
        self.context: dict[str, LoopView] = context or {}

    @property
    def id(self) -> str:
        return self.frame[0]

    @property
    def segments(self) -> list[Segment]:
        return [e.seg for e in self._entries]

    @property
    def own_segments(self) -> list[Segment]:
        """The loop's segments without those of its child loops."""
        return [e.seg for e in self._entries if e.frames and e.frames[-1] == self.frame]

    def get(self, path: str) -> str | None:
        for value in _values(path, self._entries):
            if value:
                return value
        return None

    def get_all(self, path: str) -> list[str]:
        return [v for v in _values(path, self._entries) if v]

    def loops(self, loop_id: str) -> list[LoopView]:
        views: dict[tuple[str, int], LoopView] = {}
        for e in self._entries:
            for frame in e.frames:
                if frame[0] == loop_id:
                    view = views.get(frame)
                    if view is None:
                        view = views[frame] = LoopView(self._doc, frame, [])
                    view._entries.append(e)
        return list(views.values())

    def __repr__(self) -> str:
        return f"LoopView({self.frame[0]}[{self.frame[1]}], {len(self._entries)} segments)"


def iter_loops(
    source: bytes | BinaryIO | Iterable[bytes],
    loop_id: str,
    *,
    strict: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Iterator[LoopView]:
    """Stream every instance of ``loop_id`` (e.g. ``"2300"``: each claim with its 2400 lines) from a file of any
    size, holding one instance (plus its context) in memory at a time.

    >>> for claim in iter_loops(open("big.837", "rb"), "2300"):
    ...     claim.get("CLM01"), claim.get_all("SV102"), claim.context["2010BA"].get("NM109")
    """
    reader = SegmentReader(source, chunk_size=chunk_size)
    framer = _Framer(strict)
    current: LoopView | None = None
    # loop id → (frame, enclosing frames, entries) of its latest instance outside the target loop
    latest: dict[str, tuple[tuple[str, int], tuple[tuple[str, int], ...], list[_Entry]]] = {}
    for seg in reader:
        frames = framer.frames(seg, reader)
        entry = _Entry(seg, None, frames)
        target = next((f for f in frames if f[0] == loop_id), None)
        if current is not None and target != current.frame:
            yield current
            current = None
        if target is not None:
            if current is None:
                context = {
                    lid: LoopView(None, frame, entries)
                    for lid, (frame, anc, entries) in latest.items()
                    if all(a in frames for a in anc)
                }
                current = LoopView(None, target, [], context)
            current._entries.append(entry)
            continue
        if not frames:
            continue
        # only a loop's own segments are kept (its child loops have their own entry): memory stays bounded
        frame = frames[-1]
        held = latest.get(frame[0])
        if held is None or held[0] != frame:
            latest[frame[0]] = (frame, frames[:-1], [entry])
        else:
            held[2].append(entry)
    if current is not None:
        yield current


def parse_document(raw: bytes, *, strict: bool = True) -> X12Document:
    """Parse a whole X12 file into a path-addressable document (``X12ParseError`` when it cannot be read).

    ``strict`` also checks loop placement, segment order and required elements of 837/835/999/277CA
    transactions (see :mod:`hub.transforms.x12.loops`).
    """
    if isinstance(raw, str):  # be forgiving to callers holding text
        raw = raw.encode("utf-8", "surrogateescape")
    return X12Document(bytes(raw), strict=strict)
