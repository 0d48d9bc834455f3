"""The store's facade: :class:`Store` opens the database, migrates it, runs the group writer and offers every
operation of the store as a method; :class:`Repository` is the base of the repositories that keep their own
tables in the store (users and audit, X12 claim status …).

Writes go through the :class:`~hub.store.writer.GroupWriter` (group commit); reads use their own pooled
connections (SQLite in WAL mode lets readers run beside the writer). The work itself is done, one module per
concern, by:

==========================  =========================================================================
:mod:`hub.store.accept`     accepting messages and their deliveries (de-duplicated), reprocessing one
:mod:`hub.store.queue`      the delivery queue: claim, mark, recover expired leases, replay
:mod:`hub.store.search`     message search, one message in full, status counts and queue depths
:mod:`hub.store.retention`  pruning old messages
:mod:`hub.store.sequences`  durable sequences (X12 control numbers) and cursors
:mod:`hub.store.leases`     named leases between nodes
:mod:`hub.store.connect`    the engine and the writer's durability per dialect
:mod:`hub.store.records`    the value objects the store takes and gives, and the statuses
:mod:`hub.store.bulk`       many rows in one statement (the driver's own executemany on SQLite)
==========================  =========================================================================

Delivery states (DESIGN.md §2): ``queued → sending → sent``, or ``sending → retry → sending … → dead``.
A ``sending`` row carries a lease (owner, until); when a node dies its leases expire and
:meth:`Store.recover` puts those rows back to ``retry`` for any node to take (at-least-once).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from hub.errors import StoreError
from hub.store import leases, retention, search, sequences
from hub.store import queue as delivery_queue
from hub.store.accept import AcceptOp, reprocess
from hub.store.connect import make_engine
from hub.store.queue import ClaimOp, MarkOp
from hub.store.records import (
    DELIVERY_STATUSES,
    MESSAGE_STATUSES,
    Accepted,
    Claimed,
    Mark,
    NewDelivery,
    NewMessage,
    SearchQuery,
)
from hub.store.writer import GroupWriter, WriteOp, store_error

__all__ = [
    "Store",
    "Repository",
    "NewMessage",
    "NewDelivery",
    "Accepted",
    "Claimed",
    "Mark",
    "SearchQuery",
    "MESSAGE_STATUSES",
    "DELIVERY_STATUSES",
]

T = TypeVar("T")


@dataclass
class FnOp(Generic[T]):
    """Any other write: a function of the connection, run in the writer's transaction."""

    fn: Callable[..., T]
    args: tuple[Any, ...] = ()

    def run(self, conn: Connection) -> T:
        return self.fn(conn, *self.args)


