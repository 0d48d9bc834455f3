"""Compile condition specs (DESIGN.md §5) into predicates over a message's document.

``{path: MSH-9.1, in: [ADT]}`` is true when *any* value at the path (every repetition, every matching segment)
is in the list; ``equals`` and ``matches`` likewise; ``exists: true`` when the path has a non-empty value.
A path that the format cannot address is a miss, not an error — a filter on ``PID-3`` simply does not match
a message without a PID, nor a JSON message (whose paths are ``$.patient.mrn``; XML's ``/order/patient/mrn``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from hub.errors import InputError
from hub.spec import Condition
from hub.transforms.document import document_of

__all__ = ["Predicate", "compile_condition", "compile_all"]

Predicate = Callable[[Any], bool]


def _values(message: Any, path: str) -> list[str]:
    try:
        return document_of(message).get_all(path)
    except InputError:
        return []


def compile_condition(c: Condition) -> Predicate:
    if c.all is not None:
        parts = [compile_condition(x) for x in c.all]
        return lambda m: all(p(m) for p in parts)
    if c.any is not None:
        parts = [compile_condition(x) for x in c.any]
        return lambda m: any(p(m) for p in parts)
    if c.not_ is not None:
        inner = compile_condition(c.not_)
        return lambda m: not inner(m)
    path = c.path
    assert path is not None
    if c.equals is not None:
        want = c.equals
        return lambda m: want in _values(m, path)
    if c.in_ is not None:
        allowed = frozenset(c.in_)
        return lambda m: any(v in allowed for v in _values(m, path))
    if c.matches is not None:
        rx = re.compile(c.matches)
        return lambda m: any(rx.search(v) for v in _values(m, path))
    if c.exists is not None:
        want_exists = c.exists
        return lambda m: bool(_values(m, path)) is want_exists
    raise ValueError("empty condition")  # the spec model makes this unreachable


def compile_all(conditions: list[Condition]) -> Predicate:
    preds = [compile_condition(c) for c in conditions]
    return lambda m: all(p(m) for p in preds)
