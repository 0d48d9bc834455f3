"""`hub convert FILE --to fhir|hl7v2`: BOM, LF/CRLF and trailing blank lines tolerated; stdout and exit codes."""

from __future__ import annotations

import json

from hub.cli import main
from support import ROOT, SAMPLES

CONFIG = str(ROOT / "config")


def test_v2_to_fhir_prints_a_bundle(tmp_path, capsys):
    raw = (SAMPLES / "hl7v2" / "adt_a04.hl7").read_bytes()
    f = tmp_path / "in.hl7"
    f.write_bytes(b"\xef\xbb\xbf" + raw.replace(b"\r", b"\r\n") + b"\r\n\r\n\n")  # BOM, CRLF, blank lines at the end
    assert main(["convert", str(f), "--to", "fhir", "--config", CONFIG]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["type"] == "transaction" and out["entry"][0]["resource"]["name"][0]["family"] == "DOE"
    f.write_bytes(raw.replace(b"\r", b"\n"))
    assert main(["convert", str(f), "--to", "fhir", "--bundle", "collection", "--config", CONFIG]) == 0
    assert json.loads(capsys.readouterr().out)["type"] == "collection"


def test_fhir_to_v2_and_back(tmp_path, capsys):
    assert main(["convert", str(SAMPLES / "hl7v2" / "oru_r01.hl7"), "--to", "fhir", "--config", CONFIG]) == 0
    f = tmp_path / "b.json"
    f.write_text("\ufeff" + capsys.readouterr().out + "\n\n", encoding="utf-8")
    assert main(["convert", str(f), "--to", "hl7v2", "--config", CONFIG]) == 0
    text = capsys.readouterr().out
    assert text.startswith("MSH|^~\\&|HUB|") and "\nOBX|10|" in text and "ORU^R01^ORU_R01" in text


def test_problems_go_to_stderr_with_exit_1(tmp_path, capsys):
    # a value that is not valid FHIR is left out with a warning (invalid: warn), the rest converts: exit 0
    assert main(["convert", str(SAMPLES / "hl7v2" / "fhir_oru_bad_nm.hl7"), "--to", "fhir", "--config", CONFIG]) == 0
    captured = capsys.readouterr()
    assert "message 1: warning: v2_to_fhir: OBX-5" in captured.err and "not a number" in captured.err
    assert '"valueString": "high"' in captured.out
    bad = tmp_path / "x.json"
    bad.write_text('{"resourceType": "Basic"}')
    assert main(["convert", str(bad), "--to", "hl7v2", "--config", CONFIG]) == 1
    assert "nothing to map" in capsys.readouterr().err
    assert main(["convert", str(bad), "--to", "fhir", "--config", CONFIG]) == 1
    assert "cannot convert fhir to fhir" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "missing.hl7"), "--to", "fhir", "--config", CONFIG]) == 1
