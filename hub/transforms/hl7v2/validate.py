"""Validation of HL7 v2 messages: :func:`check_basic` (cheap, header only) and :func:`validate` (hl7apy, strict).

Both return a list of :class:`hub.errors.Issue` and never raise (DESIGN.md §6.3: parse, validate and map are
separate steps with separate errors). Issue codes come from HL7 table 0357 so a channel can put them in an ACK.

:func:`validate` uses hl7apy for its knowledge of every version's message structures, segments, datatypes and
tables (2.1–2.8.2). It costs ~10–80 ms per message, so channels call it only when they ask for validation.
Details worth knowing:

* hl7apy's :class:`~hl7apy.validation.Validator` collects every problem but raises only the first one; to report
  all of them, the two exception classes it instantiates are replaced (once, at first use) in
  ``hl7apy.validation`` by subclasses that also record themselves in a thread-local list while :func:`validate`
  runs. They remain subclasses, so other users of hl7apy see the same behaviour as before.
* When MSH-9.3 (message structure) is empty — common before v2.3.1 — the structure is looked up from the
  trigger event (table 0354: ``ADT^A04`` → ``ADT_A01``, ``ADT^A40`` → ``ADT_A39`` …).
* Segments are put into the structure's groups here (:func:`_place_segments`), not by hl7apy's group finder: that
  one puts a segment into the first group that may hold it wherever the message is, so the TQ1 after RXE in an
  RDE^O11 landed in the TIMING group that comes *before* RXE and the required TIMING_ENCODED was reported missing
  on every well-formed pharmacy order. The walk here reads the structure in order, as HAPI does.
* Issue messages name the element, never its value (values can be PHI).
"""

from __future__ import annotations

import re
import threading
from typing import Any

from hub.errors import Issue

from .er7 import Hl7Message
from .paths import parse_path

__all__ = ["validate", "check_basic", "KNOWN_VERSIONS", "structure_for"]

KNOWN_VERSIONS = (
    "2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2", "2.9",
)  # fmt: skip

# HL7 table 0354 (message structure) for the trigger events whose structure is not simply TYPE_TRIGGER.
_STRUCTURES: dict[str, str] = {}
for _structure, _events in {
    "ADT_A01": "A01 A04 A08 A13",
    "ADT_A05": "A05 A14 A28 A31",
    "ADT_A06": "A06 A07",
    "ADT_A09": "A09 A10 A11",
    "ADT_A21": "A21 A22 A23 A25 A26 A27 A29 A32 A33",
    "ADT_A30": "A30 A34 A35 A36 A46 A47 A48 A49",
    "ADT_A39": "A39 A40 A41 A42",
    "ADT_A43": "A43 A44",
    "ADT_A50": "A50 A51",
    "ADT_A52": "A52 A53",
    "ADT_A54": "A54 A55",
    "ADT_A61": "A61 A62",
}.items():
    for _event in _events.split():
        _STRUCTURES[f"ADT^{_event}"] = _structure
for _event in ["S12", "S13", "S14", "S15", "S16", "S17", "S18", "S19", "S20", "S21", "S22", "S23", "S24", "S26"]:
    _STRUCTURES[f"SIU^{_event}"] = "SIU_S12"
for _event in ["T01", "T03", "T05", "T07", "T09", "T11"]:
    _STRUCTURES[f"MDM^{_event}"] = "MDM_T01"
for _event in ["T02", "T04", "T06", "T08", "T10"]:
    _STRUCTURES[f"MDM^{_event}"] = "MDM_T02"
_STRUCTURES["RDE^O25"] = "RDE_O11"
_STRUCTURES["ORU^R30"] = "ORU_R30"
_STRUCTURES["ORU^R31"] = "ORU_R30"
_STRUCTURES["ORU^R32"] = "ORU_R30"


def structure_for(message_type: str | None, trigger: str | None, declared: str | None = None) -> str | None:
    """The message structure: MSH-9.3 when sent, else table 0354 from type and trigger, else ``TYPE_TRIGGER``."""
    if declared:
        return declared
    if not message_type:
        return None
    if message_type == "ACK":
        return "ACK"
    if not trigger:
        return None
    return _STRUCTURES.get(f"{message_type}^{trigger}", f"{message_type}_{trigger}")


