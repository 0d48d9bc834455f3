"""Read-only aggregate queries for the dashboard and the queue gauges (SELECTs on the store's own engine).

None of them grows with the history kept: queue counts come from the counters kept with the writes
(:mod:`hub.store.counters`; on PostgreSQL reading them first folds their deltas), the oldest waiting delivery from
a partial index, the recent counts from the index on ``received_at`` (only the window's messages are read).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, select, text
from sqlalchemy.exc import SQLAlchemyError

from hub.store import Store, counters, rollups
from hub.store.schema import deliveries, messages
from hub.store.writer import store_error

__all__ = ["queue_rows", "recent_counts", "dead_letters", "ping", "charts", "sparks", "RANGES"]

_WAITING = ("queued", "retry", "sending", "dead")

T = TypeVar("T")


def _read(store: Store, fn: Callable[[Connection], T]) -> T:
    try:
        with store.engine.connect() as conn:
            return fn(conn)
    except SQLAlchemyError as exc:
        raise store_error(exc) from exc


def queue_rows(store: Store) -> list[tuple[str, str, str, int, float | None]]:
    """(channel, destination, status, count, oldest created_at) for deliveries queued, retrying, sending or dead:
    the counts kept with the writes and one probe of the waiting-age index per row, in one statement (constant in
    the history kept)."""
    store.fold_counters()

    def fn(conn: Connection) -> list[tuple[str, str, str, int, float | None]]:
        return [row for row in counters.with_oldest(conn) if row[1] != "" and row[2] in _WAITING]

    return _read(store, fn)


# The window's messages are found by the index on received_at, and their deliveries by message id: the cost is
# that of the window, not of the history. SQLite must be told (left alone it reads every row through the index that
# matches the GROUP BY); PostgreSQL chooses so itself.
_RECENT_MESSAGES = (
    "SELECT channel, status, COUNT(*) FROM messages{hint} WHERE received_at >= :since GROUP BY channel, status"
)
_RECENT_DELIVERIES = (
    "SELECT d.channel, d.destination, d.status, COUNT(*) FROM messages AS m{hint} {join} deliveries AS d "
    "ON d.message_id = m.id WHERE m.received_at >= :since GROUP BY d.channel, d.destination, d.status"
)


def recent_counts(store: Store, since: float) -> dict[str, Any]:
    """Messages received since ``since`` by channel and status, and their deliveries by destination and status."""

    def fn(conn: Connection) -> dict[str, Any]:
        sqlite = conn.dialect.name == "sqlite"
        hint = " INDEXED BY ix_messages_received" if sqlite else ""
        join = "CROSS JOIN" if sqlite else "JOIN"  # SQLite: CROSS JOIN keeps messages as the outer loop
        chans: dict[str, dict[str, int]] = {}
        for ch, st, n in conn.execute(text(_RECENT_MESSAGES.format(hint=hint)), {"since": since}):
            chans.setdefault(ch, {})[st] = int(n)
        dests: dict[tuple[str, str], dict[str, int]] = {}
        for ch, dest, st, n in conn.execute(text(_RECENT_DELIVERIES.format(hint=hint, join=join)), {"since": since}):
            dests.setdefault((ch, dest), {})[st] = int(n)
        return {"channels": chans, "destinations": dests}

    return _read(store, fn)


def ping(store: Store) -> None:
    """Raise StoreError unless the store answers a trivial query."""
    _read(store, lambda conn: conn.execute(select(1)).scalar())


def dead_letters(
    store: Store,
    *,
    channel: str | None = None,
    destination: str | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Dead deliveries, newest first, with their message's metadata."""
    m, d = messages.c, deliveries.c

    def fn(conn: Connection) -> list[dict[str, Any]]:
        q = (
            select(
                d.id,
                d.message_id,
                d.channel,
                d.destination,
                d.attempts,
                d.updated_at,
                d.last_error,
                m.received_at,
                m.message_type,
                m.control_id,
                m.patient_id,
            )
            .select_from(deliveries.join(messages, m.id == d.message_id))
            .where(d.status == "dead")
        )
        if channel:
            q = q.where(d.channel == channel)
        if destination:
            q = q.where(d.destination == destination)
        if before_id is not None:
            q = q.where(d.id < before_id)
        return [dict(r._mapping) for r in conn.execute(q.order_by(d.id.desc()).limit(limit))]

    return _read(store, fn)


# ------------------------------------------------------------------------------------------------ charts (issue 17)
#: range → (seconds, step seconds)
RANGES: dict[str, tuple[int, int]] = {"1h": (3600, 60), "24h": (86400, 900), "7d": (7 * 86400, 7200)}


