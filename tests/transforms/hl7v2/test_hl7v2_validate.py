"""validate() (hl7apy, strict) and check_basic(): Issues with table-0357 codes, never exceptions."""

from __future__ import annotations

import importlib

import pytest

from hub.errors import Issue
from hub.transforms.hl7v2 import check_basic, parse, validate
from hub.transforms.hl7v2.validate import structure_for

SAMPLES = [
    "adt_a01.hl7", "adt_a04.hl7", "adt_a08.hl7", "adt_a40.hl7", "siu_s12.hl7", "orm_o01.hl7", "oml_o21.hl7",
    "oru_r01.hl7", "rde_o11.hl7", "vxu_v04.hl7", "mdm_t02.hl7", "dft_p03.hl7",
]  # fmt: skip


def errors(issues: list[Issue]) -> list[Issue]:
    return [i for i in issues if i.severity == "error"]


def test_good_adt_a01_v251_has_no_errors(sample) -> None:
    issues = validate(parse(sample("adt_a01.hl7")))
    assert errors(issues) == []
    assert all(i.severity == "warning" and i.code == "103" for i in issues)  # hl7apy's table 0396 is partial


@pytest.mark.parametrize("name", SAMPLES)
def test_samples_validate(sample, name: str) -> None:
    msg = parse(sample(name))
    assert check_basic(msg) == []
    assert errors(validate(msg)) == []


def test_segments_are_grouped_in_structure_order(sample) -> None:
    """A TQ1 after RXE belongs to TIMING_ENCODED, one after ORC to TIMING (hl7apy's own group finder put both in
    TIMING and reported the required TIMING_ENCODED missing on every well-formed RDE^O11)."""
    rde = sample("rde_o11.hl7")
    assert errors(validate(parse(rde))) == []
    both = rde.replace(b"\rRXE|", b"\rTQ1|1||Q12H\rRXE|")  # a TIMING group before RXE too
    assert errors(validate(parse(both))) == []
    no_encoded = b"\r".join(line for line in rde.split(b"\r") if not line.startswith(b"TQ1"))
    assert [i.location for i in errors(validate(parse(no_encoded)))] == ["RDE_O11_TIMING_ENCODED"]


def test_segments_out_of_order_or_unknown_are_sequence_errors_and_z_segments_are_allowed(sample) -> None:
    adt = sample("adt_a01.hl7")
    lines = adt.rstrip(b"\r").split(b"\r")
    pid = next(line for line in lines if line.startswith(b"PID"))
    swapped = b"\r".join(line for line in lines if line is not pid) + b"\r" + pid + b"\r"  # PID after everything
    found = errors(validate(parse(swapped)))
    assert ("PID", "100") in {(i.location, i.code) for i in found}
    assert any("segment PID is not expected here" in i.message for i in found)
    with_z = adt.replace(b"\rPV1|", b"\rZPI|site^defined\rPV1|", 1)
    assert errors(validate(parse(with_z))) == []
    unknown = adt.replace(b"\rPV1|", b"\rQQQ|x\rPV1|", 1)
    assert [(i.location, i.code) for i in errors(validate(parse(unknown)))] == [("QQQ", "100")]


def test_broken_message_gives_issues_with_codes() -> None:
    msg = parse(
        "MSH|^~\\&|A|B|C|D|20260101||ADT^A01^ADT_A01|X1|P|2.5.1\r"
        "PID|1||||||19800101|F\r"
        "PV1|1|O\r"
        "DG1|1||I10^Hypertension^I10|||A^^^too^many^components^here\r"
    )
    issues = validate(msg)
    by_location = {i.location: i for i in issues}
    assert by_location["EVN"].code == "100" and by_location["EVN"].severity == "error"
    assert by_location["PID-3"].code == "101"
    assert by_location["PID-5"].code == "101"
    assert all(isinstance(i, Issue) and i.code for i in issues)
    assert all("too" not in i.message and "Hypertension" not in i.message for i in issues)


def test_datatype_and_cardinality_errors(sample) -> None:
    msg = parse(sample("adt_a01.hl7"))
    msg.set("PID-8.2", "x")  # IS has no components
    msg.set("MSH-9.3", "ADT_A01")
    msg.append_segment("EVN|A01|20260101")  # a second EVN
    issues = errors(validate(msg))
    assert any(i.location == "PID-8" and i.code == "102" for i in issues)
    assert any(i.location == "EVN" and i.code == "100" for i in issues)


