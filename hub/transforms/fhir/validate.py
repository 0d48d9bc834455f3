"""FHIR R4 validation, table-driven: the element index ``r4_index.json.gz`` (``tools/gen_r4_index.py``, from the
official R4 StructureDefinitions) says which elements each type has, their cardinality, their types and required
bindings; :mod:`.values` checks each primitive value. No models are built — a Bundle is walked once as plain JSON,
so a typical converter Bundle costs well under a millisecond (the fhir.resources R4B models this replaced cost 2-3 ms).

What is checked (the things a converter can get wrong, and what a FHIR server refuses):

* structure: unknown elements (a wrong choice suffix such as ``valueFoo`` included), a single value where R4 has a
  list and a list where it has a single value, JSON objects where R4 has complex types, ``resourceType`` of every
  resource (Bundle entries, ``contained``, ``Parameters.parameter.resource``) and of the type an element expects;
* required elements (min ≥ 1) and ele-1: no ``""``, ``{}``, ``[]`` or ``null`` anywhere (``null`` only inside a
  primitive list whose ``_element`` partner carries something at that position);
* every primitive value by its declared type (:func:`.values.problem`: real calendar dates, hours 00-23, zones,
  precision, URIs without whitespace, codes, ids, 32-bit integers …); ``_element`` extensions of primitives;
* required bindings: a ``code`` in the expanded value set; a Coding/CodeableConcept bound to a required value set
  needs a coding of that set's system, and each such coding's code must be in the set;
* invariants: ext-1 (an extension has a value[x] or nested extensions, not both, not neither), ref-1 (``#id``
  points at a contained resource), Reference.reference is ``Type/id[/_history/v]``, ``Type?query`` (conditional),
  ``urn:uuid:``/``urn:oid:``, an absolute URL or ``#id``; qty-3, cpt-2, per-1, pat-1, obs-6, obs-7, ait-1, ait-2,
  con-4, con-5, app-2, app-3; dom-2, dom-4 for contained resources; Identifier.system and Coding.system are URIs
  (a warning when not absolute);
* Bundle: bdl-1 … bdl-5, bdl-7 (unique fullUrls), bdl-8, bdl-9 … bdl-12; a transaction/batch entry's request has
  a method and a url; the fullUrl agrees with the resource's id and is absolute (a warning); ``urn:uuid:``
  references of a transaction, collection, document or message point at an entry of the Bundle.

Not checked: invariants other than those listed, profiles, extensible/preferred bindings, code systems outside
the index (LOINC, SNOMED, UCUM …), the XHTML of narratives (only that it is a ``<div>``), max cardinalities other
than 1, whether ``Type/id`` references resolve, and the elements Medplum's copy of the definitions adds to R4
(``Meta.project`` …) are accepted with a warning.

:func:`validate` returns :class:`hub.errors.Issue` objects and never raises (DESIGN.md §6.3); locations are
FHIRPath-like (``Bundle.entry[6].resource.birthDate``), codes FHIR issue types (``required``, ``value``,
``code-invalid``, ``structure``, ``invariant``, ``not-found``); messages never quote values (they can be PHI).
:func:`check_basic` is the cheap ingest check (is it a resource at all). The ``fhir_validate`` transform stops a
message whose Bundle has error-level issues, with the issues as the reason; :func:`operation_outcome` renders
issues for an HTTP answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from functools import cache, lru_cache
from typing import Any, Literal

from pydantic import Field

from hub.errors import Issue, ValidationError
from hub.message import Message
from hub.spec import TransformConfig

from . import r4
from . import values as _v
from .document import FhirDocument
from .document import parse as parse_fhir

__all__ = ["validate", "check_basic", "operation_outcome", "FhirValidate", "resource_types"]

_PRIM, _COMPLEX, _RESOURCE, _ANY = 0, 1, 2, 3
_ERROR, _WARNING = "error", "warning"

# Elements (and one resource type) in Medplum's copy of the R4 definitions that R4 does not have (R5 backports
# and Medplum's own Meta fields): accepted — Medplum writes them — but reported as a warning.
_NOT_R4: dict[str, frozenset[str]] = {
    "Meta": frozenset({"account", "accounts", "author", "compartment", "onBehalfOf", "project", "deleted"}),
    "Binary": frozenset({"url"}),
    "DeviceDefinition": frozenset({"classification", "bodySite"}),
    "HealthcareService": frozenset({"offeredIn"}),
    "ObservationDefinition": frozenset({"publisher"}),
    "ResearchStudy": frozenset(
        {
            "outcomeMeasure",
            "progressStatus",
            "classifier",
            "studyDesign",
            "name",
            "comparisonGroup",
            "whyStopped",
            "recruitment",
            "associatedParty",
            "region",
            "label",
            "descriptionSummary",
            "result",
        }
    ),
}
_NOT_R4_TYPES = frozenset({"SubscriptionStatus"})
_ABSTRACT = frozenset({"Resource", "DomainResource"})

_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_ABSOLUTE_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S+")
_LITERAL_REF = re.compile(r"([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?")
_CONDITIONAL_REF = re.compile(r"([A-Z][A-Za-z]+)\?\S+")


def _index() -> dict[str, Any]:
    return r4.index()  # the one loaded copy of r4_index.json.gz


@lru_cache(maxsize=1)
def resource_types() -> frozenset[str]:
    """The concrete R4 resource types (what ``resourceType`` may say)."""
    return frozenset(k for k, t in _index()["types"].items() if t["kind"] == "resource" and k not in _ABSTRACT)


@cache
def _children(root: str) -> dict[str, list[tuple[str, list[Any]]]]:
    """A type's element paths grouped by their parent path ('' for the type's own elements)."""
    out: dict[str, list[tuple[str, list[Any]]]] = {}
    for path, info in _index()["types"][root]["elements"].items():
        parent, _, name = path.rpartition(".")
        out.setdefault(parent, []).append((name, info))
    return out


class _El:
    """One JSON key of an object: a plain element or one type of a choice (``valueQuantity``)."""

    __slots__ = ("check", "choice", "codes", "kind", "many", "name", "schema", "systems", "target", "type", "warn")

    def __init__(self, name: str, many: bool, type_: str, kind: int) -> None:
        self.name = name  # the element's name as R4 spells it (value[x] for a choice)
        self.many = many
        self.type = type_
        self.kind = kind
        self.check: Callable[[Any], bool] | None = None
        self.codes: frozenset[str] | None = None  # a required binding's codes
        self.systems: frozenset[str] | None = None  # … and their code systems (for Coding/CodeableConcept)
        self.target: tuple[str, str] | None = None  # (type, backbone path) of a complex value's children
        self.schema: _Schema | None = None  # resolved from target on first use (types are recursive)
        self.choice: str | None = None  # the choice's base name (value) when this is valueX
        self.warn: str | None = None


class _Schema:
    __slots__ = ("choices", "els", "hooks", "name", "required", "resource")

    def __init__(self, name: str) -> None:
        self.name = name
        self.els: dict[str, _El] = {}
        self.required: list[tuple[str, tuple[str, ...]]] = []  # (element name, the JSON keys that satisfy it)
        self.choices: dict[str, tuple[str, ...]] = {}  # base name → its JSON keys
        self.hooks: tuple[Callable[..., None], ...] = ()
        self.resource = False


def _schema_of(el: _El) -> _Schema:
    s = el.schema
    if s is None:
        s = el.schema = _schema(*el.target)  # type: ignore[misc]
    return s


@cache
def _schema(root: str, prefix: str = "") -> _Schema:
    idx = _index()
    types, valuesets, systems = idx["types"], idx["valuesets"], idx.get("systems", {})
    kids = _children(root)
    sch = _Schema(f"{root}.{prefix}" if prefix else root)
    sch.resource = not prefix and types[root]["kind"] == "resource"
    not_r4 = _NOT_R4.get(root, ()) if not prefix else ()
    for name, (mn, many, tcodes, binding) in kids.get(prefix, ()):
        full = f"{prefix}.{name}" if prefix else name
        codes = frozenset(valuesets[binding]) if binding in valuesets else None
        choice = name.endswith("[x]")
        keys = []
        for tcode in tcodes:
            if sch.resource and name == "id":
                tcode = "id"  # Resource.id is an id (the R4 snapshots say System.String)
            elif root == "Extension" and name == "url":
                tcode = "uri"  # the snapshot says System.String with fhir-type uri
            key = name[:-3] + tcode[0].upper() + tcode[1:] if choice else name
            el = _El(name, bool(many), tcode, _ANY)
            if tcode.startswith("@"):  # contentReference: the children of another path
                ref_root, _, ref_prefix = tcode[1:].partition(".")
                el.kind, el.target = _COMPLEX, (ref_root, ref_prefix)
            elif tcode in ("BackboneElement", "Element"):
                el.kind, el.target = _COMPLEX, ((root, full) if full in kids else (tcode, ""))
            elif _v.checker(tcode) is not None:
                el.kind, el.check = _PRIM, _v.checker(tcode)
            elif tcode == "Resource" or (tcode in types and types[tcode]["kind"] == "resource"):
                el.kind = _RESOURCE
            elif tcode in types:
                el.kind, el.target = _COMPLEX, (tcode, "")
            if codes is not None:
                el.codes = codes
                if tcode in ("Coding", "CodeableConcept"):
                    el.systems = frozenset(systems.get(binding, ()))
            if choice:
                el.choice = name[:-3]
            if name in not_r4:
                el.warn = "not an element of FHIR R4 (Medplum's definitions add it)"
            sch.els[key] = el
            keys.append(key)
            if choice:
                continue
            break  # a plain element with several type codes does not occur in R4; the first one stands
        if choice:
            sch.choices[name[:-3]] = tuple(keys)
        if mn:
            req = tuple(keys) + tuple("_" + k for k in keys)  # a primitive may be present only as _name
            sch.required.append((name, req))
    sch.hooks = tuple(_HOOKS.get((root, prefix), ()))
    return sch


def _resource_schema(rtype: str) -> _Schema | None:
    return _schema(rtype) if rtype in resource_types() else None


# ----------------------------------------------------------------------------------------------------------- walk
class _Walk:
    """One validation: walks resources as JSON, appending issues."""

    def __init__(self) -> None:
        self.issues: list[Issue] = []
        self.local_ids: frozenset[str] | set[str] = frozenset()  # contained ids of the resource being walked
        self.uuid_refs: list[tuple[str, str]] = []  # (urn:uuid reference, location) within the current Bundle

    def add(self, severity: str, message: str, location: str, code: str) -> None:
        self.issues.append(Issue(severity, message, location, code))

    # --- resources
    def resource(self, res: dict[str, Any], path: str, expected: str = "Resource", contained: bool = False) -> None:
        rtype = res.get("resourceType")
        if type(rtype) is not str:
            self.add(_ERROR, "a resource needs a resourceType", f"{path}.resourceType", "required")
            return
        schema = _resource_schema(rtype)
        if schema is None:
            self.add(_ERROR, f"{rtype} is not a FHIR R4 resource type", f"{path}.resourceType", "code-invalid")
            return
        if expected not in _ABSTRACT and rtype != expected:
            self.add(_ERROR, f"a {expected} is expected here, not a {rtype}", f"{path}.resourceType", "structure")
        if rtype in _NOT_R4_TYPES:
            self.add(
                _WARNING,
                f"{rtype} is not an R4 resource type (Medplum's definitions add it)",
                f"{path}.resourceType",
                "structure",
            )
        if contained:
            self._contained_rules(res, path)
            self.walk(res, schema, path)
            return
        outer_ids = self.local_ids
        kids = res.get("contained")
        self.local_ids = (
            {c["id"] for c in kids if type(c) is dict and type(c.get("id")) is str}
            if type(kids) is list
            else frozenset()
        )
        if rtype == "Bundle":
            outer_refs, self.uuid_refs = self.uuid_refs, []
            self.walk(res, schema, path)
            _bundle_rules(self, res, path)
            self.uuid_refs = outer_refs
        else:
            self.walk(res, schema, path)
        self.local_ids = outer_ids

    def _contained_rules(self, res: dict[str, Any], path: str) -> None:
        if "contained" in res:
            self.add(_ERROR, "a contained resource cannot contain resources (dom-2)", f"{path}.contained", "invariant")
        meta = res.get("meta")
        if type(meta) is dict and ("versionId" in meta or "lastUpdated" in meta):
            self.add(
                _ERROR,
                "a contained resource has no meta.versionId or meta.lastUpdated (dom-4)",
                f"{path}.meta",
                "invariant",
            )

    # --- objects
    def walk(self, node: dict[str, Any], schema: _Schema, path: str) -> None:
        els = schema.els
        chosen: dict[str, str] | None = None
        for key, val in node.items():
            el = els.get(key)
            if el is None:
                if key == "resourceType" and schema.resource:
                    continue
                self._other_key(node, key, val, schema, path)
                continue
            if el.choice is not None:
                if chosen is None:
                    chosen = {}
                if el.choice in chosen:
                    self.add(_ERROR, f"only one type of {el.name} may be present", f"{path}.{key}", "structure")
                chosen[el.choice] = key
            if el.warn is not None:
                self.add(_WARNING, el.warn, f"{path}.{key}", "structure")
            kind = el.kind
            if el.many:
                if type(val) is not list:
                    if val is None:
                        self.add(_ERROR, "null is not allowed (ele-1)", f"{path}.{key}", "structure")
                    else:
                        self.add(
                            _ERROR,
                            f"{el.name} is a list in R4: the value must be a JSON array",
                            f"{path}.{key}",
                            "structure",
                        )
                    continue
                if not val:
                    self.add(_ERROR, "an empty array is not allowed (ele-1)", f"{path}.{key}", "structure")
                    continue
                if kind == _PRIM:
                    check = el.check
                    for i, item in enumerate(val):
                        if not check(item):  # type: ignore[misc]
                            self._bad_primitive(node, key, el, item, i, path)
                        elif el.codes is not None and item not in el.codes:
                            self.add(
                                _ERROR,
                                f"the code is not in the required value set of {el.name}",
                                f"{path}.{key}[{i}]",
                                "code-invalid",
                            )
                elif kind == _COMPLEX:
                    sch = el.schema or _schema_of(el)
                    for i, item in enumerate(val):
                        if type(item) is dict and item:  # the common case, inlined
                            p = f"{path}.{key}[{i}]"
                            self.walk(item, sch, p)
                            if el.systems is not None:
                                self._coded(el, item, p)
                        else:
                            self._complex(el, item, f"{path}.{key}[{i}]")
                else:
                    for i, item in enumerate(val):
                        self._complex(el, item, f"{path}.{key}[{i}]")
            else:
                if kind == _PRIM:
                    if not el.check(val):  # type: ignore[misc]
                        self._bad_primitive(node, key, el, val, None, path)
                    elif el.codes is not None and val not in el.codes:
                        self.add(
                            _ERROR,
                            f"the code is not in the required value set of {el.name}",
                            f"{path}.{key}",
                            "code-invalid",
                        )
                elif kind == _COMPLEX and type(val) is dict and val:  # the common case, inlined
                    p = f"{path}.{key}"
                    self.walk(val, el.schema or _schema_of(el), p)
                    if el.systems is not None:
                        self._coded(el, val, p)
                elif type(val) is list:
                    self.add(
                        _ERROR, f"{el.name} is a single value in R4, not a JSON array", f"{path}.{key}", "structure"
                    )
                else:
                    self._complex(el, val, f"{path}.{key}")
        for name, keys in schema.required:
            for k in keys:
                if k in node:
                    break
            else:
                self.add(_ERROR, f"{name} is required", f"{path}.{name}", "required")
        for hook in schema.hooks:
            hook(self, node, path)

    def _complex(self, el: _El, val: Any, p: str) -> None:
        if type(val) is not dict:
            if val is None:
                self.add(_ERROR, "null is not allowed (ele-1)", p, "structure")
            else:
                self.add(_ERROR, f"{el.name} must be a JSON object ({el.type})", p, "structure")
            return
        if not val:
            self.add(_ERROR, "an empty object is not allowed (ele-1)", p, "structure")
            return
        kind = el.kind
        if kind == _COMPLEX:
            self.walk(val, _schema_of(el), p)
            if el.systems is not None:
                self._coded(el, val, p)
        elif kind == _RESOURCE:
            self.resource(val, p, el.type, contained=el.name == "contained")

    def _bad_primitive(self, node: dict[str, Any], key: str, el: _El, val: Any, i: int | None, path: str) -> None:
        p = f"{path}.{key}" if i is None else f"{path}.{key}[{i}]"
        if val is None:
            partner = node.get("_" + key)
            if i is not None and type(partner) is list and i < len(partner) and partner[i] is not None:
                return  # [..., null, ...] with the extension at the same place in _key: allowed (a single
                # value without a value is left out, only _key is written)
            self.add(_ERROR, "null is not allowed (ele-1)", p, "structure")
            return
        if type(val) is list:
            self.add(_ERROR, f"{el.name} is a single value in R4, not a JSON array", p, "structure")
            return
        if type(val) is dict:
            self.add(
                _ERROR,
                f"{el.name} is a {el.type}: a JSON {'object' if val else 'object (empty)'} is not one",
                p,
                "structure",
            )
            return
        if val == "":
            self.add(_ERROR, "an empty string is not allowed (ele-1)", p, "value")
            return
        reason = _v.problem(el.type, val) or "invalid"
        self.add(
            _ERROR, f"invalid {el.type}: {reason}", p, "structure" if reason.startswith("must be a JSON") else "value"
        )

    def _other_key(self, node: dict[str, Any], key: str, val: Any, schema: _Schema, path: str) -> None:
        p = f"{path}.{key}"
        if key[:1] == "_":
            el = schema.els.get(key[1:])
            if el is not None and el.kind == _PRIM:
                self._primitive_extension(node, key, el, val, p)
                return
        for base, _keys in schema.choices.items():
            if key.startswith(base) and key[len(base) : len(base) + 1].isupper():
                self.add(_ERROR, f"unknown element: {base}[x] has no type {key[len(base) :]}", p, "structure")
                return
        self.add(_ERROR, f"unknown element {key!r}", p, "structure")

    def _primitive_extension(self, node: dict[str, Any], key: str, el: _El, val: Any, p: str) -> None:
        element = _schema("Element")
        base = node.get(key[1:])
        if el.many:
            if type(val) is not list:
                self.add(_ERROR, f"{key} must be a JSON array like {key[1:]}", p, "structure")
                return
            if type(base) is list and len(base) != len(val):
                self.add(_ERROR, f"{key} must have as many items as {key[1:]}", p, "structure")
            for i, item in enumerate(val):
                if item is None:
                    if not (type(base) is list and i < len(base) and base[i] is not None):
                        self.add(
                            _ERROR, "null is not allowed where the value is null too (ele-1)", f"{p}[{i}]", "structure"
                        )
                elif type(item) is not dict or not item:
                    self.add(_ERROR, "an element extension must be a non-empty JSON object", f"{p}[{i}]", "structure")
                else:
                    self.walk(item, element, f"{p}[{i}]")
        elif type(val) is not dict or not val:
            self.add(_ERROR, "an element extension must be a non-empty JSON object", p, "structure")
        else:
            self.walk(val, element, p)

    def _coded(self, el: _El, val: dict[str, Any], p: str) -> None:
        """A required binding on a Coding or CodeableConcept."""
        systems, codes = el.systems, el.codes
        if el.type == "Coding":
            codings = [(val, p)]
        else:
            listed = val.get("coding")
            codings = (
                [(c, f"{p}.coding[{j}]") for j, c in enumerate(listed) if type(c) is dict]
                if type(listed) is list
                else []
            )
        found = False
        for c, cp in codings:
            system, code = c.get("system"), c.get("code")
            if type(system) is str and system in systems:  # type: ignore[operator]
                if type(code) is str and code in codes:  # type: ignore[operator]
                    found = True
                else:
                    self.add(
                        _ERROR, f"the code is not in the required value set of {el.name}", f"{cp}.code", "code-invalid"
                    )
        if not found:
            self.add(
                _ERROR, f"{el.name} has a required binding: it needs a coding from its value set", p, "code-invalid"
            )

    # --- references
    def reference(self, ref: str, p: str) -> None:
        if ref[:1] == "#":
            if ref != "#" and ref[1:] not in self.local_ids:
                self.add(_ERROR, "the local reference points at no contained resource (ref-1)", p, "invariant")
            return
        if ref.startswith("urn:uuid:"):
            if not _v.is_uuid(ref):
                self.add(_ERROR, "invalid reference: urn:uuid: needs a lowercase 8-4-4-4-12 UUID", p, "value")
            else:
                self.uuid_refs.append((ref, p))
            return
        if ref.startswith("urn:oid:"):
            if not _v.is_oid(ref):
                self.add(_ERROR, "invalid reference: not a valid urn:oid:", p, "value")
            return
        m = _LITERAL_REF.fullmatch(ref) or _CONDITIONAL_REF.fullmatch(ref)
        if m is not None:
            if m.group(1) not in resource_types():
                self.add(_ERROR, "the reference names no R4 resource type", p, "value")
            return
        if _ABSOLUTE_URL.fullmatch(ref) is None:
            self.add(
                _ERROR, "a reference is Type/id, Type?query, urn:uuid:…, urn:oid:…, an absolute URL or #id", p, "value"
            )


# ------------------------------------------------------------------------------------------------ type hooks
def _h_reference(w: _Walk, node: dict[str, Any], path: str) -> None:
    ref = node.get("reference")
    if type(ref) is str and ref:
        w.reference(ref, f"{path}.reference")


def _h_extension(w: _Walk, node: dict[str, Any], path: str) -> None:
    has_value = _has_value(node)
    if has_value == ("extension" in node):
        what = "both" if has_value else "neither"
        w.add(_ERROR, f"an extension has a value[x] or nested extensions, not {what} (ext-1)", path, "invariant")


def _h_system(w: _Walk, node: dict[str, Any], path: str) -> None:
    system = node.get("system")
    if type(system) is str and _ABSOLUTE.match(system) is None and _v.is_uri(system):
        w.add(_WARNING, "system should be an absolute URI", f"{path}.system", "value")


def _h_quantity(w: _Walk, node: dict[str, Any], path: str) -> None:
    if "code" in node and "system" not in node:
        w.add(_ERROR, "a unit code needs a system (qty-3)", path, "invariant")


def _h_contact_point(w: _Walk, node: dict[str, Any], path: str) -> None:
    if "value" in node and "system" not in node:
        w.add(_ERROR, "a contact point with a value needs a system (cpt-2)", path, "invariant")


def _moment(s: Any) -> tuple[int, Any] | None:
    """A dateTime as something comparable with another of the same precision: (len, text) for dates, (99, UTC
    datetime) for full dateTimes; None when it is not valid."""
    if not _v.is_datetime(s):
        return None
    if len(s) <= 10:
        return (len(s), s)
    try:
        return (99, datetime.fromisoformat(s.replace("Z", "+00:00").replace(":60", ":59")))
    except ValueError:
        return None


def _h_period(w: _Walk, node: dict[str, Any], path: str) -> None:
    start, end = node.get("start"), node.get("end")
    if start is None or end is None:
        return
    a, b = _moment(start), _moment(end)
    if a is not None and b is not None:
        if a[0] == b[0]:
            later = a[1] > b[1]
        else:  # different precisions: compare the common prefix of the dates (2020-03 vs 2020-02-01)
            n = min(a[0], b[0], 10)
            later = start[:n] > end[:n]
        if later:
            w.add(_ERROR, "the period ends before it starts (per-1)", path, "invariant")


def _h_patient_contact(w: _Walk, node: dict[str, Any], path: str) -> None:
    if not any(k in node for k in ("name", "telecom", "address", "organization")):
        w.add(_ERROR, "a contact needs a name, telecom, address or organization (pat-1)", path, "invariant")


def _codes(cc: Any, system: str) -> set[str]:
    out = set()
    if type(cc) is dict and type(cc.get("coding")) is list:
        for c in cc["coding"]:
            if type(c) is dict and c.get("system") == system and type(c.get("code")) is str:
                out.add(c["code"])
    return out


def _has_value(node: dict[str, Any]) -> bool:
    """value[x] exists — also as ``_valueString`` alone (a primitive with only extensions exists in FHIRPath)."""
    return any(k.startswith(("value", "_value")) for k in node)


def _h_observation(w: _Walk, node: dict[str, Any], path: str) -> None:
    if "dataAbsentReason" in node and _has_value(node):
        w.add(_ERROR, "dataAbsentReason only when there is no value (obs-6)", f"{path}.dataAbsentReason", "invariant")
    comps = node.get("component")
    code = node.get("code")
    if _has_value(node) and type(comps) is list and type(code) is dict and type(code.get("coding")) is list:
        mine = {
            (c.get("system"), c.get("code"))
            for c in code["coding"]
            if type(c) is dict and type(c.get("code")) is str and type(c.get("system")) is str
        }
        for i, comp in enumerate(comps):
            cc = comp.get("code") if type(comp) is dict else None
            if mine and type(cc) is dict and type(cc.get("coding")) is list:
                if any(
                    (c.get("system"), c.get("code")) in mine
                    for c in cc["coding"]
                    if type(c) is dict and type(c.get("code")) is str and type(c.get("system")) is str
                ):
                    w.add(
                        _ERROR,
                        "a component with the Observation's own code means the Observation has no value (obs-7)",
                        f"{path}.component[{i}]",
                        "invariant",
                    )


def _h_observation_component(w: _Walk, node: dict[str, Any], path: str) -> None:
    if "dataAbsentReason" in node and _has_value(node):
        w.add(_ERROR, "dataAbsentReason only when there is no value (obs-6)", f"{path}.dataAbsentReason", "invariant")


_AI_VER = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
_CON_VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
_CON_CLIN = "http://terminology.hl7.org/CodeSystem/condition-clinical"


def _h_allergy(w: _Walk, node: dict[str, Any], path: str) -> None:
    eie = "entered-in-error" in _codes(node.get("verificationStatus"), _AI_VER)
    if not eie and "clinicalStatus" not in node:
        w.add(
            _ERROR,
            "clinicalStatus is required unless verificationStatus is entered-in-error (ait-1)",
            f"{path}.clinicalStatus",
            "invariant",
        )
    if eie and "clinicalStatus" in node:
        w.add(
            _ERROR,
            "no clinicalStatus when verificationStatus is entered-in-error (ait-2)",
            f"{path}.clinicalStatus",
            "invariant",
        )


def _h_condition(w: _Walk, node: dict[str, Any], path: str) -> None:
    if any(k.startswith("abatement") for k in node):
        clin = _codes(node.get("clinicalStatus"), _CON_CLIN)
        if "clinicalStatus" in node and not clin & {"inactive", "resolved", "remission"}:
            w.add(
                _ERROR,
                "an abated condition's clinicalStatus is inactive, resolved or remission (con-4)",
                f"{path}.clinicalStatus",
                "invariant",
            )
    if "entered-in-error" in _codes(node.get("verificationStatus"), _CON_VER) and "clinicalStatus" in node:
        w.add(
            _ERROR,
            "no clinicalStatus when verificationStatus is entered-in-error (con-5)",
            f"{path}.clinicalStatus",
            "invariant",
        )


def _h_appointment(w: _Walk, node: dict[str, Any], path: str) -> None:
    has_start, has_end = "start" in node, "end" in node
    if has_start != has_end:
        w.add(_ERROR, "an appointment has both start and end, or neither (app-2)", path, "invariant")
    elif not has_start and node.get("status") not in ("proposed", "cancelled", "waitlist"):
        w.add(
            _ERROR,
            "only a proposed, cancelled or waitlisted appointment may have no start and end (app-3)",
            path,
            "invariant",
        )


_QUANTITIES = ("Quantity", "Age", "Count", "Distance", "Duration")


def _h_service_request(w: _Walk, node: dict[str, Any], path: str) -> None:
    if "orderDetail" in node and "code" not in node:
        w.add(_ERROR, "orderDetail only when there is a code (prr-1)", f"{path}.orderDetail", "invariant")


_HOOKS: dict[tuple[str, str], list[Callable[..., None]]] = {
    ("Reference", ""): [_h_reference],
    ("Extension", ""): [_h_extension],
    ("Identifier", ""): [_h_system],
    ("Coding", ""): [_h_system],
    ("ContactPoint", ""): [_h_contact_point],
    ("Period", ""): [_h_period],
    ("Patient", "contact"): [_h_patient_contact],
    ("Observation", ""): [_h_observation],
    ("Observation", "component"): [_h_observation_component],
    ("AllergyIntolerance", ""): [_h_allergy],
    ("Condition", ""): [_h_condition],
    ("Appointment", ""): [_h_appointment],
    ("ServiceRequest", ""): [_h_service_request],
    **{(q, ""): [_h_quantity] for q in _QUANTITIES},
}


def period_reversed(node: dict[str, Any]) -> bool:
    """A Period whose end is before its start (per-1)."""
    w = _Walk()
    _h_period(w, node, "")
    return bool(w.issues)


def resource_invariants(res: dict[str, Any]) -> list[Issue]:
    """The invariants of one resource's own level (app-3, obs-6, prr-1 …): what a converter that checks every value
    as it writes it can still get wrong across elements. Locations are relative to the resource."""
    hooks = _HOOKS.get((res.get("resourceType", ""), ""))
    if not hooks:
        return []
    w = _Walk()
    for h in hooks:
        h(w, res, res["resourceType"])
    return w.issues


# ------------------------------------------------------------------------------------------------ Bundle rules
def _bundle_rules(w: _Walk, data: dict[str, Any], path: str) -> None:
    btype = data.get("type")
    entries = data.get("entry")
    entries = entries if type(entries) is list else []
    add = w.add
    if "total" in data and btype not in ("searchset", "history"):
        add(_ERROR, "total only in a searchset or history Bundle (bdl-1)", f"{path}.total", "invariant")
    if btype == "document":
        ident = data.get("identifier")
        if not (type(ident) is dict and "system" in ident and "value" in ident):
            add(
                _ERROR,
                "a document needs an identifier with a system and a value (bdl-9)",
                f"{path}.identifier",
                "invariant",
            )
        if "timestamp" not in data:
            add(_ERROR, "a document needs a timestamp (bdl-10)", f"{path}.timestamp", "invariant")
    first = entries[0].get("resource") if entries and type(entries[0]) is dict else None
    first_type = first.get("resourceType") if type(first) is dict else None
    if btype == "document" and first_type != "Composition":
        add(_ERROR, "a document's first entry is a Composition (bdl-11)", f"{path}.entry[0]", "invariant")
    if btype == "message" and first_type != "MessageHeader":
        add(_ERROR, "a message's first entry is a MessageHeader (bdl-12)", f"{path}.entry[0]", "invariant")
    needs_request = btype in ("batch", "transaction", "history")
    needs_response = btype in ("batch-response", "transaction-response", "history")
    full_urls: dict[str, int] = {}
    versions: dict[str, set[Any]] = {}  # fullUrl → meta.versionId of its entries (bdl-7 allows one per version)
    relative: list[int] = []  # entries whose fullUrl is not absolute: one warning for them all
    for i, e in enumerate(entries):
        if type(e) is not dict:
            continue
        where = f"{path}.entry[{i}]"
        req, res = e.get("request"), e.get("resource")
        if "search" in e and btype != "searchset":
            add(_ERROR, "entry.search only in a searchset (bdl-2)", f"{where}.search", "invariant")
        if needs_request and req is None:
            add(_ERROR, f"a {btype} entry needs a request (bdl-3)", f"{where}.request", "required")
        elif not needs_request and req is not None:
            add(_ERROR, f"a {btype} entry has no request (bdl-3)", f"{where}.request", "invariant")
        if needs_response and e.get("response") is None:
            add(_ERROR, f"a {btype} entry needs a response (bdl-4)", f"{where}.response", "required")
        elif not needs_response and "response" in e:
            add(_ERROR, f"a {btype} entry has no response (bdl-4)", f"{where}.response", "invariant")
        method = req.get("method") if type(req) is dict else None
        if res is None and (btype in ("collection", "document", "message") or method in ("POST", "PUT")):
            add(_ERROR, "the entry has no resource", f"{where}.resource", "required")
        elif res is None and req is None and "response" not in e:
            add(_ERROR, "an entry has a resource, a request or a response (bdl-5)", where, "invariant")
        fu = e.get("fullUrl")
        if type(fu) is str and fu:
            if "/_history/" in fu:
                add(_ERROR, "a fullUrl is not version-specific (bdl-8)", f"{where}.fullUrl", "invariant")
            meta = res.get("meta") if type(res) is dict else None
            version = meta.get("versionId") if type(meta) is dict and type(meta.get("versionId")) is str else None
            seen = versions.setdefault(fu, set())
            if fu in full_urls and btype != "history" and (version is None or version in seen):
                add(_ERROR, f"fullUrl is the same as entry[{full_urls[fu]}]'s (bdl-7)", f"{where}.fullUrl", "invariant")
            full_urls.setdefault(fu, i)
            seen.add(version)
            if not fu.startswith(("urn:uuid:", "urn:oid:")):
                if _ABSOLUTE_URL.fullmatch(fu) is None:
                    relative.append(i)
                if type(res) is dict and type(res.get("id")) is str and type(res.get("resourceType")) is str:
                    if not fu.endswith(f"{res['resourceType']}/{res['id']}"):
                        add(
                            _ERROR,
                            "the fullUrl disagrees with the resource's type and id",
                            f"{where}.fullUrl",
                            "invariant",
                        )
    if relative:
        more = f" (so are {len(relative) - 1} more entries' fullUrls)" if len(relative) > 1 else ""
        add(
            _WARNING,
            f"a fullUrl should be an absolute URL, urn:uuid: or urn:oid:{more}",
            f"{path}.entry[{relative[0]}].fullUrl",
            "value",
        )
    if btype in ("transaction", "collection", "document", "message"):
        for ref, p in w.uuid_refs:
            if ref not in full_urls:
                add(_ERROR, "the urn:uuid: reference points at no entry of the Bundle", p, "not-found")


# ----------------------------------------------------------------------------------------------------- API
def validate(doc: FhirDocument | dict[str, Any] | bytes) -> list[Issue]:
    """Every issue found in a resource or a Bundle (and its entries). Never raises."""
    try:
        if isinstance(doc, (bytes, str)):
            doc = parse_fhir(doc)
    except Exception as exc:
        return [Issue("error", str(exc), "", getattr(exc, "code", "") or "structure")]
    data = doc.data if isinstance(doc, FhirDocument) else doc
    if not isinstance(data, dict):
        return [Issue("error", "not a FHIR resource", "", "structure")]
    rtype = data.get("resourceType")
    w = _Walk()
    try:
        w.resource(data, rtype if type(rtype) is str and rtype in resource_types() else "Resource")
    except Exception as exc:
        w.add("error", f"validator failure: {type(exc).__name__}", "", "exception")
    return w.issues


def check_basic(doc: FhirDocument) -> list[Issue]:
    """The cheap ingest check: a resource with a known type; a Bundle's entries are resources."""
    data = doc.data
    rtype = data.get("resourceType")
    if rtype not in resource_types():
        return [Issue("error", f"{rtype!r} is not a FHIR R4 resource type", "resourceType", "code-invalid")]
    out = []
    if rtype == "Bundle":
        entries = data.get("entry") or []
        if not isinstance(entries, list):
            return [Issue("error", "Bundle.entry must be a list", "Bundle.entry", "structure")]
        for i, e in enumerate(entries):
            res = e.get("resource") if isinstance(e, dict) else None
            if res is not None and not (isinstance(res, dict) and isinstance(res.get("resourceType"), str)):
                out.append(
                    Issue(
                        "error", "an entry's resource needs a resourceType", f"Bundle.entry[{i}].resource", "structure"
                    )
                )
    return out


