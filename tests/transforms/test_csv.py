"""CSV: the column-path document, row splitting, layouts with row-level error reports, and the conversions
csv_to_v2 (roster → ADT^A28/A31), csv_to_fhir (→ Patient / Bundle) and v2_to_csv."""

from __future__ import annotations

import json

import pytest

from hub.channels.base import Context
from hub.errors import ConfigError, CsvParseError, ValidationError
from hub.message import Message
from hub.transforms import csv as hcsv
from hub.transforms.hl7v2 import parse as parse_v2
from hub.transforms.hl7v2 import split_batch
from support import CORPUS, ROOT, SAMPLES

CSV = SAMPLES / "csv"
LAYOUT = "csv/pm_roster.yaml"
CTX = Context(home=ROOT, mappings_dir=ROOT / "mappings")


def layout() -> hcsv.Layout:
    return hcsv.load_layout(CTX, LAYOUT)


def to_v2(**kw) -> hcsv.CsvToV2:
    return hcsv.CsvToV2(hcsv.CsvToV2.Config(layout=LAYOUT, **kw), CTX)


def to_fhir(**kw) -> hcsv.CsvToFhir:
    return hcsv.CsvToFhir(hcsv.CsvToFhir.Config(layout=LAYOUT, **kw), CTX)


def csv_msg(raw: bytes) -> Message:
    return Message(raw, "csv")


# ============================================================================================ document
def test_the_document_reads_and_writes_columns_and_round_trips_exactly():
    raw = b'\xef\xbb\xbfMRN;NAME;NOTE\r\n7;"Doe; Jane";"two\r\nlines"\r\n8;Roe;\r\n'
    doc = hcsv.parse_document(raw)
    assert doc.delimiter == ";" and doc.header == ["MRN", "NAME", "NOTE"]
    assert doc.get("NAME") == "Doe; Jane" and doc.get("NOTE") == "two\r\nlines" and doc.get_all("MRN") == ["7", "8"]
    assert doc.get("MISSING") is None and doc.get_all("NOTE") == ["two\r\nlines"]
    assert doc.to_bytes() == raw, "unmodified: the very same bytes"
    doc.set("MRN", "X")
    doc.set("SITE", "MAIN")
    doc.delete("NOTE")
    again = hcsv.parse_document(doc.to_bytes())
    assert (
        again.header == ["MRN", "NAME", "NOTE", "SITE"]
        and again.get_all("MRN") == ["X", "X"]
        and again.get_all("SITE") == ["MAIN", "MAIN"]
    )
    assert again.get("NOTE") is None and again.get("NAME") == "Doe; Jane" and doc.to_bytes().startswith(b"\xef\xbb\xbf")


def test_tabs_pipes_and_windows_1252_are_read():
    assert hcsv.parse_document(b"A\tB\n1\t2\n").get("B") == "2"
    assert hcsv.parse_document(b"A|B\n1|2\n").get("B") == "2"
    doc = hcsv.parse_document("LAST,FIRST\nM\u00fcller,J\u00f6rg\n".encode("cp1252"))
    assert doc.encoding == "cp1252" and doc.get("LAST") == "M\u00fcller"


def test_a_single_broken_row_is_a_parse_error_naming_the_column():
    with pytest.raises(CsvParseError, match="column C: missing") as e:
        hcsv.parse_document(b"A,B,C\n1,2\n")
    assert e.value.location == "C"
    with pytest.raises(CsvParseError, match="not valid CSV"):
        hcsv.parse_document(b'A,B\n1,"x"y\n')
    with pytest.raises(CsvParseError, match="no CSV header"):
        hcsv.parse_document(b"\r\n  \n")
    with pytest.raises(CsvParseError, match="appears twice"):
        hcsv.parse_document(b"A,A\n1,2\n")
    # in a file of several rows a broken row is kept as an error and the good rows stay readable
    doc = hcsv.parse_document(b"A,B,C\n1,2\n4,5,6\n7,8,9,\n")
    assert [str(e) for e in doc.errors] == [
        "row 1 (line 2), column C: missing: the row has 2 fields, the header names 3 columns"
    ]
    assert doc.get_all("C") == ["6", "9"], "a trailing empty field is harmless"


