"""Formats and conversions. Pure: no I/O, no imports of channels/ or store/ (DESIGN.md §4).

A transform is a class with a ``Config`` model and ``__call__(message) -> Message``; it raises an
:class:`~hub.errors.InputError` subclass (→ outcome ``rejected``) when the content cannot be transformed.
"""

from __future__ import annotations

from typing import Any, Protocol

from hub.message import Message

__all__ = ["Transform", "TransformContext"]


class TransformContext(Protocol):
    """What a transform may ask of its surroundings when it is built (never while it runs)."""

    @property
    def mappings_dir(self) -> Any: ...

    def resolve(self, path: str) -> Any: ...


class Transform(Protocol):
    def __call__(self, message: Message) -> Message: ...
