"""Component name → implementation. Built-ins are imported lazily; third parties register via entry points.

A component is a class with a ``Config`` attribute (a pydantic model: the user documentation of its keys,
DESIGN.md §6.1) and a constructor ``(config, ctx)``. Kinds: ``source``, ``destination``, ``transform``,
``assembler`` (for ``batch:`` destinations).
Third-party packages add components with an entry point in the group ``hub.components`` whose name is
``kind:type`` (e.g. ``destination:kafka``) and whose value is ``package.module:Class``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

__all__ = ["lookup", "names", "BUILTINS"]

BUILTINS: dict[tuple[str, str], str] = {
    ("source", "file"): "hub.channels.file:FileSource",
    ("destination", "file"): "hub.channels.file:FileDestination",
    ("destination", "channel"): "hub.channels.channel:ChannelDestination",
    ("destination", "memory"): "hub.channels.memory:MemoryDestination",
    ("source", "memory"): "hub.channels.memory:MemorySource",
    ("source", "channel"): "hub.channels.memory:ChannelSource",
    ("source", "mllp"): "hub.channels.mllp:MllpSource",
    ("destination", "mllp"): "hub.channels.mllp:MllpDestination",
    ("source", "sftp"): "hub.channels.sftp:SftpSource",
    ("destination", "sftp"): "hub.channels.sftp:SftpDestination",
    ("transform", "csv_to_v2"): "hub.transforms.csv:CsvToV2",
    ("transform", "csv_to_fhir"): "hub.transforms.csv:CsvToFhir",
    ("transform", "v2_to_csv"): "hub.transforms.csv:V2ToCsv",
    ("transform", "json_to_v2"): "hub.transforms.json_layout:JsonToV2",
    ("transform", "v2_to_json"): "hub.transforms.json_layout:V2ToJson",
    ("transform", "xml_to_v2"): "hub.transforms.json_layout:XmlToV2",
    ("transform", "v2_to_xml"): "hub.transforms.json_layout:V2ToXml",
    ("assembler", "concat"): "hub.transforms.assemble:ConcatAssembler",
    ("assembler", "hl7_batch"): "hub.transforms.assemble:Hl7BatchAssembler",
    ("transform", "set"): "hub.transforms.mapping:SetTransform",
    ("transform", "copy"): "hub.transforms.mapping:CopyTransform",
    ("transform", "delete"): "hub.transforms.mapping:DeleteTransform",
    ("transform", "map"): "hub.transforms.mapping:MapTransform",
    ("transform", "python"): "hub.transforms.mapping:PythonTransform",
    ("transform", "v2_to_fhir"): "hub.transforms.fhir.v2_to_fhir:V2ToFhir",
    ("transform", "fhir_to_v2"): "hub.transforms.fhir.fhir_to_v2:FhirToV2",
    ("transform", "fhir_validate"): "hub.transforms.fhir.validate:FhirValidate",
    ("destination", "fhir_rest"): "hub.channels.fhir:FhirRestDestination",
    ("source", "fhir"): "hub.channels.fhir:FhirSource",
    ("source", "fhir_poll"): "hub.channels.fhir:FhirPollSource",
    ("transform", "x12_claim_check"): "hub.transforms.x12.components:X12ClaimCheck",
    ("transform", "v2_to_x12_837"): "hub.transforms.x12.components:V2ToX12837",
    ("transform", "fhir_to_x12_837"): "hub.transforms.x12.components:FhirToX12837",
    ("transform", "x12_835_to_csv"): "hub.transforms.x12.components:X12835ToCsv",
    ("transform", "x12_835_to_fhir"): "hub.transforms.x12.components:X12835ToFhir",
    ("transform", "x12_999"): "hub.transforms.x12.components:X12Ack",
    ("assembler", "x12_837"): "hub.channels.x12:X12_837Assembler",
    ("destination", "claim_status"): "hub.channels.x12:ClaimStatusDestination",
    ("source", "http"): "hub.channels.http:HttpSource",
    ("destination", "http"): "hub.channels.http:HttpDestination",
    ("source", "database"): "hub.channels.database:DatabaseSource",
    ("destination", "database"): "hub.channels.database:DatabaseDestination",
}

_cache: dict[tuple[str, str], Any] = {}


def _third_party() -> dict[tuple[str, str], str]:
    found = {}
    for ep in entry_points(group="hub.components"):
        kind, _, name = ep.name.partition(":")
        found[(kind, name)] = ep.value
    return found


def names(kind: str) -> list[str]:
    return sorted({n for k, n in {**BUILTINS, **_third_party()} if k == kind})


def lookup(kind: str, name: str) -> Any:
    """The component class for ``kind``/``name``; KeyError with the known names when there is none."""
    key = (kind, name)
    if key in _cache:
        return _cache[key]
    target = BUILTINS.get(key) or _third_party().get(key)
    if target is None:
        raise KeyError(f"unknown {kind} type {name!r} (known: {', '.join(names(kind))})")
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    _cache[key] = cls
    return cls
