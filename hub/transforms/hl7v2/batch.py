"""Splitting HL7 batch files (FHS/BHS … BTS/FTS) and back-to-back messages into single messages.

Hand-written and byte-based: a batch only needs its segment IDs looked at, so the file is never decoded and each
message comes back as the exact slice of bytes it was sent as (its own segment terminators included, blank
lines between messages and the envelope segments left out).

What is tolerated, because real senders do it: messages back to back without any envelope, blank lines between
messages, a missing BTS or FTS at the end, a BTS/FTS without its header, LF/CRLF/CR terminators. What is refused
(:class:`hub.errors.Hl7ParseError`, code 100): a segment before the first MSH that is not FHS/BHS, a second FHS,
a BHS while a batch is still open, a BTS with no batch, anything after FTS, and a BTS-1/FTS-1 count that does not
match what the file holds.
"""

from __future__ import annotations

import re

from hub.errors import Hl7ParseError

from .er7 import _STANDARD_IDS

__all__ = ["split_batch", "is_batch"]

_LINE_RE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n|\Z)")
_BOM = b"\xef\xbb\xbf"


def _seg_id(line: bytes) -> bytes:
    """The segment ID of a line when it is one of the envelope/header IDs followed by a delimiter, else b''."""
    name = line[:3]
    if len(line) == 3 or (len(line) > 3 and not line[3:4].isalnum() and not line[3:4].isspace()):
        return name
    return b""


def _count(line: bytes, which: str) -> int | None:
    """Field 1 of a BTS/FTS line (the count), None when empty."""
    fs = line[3:4]
    value = line.split(fs)[1].strip() if fs and len(line) > 4 else b""
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise Hl7ParseError(f"{which}-1 is not a number", code="102", location=f"{which}-1") from None


def is_batch(raw: bytes) -> bool:
    """True when the input starts with an FHS or BHS envelope."""
    head = raw[:8].lstrip(_BOM + b" \t\r\n")
    return head[:3] in (b"FHS", b"BHS")


def split_batch(raw: bytes, *, check_counts: bool = True) -> list[bytes]:
    """One ``bytes`` per message in ``raw``: a batch file, several messages back to back, or a single message.

    A single message without envelope is returned as it is (``[raw]``), so a file archived verbatim stays verbatim.
    ``check_counts=False`` accepts a BTS-1/FTS-1 count that disagrees with the content (some generators write
    the count they planned, not the one they wrote); by default a mismatch is an error, as it may mean lost
    messages.
    """
    if isinstance(raw, str):  # be forgiving: the bytes are what the caller meant
        raw = raw.encode("utf-8")
    data = raw[3:] if raw[:3] == _BOM else raw
    offset = len(raw) - len(data)

    messages: list[tuple[int, int]] = []
    msg_start = -1  # start offset of the message being collected, -1 when none
    msg_end = -1
    file_open = file_closed = False
    batch_open = batch_explicit = False
    batch_msgs = 0
    file_batches = 0
    saw_envelope = False
    line_no = 0

    def close_message() -> None:
        nonlocal msg_start, msg_end
        if msg_start >= 0:
            messages.append((msg_start, msg_end))
        msg_start = msg_end = -1

    for m in _LINE_RE.finditer(data):
        start, end = m.span()
        if start == end:
            break
        line = m.group().rstrip(b"\r\n")
        line_no += 1
        if not line.strip():
            continue  # blank lines: between messages, or inside one (kept in its slice if more segments follow)
        if file_closed:
            raise Hl7ParseError(f"line {line_no}: content after the FTS trailer", location=f"line {line_no}")
        stripped = line.lstrip()
        name = _seg_id(stripped)
        if name == b"FHS":
            if file_open or messages or msg_start >= 0 or batch_open:
                raise Hl7ParseError(
                    f"line {line_no}: FHS inside a file (only one file header, before everything else)",
                    location=f"line {line_no}",
                )
            file_open = saw_envelope = True
        elif name == b"BHS":
            if batch_open and batch_explicit:
                raise Hl7ParseError(
                    f"line {line_no}: BHS before a BTS closed the previous batch", location=f"line {line_no}"
                )
            close_message()
            batch_open = batch_explicit = saw_envelope = True
            batch_msgs = 0
            file_batches += 1
        elif name == b"MSH":
            close_message()
            if not batch_open:  # messages without BHS form an implicit batch
                batch_open, batch_explicit, batch_msgs = True, False, 0
                file_batches += 1
            batch_msgs += 1
            msg_start, msg_end = offset + start + (len(line) - len(stripped)), offset + end
        elif name == b"BTS":
            close_message()
            saw_envelope = True
            if not batch_open:
                raise Hl7ParseError(f"line {line_no}: BTS without a batch to close", location=f"line {line_no}")
            expected = _count(stripped, "BTS")
            if check_counts and expected is not None and expected != batch_msgs:
                raise Hl7ParseError(
                    f"line {line_no}: BTS-1 says {expected} message(s) but the batch holds {batch_msgs}",
                    location="BTS-1",
                )
            batch_open = batch_explicit = False
        elif name == b"FTS":
            close_message()
            saw_envelope = True
            batch_open = batch_explicit = False
            expected = _count(stripped, "FTS")
            if check_counts and expected is not None and expected != file_batches:
                raise Hl7ParseError(
                    f"line {line_no}: FTS-1 says {expected} batch(es) but the file holds {file_batches}",
                    location="FTS-1",
                )
            file_closed = True
        else:
            if msg_start < 0:
                name3 = stripped[:3].decode("latin-1")
                shown = f"a {name3} segment" if name3 in _STANDARD_IDS else "a line that is not a segment header"
                raise Hl7ParseError(
                    f"line {line_no}: {shown} before the first MSH (only FHS/BHS may precede a message)",
                    location=f"line {line_no}",
                )
            msg_end = offset + end
    close_message()

    if not messages:
        raise Hl7ParseError("no MSH segment found: the input holds no HL7 message", location="MSH")
    if len(messages) == 1 and not saw_envelope:
        return [raw]
    return [raw[s:e] for s, e in messages]
