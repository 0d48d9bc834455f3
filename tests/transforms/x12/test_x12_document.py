"""X12Document: the Document protocol, paths, loop-aware access, exact round trip."""

from __future__ import annotations

import pytest
from x12_fixtures import SAMPLES

from hub.errors import MappingError
from hub.transforms.document import Document
from hub.transforms.document import parse_document as parse_any
from hub.transforms.x12 import parse_document, parse_path

P837 = (SAMPLES / "claims_837p.837").read_bytes()
I837 = (SAMPLES / "claims_837i.837").read_bytes()
R835 = (SAMPLES / "remit_3_claims_plb.835").read_bytes()


def test_satisfies_the_document_protocol_and_is_registered() -> None:
    doc = parse_any("x12", P837)
    assert isinstance(doc, Document)
    assert doc.get("CLM01") == "PCN1001"


def test_unmodified_round_trip_is_exact() -> None:
    for raw in (P837, I837, R835, (SAMPLES / "remit_3_claims_one_line.835").read_bytes()):
        assert parse_document(raw).to_bytes() == raw
    crlf = b"\xef\xbb\xbf\r\n" + P837.replace(b"~\n", b"~\r\n") + b"\r\n\r\n"
    assert parse_document(crlf).to_bytes() == crlf


@pytest.mark.parametrize(
    "path, value",
    [
        ("CLM01", "PCN1001"),
        ("CLM02", "250"),
        ("CLM05-1", "11"),
        ("CLM05.3", "1"),
        ("NM1[85]03", "EXAMPLE FAMILY CLINIC"),
        ("NM1[85]09", "1234567893"),
        ("NM1[PR]09", "12345"),
        ("NM1[IL][2]04", "JANE"),
        ("NM1[#1]01", "41"),
        ("CLM[2]01", "PCN1002"),
        ("CLM[#2]01", "PCN1002"),
        ("SV101-2", "99213"),
        ("SV101-3", "25"),
        ("HI01-2", "J069"),
        ("HL[23]02", "3"),
        ("REF[EI]02", "371234567"),
        ("ISA06", "CLINIC01"),
        ("ISA16", ":"),
        ("GS08", "005010X222A1"),
        ("2300[2]/CLM01", "PCN1002"),
        ("2300[2]/SV102", "150"),
        ("2010CA/NM104", "TIM"),
        ("2000C/PAT01", "19"),
        ("2400[3]/SV101-2", "99213"),
        ("ST/BHT03", "BATCH0001"),
        ("2310B/NM109", "1992753883"),
    ],
)
def test_paths(path: str, value: str) -> None:
    assert parse_document(P837).get(path) == value


def test_absent_and_empty_paths() -> None:
    doc = parse_document(P837)
    assert doc.get("CLM99") is None
    assert doc.get("NM1[ZZ]03") is None
    assert doc.get("CLP01") is None
    assert doc.get("CLM[9]01") is None
    assert doc.get("2300[9]/CLM01") is None
    assert doc.get("ISA02") is None  # blank-padded authorization
    assert doc.get_all("CLP01") == []


def test_get_all() -> None:
    doc = parse_document(P837)
    assert doc.get_all("CLM01") == ["PCN1001", "PCN1002"]
    assert doc.get_all("2300[2]/SV102") == ["150", "100", "35.25"]
    assert doc.get_all("SV101-2") == ["99213", "85025", "99213", "85025", "36415"]
    assert doc.get_all("DTP[472]03") == ["20240102"] * 5
    assert doc.get("CLM").startswith("CLM*PCN1001*250")  # no element: the segment text


def test_835_paths() -> None:
    doc = parse_document(R835)
    assert doc.get("CLP[2]01") == "PCN1002"
    assert doc.get("BPR02") == "505.25"
    assert doc.get("TRN02") == "EFT20240116001"
    assert doc.get("N1[PE]04") == "1234567893"
    assert doc.get_all("2100/CLP04") == ["180", "350", "0"]
    assert doc.get_all("2100[1]/2110/SVC03") == ["100", "80"]
    assert doc.get("CAS[OA]03") == "50"
    assert doc.get("PLB03-1") == "WO"


