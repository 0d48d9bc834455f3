"""What a claim needs to become a valid 837: :func:`check_claim` and its rules, as data.

:data:`RULES` is the table, in the order the checks run (the first broken rule is the error). Each
:class:`Rule` is a predicate (``broken``, optionally only ``when`` something holds), the message and the 837
location of the :class:`~hub.errors.MappingError` it raises — both ``str.format`` templates over the names of
the facts being checked (``pcn``, ``kind``, ``claim``, ``billing``, the counts ``diagnoses`` and ``lines``;
``n``, ``line``, ``where`` for a service line; ``i``, ``dx`` for a diagnosis) and the rule's ``value``.
:class:`Each` runs rules once per diagnosis (:data:`DIAGNOSIS_RULES`) or service line (:data:`LINE_RULES`).
Helpers make the rule families: :func:`required` (a value is there), :func:`npi` (there and Luhn-valid),
:func:`address` (N3/N4 complete, state and ZIP well-formed), :func:`money` (an amount X12 can carry) and
:func:`only` (rules that apply in one case: 837P, 837I, a patient who is not the subscriber).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Generic, Literal, TypeVar

from hub.errors import MappingError

from .model import (
    ICD10_PATTERN,
    Address,
    Claim,
    Patient,
    Provider,
    ServiceLine,
    normalise_icd10,
    npi_is_valid,
    to_decimal,
)

__all__ = [
    "check_claim",
    "Rule",
    "Each",
    "RULES",
    "DIAGNOSIS_RULES",
    "LINE_RULES",
    "ClaimFacts",
    "LineFacts",
    "DiagnosisFacts",
    "required",
    "npi",
    "provider_npi",
    "address",
    "money",
    "only",
]

_PROCEDURE = re.compile(r"^[A-Z0-9]{5}$")
_MODIFIER = re.compile(r"^[A-Z0-9]{2}$")
_REVENUE = re.compile(r"^[0-9]{4}$")
_STATE = re.compile(r"^[A-Z]{2}$")
_TWO_DIGITS = re.compile(r"^\d{2}$")
_RELATIONSHIPS = ("01", "19", "20", "21", "39", "40", "53", "G8")  # 2000C PAT01
_MAX_DIAGNOSES = {"P": 12, "I": 25}
_MAX_LINES = {"P": 50, "I": 999}


@dataclass(slots=True)
class ClaimFacts:
    """What the rules of a claim look at."""

    claim: Claim
    kind: Literal["P", "I"]
    billing: Provider

    @property
    def pcn(self) -> str:
        return self.claim.patient_control_number

    def names(self) -> dict[str, object]:
        """The names the message and location templates use."""
        return {
            "claim": self.claim,
            "kind": self.kind,
            "billing": self.billing,
            "pcn": self.pcn,
            "diagnoses": len(self.claim.diagnoses),  # how many
            "lines": len(self.claim.service_lines),
        }


@dataclass(slots=True)
class DiagnosisFacts(ClaimFacts):
    i: int  # 1-based
    dx: str

    def names(self) -> dict[str, object]:
        # ClaimFacts.names(self): zero-argument super() does not work in a slots dataclass
        return {**ClaimFacts.names(self), "i": self.i, "dx": self.dx}


@dataclass(slots=True)
class LineFacts(ClaimFacts):
    n: int  # 1-based
    line: ServiceLine

    def names(self) -> dict[str, object]:
        professional = self.kind == "P"
        return {
            **ClaimFacts.names(self),  # not super(): see DiagnosisFacts
            "n": self.n,
            "line": self.line,
            "where": f"2400[{self.n}]",
            "charge_at": "SV102" if professional else "SV203",  # the line's charge: SV1 or SV2
            "procedure_at": "SV101-2" if professional else "SV202-2",
        }


F = TypeVar("F", bound=ClaimFacts)


def _nothing(facts: ClaimFacts) -> object:
    return None


@dataclass(frozen=True)
class Rule(Generic[F]):
    """A claim is unbillable when ``broken``; then MappingError(message, location), formatted over the facts."""

    broken: Callable[[F], bool]
    message: str
    location: str
    value: Callable[[F], object] = _nothing  # the ``{value}`` of the templates
    when: Callable[[F], bool] | None = None  # the rule applies only when this holds

    def problem(self, facts: F) -> MappingError | None:
        if (self.when is None or self.when(facts)) and self.broken(facts):
            names = {**facts.names(), "value": self.value(facts)}
            return MappingError(self.message.format_map(names), location=self.location.format_map(names))
        return None


@dataclass(frozen=True)
class Each(Generic[F]):
    """``rules`` for each of the facts ``items`` gives (the diagnoses, the service lines), in order."""

    items: Callable[[ClaimFacts], Iterable[F]]
    rules: tuple[Rule[F], ...]

    def problem(self, facts: ClaimFacts) -> MappingError | None:
        for item in self.items(facts):
            for rule in self.rules:
                found = rule.problem(item)
                if found is not None:
                    return found
        return None


def _blank(value: object) -> bool:
    return not value or not str(value).strip()


def only(when: Callable[[F], bool], rules: Iterable[Rule[F]]) -> tuple[Rule[F], ...]:
    """``rules`` applying only ``when`` (each still keeps its own ``when``)."""

    def both(rule: Rule[F]) -> Callable[[F], bool]:
        own = rule.when
        return when if own is None else (lambda f: when(f) and own(f))

    return tuple(Rule(r.broken, r.message, r.location, r.value, both(r)) for r in rules)


def required(what: str, get: Callable[[F], object], location: str) -> Rule[F]:
    """``<what> is missing`` when the value is empty or blank."""
    return Rule(lambda f: _blank(get(f)), f"{what} is missing", location)


def npi(what: str, get: Callable[[F], str], location: str) -> tuple[Rule[F], ...]:
    """The NPI is there and has its Luhn check digit."""
    return (
        required(f"{what} NPI", get, location),
        Rule(
            lambda f: not npi_is_valid(get(f)),
            f"{what} NPI {{value!r}} is not valid (10 digits with a Luhn check digit)",
            location,
            get,
        ),
    )


def provider_npi(
    what: str, get: Callable[[ClaimFacts], Provider | None], location: str
) -> tuple[Rule[ClaimFacts], ...]:
    """The NPI of an optional provider of the claim, when the claim has one."""

    def its_npi(f: ClaimFacts) -> str:
        p = get(f)
        assert p is not None
        return p.npi

    return only(lambda f: get(f) is not None, npi(what, its_npi, location))


def _zip_ok(postal_code: str, zip9: bool) -> bool:
    digits = (postal_code or "").replace("-", "")
    return digits.isdigit() and len(digits) in ((9,) if zip9 else (5, 9))


def address(what: str, get: Callable[[F], Address | None], loop: str, *, zip9: bool = False) -> tuple[Rule[F], ...]:
    """N3/N4: the address is there with street and city, a 2-letter state and a 5/9-digit ZIP (9 with ``zip9``)."""

    def part(f: F) -> Address:
        a = get(f)
        assert a is not None  # the first rule of the family
        return a

    need = "the 9-digit ZIP+4" if zip9 else "a 5 or 9 digit ZIP"
    return (
        Rule(lambda f: get(f) is None, f"{what} address is missing", f"{loop}/N3"),
        required(f"{what} street address", lambda f: part(f).line1, f"{loop}/N301"),
        required(f"{what} city", lambda f: part(f).city, f"{loop}/N401"),
        Rule(
            lambda f: not _STATE.match(part(f).state or ""),
            f"{what} state {{value!r}} is not a 2-letter code",
            f"{loop}/N402",
            lambda f: part(f).state,
        ),
        Rule(
            lambda f: not _zip_ok(part(f).postal_code, zip9),
            f"{what} postal code {{value!r}} is not {need}",
            f"{loop}/N403",
            lambda f: part(f).postal_code,
        ),
    )


def money(what: str, get: Callable[[F], Decimal], location: str) -> tuple[Rule[F], ...]:
    """An amount X12 can carry: a number (MappingError when not), at most 2 decimals, more than zero, < 10^8.

    ``what`` and ``location`` are templates over the facts, like a rule's message."""

    def value(f: F) -> Decimal:
        v = get(f)
        if isinstance(v, Decimal):
            return v
        names = f.names()
        return to_decimal(v, what.format_map(names), location.format_map(names))

    def too_precise(f: F) -> bool:
        v = value(f)
        exponent = v.as_tuple().exponent
        return not v.is_finite() or (isinstance(exponent, int) and exponent < -2)

    return (
        Rule(too_precise, f"{what} {{value}} has more than 2 decimals", location, value),
        Rule(lambda f: value(f) <= 0, f"{what} must be more than zero, not {{value}}", location, value),
        Rule(
            lambda f: value(f) >= Decimal("100000000"),
            f"{what} {{value}} is too large for X12 (max 99999999.99)",
            location,
            value,
        ),
    )


