"""X12 reader: delimiters from the ISA, newline tolerance, streaming in chunks, envelopes, malformed input."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from x12_fixtures import CORPUS, SAMPLES

from hub.errors import X12ParseError
from hub.transforms.x12 import SegmentReader, iter_segments, iter_transactions, parse_document
from hub.transforms.x12.reader import read_isa_header

P837 = (SAMPLES / "claims_837p.837").read_bytes()


def _corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.name != "LICENSE")


def test_delimiters_come_from_the_isa() -> None:
    raw = (SAMPLES / "ack_277ca.277").read_text()
    odd = raw.replace("*", "|").replace("~", "!").replace("^", "{").replace(":", "}")  # the text has none of these
    d = read_isa_header(odd)
    assert (d.element, d.repetition, d.component, d.segment) == ("|", "{", "}", "!")
    doc = parse_document(odd.encode())
    assert doc.get("STC01-1") == "A1"
    assert doc.get("NM1[QC]03") == "DOE"
    assert doc.to_bytes() == odd.encode()


@pytest.mark.parametrize("sep", ["", "\n", "\r\n"])
def test_newline_tolerant(sep: str) -> None:
    raw = P837.decode().replace("~\n", "~" + sep).encode()
    segs = list(iter_segments(raw))
    assert [s.id for s in segs[:3]] == ["ISA", "GS", "ST"]
    assert segs[-1].id == "IEA"
    assert len(segs) == P837.count(b"~")
    assert parse_document(raw).to_bytes() == raw


def test_newline_as_segment_terminator() -> None:
    text = P837.decode()
    text = text[:105] + "\n" + text[107:].replace("~\n", "\r\n")  # the ISA names \n as terminator
    segs = list(iter_segments(text.encode()))
    assert segs[3].id == "BHT" and segs[3][6] == "CH"  # the \r is not part of the value
    assert segs[-1].elements == ["IEA", "1", "000001001"]


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
def test_streaming_in_small_chunks_gives_the_same_segments(chunk: int) -> None:
    whole = [s.elements for s in iter_segments(P837)]
    streamed = [s.elements for s in SegmentReader(io.BytesIO(P837), chunk_size=chunk)]
    assert streamed == whole


def test_streaming_utf8_split_across_chunks() -> None:
    raw = P837.decode().replace("DOE*JANE", "DOÉ*JÄNE", 1).encode()
    names = [s[3] for s in SegmentReader(io.BytesIO(raw), chunk_size=3) if s.id == "NM1" and s[1] == "IL"]
    assert names[0] == "DOÉ"


def test_several_groups_transactions_and_interchanges() -> None:
    one = P837.decode()
    st = one[one.index("ST*") : one.index("GE*")]
    gs = one[one.index("GS*") : one.index("GS*") + one[one.index("GS*") :].index("\n") + 1]
    two_tx = one.replace("GE*1*1001", "GE*2*1001").replace(st, st + st.replace("0001001", "0001002"), 1)
    # second group in the same interchange
    group2 = gs.replace("*1001*", "*1002*") + st + "GE*1*1002~\n"
    two_groups = two_tx.replace("IEA*1*", "IEA*2*").replace("IEA*2*", group2 + "IEA*2*")
    # a second interchange with other delimiters
    other = one.replace("*", "|").replace("~", "\n").replace(":", ">").replace("^", "{")
    other = other.replace("\n\n", "\n").replace("000001001", "000001002")
    raw = (two_groups + other).encode()
    txs = list(iter_transactions(raw))
    assert len(txs) == 4
    assert [t.gs[6] for t in txs] == ["1001", "1001", "1002", "1001"]
    assert txs[-1].isa.delimiters.element == "|"
    assert txs[-1].segments[0].id == "ST" and txs[-1].segments[-1].id == "SE"
    assert all(t.version == "005010X222A1" for t in txs)
    reader = SegmentReader(raw)
    list(reader)
    assert reader.envelope_issues == []
    doc = parse_document(raw)
    assert doc.get("ST[4]/CLM01") == "PCN1001"
    assert doc.to_bytes() == raw


def test_envelope_mismatches_are_issues_not_errors() -> None:
    reader = SegmentReader((SAMPLES / "envelope_iea_mismatch.837").read_bytes())
    list(reader)
    assert [i.code for i in reader.envelope_issues] == ["001"]
    raw = P837.replace(b"\nSE*", b"\nSE*9", 1)
    reader = SegmentReader(raw)
    list(reader)
    assert [i.code for i in reader.envelope_issues] == ["4"]


@pytest.mark.parametrize(
    "name, code, words",
    [
        ("malformed_isa_width.837", "006", "ISA06"),
        ("malformed_no_isa.837", "022", "missing ISA"),
        ("malformed_truncated.837", "2", "no SE"),
        ("malformed_segment_id.837", "1", "bad segment identifier 'dmg'"),
        ("malformed_out_of_order.837", "7", "out of order in loop 2010AA"),
        ("malformed_missing_element.837", "1", "CLM02 (total claim charge) is missing"),
    ],
)
def test_malformed_input_raises_x12parseerror_with_reason(name: str, code: str, words: str) -> None:
    raw = (SAMPLES / name).read_bytes()
    with pytest.raises(X12ParseError) as err:
        parse_document(raw)
    assert words in str(err.value)
    assert err.value.code == code
    assert err.value.location


def test_streaming_reader_reports_the_same_syntax_errors() -> None:
    with pytest.raises(X12ParseError, match="missing ISA"):
        list(iter_segments((SAMPLES / "malformed_no_isa.837").read_bytes()))
    with pytest.raises(X12ParseError, match="no SE"):
        list(iter_segments(io.BytesIO((SAMPLES / "malformed_truncated.837").read_bytes())))
    with pytest.raises(X12ParseError, match="empty input"):
        list(iter_segments(b"  \n"))
    with pytest.raises(X12ParseError, match="segment terminator"):
        list(iter_segments(P837.rstrip(b"\n").rstrip(b"~")))


@pytest.mark.parametrize(
    "name, words",
    [
        ("x12_bad_first_line.txt", "ISA02 is 9 characters"),
        ("x12_bad_segment_identifier.txt", "bad segment identifier"),
        ("x12_no_isa_line.txt", "missing ISA"),
        ("x12_missing_elements.txt", "NM102 (entity type qualifier) is missing"),
        ("x12_segments_out_of_order.txt", "N4 (segment 12) is out of order in loop 2010AA"),
        ("x12_bad_valid_code.txt", "NM1*117 (segment 9) is not expected in loop 2000A"),
    ],
)
def test_imsweb_malformed_corpus(name: str, words: str) -> None:
    path = CORPUS / "imsweb" / name
    if not path.exists():
        pytest.skip(f"shared corpus not present: {path}")
    with pytest.raises(X12ParseError) as err:
        parse_document(path.read_bytes())
    assert words in str(err.value)


@pytest.mark.parametrize("path", _corpus_files() or [None], ids=lambda p: p.name if p else "absent")
def test_every_corpus_file_reads_without_a_crash(path: Path | None) -> None:
    if path is None:
        pytest.skip(f"shared X12 corpus not found at {CORPUS}")
    raw = path.read_bytes()
    try:
        doc = parse_document(raw)
    except X12ParseError as exc:
        assert str(exc) and exc.code  # a clear reason, never a crash
        return
    assert doc.to_bytes() == raw
    assert doc.get("ISA13")
    # the non-strict reading and the streaming reader agree on the segments
    assert [s.elements for s in iter_segments(io.BytesIO(raw))] == [s.elements for s in doc.segments]
