"""The delivery loop of one destination: claim → send → mark sent | retry (backoff) | dead.

Without ``order_by`` a queue is strict FIFO: the worker claims the ready prefix of the queue, sends it in
order and stops at the first failure, handing the rest back untouched, so nothing overtakes a message that
is waiting for its retry. With ``order_by`` the store hands out the oldest ready delivery of each key and the
worker sends up to ``parallel`` of them at once; a retrying key waits alone while other keys flow.
After ``max_attempts`` a delivery goes ``dead``: it stays visible and replayable and no longer blocks its key.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from hub import metrics
from hub.errors import DeliveryError, PermanentDelivery, classify
from hub.message import Message
from hub.spec import QueueSpec, parse_duration
from hub.store import Claimed, Mark, Store

__all__ = ["DeliveryWorker", "backoff_delay"]

log = logging.getLogger("hub.worker")

_HTTP_STATUS = re.compile(r"\bHTTP (\d{3})\b")


def _brief(exc: BaseException, err: DeliveryError) -> str:
    """What the log may say about a failed attempt: the error's kind, its cause's class and the HTTP status —
    never its text, which can quote the content or a URL carrying a patient's identifier (a FHIR conditional
    update's ``Patient?identifier=…|MRN``). The full reason is stored with the delivery (``hub show``)."""
    parts = [type(err).__name__]
    cause = exc.__cause__ if exc is err else exc
    if cause is not None and not isinstance(cause, DeliveryError):
        parts.append(type(cause).__name__)
    status = _HTTP_STATUS.search(str(err))
    if status:
        parts.append(f"HTTP {status.group(1)}")
    return ", ".join(parts)


