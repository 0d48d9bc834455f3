"""CSV layouts: a YAML file under ``mappings/csv/`` naming the delimiter, quoting, encoding, the columns (type,
required, format, allowed values, pattern) and how columns map to HL7 v2 paths (``hl7:``) and FHIR elements
(``fhir:``). :func:`load_layout` reads and checks one (the only I/O of the CSV code, done when a transform is built).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from hub.spec import Strict
from hub.transforms import TransformContext, load_mapping_model

__all__ = [
    "ColumnType",
    "ColumnSpec",
    "ValueSpec",
    "Target",
    "Hl7Target",
    "FhirTarget",
    "Layout",
    "load_layout",
]


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
    return load_mapping_model(ctx, name, Layout, "CSV layout")
