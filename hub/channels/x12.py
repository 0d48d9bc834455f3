"""X12 at run time: control numbers from the store, the ``x12_837`` assembler (claims out, one interchange per
batch) and the ``claim_status`` destination (999/277CA in → claim status). The last two keep their records in
the store (:mod:`hub.store.claim_status`).

Control numbers (ISA13, GS06, ST02) are the store's durable sequences ``x12:<partner>:<isa|gs|st>``
(:class:`StoreControlNumbers`): unique and increasing per partner and kind across restarts and nodes, wrapped
into 1…999,999,999. They are taken only for an interchange that is on its way out, never inside a transform:

* an X12 transform (``x12_999``, ``v2_to_x12_837``, ``fhir_to_x12_837``) writes provisional numbers and names
  its partner (``numbered_for``); :meth:`hub.channels.channel.Channel.receive` calls
  :func:`take_control_numbers` for the messages it is about to accept, which writes the store's numbers into
  their interchanges. A message the pipeline rejects takes none; ``hub test`` shows the provisional ones.
* the ``x12_837`` assembler writes the batch with throw-away numbers, leaves out what cannot be billed, and
  takes the store's numbers for the one interchange it hands to the destination.

Claims out::

    routes:
      - name: claims
        transforms: [{type: x12_claim_check, partner: clearinghouse, kind: P}]   # unbillable → rejected at once
        to: [clearinghouse]
    destinations:
      clearinghouse:
        type: file                                  # or sftp
        path: var/outbox/clearinghouse/837P_{now:%Y%m%d_%H%M%S}_{delivery_id}.x12
        batch: {schedule: 15m, max: 500, assemble: {type: x12_837, partner: clearinghouse, kind: P}}

At each fire time the delivery worker hands the queued charge messages to the assembler (in a thread): it maps
each to its claim(s), leaves out (→ dead, with the reason) a message whose claim cannot be billed, writes ONE
interchange (ISA13/GS06/ST02 from the store's per-partner sequences), checks it with pyx12 (``validate: true``;
a claim the validator refuses is left out the same way) and records each claim as ``submitted`` with its
control numbers. The destination sends the interchange as one file.

Acknowledgements in: route inbound 999 and 277CA files to ``{type: claim_status, partner: clearinghouse}``; the
delivery's response says which claims changed (``hub show``), and ``hub show`` of the charge message lists its
claim's status history; ``hub messages --claim-status rejected`` finds the charges to fix.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Literal

from pydantic import Field

from hub.channels.base import Context, Processed
from hub.errors import InputError, PermanentDelivery, RetryableDelivery, X12ParseError
from hub.message import Message
from hub.spec import DestinationConfig, TransformConfig
from hub.store import Store
from hub.transforms.assemble import Assembled
from hub.transforms.x12 import (
    Claim,
    ControlNumbers,
    InMemoryControlNumbers,
    iter_segments,
    number_interchange,
    read_277ca,
    read_999,
    validate,
    write_837,
)
from hub.transforms.x12.components import check_claims, claims_of, partner_for, quick_check

__all__ = [
    "StoreControlNumbers",
    "take_control_numbers",
    "X12_837Assembler",
    "ClaimStatusDestination",
    "interchange_claims",
]

log = logging.getLogger("hub.x12")

MAX_CONTROL_NUMBER = 999_999_999


class StoreControlNumbers:
    """:class:`~hub.transforms.x12.ControlNumbers` backed by the store's durable sequences.

    ``next(partner, kind)`` is ``store.next_sequence("x12:<partner>:<kind>")``, wrapped into 1…999,999,999
    (ISA13 is nine digits). Unique and increasing per partner and kind, across restarts and nodes sharing a store.
    Each call is one small write transaction: call it from a thread (assemblers run in one) or accept the wait.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def next(self, partner: str, kind: str) -> int:
        if kind not in ("isa", "gs", "st"):
            raise ValueError(f"control number kind must be isa, gs or st, not {kind!r}")
        n = self.store.next_sequence(f"x12:{partner}:{kind}")
        return (n - 1) % MAX_CONTROL_NUMBER + 1


def take_control_numbers(processed: list[Processed], numbered: dict[str, str], store: Store) -> None:
    """Write the store's control numbers into the interchanges of the accepted messages of ``processed``.

    ``numbered`` maps a route to the partner whose sequences its output takes (the ``numbered_for`` of its X12
    transform). Each accepted message's output of such a route is numbered once — destinations of one route get
    the same interchange, as they get the same content — and only X12 content is touched. Called by
    :meth:`~hub.channels.channel.Channel.receive` just before the accept, in a worker thread.
    """
    numbers = StoreControlNumbers(store)
    for p in processed:
        if p.status != "accepted":
            continue
        done: dict[str, bytes] = {}  # route → its numbered output
        for d in p.deliveries:
            route = d.route or ""
            partner = numbered.get(route)
            if partner is None or d.content is None or d.content_type != "x12":
                continue
            if route not in done:
                done[route] = number_interchange(d.content, partner, numbers)
            d.content = done[route]


