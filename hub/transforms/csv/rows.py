"""A CSV file checked against a layout: the good rows as typed :class:`Record` values and one
:class:`~hub.transforms.csv.document.RowError` per problem of a bad row, with the row report (:meth:`Rows.report`).

:func:`read_rows` raises :class:`~hub.errors.CsvParseError` for file-level problems (no header, a required column
missing from the header, an unknown column with ``extra_columns: reject``); nothing else is silently dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from hub.errors import CsvParseError

from .document import CsvDocument, RowError
from .layout import ColumnSpec, Layout
from .records import BOM_B

__all__ = ["Record", "Rows", "read_rows", "check_document"]


@dataclass
class Record:
    """One good row: typed ``values`` (str, int, Decimal, date, datetime, bool or None) and the ``text`` as read."""

    row: int
    line: int
    values: dict[str, Any]
    text: dict[str, str]


@dataclass
class Rows:
    header: list[str]
    records: list[Record] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    total: int = 0  # data rows in the input, good and bad

    def report(self, limit: int = 50) -> str:
        """Every bad row on one line each (up to ``limit``)."""
        single = self.total == 1
        lines = [e.describe(with_row=not single) for e in self.errors[:limit]]
        if len(self.errors) > limit:
            lines.append(f"… and {len(self.errors) - limit} more")
        return "; ".join(lines)


def _typed(spec: ColumnSpec, text: str) -> Any:
    """The value of ``text`` (already stripped, not empty) as the column's type; ValueError says why not."""
    t = spec.type
    if t == "integer":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
    if t == "decimal":
        try:
            d = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"{text!r} is not a number") from None
        if not d.is_finite():
            raise ValueError(f"{text!r} is not a number")
        return d
    if t == "date":
        fmt = spec.format or "%Y-%m-%d"
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            raise ValueError(f"{text!r} is not a date in the form {fmt}") from None
    if t == "datetime":
        try:
            if spec.format:
                return datetime.strptime(text, spec.format)
            return datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{text!r} is not a date and time in the form {spec.format or 'ISO 8601'}") from None
    if t == "boolean":
        up = text.upper()
        if up in (v.upper() for v in spec.true_values):
            return True
        if up in (v.upper() for v in spec.false_values):
            return False
        raise ValueError(f"{text!r} is not one of {', '.join(spec.true_values + spec.false_values)}")
    if t == "code" and spec.values is not None and text not in spec.values:
        raise ValueError(f"{text!r} is not one of {', '.join(spec.values)}")
    return text


def _check_value(spec: ColumnSpec, text: str) -> Any:
    if spec.max_length is not None and len(text) > spec.max_length:
        raise ValueError(f"longer than {spec.max_length} characters")
    if spec.pattern is not None and not re.fullmatch(spec.pattern, text):
        raise ValueError("does not have the expected form (pattern)")  # the value is not echoed: it may be an id
    return _typed(spec, text)


def read_rows(raw: bytes, layout: Layout) -> Rows:
    """Check every row of ``raw`` against ``layout``. File-level problems (a required column missing from the
    header, an unknown column with ``extra_columns: reject``, no header) raise :class:`CsvParseError`; row-level
    problems are collected in ``Rows.errors`` — one :class:`RowError` per problem — and the row is left out of
    ``Rows.records``."""
    header_arg: bool | list[str] = True if layout.header else list(layout.columns)
    doc = (
        CsvDocument(
            raw, delimiter=layout.delimiter, quotechar=layout.quotechar, encoding=layout.encoding, header=header_arg
        )
        if _nonempty(raw)
        else None
    )
    if doc is None:
        raise CsvParseError("the input holds no CSV header or rows", location="row 0")
    return check_document(doc, layout)


def _nonempty(raw: bytes) -> bool:
    return bool(raw.strip(b" \t\r\n" + BOM_B))


def check_document(doc: CsvDocument, layout: Layout) -> Rows:
    missing = [n for n, spec in layout.columns.items() if spec.required and n not in doc.index]
    if missing:
        raise CsvParseError(
            f"the header lacks required column(s) {', '.join(missing)}", location=missing[0], code="required"
        )
    if layout.extra_columns == "reject":
        extra = [n for n in doc.header if n not in layout.columns]
        if extra:
            raise CsvParseError(
                f"the header names column(s) the layout does not know: {', '.join(extra)}", location=extra[0]
            )
    out = Rows(header=list(doc.header), total=len(doc.rows))
    for row in doc.rows:
        if row.error is not None:
            out.errors.append(row.error)
            continue
        values: dict[str, Any] = {}
        text: dict[str, str] = {}
        bad = False
        for name, spec in layout.columns.items():
            i = doc.index.get(name)
            raw_text = row.fields[i] if i is not None and i < len(row.fields) else ""
            t = raw_text.strip()
            text[name] = t
            if not t:
                values[name] = None
                if spec.required:
                    out.errors.append(RowError(row.number, row.line, name, "a value is required"))
                    bad = True
                continue
            try:
                values[name] = _check_value(spec, t)
            except ValueError as exc:
                out.errors.append(RowError(row.number, row.line, name, str(exc)))
                bad = True
        if not bad:
            out.records.append(Record(row.number, row.line, values, text))
    return out
