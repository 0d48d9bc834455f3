"""The X12 components as a channel sees them (no store): claim check, 837 transforms, 835 → CSV/FHIR, 999/TA1,
the x12_837 assembler without a store, X12 metadata and split, build-time configuration errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub import registry
from hub.channels.base import Context
from hub.errors import ConfigError, MappingError, ValidationError
from hub.message import Message
from hub.transforms.document import extract_meta, parse_document
from hub.transforms.x12 import iter_segments, meta, remit_to_rows, split_transactions, validate

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = ROOT / "tests" / "samples"
X12 = SAMPLES / "x12"
DFT = (SAMPLES / "hl7v2" / "dft_p03.hl7").read_bytes()
FHIR_BUNDLE = (X12 / "fhir_claim_bundle.json").read_bytes()
CTX = Context(home=ROOT, mappings_dir=ROOT / "mappings")

NEW = {
    ("transform", "x12_claim_check"),
    ("transform", "v2_to_x12_837"),
    ("transform", "fhir_to_x12_837"),
    ("transform", "x12_835_to_csv"),
    ("transform", "x12_835_to_fhir"),
    ("transform", "x12_999"),
    ("assembler", "x12_837"),
    ("destination", "claim_status"),
}


def build(kind: str, data: dict, ctx: Context = CTX):
    cls = registry.lookup(kind, data["type"])
    return cls(cls.Config.model_validate(data), ctx)


def msg(raw: bytes, ct: str) -> Message:
    return Message(raw=raw, content_type=ct)


def test_every_component_is_registered_and_documents_its_keys():
    for kind, name in NEW:
        cls = registry.lookup(kind, name)
        fields = cls.Config.model_fields
        assert cls.Config.__doc__, name
        for key, f in fields.items():
            if key not in ("type", "queue", "batch"):
                assert f.description, f"{name}.{key} has no description"


def test_claim_check_passes_a_billable_dft_unchanged_and_rejects_an_unbillable_one():
    check = build("transform", {"type": "x12_claim_check", "partner": "clearinghouse"})
    m = msg(DFT, "hl7v2")
    assert check(m) is m and m.raw == DFT
    bad = DFT.replace(b"\rDG1|1||E11.9^Type 2 diabetes mellitus without complications^I10||20260320|F", b"").replace(
        b"\rDG1|2||I10^Essential (primary) hypertension^I10||20260320|F", b""
    )
    bad = bad.replace(
        b"E11.9^Type 2 diabetes mellitus without complications^I10~I10^Essential (primary) hypertension^I10", b""
    )
    bad = bad.replace(b"E11.9^Type 2 diabetes mellitus without complications^I10", b"")
    with pytest.raises(MappingError) as exc:
        check(msg(bad, "hl7v2"))
    assert "no diagnosis" in str(exc.value) and exc.value.location == "2300/HI"


def test_claim_check_refuses_what_is_not_a_charge():
    check = build("transform", {"type": "x12_claim_check", "partner": "clearinghouse"})
    with pytest.raises(MappingError, match="DFT"):
        check(msg((SAMPLES / "hl7v2" / "adt_a04.hl7").read_bytes(), "hl7v2"))
    with pytest.raises(MappingError, match="not 'x12'"):
        check(msg((X12 / "claims_837p.837").read_bytes(), "x12"))


def test_claim_check_of_a_fhir_bundle_with_both_kinds():
    reject = build("transform", {"type": "x12_claim_check", "partner": "clearinghouse", "kind": "P"})
    with pytest.raises(MappingError, match="institutional"):
        reject(msg(FHIR_BUNDLE, "fhir"))
    for kind in ("P", "I"):
        skip = build(
            "transform", {"type": "x12_claim_check", "partner": "clearinghouse", "kind": kind, "other_kind": "skip"}
        )
        assert skip(msg(FHIR_BUNDLE, "fhir")).raw == FHIR_BUNDLE


def test_v2_to_x12_837_makes_a_valid_837p_with_increasing_control_numbers():
    t = build("transform", {"type": "v2_to_x12_837", "partner": "clearinghouse"})
    first = t(msg(DFT, "hl7v2"))
    second = t(msg(DFT, "hl7v2"))
    assert first.content_type == "x12" and validate(first.raw) == []
    isa = [next(s[13] for s in iter_segments(m.raw) if s.id == "ISA") for m in (first, second)]
    assert isa == ["000000001", "000000002"]
    doc = parse_document("x12", first.raw)
    assert (
        doc.get("CLM01") == "V00012399" and doc.get("GS08") == "005010X222A1" and doc.get("NM1[85]09") == "1234567893"
    )


def test_fhir_to_x12_837_makes_the_institutional_claim_valid():
    t = build("transform", {"type": "fhir_to_x12_837", "partner": "clearinghouse", "kind": "I", "other_kind": "skip"})
    out = t(msg(FHIR_BUNDLE, "fhir"))
    assert validate(out.raw) == []
    doc = parse_document("x12", out.raw)
    assert doc.get("GS08") == "005010X223A2" and doc.get("CLM01") == "FHIRINST01"


def test_835_to_csv_and_fhir_and_balancing():
    to_csv = build("transform", {"type": "x12_835_to_csv"})
    raw = (X12 / "remit_3_claims_one_line.835").read_bytes()
    out = to_csv(msg(raw, "x12"))
    lines = out.raw.decode().split("\r\n")
    assert out.content_type == "csv" and lines[0].startswith("Payer,Payer ID,Check/EFT Number")
    assert len([x for x in lines[1:] if x]) == len(list(remit_to_rows(raw))) == 4  # one row per service line
    unbalanced = (X12 / "remit_unbalanced.835").read_bytes()
    with pytest.raises(ValidationError) as exc:
        to_csv(msg(unbalanced, "x12"))
    assert "does not balance" in str(exc.value) and exc.value.issues
    lenient = build("transform", {"type": "x12_835_to_csv", "on_unbalanced": "ignore"})
    assert lenient(msg(unbalanced, "x12")).raw.startswith(b"Payer,")
    with pytest.raises(MappingError, match="transaction set 837"):
        to_csv(msg((X12 / "claims_837p.837").read_bytes(), "x12"))

    to_fhir = build("transform", {"type": "x12_835_to_fhir"})
    bundle = json.loads(to_fhir(msg((X12 / "remit_3_claims_plb.835").read_bytes(), "x12")).raw)
    assert bundle["type"] == "collection" and {e["resource"]["resourceType"] for e in bundle["entry"]} == {
        "ExplanationOfBenefit"
    }
    with pytest.raises(ValidationError):
        to_fhir(msg(unbalanced, "x12"))


def test_999_for_good_and_bad_files_and_ta1_for_an_envelope_error():
    ack = build("transform", {"type": "x12_999", "partner": "clearinghouse"})
    bad = ack(msg((X12 / "invalid_code_value.837").read_bytes(), "x12")).raw
    doc = parse_document("x12", bad)
    assert doc.get("ST01") == "999" and doc.get("IK501") == "R" and doc.get("IK403")
    assert doc.get("ISA08").strip() == "CLINIC01"  # back to the sender of the file
    assert validate(bad) == []
    ta1 = ack(msg((X12 / "envelope_iea_mismatch.837").read_bytes(), "x12")).raw
    assert b"TA1*000001001*" in ta1 and b"*R*001~" in ta1
    with pytest.raises(MappingError, match="acknowledgements"):
        ack(msg((X12 / "ack_999_accepted.999").read_bytes(), "x12"))


def test_bad_settings_are_config_errors_at_build_time(tmp_path):
    with pytest.raises(ConfigError, match="nobody"):
        build("transform", {"type": "x12_claim_check", "partner": "nobody"})
    with pytest.raises(ConfigError, match="does not exist"):
        build("transform", {"type": "x12_999", "partner": "clearinghouse"}, Context(mappings_dir=tmp_path))
    with pytest.raises(ConfigError):
        build("transform", {"type": "x12_835_to_csv", "layout": "x12/none.yaml"})


def test_assembler_without_a_store_writes_one_interchange_and_leaves_out_what_it_cannot_bill():
    asm = build("assembler", {"type": "x12_837", "partner": "clearinghouse"})
    good = [msg(DFT.replace(b"V00012399", f"V{n}".encode()), "hl7v2") for n in range(2)]
    bad = msg(DFT.replace(b"|XYZ123456789", b"|"), "hl7v2")  # no member id
    out = asm([good[0], bad, good[1]])
    assert list(out.skipped) == [1] and "member" in out.skipped[1]
    assert out.content_type == "x12" and validate(out.content) == []
    assert [s[1] for s in iter_segments(out.content) if s.id == "CLM"] == ["V0", "V1"]
    assert asm([bad]).content == b""


def test_x12_metadata_for_the_store():
    raw = (X12 / "remit_3_claims_plb.835").read_bytes()
    found = extract_meta("x12", parse_document("x12", raw))
    assert found["message_type"] == "835" and found["control_id"] == "000000101" and found["x12_guide"] == "835"
    assert meta(parse_document("x12", (X12 / "claims_837i.837").read_bytes()))["x12_guide"] == "837I"


def test_split_transactions_gives_each_transaction_its_own_envelope():
    text = (X12 / "remit_3_claims_one_line.835").read_text()
    st = text.index("ST*")
    se = text.index("~", text.index("SE*")) + 1
    body = text[st:se].lstrip()
    second = body.replace("ST*835*0001", "ST*835*0002").replace("*0001~", "*0002~")
    two = text[:se] + "\n" + second + text[se:]
    two = two.replace("GE*1*", "GE*2*")
    parts = split_transactions(two.encode())
    assert len(parts) == 2
    for n, part in enumerate(parts, 1):
        doc = parse_document("x12", part)
        assert doc.get("ST02") == f"000{n}" and doc.get("GE01") == "1"
        assert validate(part) == []
    assert split_transactions((X12 / "claims_837p.837").read_bytes()) == [(X12 / "claims_837p.837").read_bytes()]
