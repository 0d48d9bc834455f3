"""Retention: what the store's :meth:`~hub.store.Store.prune`, :meth:`~hub.store.Store.prune_to_size` and
:meth:`~hub.store.Store.vacuum` run.

* :func:`prune_chunk` deletes one chunk of messages, oldest first, with their deliveries and attempts, in the
  writer's transaction; the store runs it chunk after chunk from a cursor (so kept messages are not read again),
  its :class:`Pacer` keeping each chunk under about :data:`CHUNK_SECONDS` (and ``chunk`` messages) and pausing
  between chunks, so the accepts of the sources (which share the writer) wait at most one chunk.
* :func:`store_size` is the size ``retention.max_size`` is compared with: on SQLite the pages in use
  (``page_count - freelist_count``, two reads of the file's header); on PostgreSQL the live data — deleted rows'
  space stays in the tables for new rows (autovacuum marks it free, it is not given back), so the tables' size on
  disk would not drop after a prune; :func:`disk_size` (the tables on disk) is the cheap first look.
* SQLite gives space back by ``auto_vacuum = INCREMENTAL`` (set on every new database before its first table,
  :mod:`hub.store.connect`; an older store switches once by a full ``VACUUM``: migration 0007 when it is small,
  else ``hub prune --vacuum``): :func:`vacuum_step` moves up to N pages from the end of the file into free ones and
  truncates it, a short write transaction each. The text search index gives its space back by whole segments
  (:func:`hub.store.search_index.tidy`, after a prune).
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, exists, func, or_, select, text

from hub.errors import StoreError
from hub.store import search_index
from hub.store.records import PENDING
from hub.store.schema import attempts, deliveries, messages, metadata

__all__ = [
    "CHUNK_SECONDS",
    "Pacer",
    "SizePrune",
    "auto_vacuum",
    "disk_size",
    "freelist",
    "adapt",
    "checkpoint",
    "give_back",
    "message_count",
    "prune_chunk",
    "store_size",
    "to_prune",
    "vacuum_step",
]

log = logging.getLogger("hub.store")

CHUNK_SECONDS = 0.2  # aim of one prune chunk or text index step (one writer transaction)
BUSY_GAP = 0.15  # seconds between two vacuum steps (on a connection of their own): the writer's turn
MAX_VACUUM_PAGES = 512  # the most pages one vacuum step gives back (see give_back)
VACUUM_SECONDS = 0.08  # aim of one vacuum step
UNSENT = (*PENDING, "dead")  # a message with a delivery in one of these is never pruned by size

Cursor = tuple[float, int]  # (received_at, id) of the last message deleted


def prune_chunk(
    conn: Connection, cutoff: float | None, keep_unsent: bool, chunk: int, after: Cursor | None = None
) -> tuple[int, Cursor | None]:
    """Delete up to ``chunk`` messages, oldest first (by received_at, then id), received before ``cutoff`` (epoch
    seconds; None: any) and after the cursor ``after``, children first, so no orphan is ever left. With
    ``keep_unsent`` a message that still has a queued, sending, retrying or dead delivery is kept.
    Returns how many messages were deleted and the cursor to continue from."""
    m, d = messages.c, deliveries.c
    q = select(m.id, m.received_at)
    if cutoff is not None:
        q = q.where(m.received_at < cutoff)
    if after is not None:
        q = q.where(or_(m.received_at > after[0], and_(m.received_at == after[0], m.id > after[1])))
    if keep_unsent:
        q = q.where(~exists().where(d.message_id == m.id, d.status.in_(UNSENT)))
    rows = conn.execute(q.order_by(m.received_at, m.id).limit(chunk)).all()
    if not rows:
        return 0, after
    ids = [r.id for r in rows]
    dids = select(d.id).where(d.message_id.in_(ids)).scalar_subquery()
    conn.execute(delete(attempts).where(attempts.c.delivery_id.in_(dids)))
    conn.execute(delete(deliveries).where(d.message_id.in_(ids)))
    conn.execute(delete(messages).where(m.id.in_(ids)))
    search_index.after_delete(conn)
    return len(ids), (rows[-1].received_at, rows[-1].id)


class Pacer:
    """Sizes prune chunks so each takes at most about ``target`` seconds: from ``most`` messages down to ``least``
    when one was slower (a big message, a busy disk), back up when it was quick; and says how long to pause after
    one, so what waits for the writer goes first."""

    def __init__(self, most: int, target: float = CHUNK_SECONDS, least: int = 10) -> None:
        self.most = max(1, most)
        self.least = min(least, self.most)
        self.size = min(100, self.most)  # grows while chunks are quick: the first one may be slow (a cold cache)
        self.target = target

    def done(self, seconds: float) -> float:
        """A chunk of :attr:`size` took ``seconds`` (submit to commit): adjust the next size; the pause to take."""
        if seconds > self.target:
            self.size = max(self.least, int(self.size * self.target / seconds))
        elif seconds < self.target / 2:
            self.size = min(self.most, self.size * 2)
        return min(max(seconds / 4, 0.005), 0.1)


@dataclass(frozen=True)
class SizePrune:
    """What :meth:`~hub.store.Store.prune_to_size` did: messages pruned, the store's size before and after."""

    pruned: int
    size_before: int
    size_after: int
    max_size: int

    @property
    def over(self) -> bool:
        """Still bigger than ``max_size``: only messages with undelivered deliveries (or none) are left."""
        return self.size_after > self.max_size