def test_loop_views_837() -> None:
    doc = parse_document(P837)
    claims = doc.loops("2300")
    assert [c.get("CLM01") for c in claims] == ["PCN1001", "PCN1002"]
    lines = claims[1].loops("2400")
    assert [ln.get("SV101-2") for ln in lines] == ["99213", "85025", "36415"]
    assert [ln.get("DTP03") for ln in lines] == ["20240102"] * 3
    assert [s.id for s in claims[0].own_segments] == ["CLM", "HI"]
    assert doc.loops("2000C")[0].get("NM1[QC]03") == "DOE"
    assert len(doc.transactions()) == 1
    assert doc.loop_id(doc.segments[9]) == "2010AA"


def test_loop_views_835_and_837i() -> None:
    doc = parse_document(R835)
    assert [c.get("CLP01") for c in doc.loops("2100")] == ["PCN1001", "PCN1002", "PCN1003"]
    assert doc.loops("2100")[2].loops("2110")[0].get("SVC01-4") == "59"
    idoc = parse_document(I837)
    assert [ln.get("SV201") for ln in idoc.loops("2400")] == ["0450", "0300", "0320"] * 2
    assert idoc.get("2310A/NM101") == "71"
    assert idoc.get("2300[2]/CL101") == "1"


def test_set_and_delete_rewrite_only_what_changed() -> None:
    doc = parse_document(P837)
    doc.set("CLM01", "PCN9999")
    doc.set("NM1[85]03", "RENAMED CLINIC")
    doc.set("SV101-3", "59")
    doc.set("2300[2]/CLM05-1", "22")
    doc.delete("SV101-3")  # removes the modifier again (trailing component trimmed)
    out = doc.to_bytes()
    again = parse_document(out)
    assert again.get("CLM01") == "PCN9999"
    assert again.get("NM1[85]03") == "RENAMED CLINIC"
    assert again.get("SV101") == "HC:99213"
    assert again.get("CLM[2]05") == "22:B:1"
    changed = [a for a, b in zip(P837.split(b"\n"), out.split(b"\n"), strict=False) if a != b]
    assert len(changed) == 4


def test_set_creates_a_missing_segment_and_keeps_se01_right() -> None:
    doc = parse_document(P837)
    doc.set("2300[1]/REF[G1]02", "AUTH123")
    out = doc.to_bytes()
    again = parse_document(out)
    assert again.get("2300[1]/REF[G1]02") == "AUTH123"
    # placed by the guide's order: after CLM, before HI (and before the 2400 lines)
    ids = [s.id for s in again.loops("2300")[0].segments]
    assert ids[:4] == ["CLM", "REF", "HI", "NM1"]
    assert again.get("SE01") == str(int(parse_document(P837).get("SE01")) + 1)
    assert again.envelope_issues == []
    from hub.transforms.x12 import validate

    assert validate(out) == []


def test_set_rejects_delimiters_and_bad_paths() -> None:
    doc = parse_document(P837)
    with pytest.raises(MappingError, match="delimiter"):
        doc.set("CLM01", "A*B")
    with pytest.raises(MappingError, match="delimiter"):
        doc.set("CLM05-1", "1:1")
    with pytest.raises(MappingError):
        doc.set("ISA06", "SOMEONE")
    with pytest.raises(MappingError, match="bad X12 path"):
        parse_path("clm01")
    with pytest.raises(MappingError, match="not a loop id"):
        parse_path("LOOP/CLM01")
    with pytest.raises(MappingError, match="names no element"):
        doc.set("CLM", "x")


def test_iter_loops_streams_claims_with_context() -> None:
    import io

    from hub.transforms.x12 import iter_loops

    claims = list(iter_loops(io.BytesIO(P837), "2300", chunk_size=64))
    assert [c.get("CLM01") for c in claims] == ["PCN1001", "PCN1002"]
    assert [ln.get("SV101-2") for ln in claims[1].loops("2400")] == ["99213", "85025", "36415"]
    first, second = claims
    assert first.context["2010AA"].get("NM109") == "1234567893"
    assert first.context["2010BA"].get("NM109") == "MEM123456"
    assert first.context["2010BB"].get("NM103") == "ACME HEALTH PLAN"
    assert first.context["ST"].get("BHT03") == "BATCH0001"
    assert "2010CA" not in first.context  # the first claim's patient is the subscriber
    assert second.context["2010CA"].get("NM104") == "TIM"
    assert second.context["2000B"].get("SBR01") == "P"
    remits = list(iter_loops(R835, "2100"))
    assert [r.get("CLP01") for r in remits] == ["PCN1001", "PCN1002", "PCN1003"]
    assert remits[0].context["1000A"].get("N102") == "ACME HEALTH PLAN"
    assert remits[2].get_all("2110/SVC01-2") == ["97110"]
