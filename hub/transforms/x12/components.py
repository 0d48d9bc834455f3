"""The X12 package as channel components: the transforms, X12 metadata and split.

Transforms (registered in :mod:`hub.registry`; each ``Config`` is the user documentation):

==================  ==========================================================================================
``x12_claim_check`` at ingest on the charge route: builds the claim of a DFT^P03 or FHIR Claim Bundle and
                    checks it can be billed (NPI, diagnosis, payer …) — a charge that cannot make a valid 837
                    is **rejected** with the reason. The content is left unchanged: the ``x12_837`` assembler
                    of a ``batch:`` destination writes the interchange later (``hub.channels.x12``).
``v2_to_x12_837``   a DFT^P03 → one 837P/837I interchange per message (no batching, no status tracking).
``fhir_to_x12_837`` a FHIR Claim (Bundle with Patient, Coverage, Organization/Practitioner) → one 837.
``x12_835_to_csv``  an 835 → payment-posting CSV (layout under ``mappings/``); unbalanced → rejected.
``x12_835_to_fhir`` an 835 → a collection Bundle of ExplanationOfBenefit; unbalanced → rejected.
``x12_999``         inbound X12 → the 999 acknowledging it (or a TA1 when its envelope is in error), addressed
                    back to the partner, for a route to the partner's outbox.
==================  ==========================================================================================

Control numbers (ISA13, GS06, ST02): transforms are pure, so the interchange a transform writes (``v2_to_x12_837``,
``fhir_to_x12_837``, ``x12_999``) carries *provisional* numbers from the component's own
:class:`~hub.transforms.x12.InMemoryControlNumbers` — what ``hub test``, ``hub check`` and dry runs show — and the
component names the partner in its ``numbered_for`` attribute. When the channel accepts the message it takes the
real numbers from the store's durable sequences ``x12:<partner>:<isa|gs|st>`` and writes them in
(:func:`hub.channels.x12.take_control_numbers`, :func:`~hub.transforms.x12.writer.number_interchange`), so a
message rejected by a later step of its pipeline uses up no number. The ``x12_837`` assembler takes its numbers
from the same sequences when it writes a batch.

Partner settings are read at build time from ``<mappings>/x12/partners.yaml`` (or the ``partners:`` file named
in the config). Nothing here reaches the store or imports the channels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from hub.errors import ConfigError, Issue, MappingError, ValidationError, X12ParseError
from hub.message import Message
from hub.spec import TransformConfig

from .acks import check_interchanges, make_999, make_ta1
from .claims_837 import checked_claim, write_837
from .from_fhir import claims_from_fhir
from .from_hl7v2 import claim_from_dft
from .model import Claim
from .partners import InMemoryControlNumbers, Partner, get_partner
from .reader import Segment, SegmentReader
from .remit import load_layout, remit_to_fhir, x12_835_to_csv
from .validate import validate

__all__ = [
    "partner_for",
    "claims_of",
    "check_claims",
    "quick_check",
    "X12ClaimCheck",
    "V2ToX12837",
    "FhirToX12837",
    "X12835ToCsv",
    "X12835ToFhir",
    "X12Ack",
    "meta",
    "split_transactions",
    "GUIDES",
]

# GS08 → what the transaction is (message_type / meta["x12_guide"])
GUIDES = {
    "005010X222A1": "837P",
    "005010X223A2": "837I",
    "005010X221A1": "835",
    "005010X231A1": "999",
    "005010X214": "277CA",
    "005010X212": "277",
    "005010X220A1": "834",
    "005010X218": "820",
    "005010X279A1": "270/271",
}


def partner_for(name: str, partners_file: str | None, ctx: object) -> Partner:
    """The partner's settings from ``<mappings>/<partners_file>`` (default ``x12/partners.yaml``); ConfigError."""
    rel = partners_file or "x12/partners.yaml"
    mappings = Path(getattr(ctx, "mappings_dir", "mappings"))
    path = Path(rel) if Path(rel).is_absolute() else mappings / rel
    if not path.exists():
        raise ConfigError(f"X12 partners file {path} does not exist (partner {name!r})")
    return get_partner(name, path)