def message_count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(messages)).scalar_one())


# ------------------------------------------------------------------------------------------------ sizes
def _pragma(conn: Connection, name: str) -> int:
    return int(conn.exec_driver_sql(f"PRAGMA {name}").scalar_one())


def disk_size(conn: Connection) -> int:
    """Bytes on disk: SQLite's main file (without its WAL); PostgreSQL's tables of the current schema with their
    TOAST and indexes (free space inside them included)."""
    if conn.dialect.name == "sqlite":
        return _pragma(conn, "page_count") * _pragma(conn, "page_size")
    if conn.dialect.name == "postgresql":
        return int(
            conn.execute(
                text(
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm', 'p')"
                )
            ).scalar_one()
        )
    return 0


_SMALL = 1 << 20  # a PostgreSQL table smaller than this on disk counts at its size on disk (not worth reading)
_ROW_OVERHEAD = 28  # PostgreSQL: tuple header (23 bytes, aligned) and line pointer (4) per row


def _pg_live(conn: Connection) -> int:
    """PostgreSQL: the live data. Each table of the store over 1 MB is read once: its rows' stored sizes
    (``pg_column_size``, compressed and TOASTed as stored) plus its indexes in the proportion of live to all data;
    smaller tables, and tables the schema does not know, count at their size on disk."""
    total = disk_size(conn)
    for table in metadata.sorted_tables:
        sizes = conn.execute(
            text("SELECT pg_total_relation_size(c), pg_table_size(c), pg_indexes_size(c) FROM to_regclass(:t) c"),
            {"t": table.name},
        ).one_or_none()
        if sizes is None or sizes[0] is None or sizes[0] < _SMALL:
            continue
        on_disk, heap, indexes = (int(x) for x in sizes)
        width: Any = sum((func.coalesce(func.pg_column_size(c), 0) for c in table.c), start=0)
        rows, data = conn.execute(select(func.count(), func.coalesce(func.sum(width), 0)).select_from(table)).one()
        live = int(data) + int(rows) * _ROW_OVERHEAD
        live += int(indexes * min(1.0, live / heap)) if heap else indexes
        total += min(live, on_disk) - on_disk
    return total


def store_size(conn: Connection) -> int:
    """The size ``retention.max_size`` is compared with (see the module's docstring)."""
    if conn.dialect.name == "sqlite":
        return (_pragma(conn, "page_count") - _pragma(conn, "freelist_count")) * _pragma(conn, "page_size")
    if conn.dialect.name == "postgresql":
        return _pg_live(conn)
    return 0


def to_prune(size: int, max_size: int, per_message: float) -> int:
    """How many messages to prune to bring ``size`` under ``max_size`` when each frees ``per_message`` bytes."""
    if size <= max_size:
        return 0
    return max(1, math.ceil((size - max_size) / max(per_message, 1.0)))


# ------------------------------------------------------------------------------------------------ SQLite space
def auto_vacuum(conn: Connection) -> int:
    """SQLite's auto_vacuum mode of the file: 0 none, 1 full, 2 incremental."""
    return _pragma(conn, "auto_vacuum")


def freelist(conn: Connection) -> int:
    """SQLite: pages in the file that hold nothing (freed by deletes, not yet given back)."""
    return _pragma(conn, "freelist_count")


def vacuum_step(dbapi_conn: Any, pages: int) -> None:
    """Give up to ``pages`` free pages back to the file system, in one short write transaction of its own.

    ``executescript`` because the pragma frees one page per step of its statement and Python's ``execute`` steps
    once (2,000 pages: 0.1 s this way, 3–6 s in 2,000 ``execute`` calls)."""
    dbapi_conn.executescript(f"PRAGMA incremental_vacuum({int(pages)});")


