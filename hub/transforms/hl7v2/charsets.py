"""HL7 table 0211 (alternate character sets, MSH-18) → Python codec names."""

from __future__ import annotations

import codecs

__all__ = ["codec_for_charset", "charset_for_codec"]

# Table 0211 values, plus the spellings senders use instead of them ("UTF-8", "ISO-8859-1", "LATIN1" …).
_TABLE_0211: dict[str, str] = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "latin-1",
    "ISO IR100": "latin-1",
    "8859/2": "iso8859-2",
    "ISO IR101": "iso8859-2",
    "8859/3": "iso8859-3",
    "ISO IR109": "iso8859-3",
    "8859/4": "iso8859-4",
    "ISO IR110": "iso8859-4",
    "8859/5": "iso8859-5",
    "ISO IR144": "iso8859-5",
    "8859/6": "iso8859-6",
    "ISO IR127": "iso8859-6",
    "8859/7": "iso8859-7",
    "ISO IR126": "iso8859-7",
    "8859/8": "iso8859-8",
    "ISO IR138": "iso8859-8",
    "8859/9": "iso8859-9",
    "ISO IR148": "iso8859-9",
    "8859/15": "iso8859-15",
    "ISO IR14": "shift_jis",  # JIS X 0201 (katakana + roman), served by Shift-JIS's single-byte half
    "ISO IR87": "iso2022_jp",
    "ISO IR159": "iso2022_jp_2",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "CNS 11643-1992": "big5",  # the closest codec Python ships
    "BIG-5": "big5",
    "UNICODE": "utf-8",  # "UNICODE" alone is ambiguous in the standard; on byte streams it is UTF-8 in practice
    "UNICODE UTF-8": "utf-8",
    "UNICODE UTF-16": "utf-16",
    "UNICODE UTF-32": "utf-32",
}

_CODEC_TO_0211 = {
    "utf-8": "UNICODE UTF-8",
    "ascii": "ASCII",
    "iso8859-1": "8859/1",
    "iso8859-15": "8859/15",
}


# Names Python's codec registry knows that are no character set a sender can mean: decoding with them fails or
# turns bytes into something else, and an ACK encoded with them would not be HL7 (``unicode_escape`` doubles the
# escape character of MSH-2).
_NOT_CHARSETS = frozenset({"idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape"})


def codec_for_charset(charset: str | None) -> str | None:
    """The Python codec for an MSH-18 value, or None when it is empty or unknown.

    Table 0211 names first (``"UNICODE UTF-8"`` → ``utf-8``, ``"8859/1"`` → ``latin-1``, ``"ASCII"`` → ``ascii``),
    then anything Python's codec registry knows (``"UTF-8"``, ``"ISO-8859-1"``, ``"windows-1252"``).
    """
    if not charset:
        return None
    key = charset.strip().upper()
    if not key:
        return None
    found = _TABLE_0211.get(key)
    if found:
        return found
    if not key.isprintable():  # a NUL or control character cannot name a codec (codecs.lookup raises ValueError)
        return None
    try:
        info = codecs.lookup(key)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return None  # base64, rot13, zlib … (bytes-to-bytes or str-to-str) and the pseudo-codecs above
    return info.name


def charset_for_codec(codec: str) -> str:
    """The table-0211 name for a codec (for MSH-18 of messages the hub builds)."""
    try:
        name = codecs.lookup(codec).name
    except (LookupError, ValueError):
        return ""
    return _CODEC_TO_0211.get(name, _CODEC_TO_0211.get(codec, ""))