def _diagnoses(f: ClaimFacts) -> Iterator[DiagnosisFacts]:
    for i, dx in enumerate(f.claim.diagnoses, start=1):
        yield DiagnosisFacts(f.claim, f.kind, f.billing, i, dx)


def _lines(f: ClaimFacts) -> Iterator[LineFacts]:
    for n, line in enumerate(f.claim.service_lines, start=1):
        yield LineFacts(f.claim, f.kind, f.billing, n, line)


def _lines_total(claim: Claim) -> Decimal:
    return sum((line.charge for line in claim.service_lines), Decimal(0))


def _bad_pointer(f: LineFacts) -> int | None:
    """The first diagnosis pointer of the line that points to no diagnosis of the claim."""
    return next((p for p in f.line.diagnosis_pointers if not 1 <= p <= len(f.claim.diagnoses)), None)


def _tax_id_ok(tax_id: str) -> bool:
    digits = (tax_id or "").replace("-", "")
    return bool(tax_id) and digits.isdigit() and len(digits) == 9


def _patient(f: ClaimFacts) -> Patient:
    assert f.claim.patient is not None
    return f.claim.patient


def _attending(f: ClaimFacts) -> Provider | None:
    return f.claim.attending_provider


def _professional(f: ClaimFacts) -> bool:
    return f.kind == "P"


