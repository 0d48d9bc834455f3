"""835 remittance: posting rows, balancing, CSV layout, streaming, FHIR ExplanationOfBenefit."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from pathlib import Path

import pytest
from x12_fixtures import ROOT, SAMPLES

from hub.errors import ConfigError, ValidationError, X12ParseError
from hub.transforms.x12 import (
    CsvLayout,
    RemitReader,
    load_layout,
    remit_to_fhir,
    remit_to_rows,
    validate,
    write_remit_csv,
    x12_835_to_csv,
)
from hub.transforms.x12.remit import ROW_FIELDS, CsvColumn

R835 = (SAMPLES / "remit_3_claims_plb.835").read_bytes()
UNBALANCED = (SAMPLES / "remit_unbalanced.835").read_bytes()


def test_sample_835_is_valid_for_pyx12() -> None:
    assert validate(R835) == []


def test_rows_one_per_service_line() -> None:
    rows = remit_to_rows(R835)
    out = list(rows)
    assert rows.issues == [] and rows.balanced
    assert [(r["patient_control_number"], r["procedure_code"]) for r in out] == [
        ("PCN1001", "99213"),
        ("PCN1001", "85025"),
        ("PCN1002", "99214"),
        ("PCN1003", "97110"),
    ]
    first = out[0]
    assert first["payer_name"] == "ACME HEALTH PLAN"
    assert first["payer_id"] == "12345"
    assert first["check_number"] == "EFT20240116001"
    assert first["payment_date"] == "2024-01-16"
    assert first["payment_method"] == "ACH"
    assert first["claim_status"] == "1"
    assert (first["claim_charge"], first["claim_paid"], first["patient_responsibility"]) == (
        "250.00",
        "180.00",
        "30.00",
    )
    assert first["line_adjustments"] == "CO-45:30.00;PR-2:20.00"
    assert (first["line_charge"], first["line_paid"], first["line_allowed"]) == ("150.00", "100.00", "120.00")
    assert first["service_date"] == "2024-01-02"
    second_claim = out[2]
    assert second_claim["claim_adjustments"] == "OA-23:50.00"
    assert second_claim["adjustments"] == "OA-23:50.00;CO-45:100.00"
    assert second_claim["modifiers"] == "25"
    denied = out[3]
    assert denied["claim_status"] == "4" and denied["claim_status_text"] == "Denied"
    assert denied["modifiers"] == "GP:59" and denied["modifier_2"] == "59"
    assert denied["units"] == "2"
    assert rows.payments[0].provider_adjustments[1].amount == Decimal("-5.25")


def test_claim_without_service_lines_gives_one_row() -> None:
    text = R835.decode()
    start = text.index("SVC*HC:97110")
    end = text.index("PLB*")
    raw = (text[:start] + text[end:]).encode()
    rows = list(remit_to_rows(raw))
    assert rows[-1]["patient_control_number"] == "PCN1003"
    assert rows[-1]["procedure_code"] == "" and rows[-1]["line_charge"] == ""


def test_unbalanced_835_is_flagged() -> None:
    rows = remit_to_rows(UNBALANCED)
    assert len(list(rows)) == 4  # rows still come
    assert not rows.balanced
    messages = [i.message for i in rows.issues]
    assert any("service line 2 (85025) of claim PCN1001 does not balance" in m for m in messages)
    assert any("BPR02 is 520.00" in m and "505.25" in m for m in messages)
    assert {i.location for i in rows.issues} == {
        "ST02=0001/2100[CLP01=PCN1001]/2110[2]/SVC03",
        "ST02=0001/BPR02",
    }


def test_claim_level_imbalance() -> None:
    raw = R835.replace(b"CLP*PCN1002*1*500*350", b"CLP*PCN1002*1*500*360").replace(b"BPR*I*505.25", b"BPR*I*515.25")
    rows = remit_to_rows(raw)
    list(rows)
    assert [i.location for i in rows.issues] == ["ST02=0001/2100[CLP01=PCN1002]/CLP04"]
    assert (
        "charge 500.00 - adjustments 150.00 (claim 50.00 + lines 100.00) = 350.00, but paid is 360.00"
        in rows.issues[0].message
    )


def test_x12_835_to_csv_default_layout_file() -> None:
    out = x12_835_to_csv(R835)
    text = out.decode()
    lines = list(csv.reader(io.StringIO(text)))
    layout = load_layout()
    assert lines[0] == [c.header for c in layout.columns]
    assert lines[0][:3] == ["Payer", "Payer ID", "Check/EFT Number"]
    assert len(lines) == 5
    row = dict(zip(lines[0], lines[1], strict=False))
    assert row["Payment Date"] == "01/16/2024"  # the layout's date_format
    assert row["Line Adjustments"] == "CO-45:30.00;PR-2:20.00"
    assert text.endswith("\r\n")


def test_x12_835_to_csv_refuses_unbalanced_unless_told() -> None:
    with pytest.raises(ValidationError) as err:
        x12_835_to_csv(UNBALANCED)
    assert err.value.code == "balance" and len(err.value.issues) == 2
    issues: list = []
    out = x12_835_to_csv(UNBALANCED, on_unbalanced="ignore", issues=issues)
    assert out.count(b"\r\n") == 5 and len(issues) == 2


def test_custom_layout_file(tmp_path: Path) -> None:
    layout = tmp_path / "layout.yaml"
    layout.write_text(
        "delimiter: tab\nquoting: all\nline_terminator: lf\ndate_format: '%Y%m%d'\n"
        "columns:\n  - {field: patient_control_number, header: PCN}\n  - line_paid\n  - service_date\n"
    )
    out = x12_835_to_csv(R835, layout).decode()
    assert out.splitlines()[:2] == ['"PCN"\t"line_paid"\t"service_date"', '"PCN1001"\t"100.00"\t"20240102"']


def test_layout_errors_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("delimiter: ';;'\nsurprise: 1\ncolumns:\n  - {field: nope}\n")
    with pytest.raises(ConfigError) as err:
        load_layout(bad)
    text = " ".join(p[2] for p in err.value.problems)
    assert "unknown field 'nope'" in text and "surprise" in text and "delimiter" in text


def test_layout_file_lists_only_known_fields() -> None:
    path = ROOT / "mappings" / "x12" / "835_posting_layout.yaml"
    layout = load_layout(path)
    assert all(c.field in ROW_FIELDS for c in layout.columns)
    assert all(name in path.read_text() for name in ROW_FIELDS)  # the file documents every field


def _big_835(claims: int) -> bytes:
    """An 835 with many claims, built from the sample's claim block (balanced)."""
    text = R835.decode()
    head = text[: text.index("LX*1")]
    block = text[text.index("CLP*PCN1001") : text.index("CLP*PCN1002")]
    body = "".join(block.replace("PCN1001", f"PCN{i:06d}") for i in range(claims))
    total = Decimal("180") * claims
    head = head.replace("BPR*I*505.25", f"BPR*I*{total}")
    segs = (head + "LX*1~\n" + body).count("~") - 2 + 1  # ST..SE, minus ISA/GS, plus SE
    return (head + "LX*1~\n" + body + f"SE*{segs}*0001~\nGE*1*101~\nIEA*1*000000101~\n").encode()


