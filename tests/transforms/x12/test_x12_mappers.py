"""HL7 v2 DFT^P03 and FHIR R4 Claim → the claim model → 837s that pass pyx12."""

from __future__ import annotations

import copy
import json
from datetime import date
from decimal import Decimal

import pytest
from x12_fixtures import NOW, ROOT, SAMPLES, errors

from hub.errors import MappingError
from hub.transforms.x12 import (
    InMemoryControlNumbers,
    claim_from_dft,
    claims_from_fhir,
    parse_document,
    v2_to_x12_837,
    validate,
    write_837,
)

DFT = (ROOT / "tests" / "samples" / "hl7v2" / "dft_p03.hl7").read_bytes()
BUNDLE = json.loads((SAMPLES / "fhir_claim_bundle.json").read_text())


def _hl7(raw: bytes):
    hl7v2 = pytest.importorskip("hub.transforms.hl7v2")
    return hl7v2.parse(raw)


def test_dft_to_claim() -> None:
    claim = claim_from_dft(_hl7(DFT), "clearinghouse")
    assert claim.patient_control_number == "V00012399"
    assert claim.patient is None  # IN1-17 SEL: the patient is the insured
    assert (claim.subscriber.last_name, claim.subscriber.member_id, claim.subscriber.group_number) == (
        "DOE",
        "XYZ123456789",
        "GRP44556",
    )
    assert claim.subscriber.birth_date == date(1980, 2, 14)
    assert claim.payer.name == "BLUE CROSS BLUE SHIELD OF EXAMPLE" and claim.payer.claim_filing_code == "12"
    assert claim.diagnoses == ["E119", "I10"]
    assert [(s.procedure_code, s.modifiers, s.charge, s.diagnosis_pointers) for s in claim.service_lines] == [
        ("99214", ["25"], Decimal("185.00"), [1, 2]),
        ("83036", [], Decimal("42.00"), [1]),
    ]
    assert claim.rendering_provider is None  # FT1-20 is the billing NPI of the partner settings
    assert claim.referring_provider is not None and claim.referring_provider.npi == "9876543213"


def test_dft_to_837p_passes_pyx12() -> None:
    raw = v2_to_x12_837(DFT, "clearinghouse", InMemoryControlNumbers(), now=NOW)
    assert errors(validate(raw)) == []
    doc = parse_document(raw)
    assert doc.get("CLM01") == "V00012399" and doc.get("CLM02") == "227"
    assert doc.get("HI01") == "ABK:E119" and doc.get("HI02") == "ABF:I10"
    assert doc.get_all("REF[6R]02") == ["TXN0001", "TXN0002"]
    assert doc.get("NM1[DN]09") == "9876543213"


def test_dft_dependent_patient_and_payer_table() -> None:
    text = DFT.decode()
    text = text.replace("|DOE^JANE^Q|SEL^Self^HL70063|19800214|", "|DOE^JOHN|SPO^Spouse^HL70063|19790101|")
    text = text.replace("|BLUE CROSS BLUE SHIELD OF EXAMPLE|", "|ACME HEALTH PLAN|").replace("|PPO|", "||")
    claim = claim_from_dft(_hl7(text.encode()), "clearinghouse")
    assert claim.patient is not None and claim.patient.relationship == "01"
    assert claim.subscriber.first_name == "JOHN"
    assert claim.payer.payer_id == "12345" and claim.payer.claim_filing_code == "CI"
    raw = write_837([claim], "clearinghouse", InMemoryControlNumbers(), now=NOW)
    assert errors(validate(raw)) == []
    assert parse_document(raw).get("2000C/PAT01") == "01"


@pytest.mark.parametrize(
    "change, location",
    [
        (lambda t: t.replace("IN1|1|", "ZIN|1|"), "IN1"),
        (lambda t: t.replace("|XYZ123456789", "|"), "IN1-36"),
        (lambda t: t.replace("|185.00&USD||FAMMED", "|||FAMMED"), "FT1[1]-11"),
        (lambda t: t.replace("V00012399", "").replace("ACCT0098765", ""), "PV1-19"),
        (
            lambda t: t.replace(
                "I10^Essential (primary) hypertension^I10||20260320", "401.9^Hypertension^I9||20260320"
            ),
            "DG1[2]-3.3",
        ),
    ],
)
def test_dft_mapping_errors(change, location: str) -> None:
    with pytest.raises(MappingError) as err:
        claim_from_dft(_hl7(change(DFT.decode()).encode()), "clearinghouse")
    assert err.value.location == location