def interchange_claims(raw: bytes) -> list[dict[str, str]]:
    """The claims of an 837 interchange in file order: CLM01, CLM02 and the ISA13/GS06/ST02/BHT03 around each."""
    out = []
    isa13 = gs06 = st02 = bht03 = ""
    for seg in iter_segments(raw):
        sid = seg.id
        if sid == "ISA":
            isa13 = seg[13]
        elif sid == "GS":
            gs06 = seg[6]
        elif sid == "ST":
            st02 = seg[2]
        elif sid == "BHT":
            bht03 = seg[3]
        elif sid == "CLM":
            out.append({"pcn": seg[1], "charge": seg[2], "isa13": isa13, "gs06": gs06, "st02": st02, "bht03": bht03})
    return out


def _why(exc: InputError) -> str:
    return f"left out of the 837 batch: {exc}" + (f" (at {exc.location})" if exc.location else "")


class X12_837Assembler:
    class Config(TransformConfig):
        """The queued charges of a batch → ONE 837P/837I interchange (one ISA per batch) for a trading partner.

        Messages are DFT^P03 (HL7 v2) or FHIR Claim Bundles, as checked by ``x12_claim_check`` at ingest. A
        message whose claim cannot be billed (any more) is left out of the batch and its delivery goes dead with
        the reason. Each claim sent is recorded with its control numbers for the 999/277CA to update.
        """

        type: Literal["x12_837"] = "x12_837"
        partner: str = Field(
            description="The trading partner (a key of mappings/x12/partners.yaml).", examples=["clearinghouse"]
        )
        kind: Literal["P", "I"] = Field("P", description="P: 837P (005010X222A1); I: 837I (005010X223A2).")
        place_of_service: str = Field("11", description="DFT: place of service (CLM05-1) of 837P claims.")
        other_kind: Literal["reject", "skip"] = Field(
            "reject",
            description="FHIR: Claims of the other kind in a Bundle — skip them (another destination sends them) or "
            "leave the message out.",
        )
        partners: str | None = Field(
            None, description="Partner settings file, relative to the mappings folder (default x12/partners.yaml)."
        )
        validate_: bool = Field(
            True,
            alias="validate",
            description="Run pyx12's 5010 validation on the interchange before it is sent; a claim it refuses is left "
            "out (dead, with the errors). Costs about 0.3 s plus a few ms per claim, in the worker's thread.",
        )

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx
        self.partner = partner_for(config.partner, config.partners, ctx)
        self.numbers = InMemoryControlNumbers()  # the batch's numbers without a store (hub test, a dry run)

    def _validation_errors(self, raw: bytes) -> list[str]:
        return [str(i) for i in validate(raw) if i.severity == "error"]

    def __call__(self, messages: list[Message]) -> Assembled:
        c = self.config
        skipped: dict[int, str] = {}
        good: list[tuple[int, list[Claim]]] = []
        for i, m in enumerate(messages):
            try:
                claims = claims_of(
                    m, self.partner, c.kind, place_of_service=c.place_of_service, other_kind=c.other_kind
                )
                quick_check(claims, self.partner, c.kind)
            except InputError as exc:
                skipped[i] = _why(exc)
                continue
            good.append((i, claims))
        now = datetime.now()
        if good and c.validate_:
            trial = self._write(good, skipped, InMemoryControlNumbers(), now)
            if trial is not None and self._validation_errors(trial):
                # find the culprits one message at a time; the rest still go
                kept = []
                for i, cs in good:
                    errors = self._validation_errors(
                        write_837(cs, self.partner, InMemoryControlNumbers(), kind=c.kind, now=now)
                    )
                    if errors:
                        skipped[i] = "left out of the 837 batch: fails 5010 validation: " + "; ".join(errors[:5])
                    else:
                        kept.append((i, cs))
                good[:] = kept
        content = self._write(good, skipped, self.numbers, now) if good else None
        if content is None:
            return Assembled(b"", "x12", skipped)
        if self.ctx.store is not None:  # the interchange goes out: its numbers from the store's sequences
            content = number_interchange(content, self.partner.name, StoreControlNumbers(self.ctx.store))
        self._record(messages, good, content)
        log.info(
            "837%s batch for %s: %d claim(s) from %d message(s), %d left out",
            c.kind,
            self.partner.name,
            sum(len(cs) for _, cs in good),
            len(good),
            len(skipped),
        )
        return Assembled(content, "x12", skipped)

    def _write(
        self, good: list[tuple[int, list[Claim]]], skipped: dict[int, str], numbers: ControlNumbers, now: datetime
    ) -> bytes | None:
        """The interchange of ``good``; a message the writer refuses (beyond the quick check) moves to ``skipped``."""
        kind = self.config.kind
        try:
            return write_837([cl for _, cs in good for cl in cs], self.partner, numbers, kind=kind, now=now)
        except InputError:
            kept = []
            for i, cs in good:
                try:
                    check_claims(cs, self.partner, kind)
                except InputError as exc:
                    skipped[i] = _why(exc)
                else:
                    kept.append((i, cs))
            good[:] = kept
            if not good:
                return None
            return write_837([cl for _, cs in good for cl in cs], self.partner, numbers, kind=kind, now=now)

    def _record(self, messages: list[Message], good: list[tuple[int, list[Claim]]], content: bytes) -> None:
        store = self.ctx.store
        if store is None:  # hub test / a dry run: nothing to record
            return
        from hub.store.claim_status import ClaimStore, Submission

        # match the interchange's CLM segments (grouped by billing provider) back to their messages
        pending: dict[str, list[int]] = {}
        for i, cs in good:
            for cl in cs:
                pending.setdefault(cl.patient_control_number, []).append(i)
        subs = []
        for clm in interchange_claims(content):
            waiting = pending.get(clm["pcn"])
            if not waiting:
                continue
            i = waiting.pop(0)
            m = messages[i]
            if m.id is None:
                continue
            subs.append(
                Submission(
                    message_id=m.id,
                    channel=m.channel,
                    destination=m.meta.get("destination"),
                    partner=self.partner.name,
                    kind=self.config.kind,
                    patient_control_number=clm["pcn"],
                    isa13=clm["isa13"],
                    gs06=clm["gs06"],
                    st02=clm["st02"],
                    charge=clm["charge"],
                    batch_reference=clm["bht03"],
                )
            )
        ClaimStore(store).record_submissions(subs)


