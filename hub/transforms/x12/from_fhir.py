"""FHIR R4 Claim (+ Patient, Coverage, Organization, Practitioner) → the neutral claim model.

Input: a Bundle holding Claim resources and what they reference, or one Claim dict plus the referenced
resources (contained in the Claim, or passed in ``resources``). References resolve by ``fullUrl``
(``urn:uuid:…``), by ``Type/id``, and ``#id`` for contained resources.

=====================  ==========================================================================
claim field            FHIR
=====================  ==========================================================================
patient control no.    Claim.identifier[0].value, else Claim.id
kind                   Claim.type: professional → 837P, institutional → 837I
billing provider       Claim.provider → Organization/Practitioner: name, NPI identifier
                       (http://hl7.org/fhir/sid/us-npi), TIN (urn:oid:2.16.840.1.113883.4.4), address
subscriber / patient   Claim.insurance[focal].coverage → Coverage.subscriberId, .subscriber, .relationship
                       (self → the patient is the subscriber), .class[group]; Claim.patient → Patient
payer                  Coverage.payor → Organization name and identifier (payer id)
diagnoses              Claim.diagnosis by sequence, ICD-10-CM codings
service lines          Claim.item: productOrService (CPT/HCPCS), modifier, quantity, net, servicedDate/
                       servicedPeriod, locationCodeableConcept (place of service), diagnosisSequence, revenue
837I                   supportingInfo categories ``typeofbill`` (CLM05), ``discharge-status`` (CL103),
                       ``admtype``/``pointoforigin`` (CL101/CL102); billablePeriod → statement dates;
                       careTeam role ``attending`` → 2310A (``primary``/``performing`` → 837P rendering)
=====================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any, Literal, TypedDict

from hub.errors import MappingError

from .model import Address, Claim, Patient, Payer, Provider, ServiceLine, Subscriber, normalise_icd10, to_decimal
from .partners import Partner, get_partner

__all__ = ["claims_from_fhir", "claim_from_fhir", "claim_kind", "NPI_SYSTEM", "TIN_SYSTEM"]

NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
TIN_SYSTEM = "urn:oid:2.16.840.1.113883.4.4"
ICD10_SYSTEMS = {"http://hl7.org/fhir/sid/icd-10-cm", "http://hl7.org/fhir/sid/icd-10"}
# Coverage.relationship (http://terminology.hl7.org/CodeSystem/subscriber-relationship) → 837 PAT01
RELATIONSHIPS = {"spouse": "01", "child": "19", "parent": "G8", "common": "53", "other": "G8", "injured": "G8"}


class _Resolver:
    def __init__(self, bundle: dict[str, Any] | None, extra: Iterable[dict[str, Any]]) -> None:
        self.by_ref: dict[str, dict[str, Any]] = {}
        for entry in (bundle or {}).get("entry", []) or []:
            res = entry.get("resource") or {}
            if entry.get("fullUrl"):
                self.by_ref[entry["fullUrl"]] = res
            self._add(res)
        for res in extra:
            self._add(res)

    def _add(self, res: dict[str, Any]) -> None:
        if res.get("resourceType") and res.get("id"):
            self.by_ref[f"{res['resourceType']}/{res['id']}"] = res

    def get(self, ref: dict[str, Any] | None, holder: dict[str, Any], where: str) -> dict[str, Any]:
        if not ref or not ref.get("reference"):
            raise MappingError(f"{where} has no reference", location=where)
        target = ref["reference"]
        if target.startswith("#"):
            for c in holder.get("contained", []) or []:
                if c.get("id") == target[1:]:
                    contained: dict[str, Any] = c
                    return contained
        else:
            found = self.by_ref.get(target)
            if found is None and "/" in target:
                found = self.by_ref.get("/".join(target.rsplit("/", 2)[-2:]))
            if found is not None:
                return found
        raise MappingError(f"{where} refers to {target!r}, which is not in the bundle or contained", location=where)


def _date(value: str | None, where: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise MappingError(f"{value!r} is not a date", location=where) from None


def _ident(res: dict[str, Any], system: str) -> str:
    for ident in res.get("identifier", []) or []:
        if ident.get("system") == system and ident.get("value"):
            return str(ident["value"])
    return ""


def _address(res: dict[str, Any]) -> Address | None:
    for a in res.get("address", []) or []:
        lines = a.get("line") or []
        if lines:
            return Address(
                line1=lines[0],
                line2=lines[1] if len(lines) > 1 else "",
                city=a.get("city", ""),
                state=a.get("state", ""),
                postal_code=(a.get("postalCode") or "").replace("-", ""),
            )
    return None


def _name(res: dict[str, Any]) -> tuple[str, str, str]:
    """(family, first given, second given) of a Patient/Practitioner/RelatedPerson."""
    names = res.get("name") or []
    official = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    given = official.get("given") or []
    return official.get("family", ""), given[0] if given else "", given[1] if len(given) > 1 else ""


_SEXES: dict[str, Literal["M", "F", "U"]] = {"male": "M", "female": "F"}  # Patient.gender → DMG03


def _sex(value: str | None) -> Literal["M", "F", "U"]:
    return _SEXES.get(value or "", "U")


def _code(cc: dict[str, Any] | None, systems: set[str] | None = None) -> str:
    for coding in (cc or {}).get("coding", []) or []:
        if systems is None or coding.get("system") in systems:
            if coding.get("code"):
                return str(coding["code"])
    return ""


def _provider(res: dict[str, Any], where: str) -> Provider:
    npi = _ident(res, NPI_SYSTEM)
    tin = _ident(res, TIN_SYSTEM)
    tax_type: Literal["EI", "SY"] = "EI"
    if not tin:
        tin = _ident(res, "http://hl7.org/fhir/sid/us-ssn")
        tax_type = "SY" if tin else "EI"
    if res.get("resourceType") == "Practitioner":
        family, first, _ = _name(res)
        return Provider(family, npi, tin, tax_type, _address(res), entity_type="1", first_name=first)
    if res.get("resourceType") == "PractitionerRole":
        raise MappingError(
            "a PractitionerRole provider is not supported yet: reference the Practitioner", location=where
        )
    return Provider(res.get("name", ""), npi, tin, tax_type, _address(res), entity_type="2")


def claim_kind(claim: dict[str, Any]) -> Literal["P", "I"]:
    code = _code(claim.get("type"))
    return "I" if code == "institutional" else "P"


def _supporting(claim: dict[str, Any], category: str) -> str:
    for info in claim.get("supportingInfo", []) or []:
        if _code(info.get("category")) == category:
            return _code(info.get("code")) or str(info.get("valueString", ""))
    return ""


def _first_value(identifiers: list[dict[str, Any]] | None) -> Any:
    """The first identifier's value that is not empty, else None."""
    return next((i.get("value") for i in identifiers or [] if i.get("value")), None)


