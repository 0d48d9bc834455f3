"""The functions the v2 → FHIR tables may call (``map: fn:name(args)``): what a table cannot say.

Each is ``fn(conversion, ctx, row, raw, *args)``: ``raw`` is the value the row reads as written (a field
repetition, a component), ``ctx`` reads other values (:class:`~.v2_to_fhir.Ctx`: ``value(path)``, ``subs(path)``),
``args`` are the table's arguments (v2 paths, labels like ``DiagnosticReport[1]``, quoted text). A function returns
the FHIR value to write at the row's target, or None for nothing. ``whole_field`` functions get every repetition at
once (a list of component lists). Keep this list short: a new mapping should be a table row when it can.

These are the functions every message family uses; :mod:`.functions_adt` and :mod:`.functions_pharmacy` hold
those of one family (per message family: keep each small). All of them register with
:func:`.functions_base.register`, and :mod:`.table_functions` imports every one of them for
:data:`~.table_functions.FUNCTIONS`, the registry the tables are compiled against (:mod:`.mapdefs`).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from .conditions import Path
from .functions_base import APPENDED, datatype_at, keyed, number, register, short_hash, units_of
from .values import problem

__all__ = ["register", "APPENDED", "datatype_at", "keyed"]  # from .functions_base


def _val(ctx: Any, arg: Any) -> str:
    return ctx.value(arg) if isinstance(arg, Path) else str(arg)


# ---------------------------------------------------------------------------------------------- systems
@register("identifier_system", pure=True)
def identifier_system(run: Any, ctx: Any, row: Any, raw: str, authority: Path, type_code: Path | None = None) -> str:
    """Identifier.system from an assigning authority (HD: namespace, universal id, universal id type) and the
    identifier type: ``systems.yaml`` (``AUTHORITY^TYPE`` before ``AUTHORITY``), an ISO OID → ``urn:oid:``, a
    UUID → ``urn:uuid:``, else the documented ``urn:hub:id:`` form (always a valid URI)."""
    hd = (ctx.subs(authority) + ["", "", ""])[:3]
    t = _val(ctx, type_code) if type_code is not None else ""
    name = hd[0] or (t if t == "NPI" else "")
    system: str = run.tables.identifier_system(name, t, hd[1], hd[2])
    return system


@register("ei_system", pure=True, reads=(2, 3, 4))
def ei_system(run: Any, ctx: Any, row: Any, raw: str) -> str:
    """EI: namespace (EI.2), universal id (EI.3) and its type (EI.4) → Identifier.system, as for an authority."""
    d = _parts(run, ctx, 4)
    system: str = run.tables.identifier_system(d[1], "", d[2], d[3])
    return system


@register("coding_system", pure=True)
def coding_system(run: Any, ctx: Any, row: Any, raw: str, name: Path | None = None) -> str | None:
    """Coding.system from a coding-system name (CWE-3): ``systems.yaml``, ``HL7nnnn`` → terminology.hl7.org, else
    the documented ``urn:hub:code-system:`` form."""
    text = ctx.value(name) if name is not None else run.v.d(raw)
    return run.tables.system_uri(text) or None


# ---------------------------------------------------------------------------------------------- identifiers
@register("derived")
def derived(run: Any, ctx: Any, row: Any, raw: str, resource: str, *parts: Any) -> dict[str, Any]:
    """An identifier for a resource v2 gives none (an allergy, a diagnosis, a next of kin): a hash of the patient's
    identifier and the named values, so a resent message updates the same resource."""
    return {
        "system": run.tables.derived_system(str(resource)),
        "value": short_hash(run.patient_key, *(_val(ctx, p) for p in parts)),
    }


@register("derived_shared")
def derived_shared(run: Any, ctx: Any, row: Any, raw: str, resource: str, *parts: Any) -> dict[str, Any]:
    """As ``derived`` but the same for every patient (a payer known only by its name)."""
    return {"system": run.tables.derived_system(str(resource)), "value": short_hash(*(_val(ctx, p) for p in parts))}


@register("child_id")
def child_id(
    run: Any, ctx: Any, row: Any, raw: str, parent: str, code: Path, sub: Path | None = None
) -> dict[str, Any] | None:
    """An identifier made from a parent's (``DiagnosticReport[1]``): ``<parent value>-<OBX-3.1>[-<OBX-4>]`` in the
    parent's system — an observation resent in a corrected report updates the one sent before."""
    inst = run.lookup(str(parent), ctx.occ)
    if inst is None:
        return None
    key = run.key_of_instance(inst)
    if key is None:
        return None
    obs = ctx.value(code) or short_hash(ctx.raw(code))
    sub_id = ctx.value(sub) if sub is not None else ""
    out = {"system": key.get("system", ""), "value": f"{key['value']}-{obs}" + (f"-{sub_id}" if sub_id else "")}
    if not out["system"]:
        del out["system"]
    return out