def test_streaming_large_835_in_small_chunks() -> None:
    raw = _big_835(500)
    reader = RemitReader(io.BytesIO(raw), chunk_size=257)
    count = sum(1 for _ in reader)
    assert count == 500 and reader.line_count == 1000
    assert reader.issues == []
    out = io.StringIO()
    rows = write_remit_csv(
        io.BytesIO(raw), out, CsvLayout((CsvColumn("PCN", "patient_control_number"),)), chunk_size=1000
    )
    assert out.getvalue().count("\r\n") == 1001 and rows.balanced


def test_not_an_835() -> None:
    with pytest.raises(X12ParseError, match="not an 835"):
        list(remit_to_rows((SAMPLES / "claims_837p.837").read_bytes()))
    with pytest.raises(X12ParseError, match="not a number"):
        list(remit_to_rows(R835.replace(b"CLP*PCN1002*1*500", b"CLP*PCN1002*1*5X0")))


def test_remit_to_fhir_eobs_validate_as_r4() -> None:
    from fhir.resources.R4B.bundle import Bundle

    issues: list = []
    bundle = remit_to_fhir(R835, issues=issues)
    assert issues == []
    assert bundle["type"] == "collection"
    eobs = [e["resource"] for e in bundle["entry"]]
    assert [e["claim"]["identifier"]["value"] for e in eobs] == ["PCN1001", "PCN1002", "PCN1003"]
    Bundle.model_validate(bundle)  # raises on an invalid resource
    first = eobs[0]
    assert first["resourceType"] == "ExplanationOfBenefit"
    assert first["payment"] == {
        "amount": {"value": 180.0, "currency": "USD"},
        "date": "2024-01-16",
        "identifier": {"value": "EFT20240116001"},
    }
    assert first["item"][0]["adjudication"][3]["reason"]["coding"][0]["code"] == "45"
    assert eobs[2]["disposition"] == "Denied"
    assert len({e["fullUrl"] for e in bundle["entry"]}) == 3
