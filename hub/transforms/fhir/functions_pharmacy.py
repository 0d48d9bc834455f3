"""Table functions for the pharmacy message family (see :mod:`.functions` for how a function is called)."""

from __future__ import annotations

from typing import Any

from .conditions import Path
from .functions_base import datatype_at, keyed, number, register, units_of

__all__: list[str] = []


@register("cq_quantity")
def cq_quantity(run: Any, ctx: Any, row: Any, raw: str) -> dict[str, Any] | None:
    """A CQ field (``quantity^units&text&system``: TQ1-2, RXE-19 …) → a Quantity whose units are coded as OBX-6's
    (UCUM when the sender says so or the units code map knows the code). Not a number: a warning, nothing written."""
    d = run.v
    parts = raw.split(d.cs)
    text = d.d(parts[0].split(d.ss, 1)[0] if d.ss else parts[0]).strip()
    if not text:
        return None
    n = number(text)
    if n is None:
        run.invalid(run.where(ctx, row), f"quantity {text!r} is not a number")
        return None
    q: dict[str, Any] = {"value": n}
    if len(parts) > 1 and parts[1]:
        q.update(units_of(run, parts[1].split(d.ss) if d.ss else [parts[1]]))
    return q


# ---------------------------------------------------------------------------------------------- the requester
@register("requester_with")
def requester_with(
    run: Any,
    ctx: Any,
    row: Any,
    raw: str,
    provider_address: Path | None = None,
    facility: Path | None = None,
    facility_address: Path | None = None,
    facility_phone: Path | None = None,
) -> dict[str, Any] | None:
    """ORC-12 (the row's XCN) → the requester. The Practitioner as XCN[Practitioner] makes it, with the ordering
    provider's address (ORC-24) added. When the ordering facility is sent (ORC-21, with its address ORC-22 and phone
    ORC-23) the requester is the IG's PractitionerRole: that practitioner (``practitioner``) at that Organization
    (``organization``); else the Practitioner itself (R4 allows it; fhir_to_v2 reads it back as ORC-12). The first
    repetition of ORC-22 … ORC-24 is read."""
    maps = run.defs.datatypes
    xcn, xon = maps["XCN[Practitioner]"], maps["XON[Organization]"]
    person = run.apply_datatype(xcn, raw, 0, ctx) or {}
    address = datatype_at(run, ctx, provider_address, "XAD[Address]")
    if person and address:
        person["address"] = [address]
        keyed(run, xcn, person, raw, ctx.raw(provider_address))
    practitioner = run.resource_value(xcn, person) if person else None
    org_raw = ctx.raw(facility) if facility is not None else ""
    org = run.apply_datatype(xon, org_raw, 0, ctx) if org_raw else None
    if not org:
        return practitioner
    for path, name, target in (
        (facility_address, "XAD[Address]", "address"),
        (facility_phone, "XTN[ContactPoint]", "telecom"),
    ):
        part = datatype_at(run, ctx, path, name)
        if part:
            org[target] = [part]
    keyed(
        run,
        xon,
        org,
        org_raw,
        ctx.raw(facility_address) if facility_address is not None else "",
        ctx.raw(facility_phone) if facility_phone is not None else "",
    )
    organization = run.resource_value(xon, org)
    role: dict[str, Any] = {}
    if practitioner:
        role["practitioner"] = practitioner
    if organization:
        role["organization"] = organization
    return run.resource_value(maps["XCN[PractitionerRole]"], role) if role else practitioner
