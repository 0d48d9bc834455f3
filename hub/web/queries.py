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

from hub.store import Store, counters
from hub.store.schema import deliveries, messages
from hub.store.writer import store_error

__all__ = ["queue_rows", "recent_counts", "dead_letters", "ping"]

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
