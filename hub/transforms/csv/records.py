"""CSV text → records and fields: the layer under the document, with no notion of columns or layouts.

* :func:`csv_records` groups physical lines into CSV records (a quoted field may span lines); :func:`split_rows`
  is ``split: csv_row`` on top of it (one ``header + row`` per data row, byte for byte).
* :func:`decode` (the encoding, or UTF-8 → Windows-1252 → Latin-1), :func:`sniff_delimiter`,
  :func:`text_records` (numbered, non-blank records with their line ends) and :func:`split_fields` (one record's
  fields, ``csv.Error`` for broken quoting) are what :class:`~hub.transforms.csv.document.CsvDocument` reads with.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator

from hub.errors import CsvParseError

__all__ = [
    "BOM",
    "BOM_B",
    "csv_records",
    "split_rows",
    "decode",
    "sniff_delimiter",
    "text_records",
    "split_fields",
]

BOM = "\ufeff"
BOM_B = b"\xef\xbb\xbf"
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n|\Z)")
_LINE_B = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n|\Z)")
_DELIMITERS = (",", ";", "\t", "|")


def csv_records(lines: Iterable[bytes], quotechar: bytes = b'"') -> Iterator[bytes]:
    """Group physical lines (each with its terminator) into CSV records: a quoted field may span lines.

    A record ends at a line end outside quotes (an even number of quote characters so far). An unterminated quote
    makes the rest of the input one record; parsing that record reports it.
    """
    pending: list[bytes] = []
    quotes = 0
    for line in lines:
        if not line:
            continue
        pending.append(line)
        quotes += line.count(quotechar)
        if quotes % 2 == 0:
            yield b"".join(pending)
            pending, quotes = [], 0
    if pending:
        yield b"".join(pending)


def _lines_b(raw: bytes) -> Iterator[bytes]:
    for m in _LINE_B.finditer(raw):
        if m.start() == m.end():
            break
        yield m.group()


def split_rows(raw: bytes) -> list[bytes]:
    """``split: csv_row``: one ``header + row`` per data row, byte for byte as written (header kept with each).

    Blank lines are skipped. A file with a header and no rows comes back whole (``[raw]``), so it is still seen
    (and rejected by a CSV transform: "no data rows") rather than vanishing.
    """
    records = csv_records(_lines_b(raw))
    header = None
    for rec in records:
        if rec.strip(b" \t\r\n" + BOM_B):
            header = rec
            break
    if header is None:
        return [raw]
    if not header.endswith((b"\n", b"\r")):
        header += b"\r\n" if b"\r\n" in raw else b"\n"
    out = [header + rec for rec in records if rec.strip(b" \t\r\n")]
    return out or [raw]


def decode(raw: bytes, encoding: str | None) -> tuple[str, str]:
    """Text and the encoding used. Without an encoding: UTF-8 (BOM allowed), else Windows-1252, else Latin-1."""
    if encoding:
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise CsvParseError(f"the file is not {encoding} text (byte {exc.start})", code="encoding") from None
        except LookupError:
            raise CsvParseError(f"unknown encoding {encoding!r}") from None
        return text.removeprefix(BOM), encoding
    for enc in ("utf-8", "cp1252", "latin-1"):
        try:
            return raw.decode(enc).removeprefix(BOM), enc
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes everything")  # pragma: no cover


def sniff_delimiter(line: str, quotechar: str = '"') -> str:
    """The most frequent of , ; TAB | outside quotes in the header line (',' when none occurs)."""
    outside = re.sub(re.escape(quotechar) + r".*?" + re.escape(quotechar), "", line)
    counts = {d: outside.count(d) for d in _DELIMITERS}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] else ","


def text_records(text: str, quotechar: str) -> list[tuple[int, str, str]]:
    """(first line number, record without its terminator, terminator) for every non-blank record."""
    out: list[tuple[int, str, str]] = []
    pending: list[str] = []
    quotes = 0
    start_line = 0
    for line_no, m in enumerate(_LINE.finditer(text), start=1):
        if m.start() == m.end():
            break
        line = m.group()
        if not pending:
            start_line = line_no
        pending.append(line)
        quotes += line.count(quotechar)
        if quotes % 2 == 0:
            rec = "".join(pending)
            body = rec.rstrip("\r\n")
            if body.strip():
                out.append((start_line, body, rec[len(body) :]))
            pending, quotes = [], 0
    if pending:
        rec = "".join(pending)
        body = rec.rstrip("\r\n")
        if body.strip():
            out.append((start_line, body, rec[len(body) :]))
    return out


def split_fields(record: str, delimiter: str, quotechar: str) -> list[str]:
    """The fields of one record; ``csv.Error`` for broken quoting."""
    reader = csv.reader([record], delimiter=delimiter, quotechar=quotechar, strict=True)
    try:
        return next(reader)
    except StopIteration:
        return []