def charts(store: Store, channel: str, destination: str | None, range_: str, now: float) -> dict[str, Any]:
    """The dashboard's charts of a channel (or one of its destinations) from the per-minute rollups and queue
    samples (:mod:`hub.store.rollups`): received, sent, errors and queue depth per step, latency percentiles."""
    span, step = RANGES[range_]
    end = (int(now) // step + 1) * step  # the end of the step now is in
    start = end - span
    store.fold_counters()
    sums = store.rollup_sums(start, end, step, channel=channel, destination=destination)
    samples = store.queue_samples(start, end, channel=channel, destination=destination)
    times = list(range(start, end, step))

    def series(*metrics: str) -> list[list[int]]:
        return [[t, sum(sums.get(m, {}).get(t, 0) for m in metrics)] for t in times]

    received = ("queued",) if destination is not None else rollups.MESSAGE_METRICS
    errors = ("dead",) if destination is not None else ("rejected", "error", "dead")
    last: dict[int, tuple[int, int]] = {}  # step → (minute, depth) of its last sample
    for minute, depth in samples.items():
        t = start + (minute - start) // step * step
        if t not in last or minute > last[t][0]:
            last[t] = (minute, depth)
    hist = {m: sum(v.values()) for m, v in sums.items() if m.startswith("lat:")}
    return {
        "range": range_,
        "step": step,
        "from": start,
        "to": end,
        "series": {
            "received": series(*received),
            "sent": series("sent"),
            "errors": series(*errors),
            "queue": [[t, last[t][1] if t in last else 0] for t in times],
        },
        "latency_ms": rollups.percentiles(hist),
    }


def sparks(store: Store, now: float) -> dict[str, dict[str, list[int]]]:
    """channel → {"in": 60 per-minute counts of messages received in the last hour, "out": deliveries sent}."""
    end = (int(now) // 60 + 1) * 60
    start = end - 3600
    per = store.rollup_minutes(start, end, [*rollups.MESSAGE_METRICS, "sent"])
    out: dict[str, dict[str, list[int]]] = {}
    for key, minutes in per.items():
        ch, metric = key.split("\0", 1)
        d = out.setdefault(ch, {"in": [0] * 60, "out": [0] * 60})
        series = d["out" if metric == "sent" else "in"]
        for minute, n in minutes.items():
            i = (minute - start) // 60
            if 0 <= i < 60:
                series[i] += n
    return out


# ------------------------------------------------------------------------------------------------ replay plans
#: Deliveries a replay queues unless ``include_sent``: every state but sent (and sending, which is never touched).
NOT_SENT = ("dead", "retry", "queued")
REPROCESSED = ("rejected", "error", "filtered")


def replay_plan(
    store: Store,
    message_ids: list[int] | None,
    *,
    channel: str | None = None,
    destination: str | None = None,
    statuses: tuple[str, ...] | list[str] = NOT_SENT,
    limit: int = 10000,
) -> dict[str, Any]:
    """What a replay would do, without doing it: the deliveries it would queue again and the messages (rejected,
    error, filtered: without deliveries) it would run through their channel again (only with ``message_ids``)."""
    m, d = messages.c, deliveries.c

    def fn(conn: Connection) -> dict[str, Any]:
        q = select(d.message_id, d.id, d.destination, d.status).where(d.status.in_(list(statuses)))
        if message_ids is not None:
            q = q.where(d.message_id.in_(message_ids))
        if channel:
            q = q.where(d.channel == channel)
        if destination:
            q = q.where(d.destination == destination)
        queue = [
            {"message_id": mid, "delivery_id": did, "destination": dest, "status": st}
            for mid, did, dest, st in conn.execute(q.order_by(d.message_id, d.id).limit(limit))
        ]
        again: list[int] = []
        if message_ids:
            has = select(d.id).where(d.message_id == m.id).exists()
            rq = select(m.id).where(m.id.in_(message_ids), m.status.in_(REPROCESSED), ~has)
            if channel:
                rq = rq.where(m.channel == channel)
            again = [int(i) for i in conn.execute(rq.order_by(m.id)).scalars()]
        return {"would_queue": queue, "would_reprocess": again}

    return _read(store, fn)


def raw_messages(store: Store, ids: list[int]) -> list[tuple[int, str | None, str, bytes]]:
    """(id, control_id, content_type, raw) of these messages, in the order of ``ids``."""
    m = messages.c

    def fn(conn: Connection) -> list[tuple[int, str | None, str, bytes]]:
        found = {
            int(i): (int(i), c, t, bytes(r))
            for i, c, t, r in conn.execute(select(m.id, m.control_id, m.content_type, m.raw).where(m.id.in_(ids)))
        }
        return [found[i] for i in ids if i in found]

    return _read(store, fn)
