"""`split: x12_transaction`: one valid interchange per transaction set."""

from __future__ import annotations

from pathlib import Path

from hub.channels.channel import split_input
from hub.transforms.x12 import parse_document, split_transactions

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "x12" / "remit_3_claims_plb.835"


def two_sets() -> bytes:
    text = SAMPLE.read_bytes().decode("latin-1")
    st = text.index("ST*")
    se_end = text.index("~", text.index("SE*")) + 1
    body = text[st:se_end].strip("\r\n")
    second = body.replace("ST*835*0001", "ST*835*0002").replace("*0001~", "*0002~")
    return (text[:se_end] + "\n" + second + text[se_end:]).replace("GE*1*", "GE*2*").encode("latin-1")


def test_each_transaction_set_becomes_its_own_interchange():
    parts = split_transactions(two_sets())
    assert len(parts) == 2
    docs = [parse_document(p) for p in parts]
    assert [d.get("ST02") for d in docs] == ["0001", "0002"]
    for d in docs:
        assert d.get("GE01") == "1" and d.get("IEA01") == "1"
    assert split_input(two_sets(), "x12", "x12_transaction") == parts
    assert split_input(two_sets(), "x12", "none") == [two_sets()]