def operation_outcome(issues: list[Issue], *, information: str | None = None) -> dict[str, Any]:
    """Issues → an OperationOutcome (an information issue when there are none)."""
    out = []
    for i in issues:
        item: dict[str, Any] = {
            "severity": i.severity if i.severity in ("fatal", "error", "warning", "information") else "error",
            "code": i.code or "processing",
        }
        item["diagnostics"] = i.message
        if i.location:
            item["expression"] = [i.location]
        out.append(item)
    if not out:
        out.append({"severity": "information", "code": "informational", "diagnostics": information or "ok"})
    return {"resourceType": "OperationOutcome", "issue": out}


class FhirValidate:
    class Config(TransformConfig):
        """Validate a FHIR message (often a Bundle from ``v2_to_fhir``) against the R4 element index (structure,
        cardinality, primitive values, required bindings, key invariants, Bundle rules); error-level issues
        reject the message with the issues as the reason."""

        type: Literal["fhir_validate"] = "fhir_validate"
        warnings_fail: bool = Field(False, description="Reject on warnings too.")
        max_reported: int = Field(10, ge=1, description="How many issues the rejection reason lists.")

    def __init__(self, config: Config, ctx: Any) -> None:
        self.config = config

    def __call__(self, message: Message) -> Message:
        if message.content_type != "fhir":
            raise ValidationError(f"fhir_validate needs FHIR content, got {message.content_type}", code="structure")
        doc = message.parsed if isinstance(message.parsed, FhirDocument) else parse_fhir(message.raw)
        message.parsed = doc
        issues = validate(doc)
        bad = [
            i
            for i in issues
            if i.severity in ("error", "fatal") or (self.config.warnings_fail and i.severity == "warning")
        ]
        if bad:
            shown = "; ".join(str(i) for i in bad[: self.config.max_reported])
            more = f" (and {len(bad) - self.config.max_reported} more)" if len(bad) > self.config.max_reported else ""
            raise ValidationError(
                f"FHIR validation failed: {shown}{more}", code=bad[0].code, location=bad[0].location, issues=bad
            )
        return message