# ---------------------------------------------------------------------- cheap checks
_CONTROL_ID_MAX = 20  # MSH-10 length before v2.7 (199 from v2.7)
_PROCESSING_IDS = {"P", "T", "D"}
_TYPE, _TRIGGER, _CONTROL, _VERSION, _PROCESSING = (
    parse_path(p) for p in ("MSH-9.1", "MSH-9.2", "MSH-10", "MSH-12.1", "MSH-11.1")
)


def check_basic(msg: Hl7Message) -> list[Issue]:
    """Header checks that need no hl7apy (microseconds): MSH-9, MSH-10, MSH-12 valued, version known, MSH-11 in
    table 0103. MSH is always present in a parsed message (parse() refuses input without it)."""
    issues: list[Issue] = []
    msh = msg.segment("MSH")
    if msh is None:  # pragma: no cover - parse() guarantees MSH
        return [Issue("error", "MSH segment missing", "MSH", "100")]
    read = msh._read_first  # pre-parsed paths: this runs for every message a source takes
    mtype = read(_TYPE)
    if not mtype:
        issues.append(Issue("error", "message type (MSH-9.1) is missing", "MSH-9.1", "101"))
    elif not read(_TRIGGER) and mtype != "ACK":
        issues.append(Issue("warning", "trigger event (MSH-9.2) is missing", "MSH-9.2", "101"))
    control_id = read(_CONTROL)
    if not control_id:
        issues.append(Issue("error", "message control id (MSH-10) is missing", "MSH-10", "101"))
    version = read(_VERSION)
    if not version:
        issues.append(Issue("error", "version id (MSH-12) is missing", "MSH-12", "101"))
    elif version not in KNOWN_VERSIONS:
        issues.append(Issue("error", f"version id {version!r} is not an HL7 v2 version", "MSH-12", "203"))
    elif control_id and len(control_id) > _CONTROL_ID_MAX and version < "2.7":
        issues.append(
            Issue("warning", f"MSH-10 is longer than {_CONTROL_ID_MAX} characters (allowed from v2.7)", "MSH-10", "102")
        )
    pid = read(_PROCESSING)
    if not pid:
        issues.append(Issue("error", "processing id (MSH-11) is missing", "MSH-11", "101"))
    elif pid not in _PROCESSING_IDS:
        issues.append(Issue("error", "processing id (MSH-11) is not in table 0103 (P, T, D)", "MSH-11", "202"))
    return issues


# ---------------------------------------------------------------------- hl7apy
_local = threading.local()
_installed = False
_install_lock = threading.Lock()


