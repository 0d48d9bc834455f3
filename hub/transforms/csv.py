"""CSV for the hub: layouts, row-level checking, the column-path document, and the CSV conversions.

* :func:`parse_document` — one CSV input (a header row and one or more rows) as a path-addressable document
  whose paths are column names (``LAST``, ``BIRTHDATE``); ``get`` reads the first row, ``get_all`` every row,
  ``set``/``delete`` write every row. An unmodified document gives back exactly its bytes.
* :func:`split_rows` — ``split: csv_row``: one message per row, each carrying the header row with it, so every
  message is a complete CSV file on its own. Blank lines are skipped; quoted fields may hold line breaks.
* :class:`Layout` — a YAML file under ``mappings/csv/`` naming the delimiter, quoting, encoding, the columns
  (type, required, format, allowed values, pattern) and how columns map to HL7 v2 paths and FHIR elements.
* :func:`read_rows` — a file checked against a layout: the good rows (typed values) and a
  :class:`RowError` per bad row (row number, line, column, reason). Nothing is silently dropped.
* Transforms ``csv_to_v2`` (a roster row → ADT^A28/A31), ``csv_to_fhir`` (→ Patient, or a Bundle for several
  rows) and ``v2_to_csv`` (selected HL7 paths as columns, for exports).

Bad rows (see README "CSV"): with ``split: csv_row`` each row is its own message, so a bad row is rejected alone
(its reason names the column; the file report names the row) while the good rows go through. A whole-file
transform rejects the whole file with a report of every bad row (``bad_rows: reject``, the default), or sends the
good rows and records the bad ones with the message (``bad_rows: skip``: meta ``csv_row_errors``).

Pure code: no I/O except reading a layout file when a transform is built.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from hub.errors import ConfigError, CsvParseError, MappingError, ValidationError
from hub.message import Message
from hub.spec import Strict, TransformConfig
from hub.transforms import TransformContext

__all__ = [
    "CsvDocument",
    "parse_document",
    "split_rows",
    "csv_records",
    "Layout",
    "ColumnSpec",
    "ValueSpec",
    "load_layout",
    "read_rows",
    "Rows",
    "Record",
    "RowError",
    "CsvToV2",
    "CsvToFhir",
    "V2ToCsv",
]

_BOM = "\ufeff"
_BOM_B = b"\xef\xbb\xbf"
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n|\Z)")
_LINE_B = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n|\Z)")
_DELIMITERS = (",", ";", "\t", "|")


# ============================================================================================ records and splitting
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
        if rec.strip(b" \t\r\n" + _BOM_B):
            header = rec
            break
    if header is None:
        return [raw]
    if not header.endswith((b"\n", b"\r")):
        header += b"\r\n" if b"\r\n" in raw else b"\n"
    out = [header + rec for rec in records if rec.strip(b" \t\r\n")]
    return out or [raw]


# ============================================================================================ the document
def _decode(raw: bytes, encoding: str | None) -> tuple[str, str]:
    """Text and the encoding used. Without an encoding: UTF-8 (BOM allowed), else Windows-1252, else Latin-1."""
    if encoding:
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise CsvParseError(f"the file is not {encoding} text (byte {exc.start})", code="encoding") from None
        except LookupError:
            raise CsvParseError(f"unknown encoding {encoding!r}") from None
        return text.removeprefix(_BOM), encoding
    for enc in ("utf-8", "cp1252", "latin-1"):
        try:
            return raw.decode(enc).removeprefix(_BOM), enc
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes everything")  # pragma: no cover


def _sniff_delimiter(line: str, quotechar: str = '"') -> str:
    """The most frequent of , ; TAB | outside quotes in the header line (',' when none occurs)."""
    outside = re.sub(re.escape(quotechar) + r".*?" + re.escape(quotechar), "", line)
    counts = {d: outside.count(d) for d in _DELIMITERS}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] else ","


def _text_records(text: str, quotechar: str) -> list[tuple[int, str, str]]:
    """(first line number, record without its terminator, terminator) for every non-blank record."""
    out: list[tuple[int, str, str]] = []
    pending: list[str] = []
    quotes = 0
    start_line = line_no = 0
    for m in _LINE.finditer(text):
        if m.start() == m.end():
            break
        line = m.group()
        line_no += 1
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


def _fields(record: str, delimiter: str, quotechar: str) -> list[str]:
    """The fields of one record; ``csv.Error`` for broken quoting."""
    reader = csv.reader([record], delimiter=delimiter, quotechar=quotechar, strict=True)
    try:
        return next(reader)
    except StopIteration:
        return []


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
        text, self.encoding = _decode(raw, encoding)
        self.bom = raw.startswith(_BOM_B)
        records = _text_records(text, quotechar)
        if not records:
            raise CsvParseError("the input holds no CSV header or rows", location="row 0")
        self.delimiter = delimiter or _sniff_delimiter(records[0][1], quotechar)
        self.terminator = records[0][2] or "\n"
        if header is True:
            line, body, _ = records[0]
            try:
                names = _fields(body, self.delimiter, quotechar)
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
                row.fields = _fields(body, self.delimiter, quotechar)
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
        text = (_BOM if self.bom else "") + buf.getvalue()
        return text.encode(self.encoding if self.encoding != "utf-8" or not self.bom else "utf-8")


def parse_document(raw: bytes) -> CsvDocument:
    """One CSV input (header + rows) as a document; the delimiter is sniffed from the header (, ; TAB |).

    Raises :class:`CsvParseError` when the input has no header or every row is broken (a single broken row, as
    with ``split: csv_row``, is rejected with the column named); otherwise broken rows are kept in ``errors``.
    """
    return CsvDocument(raw)


# ============================================================================================ layouts
ColumnType = Literal["string", "integer", "decimal", "date", "datetime", "code", "boolean"]


class ColumnSpec(Strict):
    """One column of a layout."""

    type: ColumnType = Field("string", description="How the value is read and checked.")
    required: bool = Field(False, description="The header must name the column and every row must give a value.")
    format: str | None = Field(
        None,
        description="date/datetime: the strptime format of the file (default %Y-%m-%d; datetime: ISO 8601).",
        examples=["%m/%d/%Y", "%Y%m%d%H%M"],
    )
    values: list[str] | None = Field(None, description="code: the allowed values.", examples=[["M", "F", "U"]])
    pattern: str | None = Field(None, description="A regular expression the whole value must match.")
    max_length: int | None = Field(None, ge=1)
    true_values: list[str] = Field(
        ["Y", "YES", "TRUE", "T", "1"], description="boolean: texts read as true (any case)."
    )
    false_values: list[str] = Field(
        ["N", "NO", "FALSE", "F", "0"], description="boolean: texts read as false (any case)."
    )
    description: str = ""

    @field_validator("pattern")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"bad regular expression: {exc}") from None
        return v


class ValueSpec(Strict):
    """Where a target value comes from: a column (optionally mapped through a small table) or a constant."""

    column: str | None = Field(None, description="The column whose value is used.")
    value: str | None = Field(None, description="A constant value.")
    map: dict[str, str] | None = Field(
        None, description="Translate the column's value (a value not listed is an error unless default is set)."
    )
    default: str | None = Field(None, description="Used when the column is empty or its value is not in map.")
    if_: str | None = Field(None, alias="if", description="Only write this when the named column has a value.")

    @model_validator(mode="after")
    def _one_source(self) -> ValueSpec:
        if (self.column is None) == (self.value is None):
            raise ValueError("give exactly one of column or value")
        return self


Target = str | ValueSpec


class Hl7Target(Strict):
    """How a row becomes an HL7 v2 message."""

    message_type: str = Field("ADT^A28^ADT_A05", description="MSH-9; its trigger (component 2) is replaced by trigger.")
    trigger: str | ValueSpec | None = Field(
        None, description="The trigger event: fixed (A28) or from a column ({column: ACTION, map: {N: A28, U: A31}})."
    )
    version: str = "2.5.1"
    processing_id: str = "P"
    sending_app: str = ""
    sending_facility: str = ""
    receiving_app: str = ""
    receiving_facility: str = ""
    fields: dict[str, Target] = Field(description="HL7 path → column name or value spec, written in this order.")


class FhirTarget(Strict):
    """How a row becomes a FHIR resource (plain JSON)."""

    resource: str = Field("Patient", description="resourceType of what each row becomes.")
    elements: dict[str, Target] = Field(
        description="Element path (name[0].given[0], identifier[1].value, gender) → column name or value spec."
    )


class Layout(Strict):
    """A CSV layout file under ``mappings/csv/`` (YAML)."""

    description: str = ""
    delimiter: str = Field(",", min_length=1, max_length=1)
    quotechar: str = Field('"', min_length=1, max_length=1)
    encoding: str = "utf-8"
    header: bool = Field(True, description="The first row names the columns; false: columns in the order listed here.")
    line_terminator: Literal["\r\n", "\n"] = Field("\r\n", description="Line ends when the hub writes this layout.")
    extra_columns: Literal["ignore", "reject"] = Field(
        "ignore", description="A column in the file that is not listed here."
    )
    columns: dict[str, ColumnSpec] = Field(min_length=1)
    hl7: Hl7Target | None = None
    fhir: FhirTarget | None = None

    @model_validator(mode="after")
    def _known_columns(self) -> Layout:
        def check(where: str, t: Target | None) -> None:
            for col in _columns_of(t):
                if col not in self.columns:
                    raise ValueError(f"{where} uses column {col!r}, which is not under columns")

        if self.hl7 is not None:
            if isinstance(self.hl7.trigger, ValueSpec):
                check("hl7.trigger", self.hl7.trigger)
            for path, t in self.hl7.fields.items():
                check(f"hl7.fields.{path}", t)
        if self.fhir is not None:
            for path, t in self.fhir.elements.items():
                check(f"fhir.elements.{path}", t)
        return self


def _columns_of(t: Target | None) -> list[str]:
    if t is None:
        return []
    if isinstance(t, str):
        return [t]
    return [c for c in (t.column, t.if_) if c]


def load_layout(ctx: TransformContext, name: str) -> Layout:
    """Read ``mappings/<name>`` (YAML). Problems are :class:`ConfigError` naming the file."""
    path = Path(ctx.mappings_dir) / name
    if not path.is_file():
        raise ConfigError(f"CSV layout {name} not found in {ctx.mappings_dir}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Layout.model_validate(data if data is not None else {})
    except yaml.YAMLError as exc:
        raise ConfigError(f"CSV layout {name}: invalid YAML: {exc}") from None
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top)"
        raise ConfigError(f"CSV layout {name}: {where}: {first['msg']}") from None


# ============================================================================================ reading with a layout
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
    return bool(raw.strip(b" \t\r\n" + _BOM_B))


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


# ============================================================================================ values for targets
def _resolve(t: Target, rec: Record, layout: Layout, where: str) -> Any:
    """The value a target spec gives for one record (typed, or str), or None for nothing to write."""
    if isinstance(t, str):
        return rec.values.get(t)
    if t.if_ is not None and rec.values.get(t.if_) is None:
        return None
    if t.value is not None:
        return t.value
    assert t.column is not None
    value = rec.values.get(t.column)
    if value is None:
        return t.default
    if t.map is not None:
        key = rec.text.get(t.column, "")
        if key in t.map:
            return t.map[key]
        if t.default is not None:
            return t.default
        raise MappingError(f"column {t.column}: value {key!r} has no entry in the map for {where}", location=t.column)
    return value


def _hl7_text(value: Any) -> str:
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, datetime):
        return value.strftime("%Y%m%d%H%M%S") + (value.strftime("%z") if value.tzinfo else "")
    if isinstance(value, date):
        return value.strftime("%Y%m%d")
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _bad_rows(rows: Rows, name: str) -> ValidationError:
    first = rows.errors[0]
    return ValidationError(
        f"{name}: {len({e.row for e in rows.errors})} bad row(s) of {rows.total}: {rows.report()}",
        location=first.column or f"row {first.row}",
        code="102",
        issues=[],
    )


class _LayoutTransform:
    """Shared by the CSV → X transforms: the layout, and the rows of a message checked against it."""

    name = "csv"

    def __init__(self, layout_name: str, ctx: TransformContext, bad_rows: str) -> None:
        self.layout = load_layout(ctx, layout_name)
        self.layout_name = layout_name
        self.bad_rows = bad_rows

    def rows(self, message: Message) -> Rows:
        if message.content_type not in ("csv", "raw"):
            raise MappingError(f"{self.name} needs CSV input, not {message.content_type}")
        rows = read_rows(message.raw, self.layout)
        if not rows.total:
            raise ValidationError(
                f"{self.name}: the file holds a header and no data rows", location="row 1", code="101"
            )
        if rows.errors and (self.bad_rows == "reject" or not rows.records):
            raise _bad_rows(rows, self.name)
        return rows

    @staticmethod
    def note_skipped(out: Message, rows: Rows) -> None:
        if rows.errors:
            out.meta["csv_row_errors"] = [str(e) for e in rows.errors[:200]]
            out.meta["csv_rows_skipped"] = len({e.row for e in rows.errors})


# ============================================================================================ csv_to_v2
class CsvToV2:
    class Config(TransformConfig):
        """CSV rows → HL7 v2 messages, as the layout's ``hl7:`` section maps them (a PM roster → ADT^A28/A31).

        One row gives one message; a whole file of rows gives an HL7 batch file (FHS/BHS … BTS/FTS).
        ``{type: csv_to_v2, layout: csv/pm_roster.yaml, trigger: A31}``
        """

        type: Literal["csv_to_v2"] = "csv_to_v2"
        layout: str = Field(description="Layout file under the mappings folder.", examples=["csv/pm_roster.yaml"])
        trigger: str | None = Field(
            None, description="Trigger event for every row (overrides the layout's).", examples=["A28", "A31"]
        )
        bad_rows: Literal["reject", "skip"] = Field(
            "reject",
            description="With several rows in one message: reject the whole input with a report of every bad row, "
            "or send the good rows and record the bad ones with the message (meta csv_row_errors).",
        )

    name = "csv_to_v2"

    def __init__(self, config: Config, ctx: TransformContext) -> None:
        self.config = config
        self.base = _LayoutTransform(config.layout, ctx, config.bad_rows)
        self.base.name = self.name
        if self.base.layout.hl7 is None:
            raise ConfigError(f"csv_to_v2: layout {config.layout} has no hl7: section")
        self.target = self.base.layout.hl7
        if config.trigger is None and self.target.trigger is None and len(self.target.message_type.split("^")) < 2:
            raise ConfigError(
                f"csv_to_v2: layout {config.layout}: message_type needs a trigger (ADT^A28) or set trigger"
            )

    def _trigger(self, rec: Record) -> str | None:
        if self.config.trigger:
            return self.config.trigger
        t = self.target.trigger
        if t is None:
            return None
        if isinstance(t, str):
            return t
        value = _resolve(t, rec, self.base.layout, "hl7.trigger")
        return None if value is None else str(value)

    def build(self, rec: Record, now: datetime) -> Any:
        from hub.transforms.hl7v2 import new_message

        tg = self.target
        parts = tg.message_type.split("^")
        trigger = self._trigger(rec)
        if trigger:
            while len(parts) < 2:
                parts.append("")
            parts[1] = trigger
        msg = new_message(
            "^".join(parts),
            version=tg.version,
            processing_id=tg.processing_id,
            sending_app=tg.sending_app,
            sending_facility=tg.sending_facility,
            receiving_app=tg.receiving_app,
            receiving_facility=tg.receiving_facility,
            now=now,
        )
        if parts[0] == "ADT":
            if parts[1]:
                msg.set("EVN-1", parts[1])
            msg.set("EVN-2", now.strftime("%Y%m%d%H%M%S"))
        for path, t in tg.fields.items():
            value = _resolve(t, rec, self.base.layout, path)
            if value is None or value == "":
                continue
            try:
                msg.set(path, _hl7_text(value))
            except MappingError as exc:
                raise MappingError(f"row {rec.row}: {path}: {exc}", location=path) from None
        return msg

    def __call__(self, message: Message) -> Message:
        rows = self.base.rows(message)
        now = datetime.now(UTC).replace(microsecond=0)
        built = [self.build(rec, now) for rec in rows.records]
        if len(built) == 1 and rows.total == 1:
            out = message.replace(built[0].to_bytes(), "hl7v2", parsed=built[0])
        else:
            out = message.replace(_batch([m.to_bytes() for m in built], self.target, now), "hl7v2")
        self.base.note_skipped(out, rows)
        return out


def _batch(messages: list[bytes], tg: Hl7Target, now: datetime) -> bytes:
    """An HL7 batch file: FHS, BHS, the messages, BTS (count), FTS (1)."""
    from hub.transforms.hl7v2 import escape

    ts = now.strftime("%Y%m%d%H%M%S")
    head = "|".join(
        [
            "^~\\&",
            escape(tg.sending_app),
            escape(tg.sending_facility),
            escape(tg.receiving_app),
            escape(tg.receiving_facility),
            ts,
        ]
    )
    out = [f"FHS|{head}\r".encode(), f"BHS|{head}\r".encode()]
    out.extend(m if m.endswith(b"\r") else m + b"\r" for m in messages)
    out.append(f"BTS|{len(messages)}\r".encode())
    out.append(b"FTS|1\r")
    return b"".join(out)


# ============================================================================================ csv_to_fhir
_ELEMENT = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)(?:\[(\d+)\])?$")


def _put(resource: dict[str, Any], path: str, value: Any) -> None:
    """Write ``value`` at a dotted element path with list indexes, creating objects and lists as needed."""
    node: Any = resource
    steps = path.split(".")
    for n, step in enumerate(steps):
        m = _ELEMENT.match(step)
        if m is None:
            raise MappingError(f"{path!r} is not an element path like name[0].given[0]", location=path)
        key, index = m.group(1), m.group(2)
        last = n == len(steps) - 1
        if index is None:
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
        else:
            i = int(index)
            lst = node.setdefault(key, [])
            while len(lst) <= i:
                lst.append(None if last else {})
            if last:
                lst[i] = value
            else:
                if lst[i] is None:
                    lst[i] = {}
                node = lst[i]


def _compact(value: Any) -> Any:
    """Drop empty objects/lists and list holes left by rows without some values."""
    if isinstance(value, dict):
        out = {k: _compact(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        items = [_compact(v) for v in value]
        return [v for v in items if v not in (None, {}, [])]
    return value


class CsvToFhir:
    class Config(TransformConfig):
        """CSV rows → FHIR resources (plain JSON), as the layout's ``fhir:`` section maps them.

        One row gives the resource itself; several rows give a Bundle (``bundle``) with one entry per good row.
        ``{type: csv_to_fhir, layout: csv/pm_roster.yaml}``
        """

        type: Literal["csv_to_fhir"] = "csv_to_fhir"
        layout: str = Field(description="Layout file under the mappings folder.", examples=["csv/pm_roster.yaml"])
        bundle: Literal["transaction", "batch", "collection"] = Field(
            "transaction",
            description="Bundle type for several rows. transaction/batch entries are conditional updates "
            "(PUT Patient?identifier=system|value) when the resource has a first identifier with a system, else POST.",
        )
        bad_rows: Literal["reject", "skip"] = Field("reject", description="As for csv_to_v2.")

    name = "csv_to_fhir"

    def __init__(self, config: Config, ctx: TransformContext) -> None:
        self.config = config
        self.base = _LayoutTransform(config.layout, ctx, config.bad_rows)
        self.base.name = self.name
        if self.base.layout.fhir is None:
            raise ConfigError(f"csv_to_fhir: layout {config.layout} has no fhir: section")
        self.target = self.base.layout.fhir
        for path in self.target.elements:
            if not all(_ELEMENT.match(s) for s in path.split(".")):
                raise ConfigError(
                    f"csv_to_fhir: layout {config.layout}: {path!r} is not an element path like name[0].given[0]"
                )

    def build(self, rec: Record) -> dict[str, Any]:
        res: dict[str, Any] = {"resourceType": self.target.resource}
        for path, t in self.target.elements.items():
            value = _resolve(t, rec, self.base.layout, path)
            if value is None or value == "":
                continue
            _put(res, path, _json_value(value))
        return _compact(res)

    def _entry(self, res: dict[str, Any]) -> dict[str, Any]:
        entry: dict[str, Any] = {"resource": res}
        if self.config.bundle == "collection":
            return entry
        ids = res.get("identifier") or []
        first = ids[0] if ids and isinstance(ids[0], dict) else {}
        if first.get("system") and first.get("value"):
            entry["request"] = {
                "method": "PUT",
                "url": f"{res['resourceType']}?identifier={first['system']}|{first['value']}",
            }
        else:
            entry["request"] = {"method": "POST", "url": res["resourceType"]}
        return entry

    def __call__(self, message: Message) -> Message:
        rows = self.base.rows(message)
        resources = [self.build(rec) for rec in rows.records]
        if len(resources) == 1 and rows.total == 1:
            doc: dict[str, Any] = resources[0]
        else:
            doc = {"resourceType": "Bundle", "type": self.config.bundle, "entry": [self._entry(r) for r in resources]}
        out = message.replace(json.dumps(doc, ensure_ascii=False).encode("utf-8"), "fhir")
        self.base.note_skipped(out, rows)
        return out


# ============================================================================================ v2_to_csv
def _csv_text(spec: ColumnSpec | None, value: str) -> str:
    """An HL7 value back in the layout's form (dates in the column's format)."""
    if spec is None or not value:
        return value
    try:
        if spec.type == "date":
            return datetime.strptime(value[:8], "%Y%m%d").strftime(spec.format or "%Y-%m-%d")
        if spec.type == "datetime":
            digits = re.sub(r"[^0-9]", "", value.split("+")[0].split("-")[0])[:14].ljust(14, "0")
            dt = datetime.strptime(digits, "%Y%m%d%H%M%S")
            return dt.strftime(spec.format) if spec.format else dt.isoformat()
        if spec.type == "boolean":
            return {"Y": spec.true_values[0], "N": spec.false_values[0]}.get(value, value)
    except ValueError:
        return value
    return value


class V2ToCsv:
    class Config(TransformConfig):
        """HL7 v2 → one CSV row (with a header row): selected paths as columns, for exports to a PM system.

        ``{type: v2_to_csv, columns: {MRN: PID-3.1, LAST: PID-5.1, DOB: PID-7}}``, or ``{layout: csv/x.yaml}``
        to export the layout's columns through its ``hl7.fields`` map read backwards (dates in the layout's
        format, mapped codes translated back).
        """

        type: Literal["v2_to_csv"] = "v2_to_csv"
        columns: dict[str, str] | None = Field(None, description="Column name → HL7 path, in column order.")
        layout: str | None = Field(
            None, description="Layout under mappings/ whose columns and hl7.fields map are used."
        )
        header: bool = Field(True, description="Write the header row.")
        delimiter: str | None = Field(None, min_length=1, max_length=1, description="Default: the layout's, else ','.")
        line_terminator: Literal["\r\n", "\n"] | None = Field(None, description="Default: the layout's, else CRLF.")

        @model_validator(mode="after")
        def _one(self) -> V2ToCsv.Config:
            if (self.columns is None) == (self.layout is None):
                raise ValueError("give exactly one of columns or layout")
            return self

    def __init__(self, config: Config, ctx: TransformContext) -> None:
        self.config = config
        self.layout: Layout | None = None
        # column → (path, reverse map or None)
        self.plan: list[tuple[str, str | None, dict[str, str] | None]] = []
        if config.layout is not None:
            self.layout = load_layout(ctx, config.layout)
            if self.layout.hl7 is None:
                raise ConfigError(f"v2_to_csv: layout {config.layout} has no hl7: section")
            by_column: dict[str, tuple[str, dict[str, str] | None]] = {}
            for path, t in self.layout.hl7.fields.items():
                if isinstance(t, str):
                    by_column.setdefault(t, (path, None))
                elif t.column is not None:
                    rev = {v: k for k, v in t.map.items()} if t.map else None
                    by_column.setdefault(t.column, (path, rev))
            for name in self.layout.columns:
                path, rev = by_column.get(name, (None, None))
                self.plan.append((name, path, rev))
        else:
            assert config.columns is not None
            self.plan = [(name, path, None) for name, path in config.columns.items()]
        lay = self.layout
        self.delimiter = config.delimiter or (lay.delimiter if lay else ",")
        self.quotechar = lay.quotechar if lay else '"'
        self.terminator = config.line_terminator or (lay.line_terminator if lay else "\r\n")
        self.encoding = lay.encoding if lay else "utf-8"

    def __call__(self, message: Message) -> Message:
        from hub.transforms.document import document_of

        if message.content_type != "hl7v2":
            raise MappingError(f"v2_to_csv needs HL7 v2 input, not {message.content_type}")
        doc = document_of(message)
        row = []
        for name, path, rev in self.plan:
            value = (doc.get(path) or "") if path else ""
            if value == '""':
                value = ""
            if rev is not None and value:
                value = rev.get(value, value)
            spec = self.layout.columns.get(name) if self.layout else None
            row.append(_csv_text(spec, str(value)))
        buf = io.StringIO()
        w = csv.writer(buf, delimiter=self.delimiter, quotechar=self.quotechar, lineterminator=self.terminator)
        if self.config.header:
            w.writerow([name for name, _, _ in self.plan])
        w.writerow(row)
        try:
            data = buf.getvalue().encode(self.encoding)
        except UnicodeEncodeError as exc:
            raise MappingError(f"v2_to_csv: a value cannot be written as {self.encoding}: {exc.reason}") from None
        return message.replace(data, "csv")
