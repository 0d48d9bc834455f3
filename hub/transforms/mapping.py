"""Declarative transforms an analyst writes in YAML: ``set``, ``copy``, ``delete``, ``map``, and ``python``.

They work on any format whose paths exist (HL7 v2 ``PID-3.1``, FHIR paths, CSV columns, X12 ``CLM01``, JSON
``$.patient.mrn``, XML ``/order/patient/mrn``), through the document of :mod:`hub.transforms.document`. A
channel's pipeline hands each route its own copy of the message, so these transforms change that copy's document
in place and re-serialise it.

``map`` translates a value through a CSV code table under ``mappings/`` (header row; the key and value
columns are named in the step or default to the first two). The table is read once, when the channel is built.

``set``, ``copy``, ``delete`` and ``map`` are ``light`` (a few microseconds a message): a channel whose transforms
are all light runs its pipeline on the event loop; any other transform (``python`` included: its cost is
unknown) moves the channel's pipeline to a worker thread (see :mod:`hub.channels.channel`).
"""

from __future__ import annotations

import csv
import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from hub.errors import ConfigError, MappingError
from hub.message import Message
from hub.spec import TransformConfig
from hub.transforms import TransformContext
from hub.transforms.document import document_of

__all__ = ["SetTransform", "CopyTransform", "DeleteTransform", "MapTransform", "PythonTransform", "load_code_table"]


def _commit(message: Message, doc: Any) -> Message:
    return message.replace(doc.to_bytes(), parsed=doc)


class SetTransform:
    class Config(TransformConfig):
        """Write a fixed value at a path: ``{type: set, path: MSH-5, value: EHR}``."""

        type: Literal["set"] = "set"
        path: str = Field(
            description="Where to write, in the format's path notation.",
            examples=["MSH-5", "PV1-3.1", "$.routing.to", "/order/@to"],
        )
        value: str = Field(description="The value (escaped for the format as needed).")

    light: ClassVar[bool] = True  # microseconds a message: may run on the event loop

    def __init__(self, config: Config, ctx: TransformContext) -> None:
        self.config = config

    def __call__(self, message: Message) -> Message:
        doc = document_of(message)
        doc.set(self.config.path, self.config.value)
        return _commit(message, doc)


class CopyTransform:
    class Config(TransformConfig):
        """Copy a value from one path to another: ``{type: copy, from: PID-3.1, to: PID-2.1}``."""

        type: Literal["copy"] = "copy"
        from_: str = Field(alias="from", description="Path to read.")
        to: str = Field(description="Path to write.")
        required: bool = Field(False, description="Reject the message when the source path is empty.")

    light: ClassVar[bool] = True  # microseconds a message: may run on the event loop

    def __init__(self, config: Config, ctx: TransformContext) -> None:
        self.config = config

    def __call__(self, message: Message) -> Message:
        doc = document_of(message)
        value = doc.get(self.config.from_)
        if value is None:
            if self.config.required:
                raise MappingError(f"copy: {self.config.from_} is empty", location=self.config.from_, code="101")
            doc.delete(self.config.to)
        else:
            doc.set(self.config.to, value)
        return _commit(message, doc)


class DeleteTransform:
    class Config(TransformConfig):
        """Empty one or more elements: ``{type: delete, path: PID-19}`` or
        ``{type: delete, paths: [PID-19, PID-20]}``."""

        type: Literal["delete"] = "delete"
        path: str | None = None
        paths: list[str] = Field(default_factory=list)

    light: ClassVar[bool] = True  # microseconds a message: may run on the event loop

    def __init__(self, config: Config, ctx: TransformContext) -> None:
        self.paths = ([config.path] if config.path else []) + list(config.paths)
        if not self.paths:
            raise ConfigError("delete: give path or paths")

    def __call__(self, message: Message) -> Message:
        doc = document_of(message)
        for p in self.paths:
            doc.delete(p)
        return _commit(message, doc)


