"""Loop structure of the transaction sets the hub reads: 837P, 837I, 835, 999, 277CA.

A compact, hand-written table per implementation guide: which segment (and which qualifier) starts each loop,
its parent loops, and the order of its own segments. :class:`LoopTracker` consumes a transaction's segments
one at a time and says which loop each belongs to — the same decision pyx12's map walker makes, in ~1 µs per
segment instead of ~60 µs, with no XML maps to load. pyx12 stays the validator (codes, usage, repeats);
this table only knows enough to give segments their loop ids and to refuse what cannot be placed:

* a segment that starts loops elsewhere (``NM1``, ``HL``, ``CLM`` …) but whose qualifier starts no loop
  reachable from here → ``X12ParseError`` ("NM1*117 is not expected in loop 2000A");
* a segment out of order inside its loop (``N4`` after ``REF`` in 2010AA) → ``X12ParseError``;
* a required element (for a small, guide-independent list) left empty → ``X12ParseError``.

Segments the table does not list are tolerated and stay in the current loop, so newer guide versions still read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from hub.errors import X12ParseError

from .reader import Segment

__all__ = ["LoopDef", "TransactionSpec", "LoopTracker", "spec_for", "SPECS", "REQUIRED_ELEMENTS"]


@dataclass(frozen=True)
class LoopDef:
    id: str
    trigger: str  # segment id that starts the loop
    quals: frozenset[str] = frozenset()  # allowed values of the qualifier element (empty: any)
    qual_pos: int = 1  # element holding the qualifier (HL03 for HL loops)
    parents: tuple[str, ...] = ("",)  # "" is the transaction level
    members: tuple[str, ...] = ()  # the loop's own segments after the trigger, in guide order
    name: str = ""

    def matches(self, seg: Segment) -> bool:
        return not self.quals or seg[self.qual_pos] in self.quals


@dataclass
class TransactionSpec:
    name: str
    loops: list[LoopDef]
    header: tuple[str, ...] = ()  # transaction-level segments after ST, in order
    closers: dict[str, str] = field(default_factory=dict)  # segment id → loop it ends (pops back to)
    children: dict[str, list[LoopDef]] = field(default_factory=dict, init=False)
    triggers: frozenset[str] = field(default=frozenset(), init=False)
    by_id: dict[str, LoopDef] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.order: dict[tuple[str, ...], dict[str, int]] = {}
        for members in [("ST",) + self.header] + [lp.members for lp in self.loops]:
            self.order[members] = {sid: i for i, sid in reversed(list(enumerate(members)))}
        for loop in self.loops:
            self.by_id[loop.id] = loop
            for parent in loop.parents:
                self.children.setdefault(parent, []).append(loop)
        self.triggers = frozenset(loop.trigger for loop in self.loops)


def L(
    id: str, trigger: str, quals: str = "", parents: str = "", members: str = "", *, pos: int = 1, name: str = ""
) -> LoopDef:
    return LoopDef(
        id=id,
        trigger=trigger,
        quals=frozenset(quals.split()) if quals else frozenset(),
        qual_pos=pos,
        parents=tuple(p if p != "-" else "" for p in parents.split()) if parents else ("",),
        members=tuple(members.split()),
        name=name,
    )


# --- 837 professional (005010X222A1) ---------------------------------------------------------------------
_837_HEAD = [
    L("1000A", "NM1", "41", "", "PER", name="Submitter Name"),
    L("1000B", "NM1", "40", "", "", name="Receiver Name"),
    L("2000A", "HL", "20", "", "PRV CUR", pos=3, name="Billing Provider Hierarchical Level"),
    L("2010AA", "NM1", "85", "2000A", "N3 N4 REF PER", name="Billing Provider Name"),
    L("2010AB", "NM1", "87", "2000A", "N3 N4", name="Pay-to Address Name"),
    L("2010AC", "NM1", "PE", "2000A", "N3 N4 REF", name="Pay-To Plan Name"),
    L("2000B", "HL", "22", "2000A", "SBR PAT", pos=3, name="Subscriber Hierarchical Level"),
    L("2010BA", "NM1", "IL", "2000B", "N3 N4 DMG REF PER", name="Subscriber Name"),
    L("2010BB", "NM1", "PR", "2000B", "N3 N4 REF", name="Payer Name"),
    L("2000C", "HL", "23", "2000B", "PAT", pos=3, name="Patient Hierarchical Level"),
    L("2010CA", "NM1", "QC", "2000C", "N3 N4 DMG REF PER", name="Patient Name"),
]
SPEC_837P = TransactionSpec(
    "837P",
    _837_HEAD
    + [
        L("2300", "CLM", "", "2000B 2000C", "DTP PWK CN1 AMT REF K3 NTE CR1 CR2 CRC HI HCP", name="Claim Information"),
        L("2310A", "NM1", "DN P3", "2300", "REF", name="Referring Provider Name"),
        L("2310B", "NM1", "82", "2300", "PRV REF", name="Rendering Provider Name"),
        L("2310C", "NM1", "77", "2300", "N3 N4 REF PER", name="Service Facility Location Name"),
        L("2310D", "NM1", "DQ", "2300", "REF", name="Supervising Provider Name"),
        L("2310E", "NM1", "PW", "2300", "N3 N4", name="Ambulance Pick-up Location"),
        L("2310F", "NM1", "45", "2300", "N3 N4", name="Ambulance Drop-off Location"),
        L("2320", "SBR", "", "2300", "CAS AMT OI MOA", name="Other Subscriber Information"),
        L("2330A", "NM1", "IL", "2320", "N3 N4 REF", name="Other Subscriber Name"),
        L("2330B", "NM1", "PR", "2320", "N3 N4 DTP REF", name="Other Payer Name"),
        L("2330C", "NM1", "DN P3", "2320", "REF"),
        L("2330D", "NM1", "82", "2320", "REF"),
        L("2330E", "NM1", "77", "2320", "REF"),
        L("2330F", "NM1", "DQ", "2320", "REF"),
        L("2330G", "NM1", "85", "2320", "REF"),
        L(
            "2400",
            "LX",
            "",
            "2300",
            "SV1 SV5 PWK CR1 CR3 CRC DTP QTY MEA CN1 REF AMT K3 NTE PS1 HCP",
            name="Service Line Number",
        ),
        L("2410", "LIN", "", "2400", "CTP REF", name="Drug Identification"),
        L("2420A", "NM1", "82", "2400", "PRV REF", name="Rendering Provider Name"),
        L("2420B", "NM1", "QB", "2400", "REF"),
        L("2420C", "NM1", "77", "2400", "N3 N4 REF"),
        L("2420D", "NM1", "DQ", "2400", "REF"),
        L("2420E", "NM1", "DK", "2400", "N3 N4 REF PER"),
        L("2420F", "NM1", "DN P3", "2400", "REF"),
        L("2420G", "NM1", "PW", "2400", "N3 N4"),
        L("2420H", "NM1", "45", "2400", "N3 N4"),
        L("2430", "SVD", "", "2400", "CAS DTP AMT", name="Line Adjudication Information"),
        L("2440", "LQ", "", "2400", "FRM", name="Form Identification Code"),
    ],
    header=("BHT",),
    closers={"SE": ""},
)

# --- 837 institutional (005010X223A2) --------------------------------------------------------------------
SPEC_837I = TransactionSpec(
    "837I",
    [d for d in _837_HEAD if d.id not in ("2000C", "2010CA", "2010BA", "2000B")]
    + [
        L("2000B", "HL", "22", "2000A", "SBR", pos=3, name="Subscriber Hierarchical Level"),
        L("2010BA", "NM1", "IL", "2000B", "N3 N4 DMG REF", name="Subscriber Name"),
        L("2000C", "HL", "23", "2000B", "PAT", pos=3, name="Patient Hierarchical Level"),
        L("2010CA", "NM1", "QC", "2000C", "N3 N4 DMG REF", name="Patient Name"),
        L("2300", "CLM", "", "2000B 2000C", "DTP CL1 PWK CN1 AMT REF K3 NTE CRC HI HCP", name="Claim Information"),
        L("2310A", "NM1", "71", "2300", "PRV REF", name="Attending Provider Name"),
        L("2310B", "NM1", "72", "2300", "REF", name="Operating Physician Name"),
        L("2310C", "NM1", "ZZ", "2300", "REF", name="Other Operating Physician Name"),
        L("2310D", "NM1", "82", "2300", "REF", name="Rendering Provider Name"),
        L("2310E", "NM1", "77", "2300", "N3 N4 REF", name="Service Facility Location Name"),
        L("2310F", "NM1", "DN", "2300", "REF", name="Referring Provider Name"),
        L("2320", "SBR", "", "2300", "CAS AMT OI MIA MOA", name="Other Subscriber Information"),
        L("2330A", "NM1", "IL", "2320", "N3 N4 REF"),
        L("2330B", "NM1", "PR", "2320", "N3 N4 DTP REF"),
        L("2330C", "NM1", "71", "2320", "REF"),
        L("2330D", "NM1", "72", "2320", "REF"),
        L("2330E", "NM1", "ZZ", "2320", "REF"),
        L("2330F", "NM1", "77", "2320", "REF"),
        L("2330G", "NM1", "82", "2320", "REF"),
        L("2330H", "NM1", "DN", "2320", "REF"),
        L("2330I", "NM1", "85", "2320", "REF"),
        L("2400", "LX", "", "2300", "SV2 PWK DTP REF AMT NTE HCP", name="Service Line Number"),
        L("2410", "LIN", "", "2400", "CTP REF"),
        L("2420A", "NM1", "72", "2400", "REF"),
        L("2420B", "NM1", "ZZ", "2400", "REF"),
        L("2420C", "NM1", "82", "2400", "REF"),
        L("2420D", "NM1", "DN", "2400", "REF"),
        L("2430", "SVD", "", "2400", "CAS DTP AMT"),
    ],
    header=("BHT",),
    closers={"SE": ""},
)

# --- 835 (005010X221A1) ----------------------------------------------------------------------------------
SPEC_835 = TransactionSpec(
    "835",
    [
        L("1000A", "N1", "PR", "", "N3 N4 REF PER", name="Payer Identification"),
        L("1000B", "N1", "PE", "", "N3 N4 REF RDM", name="Payee Identification"),
        L("2000", "LX", "", "", "TS3 TS2", name="Header Number"),
        L("2100", "CLP", "", "2000 -", "CAS NM1 MIA MOA REF DTM PER AMT QTY", name="Claim Payment Information"),
        L("2110", "SVC", "", "2100", "DTM CAS REF AMT QTY LQ", name="Service Payment Information"),
    ],
    header=("BPR", "TRN", "CUR", "REF", "DTM"),
    closers={"PLB": "", "SE": ""},
)

# --- 999 (005010X231A1) ----------------------------------------------------------------------------------
SPEC_999 = TransactionSpec(
    "999",
    [
        L("2000", "AK2", "", "", "", name="Transaction Set Response Header"),
        L("2100", "IK3", "", "2000", "CTX", name="Error Identification"),
        L("2110", "IK4", "", "2100", "CTX", name="Implementation Data Element Note"),
    ],
    header=("AK1",),
    closers={"IK5": "2000", "AK9": "", "SE": ""},
)

# --- 277CA (005010X214) ----------------------------------------------------------------------------------
SPEC_277CA = TransactionSpec(
    "277CA",
    [
        L("2000A", "HL", "20", "", "", pos=3, name="Information Source Level"),
        L("2100A", "NM1", "PR AY", "2000A", "", name="Information Source Name"),
        L("2200A", "TRN", "", "2000A", "DTP", name="Transmission Receipt Control Identifier"),
        L("2000B", "HL", "21", "2000A", "", pos=3, name="Information Receiver Level"),
        L("2100B", "NM1", "41", "2000B", ""),
        L("2200B", "TRN", "", "2000B", "STC QTY AMT"),
        L("2000C", "HL", "19", "2000B", "", pos=3, name="Billing Provider of Service Level"),
        L("2100C", "NM1", "85", "2000C", ""),
        L("2200C", "TRN", "", "2000C", "STC REF QTY AMT"),
        L("2000D", "HL", "PT", "2000C", "", pos=3, name="Patient Level"),
        L("2100D", "NM1", "QC", "2000D", ""),
        L("2200D", "TRN", "", "2000D", "STC REF DTP"),
        L("2220D", "SVC", "", "2200D", "STC REF DTP", name="Service Line Information"),
    ],
    header=("BHT",),
    closers={"SE": ""},
)

SPECS: dict[str, TransactionSpec] = {
    "837P": SPEC_837P,
    "837I": SPEC_837I,
    "835": SPEC_835,
    "999": SPEC_999,
    "277CA": SPEC_277CA,
}


def spec_for(set_id: str, version: str) -> TransactionSpec | None:
    """The loop table for a transaction (ST01 and ST03/GS08), or None for sets the hub does not walk."""
    if set_id == "837":
        if "X223" in version:
            return SPEC_837I
        if "X222" in version or "X098" in version:
            return SPEC_837P
        return None
    if set_id == "835":
        return SPEC_835
    if set_id == "999":
        return SPEC_999
    if set_id == "277" and "X214" in version:
        return SPEC_277CA
    return None


# Required elements that hold in every guide the hub walks: segment id → element positions; "05-1" is a
# component. Deliberately short: usage rules that depend on the loop are pyx12's job.
REQUIRED_ELEMENTS: dict[str, tuple[str, ...]] = {
    "BHT": ("01", "02"),
    "NM1": ("01", "02"),
    "N1": ("01",),
    "N3": ("01",),
    "N4": ("01",),
    "PER": ("01",),
    "HL": ("01", "03"),
    "SBR": ("01",),
    "DMG": ("01", "02"),
    "PRV": ("01", "02", "03"),
    "CLM": ("01", "02", "05", "05-1", "05-3"),
    "HI": ("01", "01-1", "01-2"),
    "DTP": ("01", "02", "03"),
    "DTM": ("01",),
    "REF": ("01", "02"),
    "AMT": ("01", "02"),
    "QTY": ("01", "02"),
    "LX": ("01",),
    "SV1": ("01", "01-1", "01-2", "02", "03", "04"),
    "SV2": ("01", "03"),
    "BPR": ("01", "02", "03", "04"),
    "TRN": ("01", "02"),
    "CLP": ("01", "02", "03", "04"),
    "CAS": ("01", "02", "03"),
    "SVC": ("01", "01-1", "01-2", "02", "03"),
    "PLB": ("01", "02", "03", "04"),
    "AK1": ("01", "02"),
    "AK2": ("01", "02"),
    "IK3": ("01", "02"),
    "IK4": ("01",),
    "IK5": ("01",),
    "AK9": ("01", "02", "03", "04"),
    "STC": ("01", "01-1"),
}

_ELEMENT_NAMES = {
    "NM101": "entity identifier code",
    "NM102": "entity type qualifier",
    "CLM01": "patient control number",
    "CLM02": "total claim charge",
    "CLM05": "health care service location information",
    "CLM05-1": "place of service / facility code",
    "CLM05-3": "claim frequency code",
    "HI01-1": "diagnosis code list qualifier",
    "HI01-2": "diagnosis code",
    "SV101-2": "procedure code",
    "SV102": "line item charge amount",
    "CLP01": "patient control number",
    "CLP02": "claim status code",
    "CLP03": "total claim charge",
    "CLP04": "claim payment amount",
    "SVC02": "line item charge amount",
    "SVC03": "line item provider payment amount",
    "BPR02": "total actual provider payment amount",
}


# REQUIRED_ELEMENTS as (reference, element, component) triples, for the per-segment check
_REQUIRED: dict[str, tuple[tuple[str, int, int], ...]] = {
    sid: tuple((ref, int(ref.split("-")[0]), int(ref.split("-")[1]) if "-" in ref else 0) for ref in refs)
    for sid, refs in REQUIRED_ELEMENTS.items()
}


def _check_required(seg: Segment, loop_id: str) -> None:
    el = seg.elements
    n = len(el)
    for ref, pos, comp in _REQUIRED[el[0]]:
        value = el[pos] if pos < n else ""
        if comp and value:
            parts = value.split(seg.delimiters.component)
            value = parts[comp - 1] if comp <= len(parts) else ""
        elif comp:
            continue  # the element itself is reported (or is situational)
        if not value:
            name = _ELEMENT_NAMES.get(seg.id + ref, "")
            hint = ""
            if "-" in ref:
                whole = seg[int(ref.split("-")[0])]
                hint = (
                    f"; the composite reads {whole!r} but the ISA16 component separator is {seg.delimiters.component!r}"
                )
            raise X12ParseError(
                f"required element {seg.id}{ref}{' (' + name + ')' if name else ''} is missing in segment "
                f"{seg.ordinal} ({seg.id}) of loop {loop_id or 'header'}{hint}",
                code="1",
                location=f"{loop_id + '/' if loop_id else ''}{seg.id}{ref}",
            )


class _Frame:
    """An open loop on the tracker's stack."""

    __slots__ = ("last", "loop", "members", "n")

    def __init__(self, loop: str, members: tuple[str, ...], last: int, n: int) -> None:
        self.loop = loop  # loop id ("" for the transaction header)
        self.members = members  # its segment ids, in order
        self.last = last  # index in members of the last segment seen
        self.n = n  # instance number