# ============================================================================================ split
def test_split_rows_keeps_the_header_with_each_row():
    raw = b'ID,NOTE\r\n1,"a\r\nb"\r\n\r\n2,c\r\n3,d'
    assert hcsv.split_rows(raw) == [b'ID,NOTE\r\n1,"a\r\nb"\r\n', b"ID,NOTE\r\n2,c\r\n", b"ID,NOTE\r\n3,d"]
    assert hcsv.split_rows(b"ID,NOTE\n") == [b"ID,NOTE\n"], (
        "a header without rows stays whole (and is rejected by a transform)"
    )
    assert hcsv.split_rows(b"ID") == [b"ID"]
    rows = hcsv.split_rows((CSV / "pm_roster_quoted.csv").read_bytes())
    assert len(rows) == 2 and b"Rear entrance" in rows[0]
    assert hcsv.parse_document(rows[0]).get("ADDRESS") == "12 Elm St, Apt 3\nRear entrance"


# ============================================================================================ layouts
def test_every_bad_row_is_reported_with_row_line_column_and_reason():
    rows = hcsv.read_rows((CSV / "pm_roster_bad.csv").read_bytes(), layout())
    assert rows.total == 6 and [r.row for r in rows.records] == [1, 3, 6]
    assert [(e.row, e.line, e.column) for e in rows.errors] == [
        (2, 3, "BIRTHDATE"),
        (4, 5, "LAST"),
        (4, 5, "GENDER"),
        (5, 6, "MAIDEN"),
    ]
    assert [e.reason for e in rows.errors] == [
        "'2014-02-30' is not a date in the form %Y-%m-%d",
        "a value is required",
        "'X' is not one of M, F",
        "missing: the row has 10 fields, the header names 25 columns",
    ]
    good = rows.records[0]
    assert str(good.values["BIRTHDATE"]) == "2013-11-09" and str(good.values["LAT"]).startswith("42.19")


def test_file_level_problems_reject_the_whole_file():
    with pytest.raises(CsvParseError, match=r"lacks required column.*BIRTHDATE"):
        hcsv.read_rows(b"Id,FIRST,LAST,GENDER\n1,A,B,F\n", layout())
    strict = layout().model_copy(update={"extra_columns": "reject"})
    with pytest.raises(CsvParseError, match="does not know: SHOE_SIZE"):
        hcsv.read_rows((CSV / "pm_roster.csv").read_bytes().replace(b"HEALTHCARE_COVERAGE", b"SHOE_SIZE"), strict)


def test_layout_problems_are_config_errors(tmp_path):
    ctx = Context(home=tmp_path, mappings_dir=tmp_path)
    (tmp_path / "bad.yaml").write_text("columns: {A: {type: date}}\nhl7: {fields: {PID-3.1: B}}\n")
    with pytest.raises(ConfigError, match="uses column 'B'"):
        hcsv.load_layout(ctx, "bad.yaml")
    (tmp_path / "typo.yaml").write_text("columns: {A: {typ: date}}\n")
    with pytest.raises(ConfigError, match=r"columns\.A\.typ"):
        hcsv.load_layout(ctx, "typo.yaml")
    with pytest.raises(ConfigError, match="not found"):
        hcsv.load_layout(ctx, "none.yaml")
    (tmp_path / "nohl7.yaml").write_text("columns: {A: {}}\n")
    with pytest.raises(ConfigError, match="no hl7: section"):
        hcsv.CsvToV2(hcsv.CsvToV2.Config(layout="nohl7.yaml"), ctx)


def test_a_layout_without_a_header_reads_columns_by_position(tmp_path):
    (tmp_path / "pos.yaml").write_text(
        "delimiter: '|'\nheader: false\n"
        "columns: {MRN: {required: true}, DOB: {type: date, format: '%m/%d/%Y'}, VISITS: {type: integer}}\n"
        "fhir: {elements: {'identifier[0].value': MRN, birthDate: DOB, 'extension[0].valueInteger': VISITS}}\n"
    )
    lay = hcsv.load_layout(Context(home=tmp_path, mappings_dir=tmp_path), "pos.yaml")
    rows = hcsv.read_rows(b"A1|02/03/2001|4\nA2|13/40/2001|x\n", lay)
    assert [r.values["MRN"] for r in rows.records] == ["A1"] and str(rows.records[0].values["DOB"]) == "2001-02-03"
    assert [(e.row, e.column) for e in rows.errors] == [(2, "DOB"), (2, "VISITS")]
    t = hcsv.CsvToFhir(hcsv.CsvToFhir.Config(layout="pos.yaml"), Context(home=tmp_path, mappings_dir=tmp_path))
    pat = json.loads(t(csv_msg(b"A1|02/03/2001|4\n")).raw)
    assert pat == {
        "resourceType": "Patient",
        "identifier": [{"value": "A1"}],
        "birthDate": "2001-02-03",
        "extension": [{"valueInteger": 4}],
    }


