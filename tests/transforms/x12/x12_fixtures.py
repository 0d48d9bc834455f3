"""Synthetic claims and paths shared by the X12 tests (no real patient data)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from hub.errors import Issue
from hub.transforms.x12 import Address, Claim, Patient, Payer, Provider, ServiceLine, Subscriber

HERE = Path(__file__).resolve()
ROOT = HERE.parents[3]
SAMPLES = ROOT / "tests" / "samples" / "x12"
CORPUS = HERE.parents[3] / ".." / "shared" / "corpus" / "x12"
NOW = datetime(2024, 1, 5, 10, 30)

# valid NPIs (Luhn with the 80840 prefix)
CLINIC_NPI = "1234567893"
RENDERING_NPI = "1992753883"
ATTENDING_NPI = "1456789019"
REFERRING_NPI = "1098765435"

HOME = Address("12 OAK ST", "SPRINGFIELD", "IL", "62704")


def subscriber(**kw: object) -> Subscriber:
    base: dict = dict(
        last_name="DOE",
        first_name="JANE",
        member_id="MEM123456",
        birth_date=date(1980, 5, 1),
        gender="F",
        address=HOME,
        group_number="GRP1",
    )
    base.update(kw)
    return Subscriber(**base)


def payer(**kw: object) -> Payer:
    base: dict = dict(name="ACME HEALTH PLAN", payer_id="12345")
    base.update(kw)
    return Payer(**base)


def prof_claim(pcn: str = "PCN1001", *, child: bool = False, lines: int = 2, **kw: object) -> Claim:
    """An 837P claim: office visit + lab, two diagnoses; ``child`` makes the patient a dependent."""
    svc = [
        ServiceLine(Decimal("150"), date(2024, 1, 2), "99213", ["25"], diagnosis_pointers=[1, 2]),
        ServiceLine(Decimal("100"), date(2024, 1, 2), "85025"),
        ServiceLine(Decimal("35.25"), date(2024, 1, 2), "36415", units=Decimal("2")),
    ][:lines]
    base: dict = dict(
        patient_control_number=pcn,
        subscriber=subscriber(),
        payer=payer(),
        diagnoses=["J06.9", "R05.9"],
        service_lines=svc,
        rendering_provider=Provider("SMITH", RENDERING_NPI, entity_type="1", first_name="ANN", taxonomy="207Q00000X"),
    )
    if child:
        base["patient"] = Patient("DOE", "TIM", date(2015, 2, 3), "M", HOME, "19")
    base.update(kw)
    return Claim(**base)


def inst_claim(pcn: str = "INST01", *, inpatient: bool = False, child: bool = False, **kw: object) -> Claim:
    """An 837I claim: outpatient (type of bill 131) or inpatient (111) with revenue-coded lines."""
    svc = [
        ServiceLine(Decimal("500"), date(2024, 1, 2), "99284", revenue_code="0450"),
        ServiceLine(Decimal("120"), date(2024, 1, 2), "", revenue_code="0300"),
        ServiceLine(Decimal("80.10"), date(2024, 1, 2), "71046", ["26"], revenue_code="0320"),
    ]
    base: dict = dict(
        patient_control_number=pcn,
        subscriber=subscriber(),
        payer=payer(),
        diagnoses=["J18.9", "E11.9", "I10"],
        service_lines=svc,
        facility_code="11" if inpatient else "13",
        statement_from=date(2024, 1, 2),
        statement_to=date(2024, 1, 4) if inpatient else None,
        admission_date=date(2024, 1, 2) if inpatient else None,
        admission_type="1" if inpatient else "",
        admission_source="7" if inpatient else "",
        patient_status="01",
        attending_provider=Provider("JONES", ATTENDING_NPI, entity_type="1", first_name="AMY"),
    )
    if child:
        base["patient"] = Patient("DOE", "TIM", date(2015, 2, 3), "M", HOME, "19")
    base.update(kw)
    return Claim(**base)


def errors(issues: list[Issue]) -> list[str]:
    return [str(i) for i in issues if i.severity == "error"]