def _billing(claim: dict[str, Any], r: _Resolver) -> Provider | None:
    """Claim.provider (when given) → the billing provider."""
    if not claim.get("provider"):
        return None
    return _provider(r.get(claim.get("provider"), claim, "Claim.provider"), "Claim.provider")


def _coverage(claim: dict[str, Any], r: _Resolver) -> dict[str, Any]:
    """The Coverage of the focal Claim.insurance (the first when none is focal)."""
    insurances = claim.get("insurance") or []
    if not insurances:
        raise MappingError("the Claim has no insurance: there is no payer to bill", location="Claim.insurance")
    focal = next((i for i in insurances if i.get("focal")), insurances[0])
    return r.get(focal.get("coverage"), claim, "Claim.insurance.coverage")


def _payer(coverage: dict[str, Any], r: _Resolver, p: Partner | None) -> Payer:
    """Coverage.payor: its name and identifier; the partner's ``payers`` settings (by name) win."""
    payor_ref = (coverage.get("payor") or [None])[0]
    payer_res = r.get(payor_ref, coverage, "Coverage.payor")
    name = payer_res.get("name") or " ".join(_name(payer_res)[:2]).strip()
    payer_id = _first_value(payer_res.get("identifier")) or ""
    settings = p.payer(name) if p is not None and name else None
    return Payer(
        name=name,
        payer_id=(settings.payer_id if settings else "") or payer_id,
        claim_filing_code=settings.claim_filing_code if settings else "CI",
    )


