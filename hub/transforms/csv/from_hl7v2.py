"""``v2_to_csv``: HL7 v2 → one CSV row (with a header row) for exports to a PM system: selected paths as
columns, or a layout's columns through its ``hl7.fields`` map read backwards (dates in the layout's format, mapped
codes translated back).
"""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from hub.errors import ConfigError, MappingError
from hub.message import Message
from hub.spec import TransformConfig
from hub.transforms import TransformContext

from .layout import ColumnSpec, Layout, load_layout

__all__ = ["V2ToCsv"]


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
            for hl7_path, t in self.layout.hl7.fields.items():
                if isinstance(t, str):
                    by_column.setdefault(t, (hl7_path, None))
                elif t.column is not None:
                    reverse = {v: k for k, v in t.map.items()} if t.map else None
                    by_column.setdefault(t.column, (hl7_path, reverse))
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
