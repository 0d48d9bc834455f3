"""The store's database engine (:func:`make_engine`) and how its writer commits (:class:`~hub.store.writer.Durability`)
on each dialect: SQLite (WAL mode, incremental auto_vacuum, pragmas on every connection, the WAL flushed by the
writer's WalSyncer) and PostgreSQL (a pool, relaxed commits for claims and marks).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry

from hub.store.bulk import sqlite_connection
from hub.store.writer import Durability

__all__ = ["make_engine"]


def _sqlite_pragmas(synchronous: str) -> Callable[[DBAPIConnection, ConnectionPoolEntry], None]:
    def on_connect(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        cur = dbapi_conn.cursor()
        # Before anything creates a table: a new file gives the space of pruned messages back (hub.store.retention);
        # on an existing file it only takes effect at its next VACUUM.
        cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous.upper()}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=15000")
        # After a checkpoint the WAL is cut back to 64 MB instead of keeping the largest size it ever reached (a
        # prune or the one-time VACUUM grows it past a GB).
        cur.execute("PRAGMA journal_size_limit=67108864")
        cur.close()

    return on_connect


class SqliteDurability:
    """With ``synchronous: full`` the writer's connection runs NORMAL and its WalSyncer flushes the WAL for durable
    batches (see hub.store.writer); with ``normal`` nothing is flushed at commit (a power loss may undo the last
    commits, a crash of the process does not).

    (Tried and dropped: WAL checkpoints on a background thread instead of inside the commit that fills the WAL.
    Under a steady load the writer appends while the checkpoint runs, so the WAL never restarts and grew to
    165 MB in 3,000 commits, and the background fsyncs slowed every commit by ~30 %.)
    """

    def __init__(self, synchronous: str, path: str | None) -> None:
        self.wal_path = f"{path}-wal" if path and synchronous.upper() in ("FULL", "EXTRA") else None

    def connected(self, conn: Connection) -> None:
        if self.wal_path is not None:
            sqlite_connection(conn).execute("PRAGMA synchronous=NORMAL")

    def within(self, conn: Connection, durable: bool) -> None:
        return None


class PostgresDurability:
    """Batches of claims and marks commit without waiting for the WAL flush (synchronous_commit=off); PostgreSQL's
    own WAL writer flushes them within 3 × wal_writer_delay (600 ms by default)."""

    wal_path: str | None = None

    def connected(self, conn: Connection) -> None:
        return None

    def within(self, conn: Connection, durable: bool) -> None:
        if not durable:
            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")


def make_engine(url: str, *, synchronous: str, pool_size: int) -> tuple[Engine, Durability | None]:
    """The engine for ``url`` and the durability its writer commits with (None: every commit waits for the disk)."""
    u = make_url(url)
    dialect = u.get_backend_name()
    kwargs: dict[str, Any] = {}
    if dialect == "sqlite":
        db = u.database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 15, "check_same_thread": False}
    else:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_timeout=10)
        if dialect == "postgresql":
            kwargs["connect_args"] = {"connect_timeout": 10}
    # hide_parameters: an error's text never carries the values bound to the statement (patient data)
    engine = create_engine(url, hide_parameters=True, **kwargs)
    durability: Durability | None = None
    if dialect == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas(synchronous))
        db = u.database
        durability = SqliteDurability(synchronous, str(Path(db).resolve()) if db and db != ":memory:" else None)
    elif dialect == "postgresql":
        durability = PostgresDurability()
    return engine, durability
