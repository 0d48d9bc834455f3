"""837P (005010X222A1) and 837I (005010X223A2) from the neutral claim model.

``write_837(claims, partner, numbers, kind="P")`` makes one interchange (ISA/GS) for the batch. Claims are
grouped under one 2000A billing-provider level per billing provider; every claim gets its own 2000B
subscriber level (and 2000C patient level when the patient is not the subscriber). A transaction holds at
most 5,000 claims (the TR3's recommendation), so larger batches get several STs in the one group.

Every claim is checked first (:func:`checked_claim`, :func:`hub.transforms.x12.claim_checks.check_claim`): a claim that
cannot be valid raises :class:`~hub.errors.MappingError` naming the 837 location, instead of producing a file a
clearinghouse would reject. The tests run pyx12's 5010 validation over every file written here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import date, datetime
from typing import Literal

from hub.errors import MappingError

from .claim_checks import check_claim
from .model import Address, Claim, Provider, normalise_icd10
from .partners import ControlNumbers, Partner, get_partner
from .writer import (
    Element,
    FunctionalGroup,
    SegmentWriter,
    TransactionBody,
    delimiters_of,
    format_quantity,
    write_interchange,
)

__all__ = ["write_837", "VERSIONS", "MAX_CLAIMS_PER_TRANSACTION", "billing_provider_of", "checked_claim"]

VERSIONS = {"P": "005010X222A1", "I": "005010X223A2"}
MAX_CLAIMS_PER_TRANSACTION = 5000


def _d8(value: date) -> str:
    return value.strftime("%Y%m%d")


def _zip(code: str) -> str:
    return code.replace("-", "").strip()


def billing_provider_of(claim: Claim, partner: Partner) -> Provider:
    """The claim's billing provider, else the partner's defaults; ``MappingError`` when neither exists."""
    if claim.billing_provider is not None:
        return claim.billing_provider
    bp = partner.billing_provider
    if bp is None:
        raise MappingError(
            f"claim {claim.patient_control_number} has no billing provider and partner {partner.name!r} "
            "has no defaults",
            location="2010AA/NM1",
        )
    a = bp.address
    return Provider(
        name=bp.name,
        npi=bp.npi,
        tax_id=bp.tax_id,
        tax_id_type=bp.tax_id_type,
        address=Address(a.line1, a.city, a.state, a.postal_code, a.line2),
        taxonomy=bp.taxonomy,
        entity_type=bp.entity_type,
        first_name=bp.first_name,
    )


def checked_claim(claim: Claim, partner: Partner, kind: Literal["P", "I"]) -> tuple[Claim, Provider]:
    """The claim as the 837 bills it (payer id and filing code from the partner's ``payers`` when the claim has
    no payer id) and its billing provider, after :func:`~hub.transforms.x12.claim_checks.check_claim`: MappingError,
    naming the claim, for a claim that cannot be billed."""
    bp = billing_provider_of(claim, partner)
    settings = partner.payer(claim.payer.name) if claim.payer.payer_id == "" else None
    if settings is not None:
        payer = replace(claim.payer, payer_id=settings.payer_id, claim_filing_code=settings.claim_filing_code)
        claim = replace(claim, payer=payer)
    try:
        check_claim(claim, kind, bp)
    except MappingError as exc:
        pcn = claim.patient_control_number
        if pcn and pcn not in str(exc):
            raise MappingError(f"claim {pcn}: {exc}", location=exc.location, code=exc.code) from None
        raise
    return claim, bp


class _Body:
    """Writes the segments of one 837 transaction (between ST and SE)."""

    def __init__(self, w: SegmentWriter, kind: str) -> None:
        self.w = w
        self.kind = kind
        self.hl = 0

    def seg(self, sid: str, *elements: Element, loop: str = "") -> None:
        self.w.segment(sid, *elements, loop=loop)

    def address(self, addr: Address, loop: str) -> None:
        self.seg("N3", addr.line1, addr.line2 or None, loop=loop)
        self.seg("N4", addr.city, addr.state, _zip(addr.postal_code), loop=loop)

    def provider_name(self, qual: str, p: Provider, loop: str) -> None:
        if p.entity_type == "1":
            self.seg("NM1", qual, "1", p.name, p.first_name or None, None, None, None, "XX", p.npi, loop=loop)
        else:
            self.seg("NM1", qual, "2", p.name, None, None, None, None, "XX", p.npi, loop=loop)

    def header(self, partner: Partner, batch_id: str, now: datetime) -> None:
        if partner.submitter is None or partner.receiver is None:
            raise MappingError(f"partner {partner.name!r} needs 'submitter' and 'receiver' settings to send 837s")
        s, r = partner.submitter, partner.receiver
        self.seg("BHT", "0019", "00", batch_id, now.strftime("%Y%m%d"), now.strftime("%H%M"), "CH")
        self.seg("NM1", "41", s.entity_type, s.name, None, None, None, None, "46", s.id, loop="1000A")
        contact = ["PER", "IC", s.contact_name or s.name]
        if s.phone:
            contact += ["TE", s.phone]
        if s.email:
            contact += ["EM", s.email]
        if len(contact) == 3:
            raise MappingError(
                f"partner {partner.name!r} submitter needs a phone or email (1000A PER)", location="1000A/PER"
            )
        self.seg(*contact, loop="1000A")
        self.seg("NM1", "40", "2", r.name, None, None, None, None, "46", r.id, loop="1000B")

    def billing(self, p: Provider) -> int:
        self.hl += 1
        hl = self.hl
        self.seg("HL", str(hl), None, "20", "1", loop="2000A")
        if p.taxonomy:
            self.seg("PRV", "BI", "PXC", p.taxonomy, loop="2000A")
        self.provider_name("85", p, "2010AA")
        assert p.address is not None
        self.address(p.address, "2010AA")
        self.seg("REF", p.tax_id_type, p.tax_id.replace("-", ""), loop="2010AA")
        return hl

    def claim(self, c: Claim, parent_hl: int) -> None:
        k = self.kind
        sub = c.subscriber
        self.hl += 1
        sub_hl = self.hl
        self.seg("HL", str(sub_hl), str(parent_hl), "22", "1" if c.patient else "0", loop="2000B")
        self.seg(
            "SBR",
            sub.payer_responsibility,
            None if c.patient else "18",
            sub.group_number or None,
            None,
            None,
            None,
            None,
            None,
            c.payer.claim_filing_code,
            loop="2000B",
        )
        self.seg(
            "NM1",
            "IL",
            "1",
            sub.last_name,
            sub.first_name or None,
            sub.middle_name or None,
            None,
            None,
            "MI",
            sub.member_id,
            loop="2010BA",
        )
        if sub.address is not None:
            self.address(sub.address, "2010BA")
        if sub.birth_date is not None:
            self.seg("DMG", "D8", _d8(sub.birth_date), sub.gender, loop="2010BA")
        self.seg("NM1", "PR", "2", c.payer.name, None, None, None, None, "PI", c.payer.payer_id, loop="2010BB")
        if c.patient is not None:
            pat = c.patient
            self.hl += 1
            self.seg("HL", str(self.hl), str(sub_hl), "23", "0", loop="2000C")
            self.seg("PAT", pat.relationship, loop="2000C")
            self.seg("NM1", "QC", "1", pat.last_name, pat.first_name or None, pat.middle_name or None, loop="2010CA")
            self.address(pat.address, "2010CA")
            self.seg("DMG", "D8", _d8(pat.birth_date), pat.gender, loop="2010CA")
        # 2300
        if k == "P":
            self.seg(
                "CLM",
                c.patient_control_number,
                c.charge,
                None,
                None,
                [c.place_of_service, "B", c.frequency],
                c.provider_signature,
                c.assignment,
                c.benefits_assignment,
                c.release_of_information,
                loop="2300",
            )
            if c.onset_date is not None:
                self.seg("DTP", "431", "D8", _d8(c.onset_date), loop="2300")
        else:
            self.seg(
                "CLM",
                c.patient_control_number,
                c.charge,
                None,
                None,
                [c.facility_code, "A", c.frequency],
                None,
                c.assignment,
                c.benefits_assignment,
                c.release_of_information,
                loop="2300",
            )
            start = c.statement_from
            end = c.statement_to or start
            assert start is not None and end is not None
            self.seg("DTP", "434", "RD8", f"{_d8(start)}-{_d8(end)}", loop="2300")
            if c.admission_date is not None:
                self.seg("DTP", "435", "D8", _d8(c.admission_date), loop="2300")
            self.seg("CL1", c.admission_type or None, c.admission_source or None, c.patient_status, loop="2300")
        if c.prior_authorization:
            self.seg("REF", "G1", c.prior_authorization, loop="2300")
        if c.frequency in ("7", "8"):
            self.seg("REF", "F8", c.original_claim_reference, loop="2300")
        if c.note:
            self.seg("NTE", "ADD", c.note[:80], loop="2300")
        codes = [normalise_icd10(d) for d in c.diagnoses]
        if k == "P":
            self.seg("HI", ["ABK", codes[0]], *[["ABF", x] for x in codes[1:]], loop="2300")
        else:
            self.seg("HI", ["ABK", codes[0]], loop="2300")
            others = codes[1:]
            for i in range(0, len(others), 12):
                self.seg("HI", *[["ABF", x] for x in others[i : i + 12]], loop="2300")
        if k == "P":
            if c.referring_provider is not None:
                self._person("DN", c.referring_provider, "2310A")
            if c.rendering_provider is not None:
                self._person("82", c.rendering_provider, "2310B")
                if c.rendering_provider.taxonomy:
                    self.seg("PRV", "PE", "PXC", c.rendering_provider.taxonomy, loop="2310B")
        else:
            assert c.attending_provider is not None
            self._person("71", c.attending_provider, "2310A")
            if c.attending_provider.taxonomy:
                self.seg("PRV", "AT", "PXC", c.attending_provider.taxonomy, loop="2310A")
        # 2400
        for n, line in enumerate(c.service_lines, start=1):
            self.seg("LX", str(n), loop="2400")
            proc = (
                [line.procedure_qualifier or "HC", line.procedure_code, *line.modifiers]
                if line.procedure_code
                else None
            )
            if k == "P":
                self.seg(
                    "SV1",
                    proc,
                    line.charge,
                    line.unit_code,
                    format_quantity(line.units),
                    line.place_of_service
                    if line.place_of_service and line.place_of_service != c.place_of_service
                    else None,
                    None,
                    [str(p) for p in line.diagnosis_pointers],
                    loop="2400",
                )
            else:
                self.seg(
                    "SV2",
                    line.revenue_code,
                    proc,
                    line.charge,
                    line.unit_code,
                    format_quantity(line.units),
                    loop="2400",
                )
            if line.service_date_end and line.service_date_end != line.service_date:
                self.seg("DTP", "472", "RD8", f"{_d8(line.service_date)}-{_d8(line.service_date_end)}", loop="2400")
            else:
                self.seg("DTP", "472", "D8", _d8(line.service_date), loop="2400")
            if line.line_control_number:
                self.seg("REF", "6R", line.line_control_number, loop="2400")

    def _person(self, qual: str, p: Provider, loop: str) -> None:
        if p.entity_type == "1":
            self.seg("NM1", qual, "1", p.name, p.first_name or None, None, None, None, "XX", p.npi, loop=loop)
        else:
            self.seg("NM1", qual, "2", p.name, None, None, None, None, "XX", p.npi, loop=loop)


def write_837(
    claims: Iterable[Claim],
    partner: Partner | str,
    numbers: ControlNumbers,
    *,
    kind: Literal["P", "I"] = "P",
    now: datetime | None = None,
    batch_id: str | None = None,
) -> bytes:
    """One interchange with an 837P (``kind="P"``) or 837I (``kind="I"``) for the claims.

    ``partner`` is a :class:`Partner` or a name in ``mappings/x12/partners.yaml``; ``numbers`` hands out
    ISA13/GS06/ST02. ``MappingError`` (with the 837 location) for a claim that cannot be billed.
    """
    if kind not in VERSIONS:
        raise MappingError(f"837 kind must be 'P' or 'I', not {kind!r}")
    p = get_partner(partner)
    now = now or datetime.now()
    claim_list = list(claims)
    if not claim_list:
        raise MappingError("no claims to write: an 837 needs at least one claim")
    prepared = [checked_claim(c, p, kind) for c in claim_list]
    d = delimiters_of(p)
    group = FunctionalGroup("HC", VERSIONS[kind])
    for start in range(0, len(prepared), MAX_CLAIMS_PER_TRANSACTION):
        chunk = prepared[start : start + MAX_CLAIMS_PER_TRANSACTION]
        w = SegmentWriter(d)
        body = _Body(w, kind)
        body.header(p, batch_id or f"{now:%Y%m%d%H%M%S}{start // MAX_CLAIMS_PER_TRANSACTION + 1:03d}"[:30], now)
        # group claims by billing provider, keeping first-seen order
        by_provider: dict[tuple[str, str], list[Claim]] = {}
        providers: dict[tuple[str, str], Provider] = {}
        for c, bp in chunk:
            key = (bp.npi, bp.tax_id)
            by_provider.setdefault(key, []).append(c)
            providers.setdefault(key, bp)
        for key, cs in by_provider.items():
            hl = body.billing(providers[key])
            for c in cs:
                body.claim(c, hl)
        group.transactions.append(TransactionBody("837", w.parts, VERSIONS[kind]))
    return write_interchange(p, numbers, [group], now=now)
