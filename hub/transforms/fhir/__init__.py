"""FHIR R4 for the hub: documents with FHIRPath-subset paths, HL7 v2 ⇄ FHIR conversion, validation. Pure code, no I/O.

::

    doc = parse(raw)                         # FhirDocument: get/get_all/set/delete/to_bytes (FHIRPath subset)
    meta(doc)                                # control_id, message_type "Bundle^transaction", patient_id …
    bundle = convert(v2_bytes)               # HL7 v2 → a Bundle dict (IG v2-to-FHIR maps)
    v2 = to_v2(bundle_or_resource)           # FHIR → an Hl7Message (ADT, ORM/OML, SIU, RDE, ORU)
    issues = validate(doc)                   # from .validate: R4 element index → [Issue] (never raises)

Transforms (registered in :mod:`hub.registry`): ``v2_to_fhir``, ``fhir_to_v2``, ``fhir_validate``.
Mapping tables live under ``mappings/fhir`` (:mod:`.maps`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .document import FhirDocument, meta, parse
from .maps import Tables, load_tables

# ``validate`` is not re-exported: the name is its submodule's (``from hub.transforms.fhir.validate import validate``);
# a lazy attribute of the same name made ``from hub.transforms.fhir import validate`` recurse.
__all__ = ["FhirDocument", "parse", "meta", "Tables", "load_tables", "convert", "to_v2"]


def __getattr__(
    name: str,
) -> Callable[..., Any]:  # the converters and validator import lazily (fhir.resources is heavy)
    if name == "convert":
        from .v2_to_fhir import convert

        return convert
    if name == "to_v2":
        from .fhir_to_v2 import to_v2

        return to_v2
    raise AttributeError(name)