class LoopTracker:
    """Assign loop ids to the segments of one transaction (ST … SE), checking placement and order.

    ``feed(seg)`` returns the loop id ("" for the transaction header/trailer). :attr:`path` is the stack of
    open loop ids, outermost first. ``strict=False`` never raises: unplaceable segments stay where they are.
    """

    def __init__(self, spec: TransactionSpec, *, strict: bool = True, counters: dict[str, int] | None = None) -> None:
        self.spec = spec
        self.strict = strict
        # instance numbers per loop id (shared across transactions when a document passes its own dict)
        self.counters: dict[str, int] = counters if counters is not None else {}
        self._stack: list[_Frame] = [_Frame("", ("ST", *spec.header), 0, 0)]

    @property
    def frames(self) -> tuple[tuple[str, int], ...]:
        """The open loops as ``(loop id, instance number)`` pairs, outermost first."""
        return tuple((f.loop, f.n) for f in self._stack[1:])

    @property
    def path(self) -> list[str]:
        return [f.loop for f in self._stack[1:]]

    @property
    def current(self) -> str:
        return self._stack[-1].loop

    def feed(self, seg: Segment) -> str:
        loop_id = self._place(seg)
        if self.strict and seg.elements[0] in _REQUIRED:
            _check_required(seg, loop_id)
        return loop_id

    def _place(self, seg: Segment) -> str:
        sid = seg.id
        spec = self.spec
        stack = self._stack
        top = stack[-1]
        if sid in spec.closers:
            target = spec.closers[sid]
            for depth in range(len(stack) - 1, -1, -1):
                if stack[depth].loop == target:
                    del stack[depth + 1 :]
                    return target
            if self.strict:
                raise X12ParseError(
                    f"{sid} is not expected here: it closes loop {target or 'header'} which is not open",
                    code="2",
                    location=f"segment {seg.ordinal} {sid}",
                )
            return top.loop
        members = top.members
        if sid in spec.triggers:
            qual = seg.elements[1] if len(seg.elements) > 1 else ""
            # a loop trigger: find the innermost open loop that can contain it
            for depth in range(len(stack) - 1, -1, -1):
                for loop in spec.children.get(stack[depth].loop, ()):
                    if loop.trigger == sid and (
                        not loop.quals or (qual if loop.qual_pos == 1 else seg[loop.qual_pos]) in loop.quals
                    ):
                        del stack[depth + 1 :]
                        n = self.counters.get(loop.id, 0) + 1
                        self.counters[loop.id] = n
                        stack.append(_Frame(loop.id, loop.members, -1, n))
                        return loop.id
            if sid not in members:
                if self.strict:
                    qual = qual if sid != "HL" else seg[3]
                    raise X12ParseError(
                        f"{sid}*{qual} (segment {seg.ordinal}) is not expected in loop {top.loop or 'header'}: "
                        f"no loop of {spec.name} that can follow here starts with it",
                        code="2",
                        location=f"{top.loop + '/' if top.loop else ''}{sid}",
                    )
                return top.loop
        index = spec.order[members].get(sid, -1)
        if index >= 0:
            if index < top.last and self.strict:
                raise X12ParseError(
                    f"{sid} (segment {seg.ordinal}) is out of order in loop {top.loop or 'header'}: "
                    f"it must come before {members[top.last]}",
                    code="7",
                    location=f"{top.loop + '/' if top.loop else ''}{sid}",
                )
            top.last = index
            return top.loop
        if self.strict:
            # a segment of an enclosing loop after one of its child loops
            for depth in range(len(stack) - 2, -1, -1):
                if sid in stack[depth].members:
                    raise X12ParseError(
                        f"{sid} (segment {seg.ordinal}) belongs to loop {stack[depth].loop or 'header'} but comes "
                        f"after its child loop {stack[depth + 1].loop}",
                        code="7",
                        location=f"{stack[depth].loop + '/' if stack[depth].loop else ''}{sid}",
                    )
        return top.loop


def assign_loops(segments: Iterable[Segment], spec: TransactionSpec, *, strict: bool = True) -> list[str]:
    """Loop ids for the segments of one transaction (ST first)."""
    tracker = LoopTracker(spec, strict=strict)
    out = []
    for seg in segments:
        out.append("" if seg.id == "ST" else tracker.feed(seg))
    return out
