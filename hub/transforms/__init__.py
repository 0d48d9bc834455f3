"""Formats and conversions. Pure: no I/O, no imports of channels/ or store/ (DESIGN.md §4).

A transform is a class with a ``Config`` model and ``__call__(message) -> Message``; it raises an
:class:`~hub.errors.InputError` subclass (→ outcome ``rejected``) when the content cannot be transformed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from hub.message import Message

__all__ = ["Transform", "TransformContext", "load_mapping_model"]

M = TypeVar("M", bound=BaseModel)


class TransformContext(Protocol):
    """What a transform may ask of its surroundings when it is built (never while it runs)."""

    @property
    def mappings_dir(self) -> Any: ...

    def resolve(self, path: str) -> Any: ...


class Transform(Protocol):
    def __call__(self, message: Message) -> Message: ...


def load_mapping_model(
    ctx: TransformContext,
    name: str,
    model: type[M],
    label: str = "layout",
    branches: tuple[str, ...] = (),
) -> M:
    """Read the YAML table ``mappings/<name>`` into ``model`` (the CSV and JSON/XML layouts); every problem is a
    :class:`~hub.errors.ConfigError` naming the file and the key. ``branches``: the names pydantic gives the members
    of a union (``("str", "FieldSpec")`` for ``str | FieldSpec``): left out of the key, and the error of the first
    (the plain one) is the last to report. The only I/O of those transforms, done when one is built."""
    import yaml
    from pydantic import ValidationError

    from hub.errors import ConfigError

    path = Path(ctx.mappings_dir) / name
    if not path.is_file():
        raise ConfigError(f"{label} {name} not found in {ctx.mappings_dir}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return model.model_validate(data if data is not None else {})
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label} {name}: invalid YAML: {exc}") from None
    except ValidationError as exc:
        errors = exc.errors()
        first = next((e for e in errors if not branches or branches[0] not in e["loc"]), errors[0])
        at = ".".join(str(p) for p in first["loc"] if p not in branches)
        raise ConfigError(f"{label} {name}: {at or '(top)'}: {first['msg']}") from None
