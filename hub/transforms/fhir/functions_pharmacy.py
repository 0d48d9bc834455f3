"""Table functions for the pharmacy message family (see :mod:`.functions` for how a function is called)."""

from __future__ import annotations

from typing import Any

from .functions import _number, register, units_of

__all__: list[str] = []


@register("cq_quantity")
def cq_quantity(run: Any, ctx: Any, row: Any, raw: str) -> dict[str, Any] | None:
    """A CQ field (``quantity^units&text&system``: TQ1-2, RXE-19 …) → a Quantity whose units are coded as OBX-6's
    (UCUM when the sender says so or the units code map knows the code). Not a number: a warning, nothing written."""
    d = run.v
    parts = raw.split(d.cs)
    text = d.d(parts[0].split(d.ss, 1)[0] if d.ss else parts[0]).strip()
    if not text:
        return None
    n = _number(text)
    if n is None:
        run.invalid(run.where(ctx, row), f"quantity {text!r} is not a number")
        return None
    q: dict[str, Any] = {"value": n}
    if len(parts) > 1 and parts[1]:
        q.update(units_of(run, parts[1].split(d.ss) if d.ss else [parts[1]]))
    return q
