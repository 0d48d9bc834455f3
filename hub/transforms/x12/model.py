"""The neutral claim model the 837 writer takes, and the mappers (HL7 v2 DFT, FHIR Claim) produce.

Plain dataclasses: amounts are :class:`~decimal.Decimal`, dates :class:`~datetime.date`, codes strings as the
X12 guides want them (ICD-10 without the dot is accepted either way). The writer checks what it needs and raises
:class:`~hub.errors.MappingError` for a claim that cannot be billed (see :func:`check_claim`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Literal

from hub.errors import MappingError

__all__ = [
    "Address",
    "Provider",
    "Subscriber",
    "Patient",
    "Payer",
    "ServiceLine",
    "Claim",
    "npi_is_valid",
    "check_claim",
    "to_decimal",
    "ICD10_PATTERN",
]

ICD10_PATTERN = re.compile(r"^[A-TV-Z][0-9][0-9AB][0-9A-TV-Z]{0,4}$")
_PROCEDURE = re.compile(r"^[A-Z0-9]{5}$")
_MODIFIER = re.compile(r"^[A-Z0-9]{2}$")
_REVENUE = re.compile(r"^[0-9]{4}$")
_STATE = re.compile(r"^[A-Z]{2}$")


@dataclass
class Address:
    line1: str
    city: str
    state: str
    postal_code: str
    line2: str = ""


@dataclass
class Provider:
    """A billing / rendering / attending provider. ``entity_type`` 1 = person (last_name, first_name), 2 = organisation."""

    name: str  # organisation name, or last name of a person
    npi: str
    tax_id: str = ""
    tax_id_type: Literal["EI", "SY"] = "EI"
    address: Address | None = None
    taxonomy: str = ""
    entity_type: Literal["1", "2"] = "2"
    first_name: str = ""


@dataclass
class Subscriber:
    """The insured (2000B/2010BA). ``relationship`` is of the patient to the subscriber when they differ."""

    last_name: str
    first_name: str
    member_id: str
    birth_date: date | None = None
    gender: Literal["M", "F", "U"] = "U"
    address: Address | None = None
    group_number: str = ""
    middle_name: str = ""
    payer_responsibility: Literal["P", "S", "T"] = "P"


@dataclass
class Patient:
    """The patient when not the subscriber (2000C/2010CA). ``relationship``: 01 spouse, 19 child, 20 employee,
    21 unknown, 39 organ donor, 40 cadaver donor, 53 life partner, G8 other."""

    last_name: str
    first_name: str
    birth_date: date
    gender: Literal["M", "F", "U"]
    address: Address
    relationship: str = "19"
    middle_name: str = ""


@dataclass
class Payer:
    name: str
    payer_id: str
    claim_filing_code: str = "CI"  # SBR09


@dataclass
class ServiceLine:
    """One 2400 service line: SV1 (professional) or SV2 (institutional, ``revenue_code``)."""

    charge: Decimal
    service_date: date
    procedure_code: str = ""  # CPT/HCPCS; optional on an institutional line with a revenue code only
    modifiers: list[str] = field(default_factory=list)
    units: Decimal = Decimal("1")
    unit_code: Literal["UN", "MJ", "DA"] = "UN"
    revenue_code: str = ""  # 837I
    diagnosis_pointers: list[int] = field(default_factory=lambda: [1])  # 837P SV107, 1-based into Claim.diagnoses
    service_date_end: date | None = None
    place_of_service: str = ""  # 837P SV105 when different from the claim's
    line_control_number: str = ""  # REF*6R
    procedure_qualifier: str = "HC"


@dataclass
class Claim:
    """One claim (2300) with everything around it the 837 needs.

    ``place_of_service`` is CLM05-1 of an 837P (e.g. ``11`` office); for an 837I ``facility_code`` is the
    first two digits of the type of bill (e.g. ``13`` hospital outpatient) and ``frequency`` the third.
    """

    patient_control_number: str
    subscriber: Subscriber
    payer: Payer
    diagnoses: list[str]
    service_lines: list[ServiceLine]
    billing_provider: Provider | None = None  # None: the partner's billing_provider defaults
    patient: Patient | None = None  # None: the subscriber is the patient
    total_charge: Decimal | None = None  # None: the sum of the lines
    place_of_service: str = "11"
    facility_code: str = ""  # 837I type of bill, first two digits
    frequency: str = "1"  # 1 original, 7 replacement, 8 void
    original_claim_reference: str = ""  # payer claim number, needed for frequency 7/8 (REF*F8)
    prior_authorization: str = ""  # REF*G1
    provider_signature: Literal["Y", "N"] = "Y"  # CLM06 (837P)
    assignment: Literal["A", "B", "C"] = "A"  # CLM07
    benefits_assignment: Literal["Y", "N", "W"] = "Y"  # CLM08
    release_of_information: Literal["I", "Y"] = "Y"  # CLM09
    onset_date: date | None = None  # 837P DTP*431
    rendering_provider: Provider | None = None  # 837P 2310B
    referring_provider: Provider | None = None  # 837P 2310A
    attending_provider: Provider | None = None  # 837I 2310A (required by the 837I for most claims)
    statement_from: date | None = None  # 837I DTP*434
    statement_to: date | None = None
    admission_date: date | None = None  # 837I DTP*435 (inpatient)
    admission_type: str = ""  # 837I CL101
    admission_source: str = ""  # CL102
    patient_status: str = ""  # 837I CL103 (discharge status), e.g. 01
    principal_procedure: str = ""  # not written yet
    note: str = ""  # NTE*ADD

    @property
    def charge(self) -> Decimal:
        return (
            self.total_charge
            if self.total_charge is not None
            else sum((s.charge for s in self.service_lines), Decimal(0))
        )


def to_decimal(value: object, what: str, location: str = "") -> Decimal:
    """A money/quantity value as Decimal, ``MappingError`` when it is not one."""
    if isinstance(value, Decimal):
        d = value
    else:
        try:
            d = Decimal(str(value).strip())
        except (InvalidOperation, ValueError):
            raise MappingError(f"{what} {value!r} is not a number", location=location) from None
    if not d.is_finite():
        raise MappingError(f"{what} {value!r} is not a number", location=location)
    return d


def npi_is_valid(npi: str) -> bool:
    """NPI check digit: Luhn over the 9 digits prefixed with 80840 (the card issuer prefix of health care)."""
    if not (len(npi) == 10 and npi.isdigit()):
        return False
    digits = [int(c) for c in "80840" + npi[:9]]
    total = 0
    for i, digit in enumerate(reversed(digits)):
        if i % 2 == 0:  # rightmost of the payload is doubled (the check digit is not in the payload)
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return (10 - total % 10) % 10 == int(npi[9])


def _require(value: str, what: str, location: str) -> None:
    if not value or not str(value).strip():
        raise MappingError(f"{what} is missing", location=location)


def _check_npi(npi: str, what: str, location: str) -> None:
    _require(npi, f"{what} NPI", location)
    if not npi_is_valid(npi):
        raise MappingError(f"{what} NPI {npi!r} is not valid (10 digits with a Luhn check digit)", location=location)


def _check_address(addr: Address | None, what: str, loop: str, *, zip9: bool = False) -> None:
    if addr is None:
        raise MappingError(f"{what} address is missing", location=f"{loop}/N3")
    _require(addr.line1, f"{what} street address", f"{loop}/N301")
    _require(addr.city, f"{what} city", f"{loop}/N401")
    if not _STATE.match(addr.state or ""):
        raise MappingError(f"{what} state {addr.state!r} is not a 2-letter code", location=f"{loop}/N402")
    digits = (addr.postal_code or "").replace("-", "")
    if not digits.isdigit() or len(digits) not in ((9,) if zip9 else (5, 9)):
        need = "the 9-digit ZIP+4" if zip9 else "a 5 or 9 digit ZIP"
        raise MappingError(f"{what} postal code {addr.postal_code!r} is not {need}", location=f"{loop}/N403")


def _check_money(value: Decimal, what: str, location: str, *, positive: bool = True) -> None:
    if not isinstance(value, Decimal):
        value = to_decimal(value, what, location)
    if not value.is_finite() or value.as_tuple().exponent < -2:  # type: ignore[operator]
        raise MappingError(f"{what} {value} has more than 2 decimals", location=location)
    if positive and value <= 0:
        raise MappingError(f"{what} must be more than zero, not {value}", location=location)
    if value >= Decimal("100000000"):
        raise MappingError(f"{what} {value} is too large for X12 (max 99999999.99)", location=location)


def normalise_icd10(code: str) -> str:
    return code.replace(".", "").strip().upper()


def check_claim(claim: Claim, kind: Literal["P", "I"], billing: Provider) -> None:
    """Raise ``MappingError`` (with the 837 location) when ``claim`` cannot become a valid 837."""
    pcn = claim.patient_control_number
    _require(pcn, "patient control number", "2300/CLM01")
    if len(pcn) > 20:
        raise MappingError(f"patient control number {pcn!r} is longer than 20 characters", location="2300/CLM01")
    # billing provider
    _require(billing.name, "billing provider name", "2010AA/NM103")
    _check_npi(billing.npi, "billing provider", "2010AA/NM109")
    _check_address(billing.address, "billing provider", "2010AA", zip9=True)
    if not (billing.tax_id and billing.tax_id.replace("-", "").isdigit() and len(billing.tax_id.replace("-", "")) == 9):
        raise MappingError(
            f"billing provider tax id {billing.tax_id!r} must be 9 digits (EIN or SSN)", location="2010AA/REF02"
        )
    # subscriber / payer / patient
    sub = claim.subscriber
    _require(sub.last_name, "subscriber last name", "2010BA/NM103")
    _require(sub.member_id, "subscriber member id", "2010BA/NM109")
    if claim.patient is None:
        _check_address(sub.address, "subscriber (who is the patient)", "2010BA")
        if sub.birth_date is None:
            raise MappingError("subscriber (who is the patient) birth date is missing", location="2010BA/DMG02")
    else:
        pat = claim.patient
        _require(pat.last_name, "patient last name", "2010CA/NM103")
        _check_address(pat.address, "patient", "2010CA")
        if pat.birth_date is None:
            raise MappingError("patient birth date is missing", location="2010CA/DMG02")
        if pat.relationship not in ("01", "19", "20", "21", "39", "40", "53", "G8"):
            raise MappingError(f"patient relationship {pat.relationship!r} is not an 837 code", location="2000C/PAT01")
    _require(claim.payer.name, "payer name", "2010BB/NM103")
    _require(claim.payer.payer_id, "payer id", "2010BB/NM109")
    # diagnoses
    if not claim.diagnoses:
        raise MappingError(f"claim {pcn} has no diagnosis (an 837 needs at least one ICD-10 code)", location="2300/HI")
    limit = 12 if kind == "P" else 25
    if len(claim.diagnoses) > limit:
        raise MappingError(
            f"claim {pcn} has {len(claim.diagnoses)} diagnoses; the 837{kind} takes {limit}", location="2300/HI"
        )
    for i, dx in enumerate(claim.diagnoses, start=1):
        if not ICD10_PATTERN.match(normalise_icd10(dx)):
            raise MappingError(
                f"diagnosis {dx!r} of claim {pcn} is not an ICD-10-CM code", location=f"2300/HI0{min(i, 9)}"
            )
    # lines
    if not claim.service_lines:
        raise MappingError(f"claim {pcn} has no service line", location="2400/LX")
    max_lines = 50 if kind == "P" else 999
    if len(claim.service_lines) > max_lines:
        raise MappingError(
            f"claim {pcn} has {len(claim.service_lines)} lines; the 837{kind} takes {max_lines}", location="2400"
        )
    total = Decimal(0)
    for n, line in enumerate(claim.service_lines, start=1):
        where = f"2400[{n}]"
        _check_money(
            line.charge,
            f"charge of line {n} of claim {pcn}",
            f"{where}/SV{'1' if kind == 'P' else '2'}0{2 if kind == 'P' else 3}",
        )
        total += line.charge
        if kind == "P" or line.procedure_code:
            if not _PROCEDURE.match(line.procedure_code or ""):
                raise MappingError(
                    f"procedure code {line.procedure_code!r} of line {n} of claim {pcn} is not a CPT/HCPCS code",
                    location=f"{where}/SV{'1' if kind == 'P' else '2'}01-2" if kind == "P" else f"{where}/SV202-2",
                )
        if kind == "I" and not _REVENUE.match(line.revenue_code or ""):
            raise MappingError(
                f"revenue code {line.revenue_code!r} of line {n} of claim {pcn} is not 4 digits",
                location=f"{where}/SV201",
            )
        if len(line.modifiers) > 4 or any(not _MODIFIER.match(m) for m in line.modifiers):
            raise MappingError(
                f"modifiers {line.modifiers!r} of line {n} of claim {pcn} are not 1-4 two-character codes",
                location=f"{where}/SV101-3",
            )
        if line.units <= 0:
            raise MappingError(f"units of line {n} of claim {pcn} must be more than zero", location=f"{where}/SV104")
        if kind == "P":
            if not line.diagnosis_pointers or len(line.diagnosis_pointers) > 4:
                raise MappingError(f"line {n} of claim {pcn} needs 1-4 diagnosis pointers", location=f"{where}/SV107")
            for p in line.diagnosis_pointers:
                if not 1 <= p <= len(claim.diagnoses):
                    raise MappingError(
                        f"line {n} of claim {pcn} points to diagnosis {p}, the claim has {len(claim.diagnoses)}",
                        location=f"{where}/SV107",
                    )
        if line.service_date is None:
            raise MappingError(f"line {n} of claim {pcn} has no service date", location=f"{where}/DTP03")
    if claim.total_charge is not None:
        _check_money(claim.total_charge, f"total charge of claim {pcn}", "2300/CLM02")
        if claim.total_charge != total:
            raise MappingError(
                f"total charge {claim.total_charge} of claim {pcn} is not the sum of its lines ({total})",
                location="2300/CLM02",
            )
    else:
        _check_money(total, f"total charge of claim {pcn}", "2300/CLM02")
    if claim.frequency not in ("1", "7", "8") and kind == "P":
        raise MappingError(f"claim frequency {claim.frequency!r} is not 1, 7 or 8", location="2300/CLM05-3")
    if claim.frequency in ("7", "8") and not claim.original_claim_reference:
        raise MappingError(
            f"claim {pcn} replaces/voids a claim (frequency {claim.frequency}) but has no original claim number",
            location="2300/REF*F8",
        )
    if kind == "P":
        if not re.match(r"^\d{2}$", claim.place_of_service or ""):
            raise MappingError(
                f"place of service {claim.place_of_service!r} is not a 2-digit code", location="2300/CLM05-1"
            )
        if claim.rendering_provider is not None:
            _check_npi(claim.rendering_provider.npi, "rendering provider", "2310B/NM109")
        if claim.referring_provider is not None:
            _check_npi(claim.referring_provider.npi, "referring provider", "2310A/NM109")
    else:
        if not re.match(r"^\d{2}$", claim.facility_code or ""):
            raise MappingError(
                f"facility type code {claim.facility_code!r} (first two digits of the type of bill) is missing",
                location="2300/CLM05-1",
            )
        if claim.statement_from is None:
            raise MappingError(f"claim {pcn} has no statement period (837I DTP*434)", location="2300/DTP*434")
        if claim.attending_provider is None:
            raise MappingError(f"institutional claim {pcn} has no attending provider (2310A)", location="2310A/NM1")
        _check_npi(claim.attending_provider.npi, "attending provider", "2310A/NM109")
        _require(claim.patient_status, "patient status (discharge status, CL103)", "2300/CL103")
        if claim.facility_code[:1] == "1" and claim.facility_code[1:2] in ("1", "2") and claim.admission_date is None:
            raise MappingError(f"inpatient claim {pcn} has no admission date (DTP*435)", location="2300/DTP*435")
