"""HL7 v2 delimiters and escape sequences (ER7 encoding rules, v2.x chapter 2).

Hand-written on purpose: hl7apy and python-hl7 both decode escapes, but only as part of building their whole
object tree; the hub needs to escape/unescape single values in a few hundred nanoseconds on the hot path, and it
needs *lossless* behaviour for the sequences it does not interpret (see :func:`unescape`).

Sequences (``\\`` stands for the message's escape character, MSH-2.3):

=============  ======================================================  ================================
sequence       meaning                                                 :func:`unescape` gives
=============  ======================================================  ================================
``\\F\\``       field separator                                         ``|``
``\\S\\``       component separator                                     ``^``
``\\T\\``       subcomponent separator                                  ``&``
``\\R\\``       repetition separator                                    ``~``
``\\E\\``       escape character                                        ``\\``
``\\P\\``       truncation character (v2.7+, 5th char of MSH-2)         ``#``
``\\Xhhhh\\``   hexadecimal bytes                                       the decoded characters
``\\.br\\``     formatting (FT): line break, ``\\.sp\\``, ``\\.in\\``…   kept verbatim (or rendered with
``\\H\\``       highlighting on / ``\\N\\`` normal text                    ``formatting=True``)
``\\Cxxyy\\``   character-set switches ``\\C..\\`` ``\\M..\\``, local ``\\Z..\\``   kept verbatim
=============  ======================================================  ================================

Design choice: formatting, charset and local (``Z``) sequences are *kept verbatim* by :func:`unescape`, and
:func:`escape` leaves such sequences untouched, so ``msg.set(p, other.get(q))`` copies an FT report without
losing its line breaks or highlighting. The price is that a text which literally contains e.g. ``\\H\\`` is read as
a highlight mark — a string that HL7 itself would read the same way. A lone escape character or an unknown
sequence is kept as text (senders that forget to escape a backslash are common).
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["EncodingChars", "DEFAULT_ENCODING_CHARS", "escape", "unescape", "encoding_chars"]


class EncodingChars(NamedTuple):
    """The five (six in v2.7+) delimiters of a message: MSH-1 and the characters of MSH-2.

    A missing character (MSH-2 shorter than 4) is ``""``: nothing can be split on it or escaped with it.
    """

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""

    @property
    def msh2(self) -> str:
        """MSH-2 as written: component, repetition, escape, subcomponent (and truncation) characters."""
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation

    def __str__(self) -> str:  # "|^~\&" — what follows "MSH" in a header
        return self.field + self.msh2

    @classmethod
    def from_string(cls, delimiters: str) -> EncodingChars:
        """Build from MSH-1 followed by MSH-2, e.g. ``"|^~\\&"`` or ``"|^~\\&#"``."""
        if not delimiters:
            return DEFAULT_ENCODING_CHARS
        chars = list(delimiters[:6]) + [""] * (6 - min(len(delimiters), 6))
        return cls(*chars)


DEFAULT_ENCODING_CHARS = EncodingChars()


def encoding_chars(enc: EncodingChars | str | None) -> EncodingChars:
    """Normalise the ``enc`` argument of :func:`escape`/:func:`unescape`.

    ``None`` → the standard ``|^~\\&``; a string is MSH-1 followed by MSH-2 (``"|^~\\&"``, ``"#!@%*"``).
    """
    if enc is None:
        return DEFAULT_ENCODING_CHARS
    if isinstance(enc, EncodingChars):
        return enc
    return EncodingChars.from_string(enc)


# Sequences that unescape() keeps verbatim and escape() leaves alone (see the module docstring).
_KEPT_BODY = (
    r"(?:H|N|\.br|\.sp[+-]?\d*|\.in[+-]?\d*|\.ti[+-]?\d*|\.sk[+-]?\d*|\.ce|\.fi|\.nf"
    r"|C[0-9A-Fa-f]{4}|M[0-9A-Fa-f]{4,6}|Z[0-9A-Za-z]+)"
)
_KEPT_RE = re.compile(_KEPT_BODY + r"\Z")
_HEX_RE = re.compile(r"X(?:[0-9A-Fa-f]{2})+\Z")
_FORMAT_RE = re.compile(r"\.(sp|in|ti|sk)([+-]?\d*)\Z")

_tables: dict[EncodingChars, dict[int, str]] = {}
_kept_patterns: dict[str, re.Pattern[str]] = {}


def _escape_table(enc: EncodingChars) -> dict[int, str]:
    table = _tables.get(enc)
    if table is None:
        e = enc.escape
        table = {}
        for char, code in (
            (enc.field, "F"),
            (enc.component, "S"),
            (enc.subcomponent, "T"),
            (enc.repetition, "R"),
            (enc.truncation, "P"),
        ):
            if char:
                table[ord(char)] = f"{e}{code}{e}"
        # A raw CR or LF inside a value would end the segment: write them as hex escapes.
        table[13] = f"{e}X0D{e}"
        table[10] = f"{e}X0A{e}"
        if len(_tables) < 256:  # senders use a handful of delimiter sets; never let odd input grow the cache
            _tables[enc] = table
    return table


def escape(text: str, enc: EncodingChars | str | None = None) -> str:
    """Escape ``text`` so it can be written as one ER7 value (field, component or subcomponent).

    Delimiters become ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` (and ``\\P\\`` when MSH-2 has a truncation character), CR and LF
    become ``\\X0D\\`` / ``\\X0A\\``. Formatting, charset and ``\\Z..\\`` sequences already in ``text`` are left as they
    are, so that values read with :func:`unescape` (which keeps them) are written back unchanged.
    """
    enc = encoding_chars(enc)
    e = enc.escape
    if not e:
        return text  # MSH-2 has no escape character: nothing can be escaped
    if e in text:
        pattern = _kept_patterns.get(e)
        if pattern is None:
            q = re.escape(e)
            pattern = _kept_patterns[e] = re.compile(f"({q}{_KEPT_BODY}{q})")
        pieces = pattern.split(text)
        # split() with one group: even indexes are plain text, odd ones the kept sequences.
        text = "".join(p if i % 2 else p.replace(e, f"{e}E{e}") for i, p in enumerate(pieces))
        # The kept sequences' own escape characters must not be touched by translate() below (it ignores e).
    return text.translate(_escape_table(enc))


def _hex_to_text(hexdigits: str, codec: str | None) -> str:
    data = bytes.fromhex(hexdigits)
    for name in (codec or "utf-8", "latin-1"):
        try:
            return data.decode(name)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("latin-1")  # pragma: no cover - latin-1 never fails


def _render_formatting(seq: str) -> str:
    """Display form of a formatting sequence (``formatting=True``)."""
    if seq == ".br" or seq == ".ce":
        return "\n"
    if seq in ("H", "N", ".fi", ".nf"):
        return ""
    m = _FORMAT_RE.match(seq)
    if m:
        kind, num = m.group(1), m.group(2)
        try:
            n = int(num) if num not in ("", "+", "-") else 1
        except ValueError:  # pragma: no cover - the regex only lets digits through
            n = 1
        if kind == "sp":
            return "\n" * max(n, 1)
        if kind == "sk":
            return " " * max(n, 0)
        return ""  # .in / .ti: indentation has no plain-text rendering
    return ""


def unescape(
    text: str,
    enc: EncodingChars | str | None = None,
    *,
    formatting: bool = False,
    codec: str | None = None,
) -> str:
    """Decode the escape sequences of one ER7 value.

    * delimiter escapes and ``\\Xhh..\\`` are decoded (hex bytes are read with ``codec``, the message's character
      set, falling back to latin-1);
    * formatting sequences (``\\.br\\``, ``\\H\\``, ``\\N\\``, ``\\.sp\\``…) are kept verbatim unless
      ``formatting=True`` (for display: ``\\.br\\`` → newline, highlighting dropped);
    * charset switches ``\\C..\\``/``\\M..\\`` and local ``\\Z..\\`` sequences are kept verbatim;
    * a lone escape character or an unknown sequence is kept as text.
    """
    enc = encoding_chars(enc)
    e = enc.escape
    if not e or e not in text:
        return text
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        j = text.find(e, i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        k = text.find(e, j + 1)
        if k < 0:  # a lone escape character: literal
            out.append(text[j:])
            break
        seq = text[j + 1 : k]
        if seq == "F":
            out.append(enc.field)
        elif seq == "S":
            out.append(enc.component)
        elif seq == "T":
            out.append(enc.subcomponent)
        elif seq == "R":
            out.append(enc.repetition)
        elif seq == "E":
            out.append(e)
        elif seq == "P" and enc.truncation:
            out.append(enc.truncation)
        elif seq[:1] == "X" and _HEX_RE.match(seq):
            out.append(_hex_to_text(seq[1:], codec))
        elif _KEPT_RE.match(seq):
            out.append(_render_formatting(seq) if formatting else text[j : k + 1])
        else:
            # Not an escape sequence: keep the escape character as text and look again right after it, so
            # "C:\temp\X0D\" still decodes the \X0D\ that follows.
            out.append(e)
            i = j + 1
            continue
        i = k + 1
    return "".join(out)
