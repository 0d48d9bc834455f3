"""Counts kept with the writes (issue 15): how many messages per (channel, status) and deliveries per (channel,
destination, status) the store holds, read in constant time in the number of stored messages.

Triggers made by migration 0004 keep them in the transaction of every write to ``messages`` and ``deliveries``
(accept, claim, mark, recover, replay, reprocess, prune — any path, present or future, that writes those tables):

- SQLite: row triggers add ±1 to ``counters`` (the single writer never waits on itself).
- PostgreSQL: statement triggers append the statement's net change per (channel, destination, status) to
  ``counter_deltas``, insert-only, so writers on several nodes never wait on (or deadlock over) a counter row.
  :func:`fold` moves the deltas into ``counters``; :func:`counts` reads the sum of both, so a count is exact
  whether or not a fold has run.

The oldest waiting delivery of a queue is ``MIN(created_at)`` read from the partial index
``ix_deliveries_waiting_age`` (only queued, retry, sending and dead rows): one index probe per queue and status.
:func:`recount` is the GROUP BY over the tables the counters replace, for tests and checks.
"""

from __future__ import annotations

from sqlalchemy import Connection, TextClause, text

__all__ = ["counts", "with_oldest", "fold", "fold_deltas", "recount", "WAITING"]

#: Delivery statuses in the partial index ``ix_deliveries_waiting_age``.
WAITING = ("queued", "retry", "sending", "dead")

_SUMS = (
    "SELECT channel, destination, status, SUM(n) AS n FROM ("
    "SELECT channel, destination, status, n FROM counters "
    "UNION ALL SELECT channel, destination, status, n FROM counter_deltas) AS u "
    "GROUP BY channel, destination, status HAVING SUM(n) <> 0"
)

_COUNTS = text(_SUMS)

# One statement: each waiting (channel, destination, status) gets its oldest by one probe of the partial index. The
# IN list must read exactly as the index's WHERE clause for SQLite to use the partial index.
_WITH_OLDEST = text(
    "SELECT c.channel, c.destination, c.status, c.n, "
    "CASE WHEN c.destination <> '' AND c.status IN ('queued', 'retry', 'sending', 'dead') THEN "
    "(SELECT MIN(d.created_at) FROM deliveries AS d WHERE d.channel = c.channel AND d.destination = c.destination "
    "AND d.status IN ('queued', 'retry', 'sending', 'dead') AND d.status = c.status) END "
    f"FROM ({_SUMS}) AS c"
)

_FOLD = text(
    "WITH moved AS (DELETE FROM counter_deltas RETURNING channel, destination, status, n) "
    "INSERT INTO counters (channel, destination, status, n) "
    "SELECT channel, destination, status, SUM(n) FROM moved GROUP BY channel, destination, status "
    "ORDER BY channel, destination, status "
    "ON CONFLICT (channel, destination, status) DO UPDATE SET n = counters.n + excluded.n"
)

_FOLD_LOCK = 4242015  # pg advisory lock: one fold at a time across nodes; the others skip


def counts(conn: Connection) -> list[tuple[str, str, str, int]]:
    """(channel, destination, status, n) for every non-zero count; destination '' counts the channel's messages."""
    return [(ch, dest, st, int(n)) for ch, dest, st, n in conn.execute(_COUNTS)]


def fold(conn: Connection) -> bool:
    """PostgreSQL: move the pending deltas into ``counters`` (in the caller's transaction, which must commit).
    Skipped (False) on SQLite, which has no deltas, and while another node folds."""
    return fold_deltas(conn, _FOLD, _FOLD_LOCK)


def fold_deltas(conn: Connection, statement: TextClause, lock: int) -> bool:
    """Run a fold ``statement`` (insert-only deltas into their table) on PostgreSQL under the advisory lock
    ``lock``, so one node folds at a time and the others skip (False); False on SQLite, which has no deltas.
    The counters' and the rollups' (:mod:`hub.store.rollups`) folds."""
    if conn.dialect.name != "postgresql":
        return False
    if not conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": lock}).scalar():
        return False
    conn.execute(statement)
    return True


def with_oldest(conn: Connection) -> list[tuple[str, str, str, int, float | None]]:
    """:func:`counts`, each with the oldest ``created_at`` of its deliveries when its status is a waiting one
    (queued, retry, sending, dead; else None): one statement, one index probe per waiting queue and status."""
    return [(ch, dest, st, int(n), first) for ch, dest, st, n, first in conn.execute(_WITH_OLDEST)]


def recount(conn: Connection) -> list[tuple[str, str, str, int]]:
    """The same counts by a GROUP BY over the whole tables (slow at scale: for tests and consistency checks)."""
    rows = conn.execute(
        text(
            "SELECT channel, '' AS destination, status, COUNT(*) FROM messages GROUP BY channel, status "
            "UNION ALL SELECT channel, destination, status, COUNT(*) FROM deliveries "
            "GROUP BY channel, destination, status"
        )
    )
    return [(ch, dest, st, int(n)) for ch, dest, st, n in rows]
