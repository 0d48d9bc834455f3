"""Escape sequences: delimiters, hex, formatting, charset, custom and v2.7 encoding characters."""

from __future__ import annotations

import pytest

from hub.transforms.hl7v2 import DEFAULT_ENCODING_CHARS, EncodingChars, escape, unescape

CUSTOM = EncodingChars.from_string("#!@%*")  # field #, component !, repetition @, escape %, subcomponent *
V27 = EncodingChars.from_string("|^~\\&#")


@pytest.mark.parametrize(
    ("escaped", "text"),
    [
        ("a\\F\\b", "a|b"),
        ("a\\S\\b", "a^b"),
        ("a\\T\\b", "a&b"),
        ("a\\R\\b", "a~b"),
        ("a\\E\\b", "a\\b"),
        ("\\F\\\\S\\\\T\\\\R\\\\E\\", "|^&~\\"),
        ("line\\X0D\\\\X0A\\next", "line\r\nnext"),
        ("\\X0D0A\\", "\r\n"),
        ("\\X41\\", "A"),
        ("\\XC3A9\\", "é"),  # hex bytes read as UTF-8 by default
        ("plain", "plain"),
        ("", ""),
    ],
)
def test_unescape(escaped: str, text: str) -> None:
    assert unescape(escaped) == text


@pytest.mark.parametrize(
    "kept",
    ["a\\.br\\b", "\\H\\bold\\N\\", "\\.sp\\", "\\.sp3\\", "\\.in+4\\", "\\.ti-2\\", "\\.sk5\\", "\\.ce\\", "\\.fi\\",
     "\\.nf\\", "\\C2842\\", "\\M2442\\", "\\Zlocal\\"],
)  # fmt: skip
def test_formatting_and_charset_sequences_are_kept_and_survive_escape(kept: str) -> None:
    assert unescape(kept) == kept
    assert escape(kept) == kept  # so get() → set() does not double the escape characters


def test_formatting_rendered_for_display() -> None:
    assert unescape("a\\.br\\b", formatting=True) == "a\nb"
    assert unescape("\\H\\bold\\N\\ text", formatting=True) == "bold text"
    assert unescape("a\\.sp2\\b", formatting=True) == "a\n\nb"
    assert unescape("a\\.sk3\\b", formatting=True) == "a   b"
    assert unescape("\\.in+4\\x\\.ti-2\\\\.fi\\\\.nf\\", formatting=True) == "x"
    assert unescape("a\\.ce\\b\\F\\", formatting=True) == "a\nb|"


def test_efferent_style_escapes() -> None:
    text = "some text\\.br\\some text after \\H\\new line\\N\\\\.br\\issue Efferent-Health#82"
    assert unescape(text) == text
    assert unescape(text, formatting=True) == "some text\nsome text after new line\nissue Efferent-Health#82"
    assert unescape("some text\\X0D\\\\X0A\\some text after") == "some text\r\nsome text after"


def test_lone_and_unknown_escape_characters_are_literal() -> None:
    assert unescape("C:\\temp") == "C:\\temp"
    assert unescape("C:\\temp\\file") == "C:\\temp\\file"
    assert unescape("a\\Q\\b") == "a\\Q\\b"
    assert unescape("C:\\temp\\X41\\") == "C:\\tempA"
    assert unescape("\\XZZ\\") == "\\XZZ\\"
    assert unescape("\\P\\") == "\\P\\"  # no truncation character in MSH-2: not an escape


def test_escape() -> None:
    assert escape("a|b^c&d~e\\f") == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f"
    assert escape("r\rn\n") == "r\\X0D\\n\\X0A\\"
    assert escape("no specials") == "no specials"
    assert escape("a\\.br\\b\\c") == "a\\.br\\b\\E\\c"
    assert escape("#") == "#"  # '#' is only special with a 5th encoding character


@pytest.mark.parametrize("text", ["a|b", "x^y&z~w\\v", "\\", "\\\\", "line\rbreak\n", "ünï|cödé^", "\\.br", "a\\Hb"])
def test_round_trip(text: str) -> None:
    for enc in (DEFAULT_ENCODING_CHARS, CUSTOM, V27):
        assert unescape(escape(text, enc), enc) == text


def test_custom_encoding_characters() -> None:
    assert escape("a#b!c*d@e%f", CUSTOM) == "a%F%b%S%c%T%d%R%e%E%f"
    assert unescape("a%F%b%S%c%T%d%R%e%E%f", CUSTOM) == "a#b!c*d@e%f"
    assert unescape("a\\F\\b", CUSTOM) == "a\\F\\b"  # backslash is not the escape character here
    assert unescape("x%.br%y", CUSTOM) == "x%.br%y"
    assert escape("x%.br%y", CUSTOM) == "x%.br%y"
    assert unescape("%X0D%", "#!@%*") == "\r"  # enc may be given as a string: MSH-1 + MSH-2


def test_truncation_character() -> None:
    assert escape("no #5", V27) == "no \\P\\5"
    assert unescape("no \\P\\5", V27) == "no #5"


def test_hex_uses_the_message_codec() -> None:
    assert unescape("\\XE9\\", codec="latin-1") == "é"
    assert unescape("\\XE9\\") == "é"  # invalid UTF-8: latin-1 fallback


def test_encoding_chars() -> None:
    enc = EncodingChars.from_string("|^~\\&")
    assert enc == DEFAULT_ENCODING_CHARS and str(enc) == "|^~\\&" and enc.msh2 == "^~\\&"
    assert V27.truncation == "#" and V27.msh2 == "^~\\&#"
    assert EncodingChars.from_string("") == DEFAULT_ENCODING_CHARS
    short = EncodingChars.from_string("|^~")
    assert short.escape == "" and escape("a|b", short) == "a|b"  # nothing can be escaped without MSH-2.3