def _install_recorders() -> None:
    """Make hl7apy's validator record every error/warning it creates (see the module docstring)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        import hl7apy.validation as hv

        base_error, base_warning = hv.ValidationError, hv.ValidationWarning

        class _RecordedError(base_error):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any) -> None:
                super().__init__(*args)
                sink = getattr(_local, "errors", None)
                if sink is not None:
                    sink.append(self)

        class _RecordedWarning(base_warning):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any) -> None:
                super().__init__(*args)
                sink = getattr(_local, "warnings", None)
                if sink is not None:
                    sink.append(self)

        hv.ValidationError = _RecordedError
        hv.ValidationWarning = _RecordedWarning
        _installed = True


_FIELD_RE = re.compile(r"\b([A-Z][A-Z0-9]{2})_(\d+)((?:\.[A-Z][A-Z0-9]*_\d+)*)")
_SUB_RE = re.compile(r"_(\d+)")
_MISSING_RE = re.compile(r"Missing required child [A-Za-z0-9_]+\.([A-Za-z0-9_]+)")
_LIMIT_RE = re.compile(r"Child limit exceeded [A-Za-z0-9_]+\.([A-Za-z0-9_]+)")
_TABLE_RE = re.compile(r"Value .* not in table (\w+) in element ")
_LENGTH_RE = re.compile(r"Exceeded max length \((\d+)\) of ")
_DATATYPE_RE = re.compile(r"Datatype \S+ is not correct for ")
_INVALID_CHILDREN_RE = re.compile(r"Invalid children detected for <(\w+) ([A-Za-z0-9_]+)[^>]*>: \[(.*)\]")
_UNKNOWN_RE = re.compile(r"Unknown element found: .*?<\w+ ?([A-Za-z0-9_]*)>")


def _location(text: str) -> str:
    """An HL7 path from hl7apy element names: ``PID_10.CE_3`` → ``PID-10.3``; ``ADT_A01.EVN`` → ``EVN``."""
    m = _FIELD_RE.search(text)
    if m and not re.fullmatch(r"[A-Z]{3}_[A-Z]\d\d", f"{m.group(1)}_{m.group(2)}"):
        path = f"{m.group(1)}-{int(m.group(2))}"
        for _i, n in enumerate(_SUB_RE.findall(m.group(3) or "")[:2]):
            path += f".{int(n)}"
        return path
    return ""


def _path_order(path: str) -> tuple[str, int]:
    """``PID-10`` sorts after ``PID-9``."""
    seg, _, num = path.partition("-")
    return (seg, int(num) if num.isdigit() else 0)


def _child_location(name: str) -> str:
    """``PID_3`` → ``PID-3``; ``EVN`` → ``EVN``; a group name (``ADT_A01_PROCEDURE``) → that name."""
    m = re.fullmatch(r"([A-Z][A-Z0-9]{2})_(\d+)", name)
    if m:
        return f"{m.group(1)}-{int(m.group(2))}"
    return name


def _issue_from(exc: Exception, severity: str) -> Issue:
    text = str(exc)
    m = _MISSING_RE.search(text)
    if m:
        where = _child_location(m.group(1))
        kind = "field" if "-" in where else ("segment" if len(where) == 3 else "segment group")
        return Issue(severity, f"required {kind} {where} is missing", where, "101" if kind == "field" else "100")
    m = _LIMIT_RE.search(text)
    if m:
        where = _child_location(m.group(1))
        return Issue(severity, f"{where} repeats more often than the structure allows", where, "100")
    m = _TABLE_RE.search(text)
    if m:
        where = _location(text[m.end() :])
        table = m.group(1)
        return Issue(severity, f"value not in table {table}", where, "103")
    m = _LENGTH_RE.search(text)
    if m:
        where = _location(text[m.end() :])
        return Issue(severity, f"value longer than {m.group(1)} characters", where, "102")
    m = _DATATYPE_RE.search(text)
    if m:
        where = _location(text[m.end() :])
        return Issue(severity, "wrong data type (the value has a structure its data type does not have)", where, "102")
    m = _INVALID_CHILDREN_RE.search(text)
    if m:
        kind, owner = m.group(1), m.group(2)
        names = [n.strip(" '\"") for n in m.group(3).split(",")]
        # hl7apy lists them from a set: sorted here, so the issue (and an ACK's ERR location) is the same every run
        known = sorted((_child_location(n) for n in names if n and n != "None"), key=_path_order)
        where = _child_location(owner)
        if known:
            return Issue(severity, f"{', '.join(known)} not allowed in {where}", known[0], "100")
        if kind == "Segment":
            return Issue(severity, f"{where} has more fields than the segment defines in this version", where, "102")
        return Issue(severity, f"{where} has more components than its data type allows", where, "102")
    m = _UNKNOWN_RE.search(text)
    if m:
        return Issue(
            severity,
            "unknown element (segment or field not defined for this version/structure)",
            _child_location(m.group(1)),
            "100",
        )
    # Anything else: keep hl7apy's wording but never let a value through (hl7apy quotes values in a few places).
    return Issue(severity, re.sub(r"Value .*? (not|is)", r"a value \1", text)[:300], _location(text), "102")


_MISSING_PARENT_RE = re.compile(r"Missing required child ([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)")


def _fold_choices(errors: list[Exception], version: str, issues: list[Issue]) -> list[Exception]:
    """hl7apy checks a *choice* group (ORM_O01's OBR|RQD|RQ1|RXO|ODS|ODT) like a sequence and reports every
    alternative that is absent as missing. Drop those reports when one alternative is present; when none is,
    report one issue naming the alternatives."""
    import hl7apy

    missing: dict[str, list[Exception]] = {}
    kept: list[Exception] = []
    for exc in errors:
        m = _MISSING_PARENT_RE.search(str(exc))
        if m:
            parent = m.group(1)
            try:
                ref = hl7apy.load_reference(parent, "Group", version)
            except Exception:
                ref = None
            if ref is not None and ref[0] == "choice":
                missing.setdefault(parent, []).append(exc)
                continue
        kept.append(exc)
    for parent, found in missing.items():
        alternatives = [c[0] for c in hl7apy.load_reference(parent, "Group", version)[1]]
        if len(found) >= len(alternatives):
            names = "|".join(alternatives)
            issues.append(Issue("error", f"one of the segments {names} is required", alternatives[0], "100"))
    return kept


def _hl7apy_parse(text: str, structure: str | None, version: str, enc: dict[str, str]) -> tuple[Any, list[Issue]]:
    """hl7apy's parse_message, with the structure chosen here (it has no table 0354 of its own) and the segments
    put into groups by :func:`_place_segments`; also the issues of segments that fit nowhere."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.core import Message
    from hl7apy.exceptions import InvalidName
    from hl7apy.parser import parse_segments

    level = VALIDATION_LEVEL.TOLERANT  # collect everything; the Validator below applies the strict rules
    try:
        m = Message(name=structure, version=version, validation_level=level, encoding_chars=enc)
    except InvalidName:  # a placeholder structure (QBP_Qnn, MFN_Znn): no groups to place segments in
        m = Message(version=version, validation_level=level, encoding_chars=enc)
        m.children = parse_segments(text, version, enc, level, find_groups=False)
        return m, []
    lines = [line.strip() for line in text.split(enc["SEGMENT"]) if line.strip()]
    m.children, issues = _place_segments(lines, m.reference, structure or m.name, version, enc, level)
    return m, issues


class _Frame:
    """One open group (or the message) while segments are placed: its structure, the hl7apy element, the index
    of the structure child used last and how many times in a row it was used."""

    __slots__ = ("children", "count", "element", "pos", "starts")

    def __init__(self, reference: Any, element: Any) -> None:
        self.children = reference[1]  # (name, reference, (min, max), "SEG" | "GRP") in the structure's order
        self.starts = [_starts(c) for c in self.children]
        self.element = element
        self.pos = -1
        self.count = 0


def _starts(child: Any) -> set[str]:
    """The segments an instance of a structure child can begin with (a group: up to its first required child)."""
    name, ref, _, kind = child
    if kind == "SEG":
        return {name}
    first: set[str] = set()
    for c in ref[1]:
        first |= _starts(c)
        if c[2][0] > 0:
            break
    return first


def _place_segments(
    lines: list[str], reference: Any, structure: str, version: str, enc: dict[str, str], level: int
) -> tuple[list[Any], list[Issue]]:
    """Parse ``lines`` into hl7apy segments inside the groups of the structure ``reference``, in structure order.

    For each segment, from the innermost open group outwards: the first structure child from the one used last
    onward that may take it — the same segment again while it may repeat, a later segment, or a group that can
    begin with it (opened, and the segment placed inside) — wins; groups inside it are closed. Required children
    that were skipped are left for the Validator to report. A segment that fits nowhere is left out of the tree:
    silently for a Z-segment (site-defined, allowed anywhere), as an error (0357 code 100, segment sequence
    error) for any other — it is unknown to the structure, or out of order. hl7apy's own finder dropped both
    without a word.
    """
    from hl7apy.core import Group
    from hl7apy.parser import parse_segment

    out: list[Any] = []
    issues: list[Issue] = []
    stack = [_Frame(reference, None)]

    def add(frame: _Frame, element: Any) -> None:
        if frame.element is None:
            out.append(element)
        else:
            frame.element.add(element)

    previous = ""
    for line in lines:
        name = line[:3]
        placed = False
        for depth in range(len(stack) - 1, -1, -1):
            frame = stack[depth]
            for i in range(max(frame.pos, 0), len(frame.children)):
                child = frame.children[i]
                again = i == frame.pos
                limit = child[2][1]
                if name not in frame.starts[i] or (again and limit != -1 and frame.count >= limit):
                    continue
                del stack[depth + 1 :]
                frame.count = frame.count + 1 if again else 1
                frame.pos = i
                while child[3] == "GRP":  # open the group (and the groups it begins with) down to the segment
                    group = Group(child[0], version=version, reference=child[1], validation_level=level)
                    add(frame, group)
                    frame = _Frame(child[1], group)
                    stack.append(frame)
                    j = next(j for j, first in enumerate(frame.starts) if name in first)  # there is one: see _starts
                    frame.pos, frame.count, child = j, 1, frame.children[j]
                add(frame, parse_segment(line, version, enc, level, child[1]))
                placed = True
                break
            if placed:
                break
        if not placed and not name.startswith("Z"):
            where = f"after {previous}" if previous else "first"
            issues.append(
                Issue("error", f"segment {name} is not expected here ({where}) in {structure} v{version}", name, "100")
            )
        previous = name
    return out, issues


def validate(msg: Hl7Message, *, version: str | None = None) -> list[Issue]:
    """Strict structure, datatype, cardinality and table validation with hl7apy, for ``version`` (default MSH-12).

    Returns every problem as an :class:`Issue` (errors for structure/cardinality/datatype, warnings for table
    values and lengths, as hl7apy grades them); ``[]`` means valid. Never raises: hl7apy's own failures
    (unsupported version, unknown structure, unreadable content) become Issues too. Versions hl7apy does not
    know (outside 2.1–2.8.2) give one warning and no further checks.
    """
    try:
        return _validate(msg, version)
    except Exception as exc:
        return [Issue("error", f"validation failed: {type(exc).__name__}", "", "207")]


def _validate(msg: Hl7Message, version: str | None) -> list[Issue]:
    import hl7apy
    from hl7apy.exceptions import ChildNotFound, HL7apyException

    issues: list[Issue] = []
    declared = msg.get("MSH-12.1")
    version = version or declared
    if not version:
        return [
            Issue("error", "version id (MSH-12) is missing: cannot choose the rules to validate with", "MSH-12", "101")
        ]
    if version not in hl7apy.SUPPORTED_LIBRARIES:
        return [
            Issue(
                "warning",
                f"version {version!r} is not supported by the validator (2.1–2.8.2); not validated",
                "MSH-12",
                "203",
            )
        ]

    enc = msg.enc
    msh2 = enc.msh2
    if enc.truncation and version < "2.7":
        issues.append(
            Issue("warning", "MSH-2 has a 5th (truncation) character, defined only from v2.7", "MSH-2", "102")
        )
        msh2 = msh2[:4]
    if len(msh2) != 4 and not (len(msh2) == 5 and version >= "2.7"):
        issues.append(Issue("error", "MSH-2 must hold 4 encoding characters", "MSH-2", "102"))
        return issues

    work = msg
    if version != declared or msh2 != enc.msh2:
        work = msg.copy()
        if version != declared:
            work.set("MSH-12.1", version)
    text = work.to_text("\r")
    if msh2 != enc.msh2:
        text = "MSH" + enc.field + msh2 + text[3 + 1 + len(enc.msh2) :]
    enc_dict = {
        "FIELD": enc.field,
        "COMPONENT": enc.component,
        "REPETITION": enc.repetition,
        "ESCAPE": enc.escape,
        "SUBCOMPONENT": enc.subcomponent,
        "SEGMENT": "\r",
        "GROUP": "\r",
    }
    if len(msh2) == 5:
        enc_dict["TRUNCATION"] = enc.truncation

    structure = structure_for(msg.get("MSH-9.1"), msg.get("MSH-9.2"), msg.get("MSH-9.3"))
    if not structure:
        issues.append(Issue("error", "message type (MSH-9) is missing: cannot choose a structure", "MSH-9", "101"))
        return issues
    try:
        hl7apy.load_reference(structure, "Message", version)
    except (ChildNotFound, KeyError):
        issues.append(
            Issue(
                "warning",
                f"message structure {structure} is not defined in v{version}; structure not validated",
                "MSH-9",
                "200",
            )
        )
        return issues

    _install_recorders()
    from hl7apy.validation import Validator

    _local.errors, _local.warnings = [], []
    try:
        try:
            parsed, misplaced = _hl7apy_parse(text, structure, version, enc_dict)
            issues.extend(misplaced)
            Validator.validate(parsed)
        except HL7apyException as exc:
            if not _local.errors and not _local.warnings:
                issues.append(_issue_from(exc, "error"))
        errors, warnings = _local.errors, _local.warnings
    finally:
        _local.errors = _local.warnings = None
    errors = _fold_choices(errors, version, issues)
    seen: set[tuple[str, str, str]] = set()
    for severity, found in (("error", errors), ("warning", warnings)):
        for err in found:
            issue = _issue_from(err, severity)
            key = (issue.severity, issue.message, issue.location)
            if key not in seen:
                seen.add(key)
                issues.append(issue)
    return issues
