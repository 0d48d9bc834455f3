"""ACKs field by field (v2.3 and v2.5 originals, original and enhanced mode), ack codes, AR for unparseable input."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import hl7  # python-hl7: an independent reader to check our ACKs against
import pytest

from hub.errors import Hl7ParseError
from hub.message import Outcome
from hub.transforms.hl7v2 import (
    accept_ack_wanted,
    ack_code,
    ack_for_unparseable,
    ack_mode,
    build_ack,
    parse,
)

NOW = datetime(2026, 3, 10, 12, 0, 0, tzinfo=timezone(timedelta(hours=-6)))

V25 = (
    "MSH|^~\\&|SEND_APP^1.2^ISO|SEND_FAC|RECV_APP|RECV_FAC|20260310115900||ADT^A01^ADT_A01|ORIG0001|P|2.5.1\r"
    "EVN|A01|20260310115900\rPID|1||MRN1^^^H^MR||DOE^JANE\r"
)
V23 = "MSH|^~\\&|OLD_APP|OLD_FAC|RECV_APP|RECV_FAC|200603101159||ADT^A04|ORIG0023|T|2.3\rEVN|A04\rPID|1||MRN2\r"
ENHANCED = (
    "MSH|^~\\&|LAB|LABFAC|EHR|CLINIC|20260310115900||ORU^R01^ORU_R01|ORIG0099|P|2.5.1|||AL|NE\r"
    "PID|1||MRN3\rOBR|1\rOBX|1|NM|X||1\r"
)


def fields(ack: bytes, segment: str) -> list[str]:
    """Fields of a segment of the ACK, numbered the standard way (index n = field n; MSH-1 is the separator)."""
    for line in ack.decode("latin-1").split("\r"):
        if line.startswith(segment + "|"):
            parts = line.split("|")
            return [parts[0], "|"] + parts[1:] if segment == "MSH" else parts
    raise AssertionError(f"no {segment} in the ACK")


def test_aa_v25_field_by_field() -> None:
    msg = parse(V25)
    ack = build_ack(msg, "AA", control_id="ACK00001", now=NOW)
    assert ack.endswith(b"\r") and ack.count(b"\r") == 2  # MSH + MSA only
    m = fields(ack, "MSH")
    assert m[2] == "^~\\&"
    assert m[3:7] == ["RECV_APP", "RECV_FAC", "SEND_APP^1.2^ISO", "SEND_FAC"]  # swapped
    assert m[7] == "20260310120000-0600"
    assert m[9] == "ACK^A01^ACK"
    assert m[10] == "ACK00001"
    assert m[11] == "P" and m[12] == "2.5.1"
    assert fields(ack, "MSA") == ["MSA", "AA", "ORIG0001"]
    back = parse(ack)
    assert back.message_type == "ACK" and back.trigger == "A01" and back.control_id == "ACK00001"


def test_ae_v25_has_err_with_location_code_and_severity() -> None:
    msg = parse(V25)
    ack = build_ack(msg, "AE", text="PID-3 needs an MRN", error_code="101", error_location="PID-3.1", now=NOW)
    assert fields(ack, "MSA") == ["MSA", "AE", "ORIG0001"]  # no MSA-3 from v2.5
    err = fields(ack, "ERR")
    assert err[1] == ""
    assert err[2] == "PID^1^3^1^1"
    assert err[3] == "101^Required field missing^HL70357"
    assert err[4] == "E"
    assert err[8] == "PID-3 needs an MRN"
    checked = hl7.parse(ack.decode())  # python-hl7 reads it the same way
    assert str(checked.segment("ERR")[3][0][0]) == "101"
    assert str(checked.segment("MSA")[2]) == "ORIG0001"


def test_ar_v25_default_code_location_forms_and_severity() -> None:
    msg = parse(V25)
    ack = build_ack(msg, "AR", error_location="OBX[2]-5", severity="W", now=NOW)
    err = fields(ack, "ERR")
    assert err[2] == "OBX^2^5" and err[3] == "207^Application internal error^HL70357" and err[4] == "W"
    assert fields(build_ack(msg, "AR", error_location="PID^1^3"), "ERR")[2] == "PID^1^3"
    assert fields(build_ack(msg, "AR", error_location="segment 3"), "ERR")[2] == ""  # not a path: left out
    assert len(fields(build_ack(msg, "AR"), "ERR")) == 5  # no text: no ERR-8


def test_v23_original_uses_msa3_and_old_err_layout() -> None:
    msg = parse(V23)
    ack = build_ack(msg, "AE", text="Unknown sex", error_code="103", error_location="PID-8", now=NOW, control_id="A23")
    m = fields(ack, "MSH")
    assert m[3:7] == ["RECV_APP", "RECV_FAC", "OLD_APP", "OLD_FAC"]
    assert m[9] == "ACK^A04"  # no third component before v2.3.1
    assert m[11] == "T" and m[12] == "2.3"
    assert fields(ack, "MSA") == ["MSA", "AE", "ORIG0023", "Unknown sex"]
    assert fields(ack, "ERR") == ["ERR", "PID^1^8^103&Table value not found&HL70357"]
    assert fields(build_ack(msg, "AR", now=NOW), "ERR") == ["ERR", "^^^207&Application internal error&HL70357"]
    assert fields(build_ack(msg, "AA", text="ok", now=NOW), "MSA") == ["MSA", "AA", "ORIG0023", "ok"]


def test_enhanced_mode() -> None:
    msg = parse(ENHANCED)
    assert ack_mode(msg) == "enhanced"
    assert ack_mode(parse(V25)) == "original"
    assert [ack_code(o, msg) for o in ("accepted", "filtered", "rejected", "error")] == ["CA", "CA", "CR", "CE"]
    assert [ack_code(o, parse(V25)) for o in ("accepted", "filtered", "rejected", "error")] == ["AA", "AA", "AR", "AE"]
    assert ack_code(Outcome.REJECTED, msg) == "CR"
    with pytest.raises(ValueError):
        ack_code("maybe", msg)
    ack = build_ack(msg, ack_code("error", msg), error_code="207", text="store down", now=NOW)
    assert fields(ack, "MSA") == ["MSA", "CE", "ORIG0099"]
    assert fields(ack, "ERR")[3] == "207^Application internal error^HL70357"
    m = fields(ack, "MSH")
    assert m[9] == "ACK^R01^ACK" and len(m) == 13  # the ACK itself asks for no acknowledgement
    assert fields(build_ack(msg, "CA", now=NOW), "MSA") == ["MSA", "CA", "ORIG0099"]


@pytest.mark.parametrize(
    ("msh15", "code", "wanted"),
    [("AL", "CA", True), ("NE", "CA", False), ("NE", "CR", False), ("ER", "CA", False), ("ER", "CE", True),
     ("SU", "CA", True), ("SU", "CR", False), ("", "AA", True)],
)  # fmt: skip
def test_accept_ack_wanted(msh15: str, code: str, wanted: bool) -> None:
    msg = parse(f"MSH|^~\\&|A|B|C|D|1||ADT^A01|X|P|2.5.1|||{msh15}\r")
    assert accept_ack_wanted(msg, code) is wanted


def test_ack_keeps_delimiters_and_charset(sample) -> None:
    custom = parse(sample("messy_custom_delimiters.hl7"))
    ack = build_ack(custom, "AE", text="a:b!c", error_code="102", error_location="PID-5.2", now=NOW)
    assert ack.startswith(b"MSH!:~\\&!EXAMPLE_EHR!EXAMPLE_CLINIC!EXAMPLE_PM!EXAMPLE_CLINIC!")
    parsed = parse(ack)
    assert parsed.get("MSA-2") == "CUS00001"
    assert parsed.get("ERR-2") == "PID:1:5:1:2"
    assert parsed.get("ERR-8") == "a:b!c"
    latin = parse(sample("messy_latin1_v23.hl7"))
    ack = build_ack(latin, "AE", text="Ärger", now=NOW)
    assert "Ärger".encode("latin-1") in ack and b"||||||8859/1\r" in ack
    assert parse(ack).get("MSA-3") == "Ärger"


def test_generated_control_ids_are_unique() -> None:
    msg = parse(V25)
    ids = {parse(build_ack(msg, "AA")).control_id for _ in range(50)}
    assert len(ids) == 50 and all(i and len(i) <= 20 for i in ids)


def test_text_is_escaped() -> None:
    ack = build_ack(parse(V25), "AR", text="bad | value ^ here")
    assert parse(ack).get("ERR-8") == "bad | value ^ here"


# ---------------------------------------------------------------------- unparseable input
def _error(raw: bytes) -> Hl7ParseError:
    try:
        parse(raw)
    except Hl7ParseError as exc:
        return exc
    raise AssertionError("parse() accepted it")


def test_ar_for_bad_segment() -> None:
    raw = b"MSH|^~\\&|SEND|SF|RECV|RF|20260101||ADT^A01^ADT_A01|C123|P|2.5.1\rPIDX|1||X\r"
    err = _error(raw)
    ack = ack_for_unparseable(raw, err)
    assert ack is not None
    assert fields(ack, "MSH")[3:7] == ["RECV", "RF", "SEND", "SF"]
    assert fields(ack, "MSA") == ["MSA", "AR", "C123"]
    e = fields(ack, "ERR")
    assert e[3] == "100^Segment sequence error^HL70357" and "segment 2" in e[8]


def test_ar_for_broken_msh2_and_enhanced_cr() -> None:
    raw = b"MSH|^^^&|SEND|SF|RECV|RF|20260101||ADT^A01|C124|P|2.3|||AL|AL\rPID|1\r"
    ack = ack_for_unparseable(raw, _error(raw))
    assert ack is not None
    assert fields(ack, "MSA")[:3] == ["MSA", "CR", "C124"]
    assert fields(ack, "MSH")[2] == "^~\\&"


def test_ar_for_second_msh_and_old_version() -> None:
    raw = b"\n\nMSH|^~\\&|S|F|R|G|1||ORU^R01|C125|P|2.4\nMSH|^~\\&|S|F|R|G|1||ORU^R01|C126|P|2.4\n"
    ack = ack_for_unparseable(raw, _error(raw))
    assert ack is not None
    assert fields(ack, "MSA")[:3] == ["MSA", "AR", "C125"]
    assert fields(ack, "ERR")[1].endswith("100&Segment sequence error&HL70357")


@pytest.mark.parametrize("raw", [b"", b"PID|1||X\r", b"hello"])
def test_no_ack_when_there_is_no_msh(raw: bytes) -> None:
    assert ack_for_unparseable(raw, Hl7ParseError("broken")) is None


@pytest.mark.parametrize("raw", [b"MSH", b"MSHA^~\\&|x", b"MSH\x00|^~\\&|x", b"MSH |^~\\&|x\rPID|1"])
def test_a_line_starting_with_msh_is_always_answered(raw: bytes) -> None:
    # MSH-1 unusable (none, a letter, NUL, a space): nothing can be read from the header, but the sender still gets
    # an AR in the standard delimiters (issue 13: every frame with an MSH gets an ACK with an MSA)
    ack = ack_for_unparseable(raw, Hl7ParseError("broken"))
    assert ack is not None and ack.startswith(b"MSH|^~\\&|")
    assert fields(ack, "MSA")[:2] == ["MSA", "AR"]
    assert parse(ack).get("MSA-1") == "AR"
