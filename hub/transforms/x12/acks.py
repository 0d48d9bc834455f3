"""X12 acknowledgements: 999 and TA1 for inbound files; reading 999 and 277CA from the clearinghouse.

* :func:`make_999` — one 999 (005010X231A1) per functional group received, from pyx12's validation
  (:func:`~hub.transforms.x12.validate.validate_report`): AK1, AK2 per transaction, IK3 per segment in error
  (with the loop id), IK4 per element in error (IK403 code, IK404 copy of the bad value), IK5 and AK9.
  ``A`` accepted, ``E`` accepted with errors (only *non-fatal* codes, see :data:`DEFAULT_NONFATAL`), ``R``
  rejected; AK9 ``P`` when some transactions of a group were accepted and some not.
* :func:`make_ta1` — a TA1 interchange acknowledgement from the hub's own envelope checks
  (:func:`check_interchanges`: ISA element values, ISA/IEA control numbers, group count, premature end).
* :func:`read_999` / :func:`read_277ca` — the clearinghouse's answers as :class:`AckRecord` lists, for the
  engine to update claim status (999: per ST02 of the 837; 277CA: per patient control number CLM01).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from hub.errors import MappingError, X12ParseError

from .document import tokenize_text
from .loops import SPEC_277CA, SPEC_999, LoopTracker
from .partners import ControlNumbers, Partner, get_partner
from .reader import ISA_ELEMENT_WIDTHS, Delimiters, Segment, SegmentReader, read_isa_header
from .validate import AK9_CODES, IK3_CODES, IK4_CODES, IK5_CODES, TA1_CODES, ValidationReport, validate_report
from .writer import FunctionalGroup, SegmentWriter, TransactionBody, delimiters_of, write_interchange

__all__ = [
    "make_999",
    "make_ta1",
    "check_interchanges",
    "InterchangeCheck",
    "read_999",
    "read_277ca",
    "AckRecord",
    "DEFAULT_NONFATAL",
    "TA1_ACCEPT_WITH_ERRORS",
    "CLAIM_STATUS_CATEGORIES",
]

# Error codes that still let a transaction be accepted ("E"): the implementation-guide-only ones.
DEFAULT_NONFATAL: frozenset[str] = frozenset({"IK3:I4", "IK3:I9", "IK4:I10", "IK4:I12", "IK4:I13", "IK4:I6", "IK4:I9"})
# TA1 note codes answered with TA104 = E (the interchange is taken; the sender must not resend it).
TA1_ACCEPT_WITH_ERRORS: frozenset[str] = frozenset({"021"})
VERSION_999 = "005010X231A1"


def _clean(value: str, d: Delimiters, limit: int = 99) -> str:
    """A bad value copied into IK404 must not carry delimiters of the 999 itself."""
    out = "".join(" " if ch in (d.element, d.segment, d.component, d.repetition) else ch for ch in value or "")
    return out.strip()[:limit]


_CONTAINER_CODES = frozenset({"IK3:8", "IK5:5", "IK5:I5"})  # "something inside is wrong": decided by the inside


def _status(codes: list[str], nonfatal: Collection[str]) -> str:
    """IK501: A without errors, E when every real error is non-fatal, R otherwise."""
    if not codes:
        return "A"
    real = [c for c in codes if c not in _CONTAINER_CODES]
    if real and all(c in nonfatal for c in real):
        return "E"
    return "R"


def make_999(
    raw: bytes,
    numbers: ControlNumbers,
    partner: Partner | str,
    *,
    now: datetime | None = None,
    nonfatal: Collection[str] = DEFAULT_NONFATAL,
    report: ValidationReport | None = None,
) -> bytes:
    """A 999 acknowledging every functional group of ``raw``.

    Addressed back to the inbound file's sender (its ISA/GS ids swapped) with the partner's delimiters and
    control numbers from ``numbers`` under the partner's name. ``X12ParseError`` when ``raw`` cannot be read at
    all — answer that with :func:`make_ta1`.
    """
    p = get_partner(partner)
    report = report or validate_report(raw)
    if report.fatal is not None:
        raise X12ParseError(
            f"cannot acknowledge with a 999: {report.fatal}", code=report.fatal.code, location=report.fatal.location
        )
    if not report.interchanges or not any(isa.groups for isa in report.interchanges):
        raise X12ParseError(
            "cannot acknowledge with a 999: the file has no functional group", code="024", location="GS"
        )
    if all(g.functional_id == "FA" for isa in report.interchanges for g in isa.groups):
        raise MappingError("the file holds only acknowledgements (999/997, GS01 FA): they are not acknowledged")
    d = delimiters_of(p)
    group = FunctionalGroup("FA", VERSION_999)
    first = report.interchanges[0]
    inbound_gs = _first_gs(raw)
    for isa in report.interchanges:
        for g in isa.groups:
            if g.functional_id == "FA":
                continue  # acknowledgements are not acknowledged
            w = SegmentWriter(d)
            w.segment("AK1", g.functional_id, g.control_number, g.version or None)
            accepted = 0
            statuses = []
            for t in g.transactions:
                w.segment("AK2", t.set_id, t.control_number, t.version or None)
                for s in t.segments[:99]:
                    loop = s.loop[:4] if s.loop else None
                    seg_codes = [c for c, _, _ in s.codes if c in IK3_CODES] or (["8"] if s.elements else [])
                    for code in dict.fromkeys(seg_codes):
                        w.segment("IK3", s.segment_id or "UNK", str(max(s.position, 1)), loop, code)
                        if code != "8":
                            continue
                        for e in s.elements:
                            if e.code not in IK4_CODES:
                                continue
                            pos = [str(e.position)]
                            if e.component or e.repetition:
                                pos.append(str(e.component or ""))
                            if e.repetition:
                                pos.append(str(e.repetition))
                            w.segment("IK4", pos, e.reference or None, e.code, _clean(e.value or "", d) or None)
                ik5_codes = [c for c, _ in t.errors if c in IK5_CODES]
                status = _status(t.codes(), nonfatal)
                if status == "R" and not ik5_codes:
                    ik5_codes = ["5"]
                if status == "E":
                    ik5_codes = [c for c in ik5_codes if c != "5"] or ["I5"]
                w.segment("IK5", status, *list(dict.fromkeys(ik5_codes))[:5])
                statuses.append(status)
                if status in ("A", "E"):
                    accepted += 1
            ak9_codes = [c for c, _ in g.errors][:5]
            if ak9_codes or not statuses or accepted == 0:
                ak9 = "R"
            elif accepted < len(statuses):
                ak9 = "P"
            elif "E" in statuses:
                ak9 = "E"
            else:
                ak9 = "A"
            declared = g.declared_count or len(g.transactions)
            w.segment(
                "AK9", ak9, str(declared), str(g.received_count or len(g.transactions)), str(accepted), *ak9_codes
            )
            group.transactions.append(TransactionBody("999", w.parts, VERSION_999))
    return write_interchange(
        p,
        numbers,
        [group],
        now=now,
        sender=(first.receiver[0], first.receiver[1]),
        receiver=(first.sender[0], first.sender[1]),
        gs_codes=(inbound_gs[1], inbound_gs[0]) if inbound_gs else None,
        usage=first.usage if first.usage in ("T", "P") else None,
    )


def _first_gs(raw: bytes) -> tuple[str, str] | None:
    try:
        _, tokens = tokenize_text(raw.decode("utf-8", "surrogateescape"))
    except X12ParseError:
        return None
    for text, _, d in tokens:
        parts = text.split(d.element)
        if parts[0] == "GS" and len(parts) > 3:
            return parts[2], parts[3]
    return None


# --- TA1 -------------------------------------------------------------------------------------------------
_ISA_QUALIFIERS = {"01", "14", "20", "27", "28", "29", "30", "33", "ZZ"}


@dataclass
class InterchangeCheck:
    """The envelope check of one interchange: TA1 data plus every note code found (first one goes in TA105)."""

    control_number: str
    date: str
    time: str
    sender: tuple[str, str]
    receiver: tuple[str, str]
    usage: str
    ack_requested: bool
    codes: list[tuple[str, str]] = field(default_factory=list)

    @property
    def status(self) -> str:
        if not self.codes:
            return "A"
        if all(c in TA1_ACCEPT_WITH_ERRORS for c, _ in self.codes):
            return "E"
        return "R"

    @property
    def note_code(self) -> str:
        return self.codes[0][0] if self.codes else "000"


def _valid_date(yymmdd: str) -> bool:
    try:
        datetime.strptime(yymmdd, "%y%m%d")
        return True
    except ValueError:
        return False


def _valid_time(hhmm: str) -> bool:
    return bool(re.fullmatch(r"([01]\d|2[0-3])[0-5]\d", hhmm))


def _check_isa_fields(f: list[str], chk: InterchangeCheck) -> None:
    def bad(code: str, msg: str) -> None:
        chk.codes.append((code, f"{TA1_CODES[code]}: {msg}"))

    widths = dict(enumerate(ISA_ELEMENT_WIDTHS, start=1))
    if f[1] not in ("00", "03"):
        bad("010", f"ISA01 {f[1]!r}")
    if len(f[2]) != widths[2]:
        bad("011", f"ISA02 is {len(f[2])} characters, not 10")
    if f[3] not in ("00", "01"):
        bad("012", f"ISA03 {f[3]!r}")
    if len(f[4]) != widths[4]:
        bad("013", f"ISA04 is {len(f[4])} characters, not 10")
    if f[5] not in _ISA_QUALIFIERS:
        bad("005", f"ISA05 {f[5]!r}")
    if len(f[6]) != 15 or not f[6].strip():
        bad("006", f"ISA06 {f[6]!r} must be 15 characters, not blank")
    if f[7] not in _ISA_QUALIFIERS:
        bad("007", f"ISA07 {f[7]!r}")
    if len(f[8]) != 15 or not f[8].strip():
        bad("008", f"ISA08 {f[8]!r} must be 15 characters, not blank")
    if not _valid_date(f[9]):
        bad("014", f"ISA09 {f[9]!r}")
    if not _valid_time(f[10]):
        bad("015", f"ISA10 {f[10]!r}")
    if f[12] not in ("00501", "00401"):
        bad("017", f"ISA12 {f[12]!r} (the hub reads 00501)")
    if not re.fullmatch(r"\d{9}", f[13]):
        bad("018", f"ISA13 {f[13]!r} must be 9 digits")
    if f[14] not in ("0", "1"):
        bad("019", f"ISA14 {f[14]!r}")
    if f[15] not in ("T", "P"):
        bad("020", f"ISA15 {f[15]!r}")
    if len(f[16]) != 1:
        bad("027", f"ISA16 {f[16]!r}")


def check_interchanges(raw: bytes) -> list[InterchangeCheck]:
    """Check every interchange's envelope (tolerant: a wrong-width ISA is reported, not fatal).

    ``X12ParseError`` only when there is no ISA to answer to.
    """
    text = raw.decode("utf-8", "surrogateescape").lstrip("\ufeff \r\n\t")
    if not text.startswith("ISA"):
        raise X12ParseError("no ISA segment: nothing to acknowledge with a TA1", code="022", location="ISA")
    checks: list[InterchangeCheck] = []
    seen: set[str] = set()
    pos = 0
    while True:
        start = text.find("ISA", pos)
        if start < 0:
            break
        try:
            d = read_isa_header(text[start : start + 200], strict=False)
        except X12ParseError as exc:
            if not checks:
                raise
            checks[-1].codes.append((exc.code or "024", str(exc)))
            break
        end_isa = text.find(d.segment, start)
        fields = text[start:end_isa].split(d.element)
        if len(fields) < 17:
            raise X12ParseError("ISA segment does not have 16 elements", code="022", location="ISA")
        chk = InterchangeCheck(
            control_number=fields[13],
            date=fields[9],
            time=fields[10],
            sender=(fields[5], fields[6].strip()),
            receiver=(fields[7], fields[8].strip()),
            usage=fields[15],
            ack_requested=fields[14] == "1",
        )
        _check_isa_fields(fields, chk)
        if fields[13] in seen:
            chk.codes.append(("025", f"{TA1_CODES['025']}: {fields[13]}"))
        seen.add(fields[13])
        checks.append(chk)
        # walk the segments of this interchange
        groups = 0
        open_gs = False
        iea: list[str] | None = None
        p = end_isa + 1
        while True:
            while p < len(text) and text[p] in " \r\n\t":
                p += 1
            if p >= len(text):
                break
            e = text.find(d.segment, p)
            seg_text = text[p:] if e < 0 else text[p:e]
            p = len(text) if e < 0 else e + 1
            sid = seg_text.split(d.element, 1)[0]
            if sid == "ISA":
                p -= len(seg_text) + 1
                break
            if sid == "GS":
                if open_gs:
                    chk.codes.append(("024", f"{TA1_CODES['024']}: GS before the GE of the previous group"))
                groups += 1
                open_gs = True
            elif sid == "GE":
                open_gs = False
            elif sid == "IEA":
                iea = seg_text.split(d.element)
                break
        pos = p
        if iea is None:
            chk.codes.append(("023", f"{TA1_CODES['023']}: no IEA for interchange {fields[13]}"))
            break
        if open_gs:
            chk.codes.append(("024", f"{TA1_CODES['024']}: a group is not closed by GE before the IEA"))
        if len(iea) < 3 or iea[2] != fields[13]:
            chk.codes.append(
                ("001", f"{TA1_CODES['001']}: ISA13 {fields[13]} / IEA02 {iea[2] if len(iea) > 2 else ''}")
            )
        if len(iea) < 2 or iea[1] != str(groups):
            chk.codes.append(
                ("021", f"{TA1_CODES['021']}: IEA01 {iea[1] if len(iea) > 1 else ''}, found {groups} group(s)")
            )
        if pos >= len(text):
            break
    return checks


def make_ta1(
    raw: bytes,
    numbers: ControlNumbers,
    partner: Partner | str,
    *,
    now: datetime | None = None,
    checks: list[InterchangeCheck] | None = None,
) -> bytes:
    """A TA1 interchange (ISA, one TA1 per inbound interchange, IEA with no groups) for ``raw``.

    TA104 is ``A`` (no envelope problem), ``E`` (accepted with noted errors, :data:`TA1_ACCEPT_WITH_ERRORS`) or
    ``R``; TA105 the first note code. ``X12ParseError`` when there is no ISA at all.
    """
    p = get_partner(partner)
    checks = checks if checks is not None else check_interchanges(raw)
    d = delimiters_of(p)
    w = SegmentWriter(d)
    for chk in checks:
        date_ = chk.date if _valid_date(chk.date) else (now or datetime.now()).strftime("%y%m%d")
        time_ = chk.time if _valid_time(chk.time) else (now or datetime.now()).strftime("%H%M")
        control = chk.control_number if re.fullmatch(r"\d{9}", chk.control_number) else "000000000"
        w.segment("TA1", control, date_, time_, chk.status, chk.note_code)
    first = checks[0]
    usable = (
        first.sender[0] in _ISA_QUALIFIERS
        and 0 < len(first.sender[1]) <= 15
        and first.receiver[0] in _ISA_QUALIFIERS
        and 0 < len(first.receiver[1]) <= 15
    )
    return write_interchange(
        p,
        numbers,
        [],
        now=now,
        sender=first.receiver if usable else None,
        receiver=first.sender if usable else None,
        usage=first.usage if first.usage in ("T", "P") else None,
        interchange_segments=w.parts,
    )


# --- reading 999 and 277CA -------------------------------------------------------------------------------
@dataclass(frozen=True)
class AckRecord:
    """One acknowledged thing: a transaction (999) or a claim/provider/batch (277CA).

    ``status``: ``accepted`` · ``accepted_with_errors`` · ``rejected`` · ``partially_accepted`` (999 AK9 P) ·
    ``pending`` (277CA categories that are neither accepted nor rejected).
    """

    source: str  # "999" | "277CA"
    level: str  # 999: "transaction" | "group"; 277CA: "claim" | "provider" | "batch"
    status: str
    code: str  # IK501 / AK901 / STC01-1
    st_control: str = ""  # 999: AK202, the ST02 of the acknowledged transaction
    set_id: str = ""  # 999: AK201 (837 …)
    group_control: str = ""  # 999: AK102, the GS06 of the acknowledged group
    patient_control_number: str = ""  # 277CA: 2200D TRN02 (the 837's CLM01)
    payer_claim_number: str = ""  # 277CA: REF*1K
    clearinghouse_trace: str = ""  # 277CA: REF*D9
    provider_id: str = ""  # 277CA: NM109 of the 2100C billing provider
    batch_reference: str = ""  # 277CA: 2200B TRN02 (the 837's BHT03)
    amount: Decimal | None = None  # 277CA: STC04 total claim charge
    status_date: str = ""  # 277CA: STC02
    errors: tuple[str, ...] = ()

    @property
    def error_text(self) -> str:
        return "; ".join(self.errors)


_999_STATUS = {
    "A": "accepted",
    "E": "accepted_with_errors",
    "R": "rejected",
    "M": "rejected",
    "W": "rejected",
    "X": "rejected",
    "P": "partially_accepted",
}


def _segments_of(raw: bytes) -> Iterable[Segment]:
    return SegmentReader(raw)


def read_999(raw: bytes) -> list[AckRecord]:
    """The transactions a 999 (or 997) acknowledges, with their status and error texts."""
    records: list[AckRecord] = []
    group_control = group_id = ""
    st_control = set_id = ""
    errors: list[str] = []
    seg_ctx = ""
    saw_ak2 = False
    tracker: LoopTracker | None = None
    for seg in _segments_of(raw):
        sid = seg.id
        if sid == "ST":
            if seg[1] not in ("999", "997"):
                raise X12ParseError(
                    f"transaction set {seg[1]} is not a 999/997", code="6", location=f"ST02={seg[2]}/ST01"
                )
            tracker = LoopTracker(SPEC_999, strict=True) if seg[1] == "999" else None
            continue
        if tracker is not None and sid != "SE":
            tracker.feed(seg)
        if sid == "AK1":
            group_id, group_control = seg[1], seg[2]
            saw_ak2 = False
        elif sid == "AK2":
            set_id, st_control, errors, saw_ak2 = seg[1], seg[2], [], True
        elif sid in ("IK3", "AK3"):
            loop = f" in loop {seg[3]}" if seg[3] else ""
            seg_ctx = f"{seg[1]} (segment {seg[2]}{loop})"
            if seg[4]:
                errors.append(f"{seg_ctx}: {IK3_CODES.get(seg[4], 'error ' + seg[4])}")
        elif sid in ("IK4", "AK4"):
            pos = seg.components(1)
            ref = seg[1].replace(seg.delimiters.component, "-")
            text = f"{seg_ctx.split(' ')[0]}{int(pos[0]):02d}" if pos[0].isdigit() else ref
            if len(pos) > 1 and pos[1]:
                text += f"-{pos[1]}"
            bad = f" ({seg[4]!r})" if seg[4] else ""
            errors.append(f"{text}: {IK4_CODES.get(seg[3], 'error ' + seg[3])}{bad}")
        elif sid in ("IK5", "AK5"):
            codes = [seg[i] for i in range(2, 7) if seg[i]]
            errors += [IK5_CODES.get(c, f"error {c}") for c in codes if not (c == "5" and errors)]
            records.append(
                AckRecord(
                    "999",
                    "transaction",
                    _999_STATUS.get(seg[1], "rejected"),
                    seg[1],
                    st_control=st_control,
                    set_id=set_id,
                    group_control=group_control,
                    errors=tuple(errors),
                )
            )
        elif sid == "AK9":
            codes = [seg[i] for i in range(5, 10) if seg[i]]
            if not saw_ak2 or codes:
                records.append(
                    AckRecord(
                        "999",
                        "group",
                        _999_STATUS.get(seg[1], "rejected"),
                        seg[1],
                        set_id=group_id,
                        group_control=group_control,
                        errors=tuple(AK9_CODES.get(c, f"error {c}") for c in codes),
                    )
                )
    return records


CLAIM_STATUS_CATEGORIES = {
    "A0": "Acknowledgement/Forwarded",
    "A1": "Acknowledgement/Receipt",
    "A2": "Acknowledgement/Acceptance into adjudication system",
    "A3": "Acknowledgement/Returned as unprocessable claim",
    "A4": "Acknowledgement/Not Found",
    "A5": "Acknowledgement/Split Claim",
    "A6": "Acknowledgement/Rejected for Missing Information",
    "A7": "Acknowledgement/Rejected for Invalid Information",
    "A8": "Acknowledgement/Rejected for relational field in error",
    "DR01": "Data Reporting Acknowledgement/Receipt",
    "E0": "Response not possible - error on submitted request data",
    "E1": "Response not possible - System Status",
}
_ACCEPTED = {"A0", "A1", "A2", "A5", "DR01"}
_REJECTED = {"A3", "A4", "A6", "A7", "A8", "E0"}
# a few frequent claim status codes (code list 508); others show as "status code N"
CLAIM_STATUS_CODES = {
    "19": "Entity acknowledges receipt of claim/encounter",
    "20": "Accepted for processing",
    "21": "Missing or invalid information",
    "33": "Subscriber and subscriber id not found",
    "116": "Claim submitted to the incorrect payer",
    "145": "Entity's name",
    "164": "Entity's contract/member number",
    "187": "Date(s) of service",
    "254": "Principal diagnosis code",
    "255": "Diagnosis code",
    "400": "Claim is out of balance",
    "454": "Procedure code for services rendered",
    "562": "Entity's National Provider Identifier (NPI)",
}
ENTITY_CODES = {
    "03": "Dependent",
    "1P": "Provider",
    "40": "Receiver",
    "41": "Submitter",
    "71": "Attending Physician",
    "77": "Service Location",
    "82": "Rendering Provider",
    "85": "Billing Provider",
    "DN": "Referring Provider",
    "IL": "Insured or Subscriber",
    "PR": "Payer",
    "QC": "Patient",
}


def _stc_text(seg: Segment, index: int = 1) -> tuple[str, str]:
    """(category, readable text) of one STC composite (STC01, STC10, STC11)."""
    comp = seg.components(index)
    cat = comp[0]
    parts = [f"{cat} {CLAIM_STATUS_CATEGORIES.get(cat, '')}".strip()]
    if len(comp) > 1 and comp[1]:
        parts.append(f"{comp[1]} {CLAIM_STATUS_CODES.get(comp[1], '(status code)')}")
    if len(comp) > 2 and comp[2]:
        parts.append(f"entity {comp[2]} {ENTITY_CODES.get(comp[2], '')}".strip())
    return cat, ": ".join(parts)


def _category_status(cats: list[str], action: list[str]) -> str:
    if any(c in _REJECTED for c in cats) or "U" in action:
        return "rejected"
    if cats and all(c in _ACCEPTED for c in cats):
        return "accepted"
    return "pending"


def read_277ca(raw: bytes) -> list[AckRecord]:
    """Claim acknowledgements of a 277CA (005010X214): one record per claim (2200D), plus provider (2200C)
    and batch (2200B) records when those levels carry a status."""
    records: list[AckRecord] = []
    tracker: LoopTracker | None = None
    cur: dict[str, Any] | None = None  # the level being read: its STC statuses, references, amount
    batch_ref = provider_id = ""

    def flush() -> None:
        nonlocal cur
        if cur is not None and cur["stc"]:
            cats = [c for c, _ in cur["stc"]]
            records.append(
                AckRecord(
                    "277CA",
                    cur["level"],
                    _category_status(cats, cur["action"]),
                    cats[0],
                    patient_control_number=cur.get("pcn", ""),
                    payer_claim_number=cur.get("1K", ""),
                    clearinghouse_trace=cur.get("D9", ""),
                    provider_id=cur.get("provider", provider_id),
                    batch_reference=batch_ref,
                    amount=cur.get("amount"),
                    status_date=cur.get("date", ""),
                    errors=tuple(t for c, t in cur["stc"] if c not in _ACCEPTED) or (),
                )
            )
        cur = None

    for seg in _segments_of(raw):
        sid = seg.id
        if sid == "ST":
            if seg[1] != "277":
                raise X12ParseError(
                    f"transaction set {seg[1]} is not a 277CA", code="6", location=f"ST02={seg[2]}/ST01"
                )
            tracker = LoopTracker(SPEC_277CA, strict=True)
            continue
        if tracker is None:
            continue
        if sid == "SE":
            flush()
            tracker = None
            continue
        loop = tracker.feed(seg)
        if sid == "TRN":
            flush()
            level = {"2200B": "batch", "2200C": "provider", "2200D": "claim"}.get(loop)
            if level == "batch":
                batch_ref = seg[2]
            if level:
                cur = {"level": level, "stc": [], "action": [], "provider": provider_id}
                if level == "claim":
                    cur["pcn"] = seg[2]
                elif level == "provider":
                    cur["trace"] = seg[2]
        elif sid == "NM1" and loop == "2100C":
            flush()
            provider_id = seg[9]
        elif sid == "HL":
            flush()
        elif cur is not None:
            if sid == "STC" and loop in ("2200B", "2200C", "2200D", "2220D"):
                for idx in (1, 10, 11):
                    if seg[idx]:
                        cur["stc"].append(_stc_text(seg, idx))
                if seg[3]:
                    cur["action"].append(seg[3])
                if seg[12]:
                    cur["stc"].append(("", seg[12]))
                if loop != "2220D":
                    cur.setdefault("date", seg[2])
                    if seg[4]:
                        try:
                            cur.setdefault("amount", Decimal(seg[4]))
                        except InvalidOperation:
                            pass
            elif sid == "REF" and seg[1] in ("1K", "D9"):
                cur[seg[1]] = seg[2]
    return records
