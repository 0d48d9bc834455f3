"""Named leases between the nodes sharing a store: one node at a time does a job (polls an SFTP folder …). A node
takes or renews a lease for a time (:func:`acquire`) and gives it up (:func:`release`); a lease not renewed in
time is free for another node, and so is a lease whose owner is a dead node (its heartbeat is older than
``dead_after``: :mod:`hub.store.nodes`), without waiting for the lease to expire. (The leases of deliveries being
sent are part of the queue: hub.store.queue.)
"""

from __future__ import annotations

import time

from sqlalchemy import Connection, delete, or_, select, update

from hub.store.nodes import is_dead
from hub.store.schema import leases

__all__ = ["acquire", "release"]


def acquire(conn: Connection, name: str, owner: str, ttl: float, dead_after: float | None = None) -> bool:
    """Take or renew the lease ``name`` for ``owner``; False while another owner holds an unexpired one and (with
    ``dead_after``) that owner's heartbeat is recent."""
    now = time.time()
    row = conn.execute(select(leases.c.owner, leases.c.until).where(leases.c.name == name)).first()
    if row is None:
        conn.execute(leases.insert().values(name=name, owner=owner, until=now + ttl))
        return True
    if row.owner == owner or row.until < now or (dead_after is not None and is_dead(conn, row.owner, dead_after)):
        res = conn.execute(
            update(leases)
            .where(leases.c.name == name, or_(leases.c.owner == owner, leases.c.owner == row.owner))
            .values(owner=owner, until=now + ttl)
        )
        return bool(res.rowcount)
    return False


def release(conn: Connection, name: str, owner: str) -> None:
    conn.execute(delete(leases).where(leases.c.name == name, leases.c.owner == owner))
