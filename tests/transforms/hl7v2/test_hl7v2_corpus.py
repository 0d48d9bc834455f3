"""Every file of the shared third-party corpus is read without a crash: parsed (batches split first) with an
exact round trip, or rejected with a clear Hl7ParseError where it is truly broken."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.errors import Hl7ParseError, Issue
from hub.transforms.hl7v2 import (
    Hl7Message,
    ack_for_unparseable,
    build_ack,
    check_basic,
    meta,
    parse,
    split_batch,
    validate,
)

CORPUS = Path(__file__).resolve().parents[3] / ".." / "shared" / "corpus" / "hl7v2"
FILES = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.name != "LICENSE") if CORPUS.is_dir() else []
PARAMS = [pytest.param(p, id=str(p.relative_to(CORPUS))) for p in FILES] or [
    pytest.param(None, marks=pytest.mark.skip(reason=f"the shared corpus is not here: {CORPUS}"), id="no-corpus")
]

# Files that are broken on purpose (or by accident), and the reason the hub gives.
REJECTED = {
    "rethinkhealth_qa/invalid-missing-msh.hl7": "PID segment before the first MSH",
    "rethinkhealth_qa/invalid-segment-header-length.hl7": "segment 2 does not start with a 3-character segment ID",
    "python_hl7_pkg_batches/sample_bad_batch.hl7": "EVN segment before the first MSH",
    "python_hl7_pkg_batches/sample_bad_batch1.hl7": "BHS before a BTS closed the previous batch",
    "python_hl7_pkg_batches/sample_bad_file.hl7": "EVN segment before the first MSH",
    "python_hl7_pkg_batches/sample_bad_file1.hl7": "BHS before a BTS closed the previous batch",
    "python_hl7_pkg_batches/sample_bad_file2.hl7": "FHS inside a file",
    "python_hl7_pkg_batches/sample_bad_file3.hl7": "EVN segment before the first MSH",
    # ReportStream's generator wrote BTS|25 after 20 messages; split_batch(check_counts=False) reads all 20.
    "prime_reportstream/main__resources__clitests__compare-test-files__test-0001-input-covid-19.hl7": (
        "BTS-1 says 25 message(s) but the batch holds 20"
    ),
}


def read_all(raw: bytes, *, check_counts: bool = True) -> list[Hl7Message]:
    return [parse(part) for part in split_batch(raw, check_counts=check_counts)]


def walk(msg: Hl7Message) -> dict[str, object]:
    """Every field of every segment through the public API (get and get_all), keyed by path."""
    seen: dict[str, int] = {}
    values: dict[str, object] = {}
    for seg in msg.segments:
        seen[seg.name] = seen.get(seg.name, 0) + 1
        for n in range(1, len(seg) + 1):
            path = f"{seg.name}[{seen[seg.name]}]-{n}"
            values[path] = (msg.get(path), msg.get_all(path), msg.get(path + ".1"), msg.get(path + ".2.1"))
    return values


def test_corpus_is_complete() -> None:
    if not FILES:
        pytest.skip(f"the shared corpus is not here: {CORPUS}")
    names = {str(p.relative_to(CORPUS)) for p in FILES}
    assert set(REJECTED) <= names
    assert len(FILES) >= 78


@pytest.mark.parametrize("path", PARAMS)
def test_corpus_file(path: Path) -> None:
    raw = path.read_bytes()
    rel = str(path.relative_to(CORPUS))
    if rel in REJECTED:
        with pytest.raises(Hl7ParseError) as err:
            read_all(raw)
        assert REJECTED[rel] in str(err.value)
        assert err.value.code in ("100", "101", "102")
        ack = ack_for_unparseable(raw, err.value)  # an AR when an MSH can be recovered, else None
        if ack is not None:
            assert parse(ack).get("MSA-1") in ("AR", "CR")
        return

    messages = read_all(raw)
    assert messages
    if split_batch(raw) == [raw]:  # a lone message: the whole file, BOM and blank lines included
        assert parse(raw).to_bytes() == raw
    for msg, part in zip(messages, split_batch(raw), strict=False):
        assert msg.to_bytes() == part  # round trip: the same bytes
        info = meta(msg)
        assert info["control_id"] and info["message_type"]
        assert all(isinstance(i, Issue) for i in check_basic(msg))
        ack = parse(build_ack(msg, "AA"))
        assert ack.get("MSA-2") == msg.get("MSH-10")

        # Change one value: the re-serialised message reads back identically everywhere else.
        before = walk(msg)
        changed = msg.copy()
        changed.set("MSH-10", "CHANGED-ID")
        again = parse(changed.to_bytes())
        assert again.control_id == "CHANGED-ID"
        after = walk(again)
        for key in set(before) | set(after):
            if not key.startswith("MSH[1]-10"):
                assert before.get(key, (None, [], None, None)) == after.get(key, (None, [], None, None)), key


READABLE = [p for p in PARAMS if p.values[0] is None or "BTS-1" in REJECTED.get(p.id, "BTS-1")]


@pytest.mark.parametrize("path", READABLE)
def test_corpus_validate_never_raises(path: Path) -> None:
    first = read_all(path.read_bytes(), check_counts=False)[0]
    issues = validate(first)
    assert all(isinstance(i, Issue) and i.severity in ("error", "warning") and i.code for i in issues)


def test_covid_batch_with_wrong_count_can_still_be_read() -> None:
    path = CORPUS / "prime_reportstream" / "main__resources__clitests__compare-test-files__test-0001-input-covid-19.hl7"
    if not path.is_file():
        pytest.skip(f"the shared corpus is not here: {CORPUS}")
    messages = read_all(path.read_bytes(), check_counts=False)
    assert len(messages) == 20
    assert all(m.message_type == "ORU" and len(m.get_all("OBX-3")) == 10 for m in messages)


def test_corpus_edge_cases() -> None:
    if not FILES:
        pytest.skip(f"the shared corpus is not here: {CORPUS}")
    qa = CORPUS / "rethinkhealth_qa"
    esc = parse((qa / "edge-escaped-delimiters.hl7").read_bytes())
    assert esc.get("PID-5.1") == "DOE&SMITH" and esc.get("PID-5.2") == "JOHN^JANE"
    assert esc.get("OBX-5") == "Result contains pipe | and ampersand & and caret ^ and tilde ~ and backslash \\ chars"
    reps = parse((qa / "edge-field-repetitions.hl7").read_bytes())
    assert len(reps.get_all("PID-13")) == 12 and reps.get("PID-13[12]") == "555-0012"
    z = parse((qa / "edge-z-segments.hl7").read_bytes())
    assert z.get("ZVN-3.3") == "VALUE3" and z.get("ZPD-5") == "EXTENDED_FIELD_4"
    assert parse((qa / "edge-non-ascii.hl7").read_bytes()).get("PID-5.1") == "MÜLLER"
    empty = parse((qa / "edge-empty-segments.hl7").read_bytes())
    assert empty.get("PID-3") is None and empty.get("PV1-1") is None and meta(empty)["patient_id"] is None
    crlf = parse((qa / "edge-crlf-line-endings.hl7").read_bytes())
    assert crlf.segment_names == ["MSH", "PID", "PV1"]
    assert [i.code for i in check_basic(parse((qa / "invalid-wrong-version.hl7").read_bytes()))] == ["203"]
    eff = parse((CORPUS / "efferent" / "Sample-ORM.txt").read_bytes())
    assert eff.get("NTE[2]-3") == "some text\r\nsome text after new line\r\nissue Efferent-Health#81"
    assert eff.get("NTE[1]-3") == "some text\\.br\\some text after \\H\\new line\\N\\\\.br\\issue Efferent-Health#82"
    adt = parse((CORPUS / "efferent" / "Sample-ADT.txt").read_bytes())  # a blank line inside, a space at the end
    assert adt.segment_names == ["MSH", "PID", "NK1", "NK1", "PV1"]
    ft = parse((CORPUS / "hl7v2_fhir_bridge_pkg" / "oru_r01_ft_escapes.hl7").read_bytes())
    assert ft.get("OBX-5.1").endswith("axial, T2")  # the sender left a caret unescaped: it splits the value
    assert "(image 3|41)" in ft.get("OBX-5.2")
    assert ft.get("OBX[2]-5").startswith("IMPRESSION:\\.br\\\\H\\Lung-RADS 2\\N\\")
    ack = parse((CORPUS / "npm_hl7_standard" / "message2.hl7").read_bytes())
    assert ack.get("MSA-1") == "AR" and ack.get("ERR-1.4") == "207"
    rs = parse((CORPUS / "prime_reportstream" / "test__resources__fhirengine__engine__hl7_2.6.hl7").read_bytes())
    assert rs.version == "2.6" and rs.sending_app == "CDC PRIME - Atlanta, Georgia (Dekalb)"
