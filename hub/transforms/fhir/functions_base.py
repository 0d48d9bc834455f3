"""What every module of table functions shares: the registry (:func:`register`, :data:`FUNCTIONS`), the
:data:`APPENDED` answer, and the helpers more than one family uses (:func:`number`, :func:`units_of`,
:func:`datatype_at`, :func:`keyed`, :func:`short_hash`).

This module imports none of the function modules: :mod:`.functions`, :mod:`.functions_adt` and
:mod:`.functions_pharmacy` import it and register their functions here at import, and :mod:`.table_functions`
imports all of them to give the complete :data:`FUNCTIONS`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from .conditions import Path

__all__ = ["FUNCTIONS", "register", "APPENDED", "number", "units_of", "datatype_at", "keyed", "short_hash"]

# Functions a table may name (``fn:name(args)``), filled by :func:`register`; read it through
# :mod:`.table_functions`, which imports every module that registers some.
FUNCTIONS: dict[str, Callable[..., Any]] = {}

APPENDED = "\x00appended"  # a function's answer "written into what an earlier row made" (the lines of one text)


def register(
    name: str, *, whole_field: bool = False, pure: bool = False, reads: tuple[int, ...] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``pure``: the result depends only on the value being mapped (its components) and the tables — never on the
    patient, other segments or instances — so a data type map made only of such rows may reuse its results.
    ``reads``: the components of the value the function reads besides the row's own (``--explain`` counts them)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.whole_field = whole_field  # type: ignore[attr-defined]
        fn.pure = pure  # type: ignore[attr-defined]
        fn.reads = reads  # type: ignore[attr-defined]
        FUNCTIONS[name] = fn
        return fn

    return deco


def short_hash(*parts: str) -> str:
    return hashlib.sha1("|".join(parts).encode("utf-8")).hexdigest()[:20]


def number(text: str) -> int | float | None:
    t = text.strip()
    if not t or not t.isascii() or "e" in t.lower():
        return None
    try:
        if t.lstrip("+-").isdigit():
            return int(t)
        f = float(t)
    except ValueError:
        return None
    return None if f != f or f in (float("inf"), float("-inf")) else f


def units_of(run: Any, comps: list[str]) -> dict[str, Any]:
    """CWE units (OBX-6, RXA-7 …) → unit/system/code of a Quantity (UCUM when the sender says so or the units
    code map knows the code)."""
    d = run.v
    vals = [(d.d(c.split(d.ss, 1)[0]) if d.ss and d.ss in c else d.d(c)) for c in comps[:3]] + ["", "", ""]
    code, text, cs = vals[0], vals[1], vals[2]
    if cs == "UCUM":
        unit, system = text or code, "http://unitsofmeasure.org"
    elif cs == "":
        hit = run.tables.code_map("units").get(code)
        if hit:
            unit, system, code = text or code, hit[1], hit[0]
        elif code or text:
            return {"unit": text or code}
        else:
            return {}
    else:
        unit, system = text or code, run.tables.system_uri(cs)
    out: dict[str, Any] = {}
    if unit:
        out["unit"] = unit
    if system:
        out["system"] = system
    if code:
        out["code"] = code
    return out


def datatype_at(run: Any, ctx: Any, path: Path | None, name: str) -> Any:
    """What the data type map ``name`` makes of the value at ``path`` (its first repetition); None when empty."""
    value = ctx.raw(path) if path is not None else ""
    return run.apply_datatype(run.defs.datatypes[name], value, 0, ctx) if value else None


def keyed(run: Any, mp: Any, body: dict[str, Any], *parts: str) -> dict[str, Any]:
    """A resource the tables would only name (``without_key: display``: no identifier) but which carries more than
    its name (an address, a phone): an identifier derived from what was sent (the same for every patient, as
    ``fn:derived_shared``), so the content reaches the Bundle instead of a bare display."""
    rule = run.defs.resources.get(mp.type)
    if body.get("identifier") or rule is None or rule.without_key != "display" or len(body) < 2:
        return body
    body["identifier"] = [{"system": run.tables.derived_system(mp.type), "value": short_hash(mp.type, *parts)}]
    return body
