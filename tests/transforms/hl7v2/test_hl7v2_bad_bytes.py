"""Bad bytes in the MSH give the project's own parse error or an ACK, never a Python exception (issue 13)."""

from __future__ import annotations

import pytest

from hub.errors import Hl7ParseError
from hub.transforms.hl7v2 import ack_code, ack_for_unparseable, build_ack, meta, parse
from hub.transforms.hl7v2.ack import version_tuple
from hub.transforms.hl7v2.charsets import charset_for_codec, codec_for_charset


def adt(msh12: str = "2.5.1", msh18: str | None = None) -> bytes:
    tail = f"||||||{msh18}" if msh18 is not None else ""
    return (
        f"MSH|^~\\&|PM|CLINIC|HUB|CLINIC|20260310091500||ADT^A01^ADT_A01|CTRL1|P|{msh12}{tail}\r"
        "PID|1||MRN1^^^CLINIC^MR||SAMPLE^PAT\r"
    ).encode()


def segment_of(ack: bytes, name: str) -> str:
    for line in ack.decode("utf-8").split("\r"):
        if line.startswith(name + "|"):
            return line
    raise AssertionError(f"no {name} in {ack!r}")


def test_a_nul_in_msh18_is_an_hl7_parse_error_at_msh18_and_is_answered_ar() -> None:
    raw = adt(msh18="UNICODE\x00UTF-8")
    with pytest.raises(Hl7ParseError) as caught:
        parse(raw)
    err = caught.value
    assert err.location == "MSH-18" and err.code == "102" and err.control_id == "CTRL1"
    with pytest.raises(Hl7ParseError):
        parse(raw.decode("utf-8"))  # the same through the str entry point
    ack = ack_for_unparseable(raw, err)
    assert ack is not None and b"\x00" not in ack  # the broken MSH-18 is not echoed
    assert segment_of(ack, "MSA").split("|")[1:3] == ["AR", "CTRL1"]
    assert "MSH^1^18" in segment_of(ack, "ERR")


@pytest.mark.parametrize("charset", ["\x00", "UTF\x008", "8859/1\x07"])
def test_codec_lookup_never_raises_on_control_characters(charset: str) -> None:
    assert codec_for_charset(charset) is None
    assert charset_for_codec(charset) == ""


@pytest.mark.parametrize("version", ["².5.1", "2.⁵.1", "٢.5", "2.5.¹"])
def test_a_non_ascii_digit_in_msh12_does_not_break_the_ack(version: str) -> None:
    msg = parse(adt(msh12=version))
    assert meta(msg)["control_id"] == "CTRL1"
    ack = build_ack(msg, ack_code("accepted", msg))
    assert segment_of(ack, "MSA").split("|")[1:3] == ["AA", "CTRL1"]
    assert segment_of(ack, "MSH").split("|")[11] == version  # MSH-12 is copied as the sender wrote it
    assert build_ack(msg, "AE", text="x", error_code="207").count(b"\rERR|") == 1


def test_version_tuple_reads_ascii_digits_only() -> None:
    assert version_tuple("².5.1") == (2, 5, 1)  # unreadable: counts as the current version
    assert version_tuple("2.¹") == (2,)
    assert version_tuple("2.3.1") == (2, 3, 1)
    assert version_tuple("٢.5") == (2, 5, 1)


@pytest.mark.parametrize(
    "charset",
    ["idna", "punycode", "undefined", "unicode_escape", "raw_unicode_escape", "base64", "rot13", "zlib", "hex"],
)
def test_codec_names_that_are_no_character_set_are_treated_as_unknown(charset: str) -> None:
    # Python's codec registry knows these, but they are no charset: decoding with them raised UnicodeError
    # (idna, punycode, undefined) or the ACK would not be HL7 (unicode_escape doubles MSH-2's backslash)
    assert codec_for_charset(charset) is None
    msg = parse(adt(msh18=charset))
    assert msg.codec == "utf-8" and msg.get("PID-5.1") == "SAMPLE"
    ack = build_ack(msg, ack_code("accepted", msg))
    assert ack.startswith(b"MSH|^~\\&|") and segment_of(ack, "MSA").split("|")[1:3] == ["AA", "CTRL1"]


@pytest.mark.parametrize("encoding", ["punycode", "undefined"])
def test_an_explicit_encoding_that_cannot_decode_is_a_parse_error(encoding: str) -> None:
    with pytest.raises(Hl7ParseError) as caught:
        parse(adt(), encoding=encoding)
    assert caught.value.control_id == "CTRL1"


def test_real_charsets_still_resolve() -> None:
    assert codec_for_charset("UNICODE UTF-8") == "utf-8"
    assert codec_for_charset("8859/1") == "latin-1"
    assert codec_for_charset("windows-1252") == "cp1252"
    assert codec_for_charset("utf-7") == "utf-7"
    assert codec_for_charset("UNICODE UTF-16") == "utf-16"


def test_a_bom_before_bytes_that_are_not_utf8_still_gets_an_ar() -> None:
    # found by the fuzz run: the BOM, decoded as latin-1, hid the MSH line from the recovery
    raw = b"\xef\xbb\xbfMSH\x80^~\\&|PM|CLINIC\nPID|1\n"
    with pytest.raises(Hl7ParseError) as caught:
        parse(raw)
    ack = ack_for_unparseable(raw, caught.value)
    assert ack is not None and segment_of(ack, "MSA").split("|")[1] == "AR"