def test_unsupported_version_is_one_warning(sample) -> None:
    msg = parse(b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|X1|P|1.0\rPID|1||12345^^^MRN||DOE^JOHN\r")
    assert validate(msg) == [Issue("warning", validate(msg)[0].message, "MSH-12", "203")]
    assert [i.code for i in check_basic(msg)] == ["203"]
    msg25 = parse(sample("adt_a01.hl7"))
    assert [i.code for i in validate(msg25, version="3.0")] == ["203"]


def test_version_argument_overrides_msh12(sample) -> None:
    msg = parse(sample("adt_a01.hl7"))
    as_23 = validate(msg, version="2.3")
    assert as_23 != validate(msg)  # other rules (e.g. PID-10 is CE in 2.3, fewer PV1 fields …)
    assert msg.version == "2.5.1"  # the message itself is untouched


def test_truncation_character_before_v27_is_a_warning(corpus) -> None:
    name = "testIntegration__resources__datatests__mappinginventory__catchall__ei__EI-to-Device-UDI-Carrier.hl7"
    msg = parse((corpus / "prime_reportstream" / name).read_bytes())
    issues = validate(msg)
    assert issues[0].location == "MSH-2" and issues[0].severity == "warning"


def test_v27_truncation_character_is_fine(sample) -> None:
    issues = validate(parse(sample("messy_v27_truncation.hl7")))
    assert not any(i.location == "MSH-2" for i in issues)


def test_structure_from_trigger_when_msh93_missing(corpus) -> None:
    assert structure_for("ADT", "A04") == "ADT_A01"
    assert structure_for("ADT", "A40") == "ADT_A39"
    assert structure_for("SIU", "S14") == "SIU_S12"
    assert structure_for("ORU", "R01") == "ORU_R01"
    assert structure_for("ACK", None) == "ACK"
    assert structure_for("ADT", "A04", "ADT_A01") == "ADT_A01"
    msg = parse((corpus / "hl7v2_fhir_bridge_pkg" / "adt_a04_v23_latin1.hl7").read_bytes())
    assert errors(validate(msg)) == []


def test_unknown_structure_is_a_warning() -> None:
    msg = parse(b"MSH|^~\\&|A|B|C|D|20260101||ZZZ^Z99|X1|P|2.5.1\rPID|1\r")
    assert [(i.severity, i.code) for i in validate(msg)] == [("warning", "200")]
    no_type = parse(b"MSH|^~\\&|A|B|C|D|20260101|||X1|P|2.5.1\rPID|1\r")
    assert [(i.severity, i.code) for i in validate(no_type)] == [("error", "101")]


def test_choice_groups_are_not_reported_alternative_by_alternative(sample) -> None:
    # hl7apy checks ORM_O01's OBR|RQD|RQ1|RXO|ODS|ODT choice like a sequence and would report RQD, RQ1, RXO, ODS
    # and ODT as missing when OBR is there.
    issues = validate(parse(sample("orm_o01.hl7")))
    assert errors(issues) == []
    assert not any(name in i.location for i in issues for name in ("RQD", "RQ1", "RXO", "ODS", "ODT"))


def test_validate_never_raises(monkeypatch, sample) -> None:
    # the module, not the validate() function the package exports under the same name
    v = importlib.import_module("hub.transforms.hl7v2.validate")

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("hl7apy blew up")

    monkeypatch.setattr(v, "_hl7apy_parse", boom)
    assert [(i.severity, i.code) for i in validate(parse(sample("adt_a01.hl7")))] == [("error", "207")]


def test_validate_handles_odd_messages() -> None:
    odd = [
        "MSH|^~\\&|A|B|C|D|20260101||ADT^A01^ADT_A01|X1|P|2.5.1\rPID|" + "|" * 300 + "x\r",
        "MSH|^~\\&|A|B|C|D|20260101||ADT^A01^ADT_A01|X1|P|2.5.1\rZZ1|a^b^c\rQQQ|1\r",
        "MSH|^~|A|B|C|D|20260101||ADT^A01|X1|P|2.5.1\rPID|1\r",
        "MSH|^~\\&|A|B|C|D|20260101||ADT^A01^ADT_A01|X1|P|\rPID|1\r",
    ]
    for text in odd:
        issues = validate(parse(text))
        assert issues and all(isinstance(i, Issue) for i in issues)


# ---------------------------------------------------------------------- check_basic
@pytest.mark.parametrize(
    ("msh", "expected"),
    [
        ("MSH|^~\\&|A|B|C|D|1||ADT^A01|X1|P|2.5.1", []),
        ("MSH|^~\\&|A|B|C|D|1|||X1|P|2.5.1", [("error", "MSH-9.1", "101")]),
        ("MSH|^~\\&|A|B|C|D|1||ADT|X1|P|2.5.1", [("warning", "MSH-9.2", "101")]),
        ("MSH|^~\\&|A|B|C|D|1||ADT^A01||P|2.5.1", [("error", "MSH-10", "101")]),
        ("MSH|^~\\&|A|B|C|D|1||ADT^A01|X1|P|", [("error", "MSH-12", "101")]),
        ("MSH|^~\\&|A|B|C|D|1||ADT^A01|X1|P|3.0", [("error", "MSH-12", "203")]),
        ("MSH|^~\\&|A|B|C|D|1||ADT^A01|X1||2.5.1", [("error", "MSH-11", "101")]),
        ("MSH|^~\\&|A|B|C|D|1||ADT^A01|X1|Q|2.5.1", [("error", "MSH-11", "202")]),
        ("MSH|^~\\&|A|B|C|D|1||ADT^A01|" + "9" * 21 + "|P|2.5.1", [("warning", "MSH-10", "102")]),
        ("MSH|^~\\&|A|B|C|D|1||ADT^A01|" + "9" * 21 + "|P|2.7", []),
        ("MSH|^~\\&|A|B|C|D|1||ACK|X1|P|2.5.1", []),
    ],
)
def test_check_basic(msh: str, expected: list[tuple[str, str, str]]) -> None:
    assert [(i.severity, i.location, i.code) for i in check_basic(parse(msh))] == expected
