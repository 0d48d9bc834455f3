"""X12 validation against the implementation guides, with pyx12 (5010: 837P, 837I, 835, 999, 277CA, 834, 820).

pyx12 knows every segment, element, code list and usage rule of the guides it ships maps for; the hub uses it
where that knowledge is needed (validating the 837s it writes, answering inbound files with a 999) and not on
the hot path (it costs ~0.1–0.3 s per file, mostly loading its XML map).

:func:`validate_report` runs pyx12's ``x12n_document`` and reads its error handler's tree (through pyx12's JSON
visitor) into a :class:`ValidationReport`: interchanges → groups → transactions → segment errors → element
errors, each with its X12 code (TA1 note code, AK9/IK5/IK3/IK4 codes) and the hub's loop id for the segment.
:func:`validate` flattens that into :class:`~hub.errors.Issue` objects and never raises.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hub.errors import Issue, X12ParseError

from .document import tokenize_text
from .loops import LoopTracker, spec_for
from .reader import Segment

__all__ = [
    "validate",
    "validate_report",
    "ValidationReport",
    "InterchangeResult",
    "GroupResult",
    "TransactionResult",
    "SegmentError",
    "ElementError",
    "IK3_CODES",
    "IK4_CODES",
    "IK5_CODES",
    "AK9_CODES",
    "TA1_CODES",
]

IK3_CODES = {
    "1": "Unrecognized segment ID",
    "2": "Unexpected segment",
    "3": "Required segment missing",
    "4": "Loop occurs over maximum times",
    "5": "Segment exceeds maximum use",
    "6": "Segment not in defined transaction set",
    "7": "Segment not in proper sequence",
    "8": "Segment has data element errors",
    "I4": 'Implementation "Not Used" segment present',
    "I6": "Implementation dependent segment missing",
    "I7": "Implementation loop occurs under minimum times",
    "I8": "Implementation segment below minimum use",
    "I9": 'Implementation dependent "Not Used" segment present',
}
IK4_CODES = {
    "1": "Required data element missing",
    "2": "Conditional required data element missing",
    "3": "Too many data elements",
    "4": "Data element too short",
    "5": "Data element too long",
    "6": "Invalid character in data element",
    "7": "Invalid code value",
    "8": "Invalid date",
    "9": "Invalid time",
    "10": "Exclusion condition violated",
    "12": "Too many repetitions",
    "13": "Too many components",
    "I10": 'Implementation "Not Used" data element present',
    "I11": "Implementation too few repetitions",
    "I12": "Implementation pattern match failure",
    "I13": 'Implementation dependent "Not Used" data element present',
    "I6": "Code value not used in implementation",
    "I9": "Implementation dependent data element missing",
}
IK5_CODES = {
    "1": "Transaction set not supported",
    "2": "Transaction set trailer missing",
    "3": "Transaction set control number in header and trailer do not match",
    "4": "Number of included segments does not match actual count",
    "5": "One or more segments in error",
    "6": "Missing or invalid transaction set identifier",
    "7": "Missing or invalid transaction set control number",
    "8": "Authentication key name unknown",
    "9": "Encryption key name unknown",
    "10": "Requested service (authentication or encrypted) not available",
    "11": "Unknown security recipient",
    "12": "Incorrect message length (encryption only)",
    "13": "Message authentication code failed",
    "15": "Unknown security originator",
    "16": "Syntax error in decrypted text",
    "17": "Security not supported",
    "18": "Transaction set not in functional group",
    "19": "Invalid transaction set implementation convention reference",
    "23": "Transaction set control number not unique within the functional group",
    "24": "S3E security end segment missing for S3S security start segment",
    "25": "S3S security start segment missing for S3E security end segment",
    "26": "S4E security end segment missing for S4S security start segment",
    "27": "S4S security start segment missing for S4E security end segment",
    "I5": "Implementation one or more segments in error",
    "I6": "Implementation convention not supported",
}
AK9_CODES = {
    "1": "Functional group not supported",
    "2": "Functional group version not supported",
    "3": "Functional group trailer missing",
    "4": "Group control number in the functional group header and trailer do not agree",
    "5": "Number of included transaction sets does not match actual count",
    "6": "Group control number violates syntax",
    "10": "Authentication key name unknown",
    "11": "Encryption key name unknown",
    "12": "Requested service (authentication or encryption) not available",
    "13": "Unknown security recipient",
    "14": "Unknown security originator",
    "15": "Syntax error in decrypted text",
    "16": "Security not supported",
    "17": "Incorrect message length (encryption only)",
    "18": "Message authentication code failed",
    "19": "Functional group control number not unique within interchange",
    "23": "S3E security end segment missing for S3S security start segment",
    "24": "S3S security start segment missing for S3E security end segment",
    "25": "S4E security end segment missing for S4S security start segment",
    "26": "S4S security start segment missing for S4E security end segment",
}
TA1_CODES = {
    "000": "No error",
    "001": "The interchange control number in the header and trailer do not match",
    "002": "This standard as noted in the control standards identifier is not supported",
    "003": "This version of the controls is not supported",
    "004": "The segment terminator is invalid",
    "005": "Invalid interchange ID qualifier for sender",
    "006": "Invalid interchange sender ID",
    "007": "Invalid interchange ID qualifier for receiver",
    "008": "Invalid interchange receiver ID",
    "009": "Unknown interchange receiver ID",
    "010": "Invalid authorization information qualifier value",
    "011": "Invalid authorization information value",
    "012": "Invalid security information qualifier value",
    "013": "Invalid security information value",
    "014": "Invalid interchange date value",
    "015": "Invalid interchange time value",
    "016": "Invalid interchange standards identifier value",
    "017": "Invalid interchange version ID value",
    "018": "Invalid interchange control number value",
    "019": "Invalid acknowledgment requested value",
    "020": "Invalid test indicator value",
    "021": "Invalid number of included groups value",
    "022": "Invalid control structure",
    "023": "Improper (premature) end-of-file (transmission)",
    "024": "Invalid interchange content (e.g., invalid GS segment)",
    "025": "Duplicate interchange control number",
    "026": "Invalid data element separator",
    "027": "Invalid component element separator",
    "028": "Invalid delivery date in deferred delivery request",
    "029": "Invalid delivery time in deferred delivery request",
    "030": "Invalid delivery time code in deferred delivery request",
    "031": "Invalid grade of service code",
}
# pyx12's own segment codes → 999 IK3 codes (HL/LX numbering, trailing separators are element-level problems)
_PYX12_SEG_CODES = {"SEG1": "8", "HL1": "8", "HL2": "8", "LX": "8"}


@dataclass
class ElementError:
    position: int  # IK401-1
    component: int | None  # IK401-2
    repetition: int | None  # IK401-3
    reference: str  # IK402 (data element reference number)
    code: str  # IK403
    message: str
    value: str | None = None  # IK404


@dataclass
class SegmentError:
    segment_id: str  # IK301
    position: int  # IK302: position in the transaction, ST = 1
    loop: str  # the hub's loop id (IK303 takes its first 4 characters)
    codes: list[tuple[str, str, str | None]] = field(default_factory=list)  # (IK304 code, message, bad value)
    elements: list[ElementError] = field(default_factory=list)
    line: int = 0


@dataclass
class TransactionResult:
    set_id: str
    control_number: str
    version: str
    errors: list[tuple[str, str]] = field(default_factory=list)  # IK5 codes
    segments: list[SegmentError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.segments

    def codes(self) -> list[str]:
        """Every error code as "IK5:4", "IK3:8", "IK4:7" …"""
        out = [f"IK5:{c}" for c, _ in self.errors]
        for s in self.segments:
            out += [f"IK3:{c}" for c, _, _ in s.codes]
            out += [f"IK4:{e.code}" for e in s.elements]
        return out


@dataclass
class GroupResult:
    functional_id: str
    control_number: str
    version: str
    errors: list[tuple[str, str]] = field(default_factory=list)  # AK9 codes
    transactions: list[TransactionResult] = field(default_factory=list)
    declared_count: int = 0  # GE01
    received_count: int = 0


@dataclass
class InterchangeResult:
    control_number: str
    sender: tuple[str, str]  # (ISA05, ISA06)
    receiver: tuple[str, str]  # (ISA07, ISA08)
    date: str
    time: str
    usage: str
    errors: list[tuple[str, str]] = field(default_factory=list)  # TA1 note codes
    groups: list[GroupResult] = field(default_factory=list)


@dataclass
class ValidationReport:
    interchanges: list[InterchangeResult] = field(default_factory=list)
    fatal: X12ParseError | None = None  # the file could not be read at all

    @property
    def ok(self) -> bool:
        return self.fatal is None and not self.issues()

    def issues(self) -> list[Issue]:
        out: list[Issue] = []
        if self.fatal is not None:
            out.append(Issue("error", str(self.fatal), self.fatal.location, self.fatal.code))
        for isa in self.interchanges:
            for code, msg in isa.errors:
                out.append(Issue("error", msg, f"ISA13={isa.control_number}", code))
            for gs in isa.groups:
                for code, msg in gs.errors:
                    out.append(Issue("error", msg, f"GS06={gs.control_number}", code))
                for st in gs.transactions:
                    base = f"ST02={st.control_number}"
                    for code, msg in st.errors:
                        out.append(Issue("error", msg, base, code))
                    for seg in st.segments:
                        where = f"{base}/{seg.loop + '/' if seg.loop else ''}{seg.segment_id}"
                        for code, msg, _ in seg.codes:
                            out.append(Issue("error", f"{msg} (segment {seg.position})", where, code))
                        for el in seg.elements:
                            ref = f"{seg.segment_id}{el.position:02d}" + (f"-{el.component}" if el.component else "")
                            out.append(
                                Issue(
                                    "error",
                                    f"{el.message} (segment {seg.position})",
                                    f"{base}/{seg.loop + '/' if seg.loop else ''}{ref}",
                                    el.code,
                                )
                            )
        return out


# One pyx12 run at a time: pipelines run on worker threads (hub.channels.channel), and both the logger
# switch below and pyx12's own module-level map caches assume a single caller. Runs are CPU-bound under the
# GIL anyway, so taking turns costs nothing.
_PYX12 = threading.Lock()


@contextlib.contextmanager
def _quiet_pyx12() -> Iterator[None]:
    """pyx12 logs every finding at ERROR on its module loggers; they are reported here as issues instead.

    The ``pyx12`` parent logger is silenced for the call (its children propagate to it), then restored; the
    caller holds ``_PYX12``, so no other run can restore it while this one still reports.
    """
    lg = logging.getLogger("pyx12")
    saved = (lg.level, lg.propagate)
    null = logging.NullHandler()
    lg.addHandler(null)
    lg.setLevel(logging.CRITICAL + 1)
    lg.propagate = False
    try:
        yield
    finally:
        lg.removeHandler(null)
        lg.setLevel(saved[0])
        lg.propagate = saved[1]


def _structure(raw: bytes) -> list[tuple[Segment, list[tuple[Segment, list[list[Segment]]]]]]:
    """Interchanges → groups → transactions of segments, from a tolerant tokenisation (no envelope rules)."""
    _, tokens = tokenize_text(raw.decode("utf-8", "surrogateescape"))
    out: list[tuple[Segment, list[tuple[Segment, list[list[Segment]]]]]] = []
    tx: list[Segment] | None = None
    for text, _trailer, d in tokens:
        seg = Segment(text.split(d.element), 0, d)
        sid = seg.id
        if sid == "ISA":
            out.append((seg, []))
        elif sid == "GS" and out:
            out[-1][1].append((seg, []))
        elif sid == "ST" and out and out[-1][1]:
            tx = [seg]
            out[-1][1][-1][1].append(tx)
        elif tx is not None:
            tx.append(seg)
            if sid == "SE":
                tx = None
    return out


def _loop_ids(tx: list[Segment], version: str) -> list[str]:
    spec = spec_for(tx[0][1], tx[0][3] or version) if tx else None
    if spec is None:
        return [""] * len(tx)
    tracker = LoopTracker(spec, strict=False)
    return ["" if s.id in ("ST", "SE") else tracker.feed(s) for s in tx]


def _supported(icvn: str, gs: Segment) -> bool:
    import pyx12.map_index

    return pyx12.map_index.map_index().get_filename(icvn, gs[8], gs[1]) is not None


def validate_report(raw: bytes) -> ValidationReport:
    """Validate with pyx12; never raises (an unreadable file gives ``report.fatal``)."""
    import pyx12.params
    import pyx12.x12n_document

    report = ValidationReport()
    # the hub's own envelope reading first: pyx12 needs a readable ISA
    try:
        structure = _structure(raw)
    except X12ParseError as exc:
        report.fatal = exc
        return report
    if not structure:
        report.fatal = X12ParseError("no ISA interchange found", code="022", location="ISA")
        return report
    unsupported: list[tuple[int, int]] = []
    for i, (isa, groups) in enumerate(structure):
        for j, (gs, _) in enumerate(groups):
            if not _supported(isa[12], gs):
                unsupported.append((i, j))
    text = raw.decode("utf-8", "surrogateescape")
    if unsupported:
        text = _without_groups(raw, set(unsupported))
    out = io.StringIO()
    parsed: dict[str, Any] = {"interchanges": []}
    if text:
        try:
            with _PYX12, _quiet_pyx12():
                pyx12.x12n_document.x12n_document(pyx12.params.ParamsBase(), io.StringIO(text), None, None, fd_json=out)
            parsed = json.loads(out.getvalue() or '{"interchanges": []}')
        except Exception as exc:  # pyx12 raises EngineError and friends on input it cannot walk
            report.fatal = X12ParseError(f"pyx12 could not validate the file: {type(exc).__name__}: {exc}", code="024")
            return report
    json_isas = parsed.get("interchanges", [])
    for i, (isa, groups) in enumerate(structure):
        isa_res = InterchangeResult(
            control_number=isa[13],
            sender=(isa[5], isa[6].strip()),
            receiver=(isa[7], isa[8].strip()),
            date=isa[9],
            time=isa[10],
            usage=isa[15],
        )
        jisa = json_isas[i] if i < len(json_isas) else None
        if jisa:
            isa_res.errors = [
                (e["err_cde"], e["err_str"])
                for e in jisa.get("errors", [])
                if not (unsupported and e["err_cde"] == "021")
            ]
        jgroups = iter((jisa or {}).get("groups", []))
        for j, (gs, txs) in enumerate(groups):
            g = GroupResult(gs[1], gs[6], gs[8], received_count=len(txs))
            isa_res.groups.append(g)
            if (i, j) in unsupported:
                g.errors.append(
                    ("2", f"functional group version {gs[8] or '(none)'} ({gs[1]}) is not supported by the validator")
                )
                for tx in txs:
                    t = TransactionResult(tx[0][1], tx[0][2], tx[0][3] or gs[8])
                    t.errors.append(("1", f"transaction set {tx[0][1]} {gs[8]} is not supported"))
                    g.transactions.append(t)
                continue
            jg = next(jgroups, None)
            if jg is None:
                continue
            g.errors = [(e["err_cde"], e["err_str"]) for e in jg.get("errors", [])]
            g.declared_count = int(jg.get("st_count_orig") or 0)
            for k, jt in enumerate(jg.get("transactions", [])):
                tx = txs[k] if k < len(txs) else []
                loops = _loop_ids(tx, gs[8]) if tx else []
                t = TransactionResult(
                    jt.get("trn_set_id") or "", (jt.get("trn_set_control_num") or "").strip(), jt.get("vriic") or gs[8]
                )
                t.errors = [(e["err_cde"], e["err_str"]) for e in jt.get("errors", [])]
                for js in jt.get("segments", []):
                    pos = int(js.get("seg_count") or 0)
                    loop = loops[pos - 1] if 0 < pos <= len(loops) else ""
                    seg_err = SegmentError(js.get("seg_id") or "", pos, loop, line=int(js.get("cur_line") or 0))
                    for e in js.get("errors", []):
                        code = _PYX12_SEG_CODES.get(e["err_cde"], e["err_cde"])
                        seg_err.codes.append((code, e["err_str"], e.get("err_val")))
                    for je in js.get("elements", []):
                        for e in je.get("errors", []):
                            seg_err.elements.append(
                                ElementError(
                                    int(je.get("ele_pos") or 0),
                                    je.get("subele_pos"),
                                    je.get("repeat_pos"),
                                    je.get("ele_ref_num") or "",
                                    e["err_cde"],
                                    e["err_str"],
                                    e.get("err_val"),
                                )
                            )
                    if seg_err.elements and not any(c == "8" for c, _, _ in seg_err.codes):
                        seg_err.codes.append(("8", "Segment has data element errors", None))
                    t.segments.append(seg_err)
                if t.segments and not any(c == "5" for c, _ in t.errors):
                    t.errors.append(("5", IK5_CODES["5"]))
                g.transactions.append(t)
        report.interchanges.append(isa_res)
    return report


def _without_groups(raw: bytes, drop: set[tuple[int, int]]) -> str:
    """The file's text without the groups pyx12 has no map for (so the others can still be validated)."""
    _, tokens = tokenize_text(raw.decode("utf-8", "surrogateescape"))
    parts: list[str] = []
    i = j = -1
    skipping = False
    for text, _trailer, d in tokens:
        sid = text.split(d.element, 1)[0]
        if sid == "ISA":
            i, j = i + 1, -1
        elif sid == "GS":
            j += 1
            skipping = (i, j) in drop
        if not skipping:
            parts.append(text + d.segment + "\n")
        if sid == "GE":
            skipping = False
    return "".join(parts) if any(p.startswith("GS") for p in parts) else ""


def validate(raw: bytes) -> list[Issue]:
    """pyx12's 5010 validation as a list of issues (empty: valid). Never raises."""
    try:
        return validate_report(raw).issues()
    except Exception as exc:  # a validator returns issues, it does not raise (DESIGN.md §6.3)
        return [Issue("error", f"validation failed: {type(exc).__name__}: {exc}", "", "")]