def _institutional(f: ClaimFacts) -> bool:
    return f.kind == "I"


def _patient_is_subscriber(f: ClaimFacts) -> bool:
    return f.claim.patient is None


def _patient_is_not_subscriber(f: ClaimFacts) -> bool:
    return f.claim.patient is not None


_SELF = "subscriber (who is the patient)"

DIAGNOSIS_RULES: tuple[Rule[DiagnosisFacts], ...] = (
    Rule(
        lambda f: not ICD10_PATTERN.match(normalise_icd10(f.dx)),
        "diagnosis {dx!r} of claim {pcn} is not an ICD-10-CM code",
        "2300/HI0{value}",
        lambda f: min(f.i, 9),
    ),
)

LINE_RULES: tuple[Rule[LineFacts], ...] = (
    *money("charge of line {n} of claim {pcn}", lambda f: f.line.charge, "{where}/{charge_at}"),
    Rule(
        lambda f: not _PROCEDURE.match(f.line.procedure_code or ""),
        "procedure code {line.procedure_code!r} of line {n} of claim {pcn} is not a CPT/HCPCS code",
        "{where}/{procedure_at}",
        when=lambda f: f.kind == "P" or bool(f.line.procedure_code),  # optional on a revenue-coded 837I line
    ),
    Rule(
        lambda f: not _REVENUE.match(f.line.revenue_code or ""),
        "revenue code {line.revenue_code!r} of line {n} of claim {pcn} is not 4 digits",
        "{where}/SV201",
        when=_institutional,
    ),
    Rule(
        lambda f: len(f.line.modifiers) > 4 or any(not _MODIFIER.match(m) for m in f.line.modifiers),
        "modifiers {line.modifiers!r} of line {n} of claim {pcn} are not 1-4 two-character codes",
        "{where}/SV101-3",
    ),
    Rule(lambda f: f.line.units <= 0, "units of line {n} of claim {pcn} must be more than zero", "{where}/SV104"),
    *only(
        _professional,
        (
            Rule(
                lambda f: not f.line.diagnosis_pointers or len(f.line.diagnosis_pointers) > 4,
                "line {n} of claim {pcn} needs 1-4 diagnosis pointers",
                "{where}/SV107",
            ),
            Rule(
                lambda f: _bad_pointer(f) is not None,
                "line {n} of claim {pcn} points to diagnosis {value}, the claim has {diagnoses}",
                "{where}/SV107",
                _bad_pointer,
            ),
        ),
    ),
    Rule(lambda f: f.line.service_date is None, "line {n} of claim {pcn} has no service date", "{where}/DTP03"),
)