def test_dft_without_diagnosis_cannot_be_billed() -> None:
    text = DFT.decode()
    lines = [ln for ln in text.split("\r") if not ln.startswith("DG1")]
    text = "\r".join(lines)
    text = text.replace(
        "|E11.9^Type 2 diabetes mellitus without complications^I10~I10^Essential (primary) hypertension^I10|", "||"
    )
    text = text.replace("|E11.9^Type 2 diabetes mellitus without complications^I10|", "||")
    with pytest.raises(MappingError, match="no diagnosis"):
        v2_to_x12_837(text.encode(), "clearinghouse", InMemoryControlNumbers())


def test_fhir_bundle_to_837p_and_837i() -> None:
    pairs = claims_from_fhir(BUNDLE, partner="clearinghouse")
    assert [k for _, k in pairs] == ["P", "I"]
    prof, inst = pairs[0][0], pairs[1][0]
    assert prof.patient_control_number == "FHIRPCN001"
    assert prof.diagnoses == ["J069", "R059"]  # by sequence
    assert prof.patient is not None and prof.patient.first_name == "TIM" and prof.subscriber.first_name == "JANE"
    assert prof.billing_provider is not None and prof.billing_provider.tax_id == "37-1234567"
    assert prof.rendering_provider is not None and prof.rendering_provider.npi == "1992753883"  # contained
    assert [s.charge for s in prof.service_lines] == [Decimal("150.0"), Decimal("35.5")]
    assert inst.facility_code == "13" and inst.frequency == "1" and inst.patient_status == "01"
    assert inst.attending_provider is not None and inst.attending_provider.npi == "1456789019"
    for claim, kind in pairs:
        raw = write_837([claim], "clearinghouse", InMemoryControlNumbers(), kind=kind, now=NOW)
        assert errors(validate(raw)) == []
    doc = parse_document(write_837([prof], "clearinghouse", InMemoryControlNumbers(), now=NOW))
    assert doc.get("CLM02") == "185.5" and doc.get_all("SV107") == ["1:2", "1"]


def test_fhir_claim_with_resources_given_as_dicts() -> None:
    by_type = {e["resource"]["id"]: e["resource"] for e in BUNDLE["entry"]}
    claim = copy.deepcopy(by_type["claim-1"])
    claim["insurance"][0]["coverage"] = {"reference": "Coverage/cov-1"}
    [(model, kind)] = claims_from_fhir(claim, resources=[r for k, r in by_type.items() if not k.startswith("claim")])
    assert kind == "P" and model.subscriber.member_id == "MEM123456"


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda c: c.pop("insurance"), "no insurance"),
        (lambda c: c.update(patient={"reference": "Patient/nobody"}), "not in the bundle"),
        (lambda c: c["item"][0].pop("servicedDate"), "no service date"),
        (lambda c: c["item"][0].pop("net"), "no net amount"),
        (lambda c: c.update(resourceType="Patient"), "expected a Claim"),
    ],
)
def test_fhir_mapping_errors(change, words: str) -> None:
    bundle = copy.deepcopy(BUNDLE)
    change(bundle["entry"][0]["resource"])
    with pytest.raises(MappingError, match=words):
        if bundle["entry"][0]["resource"]["resourceType"] != "Claim":
            claims_from_fhir(bundle["entry"][0]["resource"])
        else:
            claims_from_fhir(bundle)


def test_fhir_claim_with_no_diagnosis_is_refused_by_the_writer() -> None:
    bundle = copy.deepcopy(BUNDLE)
    bundle["entry"][0]["resource"]["diagnosis"] = []
    for item in bundle["entry"][0]["resource"]["item"]:
        item.pop("diagnosisSequence", None)
    claim, kind = claims_from_fhir(bundle, partner="clearinghouse")[0]
    with pytest.raises(MappingError, match="no diagnosis"):
        write_837([claim], "clearinghouse", InMemoryControlNumbers(), kind=kind)
