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

Modules, from the bottom up: :mod:`.records` (text → records and fields, ``split: csv_row``), :mod:`.document`
(the column-path document, :class:`RowError`), :mod:`.layout` (layout files), :mod:`.rows` (rows checked against
a layout, the row report), :mod:`.base` (what the CSV → X transforms share), :mod:`.to_hl7v2` (``csv_to_v2``),
:mod:`.to_fhir` (``csv_to_fhir``), :mod:`.from_hl7v2` (``v2_to_csv``). Their own ``import csv`` is the standard
library's module (imports are absolute), never this package.

Pure code: no I/O except reading a layout file when a transform is built.
"""

from __future__ import annotations

from .document import CsvDocument, RowError, parse_document
from .from_hl7v2 import V2ToCsv
from .layout import ColumnSpec, ColumnType, FhirTarget, Hl7Target, Layout, Target, ValueSpec, load_layout
from .records import csv_records, split_rows
from .rows import Record, Rows, check_document, read_rows
from .to_fhir import CsvToFhir
from .to_hl7v2 import CsvToV2

__all__ = [
    "CsvDocument",
    "parse_document",
    "split_rows",
    "csv_records",
    "Layout",
    "ColumnSpec",
    "ColumnType",
    "ValueSpec",
    "Target",
    "Hl7Target",
    "FhirTarget",
    "load_layout",
    "read_rows",
    "check_document",
    "Rows",
    "Record",
    "RowError",
    "CsvToV2",
    "CsvToFhir",
    "V2ToCsv",
]
