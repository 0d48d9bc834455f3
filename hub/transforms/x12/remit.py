"""835 (005010X221A1) remittance: streaming claims, payment-posting rows/CSV, balancing, FHIR EOB.

Streaming: the file is read in chunks (:class:`~hub.transforms.x12.reader.SegmentReader`); one claim (2100 loop
with its 2110 service lines) is held at a time, so a 50 MB remittance with tens of thousands of claims costs a
few MB of memory. Balancing is checked as the file goes (TR3 §1.10.2):

* each service line: ``SVC02 − Σ line CAS = SVC03``;
* each claim: ``CLP03 − (Σ claim CAS + Σ line CAS) = CLP04``;
* each transaction: ``BPR02 = Σ CLP04 − Σ PLB amounts`` (PLB comes after the claims, so this one is known
  at SE).

An unbalanced file is *flagged*, not refused: :class:`RemitRows` / :class:`RemitReader` carry ``issues`` after
iteration; :func:`x12_835_to_csv` raises :class:`~hub.errors.ValidationError` unless told
``on_unbalanced="ignore"``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, BinaryIO, Literal, TextIO

import yaml

from hub.errors import ConfigError, Issue, ValidationError, X12ParseError

from .loops import SPEC_835, LoopTracker
from .reader import DEFAULT_CHUNK_SIZE, Segment, SegmentReader

__all__ = [
    "Adjustment",
    "ProviderAdjustment",
    "RemitLine",
    "RemitClaim",
    "RemitPayment",
    "RemitReader",
    "RemitRows",
    "remit_to_rows",
    "CsvLayout",
    "CsvColumn",
    "load_layout",
    "ROW_FIELDS",
    "DEFAULT_LAYOUT_FILE",
    "write_remit_csv",
    "x12_835_to_csv",
    "remit_to_fhir",
    "CLAIM_STATUS_TEXT",
]

DEFAULT_LAYOUT_FILE = Path(__file__).resolve().parents[3] / "mappings" / "x12" / "835_posting_layout.yaml"
ZERO = Decimal("0")

CLAIM_STATUS_TEXT = {
    "1": "Processed as Primary",
    "2": "Processed as Secondary",
    "3": "Processed as Tertiary",
    "4": "Denied",
    "19": "Processed as Primary, Forwarded to Additional Payer(s)",
    "20": "Processed as Secondary, Forwarded to Additional Payer(s)",
    "21": "Processed as Tertiary, Forwarded to Additional Payer(s)",
    "22": "Reversal of Previous Payment",
    "23": "Not Our Claim, Forwarded to Additional Payer(s)",
    "25": "Predetermination Pricing Only - No Payment",
}
PAYMENT_METHOD_TEXT = {
    "ACH": "Automated Clearing House (ACH)",
    "BOP": "Financial Institution Option",
    "CHK": "Check",
    "FWT": "Federal Reserve Funds/Wire Transfer",
    "NON": "Non-Payment Data",
}


@dataclass(frozen=True)
class Adjustment:
    """One CAS triplet: group (CO, PR, OA, PI, CR), reason code (CARC), amount, quantity."""

    group: str
    reason: str
    amount: Decimal
    quantity: str = ""

    def __str__(self) -> str:
        return f"{self.group}-{self.reason}:{self.amount:.2f}"


@dataclass(frozen=True)
class ProviderAdjustment:
    """One PLB adjustment: a positive amount reduces the payment (e.g. WO overpayment recovery)."""

    provider_id: str
    fiscal_period: str
    reason: str
    reference: str
    amount: Decimal


@dataclass
class RemitPayment:
    """Transaction-level data: BPR, TRN, payer (1000A), payee (1000B), PLB."""

    st_control: str = ""
    handling: str = ""  # BPR01: I remittance+payment, H notification only, …
    amount: Decimal = ZERO  # BPR02
    credit_debit: str = "C"  # BPR03
    method: str = ""  # BPR04: ACH, CHK, FWT, BOP, NON
    payment_date: str = ""  # BPR16 CCYYMMDD
    check_number: str = ""  # TRN02 (check or EFT trace number)
    originator_id: str = ""  # TRN03
    production_date: str = ""  # DTM*405
    payer_name: str = ""
    payer_id: str = ""
    payee_name: str = ""
    payee_id: str = ""
    payee_id_qualifier: str = ""
    provider_adjustments: list[ProviderAdjustment] = field(default_factory=list)
    claims_paid: Decimal = ZERO
    claim_count: int = 0


@dataclass
class RemitLine:
    number: int
    procedure_qualifier: str = ""  # SVC01-1: HC, NU, …
    procedure_code: str = ""
    modifiers: list[str] = field(default_factory=list)
    charge: Decimal = ZERO  # SVC02
    paid: Decimal = ZERO  # SVC03
    revenue_code: str = ""  # SVC04 (or SVC01-2 when NU)
    units: str = ""  # SVC05
    service_date: str = ""
    service_date_end: str = ""
    allowed: Decimal | None = None  # AMT*B6
    control_number: str = ""  # REF*6R
    adjustments: list[Adjustment] = field(default_factory=list)
    remarks: list[str] = field(default_factory=list)  # LQ*HE


@dataclass
class RemitClaim:
    payment: RemitPayment
    patient_control_number: str = ""  # CLP01
    status: str = ""  # CLP02
    charge: Decimal = ZERO  # CLP03
    paid: Decimal = ZERO  # CLP04
    patient_responsibility: Decimal = ZERO  # CLP05
    filing_indicator: str = ""  # CLP06
    payer_claim_number: str = ""  # CLP07
    facility_code: str = ""  # CLP08
    frequency: str = ""  # CLP09
    patient_last: str = ""
    patient_first: str = ""
    patient_id: str = ""  # NM1*QC09
    insured_id: str = ""  # NM1*IL09
    rendering_npi: str = ""  # NM1*82*…*XX
    statement_from: str = ""  # DTM*232
    statement_to: str = ""  # DTM*233
    received_date: str = ""  # DTM*050
    adjustments: list[Adjustment] = field(default_factory=list)  # claim-level CAS
    lines: list[RemitLine] = field(default_factory=list)
    ordinal: int = 0  # segment position of the CLP (for error locations)

    @property
    def status_text(self) -> str:
        return CLAIM_STATUS_TEXT.get(self.status, self.status)

    @property
    def all_adjustments(self) -> list[Adjustment]:
        out = list(self.adjustments)
        for line in self.lines:
            out.extend(line.adjustments)
        return out


def _amount(seg: Segment, index: int, where: str, required: bool = True) -> Decimal:
    el = seg.elements
    text = el[index] if index < len(el) else ""
    if not text:
        if required:
            raise X12ParseError(
                f"{seg.id}{index:02d} is required (segment {seg.ordinal})", location=f"{where}/{seg.id}{index:02d}"
            )
        return ZERO
    try:
        return Decimal(text)
    except InvalidOperation:
        raise X12ParseError(
            f"{seg.id}{index:02d} {text!r} is not a number (segment {seg.ordinal})",
            code="6",
            location=f"{where}/{seg.id}{index:02d}",
        ) from None


def _cas(seg: Segment, where: str) -> list[Adjustment]:
    el = seg.elements + [""] * (21 - len(seg.elements))
    group = el[1]
    out = []
    for i in range(2, 20, 3):
        reason = el[i]
        if not reason:
            if el[i + 1]:
                raise X12ParseError(f"CAS{i:02d} reason code missing before amount", location=f"{where}/CAS{i:02d}")
            continue
        out.append(Adjustment(group, reason, _amount(seg, i + 1, where), el[i + 2]))
    return out


class RemitReader:
    """Iterate the claims of an 835, streaming; ``issues`` (balancing) and ``payments`` fill in as it goes.

    >>> reader = RemitReader(open("remit.835", "rb"))
    >>> for claim in reader:
    ...     post(claim)
    >>> reader.issues      # complete once iteration has finished
    """

    def __init__(
        self,
        source: bytes | BinaryIO | Iterable[bytes],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        strict: bool = True,
    ) -> None:
        self._segments = SegmentReader(source, chunk_size=chunk_size)
        self.strict = strict
        self.issues: list[Issue] = []
        self.payments: list[RemitPayment] = []
        self.claim_count = 0
        self.line_count = 0
        self.finished = False

    def _issue(self, message: str, location: str, code: str = "balance") -> None:
        self.issues.append(Issue("error", message, location, code))

    def _check_claim(self, claim: RemitClaim) -> None:
        where = f"ST02={claim.payment.st_control}/2100[CLP01={claim.patient_control_number}]"
        line_adj = ZERO
        for line in claim.lines:
            adj = sum((a.amount for a in line.adjustments), ZERO)
            line_adj += adj
            if line.charge - adj != line.paid:
                self._issue(
                    f"service line {line.number} ({line.procedure_code}) of claim {claim.patient_control_number} "
                    f"does not balance: charge {line.charge:.2f} - adjustments {adj:.2f} = "
                    f"{line.charge - adj:.2f}, but paid is {line.paid:.2f}",
                    f"{where}/2110[{line.number}]/SVC03",
                )
        claim_adj = sum((a.amount for a in claim.adjustments), ZERO)
        total_adj = claim_adj + line_adj
        if claim.charge - total_adj != claim.paid:
            self._issue(
                f"claim {claim.patient_control_number} does not balance: charge {claim.charge:.2f} - adjustments "
                f"{total_adj:.2f} (claim {claim_adj:.2f} + lines {line_adj:.2f}) = {claim.charge - total_adj:.2f}, "
                f"but paid is {claim.paid:.2f}",
                f"{where}/CLP04",
            )

    def _check_payment(self, payment: RemitPayment) -> None:
        plb = sum((p.amount for p in payment.provider_adjustments), ZERO)
        expected = payment.claims_paid - plb
        paid = -payment.amount if payment.credit_debit == "D" else payment.amount
        if expected != paid:
            self._issue(
                f"payment {payment.check_number} does not balance: BPR02 is {payment.amount:.2f} but the claims paid "
                f"{payment.claims_paid:.2f} less provider adjustments (PLB) {plb:.2f} = {expected:.2f}",
                f"ST02={payment.st_control}/BPR02",
            )

    def __iter__(self) -> Iterator[RemitClaim]:
        payment: RemitPayment | None = None
        claim: RemitClaim | None = None
        line: RemitLine | None = None
        tracker: LoopTracker | None = None
        where = ""
        pad = [""] * 20
        for seg in self._segments:
            el = seg.elements
            sid = el[0]
            if len(el) < 20:
                el = el + pad[len(el) :]
            if sid == "ST":
                if el[1] != "835":
                    raise X12ParseError(
                        f"transaction set {el[1]} is not an 835 remittance", code="6", location=f"ST02={el[2]}/ST01"
                    )
                payment = RemitPayment(st_control=el[2])
                tracker = LoopTracker(SPEC_835, strict=self.strict)
                where = f"ST02={el[2]}"
                continue
            if tracker is None or payment is None:
                continue  # envelope segments
            loop = tracker.feed(seg) if sid != "SE" else ""
            if sid == "CLP" or sid == "SE" or sid == "PLB" or sid == "LX":
                if claim is not None:
                    self._check_claim(claim)
                    self.claim_count += 1
                    self.line_count += len(claim.lines)
                    yield claim
                    claim, line = None, None
            if loop == "2110":
                if sid == "SVC":
                    assert claim is not None
                    comp = seg.components(1)
                    line = RemitLine(
                        number=len(claim.lines) + 1,
                        procedure_qualifier=comp[0],
                        procedure_code=comp[1] if len(comp) > 1 else "",
                        modifiers=[m for m in comp[2:6] if m],
                        charge=_amount(seg, 2, where),
                        paid=_amount(seg, 3, where),
                        revenue_code=el[4] or (comp[1] if comp[0] == "NU" and len(comp) > 1 else ""),
                        units=el[5],
                    )
                    claim.lines.append(line)
                elif line is not None:
                    if sid == "CAS":
                        line.adjustments.extend(_cas(seg, where))
                    elif sid == "DTM":
                        if el[1] in ("472", "150"):
                            line.service_date = el[2]
                        elif el[1] == "151":
                            line.service_date_end = el[2]
                    elif sid == "AMT" and el[1] == "B6":
                        line.allowed = _amount(seg, 2, where)
                    elif sid == "REF" and el[1] == "6R":
                        line.control_number = el[2]
                    elif sid == "LQ":
                        line.remarks.append(el[2])
            elif loop == "2100":
                if sid == "CLP":
                    claim = RemitClaim(
                        payment=payment,
                        patient_control_number=el[1],
                        status=el[2],
                        charge=_amount(seg, 3, where),
                        paid=_amount(seg, 4, where),
                        patient_responsibility=_amount(seg, 5, where, required=False),
                        filing_indicator=el[6],
                        payer_claim_number=el[7],
                        facility_code=el[8],
                        frequency=el[9],
                        ordinal=seg.ordinal,
                    )
                    payment.claims_paid += claim.paid
                    payment.claim_count += 1
                elif claim is not None:
                    if sid == "CAS":
                        claim.adjustments.extend(_cas(seg, where))
                    elif sid == "NM1":
                        q = el[1]
                        if q == "QC":
                            claim.patient_last, claim.patient_first, claim.patient_id = el[3], el[4], el[9]
                        elif q == "IL":
                            claim.insured_id = el[9]
                            if not claim.patient_last:
                                claim.patient_last, claim.patient_first = el[3], el[4]
                        elif q == "82" and el[8] == "XX":
                            claim.rendering_npi = el[9]
                    elif sid == "DTM":
                        if el[1] == "232":
                            claim.statement_from = el[2]
                        elif el[1] == "233":
                            claim.statement_to = el[2]
                        elif el[1] == "050":
                            claim.received_date = el[2]
            elif loop == "1000A":
                if sid == "N1":
                    payment.payer_name = el[2]
                    if el[4]:
                        payment.payer_id = payment.payer_id or el[4]
                elif sid == "REF" and el[1] == "2U":
                    payment.payer_id = el[2]
            elif loop == "1000B":
                if sid == "N1":
                    payment.payee_name = el[2]
                    payment.payee_id_qualifier, payment.payee_id = el[3], el[4]
            elif loop == "":
                if sid == "BPR":
                    payment.handling = el[1]
                    payment.amount = _amount(seg, 2, where)
                    payment.credit_debit = el[3] or "C"
                    payment.method = el[4]
                    payment.payment_date = el[16]
                elif sid == "TRN":
                    payment.check_number = el[2]
                    payment.originator_id = el[3]
                elif sid == "DTM" and el[1] == "405":
                    payment.production_date = el[2]
                elif sid == "PLB":
                    for i in range(3, 15, 2):
                        if not el[i]:
                            continue
                        comp = seg.components(i)
                        payment.provider_adjustments.append(
                            ProviderAdjustment(
                                el[1], el[2], comp[0], comp[1] if len(comp) > 1 else "", _amount(seg, i + 1, where)
                            )
                        )
                elif sid == "SE":
                    if not payment.payer_id:
                        payment.payer_id = payment.originator_id
                    self._check_payment(payment)
                    self.payments.append(payment)
                    tracker, payment = None, None
        self.finished = True


# --- rows ------------------------------------------------------------------------------------------------
def _dollars(value: Decimal | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _join(adjustments: Iterable[Adjustment]) -> str:
    return ";".join(str(a) for a in adjustments)


# name → (description, function(claim, line) -> value). ``line`` is None for a claim without service lines.
_Getter = Callable[[RemitClaim, "RemitLine | None"], Any]
_FIELDS: dict[str, tuple[str, _Getter]] = {
    "payer_name": ("Payer name (1000A N102)", lambda c, ln: c.payment.payer_name),
    "payer_id": (
        "Payer id (1000A REF*2U, N104, else TRN03)",
        lambda c, ln: c.payment.payer_id or c.payment.originator_id,
    ),
    "payee_name": ("Payee name (1000B N102)", lambda c, ln: c.payment.payee_name),
    "payee_id": ("Payee id, NPI when N103 = XX (1000B N104)", lambda c, ln: c.payment.payee_id),
    "check_number": ("Check or EFT trace number (TRN02)", lambda c, ln: c.payment.check_number),
    "payment_date": ("Check issue or EFT effective date (BPR16)", lambda c, ln: _date(c.payment.payment_date)),
    "payment_method": ("Payment method code (BPR04: ACH, CHK, FWT, BOP, NON)", lambda c, ln: c.payment.method),
    "payment_method_text": (
        "Payment method in words",
        lambda c, ln: PAYMENT_METHOD_TEXT.get(c.payment.method, c.payment.method),
    ),
    "payment_amount": ("Total payment (BPR02)", lambda c, ln: _dollars(c.payment.amount)),
    "production_date": ("Production date (DTM*405)", lambda c, ln: _date(c.payment.production_date)),
    "transaction_control_number": ("ST02 of the 835", lambda c, ln: c.payment.st_control),
    "patient_control_number": ("Patient control number (CLP01)", lambda c, ln: c.patient_control_number),
    "claim_status": ("Claim status code (CLP02)", lambda c, ln: c.status),
    "claim_status_text": ("Claim status in words", lambda c, ln: c.status_text),
    "claim_charge": ("Total claim charge (CLP03)", lambda c, ln: _dollars(c.charge)),
    "claim_paid": ("Claim payment (CLP04)", lambda c, ln: _dollars(c.paid)),
    "patient_responsibility": ("Patient responsibility (CLP05)", lambda c, ln: _dollars(c.patient_responsibility)),
    "claim_filing_indicator": ("Claim filing indicator (CLP06)", lambda c, ln: c.filing_indicator),
    "payer_claim_number": ("Payer claim control number (CLP07)", lambda c, ln: c.payer_claim_number),
    "facility_code": ("Facility type / place of service (CLP08)", lambda c, ln: c.facility_code),
    "claim_frequency": ("Claim frequency (CLP09)", lambda c, ln: c.frequency),
    "patient_last_name": ("Patient last name (NM1*QC03)", lambda c, ln: c.patient_last),
    "patient_first_name": ("Patient first name (NM1*QC04)", lambda c, ln: c.patient_first),
    "patient_member_id": ("Patient member id (NM1*QC09)", lambda c, ln: c.patient_id),
    "subscriber_member_id": ("Insured member id (NM1*IL09)", lambda c, ln: c.insured_id),
    "rendering_npi": ("Rendering provider NPI (NM1*82)", lambda c, ln: c.rendering_npi),
    "statement_from": ("Claim statement period start (DTM*232)", lambda c, ln: _date(c.statement_from)),
    "statement_to": ("Claim statement period end (DTM*233)", lambda c, ln: _date(c.statement_to)),
    "claim_adjustments": ("Claim-level CAS, e.g. CO-45:12.00;PR-2:10.00", lambda c, ln: _join(c.adjustments)),
    "line_number": ("Service line number within the claim", lambda c, ln: ln.number if ln else ""),
    "procedure_qualifier": ("Procedure code qualifier (SVC01-1)", lambda c, ln: ln.procedure_qualifier if ln else ""),
    "procedure_code": ("Procedure code (SVC01-2)", lambda c, ln: ln.procedure_code if ln else ""),
    "modifiers": (
        "Procedure modifiers joined with ':' (SVC01-3..6)",
        lambda c, ln: ":".join(ln.modifiers) if ln else "",
    ),
    "modifier_1": ("First modifier", lambda c, ln: ln.modifiers[0] if ln and len(ln.modifiers) > 0 else ""),
    "modifier_2": ("Second modifier", lambda c, ln: ln.modifiers[1] if ln and len(ln.modifiers) > 1 else ""),
    "modifier_3": ("Third modifier", lambda c, ln: ln.modifiers[2] if ln and len(ln.modifiers) > 2 else ""),
    "modifier_4": ("Fourth modifier", lambda c, ln: ln.modifiers[3] if ln and len(ln.modifiers) > 3 else ""),
    "revenue_code": ("Revenue code (SVC04, or SVC01-2 when NU)", lambda c, ln: ln.revenue_code if ln else ""),
    "units": ("Units paid (SVC05)", lambda c, ln: (ln.units or "1") if ln else ""),
    "line_charge": ("Line charge (SVC02)", lambda c, ln: _dollars(ln.charge) if ln else ""),
    "line_paid": ("Line payment (SVC03)", lambda c, ln: _dollars(ln.paid) if ln else ""),
    "line_allowed": ("Allowed amount (AMT*B6)", lambda c, ln: _dollars(ln.allowed) if ln else ""),
    "line_control_number": ("Line item control number (REF*6R)", lambda c, ln: ln.control_number if ln else ""),
    "line_adjustments": (
        "Line-level CAS, e.g. CO-45:12.00;PR-2:10.00",
        lambda c, ln: _join(ln.adjustments) if ln else "",
    ),
    "adjustments": (
        "Claim-level then line-level CAS together",
        lambda c, ln: _join([*c.adjustments, *(ln.adjustments if ln else [])]),
    ),
    "remark_codes": ("Remark codes (LQ*HE) joined with ':'", lambda c, ln: ":".join(ln.remarks) if ln else ""),
    "service_date": (
        "Service date (DTM*472 / DTM*150)",
        lambda c, ln: _date(ln.service_date or c.statement_from) if ln else _date(c.statement_from),
    ),
    "service_date_end": (
        "Service end date (DTM*151)",
        lambda c, ln: _date(ln.service_date_end) if ln else _date(c.statement_to),
    ),
}
ROW_FIELDS: dict[str, str] = {name: desc for name, (desc, _) in _FIELDS.items()}

_date_format = "%Y-%m-%d"


def _date(value: str) -> str:
    """CCYYMMDD → ISO (rows); the CSV writer re-formats with the layout's date format."""
    if len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value


