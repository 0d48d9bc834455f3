"""FHIR validation: the ``fhir.resources`` R4B models (the package's default is R5; R4B is the one closest to R4)
plus the checks they leave out — required code bindings (``Patient.gender``, every ``status``), Bundle rules
(a transaction entry needs a request, fullUrls are unique, ``urn:uuid:`` references point at an entry).

:func:`validate` returns :class:`hub.errors.Issue` objects and never raises (DESIGN.md §6.3); locations are
FHIRPath-like (``Bundle.entry[6].resource.status``) and codes are FHIR issue types (``required``, ``value``,
``code-invalid``, ``structure``, ``invariant``). :func:`check_basic` is the cheap ingest check (is it a resource
at all). The ``fhir_validate`` transform stops a message whose Bundle has error-level issues, with the issues as
the reason; :func:`operation_outcome` renders issues for an HTTP answer.
"""

from __future__ import annotations

import importlib
from typing import Any, Literal

from pydantic import Field

from hub.errors import Issue, ValidationError
from hub.message import Message
from hub.spec import TransformConfig

from .document import FhirDocument
from .document import parse as parse_fhir

__all__ = ["validate", "check_basic", "operation_outcome", "FhirValidate", "REQUIRED_CODES"]

# Required bindings fhir.resources does not enforce: resource → element path → allowed codes (R4).
_REQ_STATUS = {"active", "cancelled", "completed", "entered-in-error", "on-hold", "revoked", "draft", "unknown"}
REQUIRED_CODES: dict[str, dict[str, set[str]]] = {
    "Patient": {"gender": {"male", "female", "other", "unknown"}},
    "RelatedPerson": {"gender": {"male", "female", "other", "unknown"}},
    "Practitioner": {"gender": {"male", "female", "other", "unknown"}},
    "Encounter": {"status": {"planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled", "entered-in-error", "unknown"}},
    "Observation": {"status": {"registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"}},
    "DiagnosticReport": {
        "status": {"registered", "partial", "preliminary", "final", "amended", "corrected", "appended", "cancelled", "entered-in-error", "unknown"}
    },
    "ServiceRequest": {
        "status": _REQ_STATUS,
        "intent": {"proposal", "plan", "directive", "order", "original-order", "reflex-order", "filler-order", "instance-order", "option"},
        "priority": {"routine", "urgent", "asap", "stat"},
    },
    "MedicationRequest": {
        "status": _REQ_STATUS | {"stopped"},
        "intent": {"proposal", "plan", "order", "original-order", "reflex-order", "filler-order", "instance-order", "option"},
    },
    "Immunization": {"status": {"completed", "entered-in-error", "not-done"}},
    "Appointment": {
        "status": {"proposed", "pending", "booked", "arrived", "fulfilled", "cancelled", "noshow", "entered-in-error", "checked-in", "waitlist"}
    },
    "DocumentReference": {"status": {"current", "superseded", "entered-in-error"}, "docStatus": {"preliminary", "final", "amended", "entered-in-error"}},
    "ChargeItem": {"status": {"planned", "billable", "not-billable", "aborted", "billed", "entered-in-error", "unknown"}},
    "Coverage": {"status": {"active", "cancelled", "draft", "entered-in-error"}},
    "AllergyIntolerance": {
        "criticality": {"low", "high", "unable-to-assess"},
        "type": {"allergy", "intolerance"},
        "category": {"food", "medication", "environment", "biologic"},
    },
    "Bundle": {"type": {"document", "message", "transaction", "transaction-response", "batch", "batch-response", "history", "searchset", "collection"}},
}
_PARTICIPANT_STATUS = {"accepted", "declined", "tentative", "needs-action"}
_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"}

_classes: dict[str, Any] = {}