def _subscriber_and_patient(
    coverage: dict[str, Any], patient_res: dict[str, Any], r: _Resolver
) -> tuple[Subscriber, Patient | None]:
    """2010BA from Coverage (its subscriber, or the Patient when the relationship is ``self``) and 2010CA."""
    relationship = _code(coverage.get("relationship")) or "self"
    member_id = coverage.get("subscriberId") or _first_value(coverage.get("identifier")) or ""
    group = next((c.get("value", "") for c in coverage.get("class", []) or [] if _code(c.get("type")) == "group"), "")
    p_family, p_first, p_middle = _name(patient_res)
    p_dob = _date(patient_res.get("birthDate"), "Patient.birthDate")
    p_sex = _sex(patient_res.get("gender"))
    p_addr = _address(patient_res)
    if relationship == "self":
        return Subscriber(p_family, p_first, member_id, p_dob, p_sex, p_addr, group, p_middle), None
    sub_res = r.get(coverage.get("subscriber"), coverage, "Coverage.subscriber")
    s_family, s_first, s_middle = _name(sub_res)
    subscriber = Subscriber(
        s_family,
        s_first,
        member_id,
        _date(sub_res.get("birthDate"), "Coverage.subscriber.birthDate"),
        _sex(sub_res.get("gender")),
        _address(sub_res),
        group,
        s_middle,
    )
    if p_dob is None or p_addr is None:
        raise MappingError(
            "the patient is not the subscriber: Patient.birthDate and address are needed", location="Patient"
        )
    patient = Patient(p_family, p_first, p_dob, p_sex, p_addr, RELATIONSHIPS.get(relationship, "G8"), p_middle)
    return subscriber, patient


def _diagnoses(claim: dict[str, Any]) -> tuple[list[str], dict[int, int]]:
    """Claim.diagnosis in sequence order (ICD-10-CM codings preferred) and sequence → 1-based pointer."""
    diags = sorted(claim.get("diagnosis", []) or [], key=lambda d: d.get("sequence", 0))
    diagnoses: list[str] = []
    seq_to_index: dict[int, int] = {}
    for d in diags:
        code = _code(d.get("diagnosisCodeableConcept"), ICD10_SYSTEMS) or _code(d.get("diagnosisCodeableConcept"))
        if not code:
            raise MappingError(f"diagnosis {d.get('sequence')} has no ICD-10 coding", location="Claim.diagnosis")
        diagnoses.append(normalise_icd10(code))
        seq_to_index[int(d.get("sequence", len(diagnoses)))] = len(diagnoses)
    return diagnoses, seq_to_index


_RENDERING_ROLES = ("primary", "performing", "rendering")


def _care_team(claim: dict[str, Any], r: _Resolver) -> tuple[Provider | None, Provider | None]:
    """(rendering, attending): the first careTeam member in a rendering role, the first ``attending``."""
    rendering = attending = None
    for member in claim.get("careTeam", []) or []:
        role = _code(member.get("role"))
        prov = _provider(r.get(member.get("provider"), claim, "Claim.careTeam.provider"), "Claim.careTeam.provider")
        if role in _RENDERING_ROLES and rendering is None:
            rendering = prov
        if role == "attending" and attending is None:
            attending = prov
    return rendering, attending


def _service_line(item: dict[str, Any], n: int, seq_to_index: dict[int, int]) -> ServiceLine:
    """Claim.item ``n`` (1-based) → its 2400 line; a charge without ``net`` is unitPrice × quantity."""
    where = f"Claim.item[{n - 1}]"
    proc = _code(item.get("productOrService"))
    revenue = _code(item.get("revenue"))
    mods = [_code(m) for m in item.get("modifier", []) or [] if _code(m)]
    money = item.get("net") or item.get("unitPrice")
    if not money or money.get("value") is None:
        raise MappingError(f"item {n} has no net amount", location=f"{where}.net")
    qty = (item.get("quantity") or {}).get("value", 1)
    charge = to_decimal(money["value"], f"item {n} amount", f"{where}.net")
    if item.get("net") is None:
        charge = charge * to_decimal(qty, f"item {n} quantity", f"{where}.quantity")
    served = item.get("servicedDate") or (item.get("servicedPeriod") or {}).get("start")
    end = (item.get("servicedPeriod") or {}).get("end")
    pos = _code(item.get("locationCodeableConcept"))
    pointers = [seq_to_index[s] for s in item.get("diagnosisSequence", []) or [] if s in seq_to_index][:4]
    service_date = _date(served, f"{where}.servicedDate")
    if service_date is None:
        raise MappingError(f"item {n} has no service date", location=f"{where}.servicedDate")
    end_date = _date(end, f"{where}.servicedPeriod.end")
    return ServiceLine(
        charge=charge,
        service_date=service_date,
        service_date_end=end_date if end_date and end_date != service_date else None,
        procedure_code=proc.upper(),
        modifiers=mods,
        units=to_decimal(qty, f"item {n} quantity", f"{where}.quantity"),
        revenue_code=revenue,
        diagnosis_pointers=pointers or [1],
        place_of_service=pos,
    )