def test_the_synthea_roster_reads_without_a_bad_row():
    patients = CORPUS / "csv/synthea/patients.csv"
    if not patients.exists():
        pytest.skip(f"{patients} is not here")
    rows = hcsv.read_rows(patients.read_bytes(), layout())
    assert rows.errors == [] and rows.total == len(rows.records) > 20


# ============================================================================================ csv_to_v2
def test_a_roster_row_becomes_an_adt_a28():
    [row] = hcsv.split_rows((CSV / "pm_roster.csv").read_bytes())[0:1]
    out = to_v2()(csv_msg(row))
    msg = parse_v2(out.raw)
    assert out.content_type == "hl7v2" and out.parsed is not None
    assert (
        msg.get("MSH-9") == "ADT^A28^ADT_A05"
        and msg.get("EVN-1") == "A28"
        and msg.get("MSH-3") == "PM"
        and msg.get("MSH-5") == "EHR"
    )
    assert msg.get("PID-3.4") == "PM" and msg.get("PID-3.5") == "MR"
    doc = hcsv.parse_document(row)
    assert (
        msg.get("PID-3.1") == doc.get("Id")
        and msg.get("PID-5.1") == doc.get("LAST")
        and msg.get("PID-5.2") == doc.get("FIRST")
    )
    assert msg.get("PID-7") == doc.get("BIRTHDATE").replace("-", "") and msg.get("PID-8") == doc.get("GENDER")
    assert msg.get("PID-19") == doc.get("SSN") and msg.get("PID-10.3") == "CDCREC" and msg.get("PV1-2") == "N"
    assert [s.name for s in msg.segments] == ["MSH", "EVN", "PID", "PV1"]
    assert msg.get("PID-29") is None and msg.get("PID-30") is None


def test_values_with_delimiters_are_escaped_and_deaths_are_flagged():
    raw = (CSV / "pm_roster.csv").read_bytes()
    head, first = hcsv.split_rows(raw)[0].split(b"\n", 1)
    doc = hcsv.parse_document(head + b"\n" + first)
    doc.set("ADDRESS", "1^2 Main St & Co|rear")
    doc.set("DEATHDATE", "2020-05-06")
    msg = parse_v2(to_v2(trigger="A31")(csv_msg(doc.to_bytes())).raw)
    assert msg.get("PID-11.1") == "1^2 Main St & Co|rear" and msg.get("MSH-9.2") == "A31"
    assert msg.get("PID-29") == "20200506" and msg.get("PID-30") == "Y"


def test_the_trigger_can_come_from_a_column(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "columns: {MRN: {required: true}, ACTION: {type: code, values: [N, U]}}\n"
        "hl7: {trigger: {column: ACTION, map: {N: A28, U: A31}, default: A31}, fields: {PID-3.1: MRN}}\n"
    )
    t = hcsv.CsvToV2(hcsv.CsvToV2.Config(layout="r.yaml"), Context(home=tmp_path, mappings_dir=tmp_path))
    out = t(csv_msg(b"MRN,ACTION\n1,N\n2,U\n3,\n"))
    assert [parse_v2(m).get("MSH-9.2") for m in split_batch(out.raw)] == ["A28", "A31", "A31"]


def test_a_whole_file_rejects_with_every_bad_row_or_sends_the_good_ones():
    raw = (CSV / "pm_roster_bad.csv").read_bytes()
    with pytest.raises(ValidationError) as e:
        to_v2()(csv_msg(raw))
    text = str(e.value)
    assert text.startswith("csv_to_v2: 3 bad row(s) of 6: row 2 (line 3), column BIRTHDATE")
    assert (
        "row 4 (line 5), column LAST" in text
        and "row 4 (line 5), column GENDER" in text
        and "row 5 (line 6), column MAIDEN" in text
    )
    out = to_v2(bad_rows="skip")(csv_msg(raw))
    msgs = [parse_v2(m) for m in split_batch(out.raw)]
    assert out.raw.startswith(b"FHS|") and b"BTS|3\r" in out.raw and len(msgs) == 3
    assert out.meta["csv_rows_skipped"] == 3 and len(out.meta["csv_row_errors"]) == 4
    # one split row that is bad: the reason names the column (the source's report names the row)
    bad = hcsv.split_rows(raw)[1]
    with pytest.raises(ValidationError, match=r"^csv_to_v2: 1 bad row\(s\) of 1: column BIRTHDATE: '2014-02-30'"):
        to_v2()(csv_msg(bad))
    with pytest.raises(ValidationError, match="no data rows"):
        to_v2()(csv_msg(raw.split(b"\n")[0] + b"\n"))


