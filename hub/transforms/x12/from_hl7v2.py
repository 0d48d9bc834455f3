"""HL7 v2 DFT^P03 (detail financial transaction) → the neutral claim model → 837.

A thin mapping over the HL7 v2 document's paths (``hub.transforms.hl7v2``):

=====================  ==========================================================================
claim field            HL7 v2
=====================  ==========================================================================
patient control no.    PV1-19.1 (visit number), else PID-18.1 (account number)
patient                PID-5 name, PID-7 birth date, PID-8 sex, PID-11 address
subscriber             IN1-16 insured name, IN1-18 birth date, IN1-19 address, IN1-36 policy number,
                       IN1-8 group number, IN1-17 relationship (SEL/blank = the patient is the insured)
payer                  IN1-4 company name; payer id from the partner's ``payers`` table, else IN1-3.1
diagnoses              DG1-3.1 in DG1-15 priority order (DG1-1 order otherwise), plus any FT1-19 code
service lines          each FT1 with FT1-6 = CG: FT1-25.1 (else FT1-7.1) procedure, FT1-26 modifiers,
                       FT1-10 quantity, FT1-11.1.1 extended amount, FT1-4.1/.2 dates, FT1-19 diagnoses
rendering / referring  FT1-20 performed-by NPI (when not the billing NPI); PV1-8 referring doctor
billing provider       the partner's ``billing_provider`` settings
=====================  ==========================================================================
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal, NamedTuple, TypedDict

from hub.errors import MappingError

from .claims_837 import write_837
from .model import Address, Claim, Patient, Payer, Provider, ServiceLine, Subscriber, normalise_icd10, to_decimal
from .partners import ControlNumbers, Partner, get_partner

__all__ = ["claim_from_dft", "v2_to_x12_837", "FILING_CODES", "RELATIONSHIPS"]

# IN1-15 plan type → SBR09 claim filing indicator
FILING_CODES = {
    "PPO": "12",
    "POS": "13",
    "EPO": "14",
    "INDEMNITY": "15",
    "HMO": "HM",
    "MEDICARE": "MB",
    "MEDICAID": "MC",
    "CHAMPUS": "CH",
    "TRICARE": "CH",
    "BLUE CROSS": "BL",
    "COMMERCIAL": "CI",
    "WORKERS COMP": "WC",
    "VA": "VA",
}
# HL7 table 0063 relationship → 837 PAT01 (patient's relationship to the insured)
RELATIONSHIPS = {"SPO": "01", "CHD": "19", "EMC": "19", "FCH": "19", "SCH": "19", "DOM": "53", "EME": "20", "OTH": "G8"}


def _date(value: str | None, what: str, location: str) -> date | None:
    if not value:
        return None
    digits = value[:8]
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        raise MappingError(f"{what} {value!r} is not a date", location=location) from None


_SEXES: dict[str, Literal["M", "F", "U"]] = {"M": "M", "F": "F"}  # PID-8 / IN1-43 → DMG03; others → U


def _sex(value: str | None) -> Literal["M", "F", "U"]:
    return _SEXES.get(value or "", "U")


def _address(msg: Any, field: str) -> Address | None:
    line1 = msg.get(f"{field}.1")
    if not line1:
        return None
    return Address(
        line1=line1,
        line2=msg.get(f"{field}.2") or "",
        city=msg.get(f"{field}.3") or "",
        state=msg.get(f"{field}.4") or "",
        postal_code=(msg.get(f"{field}.5") or "").replace("-", ""),
    )


def _person_provider(msg: Any, field: str) -> Provider | None:
    npi = msg.get(f"{field}.1")
    if not npi:
        return None
    return Provider(name=msg.get(f"{field}.2") or "", npi=npi, entity_type="1", first_name=msg.get(f"{field}.3") or "")


class _Name(TypedDict):
    """A person's name in the claim model's terms."""

    last_name: str
    first_name: str
    middle_name: str


def _name(msg: Any, field: str) -> _Name:
    """An XPN (PID-5, IN1-16): family name, given name, second given name; missing → ""."""
    return _Name(
        last_name=msg.get(f"{field}.1") or "",
        first_name=msg.get(f"{field}.2") or "",
        middle_name=msg.get(f"{field}.3") or "",
    )


class _Pid(NamedTuple):
    """The patient as PID has them (PID-5, -7, -8, -11)."""

    name: _Name
    birth_date: date | None
    gender: Literal["M", "F", "U"]
    address: Address | None


def _pid(msg: Any) -> _Pid:
    return _Pid(
        _name(msg, "PID-5"),
        birth_date=_date(msg.get("PID-7"), "patient birth date", "PID-7"),
        gender=_sex(msg.get("PID-8")),
        address=_address(msg, "PID-11"),
    )


def _insured_and_patient(msg: Any, pid: _Pid) -> tuple[Subscriber, Patient | None]:
    """2010BA from IN1 (completed from PID when the patient is the insured) and 2010CA when not."""
    if msg.segment("IN1") is None:
        raise MappingError("the DFT has no IN1 insurance segment: there is no payer to bill", location="IN1")
    rel = (msg.get("IN1-17.1") or "SEL").upper()
    member_id = msg.get("IN1-36") or msg.get("IN1-49.1") or ""
    if not member_id:
        raise MappingError("no policy/member number for the insured", location="IN1-36")
    insured = _name(msg, "IN1-16")
    group_number = msg.get("IN1-8") or ""
    birth_date = _date(msg.get("IN1-18"), "insured birth date", "IN1-18")
    gender = msg.get("IN1-43")
    address = _address(msg, "IN1-19")
    if rel in ("SEL", ""):  # the patient is the insured: what IN1 leaves out comes from PID
        insured["last_name"] = insured["last_name"] or pid.name["last_name"]
        insured["first_name"] = insured["first_name"] or pid.name["first_name"]
        subscriber = Subscriber(
            **insured,
            group_number=group_number,
            member_id=member_id,
            birth_date=birth_date or pid.birth_date,
            gender=_sex(gender) if gender else pid.gender,
            address=address or pid.address,
        )
        return subscriber, None
    subscriber = Subscriber(
        **insured,
        group_number=group_number,
        member_id=member_id,
        birth_date=birth_date,
        gender=_sex(gender),
        address=address,
    )
    if pid.birth_date is None or pid.address is None:
        raise MappingError("the patient is not the insured, and PID-7/PID-11 are needed for 2010CA", location="PID-7")
    patient = Patient(
        **pid.name,
        birth_date=pid.birth_date,
        gender=pid.gender,
        address=pid.address,
        relationship=RELATIONSHIPS.get(rel, "G8"),
    )
    return subscriber, patient


def _payer(msg: Any, p: Partner | None) -> Payer:
    """IN1-4 company; payer id and filing code from the partner's ``payers`` (by name, else by IN1-3), else IN1-3."""
    name = msg.get("IN1-4.1") or msg.get("IN1-4") or ""
    plan_type = (msg.get("IN1-15") or "").upper()
    settings = p.payer(name) if p is not None and name else None
    if settings is None and p is not None and msg.get("IN1-3.1"):
        settings = p.payer(msg.get("IN1-3.1"))
    return Payer(
        name=name,
        payer_id=settings.payer_id if settings else (msg.get("IN1-3.1") or ""),
        claim_filing_code=FILING_CODES.get(plan_type) or (settings.claim_filing_code if settings else "CI"),
    )


