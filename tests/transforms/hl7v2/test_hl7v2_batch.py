"""split_batch: FHS/BHS envelopes, back-to-back messages, single messages, broken batches."""

from __future__ import annotations

import pytest

from hub.errors import Hl7ParseError
from hub.transforms.hl7v2 import is_batch, parse, split_batch


def msh(cid: str) -> str:
    return f"MSH|^~\\&|A|B|C|D|20260101||ADT^A04^ADT_A01|{cid}|P|2.5.1"


def test_fhs_bhs_batch(sample) -> None:
    raw = sample("batch_fhs_bhs.hl7")
    assert is_batch(raw)
    parts = split_batch(raw)
    assert [parse(p).control_id for p in parts] == ["BAT00001", "BAT00002", "BAT00003"]
    for p in parts:
        assert p.startswith(b"MSH|") and p.endswith(b"\r")
        assert b"BHS" not in p and b"BTS" not in p and b"FHS" not in p
        assert p in raw  # each message is the exact slice of the file
        assert parse(p).to_bytes() == p


def test_back_to_back_with_blank_lines(sample) -> None:
    raw = sample("batch_back_to_back_lf.hl7")
    assert not is_batch(raw)
    parts = split_batch(raw)
    assert len(parts) == 2
    assert parts[0].endswith(b"EXAM1^01^EXAMPLE_CLINIC\n")  # blank lines after it are not part of it
    assert [parse(p).trigger for p in parts] == ["A04", "A08"]


def test_single_message_is_returned_as_is(sample) -> None:
    for name in ("adt_a01.hl7", "messy_lf_bom.hl7", "messy_mixed_newlines.hl7"):
        raw = sample(name)
        assert split_batch(raw) == [raw]


def test_blank_line_inside_a_message_stays_inside() -> None:
    raw = f"{msh('X1')}\r\nPID|1\r\n\r\nPV1|1\r\n{msh('X2')}\r\nPID|2\r\n".encode()
    parts = split_batch(raw)
    assert parts[0] == f"{msh('X1')}\r\nPID|1\r\n\r\nPV1|1\r\n".encode()
    assert parse(parts[0]).segment_names == ["MSH", "PID", "PV1"]


def test_bom_and_str_input() -> None:
    raw = ("\ufeff" + f"BHS|^~\\&\r{msh('X1')}\rPID|1\rBTS|1\r").encode()
    assert split_batch(raw) == [f"{msh('X1')}\rPID|1\r".encode()]
    assert len(split_batch(f"{msh('X1')}\r{msh('X2')}\r")) == 2  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("segments", "count"),
    [
        (["BHS|^~\\&", msh("1"), "PID|1", "BTS|1"], 1),
        (["BHS|^~\\&", msh("1"), "PID|1"], 1),  # missing BTS tolerated
        ([msh("1"), "PID|1", "BTS|1"], 1),  # BTS without BHS tolerated
        (["FHS|^~\\&", msh("1"), msh("2"), "FTS|1"], 2),  # implicit batch counts as one
        (["FHS|^~\\&", "BHS|^~\\&", msh("1"), "BTS|1", "BHS|^~\\&", msh("2"), msh("3"), "BTS|2", "FTS|2"], 3),
        (["FHS|^~\\&", "BHS|^~\\&", msh("1"), "BTS||||", "FTS|"], 1),  # empty counts are not checked
        (["FHS|^~\\&", "BHS|^~\\&", msh("1")], 1),  # trailers missing
    ],
)
def test_good_batches(segments: list[str], count: int) -> None:
    parts = split_batch(("\r".join(segments) + "\r").encode())
    assert len(parts) == count
    assert all(p.startswith(b"MSH|") for p in parts)


@pytest.mark.parametrize(
    ("segments", "words"),
    [
        (["BHS|^~\\&", "EVN|A04", "PID|1", "BTS|1"], "EVN segment before the first MSH"),
        (["PID|1", msh("1")], "PID segment before the first MSH"),
        (["DOE^JANE|1", msh("1")], "not a segment header"),
        (["BHS|^~\\&", msh("1"), "BHS|^~\\&", msh("2"), "BTS|1"], "BHS before a BTS closed the previous batch"),
        (["FHS|^~\\&", "BHS|^~\\&", msh("1"), "FHS|^~\\&"], "FHS inside a file"),
        (["BHS|^~\\&", msh("1"), msh("2"), "BTS|3"], "BTS-1 says 3 message(s) but the batch holds 2"),
        (["FHS|^~\\&", "BHS|^~\\&", msh("1"), "BTS|1", "FTS|2"], "FTS-1 says 2 batch(es) but the file holds 1"),
        (["BHS|^~\\&", msh("1"), "BTS|one"], "BTS-1 is not a number"),
        (["BHS|^~\\&", msh("1"), "BTS|1", "BTS|1"], "BTS without a batch"),
        (["FHS|^~\\&", msh("1"), "FTS|1", msh("2")], "after the FTS"),
        (["FHS|^~\\&", "BHS|^~\\&", "BTS|0", "FTS|1"], "no MSH"),
        ([""], "no MSH"),
    ],
)
def test_broken_batches(segments: list[str], words: str) -> None:
    with pytest.raises(Hl7ParseError) as err:
        split_batch(("\r".join(segments) + "\r").encode())
    assert words in str(err.value)
    assert err.value.code in ("100", "102")


def test_count_mismatch_can_be_tolerated(sample) -> None:
    raw = sample("batch_bad_count.hl7")
    with pytest.raises(Hl7ParseError, match="BTS-1 says 2"):
        split_batch(raw)
    parts = split_batch(raw, check_counts=False)
    assert [parse(p).control_id for p in parts] == ["BAD00001"]


def test_messages_mentioning_msh_in_values_are_not_split() -> None:
    raw = f"{msh('1')}\rOBX||||xMSHx||||\rOBX||||MSH||||MSH\r".encode()
    assert split_batch(raw) == [raw]