def load_code_table(path: Path, key: str | None, value: str | None) -> dict[str, str]:
    """Read a CSV code table (header row) into {key column: value column}."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        if len(cols) < 2:
            raise ConfigError(f"{path}: a code table needs a header row with at least two columns")
        k = key or cols[0]
        v = value or cols[1]
        for c in (k, v):
            if c not in cols:
                raise ConfigError(f"{path}: no column {c!r} (columns: {', '.join(cols)})")
        table: dict[str, str] = {}
        for row in reader:
            if row.get(k) is None or row[k].startswith("#"):
                continue
            table.setdefault(row[k].strip(), (row.get(v) or "").strip())
        return table


class MapTransform:
    class Config(TransformConfig):
        """Translate a code through a CSV table under ``mappings/``.

        ``{type: map, path: PV1-2, table: patient_class.csv}`` reads PV1-2, looks it up in the table's first
        column and writes the second column's value back (or to ``to:``). A value that is not in the table is
        an error (the message is rejected with the value named) unless ``default`` is given or
        ``on_missing: keep``.
        """

        type: Literal["map"] = "map"
        path: str = Field(description="Path of the code to translate.")
        table: str = Field(description="CSV file under the mappings folder.", examples=["v2/patient_class.csv"])
        to: str | None = Field(None, description="Write the result here instead of back to path.")
        key: str | None = Field(None, description="Column holding the incoming code (default: the first).")
        value: str | None = Field(None, description="Column holding the result (default: the second).")
        default: str | None = Field(None, description="Result when the code is not in the table.")
        on_missing: Literal["error", "keep", "empty"] = "error"

    light: ClassVar[bool] = True  # microseconds a message: may run on the event loop

    def __init__(self, config: Config, ctx: TransformContext) -> None:
        self.config = config
        path = Path(ctx.mappings_dir) / config.table
        if not path.is_file():
            raise ConfigError(f"map: mapping table {config.table} not found in {ctx.mappings_dir}")
        self.table = load_code_table(path, config.key, config.value)

    def __call__(self, message: Message) -> Message:
        c = self.config
        doc = document_of(message)
        code = doc.get(c.path)
        target = c.to or c.path
        if code is None:
            return message if c.to is None else _commit(message, doc)
        result = self.table.get(code)
        if result is None:
            if c.default is not None:
                result = c.default
            elif c.on_missing == "keep":
                result = code
            elif c.on_missing == "empty":
                doc.delete(target)
                return _commit(message, doc)
            else:
                raise MappingError(f"map: {c.path} value {code!r} is not in {c.table}", location=c.path, code="103")
        doc.set(target, result)
        return _commit(message, doc)


class PythonTransform:
    class Config(TransformConfig):
        """Call ``module:function`` (importable from the folders in hub.yaml ``python_path``).

        The function takes the Message and returns a Message, bytes, str, or None (unchanged). Raising
        ``hub.errors.MappingError`` rejects the message with that reason.
        """

        type: Literal["python"] = "python"
        function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", examples=["clinic.transforms:fix_mrn"])

    def __init__(self, config: Config, ctx: TransformContext) -> None:
        module, _, name = config.function.partition(":")
        try:
            fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"python: cannot import {config.function}: {exc}") from exc
        if not callable(fn) or len(inspect.signature(fn).parameters) < 1:
            raise ConfigError(f"python: {config.function} must be a function taking the message")
        self.fn: Callable[[Message], Any] = fn
        self.name = config.function

    def __call__(self, message: Message) -> Message:
        result = self.fn(message)
        if result is None:
            return message
        if isinstance(result, Message):
            return result
        if isinstance(result, str):
            return message.replace(result.encode("utf-8"))
        if isinstance(result, (bytes, bytearray)):
            return message.replace(bytes(result))
        raise MappingError(f"python: {self.name} returned {type(result).__name__}, not a Message, bytes or str")
