"""A channel at run time: split → parse → filters → routes and transforms → store.accept() → outcome.

:meth:`Channel.process` is the pure part (no I/O): it turns one message into what would be stored — status,
reason, and one :class:`~hub.store.NewDelivery` per routed destination. ``hub test`` runs exactly this.
:meth:`Channel.receive` adds the store: everything one input produced is accepted in one transaction and only
then does the source get its :class:`~hub.channels.base.Receipt` to answer the peer with. Just before the accept,
the X12 interchanges of accepted messages take their control numbers from the store
(:meth:`Channel.take_numbers`; ``process`` leaves the transforms' provisional ones).

Where the pipeline runs: every source and delivery worker of the hub shares one event loop, so a step that takes
milliseconds there delays every MLLP listener's ACKs (measured: a 2,000-claim 835 through ``x12_835_to_csv`` and
``x12_999`` held every listener for 2.1 s). A channel runs its pipeline on the loop only when each step is known
to take microseconds — transforms marked ``light`` (``set``, ``copy``, ``delete``, ``map``), validation ``none`` or
``basic`` — and the input is at most :data:`INLINE_MAX_BYTES`; otherwise on a worker thread (``ctx.executor``).
Handing a message to a thread costs ~50 µs, which is why the light path stays on the loop.

Also here: the ``channel`` destination, which feeds another channel (its own transport, DESIGN.md §5).
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from hub import metrics
from hub.channels.base import Context, Processed, Receipt, Result
from hub.errors import (
    Hl7ParseError,
    InputError,
    PermanentDelivery,
    RetryableDelivery,
    StoreError,
    ValidationError,
)
from hub.message import Message, Outcome, sniff_content_type
from hub.spec import ChannelSpec, DestinationConfig, SourceConfig
from hub.store import NewDelivery, NewMessage, Store
from hub.transforms.document import document_of, extract_meta, validate_document

__all__ = ["Channel", "Route", "Processed", "ChannelDestination", "split_input"]

log = logging.getLogger("hub.channel")

INLINE_MAX_BYTES = 64 * 1024  # a larger input is split and parsed on a worker thread, whatever the channel does


@dataclass
class Route:
    name: str
    when: Callable[[Message], bool] | None
    transforms: list[Callable[[Message], Message]]
    to: list[str]


def split_input(raw: bytes, content_type: str, split: str) -> list[bytes]:
    """One input → the messages it holds (DESIGN.md §5 ``split:``). Raises ParseError for a broken batch."""
    if split == "none" or content_type not in ("hl7v2", "x12", "csv"):
        return [raw]
    if content_type == "hl7v2" and split in ("auto", "hl7_batch"):
        # Most inputs are one message (every MLLP frame): skip the batch reader unless a second MSH or a
        # batch header could be there.
        head = raw.lstrip(b"\xef\xbb\xbf \t\r\n")[:3]
        if head == b"MSH" and b"\rMSH" not in raw and b"\nMSH" not in raw:
            return [raw]
        from hub.transforms.hl7v2 import split_batch

        return split_batch(raw)
    if content_type == "x12" and split == "x12_transaction":
        from hub.transforms.x12 import split_transactions

        return split_transactions(raw)
    if content_type == "csv" and split == "csv_row":
        from hub.transforms.csv import split_rows

        return split_rows(raw)
    return [raw]


class Channel:
    def __init__(
        self,
        spec: ChannelSpec,
        ctx: Context,
        *,
        source_config: SourceConfig,
        filters: Callable[[Message], bool] | None,
        routes: list[Route],
        destinations: dict[str, Any],
        order_by: dict[str, str | None],
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.ctx = ctx
        self.source_config = source_config
        self.filters = filters
        self.routes = routes
        self.destinations = destinations  # name → DestinationConfig
        self.order_by = order_by
        self.drop_content = spec.storage.content == "raw"
        # The pipeline may run on the event loop (see the module's docstring); a transform says so with `light`.
        self.inline = source_config.validate_ != "strict" and all(
            getattr(t, "light", False) for r in routes for t in r.transforms
        )
        self.on_accepted: Callable[[str, list[NewDelivery]], None] | None = None  # engine wakes workers
        # route → X12 partner, for routes whose interchange takes its control numbers from the store on accept
        self.numbered: dict[str, str] = {
            r.name: p for r in routes for t in r.transforms if (p := getattr(t, "numbered_for", None))
        }

    # ------------------------------------------------------------------ pure pipeline
    def content_type_of(self, raw: bytes) -> str:
        return self.source_config.format or sniff_content_type(raw)

    def split(self, raw: bytes) -> list[bytes]:
        return split_input(raw, self.content_type_of(raw), self.source_config.split)

    def make_message(
        self, raw: bytes, *, meta: dict[str, Any] | None = None, content_type: str | None = None
    ) -> Message:
        meta = dict(meta or {})
        if self.source_config.encoding:
            meta.setdefault("encoding", self.source_config.encoding)  # for content that does not name its charset
        return Message(raw=raw, content_type=content_type or self.content_type_of(raw), meta=meta, channel=self.name)

    def process(self, message: Message) -> Processed:
        """Parse, filter, route and transform one message. Never raises for bad input: that is ``rejected``."""
        try:
            if message.content_type != "raw":
                doc = document_of(message)
                message.meta.update(extract_meta(message.content_type, doc, self.spec.meta))
                if self.source_config.validate_ != "none":
                    errors = [
                        i
                        for i in validate_document(message.content_type, doc, self.source_config.validate_)
                        if i.severity == "error"
                    ]
                    if errors:
                        first = errors[0]
                        raise ValidationError(
                            "; ".join(str(i) for i in errors[:5]),
                            code=first.code,
                            location=first.location,
                            issues=errors,
                        )
        except InputError as exc:
            return self._rejected(message, exc)
        try:
            if self.filters is not None and not self.filters(message):
                return Processed(message, "filtered", reason="no filter matched")
            out = Processed(message, "accepted")
            for route in self.routes:
                if route.when is not None and not route.when(message):
                    continue
                result = message
                if route.transforms:
                    result = message.replace(message.raw)  # the route's own copy: transforms change it freely
                    for t in route.transforms:
                        result = t(result)
                    for w in (
                        result.meta.get("warnings") or ()
                    ):  # values a transform left out: kept with the message (hub show)
                        if w not in message.meta.setdefault("warnings", []):
                            message.meta["warnings"].append(w)
                content = (
                    None if result.raw == message.raw and result.content_type == message.content_type else result.raw
                )
                for dest in route.to:
                    out.deliveries.append(
                        NewDelivery(
                            destination=dest,
                            route=route.name,
                            content=content,
                            content_type=result.content_type,
                            order_key=self._order_key(dest, message),
                        )
                    )
                    out.outputs.setdefault(dest, []).append(result)
            if not out.deliveries:
                out.status, out.reason = "filtered", "no route matched"
            return out
        except InputError as exc:
            return self._rejected(message, exc)
        except Exception as exc:
            # No exception text in the log: it may quote the content. The full reason is stored with the message.
            tb = traceback.extract_tb(exc.__traceback__)
            where = f"{tb[-1].filename}:{tb[-1].lineno}" if tb else "?"
            log.error(
                "channel %s: a transform failed unexpectedly (%s at %s); message kept as error",
                self.name,
                type(exc).__name__,
                where,
            )
            return Processed(message, "error", reason=f"{type(exc).__name__}: {exc}", code="207")

    def _rejected(self, message: Message, exc: InputError) -> Processed:
        if isinstance(exc, Hl7ParseError) and exc.control_id and "control_id" not in message.meta:
            message.meta["control_id"] = exc.control_id
        return Processed(message, "rejected", reason=str(exc), code=exc.code or None, location=exc.location or None)

    def _order_key(self, dest: str, message: Message) -> str | None:
        path = self.order_by.get(dest)
        if not path:
            return None
        try:
            return (document_of(message).get(path) or "")[:200]
        except InputError:
            return ""

    def process_input(
        self, raw: bytes, meta: dict[str, Any] | None = None, content_type: str | None = None
    ) -> list[Processed]:
        """Split one input and process each message it holds (a broken batch is one rejected message).
        ``content_type``: what the source was told the input is (an HTTP Content-Type), instead of the channel's
        ``format`` or sniffing."""
        try:
            ct = content_type or self.content_type_of(raw)
            parts = split_input(raw, ct, self.source_config.split)
        except InputError as exc:
            return [self._rejected(self.make_message(raw, meta=meta, content_type=content_type), exc)]
        return [self.process(self.make_message(p, meta=meta, content_type=content_type)) for p in parts]

    # ------------------------------------------------------------------ with the store
    def take_numbers(self, processed: list[Processed], store: Store) -> None:
        """Just before ``processed`` is accepted: its X12 interchanges take their control numbers from the store
        (:func:`hub.channels.x12.take_control_numbers`). Blocking: call it from a thread."""
        if self.numbered and any(p.status == "accepted" for p in processed):
            from hub.channels.x12 import take_control_numbers

            take_control_numbers(processed, self.numbered, store)

    def reprocess(
        self, store: Store, message_id: int, raw: bytes, content_type: str, meta: dict[str, Any] | None
    ) -> tuple[Processed, list[int]]:
        """Run a stored message through the channel again (after its mapping was fixed) and record the new outcome in
        its place, with X12 control numbers taken as :meth:`receive` takes them — what ``hub replay`` and the API do
        for a rejected, error or filtered message. Returns the result and the ids of the deliveries queued.
        Blocking: call it from a thread."""
        p = self.process(Message(raw=raw, content_type=content_type, channel=self.name, meta=dict(meta or {})))
        self.take_numbers([p], store)
        item = NewMessage(
            self.name,
            raw,
            content_type,
            status=p.status,
            meta=p.message.meta,
            error=p.reason if p.status in ("rejected", "error") else None,
            error_code=p.code,
            deliveries=p.deliveries if p.status == "accepted" else [],
        )
        return p, store.reprocess(message_id, item)

    async def receive(
        self,
        raw: bytes,
        *,
        source_ref: str | None = None,
        dedup_key: str | None = None,
        meta: dict[str, Any] | None = None,
        content_type: str | None = None,
        cursor: tuple[str, str] | None = None,
    ) -> Receipt:
        """Process one input and accept everything it produced in one transaction; then return the receipt.

        ``dedup_key`` marks the input as taken (a file name+size+mtime, an SFTP object, MSH-10 …): an input whose
        key was already accepted is answered as before without being stored twice. ``cursor`` (name, value) is a
        poller's place, set in the store in the same transaction (the ``database`` source's cursor column).
        """
        store = self.ctx.store
        assert store is not None, "receive() needs a store; use process() for dry runs"
        received_at = time.time()
        if self.inline and len(raw) <= INLINE_MAX_BYTES:
            processed = self.process_input(raw, meta, content_type)
        else:
            processed = await asyncio.get_running_loop().run_in_executor(
                self.ctx.executor, self.process_input, raw, meta, content_type
            )
        if self.numbered:
            await asyncio.get_running_loop().run_in_executor(self.ctx.executor, self.take_numbers, processed, store)
        items = []
        for i, p in enumerate(processed):
            key = None
            if dedup_key:
                key = dedup_key if len(processed) == 1 else f"{dedup_key}#{i + 1}"
            items.append(
                NewMessage(
                    channel=self.name,
                    raw=p.message.raw,
                    content_type=p.message.content_type,
                    status=p.status,
                    received_at=received_at,
                    meta=p.message.meta,
                    source_ref=source_ref,
                    dedup_key=key,
                    error=p.reason if p.status in ("rejected", "error") else None,
                    error_code=p.code,
                    deliveries=p.deliveries if p.status == "accepted" else [],
                )
            )
        try:
            accepted = await store.accept_async(items, cursor=cursor)
        except StoreError as exc:
            log.error("channel %s: store unavailable, input not accepted: %s", self.name, exc)
            metrics.count_store_error("accept")
            metrics.count_received(self.name, ["error"] * len(processed), time.time() - received_at)
            return Receipt([Result(Outcome.ERROR, reason=str(exc), code="207", message=p.message) for p in processed])
        results = []
        for p, a, item in zip(processed, accepted, items, strict=False):
            outcome = Outcome(p.status)
            results.append(
                Result(
                    outcome,
                    message_id=a.message_id,
                    reason=p.reason,
                    code=p.code,
                    location=p.location,
                    message=p.message,
                    duplicate=a.duplicate,
                    delivery_ids=a.delivery_ids,
                )
            )
            if a.delivery_ids and self.on_accepted is not None:
                self.on_accepted(self.name, item.deliveries)
        metrics.count_received(self.name, [p.status for p in processed], time.time() - received_at)
        return Receipt(results)


# ---------------------------------------------------------------------------------------------- `channel` destination
class ChannelDestination:
    class Config(DestinationConfig):
        """Feed another channel of this hub: ``{type: channel, channel: lab_results}``."""

        type: Literal["channel"] = "channel"
        channel: str = Field(description="Name of the channel that receives the messages.")

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx

    async def send(self, message: Message) -> str | None:
        engine = self.ctx.engine
        receive = engine.channel_input(self.config.channel) if engine is not None else None
        if receive is None:
            raise RetryableDelivery(f"channel {self.config.channel!r} is not running")
        # The delivery id makes the hand-over idempotent: a retry after a crash finds the message already taken.
        origin = f"channel:{message.channel}/{message.id}"
        receipt = await receive(message.raw, source_ref=origin, dedup_key=f"{origin}/{message.meta.get('delivery_id')}")
        outcome = receipt.outcome
        ids = ",".join(str(r.message_id) for r in receipt.results if r.message_id is not None)
        if outcome is Outcome.ERROR:
            raise RetryableDelivery(f"{self.config.channel}: {'; '.join(receipt.reasons)}")
        if outcome is Outcome.REJECTED:
            raise PermanentDelivery(
                f"{self.config.channel} rejected it: {'; '.join(receipt.reasons)}", response=f"rejected {ids}"
            )
        return f"{outcome.value} by {self.config.channel} as message {ids}"

    async def close(self) -> None:
        return None