# ---------------------------------------------------------------------------------------------- telecom, places
@register("phone", pure=True, reads=(1, 5, 6, 7, 8, 12))
def phone(run: Any, ctx: Any, row: Any, raw: str) -> str | None:
    """XTN's number: XTN-12 (unformatted), else +country (area) local xext from XTN-5..8, else XTN-1."""
    d = _parts(run, ctx, 12)
    if d[11]:
        return d[11]
    local = d[6]
    if local:
        if len(local) == 7 and local.isdigit():
            local = f"{local[:3]}-{local[3:]}"
        return (f"+{d[4]} " if d[4] else "") + (f"({d[5]}) " if d[5] else "") + local + (f" x{d[7]}" if d[7] else "")
    return d[0] or None


def _parts(run: Any, ctx: Any, n: int) -> list[str]:
    parts = ctx.parts or []
    d = run.v
    out = []
    for p in parts[:n]:
        if d.ss and d.ss in p:
            p = p.split(d.ss, 1)[0]
        out.append(d.d(p))
    return out + [""] * (n - len(out))


@register("place_identifier", pure=True, reads=(1, 2, 3, 4, 7, 8))
def place_identifier(run: Any, ctx: Any, row: Any, raw: str) -> dict[str, Any] | None:
    """PL → the Location's identifier: point of care, room, bed, facility, building and floor in their PL places."""
    d = _parts(run, ctx, 9)
    if not any(d[:4]):
        return None
    value = "^".join([d[0], d[1], d[2], d[3], "", "", d[6], d[7]]).rstrip("^")
    return {"system": run.tables.location_system, "value": value}


@register("place_name", pure=True, reads=(1, 2, 3, 4))
def place_name(run: Any, ctx: Any, row: Any, raw: str) -> str | None:
    d = _parts(run, ctx, 4)
    return " ".join(p for p in d[:3] if p) or d[3] or None


