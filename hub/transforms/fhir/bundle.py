"""Bundle assembly: stable fullUrls, conditional create/update on business identifiers, references between entries.

* ``fullUrl`` is ``urn:uuid:`` + a UUIDv5 of ``ResourceType|system|value`` (the business identifier), so the same
  person (the same MRN in the same system) gets the same fullUrl in every Bundle; entries without an identifier
  get a UUIDv5 of the message's control id and their position (stable for the same message).
* ``transaction`` / ``batch``: an entry with an identifier is written as a conditional update
  (``PUT Patient?identifier=system|value``: create if absent, else update — no duplicate Patient; the ``fhir_rest``
  destination merges it into what the server holds) or, for resources the message only refers to (a Practitioner, a
  payer), a conditional create (``POST`` with ``ifNoneExist``). ``fill`` is a conditional create that the hub's
  destination also uses to add what the server lacks (a merge's survivor, a lab result's patient); ``replace`` a
  conditional update that overwrites. Both say so in a ``request.extension`` (``urn:hub:fhir:merge``) the
  destination strips. Entries without an identifier are plain ``POST``s.
* References: in a ``transaction`` (and ``collection``) a reference is the target's fullUrl, which the server
  rewrites to the id it assigns; in a ``batch`` (whose entries are processed independently) a reference to an
  entry with an identifier is a logical reference (``{"type": "Patient", "identifier": {...}}``).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any
from urllib.parse import quote

__all__ = ["BundleBuilder", "NAMESPACE"]

NAMESPACE = uuid.UUID("6f1c2a4e-3b7d-5e8f-9a0b-1c2d3e4f5a6b")


_NS = NAMESPACE.bytes


_CACHE_MAX = 4096
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def _uuid5(name: str) -> str:
    """``str(uuid.uuid5(NAMESPACE, name))`` without building UUID objects (the hot path makes a dozen per message)."""
    x = hashlib.sha1(_NS + name.encode("utf-8")).hexdigest()
    # version 5 in the 13th hex digit, the RFC 4122 variant (10xx) in the 17th
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"


_QUOTE_SAFE = re.compile(r"[A-Za-z0-9_.\-~:/|@]*")  # what quote(…, safe=":/|@.-_~") leaves as it is
_safe = _QUOTE_SAFE.fullmatch
_QUOTE_ASCII = {i: f"%{i:02X}" for i in range(128) if _QUOTE_SAFE.fullmatch(chr(i)) is None}  # the same for ASCII


_conditional: dict[str, tuple[str, str, str, str]] = {}  # entry key → (fullUrl, system, value, query value)
MERGE_URL = "urn:hub:fhir:merge"  # Bundle.entry.request extension read (and stripped) by the fhir_rest destination
_MERGE_FILL = {"url": MERGE_URL, "valueCode": "fill"}  # (copied into each entry: no object shared between Bundles)
_MERGE_REPLACE = {"url": MERGE_URL, "valueCode": "replace"}


def _query_value(system: str, value: str) -> str:
    text = f"{system}|{value}" if system else value
    if _safe(text) is not None:
        return text
    if text.isascii():
        return text.translate(_QUOTE_ASCII)
    return quote(text, safe=":/|@.-_~")


class BundleBuilder:
    def __init__(self, kind: str = "transaction", message_key: str = "") -> None:
        self.kind = kind
        self.message_key = message_key
        self.entries: list[dict[str, Any]] = []
        self.refs: list[dict[str, Any]] = []  # refs[i]: the reference add() returned for entries[i]
        self._by_key: dict[str, dict[str, Any]] = {}  # entry key → the reference to that entry
        self._n = 0
        self._batch = kind == "batch"
        self._collection = kind == "collection"

    def add(
        self,
        resource: dict[str, Any],
        identifier: dict[str, Any] | None = None,
        *,
        mode: str = "update",
        key: str | None = None,
    ) -> dict[str, Any]:
        """Add ``resource``; returns the reference to use for it (``{"reference": fullUrl}`` or a logical one).

        ``identifier`` (one of the resource's identifiers) makes the entry conditional: ``mode`` ``update`` → PUT
        on it, ``create`` → POST with ifNoneExist. Adding a second resource with the same identifier (the same
        practitioner named twice) returns the first one's reference and keeps the first.
        """
        rtype = resource["resourceType"]
        ident_value = identifier.get("value") if identifier else None
        if ident_value:
            system = identifier.get("system", "")  # type: ignore[union-attr]
            k = f"{rtype}|{system}|{ident_value}"
            found = self._by_key.get(k)
            if found is not None:
                return found
            # fullUrl and query of the identifier, cached (practitioners, places, payers recur across messages)
            hit = _conditional.get(k)
            if hit is None or hit[1] != system or hit[2] != ident_value:
                hit = ("urn:uuid:" + _uuid5(k), system, ident_value, _query_value(system, ident_value))
                if len(_conditional) >= _CACHE_MAX:
                    _conditional.clear()
                _conditional[k] = hit
            full_url = hit[0]
            entry: dict[str, Any] = {"fullUrl": full_url, "resource": resource}
            if self._collection:
                resource["id"] = full_url[9:]
            elif mode in ("create", "fill"):
                entry["request"] = {"method": "POST", "url": rtype, "ifNoneExist": "identifier=" + hit[3]}
                if mode == "fill":  # the hub's fhir_rest also adds what the server lacks (a server that does not know
                    entry["request"]["extension"] = [dict(_MERGE_FILL)]  # the extension just creates when absent: safe)
            else:
                entry["request"] = {"method": "PUT", "url": f"{rtype}?identifier={hit[3]}"}
                if mode == "replace":
                    entry["request"]["extension"] = [dict(_MERGE_REPLACE)]
            if self._batch:
                ref: dict[str, Any] = {
                    "type": rtype,
                    "identifier": {"system": system, "value": ident_value} if system else {"value": ident_value},
                }
            else:
                ref = {"reference": full_url}
        else:
            self._n += 1
            k = key or f"{rtype}|{self.message_key}|{self._n}"
            found = self._by_key.get(k)
            if found is not None:
                return found
            full_url = "urn:uuid:" + _uuid5(k)
            entry = {"fullUrl": full_url, "resource": resource}
            if self._collection:
                resource["id"] = full_url[9:]
            else:
                entry["request"] = {"method": "POST", "url": rtype}
            ref = {"reference": full_url}
        self._by_key[k] = ref
        self.entries.append(entry)
        self.refs.append(ref)
        return ref

    def resource_of(self, ref: dict[str, Any]) -> dict[str, Any] | None:
        """The resource of the entry ``ref`` (a reference add() returned, or an equal one) points to."""
        for e, r in zip(self.entries, self.refs, strict=False):
            if r is ref or r == ref:
                res: dict[str, Any] = e["resource"]
                return res
        return None

    def first(self, rtype: str) -> dict[str, Any] | None:
        for e in self.entries:
            res: dict[str, Any] = e["resource"]
            if res["resourceType"] == rtype:
                return res
        return None

    def build(self, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {"resourceType": "Bundle"}
        if meta:
            bundle.update(meta)
        bundle["type"] = self.kind
        if self.entries:  # a message with nothing to say (an MSH alone) is a Bundle without entries (ele-1)
            bundle["entry"] = list(self.entries)
        return bundle
