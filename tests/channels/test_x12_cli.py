"""`hub convert` and `hub validate` for X12, with the example clinic's settings."""

from __future__ import annotations

import csv
import io

from hub.cli import main
from hub.transforms.x12 import parse_document, validate
from support import ROOT, SAMPLES

CONFIG = str(ROOT / "config")
X12 = SAMPLES / "x12"


def test_convert_a_dft_to_a_valid_837p_with_the_clinics_settings(capsys):
    assert main(["convert", str(SAMPLES / "hl7v2" / "dft_p03.hl7"), "--to", "x12", "--config", CONFIG]) == 0
    out = capsys.readouterr()
    raw = out.out.encode()
    assert raw.startswith(b"ISA*00*") and out.err == ""
    assert validate(raw) == []
    doc = parse_document(raw)
    assert doc.get("ISA06").strip() == "CLINIC01" and doc.get("GS08") == "005010X222A1"
    assert doc.get("NM1[85]03") == "EXAMPLE FAMILY CLINIC" and doc.get("CLM01") == "V00012399"


def test_convert_a_fhir_claim_bundle_to_837i(capsys):
    assert main(["convert", str(X12 / "fhir_claim_bundle.json"), "--to", "x12", "--kind", "I", "--config", CONFIG]) == 0
    out = capsys.readouterr()  # the Bundle also holds a professional claim: named, not silently dropped
    assert "FHIRPCN001 is an 837P claim" in out.err and out.out.startswith("ISA*")
    assert validate(out.out.encode()) == []
    assert parse_document(out.out.encode()).get("CLM01") == "FHIRINST01"


def test_convert_a_bundle_of_both_kinds_asks_which(capsys):
    assert main(["convert", str(X12 / "fhir_claim_bundle.json"), "--to", "x12", "--config", CONFIG]) == 1
    assert "--kind" in capsys.readouterr().err


def test_convert_an_unbillable_dft_exits_1_with_the_reason(tmp_path, capsys):
    bad = tmp_path / "dft.hl7"
    bad.write_bytes((SAMPLES / "hl7v2" / "dft_p03.hl7").read_bytes().replace(b"|XYZ123456789", b"|"))
    assert main(["convert", str(bad), "--to", "x12", "--config", CONFIG]) == 1
    out = capsys.readouterr()
    assert out.out == "" and "member number" in out.err and "IN1-36" in out.err


def test_convert_an_835_to_csv_with_a_header_row(capsys):
    assert main(["convert", str(X12 / "remit_3_claims_plb.835"), "--to", "csv", "--config", CONFIG]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0][:6] == [
        "Payer",
        "Payer ID",
        "Check/EFT Number",
        "Payment Date",
        "Payment Method",
        "Patient Control Number",
    ]
    assert len(rows) > 1 and rows[1][5] == "PCN1001"


def test_convert_an_unbalanced_835_prints_it_and_exits_1(capsys):
    assert main(["convert", str(X12 / "remit_unbalanced.835"), "--to", "csv", "--config", CONFIG]) == 1
    out = capsys.readouterr()
    assert out.out.startswith("Payer,") and "does not balance" in out.err


def test_convert_an_835_to_fhir(capsys):
    assert main(["convert", str(X12 / "remit_3_claims_plb.835"), "--to", "fhir", "--config", CONFIG]) == 0
    assert '"ExplanationOfBenefit"' in capsys.readouterr().out


def test_validate_exit_codes(capsys):
    assert main(["validate", str(X12 / "claims_837p.837"), str(X12 / "remit_3_claims_plb.835")]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["validate", str(X12 / "malformed_missing_element.837")]) == 1
    out = capsys.readouterr().out
    assert "CLM02" in out and "Total Claim Charge Amount" in out and "error(s)" in out
    assert main(["validate", str(X12 / "malformed_isa_width.837")]) == 1
    assert "ISA06" in capsys.readouterr().out