RULES: tuple[Rule[ClaimFacts] | Each[DiagnosisFacts] | Each[LineFacts], ...] = (
    # 2300 CLM01
    required("patient control number", lambda f: f.pcn, "2300/CLM01"),
    Rule(
        lambda f: len(f.pcn) > 20,
        "patient control number {pcn!r} is longer than 20 characters",
        "2300/CLM01",
    ),
    # 2010AA billing provider
    required("billing provider name", lambda f: f.billing.name, "2010AA/NM103"),
    *npi("billing provider", lambda f: f.billing.npi, "2010AA/NM109"),
    *address("billing provider", lambda f: f.billing.address, "2010AA", zip9=True),
    Rule(
        lambda f: not _tax_id_ok(f.billing.tax_id),
        "billing provider tax id {billing.tax_id!r} must be 9 digits (EIN or SSN)",
        "2010AA/REF02",
    ),
    # 2010BA subscriber, 2010CA patient, 2010BB payer
    required("subscriber last name", lambda f: f.claim.subscriber.last_name, "2010BA/NM103"),
    required("subscriber member id", lambda f: f.claim.subscriber.member_id, "2010BA/NM109"),
    *only(
        _patient_is_subscriber,
        (
            *address(_SELF, lambda f: f.claim.subscriber.address, "2010BA"),
            Rule(lambda f: f.claim.subscriber.birth_date is None, f"{_SELF} birth date is missing", "2010BA/DMG02"),
        ),
    ),
    *only(
        _patient_is_not_subscriber,
        (
            required("patient last name", lambda f: _patient(f).last_name, "2010CA/NM103"),
            *address("patient", lambda f: _patient(f).address, "2010CA"),
            Rule(lambda f: _patient(f).birth_date is None, "patient birth date is missing", "2010CA/DMG02"),
            Rule(
                lambda f: _patient(f).relationship not in _RELATIONSHIPS,
                "patient relationship {claim.patient.relationship!r} is not an 837 code",
                "2000C/PAT01",
            ),
        ),
    ),
    required("payer name", lambda f: f.claim.payer.name, "2010BB/NM103"),
    required("payer id", lambda f: f.claim.payer.payer_id, "2010BB/NM109"),
    # 2300 HI diagnoses
    Rule(
        lambda f: not f.claim.diagnoses,
        "claim {pcn} has no diagnosis (an 837 needs at least one ICD-10 code)",
        "2300/HI",
    ),
    Rule(
        lambda f: len(f.claim.diagnoses) > _MAX_DIAGNOSES[f.kind],
        "claim {pcn} has {diagnoses} diagnoses; the 837{kind} takes {value}",
        "2300/HI",
        lambda f: _MAX_DIAGNOSES[f.kind],
    ),
    Each(_diagnoses, DIAGNOSIS_RULES),
    # 2400 service lines
    Rule(lambda f: not f.claim.service_lines, "claim {pcn} has no service line", "2400/LX"),
    Rule(
        lambda f: len(f.claim.service_lines) > _MAX_LINES[f.kind],
        "claim {pcn} has {lines} lines; the 837{kind} takes {value}",
        "2400",
        lambda f: _MAX_LINES[f.kind],
    ),
    Each(_lines, LINE_RULES),
    # 2300 CLM02 total, CLM05 frequency
    *money("total charge of claim {pcn}", lambda f: f.claim.charge, "2300/CLM02"),
    Rule(
        lambda f: f.claim.total_charge is not None and f.claim.total_charge != _lines_total(f.claim),
        "total charge {claim.total_charge} of claim {pcn} is not the sum of its lines ({value})",
        "2300/CLM02",
        lambda f: _lines_total(f.claim),
    ),
    Rule(
        lambda f: f.claim.frequency not in ("1", "7", "8"),
        "claim frequency {claim.frequency!r} is not 1, 7 or 8",
        "2300/CLM05-3",
        when=_professional,
    ),
    Rule(
        lambda f: f.claim.frequency in ("7", "8") and not f.claim.original_claim_reference,
        "claim {pcn} replaces/voids a claim (frequency {claim.frequency}) but has no original claim number",
        "2300/REF*F8",
    ),
    # 837P: place of service, 2310B rendering and 2310A referring providers
    *only(
        _professional,
        (
            Rule(
                lambda f: not _TWO_DIGITS.match(f.claim.place_of_service or ""),
                "place of service {claim.place_of_service!r} is not a 2-digit code",
                "2300/CLM05-1",
            ),
            *provider_npi("rendering provider", lambda f: f.claim.rendering_provider, "2310B/NM109"),
            *provider_npi("referring provider", lambda f: f.claim.referring_provider, "2310A/NM109"),
        ),
    ),
    # 837I: type of bill, statement period, 2310A attending provider, discharge status, admission
    *only(
        _institutional,
        (
            Rule(
                lambda f: not _TWO_DIGITS.match(f.claim.facility_code or ""),
                "facility type code {claim.facility_code!r} (first two digits of the type of bill) is missing",
                "2300/CLM05-1",
            ),
            Rule(
                lambda f: f.claim.statement_from is None,
                "claim {pcn} has no statement period (837I DTP*434)",
                "2300/DTP*434",
            ),
            Rule(
                lambda f: f.claim.attending_provider is None,
                "institutional claim {pcn} has no attending provider (2310A)",
                "2310A/NM1",
            ),
            *provider_npi("attending provider", _attending, "2310A/NM109"),
            required("patient status (discharge status, CL103)", lambda f: f.claim.patient_status, "2300/CL103"),
            Rule(
                lambda f: (
                    f.claim.facility_code[:1] == "1"
                    and f.claim.facility_code[1:2] in ("1", "2")
                    and f.claim.admission_date is None
                ),
                "inpatient claim {pcn} has no admission date (DTP*435)",
                "2300/DTP*435",
            ),
        ),
    ),
)


def check_claim(claim: Claim, kind: Literal["P", "I"], billing: Provider) -> None:
    """Raise ``MappingError`` (with the 837 location) when ``claim`` cannot become a valid 837: the first
    broken rule of :data:`RULES`."""
    facts = ClaimFacts(claim, kind, billing)
    for rule in RULES:
        problem = rule.problem(facts)
        if problem is not None:
            raise problem