def claim_rows(claim: RemitClaim, fields: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """One row per service line (one row for a claim without lines)."""
    names = list(fields) if fields is not None else list(_FIELDS)
    getters = [(n, _FIELDS[n][1]) for n in names]
    lines: list[RemitLine | None] = [*claim.lines] if claim.lines else [None]
    return [{n: g(claim, line) for n, g in getters} for line in lines]


class RemitRows:
    """Rows of an 835, one per service line, streaming; ``issues`` holds balancing problems after iteration."""

    def __init__(
        self, source: bytes | BinaryIO | Iterable[bytes], *, fields: Iterable[str] | None = None, **kw: Any
    ) -> None:
        self.reader = RemitReader(source, **kw)
        self.fields = list(fields) if fields is not None else list(_FIELDS)
        unknown = [f for f in self.fields if f not in _FIELDS]
        if unknown:
            raise ConfigError(f"unknown 835 row field(s): {', '.join(unknown)}")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for claim in self.reader:
            yield from claim_rows(claim, self.fields)

    @property
    def issues(self) -> list[Issue]:
        return self.reader.issues

    @property
    def balanced(self) -> bool:
        return self.reader.finished and not self.reader.issues

    @property
    def payments(self) -> list[RemitPayment]:
        return self.reader.payments


def remit_to_rows(source: bytes | BinaryIO | Iterable[bytes], **kw: Any) -> RemitRows:
    """Rows (dicts keyed by :data:`ROW_FIELDS`) of an 835; iterate it, then read ``.issues``."""
    return RemitRows(source, **kw)


# --- CSV layout ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CsvColumn:
    header: str
    field: str


@dataclass(frozen=True)
class CsvLayout:
    columns: tuple[CsvColumn, ...]
    delimiter: str = ","
    header: bool = True
    quoting: Literal["minimal", "all"] = "minimal"
    date_format: str = "%Y-%m-%d"
    line_terminator: str = "\r\n"
    encoding: str = "utf-8"

    @classmethod
    def default(cls) -> CsvLayout:
        return cls(tuple(CsvColumn(name, name) for name in _FIELDS))


_DATE_FIELDS = {"payment_date", "production_date", "statement_from", "statement_to", "service_date", "service_date_end"}


def load_layout(path: str | Path | None = None) -> CsvLayout:
    """Read a CSV layout file (default ``mappings/x12/835_posting_layout.yaml``)."""
    file = Path(path) if path is not None else DEFAULT_LAYOUT_FILE
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read 835 CSV layout {file}: {exc}", [(str(file), 0, str(exc))]) from exc
    problems: list[tuple[str, int, str]] = []
    allowed = {"delimiter", "header", "quoting", "date_format", "line_terminator", "encoding", "columns", "description"}
    for key in data:
        if key not in allowed:
            problems.append((str(file), 0, f"unknown key {key!r} (allowed: {', '.join(sorted(allowed))})"))
    columns = []
    for i, col in enumerate(data.get("columns") or []):
        if isinstance(col, str):
            col = {"field": col}
        if not isinstance(col, dict) or "field" not in col:
            problems.append((str(file), 0, f"columns[{i}] needs a 'field'"))
            continue
        if col["field"] not in _FIELDS:
            problems.append((str(file), 0, f"columns[{i}]: unknown field {col['field']!r}"))
            continue
        extra = set(col) - {"field", "header"}
        if extra:
            problems.append((str(file), 0, f"columns[{i}]: unknown key(s) {', '.join(sorted(extra))}"))
        columns.append(CsvColumn(str(col.get("header", col["field"])), col["field"]))
    if not columns and not problems:
        problems.append((str(file), 0, "the layout has no columns"))
    delimiter = str(data.get("delimiter", ","))
    if delimiter in ("\\t", "tab"):
        delimiter = "\t"
    if len(delimiter) != 1:
        problems.append((str(file), 0, f"delimiter must be one character, not {delimiter!r}"))
    quoting = data.get("quoting", "minimal")
    if quoting not in ("minimal", "all"):
        problems.append((str(file), 0, "quoting must be 'minimal' or 'all'"))
    if problems:
        raise ConfigError(f"{file}: {len(problems)} problem(s) in the 835 CSV layout", problems)
    return CsvLayout(
        tuple(columns),
        delimiter=delimiter,
        header=bool(data.get("header", True)),
        quoting=quoting,
        date_format=str(data.get("date_format", "%Y-%m-%d")),
        line_terminator={"crlf": "\r\n", "lf": "\n"}.get(str(data.get("line_terminator", "crlf")).lower(), "\r\n"),
        encoding=str(data.get("encoding", "utf-8")),
    )


def _layout(layout: CsvLayout | str | Path | None) -> CsvLayout:
    if isinstance(layout, CsvLayout):
        return layout
    if layout is None and not DEFAULT_LAYOUT_FILE.exists():
        return CsvLayout.default()
    return load_layout(layout)


def write_remit_csv(
    source: bytes | BinaryIO | Iterable[bytes],
    out: TextIO,
    layout: CsvLayout | str | Path | None = None,
    **kw: Any,
) -> RemitRows:
    """Stream an 835 into CSV text on ``out``; returns the (exhausted) :class:`RemitRows` with its issues."""
    lay = _layout(layout)
    rows = RemitRows(source, fields=[c.field for c in lay.columns], **kw)
    writer = csv.writer(
        out,
        delimiter=lay.delimiter,
        quoting=csv.QUOTE_ALL if lay.quoting == "all" else csv.QUOTE_MINIMAL,
        lineterminator=lay.line_terminator,
    )
    if lay.header:
        writer.writerow([c.header for c in lay.columns])
    fields = [c.field for c in lay.columns]
    date_columns = [i for i, f in enumerate(fields) if f in _DATE_FIELDS] if lay.date_format != "%Y-%m-%d" else []
    formatted: dict[str, str] = {}  # remittances repeat a handful of dates: format each once

    def fmt(value: str) -> str:
        out = formatted.get(value)
        if out is None:
            try:
                out = datetime.strptime(value, "%Y-%m-%d").strftime(lay.date_format)
            except ValueError:
                out = value
            if len(formatted) < 10_000:
                formatted[value] = out
        return out

    writerow = writer.writerow
    for row in rows:
        values = [row[f] for f in fields]
        for i in date_columns:
            if values[i]:
                values[i] = fmt(values[i])
        writerow(values)
    return rows


def x12_835_to_csv(
    raw: bytes,
    layout: CsvLayout | str | Path | None = None,
    *,
    on_unbalanced: Literal["error", "ignore"] = "error",
    issues: list[Issue] | None = None,
) -> bytes:
    """The ``x12_835_to_csv`` transform: an 835 → payment-posting CSV bytes (header row first).

    An unbalanced remittance raises :class:`ValidationError` (with the issues) unless ``on_unbalanced="ignore"``;
    pass a list as ``issues`` to receive them either way.
    """
    lay = _layout(layout)
    out = io.StringIO()
    rows = write_remit_csv(raw, out, lay)
    if issues is not None:
        issues.extend(rows.issues)
    if rows.issues and on_unbalanced == "error":
        first = rows.issues[0]
        raise ValidationError(
            f"the 835 does not balance ({len(rows.issues)} problem(s)); first: {first.message}",
            code="balance",
            location=first.location,
            issues=rows.issues,
        )
    return out.getvalue().encode(lay.encoding)


# --- FHIR ExplanationOfBenefit ---------------------------------------------------------------------------
CARC_SYSTEM = "https://x12.org/codes/claim-adjustment-reason-codes"
GROUP_SYSTEM = "https://x12.org/codes/claim-adjustment-group-codes"
ADJ_SYSTEM = "http://terminology.hl7.org/CodeSystem/adjudication"
CPT_SYSTEM = "http://www.ama-assn.org/go/cpt"
HCPCS_SYSTEM = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
NUBC_REVENUE_SYSTEM = "https://www.nubc.org/CodeSystem/RevenueCodes"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"


def _fhir_date(value: str) -> str | None:
    if len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return None


def _money(value: Decimal) -> dict[str, Any]:
    return {"value": float(value), "currency": "USD"}


def _adjudication(category: str, amount: Decimal | None = None, reason: Adjustment | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"category": {"coding": [{"system": ADJ_SYSTEM, "code": category}]}}
    if reason is not None:
        entry["category"] = {
            "coding": [{"system": GROUP_SYSTEM, "code": reason.group}],
            "text": f"CAS group {reason.group}",
        }
        entry["reason"] = {"coding": [{"system": CARC_SYSTEM, "code": reason.reason}]}
    if amount is not None:
        entry["amount"] = _money(amount)
    return entry


def claim_to_eob(claim: RemitClaim, *, created: str | None = None) -> dict[str, Any]:
    """One ExplanationOfBenefit (R4) for a 2100 claim payment."""
    p = claim.payment
    institutional = any(ln.procedure_qualifier == "NU" or ln.revenue_code for ln in claim.lines)
    created = created or _fhir_date(p.production_date or p.payment_date) or date.today().isoformat()
    patient_ref: dict[str, Any] = {
        "identifier": {"value": claim.patient_id or claim.insured_id or claim.patient_control_number}
    }
    name = " ".join(x for x in (claim.patient_first, claim.patient_last) if x)
    if name:
        patient_ref["display"] = name
    items = []
    for line in claim.lines:
        system = CPT_SYSTEM if line.procedure_code[:1].isdigit() else HCPCS_SYSTEM
        item: dict[str, Any] = {"sequence": line.number}
        if line.procedure_qualifier == "NU":
            item["productOrService"] = {"coding": [{"system": NUBC_REVENUE_SYSTEM, "code": line.procedure_code}]}
        else:
            item["productOrService"] = {"coding": [{"system": system, "code": line.procedure_code}]}
            if line.revenue_code:
                item["revenue"] = {"coding": [{"system": NUBC_REVENUE_SYSTEM, "code": line.revenue_code}]}
        if line.modifiers:
            item["modifier"] = [{"coding": [{"system": system, "code": m}]} for m in line.modifiers]
        served = _fhir_date(line.service_date)
        if served and line.service_date_end and _fhir_date(line.service_date_end):
            item["servicedPeriod"] = {"start": served, "end": _fhir_date(line.service_date_end)}
        elif served:
            item["servicedDate"] = served
        if line.units:
            try:
                item["quantity"] = {"value": float(Decimal(line.units))}
            except InvalidOperation:
                pass
        item["net"] = _money(line.charge)
        adj = [_adjudication("submitted", line.charge), _adjudication("benefit", line.paid)]
        if line.allowed is not None:
            adj.append(_adjudication("eligible", line.allowed))
        adj += [_adjudication("", a.amount, a) for a in line.adjustments]
        item["adjudication"] = adj
        items.append(item)
    eob: dict[str, Any] = {
        "resourceType": "ExplanationOfBenefit",
        "identifier": [
            {
                "type": {"text": "payer claim control number"},
                "value": claim.payer_claim_number or claim.patient_control_number,
            }
        ],
        "status": "active",
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/claim-type",
                    "code": "institutional" if institutional else "professional",
                }
            ]
        },
        "use": "claim",
        "patient": patient_ref,
        "created": created,
        "insurer": {
            "identifier": {"value": p.payer_id or p.originator_id or "unknown"},
            "display": p.payer_name or None,
        },
        "provider": {
            "identifier": {
                **({"system": NPI_SYSTEM} if p.payee_id_qualifier == "XX" else {}),
                "value": claim.rendering_npi or p.payee_id or "unknown",
            },
            **({"display": p.payee_name} if p.payee_name else {}),
        },
        "claim": {"identifier": {"value": claim.patient_control_number}},
        "outcome": "complete",
        "disposition": claim.status_text,
        "insurance": [
            {"focal": True, "coverage": {"identifier": {"value": claim.insured_id or claim.patient_id or "unknown"}}}
        ],
    }
    if not eob["insurer"].get("display"):
        del eob["insurer"]["display"]
    if claim.statement_from:
        period = {"start": _fhir_date(claim.statement_from)}
        if claim.statement_to:
            period["end"] = _fhir_date(claim.statement_to)
        eob["billablePeriod"] = {k: v for k, v in period.items() if v}
    if items:
        eob["item"] = items
    if claim.adjustments:
        eob["adjudication"] = [_adjudication("", a.amount, a) for a in claim.adjustments]
    eob["total"] = [
        {"category": {"coding": [{"system": ADJ_SYSTEM, "code": "submitted"}]}, "amount": _money(claim.charge)},
        {"category": {"coding": [{"system": ADJ_SYSTEM, "code": "benefit"}]}, "amount": _money(claim.paid)},
    ]
    payment: dict[str, Any] = {"amount": _money(claim.paid)}
    if _fhir_date(p.payment_date):
        payment["date"] = _fhir_date(p.payment_date)
    if p.check_number:
        payment["identifier"] = {"value": p.check_number}
    eob["payment"] = payment
    return eob


def remit_to_fhir(source: bytes | BinaryIO | Iterable[bytes], *, issues: list[Issue] | None = None) -> dict[str, Any]:
    """An 835 → a FHIR R4 ``collection`` Bundle with one ExplanationOfBenefit per claim (as a JSON dict)."""
    reader = RemitReader(source)
    entries: list[dict[str, Any]] = [
        {"fullUrl": f"urn:uuid:eob-{i}", "resource": claim_to_eob(c)} for i, c in enumerate(reader, start=1)
    ]
    for i, e in enumerate(entries, start=1):
        e["fullUrl"] = f"urn:uuid:{_uuid_for(i, e['resource'])}"
    if issues is not None:
        issues.extend(reader.issues)
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def _uuid_for(i: int, resource: dict[str, Any]) -> str:
    import uuid

    key = f"{i}|{resource['claim']['identifier']['value']}|{resource['identifier'][0]['value']}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "hub:x12:835:" + key))