def _dg1_diagnoses(msg: Any) -> list[str]:
    """DG1-3 ICD-10-CM codes in DG1-15 priority order (DG1 order when none), each once."""
    dg1 = []
    for i in range(1, len(msg.segments_named("DG1")) + 1):
        code = msg.get(f"DG1[{i}]-3.1")
        system = (msg.get(f"DG1[{i}]-3.3") or "I10").upper()
        if not code:
            continue
        if system not in ("I10", "ICD10", "ICD-10-CM", "I10C"):
            raise MappingError(f"DG1 {i} code {code} is {system}, not ICD-10-CM", location=f"DG1[{i}]-3.3")
        prio = msg.get(f"DG1[{i}]-15")
        dg1.append((int(prio) if prio and prio.isdigit() else 100 + i, normalise_icd10(code)))
    diagnoses: list[str] = []
    for _, code in sorted(dg1):
        if code not in diagnoses:
            diagnoses.append(code)
    return diagnoses


def _pointers(msg: Any, where: str, diagnoses: list[str]) -> list[int]:
    """The FT1-19 codes as pointers into ``diagnoses`` (at most 4), adding a code the DG1s do not list."""
    pointers: list[int] = []
    for r in range(1, 13):
        dx = msg.get(f"{where}-19[{r}].1")
        if not dx:
            break
        dx = normalise_icd10(dx)
        if dx not in diagnoses:
            diagnoses.append(dx)
        idx = diagnoses.index(dx) + 1
        if idx not in pointers and len(pointers) < 4:
            pointers.append(idx)
    return pointers