# ============================================================================================ csv_to_fhir
def test_a_roster_row_becomes_a_valid_fhir_patient():
    row = hcsv.split_rows((CSV / "pm_roster.csv").read_bytes())[4]
    doc = hcsv.parse_document(row)
    out = to_fhir()(csv_msg(row))
    pat = json.loads(out.raw)
    assert out.content_type == "fhir" and pat["resourceType"] == "Patient"
    assert pat["identifier"][0]["value"] == doc.get("Id") and pat["identifier"][0]["type"]["coding"][0]["code"] == "MR"
    assert pat["name"] == [
        {"use": "official", "family": doc.get("LAST"), "given": [doc.get("FIRST")], "prefix": [doc.get("PREFIX")]}
    ]
    assert pat["gender"] == {"M": "male", "F": "female"}[doc.get("GENDER")] and pat["birthDate"] == doc.get("BIRTHDATE")
    from fhir.resources.R4B.patient import Patient

    Patient.model_validate(pat)  # a valid R4(B) Patient


def test_several_rows_become_a_transaction_of_conditional_updates():
    out = to_fhir()(csv_msg((CSV / "pm_roster.csv").read_bytes()))
    bundle = json.loads(out.raw)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction" and len(bundle["entry"]) == 5
    first = bundle["entry"][0]
    assert first["request"] == {
        "method": "PUT",
        "url": f"Patient?identifier=urn:oid:2.16.840.1.113883.3.9999.1|{first['resource']['identifier'][0]['value']}",
    }
    from fhir.resources.R4B.bundle import Bundle

    Bundle.model_validate(bundle)
    coll = json.loads(to_fhir(bundle="collection")(csv_msg((CSV / "pm_roster.csv").read_bytes())).raw)
    assert coll["type"] == "collection" and "request" not in coll["entry"][0]


# ============================================================================================ v2_to_csv
def test_hl7_paths_become_csv_columns():
    t = hcsv.V2ToCsv(
        hcsv.V2ToCsv.Config(columns={"MRN": "PID-3.1", "LAST": "PID-5.1", "DOB": "PID-7", "NOTE": "ZZZ-1"}), CTX
    )
    adt = (SAMPLES / "hl7v2/adt_a04.hl7").read_bytes()
    out = t(Message(adt, "hl7v2"))
    v2 = parse_v2(adt)
    assert out.content_type == "csv"
    assert out.raw.decode() == f"MRN,LAST,DOB,NOTE\r\n{v2.get('PID-3.1')},{v2.get('PID-5.1')},{v2.get('PID-7')},\r\n"
    t = hcsv.V2ToCsv(
        hcsv.V2ToCsv.Config(columns={"MRN": "PID-3.1"}, header=False, delimiter="|", line_terminator="\n"), CTX
    )
    assert t(Message(adt, "hl7v2")).raw.decode() == f"{v2.get('PID-3.1')}\n"


def test_a_layout_round_trips_csv_to_v2_and_back():
    rows = hcsv.split_rows((CSV / "pm_roster.csv").read_bytes())
    back = hcsv.V2ToCsv(hcsv.V2ToCsv.Config(layout=LAYOUT), CTX)
    for row in rows:
        again = back(to_v2()(csv_msg(row)))
        a, b = hcsv.parse_document(row), hcsv.parse_document(again.raw)
        assert b.header == a.header
        for column in (
            "Id",
            "BIRTHDATE",
            "DEATHDATE",
            "SSN",
            "FIRST",
            "LAST",
            "PREFIX",
            "GENDER",
            "RACE",
            "ETHNICITY",
            "ADDRESS",
            "CITY",
            "ZIP",
            "MARITAL",
        ):
            assert b.get(column) == a.get(column), column
        assert b.get("LAT") is None, "columns without an HL7 field are left empty"


def test_transforms_refuse_other_content():
    from hub.errors import MappingError

    with pytest.raises(MappingError, match="needs CSV"):
        to_v2()(Message(b"{}", "fhir"))
    t = hcsv.V2ToCsv(hcsv.V2ToCsv.Config(columns={"A": "PID-3"}), CTX)
    with pytest.raises(MappingError, match="needs HL7 v2"):
        t(csv_msg(b"A\n1\n"))
