"""The path-addressable view of a message that filters, routes and the declarative transforms work on.

Every format offers the same small surface, so ``set``/``copy``/``delete``/``map`` and ``when`` conditions work
on any format whose paths exist (DESIGN.md §5 names the notations):

* HL7 v2: ``PID-3``, ``PID-3.1``, ``PID-3[2].1``, ``OBX[3]-5``, ``PID-5.1.1`` (see ``hub.transforms.hl7v2``)
* FHIR: a FHIRPath subset (``Patient.name[0].family``, ``Bundle.entry.resource.id``)
* CSV: column names (one row)
* X12: ``CLM01``, ``NM1[85]03``
* JSON: JSONPath-like ``$.patient.mrn``, ``$.results[0].code``, ``$.results[*].code`` (see ``hub.transforms.json_doc``)
* XML: an XPath subset ``/order/patient/mrn``, ``//mrn``, ``/a/b[2]``, ``/a/b/@id`` (see ``hub.transforms.xml_doc``)

A channel's ``meta:`` names paths (in its messages' format) whose values become the message's indexed metadata
(``patient_id``, ``message_type``, ``control_id`` …): :func:`extract_meta` applies them over what the format's own
:data:`META` function reads, which is how JSON and XML (which have no header convention) get metadata at all.

``parse_document(content_type, raw)`` returns the format's document; formats register themselves in
:data:`PARSERS` (name → callable) lazily, so importing this module costs nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from hub.errors import MappingError

__all__ = [
    "Document",
    "parse_document",
    "PARSERS",
    "META",
    "document_of",
    "extract_meta",
    "validate_document",
    "VALIDATORS",
    "PATHS",
    "check_path",
]


@runtime_checkable
class Document(Protocol):
    """A parsed message whose values can be read and written by path. Values are decoded text."""

    def get(self, path: str) -> str | None:
        """The first value at ``path`` (escape sequences decoded), or None when absent or empty."""

    def get_all(self, path: str) -> list[str]:
        """Every value at ``path`` (all repetitions / all matching segments), decoded; [] when absent."""

    def set(self, path: str, value: str) -> None:
        """Write ``value`` at ``path``, creating segments/fields/components as needed (escaping as needed)."""

    def delete(self, path: str) -> None:
        """Empty the element at ``path`` (a missing element is not an error)."""

    def to_bytes(self) -> bytes:
        """Serialise. An unmodified document gives back exactly the bytes it was read from."""


# content type → "module:function" taking (raw: bytes) and returning a Document; imported on first use.
PARSERS: dict[str, str] = {
    "hl7v2": "hub.transforms.hl7v2:parse",
    "fhir": "hub.transforms.fhir.document:parse",
    "csv": "hub.transforms.csv:parse_document",
    "x12": "hub.transforms.x12:parse_document",
    "json": "hub.transforms.json_doc:parse",
    "xml": "hub.transforms.xml_doc:parse",
}
# content type → "module:function" taking the Document and returning the metadata the store indexes
# (control_id, message_type, trigger, sending_app, sending_facility, patient_id …).
META: dict[str, str] = {
    "hl7v2": "hub.transforms.hl7v2:meta",
    "fhir": "hub.transforms.fhir.document:meta",
    "x12": "hub.transforms.x12:meta",
}
# content type → "module:function" taking a path written in a configuration and returning its problem or None
# (``hub check`` reports it at the path's line). JSON and XML have no META function: they have no header
# convention, so their metadata comes from the channel's ``meta:`` paths only.
PATHS: dict[str, str] = {
    "hl7v2": "hub.transforms.hl7v2.paths:check_path",
    "json": "hub.transforms.json_doc:check_path",
    "xml": "hub.transforms.xml_doc:check_path",
}
# content type → {level: "module:function"} taking the Document and returning a list of hub.errors.Issue.
VALIDATORS: dict[str, dict[str, str]] = {
    "hl7v2": {"basic": "hub.transforms.hl7v2:check_basic", "strict": "hub.transforms.hl7v2:validate"},
    "fhir": {"basic": "hub.transforms.fhir.validate:check_basic", "strict": "hub.transforms.fhir.validate:validate"},
}
_loaded: dict[str, Callable[..., Any] | None] = {}


def _function(table: dict[str, str], content_type: str) -> Callable[..., Any] | None:
    key = f"{id(table)}:{content_type}"
    if key not in _loaded:
        target = table.get(content_type)
        fn = None
        if target is not None:
            module, _, name = target.partition(":")
            try:
                fn = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                fn = None  # that format's package is not installed/built: it simply has no paths
        _loaded[key] = fn
    return _loaded[key]


def parse_document(content_type: str, raw: bytes) -> Document:
    fn = _function(PARSERS, content_type)
    if fn is None:
        raise MappingError(f"content type {content_type!r} has no paths; use a python transform instead")
    doc: Document = fn(raw)
    return doc


def validate_document(content_type: str, doc: Any, level: str) -> list[Any]:
    """Issues found at ``level`` (``basic``: cheap header checks; ``strict``: the format's full rules)."""
    fn = _function(VALIDATORS.get(content_type, {}), level)
    return list(fn(doc)) if fn is not None else []


def extract_meta(content_type: str, doc: Any, paths: Mapping[Any, str] | None = None) -> dict[str, Any]:
    """The metadata of a parsed message: what the format's :data:`META` function reads, then the value at each of
    ``paths`` (a channel's ``meta:``, e.g. ``{patient_id: $.patient.mrn}``) where that path has one — a path
    with no value leaves the format's own value, and so does one this format cannot read (as in a condition: a
    channel that sniffs its format may get JSON and XML; ``hub check`` reports a path of a named format that is not
    one)."""
    fn = _function(META, content_type)
    out = {k: v for k, v in fn(doc).items() if v not in (None, "")} if fn is not None else {}
    for key, path in (paths or {}).items():
        try:
            value = doc.get(path)
        except MappingError:
            continue
        if value not in (None, ""):
            out[key] = value
    return out


def _guess(path: str) -> str | None:
    text = path.strip()
    if text.startswith("$"):
        return "json"
    if text.startswith("/"):
        return "xml"
    from hub.transforms.hl7v2.paths import looks_like_path

    return "hl7v2" if looks_like_path(text) else None


def check_path(content_type: str | None, path: str) -> str | None:
    """The problem of ``path`` written in a configuration for messages of ``content_type`` (None when it is fine
    or when that format's paths are not checked). Without a content type (the channel sniffs it), a path is
    checked as what it looks like: ``$…`` JSON, ``/…`` XML, ``PID-…`` HL7 v2."""
    if not isinstance(path, str):
        return None
    fmt = content_type or _guess(path)
    fn = _function(PATHS, fmt) if fmt is not None else None
    if fn is None:
        return None
    problem: str | None = fn(path)
    return problem


def document_of(message: Any) -> Document:
    """The message's parsed document, parsing (once) and caching it on ``message.parsed``.

    ``meta["encoding"]`` (a source's ``encoding:`` setting) is the character set of HL7 v2 content that does not
    name one in MSH-18; MSH-18 wins when present.
    """
    if message.parsed is None:
        doc = parse_document(message.content_type, message.raw)
        fallback = message.meta.get("encoding")
        # (an hl7v2 document is an Hl7Message, which has charset; the Document protocol does not name it)
        if fallback and message.content_type == "hl7v2" and not doc.charset:  # type: ignore[attr-defined]
            from hub.transforms.hl7v2 import parse

            doc = parse(message.raw, encoding=fallback)
        message.parsed = doc
    parsed: Document = message.parsed
    return parsed