def _service_line(msg: Any, i: int, diagnoses: list[str]) -> ServiceLine:
    """The 2400 line of charge FT1 ``i``; its FT1-19 codes join ``diagnoses``."""
    where = f"FT1[{i}]"
    code = msg.get(f"{where}-25.1") or msg.get(f"{where}-7.1")
    if not code:
        raise MappingError(f"charge {i} has no procedure code", location=f"{where}-25")
    mods = [m for m in (msg.get(f"{where}-26[{r}].1") for r in range(1, 5)) if m]
    amount_text = msg.get(f"{where}-11.1.1") or msg.get(f"{where}-11.1")
    if not amount_text:
        raise MappingError(f"charge {i} ({code}) has no amount", location=f"{where}-11")
    charge = to_decimal(amount_text, f"charge {i} amount", f"{where}-11")
    units = to_decimal(msg.get(f"{where}-10") or "1", f"charge {i} quantity", f"{where}-10")
    start = _date(msg.get(f"{where}-4.1") or msg.get(f"{where}-5"), f"charge {i} date", f"{where}-4")
    if start is None:
        raise MappingError(f"charge {i} has no transaction date", location=f"{where}-4")
    end = _date(msg.get(f"{where}-4.2"), f"charge {i} end date", f"{where}-4.2")
    return ServiceLine(
        charge=charge,
        service_date=start,
        service_date_end=end if end and end != start else None,
        procedure_code=code.upper(),
        modifiers=mods,
        units=units,
        diagnosis_pointers=_pointers(msg, where, diagnoses) or [1],
        line_control_number=(msg.get(f"{where}-2.1") or "")[:30],
    )


def _charges(msg: Any) -> list[int]:
    """The FT1s that are charges (FT1-6 CG or empty): credits, payments, adjustments are not billed."""
    return [i for i in range(1, len(msg.segments_named("FT1")) + 1) if (msg.get(f"FT1[{i}]-6") or "CG").upper() == "CG"]


def claim_from_dft(msg: Any, partner: Partner | str | None = None, *, place_of_service: str = "11") -> Claim:
    """Map a parsed DFT^P03 (an ``hl7v2`` message object) to a :class:`Claim`; ``MappingError`` with the HL7 path."""
    p = get_partner(partner) if partner is not None else None
    mtype = msg.get("MSH-9.1")
    if mtype and mtype != "DFT":
        raise MappingError(f"a claim is made from a DFT message, not {mtype}", location="MSH-9")
    pcn = msg.get("PV1-19.1") or msg.get("PID-18.1")
    if not pcn:
        raise MappingError("no visit number (PV1-19) or account number (PID-18) for the claim", location="PV1-19")
    subscriber, patient = _insured_and_patient(msg, _pid(msg))
    payer = _payer(msg, p)
    diagnoses = _dg1_diagnoses(msg)
    billing_npi = p.billing_provider.npi if p is not None and p.billing_provider else ""
    lines: list[ServiceLine] = []
    rendering: Provider | None = None  # the first FT1-20 performer who is not the billing provider
    for i in _charges(msg):
        lines.append(_service_line(msg, i, diagnoses))
        performer = _person_provider(msg, f"FT1[{i}]-20")
        if performer is not None and performer.npi != billing_npi and rendering is None:
            rendering = performer
    referring = _person_provider(msg, "PV1-8")
    return Claim(
        patient_control_number=pcn[:20],
        subscriber=subscriber,
        payer=payer,
        diagnoses=diagnoses,
        service_lines=lines,
        patient=patient,
        place_of_service=place_of_service,
        rendering_provider=rendering,
        referring_provider=referring if referring is not None and referring.npi != billing_npi else None,
    )


def v2_to_x12_837(
    raw: bytes | Any,
    partner: Partner | str,
    numbers: ControlNumbers,
    *,
    kind: Literal["P", "I"] = "P",
    place_of_service: str = "11",
    **kw: Any,
) -> bytes:
    """The ``v2_to_x12_837`` transform: a DFT^P03 (bytes or parsed) → an 837 interchange."""
    if isinstance(raw, (bytes, bytearray)):
        from hub.transforms.hl7v2 import parse

        msg = parse(bytes(raw))
    else:
        msg = raw
    claim = claim_from_dft(msg, partner, place_of_service=place_of_service)
    return write_837([claim], partner, numbers, kind=kind, **kw)
