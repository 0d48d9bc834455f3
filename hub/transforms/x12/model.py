"""The neutral claim model the 837 writer takes, and the mappers (HL7 v2 DFT, FHIR Claim) produce.

Plain dataclasses: amounts are :class:`~decimal.Decimal`, dates :class:`~datetime.date`, codes strings as the
X12 guides want them (ICD-10 without the dot is accepted either way). What a claim needs to be billed is checked
by :func:`hub.transforms.x12.claim_checks.check_claim` (the writer raises :class:`~hub.errors.MappingError` for a
claim that cannot be).
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
    "normalise_icd10",
    "to_decimal",
    "ICD10_PATTERN",
]

ICD10_PATTERN = re.compile(r"^[A-TV-Z][0-9][0-9AB][0-9A-TV-Z]{0,4}$")


@dataclass
class Address:
    line1: str
    city: str
    state: str
    postal_code: str
    line2: str = ""


@dataclass
class Provider:
    """A billing / rendering / attending provider.

    ``entity_type`` 1 = person (``name`` is the last name, ``first_name``), 2 = organisation."""

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


def normalise_icd10(code: str) -> str:
    return code.replace(".", "").strip().upper()
