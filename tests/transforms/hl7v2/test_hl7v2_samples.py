"""The synthetic samples in tests/samples/hl7v2 that the whole project reuses: present, well-formed, realistic."""

from __future__ import annotations

import re

import pytest

from hub.transforms.hl7v2 import check_basic, meta, parse, split_batch

MESSAGES = {
    "adt_a01.hl7": "ADT^A01",
    "adt_a04.hl7": "ADT^A04",
    "adt_a08.hl7": "ADT^A08",
    "adt_a40.hl7": "ADT^A40",
    "siu_s12.hl7": "SIU^S12",
    "orm_o01.hl7": "ORM^O01",
    "oml_o21.hl7": "OML^O21",
    "oru_r01.hl7": "ORU^R01",
    "rde_o11.hl7": "RDE^O11",
    "vxu_v04.hl7": "VXU^V04",
    "mdm_t02.hl7": "MDM^T02",
    "dft_p03.hl7": "DFT^P03",
}


def npi_ok(npi: str) -> bool:
    """The NPI check digit (Luhn over 80840 + the first nine digits)."""
    if not re.fullmatch(r"\d{10}", npi):
        return False
    total = 0
    for i, ch in enumerate(reversed("80840" + npi[:9])):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return (10 - total % 10) % 10 == int(npi[9])


@pytest.mark.parametrize(("name", "kind"), MESSAGES.items())
def test_sample_message(sample, name: str, kind: str) -> None:
    raw = sample(name)
    assert b"\n" not in raw and raw.endswith(b"\r")  # CR segment terminators only
    msg = parse(raw)
    assert msg.to_bytes() == raw
    assert split_batch(raw) == [raw]
    info = meta(msg)
    assert info["message_type"] == kind and info["version"] == "2.5.1"
    assert info["control_id"] and info["patient_id"] and info["sending_app"]
    assert msg.charset == "UNICODE UTF-8" and msg.structure
    assert check_basic(msg) == []


def test_oru_has_ten_typed_observations(sample) -> None:
    msg = parse(sample("oru_r01.hl7"))
    types = msg.get_all("OBX-2")
    assert len(types) == 10
    assert {"NM", "ST", "TX", "CWE", "SN", "DT"} <= set(types)
    assert msg.get_all("OBX-1") == [str(i) for i in range(1, 11)]
    assert msg.get("OBX[4]-5") == ">^60"  # SN: comparator^number


def test_dft_is_rich_enough_for_an_837p(sample) -> None:
    msg = parse(sample("dft_p03.hl7"))
    names = msg.segment_names
    assert names.count("FT1") == 2 and names.count("DG1") == 2
    assert {"PID", "PV1", "IN1", "GT1"} <= set(names)
    for npi in msg.get_all("FT1-20.1") + msg.get_all("FT1-21.1") + msg.get_all("PV1-7.1"):
        assert npi_ok(npi), npi
    assert all(re.fullmatch(r"[A-Z]\d\d(\.\w{1,4})?", c) for c in msg.get_all("DG1-3.1"))
    assert msg.get_all("DG1-3.3") == ["I10", "I10"]
    assert all(re.fullmatch(r"\d{5}", c) for c in msg.get_all("FT1-25.1"))
    assert [float(v) for v in msg.get_all("FT1-11.1.1")] == [185.0, 42.0]
    assert msg.get("IN1-36") and msg.get("IN1-3.1") and msg.get("GT1-3.1") == "DOE"
    assert msg.get("PID-18.1") == "ACCT0098765"


def test_other_samples(sample) -> None:
    assert len(split_batch(sample("batch_fhs_bhs.hl7"))) == 3
    assert len(split_batch(sample("batch_back_to_back_lf.hl7"))) == 2
    assert parse(sample("messy_lf_bom.hl7")).control_id == "LF000001"
    assert parse(sample("messy_custom_delimiters.hl7")).get("MSH-1") == "!"
    assert parse(sample("messy_v27_truncation.hl7")).get("MSH-2") == "^~\\&#"
    assert parse(sample("messy_latin1_v23.hl7")).codec == "latin-1"
    assert parse(sample("messy_mixed_newlines.hl7")).get("OBX-5") == "first line\nsecond line"


def test_samples_hold_no_real_identifiers(samples) -> None:
    for path in samples.glob("*.hl7"):
        text = path.read_bytes().decode("latin-1")
        assert not re.search(r"\b\d{3}-\d{2}-\d{4}\b", text), path.name  # no SSN-shaped values
