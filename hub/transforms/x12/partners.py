"""Trading-partner settings (``mappings/x12/partners.yaml``) and control numbers.

A partner is described from the hub's side: ``isa.sender_*`` is the practice (us), ``isa.receiver_*`` the
partner. The same settings answer the partner's inbound files (999/TA1 go back to them).

Control numbers (ISA13, GS06, ST02) come from an injected object with ``next(partner, kind) -> int``;
the hub backs it with the store (``hub.channels.x12.StoreControlNumbers``) so numbers survive restarts and are
unique across nodes.
:class:`InMemoryControlNumbers` is for tests and ``hub convert``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from hub.errors import ConfigError

__all__ = [
    "ControlNumbers",
    "InMemoryControlNumbers",
    "Partner",
    "IsaSettings",
    "GsSettings",
    "SubmitterSettings",
    "ReceiverSettings",
    "AddressSettings",
    "BillingProviderSettings",
    "PayerSettings",
    "load_partners",
    "get_partner",
    "DEFAULT_PARTNERS_FILE",
]

DEFAULT_PARTNERS_FILE = Path(__file__).resolve().parents[3] / "mappings" / "x12" / "partners.yaml"


@runtime_checkable
class ControlNumbers(Protocol):
    """Hands out interchange/group/transaction control numbers per partner ("isa", "gs", "st")."""

    def next(self, partner: str, kind: str) -> int: ...


class InMemoryControlNumbers:
    """Counters in a dict, thread-safe; ``start`` is the first number handed out for every (partner, kind)."""

    def __init__(self, start: int = 1) -> None:
        self._start = start
        self._counters: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def next(self, partner: str, kind: str) -> int:
        if kind not in ("isa", "gs", "st"):
            raise ValueError(f"control number kind must be isa, gs or st, not {kind!r}")
        with self._lock:
            value = self._counters.get((partner, kind), self._start - 1) + 1
            if kind == "isa" and value > 999_999_999:
                value = 1
            self._counters[(partner, kind)] = value
            return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _fixed(value: str, width: int, what: str) -> str:
    if len(value) > width:
        raise ValueError(f"{what} is at most {width} characters")
    return value


class IsaSettings(_Model):
    """Interchange envelope (ISA) values."""

    sender_qualifier: str = Field("ZZ", description="ISA05: qualifier of our interchange id", examples=["ZZ", "30"])
    sender_id: str = Field(description="ISA06: our interchange id (padded to 15)", examples=["CLINIC01"])
    receiver_qualifier: str = Field("ZZ", description="ISA07")
    receiver_id: str = Field(description="ISA08: the partner's interchange id")
    usage: Literal["T", "P"] = Field("T", description="ISA15: T = test, P = production")
    ack_requested: Literal["0", "1"] = Field("0", description="ISA14: 1 asks the partner for a TA1")
    authorization_qualifier: str = Field("00", description="ISA01")
    authorization: str = Field("", description="ISA02 (10 characters, blank padded)")
    security_qualifier: str = Field("00", description="ISA03")
    security: str = Field("", description="ISA04 (10 characters, blank padded)")
    element_separator: str = "*"
    repetition_separator: str = "^"
    component_separator: str = ":"
    segment_terminator: str = "~"
    newline: bool = Field(True, description="write a line break after every segment terminator")

    @field_validator("sender_id", "receiver_id")
    @classmethod
    def _id15(cls, v: str) -> str:
        return _fixed(v, 15, "an interchange id")

    @field_validator("authorization", "security")
    @classmethod
    def _id10(cls, v: str) -> str:
        return _fixed(v, 10, "ISA02/ISA04")


class GsSettings(_Model):
    sender_code: str = Field(description="GS02: application sender's code")
    receiver_code: str = Field(description="GS03: application receiver's code")


class SubmitterSettings(_Model):
    """1000A submitter (us) on 837s."""

    name: str
    id: str = Field(description="NM109 (ETIN assigned by the receiver)")
    entity_type: Literal["1", "2"] = "2"
    contact_name: str = ""
    phone: str = ""
    email: str = ""


class ReceiverSettings(_Model):
    """1000B receiver (the clearinghouse/payer) on 837s."""

    name: str
    id: str


class AddressSettings(_Model):
    line1: str
    line2: str = ""
    city: str
    state: str
    postal_code: str


class BillingProviderSettings(_Model):
    """2010AA defaults used when a claim does not carry its own billing provider."""

    name: str
    npi: str
    tax_id: str
    tax_id_type: Literal["EI", "SY"] = "EI"
    taxonomy: str = ""
    entity_type: Literal["1", "2"] = "2"
    first_name: str = ""
    address: AddressSettings


class PayerSettings(_Model):
    payer_id: str
    claim_filing_code: str = Field("CI", description="SBR09: CI commercial, MB Medicare B, MC Medicaid, BL …")
    name: str = ""


class Partner(_Model):
    """One trading partner, as in ``partners.yaml``."""

    name: str = Field(description="the key in partners.yaml; also the key for control numbers")
    description: str = ""
    isa: IsaSettings
    gs: GsSettings
    submitter: SubmitterSettings | None = None
    receiver: ReceiverSettings | None = None
    billing_provider: BillingProviderSettings | None = None
    payers: dict[str, PayerSettings] = Field(default_factory=dict, description="payer name → payer id and filing code")

    def payer(self, name: str) -> PayerSettings | None:
        """Look a payer up by name (case-insensitive) or by payer id."""
        key = name.strip().upper()
        for pname, p in self.payers.items():
            if pname.upper() == key or p.payer_id == name:
                return p
        return None


_cache: dict[Path, tuple[float, dict[str, Partner]]] = {}


def load_partners(path: str | Path | None = None) -> dict[str, Partner]:
    """Read a partners file (default ``mappings/x12/partners.yaml``); ``ConfigError`` with the problems."""
    file = Path(path) if path is not None else DEFAULT_PARTNERS_FILE
    try:
        mtime = file.stat().st_mtime
    except OSError as exc:
        raise ConfigError(f"cannot read X12 partners file {file}: {exc}", [(str(file), 0, str(exc))]) from exc
    hit = _cache.get(file)
    if hit and hit[0] == mtime:
        return hit[1]
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", -1) + 1
        raise ConfigError(f"{file}: not valid YAML: {exc}", [(str(file), line, str(exc))]) from exc
    if not isinstance(data, dict) or not isinstance(data.get("partners"), dict):
        raise ConfigError(f"{file}: expected a 'partners:' mapping", [(str(file), 1, "expected 'partners:'")])
    partners: dict[str, Partner] = {}
    problems: list[tuple[str, int, str]] = []
    for name, body in data["partners"].items():
        try:
            partners[name] = Partner.model_validate({"name": name, **(body or {})})
        except PydanticValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(x) for x in err["loc"])
                problems.append((str(file), 0, f"partners.{name}.{loc}: {err['msg']}"))
    if problems:
        raise ConfigError(f"{file}: {len(problems)} problem(s) in X12 partner settings", problems)
    _cache[file] = (mtime, partners)
    return partners


def get_partner(partner: Partner | str, path: str | Path | None = None) -> Partner:
    """A :class:`Partner` as given, or looked up by name in the partners file."""
    if isinstance(partner, Partner):
        return partner
    partners = load_partners(path)
    try:
        return partners[partner]
    except KeyError:
        raise ConfigError(
            f"X12 partner {partner!r} is not in {path or DEFAULT_PARTNERS_FILE} (known: {', '.join(sorted(partners))})"
        ) from None