@register("place_kind", pure=True, reads=(1, 2, 3))
def place_kind(run: Any, ctx: Any, row: Any, raw: str) -> dict[str, Any] | None:
    """PL: a bed when PL-3 is valued, else a room when PL-2 is."""
    d = _parts(run, ctx, 3)
    code = "bd" if d[2] else "ro" if d[1] else ""
    if not code:
        return None
    return {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/location-physical-type", "code": code}]}


# ---------------------------------------------------------------------------------------------- quantities
def _units_at(run: Any, ctx: Any, path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    raw = ctx.raw(path)
    return units_of(run, raw.split(run.v.cs)) if raw else {}


@register("quantity", pure=True)
def quantity(run: Any, ctx: Any, row: Any, raw: str, units: Path | None = None) -> dict[str, Any] | None:
    """A number (NM) → Quantity with the units at ``units``; ``<5``, ``>=10`` keep their comparator. Not a number:
    a warning (``invalid: reject`` refuses the message) and nothing written — a later row may keep it as text."""
    text = run.v.d(raw.split(run.v.cs, 1)[0]).strip()
    comparator = ""
    for op in ("<=", ">=", "<", ">"):
        if text.startswith(op):
            comparator, text = op, text[len(op) :].strip()
            break
    n = number(text)
    if n is None:
        run.invalid(run.where(ctx, row), "not a number though the value type is NM; kept as text")
        return None
    q: dict[str, Any] = {"value": n}
    if comparator:
        q["comparator"] = comparator
    q.update(_units_at(run, ctx, units))
    return q


@register("units", pure=True)
def units(run: Any, ctx: Any, row: Any, raw: str) -> dict[str, Any] | None:
    return units_of(run, raw.split(run.v.cs)) or None


@register("unless_number", pure=True)
def unless_number(run: Any, ctx: Any, row: Any, raw: str) -> str | None:
    """The text of a value that is not a number (the NM that could not be a Quantity)."""
    text = run.v.d(run.v.cs.join(raw.split(run.v.cs))).strip()
    t = text.lstrip("<>=").strip()
    return None if number(t) is not None else (text or None)


def _sn(run: Any, raw: str) -> tuple[str, int | float | None, str, int | float | None]:
    d = run.v
    comps = [d.d(c) for c in raw.split(d.cs)] + ["", "", "", ""]
    return comps[0], number(comps[1]), comps[2], number(comps[3])


@register("sn_quantity", pure=True)
def sn_quantity(run: Any, ctx: Any, row: Any, raw: str, units: Path | None = None) -> dict[str, Any] | None:
    """SN (structured numeric) comparator^number → Quantity."""
    comp, n1, sep, _ = _sn(run, raw)
    if n1 is None or sep:
        return None
    q: dict[str, Any] = {"value": n1}
    if comp in ("<", ">", "<=", ">="):
        q["comparator"] = comp
    q.update(_units_at(run, ctx, units))
    return q


@register("sn_range", pure=True)
def sn_range(run: Any, ctx: Any, row: Any, raw: str, units: Path | None = None) -> dict[str, Any] | None:
    """SN ``^10^-^20`` → Range."""
    _, n1, sep, n2 = _sn(run, raw)
    if sep != "-" or n1 is None or n2 is None:
        return None
    u = _units_at(run, ctx, units)
    return {"low": {"value": n1, **u}, "high": {"value": n2, **u}}


@register("sn_ratio", pure=True)
def sn_ratio(run: Any, ctx: Any, row: Any, raw: str, units: Path | None = None) -> dict[str, Any] | None:
    """SN ``^1^:^128`` → Ratio."""
    _, n1, sep, n2 = _sn(run, raw)
    if sep not in (":", "/") or n1 is None or n2 is None:
        return None
    return {"numerator": {"value": n1, **_units_at(run, ctx, units)}, "denominator": {"value": n2}}


@register("sn_text", pure=True)
def sn_text(run: Any, ctx: Any, row: Any, raw: str) -> str | None:
    """An SN no Quantity, Range or Ratio can hold (``^>^60``  is one; ``^1^+`` is not) → its text."""
    _comp, n1, sep, n2 = _sn(run, raw)
    if (
        (n1 is not None and not sep)
        or (sep == "-" and n1 is not None and n2 is not None)
        or (sep in (":", "/") and n1 is not None and n2 is not None)
    ):
        return None
    text = " ".join(x for x in run.v.d(raw).split(run.v.cs) if x)
    return text or None


@register("reference_range")
def reference_range(run: Any, ctx: Any, row: Any, raw: str, units: Path | None = None) -> dict[str, Any]:
    """OBX-7 text (``3.5-5.0``, ``>60``, ``<=2``) → a referenceRange with low/high when it reads as numbers; the
    text is always kept."""
    s = run.v.d(raw).strip()
    u = _units_at(run, ctx, units)
    lo = hi = None
    if "-" in s[1:]:
        i = s.index("-", 1)
        lo, hi = number(s[:i]), number(s[i + 1 :])
    elif s.startswith((">=", "<=")):
        n = number(s[2:])
        lo, hi = (n, None) if s.startswith(">=") else (None, n)
    elif s[:1] in (">", "<"):
        n = number(s[1:])
        lo, hi = (n, None) if s[0] == ">" else (None, n)
    out: dict[str, Any] = {}
    if lo is not None:
        out["low"] = {"value": lo, **u}
    if hi is not None:
        out["high"] = {"value": hi, **u}
    out["text"] = s
    return out


# ---------------------------------------------------------------------------------------------- text
@register("lines")
def lines(run: Any, ctx: Any, row: Any, raw: str) -> Any:
    """Collect the text of every segment that maps here into one element, a line each (OBX-5 of a document →
    one attachment; NTEs after an OBR → the report's conclusion). An attachment's ``data`` is base64."""
    inst = ctx.inst
    text = run.v.text(raw)
    if inst is None or row.target is None or not text:
        return None
    key = tuple(s.name for s in row.target.steps)
    if inst.texts is None:
        inst.texts = {}
    got = inst.texts.get(key)
    if got is None:
        inst.texts[key] = [text]
        return "\x00pending"  # replaced when the Bundle is built
    got.append(text)
    return APPENDED


@register("join")
def join(run: Any, ctx: Any, row: Any, raw: str, sep: str, *parts: Any) -> str | None:
    text = str(sep).join(v for v in (_val(ctx, p) for p in parts) if v)
    return text or None


@register("base64")
def b64(run: Any, ctx: Any, row: Any, raw: str, encoding: Path | None = None) -> str | None:
    """ED data: as sent when ED-4 says Base64, else the text base64-encoded (R4 attachments carry base64)."""
    enc = ctx.value(encoding).upper() if encoding is not None else ""
    data = run.v.d(raw)
    if enc == "BASE64":
        return data.replace("\\n", "").replace(" ", "") or None
    return base64.b64encode(data.encode("utf-8")).decode("ascii") if data else None


@register("mime_type")
def mime_type(run: Any, ctx: Any, row: Any, raw: str, kind: Path | None = None, subtype: Path | None = None) -> str:
    """ED-2/ED-3 (type of data, data subtype) → a MIME type."""
    k = ctx.value(kind) if kind is not None else ""
    s = ctx.value(subtype) if subtype is not None else ""
    main = {
        "TEXT": "text",
        "IMAGE": "image",
        "AP": "application",
        "APPLICATION": "application",
        "AUDIO": "audio",
        "VIDEO": "video",
        "MULTIPART": "multipart",
    }.get(k.upper(), "application")
    sub = (s or "octet-stream").lower()
    if sub == "plain" and main == "application":
        main = "text"
    return f"{main}/{sub}"


# ---------------------------------------------------------------------------------------------- US Core
_RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
_ETHNICITY = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"


@register("us_core_race", whole_field=True)
def us_core_race(run: Any, ctx: Any, row: Any, reps: list[list[str]], which: str = "race") -> dict[str, Any] | None:
    """PID-10 / PID-22 → the US Core race or ethnicity extension: each code an ``ombCategory`` (CDC race and
    ethnicity codes), the displays joined as ``text``. The IG leaves race to a realm's own extension."""
    d = run.v
    parts: list[dict[str, Any]] = []
    texts = []
    for comps in reps:
        code = " ".join(d.d(comps[0]).split()) if comps else ""  # a code has no outer or doubled spaces
        disp = d.d(comps[1]).strip() if len(comps) > 1 else ""
        if code and problem("code", code) is not None:
            run.invalid(run.where(ctx, row), f"race/ethnicity code {code!r} is not a valid code")
            code = ""
        if code:
            coding = {"system": "urn:oid:2.16.840.1.113883.6.238", "code": code}
            if disp:
                coding["display"] = disp
            parts.append({"url": "ombCategory", "valueCoding": coding})
        if disp or code:
            texts.append(disp or code)
    if not texts:
        return None
    return {
        "url": _RACE if which == "race" else _ETHNICITY,
        "extension": [*parts, {"url": "text", "valueString": ", ".join(texts)}],
    }


@register("hash")
def hash_of(run: Any, ctx: Any, row: Any, raw: str) -> str:
    return short_hash(json.dumps(raw))


@register("hd_identifier", pure=True, reads=(1, 2, 3))
def hd_identifier(run: Any, ctx: Any, row: Any, raw: str) -> dict[str, Any] | None:
    """HD (namespace, universal id, its type) → an Identifier: a universal id as a URI value (RFC 3986 system),
    else the namespace in the system ``systems.yaml`` gives it (``urn:hub:id:<namespace>`` by default)."""
    d = _parts(run, ctx, 3)
    ns, uid, utype = d[0], d[1], d[2].upper()
    if uid and utype in ("ISO", "UUID"):
        value = run.tables.identifier_system("", "", uid, utype)
        return {"system": "urn:ietf:rfc:3986", "value": value}
    if ns:
        return {"system": run.tables.identifier_system(ns), "value": ns}
    if uid:
        return {"system": run.tables.identifier_system(uid), "value": uid}
    return None


@register("narrative")
def narrative(run: Any, ctx: Any, row: Any, raw: str) -> dict[str, Any] | None:
    """A text (PV2-12 visit description …) → a generated narrative."""
    text = run.v.text(raw).strip()
    if not text:
        return None
    esc = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "<br/>")
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{esc}</div>'}


@register("field")
def field(run: Any, ctx: Any, row: Any, raw: str, path: Path, map_name: str) -> Any:
    """The value at ``path`` made by the data type map ``map_name`` (an Observation component's code is OBX-3
    through CWE[CodeableConcept], written once per OBX-5 repetition)."""
    mp = run.defs.datatypes.get(str(map_name))
    other = ctx.raw(path)
    if mp is None or not other:
        return None
    level = 1 if (path.comps or path.datatype) else 0
    return run.apply_datatype(mp, other, level, ctx)


@register("joined", whole_field=True)
def joined(run: Any, ctx: Any, row: Any, reps: list[list[str]], sep: str = "\n") -> str | None:
    """Every repetition's text, joined (FT/TX repetitions are lines of one text; formatting escapes rendered)."""
    d = run.v
    parts = [d.text(d.cs.join(c)) for c in reps if any(x and x != '""' for x in c)]  # (``^^^`` is no text)
    text = ("\n" if sep == "\\n" else sep).join(p for p in parts if p)
    return text or None


# ------------------------------------------------------------------------------------ resources of several fields
@register("organization_with")
def organization_with(
    run: Any, ctx: Any, row: Any, raw: str, address: Path | None = None, producer: Path | None = None
) -> dict[str, Any] | None:
    """An XON (the row's value, OBX-23) → an Organization as XON[Organization] makes it, with the address at
    ``address`` (OBX-24, XAD[Address]) and the identifier at ``producer`` (OBX-15, CWE[Identifier]) added: one
    resource from several fields, which a data type map (one value) cannot say. A lab known only by its name but
    sent with an address gets a derived identifier (:func:`keyed`), so the address is kept."""
    org = run.defs.datatypes["XON[Organization]"]
    body = run.apply_datatype(org, raw, 0, ctx) or {}
    for path, name, target in ((address, "XAD[Address]", "address"), (producer, "CWE[Identifier]", "identifier")):
        part = datatype_at(run, ctx, path, name)
        if part:
            body.setdefault(target, []).append(part)
    if not body:
        return None
    keyed(run, org, body, raw, ctx.raw(address) if address is not None else "")
    organization: dict[str, Any] | None = run.resource_value(org, body)
    return organization
