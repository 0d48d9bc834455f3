"""837P / 837I writer: every file written passes pyx12's 5010 validation; unbillable claims raise MappingError."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest
from x12_fixtures import CLINIC_NPI, NOW, REFERRING_NPI, errors, inst_claim, prof_claim

from hub.errors import ConfigError, MappingError
from hub.transforms.x12 import (
    Address,
    InMemoryControlNumbers,
    Provider,
    ServiceLine,
    load_partners,
    npi_is_valid,
    number_interchange,
    parse_document,
    validate,
    write_837,
)
from hub.transforms.x12.claims_837 import MAX_CLAIMS_PER_TRANSACTION

OTHER_CLINIC = Provider(
    "NORTH SIDE CLINIC", "1671449936", "371234568", address=Address("9 ELM ST", "SPRINGFIELD", "IL", "627029999")
)


def _write(claims, kind="P", numbers=None):
    return write_837(claims, "clearinghouse", numbers or InMemoryControlNumbers(), kind=kind, now=NOW)


CASES = {
    "P patient is subscriber": ([prof_claim()], "P"),
    "P patient is a dependent": ([prof_claim(child=True)], "P"),
    "P several claims, lines, providers": (
        [
            prof_claim("A1", lines=3),
            prof_claim("A2", child=True, lines=1),
            prof_claim("A3", billing_provider=OTHER_CLINIC, rendering_provider=None),
            prof_claim("A4", lines=3, child=True),
        ],
        "P",
    ),
    "P replacement with referring and extras": (
        [
            prof_claim(
                "R1",
                frequency="7",
                original_claim_reference="PAYERCLM0001",
                prior_authorization="AUTH77",
                onset_date=date(2023, 12, 30),
                note="CORRECTED CHARGES",
                referring_provider=Provider("REFER", REFERRING_NPI, entity_type="1", first_name="RAY"),
                total_charge=Decimal("250.00"),
                service_lines=[
                    ServiceLine(
                        Decimal("150"),
                        date(2024, 1, 2),
                        "99213",
                        ["25", "59"],
                        diagnosis_pointers=[2, 1],
                        line_control_number="L1",
                        place_of_service="22",
                    ),
                    ServiceLine(Decimal("100.00"), date(2024, 1, 2), "G0008", service_date_end=date(2024, 1, 3)),
                ],
            )
        ],
        "P",
    ),
    "P many diagnoses": (
        [
            prof_claim(
                diagnoses=[
                    "E11.9",
                    "I10",
                    "J06.9",
                    "R05.9",
                    "Z00.00",
                    "M54.5",
                    "K21.9",
                    "F41.1",
                    "N39.0",
                    "E78.5",
                    "G43.909",
                    "R51.9",
                ]
            )
        ],
        "P",
    ),
    "I outpatient": ([inst_claim()], "I"),
    "I inpatient dependent": ([inst_claim(inpatient=True, child=True)], "I"),
    "I several claims": ([inst_claim("I1"), inst_claim("I2", child=True), inst_claim("I3", inpatient=True)], "I"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_837_passes_pyx12_validation(name: str) -> None:
    claims, kind = CASES[name]
    raw = _write(claims, kind)
    assert errors(validate(raw)) == []
    doc = parse_document(raw)  # and our own strict reading
    # claims are grouped under their billing provider (2000A), in first-seen order
    assert sorted(doc.get_all("CLM01")) == sorted(c.patient_control_number for c in claims)
    assert doc.get("GS08") == ("005010X222A1" if kind == "P" else "005010X223A2")


def test_837p_layout() -> None:
    raw = _write([prof_claim("PCN1", child=True), prof_claim("PCN2", billing_provider=OTHER_CLINIC)])
    doc = parse_document(raw)
    assert doc.get("ISA13") == "000000001" and doc.get("GS06") == "1" and doc.get("ST02") == "0001"
    assert doc.get("ISA15") == "T"
    assert doc.get("BHT06") == "CH"
    assert [lp.get("NM1[85]09") for lp in doc.loops("2000A")] == [CLINIC_NPI, OTHER_CLINIC.npi]
    assert doc.get("2000B[1]/SBR02") is None and doc.get("2000B[1]/HL04") == "1"  # patient differs
    assert doc.get("2000B[2]/SBR02") == "18" and doc.get("2000B[2]/HL04") == "0"  # self
    assert doc.get("2000C/PAT01") == "19"
    assert doc.get("2300[1]/HI01") == "ABK:J069" and doc.get("2300[1]/HI02") == "ABF:R059"
    assert doc.get("2300[1]/CLM05") == "11:B:1"
    assert doc.get_all("2300[1]/SV107") == ["1:2", "1"]
    assert doc.get("2310B/NM109") == "1992753883"
    assert doc.get("SE01") == str(len(doc.segments) - 4)


def test_837i_layout() -> None:
    doc = parse_document(_write([inst_claim(inpatient=True)], "I"))
    assert doc.get("CLM05") == "11:A:1"
    assert doc.get("CLM06") is None and doc.get("CLM07") == "A"
    assert doc.get("DTP[434]03") == "20240102-20240104"
    assert doc.get("DTP[435]03") == "20240102"
    assert doc.get("CL1") == "CL1*1*7*01"
    assert doc.get_all("HI01") == ["ABK:J189", "ABF:E119"]
    assert doc.get_all("SV201") == ["0450", "0300", "0320"]
    assert doc.get("SV2[2]") == "SV2*0300**120*UN*1"
    assert doc.get("2310A/NM101") == "71"


def test_control_numbers_come_from_the_injected_object() -> None:
    numbers = InMemoryControlNumbers(start=41)
    first = parse_document(_write([prof_claim()], numbers=numbers))
    second = parse_document(_write([prof_claim()], numbers=numbers))
    assert (first.get("ISA13"), first.get("GS06"), first.get("ST02")) == ("000000041", "41", "0041")
    assert (second.get("ISA13"), second.get("GS06"), second.get("ST02")) == ("000000042", "42", "0042")

    class Store:
        def __init__(self) -> None:
            self.calls: list[tuple[str, str]] = []

        def next(self, partner: str, kind: str) -> int:
            self.calls.append((partner, kind))
            return 7

    store = Store()
    _write([prof_claim()], numbers=store)
    assert store.calls == [("clearinghouse", "isa"), ("clearinghouse", "gs"), ("clearinghouse", "st")]


def test_large_batches_split_into_several_transactions(monkeypatch: pytest.MonkeyPatch) -> None:
    import hub.transforms.x12.claims_837 as claims_mod

    monkeypatch.setattr(claims_mod, "MAX_CLAIMS_PER_TRANSACTION", 2)
    raw = _write([prof_claim(f"C{i}") for i in range(5)])
    doc = parse_document(raw)
    assert [t.get("ST02") for t in doc.transactions()] == ["0001", "0002", "0003"]
    assert doc.get("GE01") == "3" and doc.get("IEA01") == "1"
    assert errors(validate(raw)) == []
    assert MAX_CLAIMS_PER_TRANSACTION == 5000


def test_number_interchange_retakes_the_control_numbers_in_the_writers_order_and_forms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import hub.transforms.x12.claims_837 as claims_mod

    monkeypatch.setattr(claims_mod, "MAX_CLAIMS_PER_TRANSACTION", 2)
    claims = [prof_claim(f"C{i}") for i in range(5)]
    provisional = _write(claims)
    # the same numbers give the same bytes: the writer and the renumbering agree on order and forms
    assert number_interchange(provisional, "clearinghouse", InMemoryControlNumbers()) == provisional
    numbered = number_interchange(provisional, "clearinghouse", InMemoryControlNumbers(start=41))
    assert numbered == _write(claims, numbers=InMemoryControlNumbers(start=41))
    doc = parse_document(numbered)
    assert (doc.get("ISA13"), doc.get("IEA02"), doc.get("GS06"), doc.get("GE02")) == (
        "000000041",
        "000000041",
        "41",
        "41",
    )
    assert [(t.get("ST02"), t.get("SE02")) for t in doc.transactions()] == [
        ("0041", "0041"),
        ("0042", "0042"),
        ("0043", "0043"),
    ]
    assert errors(validate(numbered)) == []
    assert number_interchange(b"not x12", "clearinghouse", InMemoryControlNumbers()) == b"not x12"


def _line(**kw) -> ServiceLine:
    base = dict(charge=Decimal("10"), service_date=date(2024, 1, 2), procedure_code="99211")
    base.update(kw)
    return ServiceLine(**base)


BAD = {
    "no NPI": (
        lambda: prof_claim(billing_provider=replace(OTHER_CLINIC, npi="")),
        "billing provider NPI is missing",
        "2010AA/NM109",
    ),
    "bad NPI check digit": (
        lambda: prof_claim(billing_provider=replace(OTHER_CLINIC, npi="1671449937")),
        "not valid",
        "2010AA/NM109",
    ),
    "bad rendering NPI": (
        lambda: prof_claim(rendering_provider=Provider("X", "123", entity_type="1")),
        "rendering provider NPI",
        "2310B/NM109",
    ),
    "no diagnosis": (lambda: prof_claim(diagnoses=[]), "has no diagnosis", "2300/HI"),
    "not ICD-10": (lambda: prof_claim(diagnoses=["250.00"]), "not an ICD-10-CM code", "2300/HI01"),
    "no service line": (lambda: prof_claim(service_lines=[]), "has no service line", "2400/LX"),
    "zero charge": (lambda: prof_claim(service_lines=[_line(charge=Decimal("0"))]), "more than zero", "2400[1]/SV102"),
    "negative charge": (
        lambda: prof_claim(service_lines=[_line(charge=Decimal("-5"))]),
        "more than zero",
        "2400[1]/SV102",
    ),
    "three decimals": (
        lambda: prof_claim(service_lines=[_line(charge=Decimal("1.005"))]),
        "more than 2 decimals",
        "2400[1]/SV102",
    ),
    "total mismatch": (lambda: prof_claim(total_charge=Decimal("999")), "not the sum of its lines", "2300/CLM02"),
    "bad pointer": (
        lambda: prof_claim(service_lines=[_line(diagnosis_pointers=[3])]),
        "points to diagnosis 3",
        "2400[1]/SV107",
    ),
    "bad procedure": (
        lambda: prof_claim(service_lines=[_line(procedure_code="9921")]),
        "not a CPT/HCPCS",
        "2400[1]/SV101-2",
    ),
    "bad modifier": (lambda: prof_claim(service_lines=[_line(modifiers=["2"])]), "modifiers", "2400[1]/SV101-3"),
    "5-digit billing ZIP": (
        lambda: prof_claim(
            billing_provider=replace(OTHER_CLINIC, address=Address("9 ELM ST", "SPRINGFIELD", "IL", "62702"))
        ),
        "9-digit ZIP+4",
        "2010AA/N403",
    ),
    "no tax id": (lambda: prof_claim(billing_provider=replace(OTHER_CLINIC, tax_id="")), "tax id", "2010AA/REF02"),
    "no member id": (
        lambda: prof_claim(subscriber=replace(prof_claim().subscriber, member_id="")),
        "member id is missing",
        "2010BA/NM109",
    ),
    "no payer id": (
        lambda: prof_claim(payer=replace(prof_claim().payer, name="UNKNOWN PAYER", payer_id="")),
        "payer id is missing",
        "2010BB/NM109",
    ),
    "replacement without original": (lambda: prof_claim(frequency="7"), "no original claim number", "2300/REF*F8"),
    "delimiter in a value": (
        lambda: prof_claim(subscriber=replace(prof_claim().subscriber, last_name="O*NEIL")),
        "delimiter",
        "2010BA/NM103",
    ),
    "long control number": (lambda: prof_claim("X" * 21), "longer than 20", "2300/CLM01"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_unbillable_claims_raise_mapping_error(name: str) -> None:
    make, words, location = BAD[name]
    with pytest.raises(MappingError) as err:
        _write([prof_claim("GOOD1"), make()])
    assert words in str(err.value)
    assert err.value.location == location


@pytest.mark.parametrize(
    "change, words",
    [
        (dict(attending_provider=None), "no attending provider"),
        (dict(facility_code=""), "facility type code"),
        (dict(statement_from=None), "no statement period"),
        (dict(patient_status=""), "patient status"),
        (dict(service_lines=[_line(revenue_code="45")]), "revenue code"),
    ],
)
def test_unbillable_institutional_claims(change: dict, words: str) -> None:
    with pytest.raises(MappingError, match=words):
        _write([inst_claim(**change)], "I")


def test_payer_id_filled_from_partner_settings() -> None:
    claim = prof_claim(payer=replace(prof_claim().payer, name="Medicare Part B", payer_id=""))
    doc = parse_document(_write([claim]))
    assert doc.get("NM1[PR]09") == "00952"
    assert doc.get("SBR09") == "MB"


def test_no_claims_and_unknown_partner() -> None:
    with pytest.raises(MappingError, match="no claims"):
        _write([])
    with pytest.raises(ConfigError, match="not in"):
        write_837([prof_claim()], "nobody", InMemoryControlNumbers())
    with pytest.raises(MappingError, match="kind"):
        write_837([prof_claim()], "clearinghouse", InMemoryControlNumbers(), kind="D")  # type: ignore[arg-type]


def test_npi_check_digit() -> None:
    assert npi_is_valid("1234567893")
    assert not npi_is_valid("1234567890")
    assert not npi_is_valid("123456789")
    assert not npi_is_valid("12345678a3")


def test_partners_file_loads(tmp_path) -> None:
    partners = load_partners()
    ch = partners["clearinghouse"]
    assert ch.isa.usage in ("T", "P") and ch.billing_provider is not None
    assert npi_is_valid(ch.billing_provider.npi)
    bad = tmp_path / "p.yaml"
    bad.write_text(
        "partners:\n  x:\n    isa: {sender_id: A, receiver_id: B, usage: Q, extra: 1}\n"
        "    gs: {sender_code: A, receiver_code: B}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_partners(bad)
    text = " ".join(p[2] for p in err.value.problems)
    assert "usage" in text and "extra" in text
