"""The nodes sharing a store, and the channel state they share.

Each running hub writes its **heartbeat** (:func:`heartbeat`) every ``cluster.heartbeat``; a node whose heartbeat
is older than ``cluster.dead_after`` is **dead** (:func:`dead_nodes`). A live node then **takes over** what the dead
one held (:func:`take_over`): its ``sending`` deliveries go back to ``retry`` at once — keeping their ids, so a
FIFO queue sends them again first, in order, ahead of later rows (at-least-once: a row it may have sent is sent
again, never lost) — and its named leases (an SFTP folder's poll …) are freed. A node that stops cleanly removes
its row (:func:`leave`); a node without a row (never heartbeat) is only taken over when its leases expire.

**Channel state** (:func:`channel_states`, :func:`set_channel_state`): a channel's ``paused`` and ``enabled``
flags, written by whichever node a person asked (web, ``hub channel``) and applied by every node at its next
heartbeat; they survive restarts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, insert, literal_column, or_, select, update

from hub.store.schema import channel_state, deliveries, leases, nodes

__all__ = [
    "SharedState",
    "heartbeat",
    "leave",
    "dead_nodes",
    "is_dead",
    "list_nodes",
    "take_over",
    "channel_states",
    "set_channel_state",
    "CHANNEL_STATE_PREFIX",
]

#: Prefix of the store cursors holding each channel's last state as the running hub saw it (read by `hub status`).
CHANNEL_STATE_PREFIX = "channel_state:"


@dataclass(frozen=True)
class SharedState:
    """A channel's row of ``channel_state``: whether it is paused or enabled, who changed it and when."""

    channel: str
    paused: bool
    enabled: bool
    changed_by: str | None
    changed_at: float


def heartbeat(
    conn: Connection, node: str, started_at: float, pid: int | None = None, host: str | None = None, version: str = ""
) -> None:
    """Record that ``node`` is alive now (insert its row, or renew it)."""
    now = time.time()
    res = conn.execute(
        update(nodes)
        .where(nodes.c.name == node)
        .values(heartbeat_at=now, started_at=started_at, pid=pid, host=host, version=version)
    )
    if not res.rowcount:
        conn.execute(
            insert(nodes).values(
                name=node, started_at=started_at, heartbeat_at=now, pid=pid, host=host, version=version
            )
        )


def leave(conn: Connection, node: str) -> None:
    """``node`` stops cleanly: its row goes (it holds no delivery any more)."""
    conn.execute(delete(nodes).where(nodes.c.name == node))


def dead_nodes(conn: Connection, dead_after: float, *, now: float | None = None) -> list[str]:
    """The nodes whose last heartbeat is older than ``dead_after`` seconds."""
    now = time.time() if now is None else now
    return list(conn.execute(select(nodes.c.name).where(nodes.c.heartbeat_at < now - dead_after)).scalars())


def list_nodes(conn: Connection, dead_after: float) -> list[dict[str, Any]]:
    """Every node with a row: name, started_at, heartbeat_at, pid, host, version and ``alive``."""
    now = time.time()
    out = []
    for r in conn.execute(select(nodes).order_by(nodes.c.name)).mappings():
        out.append({**r, "alive": r["heartbeat_at"] >= now - dead_after})
    return out


# Literal, not bound: the partial index ix_deliveries_sending (status = 'sending') must match in a prepared plan.
_SENDING = literal_column("deliveries.status") == literal_column("'sending'")


def take_over(conn: Connection, node: str, dead_after: float) -> tuple[int, list[str]]:
    """Put back to ``retry`` (due now, ids kept) the ``sending`` deliveries of dead nodes and those whose lease
    expired, free the named leases of dead nodes, and drop the rows of nodes dead for long (10 × dead_after).
    ``node`` (the caller) is never dead to itself. Returns (deliveries taken back, the dead nodes)."""
    now = time.time()
    d = deliveries.c
    dead = [n for n in dead_nodes(conn, dead_after, now=now) if n != node]
    cond = d.lease_until < now
    if dead:
        cond = or_(cond, d.lease_owner.in_(dead))
    res = conn.execute(
        update(deliveries)
        .where(_SENDING, cond)
        .values(status="retry", lease_owner=None, lease_until=None, next_at=now, updated_at=now)
    )
    if dead:
        conn.execute(delete(leases).where(leases.c.owner.in_(dead)))
        conn.execute(delete(nodes).where(nodes.c.heartbeat_at < now - 10 * dead_after, nodes.c.name != node))
    return res.rowcount or 0, dead


def is_dead(conn: Connection, owner: str, dead_after: float) -> bool:
    """Whether ``owner`` is a node whose heartbeat is older than ``dead_after`` (a node without a row is not)."""
    at = conn.execute(select(nodes.c.heartbeat_at).where(nodes.c.name == owner)).scalar()
    return at is not None and at < time.time() - dead_after


def channel_states(conn: Connection) -> dict[str, SharedState]:
    """Every channel's shared state row (channels never paused nor disabled have none)."""
    return {
        r.channel: SharedState(r.channel, bool(r.paused), bool(r.enabled), r.changed_by, r.changed_at)
        for r in conn.execute(select(channel_state))
    }


def set_channel_state(
    conn: Connection, channel: str, *, paused: bool | None = None, enabled: bool | None = None, by: str | None = None
) -> SharedState:
    """Change a channel's ``paused`` and/or ``enabled`` flag (None: leave it); returns the new state."""
    now = time.time()
    values: dict[str, Any] = {"changed_by": by, "changed_at": now}
    if paused is not None:
        values["paused"] = int(paused)
    if enabled is not None:
        values["enabled"] = int(enabled)
    res = conn.execute(update(channel_state).where(channel_state.c.channel == channel).values(**values))
    if not res.rowcount:
        conn.execute(insert(channel_state).values({"channel": channel, "paused": 0, "enabled": 1, **values}))
    r = conn.execute(select(channel_state).where(channel_state.c.channel == channel)).one()
    return SharedState(r.channel, bool(r.paused), bool(r.enabled), r.changed_by, r.changed_at)