class _Institutional(TypedDict):
    """What only an 837I claim takes from the FHIR Claim."""

    attending_provider: Provider | None
    statement_from: date | None
    statement_to: date | None
    patient_status: str
    admission_type: str
    admission_source: str


def _institutional(claim: dict[str, Any], attending: Provider | None) -> _Institutional:
    """billablePeriod → statement dates; supportingInfo ``discharge-status``, ``admtype``, ``pointoforigin``."""
    period = claim.get("billablePeriod") or {}
    return _Institutional(
        attending_provider=attending,
        statement_from=_date(period.get("start"), "Claim.billablePeriod.start"),
        statement_to=_date(period.get("end"), "Claim.billablePeriod.end"),
        patient_status=_supporting(claim, "discharge-status"),
        admission_type=_supporting(claim, "admtype"),
        admission_source=_supporting(claim, "pointoforigin"),
    )


_PROFESSIONAL_ONLY = _Institutional(
    attending_provider=None,
    statement_from=None,
    statement_to=None,
    patient_status="",
    admission_type="",
    admission_source="",
)


def claim_from_fhir(
    claim: dict[str, Any],
    *,
    bundle: dict[str, Any] | None = None,
    resources: Iterable[dict[str, Any]] = (),
    partner: Partner | str | None = None,
) -> Claim:
    """One FHIR Claim → :class:`Claim`; ``MappingError`` with the FHIRPath of the problem."""
    if claim.get("resourceType") != "Claim":
        raise MappingError(f"expected a Claim resource, not {claim.get('resourceType')!r}", location="resourceType")
    r = _Resolver(bundle, resources)
    p = get_partner(partner) if partner is not None else None
    kind = claim_kind(claim)
    pcn = _first_value(claim.get("identifier")) or claim.get("id")
    if not pcn:
        raise MappingError(
            "the Claim has no identifier or id for the patient control number", location="Claim.identifier"
        )
    billing = _billing(claim, r)
    patient_res = r.get(claim.get("patient"), claim, "Claim.patient")
    coverage = _coverage(claim, r)
    payer = _payer(coverage, r, p)
    subscriber, patient = _subscriber_and_patient(coverage, patient_res, r)
    diagnoses, seq_to_index = _diagnoses(claim)
    rendering, attending = _care_team(claim, r)
    lines = [_service_line(item, n, seq_to_index) for n, item in enumerate(claim.get("item", []) or [], start=1)]
    place = next((line.place_of_service for line in lines if line.place_of_service), "")
    total = (claim.get("total") or {}).get("value")
    tob = _supporting(claim, "typeofbill").lstrip("0")  # type of bill: facility code (2 digits) and frequency
    total_charge = to_decimal(total, "Claim.total", "Claim.total") if total is not None else None
    if kind == "P" and rendering is not None and (billing is None or rendering.npi != billing.npi):
        rendering_provider = rendering
    else:
        rendering_provider = None
    return Claim(
        patient_control_number=str(pcn)[:20],
        subscriber=subscriber,
        payer=payer,
        diagnoses=diagnoses,
        service_lines=lines,
        billing_provider=billing if billing is not None and billing.npi else None,
        patient=patient,
        total_charge=total_charge,
        place_of_service=place or "11",
        facility_code=tob[:2],
        frequency=tob[2:3] if len(tob) >= 3 else "1",
        rendering_provider=rendering_provider,
        **(_institutional(claim, attending) if kind == "I" else _PROFESSIONAL_ONLY),
    )


def claims_from_fhir(
    data: dict[str, Any],
    *,
    resources: Iterable[dict[str, Any]] = (),
    partner: Partner | str | None = None,
) -> list[tuple[Claim, Literal["P", "I"]]]:
    """Every Claim of a Bundle (or the one Claim given) → ``[(claim, "P"|"I"), …]``."""
    extra = list(resources)
    if data.get("resourceType") == "Bundle":
        claims = [
            e.get("resource")
            for e in data.get("entry", []) or []
            if (e.get("resource") or {}).get("resourceType") == "Claim"
        ]
        if not claims:
            raise MappingError("the Bundle has no Claim", location="Bundle.entry")
        return [(claim_from_fhir(c, bundle=data, resources=extra, partner=partner), claim_kind(c)) for c in claims]
    return [(claim_from_fhir(data, resources=extra, partner=partner), claim_kind(data))]