# ---------------------------------------------------------------------------------------------- claims
def _fhir_data(message: Message) -> dict[str, Any]:
    parsed = message.parsed
    data = getattr(parsed, "data", None) if parsed is not None else None
    if isinstance(data, dict):
        return data
    try:
        data = json.loads(message.raw)
    except ValueError as exc:
        raise MappingError(f"the FHIR content is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MappingError("the FHIR content is not a resource or Bundle")
    return data


def claims_of(
    message: Message,
    partner: Partner,
    kind: Literal["P", "I"],
    *,
    place_of_service: str = "11",
    other_kind: str = "reject",
) -> list[Claim]:
    """The claims a charge message holds: one for a DFT^P03, every Claim of a FHIR Bundle. MappingError.

    A FHIR Bundle may hold professional and institutional Claims: ``other_kind="skip"`` takes only those of
    ``kind`` (another route makes the others), ``"reject"`` refuses the Bundle."""
    if message.content_type == "hl7v2":
        from hub.transforms.document import document_of

        return [claim_from_dft(document_of(message), partner, place_of_service=place_of_service)]
    if message.content_type == "fhir":
        found = claims_from_fhir(_fhir_data(message), partner=partner)
        out = []
        for claim, k in found:
            if k != kind and other_kind == "skip":
                continue
            if k != kind:
                raise MappingError(
                    f"claim {claim.patient_control_number} is {'an institutional' if k == 'I' else 'a professional'} "
                    f"claim (837{k}); this route makes 837{kind}",
                    location="Claim.type",
                )
            out.append(claim)
        if not out:
            raise MappingError(f"the FHIR content holds no 837{kind} claim", location="Claim.type")
        return out
    raise MappingError(f"a claim is made from an HL7 v2 DFT^P03 or a FHIR Claim, not {message.content_type!r} content")


def quick_check(claims: list[Claim], partner: Partner, kind: Literal["P", "I"]) -> None:
    """The checks :func:`write_837` makes before writing (billing provider, payer id, :func:`check_claim`), without
    writing: MappingError for a claim that cannot be billed. Cheap enough to run per message of a large batch."""
    for c in claims:
        checked_claim(c, partner, kind)


def check_claims(claims: list[Claim], partner: Partner, kind: Literal["P", "I"], *, pyx12: bool = False) -> bytes:
    """Write the claims once with throw-away control numbers: MappingError when one cannot be billed; with
    ``pyx12`` also ValidationError when pyx12's 5010 validation finds an error. Returns the trial 837."""
    trial = write_837(claims, partner, InMemoryControlNumbers(), kind=kind)
    if pyx12:
        errors = [i for i in validate(trial) if i.severity == "error"]
        if errors:
            first = errors[0]
            raise ValidationError(
                f"the 837 for claim {', '.join(c.patient_control_number for c in claims)} fails 5010 validation: "
                + "; ".join(str(i) for i in errors[:5]),
                code=first.code,
                location=first.location,
                issues=errors,
            )
    return trial


class _PartnerTransform:
    def __init__(self, config: Any, ctx: object) -> None:
        self.config = config
        self.ctx = ctx
        self.partner = partner_for(config.partner, config.partners, ctx)


class _NumberedTransform(_PartnerTransform):
    """A transform whose output is an interchange: its control numbers are provisional (in-memory, per component);
    the channel takes the partner's real ones from the store when it accepts the message (see the module)."""

    def __init__(self, config: Any, ctx: object) -> None:
        super().__init__(config, ctx)
        self.numbers = InMemoryControlNumbers()
        self.numbered_for = self.partner.name  # the partner whose control-number sequences the output takes


_Partner = Annotated[
    str, Field(description="The trading partner (a key of mappings/x12/partners.yaml).", examples=["clearinghouse"])
]
_PartnersFile = Annotated[
    str | None, Field(description="Partner settings file, relative to the mappings folder (default x12/partners.yaml).")
]
_Kind = Annotated[
    Literal["P", "I"], Field(description="P: 837P professional (005010X222A1); I: 837I institutional (005010X223A2).")
]
_PlaceOfService = Annotated[
    str, Field(description="DFT: place of service (CLM05-1) of an 837P claim.", examples=["11", "22"])
]
_OtherKind = Annotated[
    Literal["reject", "skip"],
    Field(
        description="FHIR: a Bundle with professional and institutional Claims — skip: take only this kind's (another "
        "route makes the others); reject: reject the Bundle.",
    ),
]


class X12ClaimCheck(_PartnerTransform):
    class Config(TransformConfig):
        """Reject a charge that cannot make a valid claim; leave the content as it is.

        Put it on the route of a ``batch:`` destination whose assembler is ``{type: x12_837}``: a DFT^P03 (or a
        FHIR Claim Bundle) is mapped to the claim the 837 would carry and checked (billing NPI, diagnoses, payer,
        service lines …); a problem rejects the message at once with the reason (MLLP AR), instead of leaving a
        bad claim for the batch.
        """

        type: Literal["x12_claim_check"] = "x12_claim_check"
        partner: _Partner
        kind: _Kind = "P"
        place_of_service: _PlaceOfService = "11"
        other_kind: _OtherKind = "reject"
        partners: _PartnersFile = None
        validate_: bool = Field(
            False,
            alias="validate",
            description="Also run pyx12's 5010 validation on the claim (about 0.3 s a message).",
        )

    def __call__(self, message: Message) -> Message:
        c = self.config
        claims = claims_of(message, self.partner, c.kind, place_of_service=c.place_of_service, other_kind=c.other_kind)
        check_claims(claims, self.partner, c.kind, pyx12=c.validate_)
        return message


class V2ToX12837(_NumberedTransform):
    class Config(TransformConfig):
        """A DFT^P03 → one 837 interchange (one claim). Control numbers from the store.

        For a file per batch and claim status from 999/277CA, use ``x12_claim_check`` here and a destination
        with ``batch: {assemble: {type: x12_837}}`` instead.
        """

        type: Literal["v2_to_x12_837"] = "v2_to_x12_837"
        partner: _Partner
        kind: _Kind = "P"
        place_of_service: _PlaceOfService = "11"
        partners: _PartnersFile = None

    def __call__(self, message: Message) -> Message:
        c = self.config
        if message.content_type != "hl7v2":
            raise MappingError(f"v2_to_x12_837 takes HL7 v2 DFT^P03 content, not {message.content_type!r}")
        claims = claims_of(message, self.partner, c.kind, place_of_service=c.place_of_service)
        out = write_837(claims, self.partner, self.numbers, kind=c.kind)
        return message.replace(out, "x12")


class FhirToX12837(_NumberedTransform):
    class Config(TransformConfig):
        """A FHIR Claim (a Bundle with Claim, Patient, Coverage, Organization/Practitioner) → one 837 interchange."""

        type: Literal["fhir_to_x12_837"] = "fhir_to_x12_837"
        partner: _Partner
        kind: _Kind = "P"
        other_kind: _OtherKind = "reject"
        partners: _PartnersFile = None

    def __call__(self, message: Message) -> Message:
        if message.content_type != "fhir":
            raise MappingError(f"fhir_to_x12_837 takes FHIR content, not {message.content_type!r}")
        claims = claims_of(message, self.partner, self.config.kind, other_kind=self.config.other_kind)
        return message.replace(write_837(claims, self.partner, self.numbers, kind=self.config.kind), "x12")


# ---------------------------------------------------------------------------------------------- 835
def _require_set(raw: bytes, wanted: str) -> None:
    for seg in SegmentReader(raw):
        if seg.id == "ST":
            if seg[1] != wanted:
                raise MappingError(f"expected an {wanted}, this is a transaction set {seg[1]}", location="ST01")
            return
    raise X12ParseError(f"no transaction set (ST) in the file: not an {wanted}", location="ST")


_OnUnbalanced = Annotated[
    Literal["error", "ignore"],
    Field(
        description="error: an 835 that does not balance (BPR02 vs claim payments and PLB, claim charge vs paid plus "
        "adjustments) is rejected with the problems listed — flagged, not posted; ignore: posted anyway.",
    ),
]


class X12835ToCsv:
    class Config(TransformConfig):
        """An 835 remittance → payment-posting CSV, one row per service line, header row first."""

        type: Literal["x12_835_to_csv"] = "x12_835_to_csv"
        layout: str = Field(
            "x12/835_posting_layout.yaml",
            description="CSV layout (columns, delimiter, date format), relative to the mappings folder.",
            examples=["x12/835_posting_layout.yaml"],
        )
        on_unbalanced: _OnUnbalanced = "error"

    def __init__(self, config: Config, ctx: Any) -> None:
        self.config = config
        path = Path(config.layout)
        if not path.is_absolute():
            path = Path(getattr(ctx, "mappings_dir", "mappings")) / path
        self.layout = load_layout(path)  # ConfigError → hub check problem

    def __call__(self, message: Message) -> Message:
        _require_set(message.raw, "835")
        out = x12_835_to_csv(message.raw, self.layout, on_unbalanced=self.config.on_unbalanced)
        return message.replace(out, "csv")


class X12835ToFhir:
    class Config(TransformConfig):
        """An 835 remittance → a FHIR ``collection`` Bundle with one ExplanationOfBenefit per claim."""

        type: Literal["x12_835_to_fhir"] = "x12_835_to_fhir"
        on_unbalanced: _OnUnbalanced = "error"

    def __init__(self, config: Config, ctx: Any) -> None:
        self.config = config

    def __call__(self, message: Message) -> Message:
        _require_set(message.raw, "835")
        issues: list[Issue] = []
        bundle = remit_to_fhir(message.raw, issues=issues)
        if issues and self.config.on_unbalanced == "error":
            first = issues[0]
            raise ValidationError(
                f"the 835 does not balance ({len(issues)} problem(s)); first: {first.message}",
                code="balance",
                location=first.location,
                issues=issues,
            )
        return message.replace(json.dumps(bundle, ensure_ascii=False).encode("utf-8"), "fhir")


# ---------------------------------------------------------------------------------------------- acknowledgements
class X12Ack(_NumberedTransform):
    class Config(TransformConfig):
        """Inbound X12 → its acknowledgement, addressed back to the sender: a 999 (005010X231A1: A accepted, E
        accepted with errors, R rejected, with IK3/IK4 detail from pyx12's 5010 validation), or a TA1 when the
        interchange envelope itself is in error (ISA values, ISA13/IEA02 mismatch, counts).

        Route it to the partner's outbox. Acknowledgements are not acknowledged: keep 999/TA1 files off this
        route (e.g. ``when: {path: GS01, in: [HC, HP, HN]}``); a file that cannot be read at all is rejected
        at ingest and answered by no file.
        """

        type: Literal["x12_999"] = "x12_999"
        partner: _Partner
        partners: _PartnersFile = None
        ta1: Literal["on_error", "never"] = Field(
            "on_error",
            description="on_error: a TA1 instead of the 999 when the envelope is in error; never: always a 999.",
        )

    def __call__(self, message: Message) -> Message:
        raw = message.raw
        if self.config.ta1 == "on_error":
            try:
                checks = check_interchanges(raw)
            except X12ParseError:
                checks = []
            if checks and any(chk.status == "R" for chk in checks):
                return message.replace(make_ta1(raw, self.numbers, self.partner, checks=checks), "x12")
        return message.replace(make_999(raw, self.numbers, self.partner), "x12")


# ---------------------------------------------------------------------------------------------- metadata, split
def meta(doc: Any) -> dict[str, Any]:
    """What the store indexes for an X12 message: control_id (ISA13), message_type (ST01: 837, 835, 999, 277),
    sending_app (GS02), sending_facility (ISA06); ``x12_guide`` (837P, 837I, 835, 999, 277CA …) and
    ``x12_version`` (GS08) as free metadata."""
    out: dict[str, Any] = {}
    isa = gs = st = None
    for seg in doc.segments:
        sid = seg.id
        if sid == "ISA" and isa is None:
            isa = seg
        elif sid == "GS" and gs is None:
            gs = seg
        elif sid == "ST":
            st = seg
            break
    if isa is not None:
        out["control_id"] = isa[13].strip()
        out["sending_facility"] = isa[6].strip()
    if gs is not None:
        out["sending_app"] = gs[2].strip()
        out["x12_version"] = gs[8].strip()
    if st is not None:
        out["message_type"] = st[1].strip()
        version = (st[3] or (gs[8] if gs is not None else "")).strip()
        if version in GUIDES:
            out["x12_guide"] = GUIDES[version]
    return out


def split_transactions(raw: bytes) -> list[bytes]:
    """One interchange per transaction set (``split: x12_transaction``): each ST…SE in a copy of its ISA/GS
    envelope with GE/IEA counts of 1. A file with one transaction comes back as it is. X12ParseError."""
    reader = SegmentReader(raw)
    parts: list[tuple[Segment, Segment, list[Segment]]] = []
    current: list[Segment] | None = None
    for seg in reader:
        if seg.id == "ST":
            assert reader.isa is not None and reader.gs is not None
            current = [seg]
            parts.append((reader.isa, reader.gs, current))
        elif current is not None:
            current.append(seg)
            if seg.id == "SE":
                current = None
    if len(parts) <= 1:
        return [raw]
    out = []
    for isa, gs, body in parts:
        d = isa.delimiters
        nl = d.suffix or ""
        segs = [isa, gs, *body, Segment(["GE", "1", gs[6]], 0, d), Segment(["IEA", "1", isa[13]], 0, d)]
        out.append("".join(s.to_text(d) + nl for s in segs).encode("utf-8", "surrogateescape"))
    return out