def _model(rtype: str) -> Any:
    cls = _classes.get(rtype)
    if cls is None:
        try:
            module = importlib.import_module(f"fhir.resources.R4B.{rtype.lower()}")
            cls = getattr(module, rtype)
        except (ImportError, AttributeError):
            cls = False
        _classes[rtype] = cls
    return cls


def _loc(prefix: str, loc: tuple[Any, ...]) -> str:
    out = prefix
    for p in loc:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and ("[" in p or "-" in p or " " in p):
            continue  # pydantic's union/tag labels
        else:
            out += f".{p}"
    return out


def _code_of(err_type: str) -> str:
    if "missing" in err_type:
        return "required"
    if err_type == "extra_forbidden":
        return "structure"
    if err_type == "value_error":
        return "value"
    return "value"


def _check_model(resource: dict[str, Any], where: str, issues: list[Issue]) -> None:
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        issues.append(Issue("error", "a resource needs a resourceType", where, "required"))
        return
    cls = _model(rtype)
    if cls is False:
        issues.append(Issue("error", f"{rtype} is not a FHIR R4 resource type", f"{where}.resourceType", "code-invalid"))
        return
    try:
        cls.model_validate(resource)
    except Exception as exc:  # noqa: BLE001 - pydantic's ValidationError (or a model bug): report, never raise
        errors = getattr(exc, "errors", None)
        if not callable(errors):
            issues.append(Issue("error", f"{type(exc).__name__}: {exc}", where, "exception"))
        else:
            for err in errors():
                msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
                loc = tuple(err.get("loc", ()))
                if err.get("type") == "extra_forbidden":
                    msg = f"unknown element {loc[-1]!r}" if loc else "unknown element"
                issues.append(Issue("error", msg, _loc(where, loc), _code_of(str(err.get("type", "")))))
    for element, allowed in REQUIRED_CODES.get(rtype, {}).items():
        value = resource.get(element)
        values = value if isinstance(value, list) else [value]
        for i, v in enumerate(values):
            if v is not None and v not in allowed:
                idx = f"[{i}]" if isinstance(value, list) else ""
                issues.append(
                    Issue("error", f"{v!r} is not in the required value set ({', '.join(sorted(allowed))})", f"{where}.{element}{idx}", "code-invalid")
                )
    if rtype == "Appointment":
        for i, p in enumerate(resource.get("participant") or []):
            if isinstance(p, dict) and p.get("status") not in _PARTICIPANT_STATUS:
                issues.append(Issue("error", "participant.status must be accepted, declined, tentative or needs-action", f"{where}.participant[{i}].status", "code-invalid"))


