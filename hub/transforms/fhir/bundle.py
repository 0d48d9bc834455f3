"""Bundle assembly: stable fullUrls, conditional create/update on business identifiers, references between entries.

* ``fullUrl`` is ``urn:uuid:`` + a UUIDv5 of ``ResourceType|system|value`` (the business identifier), so the same
  person (the same MRN in the same system) gets the same fullUrl in every Bundle; entries without an identifier
  get a UUIDv5 of the message's control id and their position (stable for the same message).
* ``transaction`` / ``batch``: an entry with an identifier is written as a conditional update
  (``PUT Patient?identifier=system|value``: create if absent, else update — no duplicate Patient) or, for
  resources the message only refers to (a Practitioner, a payer), a conditional create (``POST`` with
  ``ifNoneExist``). Entries without one are plain ``POST``s.
* References: in a ``transaction`` (and ``collection``) a reference is the target's fullUrl, which the server
  rewrites to the id it assigns; in a ``batch`` (whose entries are processed independently) a reference to an
  entry with an identifier is a logical reference (``{"type": "Patient", "identifier": {...}}``).
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any
from urllib.parse import quote

__all__ = ["BundleBuilder", "NAMESPACE"]

NAMESPACE = uuid.UUID("6f1c2a4e-3b7d-5e8f-9a0b-1c2d3e4f5a6b")


_NS = NAMESPACE.bytes


def _uuid5(name: str) -> str:
    """``str(uuid.uuid5(NAMESPACE, name))`` without building UUID objects (the hot path makes a dozen per message)."""
    h = bytearray(hashlib.sha1(_NS + name.encode("utf-8")).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50
    h[8] = (h[8] & 0x3F) | 0x80
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def _query_value(system: str, value: str) -> str:
    return quote(f"{system}|{value}" if system else value, safe=":/|@.-_~")


class BundleBuilder:
    def __init__(self, kind: str = "transaction", message_key: str = "") -> None:
        self.kind = kind
        self.message_key = message_key
        self.entries: list[dict[str, Any]] = []
        self._by_key: dict[str, dict[str, Any]] = {}
        self._n = 0

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
        system = identifier.get("system", "") if identifier else ""
        if ident_value:
            k = f"{rtype}|{system}|{ident_value}"
        else:
            self._n += 1
            k = key or f"{rtype}|{self.message_key}|{self._n}"
        found = self._by_key.get(k)
        if found is not None:
            return found["_ref"]
        full_url = "urn:uuid:" + _uuid5(k)
        entry: dict[str, Any] = {"fullUrl": full_url, "resource": resource}
        if self.kind == "collection":
            resource["id"] = full_url[9:]
        elif ident_value:
            q = _query_value(system, ident_value)
            if mode == "create":
                entry["request"] = {"method": "POST", "url": rtype, "ifNoneExist": f"identifier={q}"}
            else:
                entry["request"] = {"method": "PUT", "url": f"{rtype}?identifier={q}"}
        else:
            entry["request"] = {"method": "POST", "url": rtype}
        if self.kind == "batch" and ident_value:
            ref: dict[str, Any] = {"type": rtype, "identifier": {"system": system, "value": ident_value} if system else {"value": ident_value}}
        else:
            ref = {"reference": full_url}
        entry["_ref"] = ref
        self._by_key[k] = entry
        self.entries.append(entry)
        return ref

    def first(self, rtype: str) -> dict[str, Any] | None:
        for e in self.entries:
            if e["resource"]["resourceType"] == rtype:
                return e["resource"]
        return None

    def build(self, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {"resourceType": "Bundle"}
        if meta:
            bundle.update(meta)
        bundle["type"] = self.kind
        entries = []
        for e in self.entries:
            e.pop("_ref", None)
            entries.append(e)
        bundle["entry"] = entries
        return bundle
