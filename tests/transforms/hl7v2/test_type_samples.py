"""The synthetic per-trigger-event samples in tests/samples/hl7v2/types (issue 12): every file parses and passes the
strict validation `hub validate` runs (hub.transforms.hl7v2.validate), except the ones listed in KNOWN with the
reason (also in types/README.md). The messy/ variants only have to parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.transforms.hl7v2 import check_basic, meta, parse, split_batch, validate

TYPES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2" / "types"
FILES = sorted(p.name for p in TYPES.glob("*.hl7"))
MESSY = sorted(p.name for p in (TYPES / "messy").glob("*.hl7"))

EXPECTED = {
    "ADT": "A06 A07 A09 A10 A11 A12 A14 A15 A16 A17 A21 A22 A23 A25 A26 A27 A29 A32 A33 A38 A40 A41 A42 A45 A47 A50 "
    "A60",
    "BAR": "P01 P02 P05 P06 P10 P12",
    "DFT": "P03 P11",
    "MDM": "T01 T03 T04 T05 T06 T07 T08 T09 T10 T11",
    "OMG": "O19",
    "OUL": "R21 R22 R23 R24",
    "RDE": "O11 O25",
    "RDS": "O13",
    "REF": "I12 I13 I14 I15",
    "SIU": "S13 S14 S16 S17 S18 S19 S20 S21 S22 S23 S24 S26",
    "VXU": "V04",
    "ORU": "R01 R30",
    "OML": "O21",
    "ORM": "O01",
}
V27 = {"oru_r01.hl7", "adt_a60.hl7"}
NO_PATIENT = {"siu_s23.hl7", "siu_s24.hl7"}  # blocked / opened time slots: no PID

# Correct HL7 that strict validation rejects today (details in types/README.md, "Known validator problems").
# xfail(strict=True): the test fails once the problem is fixed, so the entry can be removed.
KNOWN = {
    "adt_a17.hl7": "hl7apy counts the two PID/PV1 of ADT_A17 by name against 1..1: 'PID repeats more often than "
    "the structure allows'",
    "oml_o21.hl7": "validate._place_segments puts the second ORC in the first order's PRIOR_RESULT/ORDER_PRIOR "
    "instead of a new OML_O21_ORDER",
    "orm_o01.hl7": "validate._fold_choices counts the missing OBR|RQD|RQ1|RXO|ODS|ODT alternatives over all "
    "ORDER_DETAIL groups: two orders are reported as having none",
    "ref_i13.hl7": "validate._STRUCTURES has no REF^I13 -> REF_I12: 'structure REF_I13 is not defined; "
    "structure not validated'",
    "ref_i15.hl7": "validate._STRUCTURES has no REF^I15 -> REF_I12: 'structure REF_I15 is not defined; "
    "structure not validated'",
}


def read(name: str) -> bytes:
    return (TYPES / name).read_bytes()


def test_one_file_per_trigger_event() -> None:
    expected = {f"{t.lower()}_{e.lower()}.hl7" for t, events in EXPECTED.items() for e in events.split()}
    assert set(FILES) == expected
    assert len(MESSY) == 6


@pytest.mark.parametrize("name", FILES)
def test_sample_parses(name: str) -> None:
    raw = read(name)
    assert b"\n" not in raw and raw.endswith(b"\r") and b"\r\r" not in raw  # CR segment terminators only
    msg = parse(raw)
    assert msg.to_bytes() == raw
    assert split_batch(raw) == [raw]
    info = meta(msg)
    kind, trigger = name[: -len(".hl7")].upper().split("_")
    assert info["message_type"] == f"{kind}^{trigger}"
    assert info["version"] == ("2.7" if name in V27 else "2.5.1")
    assert info["control_id"] and info["sending_app"]
    assert bool(info["patient_id"]) == (name not in NO_PATIENT)
    assert msg.charset in (None, "UNICODE UTF-8")
    assert check_basic(msg) == []


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.xfail(reason=KNOWN[n], strict=True)) if n in KNOWN else n for n in FILES]
)
def test_sample_passes_strict_validation(name: str) -> None:
    issues = validate(parse(read(name)))
    assert [str(i) for i in issues if i.severity != "warning"] == []
    # hl7apy's tables are partial (table 0396 has no SCT, RXNORM, UCUM …): table-value warnings (103) are expected;
    # anything else (a length, or "structure not validated") is not
    assert [str(i) for i in issues if i.code != "103"] == []


@pytest.mark.parametrize("name", ["ref_i13.hl7", "ref_i15.hl7"])
def test_ref_without_structure_validates_as_ref_i12(name: str) -> None:
    """Their content is checked although the structure lookup misses them (see KNOWN)."""
    msg = parse(read(name))
    assert msg.get("MSH-9.3") is None
    msg.set("MSH-9.3", "REF_I12")
    assert [str(i) for i in validate(msg) if i.code != "103"] == []


@pytest.mark.parametrize("name", ["oml_o21.hl7", "orm_o01.hl7"])
def test_each_order_validates_on_its_own(name: str) -> None:
    """The two-order messages in KNOWN: each order, with the segments before the first ORC, validates cleanly."""
    segments = read(name).decode().strip("\r").split("\r")
    starts = [i for i, s in enumerate(segments) if s.startswith("ORC|")]
    assert len(starts) == 2
    for a, b in zip(starts, [*starts[1:], len(segments)], strict=False):
        one = "\r".join(segments[: starts[0]] + segments[a:b]) + "\r"
        assert [str(i) for i in validate(parse(one)) if i.code != "103"] == []


def test_known_list_is_current() -> None:
    assert set(KNOWN) <= set(FILES)


def test_control_ids_are_unique() -> None:
    ids = [parse(read(n)).control_id for n in FILES] + [parse(read(f"messy/{n}")).control_id for n in MESSY]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("name", MESSY)
def test_messy_variant_parses(name: str) -> None:
    raw = read(f"messy/{name}")
    assert b"\n" not in raw and raw.endswith(b"\r")
    msg = parse(raw)
    assert msg.to_bytes() == raw and msg.control_id
    assert check_basic(msg) == []


def test_readme_describes_every_file() -> None:
    readme = (TYPES / "README.md").read_text(encoding="utf-8")
    assert "synthetic" in readme
    missing = [n for n in FILES if f"`{n}`" not in readme] + [n for n in MESSY if f"`messy/{n}`" not in readme]
    assert missing == []