def _refs(node: Any, out: list[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            out.append(ref)
        for v in node.values():
            if isinstance(v, (dict, list)):
                _refs(v, out)
    elif isinstance(node, list):
        for v in node:
            _refs(v, out)


def validate(doc: FhirDocument | dict[str, Any] | bytes) -> list[Issue]:
    """Every issue found in a resource or a Bundle (and its entries). Never raises."""
    issues: list[Issue] = []
    try:
        if isinstance(doc, (bytes, str)):
            doc = parse_fhir(doc)
    except Exception as exc:  # noqa: BLE001
        return [Issue("error", str(exc), "", getattr(exc, "code", "") or "structure")]
    data = doc.data if isinstance(doc, FhirDocument) else doc
    if not isinstance(data, dict):
        return [Issue("error", "not a FHIR resource", "", "structure")]
    rtype = data.get("resourceType")
    if rtype != "Bundle":
        _check_model(data, str(rtype or "Resource"), issues)
        return issues
    shell = {k: v for k, v in data.items() if k != "entry"}
    entries = data.get("entry") or []
    shell_entries = []
    for e in entries if isinstance(entries, list) else []:
        shell_entries.append({k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e)
    if shell_entries:
        shell["entry"] = shell_entries
    _check_model(shell, "Bundle", issues)
    btype = data.get("type")
    full_urls: dict[str, int] = {}
    for i, e in enumerate(entries if isinstance(entries, list) else []):
        if not isinstance(e, dict):
            continue
        where = f"Bundle.entry[{i}]"
        fu = e.get("fullUrl")
        if isinstance(fu, str):
            if fu in full_urls:
                issues.append(Issue("error", f"fullUrl is the same as entry[{full_urls[fu]}]'s", f"{where}.fullUrl", "invariant"))
            full_urls.setdefault(fu, i)
        if btype in ("transaction", "batch"):
            req = e.get("request")
            if not isinstance(req, dict):
                issues.append(Issue("error", f"a {btype} entry needs a request (bdl-3)", f"{where}.request", "required"))
            elif req.get("method") not in _METHODS or not req.get("url"):
                issues.append(Issue("error", "request needs a method (GET, POST, PUT, DELETE, PATCH, HEAD) and a url", f"{where}.request", "required"))
        res = e.get("resource")
        if isinstance(res, dict):
            _check_model(res, f"{where}.resource", issues)
        elif btype in ("transaction", "collection") and not (isinstance(e.get("request"), dict) and e["request"].get("method") in ("DELETE", "GET")):
            issues.append(Issue("error", "the entry has no resource", f"{where}.resource", "required"))
    if btype in ("transaction", "collection"):
        for i, e in enumerate(entries if isinstance(entries, list) else []):
            refs: list[str] = []
            _refs(e.get("resource") if isinstance(e, dict) else None, refs)
            for r in refs:
                if r.startswith("urn:uuid:") and r not in full_urls:
                    issues.append(Issue("error", f"reference {r} points at no entry of the Bundle", f"Bundle.entry[{i}].resource", "not-found"))
    return issues


def check_basic(doc: FhirDocument) -> list[Issue]:
    """The cheap ingest check: a resource with a known type; a Bundle's entries are resources."""
    data = doc.data
    rtype = data.get("resourceType")
    if not _model(str(rtype)):
        return [Issue("error", f"{rtype!r} is not a FHIR R4 resource type", "resourceType", "code-invalid")]
    out = []
    if rtype == "Bundle":
        entries = data.get("entry") or []
        if not isinstance(entries, list):
            return [Issue("error", "Bundle.entry must be a list", "Bundle.entry", "structure")]
        for i, e in enumerate(entries):
            res = e.get("resource") if isinstance(e, dict) else None
            if res is not None and not (isinstance(res, dict) and isinstance(res.get("resourceType"), str)):
                out.append(Issue("error", "an entry's resource needs a resourceType", f"Bundle.entry[{i}].resource", "structure"))
    return out


def operation_outcome(issues: list[Issue], *, information: str | None = None) -> dict[str, Any]:
    """Issues → an OperationOutcome (an information issue when there are none)."""
    out = []
    for i in issues:
        item: dict[str, Any] = {"severity": i.severity if i.severity in ("fatal", "error", "warning", "information") else "error", "code": i.code or "processing"}
        item["diagnostics"] = i.message
        if i.location:
            item["expression"] = [i.location]
        out.append(item)
    if not out:
        out.append({"severity": "information", "code": "informational", "diagnostics": information or "ok"})
    return {"resourceType": "OperationOutcome", "issue": out}


class FhirValidate:
    class Config(TransformConfig):
        """Validate a FHIR message (often a Bundle from ``v2_to_fhir``) with the fhir.resources R4B models and the
        required bindings; error-level issues reject the message with the issues as the reason."""

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
        bad = [i for i in issues if i.severity in ("error", "fatal") or (self.config.warnings_fail and i.severity == "warning")]
        if bad:
            shown = "; ".join(str(i) for i in bad[: self.config.max_reported])
            more = f" (and {len(bad) - self.config.max_reported} more)" if len(bad) > self.config.max_reported else ""
            raise ValidationError(f"FHIR validation failed: {shown}{more}", code=bad[0].code, location=bad[0].location, issues=bad)
        return message
