"""What the layout-driven CSV → X transforms share: the value a target spec gives for one record
(:func:`resolve`), and :class:`LayoutTransform` — the layout, and a message's rows checked against it, with the
bad-rows policy (``reject``: one :class:`~hub.errors.ValidationError` reporting every bad row; ``skip``: the bad
rows recorded with the message, meta ``csv_row_errors``/``csv_rows_skipped``).
"""

from __future__ import annotations

from typing import Any

from hub.errors import MappingError, ValidationError
from hub.message import Message
from hub.transforms import TransformContext

from .layout import Layout, Target, load_layout
from .rows import Record, Rows, read_rows

__all__ = ["resolve", "LayoutTransform"]


def resolve(t: Target, rec: Record, layout: Layout, where: str) -> Any:
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


def _bad_rows(rows: Rows, name: str) -> ValidationError:
    first = rows.errors[0]
    return ValidationError(
        f"{name}: {len({e.row for e in rows.errors})} bad row(s) of {rows.total}: {rows.report()}",
        location=first.column or f"row {first.row}",
        code="102",
        issues=[],
    )


class LayoutTransform:
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