class ClaimStatusDestination:
    class Config(DestinationConfig):
        """Inbound 999 and 277CA from the clearinghouse → the status of the claims the hub submitted.

        A 999 updates the claims of the 837 transaction sets it acknowledges (by GS06/ST02): IK5 A/E →
        ``acknowledged``, R → ``rejected`` with the IK3/IK4 errors. A 277CA updates each claim it names (by
        patient control number, CLM01): ``accepted``, ``pending`` or ``rejected`` with the STC status text.
        The delivery's response lists what changed. Other content is refused (dead).
        """

        type: Literal["claim_status"] = "claim_status"
        partner: str | None = Field(
            None,
            description="Only claims submitted to this partner are updated (default: any partner).",
            examples=["clearinghouse"],
        )

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx

    async def send(self, message: Message) -> str | None:
        store = self.ctx.store
        if store is None:
            raise RetryableDelivery("claim_status needs the hub's store")
        return await asyncio.to_thread(self._apply, store, message)

    def _apply(self, store: Store, message: Message) -> str:
        from hub.store.claim_status import ClaimStore

        raw = message.raw
        try:
            set_id = next((seg[1] for seg in iter_segments(raw) if seg.id == "ST"), "")
            if set_id in ("999", "997"):
                records = read_999(raw)
                changes = ClaimStore(store).apply_999(records, partner=self.config.partner, ack_message_id=message.id)
                unknown: list[str] = []
                what = "999"
            elif set_id == "277":
                records = read_277ca(raw)
                changes, unknown = ClaimStore(store).apply_277ca(
                    records, partner=self.config.partner, ack_message_id=message.id
                )
                what = "277CA"
            else:
                raise PermanentDelivery(
                    f"claim_status takes 999 and 277CA files, not transaction set {set_id or '(none)'}"
                )
        except X12ParseError as exc:
            raise PermanentDelivery(f"cannot read the acknowledgement: {exc}") from exc
        counts: dict[str, int] = {}
        for ch in changes:
            counts[ch.status] = counts.get(ch.status, 0) + 1
        log.info("%s message %s updated %d claim(s)", what, message.id, len(changes))
        if not changes and not unknown:
            return f"{what}: no claim of the hub's matched"
        parts = [f"{n} {st}" for st, n in sorted(counts.items())]
        lines = [f"{what}: {', '.join(parts) or 'no claim changed'}"]
        lines += [
            f"claim {ch.patient_control_number} (message {ch.message_id}): {ch.previous} → {ch.status}"
            for ch in changes[:50]
        ]
        if unknown:
            lines.append(f"not submitted by the hub: {', '.join(unknown[:20])}")
        return "\n".join(lines)

    async def close(self) -> None:
        return None