def _raw_pragma(dbapi_conn: Any, name: str) -> int:
    cur = dbapi_conn.execute(f"PRAGMA {name}")
    try:
        return int(cur.fetchone()[0])
    finally:
        cur.close()


def checkpoint(engine: Engine) -> None:
    """SQLite: copy the WAL into the database file now, on a connection of its own (see :func:`_checkpoint`)."""
    if engine.dialect.name != "sqlite":
        return
    raw = engine.raw_connection()
    try:
        _checkpoint(raw.driver_connection)
    except sqlite3.Error as exc:
        log.debug("store: checkpoint skipped (%s)", type(exc).__name__)
    finally:
        raw.close()


def _checkpoint(dbapi: Any) -> None:
    """Copy the WAL into the file now, on this connection (PASSIVE: it waits for nobody), so the pages a prune
    chunk or a step wrote are not left for the writer's next commit to checkpoint (SQLite's autocheckpoint, with
    its fsync of the file) while a source waits for it."""
    cur = dbapi.execute("PRAGMA wal_checkpoint(PASSIVE)")
    cur.fetchall()
    cur.close()


def adapt(n: int, took: float, least: int, most: int, aim: float = CHUNK_SECONDS) -> int:
    """The next step's size after one of ``n`` took ``took`` seconds, aiming at ``aim`` seconds."""
    if took > aim:
        return max(least, int(n * aim / took))
    if took < aim / 2:
        return min(most, n * 2)
    return n


def give_back(engine: Engine, *, full: bool = False, pages: int = 256) -> int:
    """SQLite: give the free pages of the file back to the file system; returns the bytes given back (0 on
    PostgreSQL, whose autovacuum makes deleted rows' space reusable and keeps it).

    Incrementally, on a file with ``auto_vacuum = INCREMENTAL``: steps of about :data:`VACUUM_SECONDS` on a
    connection of their own (the pragma must run to its end outside a transaction, which the writer's batches
    cannot offer), :data:`BUSY_GAP` apart, so the writer (which waits on SQLite's busy timeout for each step)
    commits its batches in between. With ``full`` (``hub prune --vacuum``): one ``VACUUM`` that also switches
    an older file to incremental — it rewrites the whole file and holds the write lock till it is done (about
    the time it takes to copy the file), so run it once, in a quiet hour or with the hub stopped.
    """
    if engine.dialect.name != "sqlite":
        return 0
    raw = engine.raw_connection()
    try:
        dbapi: Any = raw.driver_connection
        page_size = _raw_pragma(dbapi, "page_size")
        before = _raw_pragma(dbapi, "page_count")
        if full:
            started = time.perf_counter()
            dbapi.executescript("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
            # In WAL mode the VACUUM wrote the whole file into the WAL: copy it back and empty the WAL now.
            dbapi.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            log.info(
                "store: VACUUM took %.1f s; the file now gives space back after each prune",
                time.perf_counter() - started,
            )
        elif _raw_pragma(dbapi, "auto_vacuum") != 2:
            if _raw_pragma(dbapi, "freelist_count"):
                log.warning(
                    "store: the SQLite file keeps the space of pruned messages for new ones but does not give it "
                    "back (made before auto_vacuum); run `hub prune --vacuum` once to switch it"
                )
            return 0
        else:
            while _raw_pragma(dbapi, "freelist_count"):
                started = time.perf_counter()
                vacuum_step(dbapi, pages)
                stepped = time.perf_counter() - started
                _checkpoint(dbapi)
                log.debug(
                    "store: gave back %d pages in %.3f s (checkpoint %.3f s)",
                    pages,
                    stepped,
                    time.perf_counter() - started - stepped,
                )
                # Small steps: the time a step takes varies fourfold from one to the next with the disk (where the
                # pages to move are scattered, SQLite moved about 2,300 a second; one step of 16,384 pages that
                # followed quick ones held the writer for 7 s), and the writer waits for the whole step.
                pages = adapt(pages, time.perf_counter() - started, 16, MAX_VACUUM_PAGES, VACUUM_SECONDS)
                # The writer waits for the lock in SQLite's busy handler, which looks again every 100 ms at most:
                # leave it a longer gap than that, or it may miss one gap after another.
                time.sleep(BUSY_GAP)
        _checkpoint(dbapi)
        return max(0, before - _raw_pragma(dbapi, "page_count")) * page_size
    except sqlite3.Error as exc:
        raise StoreError(f"store unavailable: {type(exc).__name__} in VACUUM: {str(exc)[:300]}") from exc
    finally:
        raw.close()
