"""Read-only aggregate queries for the dashboard and the queue gauges (SELECTs on the store's own engine).

Each one uses an index the store already has: deliveries by (channel, destination, status), messages by
received_at. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import SQLAlchemyError

from hub.store import Store
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
    """(channel, destination, status, count, oldest created_at) for deliveries queued, retrying, sending or dead."""
    d = deliveries.c

    def fn(conn: Connection) -> list[tuple[str, str, str, int, float | None]]:
        q = (
            select(d.channel, d.destination, d.status, func.count(), func.min(d.created_at))
            .where(d.status.in_(_WAITING))
            .group_by(d.channel, d.destination, d.status)
        )
        return [(r[0], r[1], r[2], int(r[3]), r[4]) for r in conn.execute(q)]

    return _read(store, fn)


def recent_counts(store: Store, since: float) -> dict[str, Any]:
    """Messages received since ``since`` by channel and status, and their deliveries by destination and status."""
    m, d = messages.c, deliveries.c

    def fn(conn: Connection) -> dict[str, Any]:
        chans: dict[str, dict[str, int]] = {}
        for ch, st, n in conn.execute(
            select(m.channel, m.status, func.count()).where(m.received_at >= since).group_by(m.channel, m.status)
        ):
            chans.setdefault(ch, {})[st] = int(n)
        dests: dict[tuple[str, str], dict[str, int]] = {}
        for ch, dest, st, n in conn.execute(
            select(d.channel, d.destination, d.status, func.count())
            .select_from(deliveries.join(messages, m.id == d.message_id))
            .where(m.received_at >= since)
            .group_by(d.channel, d.destination, d.status)
        ):
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
