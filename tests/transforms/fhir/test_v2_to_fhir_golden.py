"""v2_to_fhir output is stable: every sample gives byte-for-byte the Bundle recorded in ``golden/``.

The snapshots were generated from the converter before its speed work (so optimisations cannot change the output).
After an intended change of the mapping, regenerate them with ``HUB_REGEN_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hub.channels.base import Context
from hub.message import Message
from hub.transforms.fhir.v2_to_fhir import V2ToFhir
from support import ROOT, SAMPLES

GOLDEN = Path(__file__).parent / "golden"
HL7 = SAMPLES / "hl7v2"
CASES = sorted(p.name[: -len(".json")] for p in GOLDEN.glob("*.json"))  # <sample stem>.<bundle kind>


def _convert(stem: str, kind: str) -> bytes:
    conv = V2ToFhir(V2ToFhir.Config(type="v2_to_fhir", bundle=kind), Context(home=ROOT, mappings_dir=ROOT / "mappings"))
    raw = (HL7 / f"{stem}.hl7").read_bytes()
    return conv(Message(raw=raw, content_type="hl7v2")).raw + b"\n"


def test_golden_covers_every_sample_and_all_bundle_kinds():
    samples = {p.stem for p in HL7.glob("*.hl7") if not p.name.startswith("batch") and p.name != "fhir_oru_bad_nm.hl7"}
    assert {c.rsplit(".", 1)[0] for c in CASES} == samples
    for stem in ("adt_a01", "oru_r01"):
        assert {f"{stem}.{k}" for k in ("transaction", "batch", "collection")} <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_bundle_is_byte_identical_to_the_snapshot(case):
    stem, kind = case.rsplit(".", 1)
    got = _convert(stem, kind)
    path = GOLDEN / f"{case}.json"
    if os.environ.get("HUB_REGEN_GOLDEN") == "1":
        path.write_bytes(got)
    assert got == path.read_bytes()


def test_repeated_conversions_are_identical():
    """Caches kept across messages (tables, systems, segment reads) must not leak state from one message to the next."""
    first = {c: _convert(*c.rsplit(".", 1)) for c in CASES}
    again = {c: _convert(*c.rsplit(".", 1)) for c in reversed(CASES)}
    assert first == again


def _walk(node):
    """Every dict and list inside a Bundle."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        yield node
        for v in node:
            yield from _walk(v)


def test_bundles_share_no_object_with_later_conversions():
    """Codes, practitioners and places are cached across messages: each Bundle must still get objects of its own."""
    conv = V2ToFhir(V2ToFhir.Config(type="v2_to_fhir"), Context(home=ROOT, mappings_dir=ROOT / "mappings"))
    for stem in ("adt_a01", "oru_r01"):
        raw = (HL7 / f"{stem}.hl7").read_bytes()
        first = conv(Message(raw=raw, content_type="hl7v2")).parsed.data
        second = conv(Message(raw=raw, content_type="hl7v2")).parsed.data
        shared = {id(x) for x in _walk(first)} & {id(x) for x in _walk(second)}
        assert not shared
        for node in _walk(first):  # scribbling over one Bundle (a later transform may) leaves the next ones alone
            if isinstance(node, dict):
                for k, v in list(node.items()):
                    if isinstance(v, str):
                        node[k] = "changed"
            else:
                node.append("extra")
        again = conv(Message(raw=raw, content_type="hl7v2")).raw + b"\n"
        assert again == (GOLDEN / f"{stem}.transaction.json").read_bytes()


def test_cached_values_follow_the_message_delimiters():
    """The same components decode differently under other delimiters (\\F\\ is the field separator)."""
    from hub.transforms.fhir.v2_to_fhir import convert

    def code_of(fs: str) -> dict:
        text = (
            f"MSH{fs}^~\\&{fs}LAB{fs}FAC{fs}EHR{fs}FAC{fs}20260316160000{fs}{fs}ORU^R01^ORU_R01{fs}X1{fs}P{fs}2.5.1\r"
            f"PID{fs}1{fs}{fs}MRN1^^^FAC^MR\r"
            f"OBR{fs}1{fs}P1^EHR{fs}F1^LAB{fs}A\\F\\B^Panel^L\r"
            f"OBX{fs}1{fs}ST{fs}A\\F\\B^Result^L{fs}{fs}x\r"
        )
        b = convert(text.encode())
        return next(e["resource"]["code"] for e in b["entry"] if e["resource"]["resourceType"] == "Observation")

    assert code_of("|")["coding"][0]["code"] == "A|B"
    assert code_of("#")["coding"][0]["code"] == "A#B"
    assert code_of("|")["coding"][0]["code"] == "A|B"
