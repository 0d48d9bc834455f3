"""Accepting messages: a message and its deliveries are stored in one transaction (:class:`AcceptOp`, which the
group writer merges across callers into multi-row INSERTs), with de-duplication by ``(channel, dedup_key)``;
and :func:`reprocess`, which records a new pipeline result for a message already stored.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select, update

from hub.store.bulk import chunks, insert_many
from hub.store.records import INDEXED, Accepted, NewDelivery, NewMessage
from hub.store.schema import deliveries, messages
from hub.store.sequences import set_cursor

__all__ = ["AcceptOp", "delivery_row", "reprocess"]


def delivery_row(message_id: int, channel: str, d: NewDelivery, now: float) -> dict[str, Any]:
    """A new queued delivery of a stored message."""
    return {
        "message_id": message_id,
        "channel": channel,
        "destination": d.destination,
        "route": d.route,
        "status": "queued",
        "order_key": d.order_key,
        "attempts": 0,
        "next_at": now,
        "content_type": d.content_type,
        "content": d.content,
        "created_at": now,
        "updated_at": now,
    }


@dataclass
class AcceptOp:
    """Store messages and their deliveries (a write operation of :class:`~hub.store.writer.GroupWriter`).

    ``cursor`` (name, value) is set in the same transaction: a poller's place (the ``database`` source's cursor
    column) can never be separated from the messages read up to it."""

    items: list[NewMessage]
    cursor: tuple[str, str] | None = None

    @staticmethod
    def run_batch(conn: Connection, ops: Sequence[AcceptOp]) -> list[list[Accepted]]:
        now = time.time()
        flat = [item for op in ops for item in op.items]
        results: dict[int, Accepted] = {}  # index in flat → its result

        # Dedup: an item whose (channel, dedup_key) is already stored, or repeats an earlier item, is a duplicate.
        dup_of: dict[int, int] = {}  # index → index of the first item with the same key in this batch
        keyed = [(i, (it.channel, it.dedup_key)) for i, it in enumerate(flat) if it.dedup_key]
        if keyed:
            wanted = {k for _, k in keyed}
            channels = sorted({ch for ch, _ in wanted})
            found: dict[tuple[str, str], int] = {}
            for chunk in chunks(sorted({key for _, key in wanted}), 500):
                # both columns of the unique index (channel, dedup_key): a look-up, not a scan of every message
                q = select(messages.c.id, messages.c.channel, messages.c.dedup_key).where(
                    messages.c.channel.in_(channels), messages.c.dedup_key.in_(chunk)
                )
                for mid, ch, key in conn.execute(q):
                    if (ch, key) in wanted:
                        found[(ch, key)] = mid
            first: dict[tuple[str, str], int] = {}
            for i, k in keyed:
                if k in found:
                    results[i] = Accepted(found[k], duplicate=True)
                elif k in first:
                    dup_of[i] = first[k]
                else:
                    first[k] = i

        fresh = [i for i in range(len(flat)) if i not in results and i not in dup_of]
        if fresh:
            ids = insert_many(conn, messages, [flat[i].row() for i in fresh])
            drows: list[dict[str, Any]] = []
            owners: list[int] = []
            for i, mid in zip(fresh, ids, strict=False):
                results[i] = Accepted(mid)
                for d in flat[i].deliveries:
                    drows.append(delivery_row(mid, flat[i].channel, d, now))
                    owners.append(i)
            if drows:
                for i, did in zip(owners, insert_many(conn, deliveries, drows), strict=False):
                    results[i].delivery_ids.append(did)
        for i, j in dup_of.items():
            results[i] = Accepted(results[j].message_id, duplicate=True)
        for op in ops:
            if op.cursor is not None:
                set_cursor(conn, *op.cursor)
        out: list[list[Accepted]] = []
        pos = 0
        for op in ops:
            out.append([results[k] for k in range(pos, pos + len(op.items))])
            pos += len(op.items)
        return out

    def run(self, conn: Connection) -> list[Accepted]:
        return self.run_batch(conn, [self])[0]


def reprocess(conn: Connection, message_id: int, item: NewMessage) -> list[int]:
    """Replace a stored message's status, error and metadata with those of ``item`` and queue its deliveries
    (if any); returns the new delivery ids."""
    row = item.row()
    values = {k: row[k] for k in ("status", "error", "error_code", "meta", *INDEXED)}
    conn.execute(update(messages).where(messages.c.id == message_id).values(**values))
    now = time.time()
    drows = [delivery_row(message_id, item.channel, d, now) for d in item.deliveries]
    return insert_many(conn, deliveries, drows) if drows else []
