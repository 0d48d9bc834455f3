"""The column-path document: one CSV input (a header row and rows) addressed by column names.

:func:`parse_document` gives a :class:`CsvDocument` whose paths are column names (``LAST``, ``BIRTHDATE``):
``get`` reads the first row, ``get_all`` every row, ``set``/``delete`` write every row, and an unmodified document
gives back exactly its bytes. A row whose shape is wrong (broken quoting, too many or too few fields) is kept with
its :class:`RowError`; only an input without a header or with every row broken raises
:class:`~hub.errors.CsvParseError`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass

from hub.errors import CsvParseError, MappingError

from .records import BOM, BOM_B, decode, sniff_delimiter, split_fields, text_records

__all__ = ["RowError", "CsvDocument", "parse_document"]


@dataclass
class RowError:
    """One problem of one row: ``row`` counts data rows from 1 (the header is not a row), ``line`` is the file line."""

    row: int
    line: int
    column: str | None
    reason: str

    def describe(self, with_row: bool = True) -> str:
        parts = []
        if with_row:
            parts.append(f"row {self.row} (line {self.line})")
        if self.column:
            parts.append(f"column {self.column}")
        where = ", ".join(parts)
        return f"{where}: {self.reason}" if where else self.reason

    def __str__(self) -> str:
        return self.describe()


@dataclass
class _Row:
    number: int
    line: int
    fields: list[str]
    error: RowError | None = None
    terminator: str = "\n"


class CsvDocument:
    """A CSV input as a document whose paths are column names (DESIGN.md §5: "CSV uses column names")."""

    def __init__(
        self,
        raw: bytes,
        *,
        delimiter: str | None = None,
        quotechar: str = '"',
        encoding: str | None = None,
        header: bool | list[str] = True,
    ) -> None:
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        self.raw = raw
        self.quotechar = quotechar
        text, self.encoding = decode(raw, encoding)
        self.bom = raw.startswith(BOM_B)
        records = text_records(text, quotechar)
        if not records:
            raise CsvParseError("the input holds no CSV header or rows", location="row 0")
        self.delimiter = delimiter or sniff_delimiter(records[0][1], quotechar)
        self.terminator = records[0][2] or "\n"
        if header is True:
            line, body, _ = records[0]
            try:
                names = split_fields(body, self.delimiter, quotechar)
            except csv.Error as exc:
                raise CsvParseError(f"line {line}: the header row is not valid CSV: {exc}", location="header") from None
            self.header = [n.strip() for n in names]
            seen: set[str] = set()
            for n in self.header:
                if not n:
                    raise CsvParseError(f"line {line}: the header has an empty column name", location="header")
                if n in seen:
                    raise CsvParseError(f"line {line}: column name {n!r} appears twice in the header", location=n)
                seen.add(n)
            self.has_header = True
            body_records = records[1:]
        else:
            self.header = list(header) if isinstance(header, list) else []
            self.has_header = False
            body_records = records
        self.index = {n: i for i, n in enumerate(self.header)}
        self.rows: list[_Row] = []
        for number, (line, body, term) in enumerate(body_records, start=1):
            row = _Row(number, line, [], terminator=term or self.terminator)
            try:
                row.fields = split_fields(body, self.delimiter, quotechar)
            except csv.Error as exc:
                row.error = RowError(number, line, None, f"not valid CSV ({exc})")
            else:
                row.error = self._shape_error(row)
            self.rows.append(row)
        self.modified = False
        if self.rows and all(r.error is not None for r in self.rows):
            errs = [r.error for r in self.rows if r.error is not None]
            single = len(self.rows) == 1
            text_ = "; ".join(e.describe(with_row=not single) for e in errs[:5]) + ("; …" if len(errs) > 5 else "")
            raise CsvParseError(text_, location=errs[0].column or f"row {errs[0].row}")

    def _shape_error(self, row: _Row) -> RowError | None:
        n, want = len(row.fields), len(self.header)
        if not self.header or n == want:
            return None
        if n > want:
            if all(not f.strip() for f in row.fields[want:]):
                del row.fields[want:]  # trailing empty fields (a trailing delimiter): harmless
                return None
            return RowError(row.number, row.line, None, f"{n} fields but the header names {want} columns")
        missing = self.header[n]
        return RowError(
            row.number, row.line, missing, f"missing: the row has {n} fields, the header names {want} columns"
        )

    # ------------------------------------------------------------------ Document protocol
    @property
    def errors(self) -> list[RowError]:
        return [r.error for r in self.rows if r.error is not None]

    def records(self) -> Iterator[tuple[_Row, dict[str, str]]]:
        """(row, {column: text}) for every row without a structural error."""
        for r in self.rows:
            if r.error is None:
                yield r, {n: (r.fields[i] if i < len(r.fields) else "") for n, i in self.index.items()}

    def _column(self, path: str) -> int | None:
        return self.index.get(path.strip())

    def get(self, path: str) -> str | None:
        i = self._column(path)
        if i is None:
            return None
        for r in self.rows:
            if r.error is None:
                value = r.fields[i] if i < len(r.fields) else ""
                return value if value != "" else None
        return None

    def get_all(self, path: str) -> list[str]:
        i = self._column(path)
        if i is None:
            return []
        return [r.fields[i] for r in self.rows if r.error is None and i < len(r.fields) and r.fields[i] != ""]

    def set(self, path: str, value: str) -> None:
        name = path.strip()
        if not name:
            raise MappingError("an empty column name cannot be set", location=path)
        i = self._column(name)
        if i is None:
            self.header.append(name)
            i = self.index[name] = len(self.header) - 1
        for r in self.rows:
            if r.error is None:
                while len(r.fields) <= i:
                    r.fields.append("")
                r.fields[i] = "" if value is None else str(value)
        self.modified = True

    def delete(self, path: str) -> None:
        i = self._column(path)
        if i is None:
            return
        for r in self.rows:
            if r.error is None and i < len(r.fields):
                r.fields[i] = ""
        self.modified = True

    def to_bytes(self) -> bytes:
        if not self.modified:
            return self.raw
        buf = io.StringIO()
        w = csv.writer(buf, delimiter=self.delimiter, quotechar=self.quotechar, lineterminator=self.terminator)
        if self.has_header:
            w.writerow(self.header)
        for r in self.rows:
            w.writerow(r.fields)
        text = (BOM if self.bom else "") + buf.getvalue()
        return text.encode(self.encoding if self.encoding != "utf-8" or not self.bom else "utf-8")


def parse_document(raw: bytes) -> CsvDocument:
    """One CSV input (header + rows) as a document; the delimiter is sniffed from the header (, ; TAB |).

    Raises :class:`CsvParseError` when the input has no header or every row is broken (a single broken row, as
    with ``split: csv_row``, is rejected with the column named); otherwise broken rows are kept in ``errors``.
    """
    return CsvDocument(raw)