def backoff_delay(queue: QueueSpec, attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failure: initial × multiplier^(attempts−1), at most max."""
    initial = parse_duration(queue.backoff.initial)
    longest = parse_duration(queue.backoff.max)
    return min(longest, initial * queue.backoff.multiplier ** max(0, attempts - 1))


class DeliveryWorker:
    def __init__(
        self,
        store: Store,
        channel: str,
        name: str,
        destination: Any,
        queue: QueueSpec,
        *,
        drop_content: bool = False,
        idle_poll: float = 1.0,
        on_final: Callable[[Claimed, str], None] | None = None,
        observe: Callable[[str, str, str, float], None] | None = None,
        batch: Any = None,
        assembler: Callable[[list[Message]], Any] | None = None,
    ) -> None:
        self.store = store
        self.channel = channel
        self.name = name
        self.destination = destination
        self.queue = queue
        self.ordered = queue.order_by is not None
        self.drop_content = drop_content
        self.idle_poll = idle_poll
        self.on_final = on_final
        self.observe = observe  # (channel, destination, outcome, seconds since received) → metrics
        self.batch = batch  # hub.spec.BatchSpec: send what queued up as one payload on a schedule
        self.assembler = assembler
        self._poller: Any = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self.batch is not None:
            from hub.channels.schedule import Poller

            self._poller = Poller(self.batch.schedule, self.flush, f"batch:{self.channel}/{self.name}", run_first=False)
            self._poller.start()
            return
        self._task = asyncio.create_task(self._run(), name=f"worker:{self.channel}/{self.name}")

    async def stop(self) -> None:
        """Finish the batch in hand, then stop. Idempotent."""
        self._stopping = True
        self._wake.set()
        if self._poller is not None:
            await self._poller.stop()
            self._poller = None
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=30)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            try:
                claimed = await self.store.claim(self.channel, self.name, limit=self.queue.batch, ordered=self.ordered)
            except Exception as exc:
                log.warning("worker %s/%s: cannot claim: %s", self.channel, self.name, exc)
                metrics.count_store_error("claim")
                claimed = []
                await self._sleep(min(5.0, self.idle_poll * 5))
                continue
            if not claimed:
                await self._sleep(self.idle_poll)
                continue
            if self.ordered:
                marks = await self._send_parallel(claimed)
            else:
                marks = await self._send_in_order(claimed)
            await self._mark(marks)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except TimeoutError:
            pass
        self._wake.clear()

    async def _mark(self, marks: list[tuple[Claimed, Mark]]) -> None:
        while True:
            try:
                await self.store.mark([m for _, m in marks])
                break
            except Exception as exc:
                metrics.count_store_error("mark")
                if self._stopping:
                    log.error("worker %s/%s: could not record %d results: %s", self.channel, self.name, len(marks), exc)
                    return  # the leases expire and the deliveries are sent again (at-least-once)
                log.warning("worker %s/%s: cannot record results, retrying: %s", self.channel, self.name, exc)
                await asyncio.sleep(1.0)
        now = time.time()
        for c, m in marks:
            if m.record:
                metrics.count_delivery(self.channel, self.name, m.outcome, now - c.received_at)
            if m.outcome in ("sent", "dead"):
                if self.on_final is not None:
                    self.on_final(c, m.outcome)
            if self.observe is not None and m.outcome != "queued":
                self.observe(self.channel, self.name, m.outcome, time.time() - c.received_at)

    async def _send_in_order(self, claimed: list[Claimed]) -> list[tuple[Claimed, Mark]]:
        marks: list[tuple[Claimed, Mark]] = []
        many = getattr(self.destination, "send_many", None)
        if many is not None and len(claimed) > 1:
            return await self._send_many(many, claimed)
        for i, c in enumerate(claimed):
            mark = await self._attempt(c)
            marks.append((c, mark))
            if mark.outcome == "retry" or self._stopping:
                # FIFO: hand back the rest without counting an attempt; they wait behind this one.
                for rest in claimed[i + 1 :]:
                    marks.append((rest, Mark(rest.id, "queued", rest.attempts, record=False)))
                break
        return marks

    async def _send_many(self, many: Any, claimed: list[Claimed]) -> list[tuple[Claimed, Mark]]:
        """FIFO through the destination's send_many: the results up to the first failure, the rest handed back."""
        try:
            results = await many([self._message(c) for c in claimed])
        except Exception as exc:
            results = [exc]
        marks: list[tuple[Claimed, Mark]] = []
        for c, result in zip(claimed, results, strict=False):
            if isinstance(result, BaseException):
                mark = self._failed(c, result)
            else:
                self.last_error = None
                mark = Mark(c.id, "sent", c.attempts + 1, response=result, drop_content=self.drop_content)
            marks.append((c, mark))
            if mark.outcome == "retry":
                break
        for rest in claimed[len(marks) :]:
            marks.append((rest, Mark(rest.id, "queued", rest.attempts, record=False)))
        return marks

    async def _send_parallel(self, claimed: list[Claimed]) -> list[tuple[Claimed, Mark]]:
        sem = asyncio.Semaphore(self.queue.parallel)

        async def one(c: Claimed) -> tuple[Claimed, Mark]:
            async with sem:
                return c, await self._attempt(c)

        return list(await asyncio.gather(*(one(c) for c in claimed)))

    def _message(self, c: Claimed) -> Message:
        meta = dict(c.meta)
        meta["delivery_id"] = c.id
        meta["destination"] = self.name
        return Message(
            raw=c.content,
            content_type=c.content_type,
            meta=meta,
            id=c.message_id,
            channel=self.channel,
            received_at=datetime.fromtimestamp(c.received_at, UTC),
        )

    async def flush(self) -> int:
        """Batch mode: send everything ready (FIFO) as payloads of at most ``batch.max`` messages. Returns how many."""
        assert self.batch is not None and self.assembler is not None
        total = 0
        while not self._stopping:
            claimed = await self.store.claim(self.channel, self.name, limit=self.batch.max, ordered=False)
            if not claimed:
                break
            try:
                assembled = await asyncio.to_thread(self.assembler, [self._message(c) for c in claimed])
            except Exception as exc:
                # the type only: an assembler's error text may quote the content (it is stored with the deliveries)
                log.error(
                    "batch for %s/%s could not be assembled (%s); it is retried",
                    self.channel,
                    self.name,
                    type(exc).__name__,
                )
                await self._mark([(c, self._failed(c, exc)) for c in claimed])
                break
            included = [c for i, c in enumerate(claimed) if i not in assembled.skipped]
            marks = [
                (claimed[i], Mark(claimed[i].id, "dead", claimed[i].attempts + 1, error=why))
                for i, why in assembled.skipped.items()
            ]
            if included:
                first = self._message(included[0])
                first.meta["batch_size"] = len(included)
                payload = first.replace(assembled.content, assembled.content_type)
                try:
                    response = await self.destination.send(payload)
                except Exception as exc:
                    marks += [(c, self._failed(c, exc)) for c in included]
                    await self._mark(marks)
                    break
                marks += [
                    (c, Mark(c.id, "sent", c.attempts + 1, response=response, drop_content=self.drop_content))
                    for c in included
                ]
            await self._mark(marks)
            total += len(included)
            if len(claimed) < self.batch.max:
                break
        return total

    def _failed(self, c: Claimed, exc: BaseException) -> Mark:
        """The mark for a failed attempt: retry with backoff, or dead (permanent, or out of attempts)."""
        attempt = c.attempts + 1
        err: DeliveryError = classify(exc)
        self.last_error = str(err)
        if isinstance(err, PermanentDelivery) or attempt >= self.queue.max_attempts:
            why = "permanent failure" if isinstance(err, PermanentDelivery) else f"gave up after {attempt} attempts"
            log.warning(
                "delivery %s of message %s to %s/%s is dead (%s): %s; the reason is stored with the delivery (hub show "
                "%s)",
                c.id,
                c.message_id,
                self.channel,
                self.name,
                why,
                _brief(exc, err),
                c.message_id,
            )
            return Mark(c.id, "dead", attempt, error=str(err), response=err.response)
        delay = backoff_delay(self.queue, attempt)
        if err.retry_after is not None:
            delay = max(delay, err.retry_after)
        log.info(
            "delivery %s to %s/%s failed (attempt %d), retry in %.1fs: %s",
            c.id,
            self.channel,
            self.name,
            attempt,
            delay,
            _brief(exc, err),
        )
        return Mark(c.id, "retry", attempt, error=str(err), response=err.response, next_at=time.time() + delay)

    async def _attempt(self, c: Claimed) -> Mark:
        attempt = c.attempts + 1
        message = self._message(c)
        try:
            response = await self.destination.send(message)
        except Exception as exc:
            return self._failed(c, exc)
        self.last_error = None
        return Mark(c.id, "sent", attempt, response=response, drop_content=self.drop_content)