class Store:
    """The durable store. ``Store(url)``; :meth:`open` migrates and starts the writer; :meth:`close` stops it."""

    def __init__(
        self,
        url: str,
        *,
        batch_max: int = 500,
        synchronous: str = "full",
        pool_size: int = 5,
        node: str | None = None,
        lease_seconds: float = 60.0,
    ) -> None:
        self.url = url
        # Stable across restarts, so a restarted node takes back what it left in flight (see recover()).
        # Several hub processes on one host sharing a store must each set their own `node:` in hub.yaml.
        self.node = node or socket.gethostname()
        self.lease_seconds = lease_seconds
        self.dialect = make_url(url).get_backend_name()
        self.engine: Engine
        self.engine, durability = make_engine(url, synchronous=synchronous, pool_size=pool_size)
        self.writer = GroupWriter(self.engine, batch_max=batch_max, durability=durability)
        self._opened = False

    # ---------------------------------------------------------------- lifecycle
    def open(self, migrate: bool = True) -> Store:
        if migrate:
            self.migrate()
        self.writer.start()
        self._opened = True
        return self

    def close(self) -> None:
        """Commit what was submitted, then release connections. Idempotent."""
        self.writer.close()
        self.engine.dispose()
        self._opened = False

    def __enter__(self) -> Store:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent; serialised across nodes on PostgreSQL)."""
        from alembic import command
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        try:
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(4242001)"))
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except SQLAlchemyError as exc:
            raise store_error(exc) from exc

    # ---------------------------------------------------------------- write path
    def _write(self, op: WriteOp[T]) -> T:
        if not self._opened:
            raise StoreError("store is not open")
        return self.writer.submit(op).result()

    async def _awrite(self, op: WriteOp[T]) -> T:
        if not self._opened:
            raise StoreError("store is not open")
        return await self.writer.submit_async(op)

    def run_write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` in the writer's transaction; returns after the commit."""
        return self._write(FnOp(fn, args))

    async def run_write_async(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._awrite(FnOp(fn, args))

    def accept(self, items: list[NewMessage]) -> list[Accepted]:
        """Store messages and their deliveries in one transaction; returns after the commit."""
        return self._write(AcceptOp(items))

    async def accept_async(self, items: list[NewMessage]) -> list[Accepted]:
        return await self._awrite(AcceptOp(items))

    def reprocess(self, message_id: int, item: NewMessage) -> list[int]:
        """Record a new pipeline result for a stored message (after its channel or mappings were fixed):
        its status, error and metadata are replaced and its deliveries (if any) queued. Returns delivery ids."""
        return self.run_write(reprocess, message_id, item)

    async def claim(self, channel: str, destination: str, *, limit: int, ordered: bool) -> list[Claimed]:
        return await self._awrite(ClaimOp(channel, destination, limit, ordered, self.node, self.lease_seconds))

    async def mark(self, marks: list[Mark]) -> None:
        if marks:
            await self._awrite(MarkOp(marks, self.node))

    def recover(self, *, everything: bool = False, mine: bool = False) -> int:
        """Put ``sending`` rows back to ``retry``: those whose lease expired; with ``mine``, also this node's
        (at start-up: a restarted node resumes what it was sending when it died); with ``everything``, all of
        them (the start of a single-node SQLite hub, where no other process can be sending).
        """
        return self.run_write(lambda conn: delivery_queue.recover(conn, self.node, everything=everything, mine=mine))

    def replay(
        self,
        message_ids: Sequence[int] | None = None,
        *,
        channel: str | None = None,
        destination: str | None = None,
        statuses: Sequence[str] | None = None,
    ) -> int:
        """Queue deliveries again (attempts reset). Returns how many. Does not touch deliveries being sent."""
        return self.run_write(delivery_queue.replay, message_ids, channel, destination, statuses)

    def prune(self, older_than: float, *, keep_unsent: bool = True, chunk: int = 1000) -> int:
        """Delete messages received more than ``older_than`` seconds ago, with their deliveries and attempts.

        With ``keep_unsent`` a message that still has a queued, sending, retrying or dead delivery is kept.
        Deletes children first and in chunks, so no orphan is ever left and no transaction grows unbounded.
        """
        cutoff = time.time() - older_than
        total = 0
        while True:
            n = self.run_write(retention.prune_chunk, cutoff, keep_unsent, chunk)
            total += n
            if n < chunk:
                return total

    def next_sequence(self, name: str, start: int = 1) -> int:
        """The next number of a named sequence (X12 control numbers …): unique, increasing, durable."""
        return self.run_write(sequences.next_value, name, start)

    def get_cursor(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            return sequences.get_cursor(conn, name)

    def set_cursor(self, name: str, value: str) -> None:
        self.run_write(sequences.set_cursor, name, value)

    def acquire_lease(self, name: str, ttl: float) -> bool:
        """Take or renew the lease ``name`` for this node; False while another node holds an unexpired one."""
        try:
            return self.run_write(leases.acquire, name, self.node, ttl)
        except StoreError:
            return False

    def release_lease(self, name: str) -> None:
        self.run_write(leases.release, name, self.node)

    # ---------------------------------------------------------------- read path
    def run_read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)`` on a reader connection; database errors become StoreError."""
        try:
            with self.engine.connect() as conn:
                return fn(conn)
        except SQLAlchemyError as exc:
            raise store_error(exc) from exc

    _read = run_read

    def status(self) -> dict[str, Any]:
        """Counts per channel (messages by status) and per destination (deliveries by status, oldest queued)."""
        return self._read(search.status)

    def search(self, q: SearchQuery) -> list[dict[str, Any]]:
        return self._read(lambda conn: search.search(conn, q))

    def get_message(self, message_id: int) -> dict[str, Any] | None:
        """A message with its raw bytes, its deliveries (content, response, errors) and their attempts."""
        return self._read(lambda conn: search.get_message(conn, message_id))

    def message_ids(self, q: SearchQuery) -> list[int]:
        return [r["id"] for r in self.search(q)]

    def queue_depth(self) -> dict[tuple[str, str], int]:
        return self._read(search.queue_depth)

    def delivery_states(self, message_id: int) -> list[str]:
        return self._read(lambda conn: search.delivery_states(conn, message_id))


class Repository:
    """Base of the repositories that keep their own tables in the store (users and audit, claim status …):
    reads on a reader connection, writes through the store's group-commit writer."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _read(self, fn: Callable[[Connection], T]) -> T:
        return self.store.run_read(fn)

    def _write(self, fn: Callable[[Connection], T]) -> T:
        return self.store.run_write(fn)
