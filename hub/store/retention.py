"""Retention: :func:`prune_chunk` deletes one chunk of old messages with their deliveries and attempts; the store's
:meth:`~hub.store.Store.prune` runs it, one transaction per chunk, until nothing older is left.
"""

from __future__ import annotations

from sqlalchemy import Connection, delete, exists, select

from hub.store.records import PENDING
from hub.store.schema import attempts, deliveries, messages

__all__ = ["prune_chunk"]


def prune_chunk(conn: Connection, cutoff: float, keep_unsent: bool, chunk: int) -> int:
    """Delete up to ``chunk`` messages received before ``cutoff`` (epoch seconds), children first, so no orphan is
    ever left. With ``keep_unsent`` a message that still has a queued, sending, retrying or dead delivery is kept.
    Returns how many messages were deleted."""
    m, d = messages.c, deliveries.c
    q = select(m.id).where(m.received_at < cutoff)
    if keep_unsent:
        q = q.where(~exists().where(d.message_id == m.id, d.status.in_(PENDING + ("dead",))))
    ids = list(conn.execute(q.order_by(m.id).limit(chunk)).scalars())
    if not ids:
        return 0
    dids = select(d.id).where(d.message_id.in_(ids)).scalar_subquery()
    conn.execute(delete(attempts).where(attempts.c.delivery_id.in_(dids)))
    conn.execute(delete(deliveries).where(d.message_id.in_(ids)))
    conn.execute(delete(messages).where(m.id.in_(ids)))
    return len(ids)
