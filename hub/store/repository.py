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
:mod:`hub.store.counters`   the counts kept with the writes (triggers), read in constant time
:mod:`hub.store.retention`  pruning old messages
:mod:`hub.store.rollups`    per-minute rollups (charts), queue depth samples, the hub's own alerts
:mod:`hub.store.sequences`  durable sequences (X12 control numbers) and cursors
:mod:`hub.store.leases`     named leases between nodes
:mod:`hub.store.nodes`      nodes' heartbeats, the takeover of a dead node's leases, shared channel state
:mod:`hub.store.connect`    the engine and the writer's durability per dialect
:mod:`hub.store.records`    the value objects the store takes and gives, and the statuses
:mod:`hub.store.bulk`       many rows in one statement (the driver's own executemany on SQLite)
==========================  =========================================================================

Delivery states (DESIGN.md §2): ``queued → sending → sent``, or ``sending → retry → sending … → dead``.
A ``sending`` row carries a lease (owner, until); when a node dies — its heartbeat stops for ``dead_after`` — or
its leases expire, :meth:`Store.take_over` puts those rows back to ``retry`` for any node to take (at-least-once).
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import Connection, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from hub.errors import StoreError
from hub.schedules import parse_duration
from hub.store import counters, leases, nodes, retention, rollups, search, search_index, sequences
from hub.store import queue as delivery_queue
from hub.store.accept import AcceptOp, reprocess
from hub.store.connect import make_engine
from hub.store.nodes import SharedState
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

if TYPE_CHECKING:
    from hub.spec import Config

__all__ = [
    "Store",
    "open_store",
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
log = logging.getLogger("hub.store")


@dataclass
class FnOp(Generic[T]):
    """Any other write: a function of the connection, run in the writer's transaction. ``durable=False``: nobody
    waits on the disk for it (the text index's batches: lost with a power cut, they are done again from where the
    store says the index stands, which the same transaction wrote) — no WAL flush of its own."""

    fn: Callable[..., T]
    args: tuple[Any, ...] = ()
    durable: bool = True

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
        dead_after: float = 10.0,
    ) -> None:
        self.url = url
        # Stable across restarts, so a restarted node takes back what it left in flight (see recover()).
        # Several hub processes on one host sharing a store must each set their own `node:` in hub.yaml.
        self.node = node or socket.gethostname()
        self.lease_seconds = lease_seconds
        # A node whose heartbeat is older than this is dead: its deliveries and leases are taken over (hub.store.nodes).
        self.dead_after = dead_after
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

    def migrate(self, revision: str = "head", *, downgrade: bool = False) -> None:
        """Bring the schema to the newest Alembic revision (idempotent; serialised across nodes on PostgreSQL), or
        up or ``downgrade`` to ``revision`` (tests and benchmarks of a migration)."""
        if revision == "head" and not downgrade and self._at_head():
            return  # the usual case: nothing to do, and Alembic (~0.2 s to import) stays unimported
        from alembic import command
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        try:
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(4242001)"))
                cfg.attributes["connection"] = conn
                (command.downgrade if downgrade else command.upgrade)(cfg, revision)
        except SQLAlchemyError as exc:
            raise store_error(exc) from exc

    def _at_head(self) -> bool:
        """Whether the database's ``alembic_version`` already names the newest migration of the versions folder."""
        try:
            with self.engine.connect() as conn:
                if not self.engine.dialect.has_table(conn, "alembic_version"):
                    return False
                current = set(conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars())
        except SQLAlchemyError:
            return False  # Alembic will say what is wrong
        return current == {_head_revision()}

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

    def accept(self, items: list[NewMessage], *, cursor: tuple[str, str] | None = None) -> list[Accepted]:
        """Store messages and their deliveries in one transaction; returns after the commit. ``cursor`` (name,
        value) is set in that transaction: a poller's place, kept with what it read."""
        return self._write(AcceptOp(items, cursor))

    async def accept_async(self, items: list[NewMessage], *, cursor: tuple[str, str] | None = None) -> list[Accepted]:
        return await self._awrite(AcceptOp(items, cursor))

    def reprocess(self, message_id: int, item: NewMessage) -> list[int]:
        """Record a new pipeline result for a stored message (after its channel or mappings were fixed):
        its status, error and metadata are replaced and its deliveries (if any) queued. Returns delivery ids."""
        return self.run_write(reprocess, message_id, item)

    async def claim(self, channel: str, destination: str, *, limit: int, ordered: bool) -> list[Claimed]:
        return await self._awrite(
            ClaimOp(channel, destination, limit, ordered, self.node, self.lease_seconds, self.dead_after)
        )

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

    def prune(
        self,
        older_than: float,
        *,
        keep_unsent: bool = True,
        chunk: int = 1000,
        vacuum: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Delete messages received more than ``older_than`` seconds ago, with their deliveries and attempts.

        With ``keep_unsent`` a message that still has a queued, sending, retrying or dead delivery is kept.
        Deletes children first and in chunks of at most ``chunk`` messages and about a fifth of a second, pausing
        between them, so no orphan is ever left and an accept waits at most one chunk. Then, with
        ``vacuum``, gives the freed space back (SQLite, see :meth:`vacuum`). ``progress(total)`` after each chunk.
        """
        n = self._prune(time.time() - older_than, keep_unsent, chunk, None, progress)
        if n:
            self.tidy_text_index()
        if vacuum and n:
            self.vacuum()
        return n

    def prune_to_size(
        self,
        max_size: int,
        *,
        chunk: int = 1000,
        vacuum: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> retention.SizePrune:
        """While the store is bigger than ``max_size`` bytes (:meth:`size`), delete the oldest messages — never one
        with a delivery still queued, sending, retrying or dead — in chunks as :meth:`prune` does. The result's
        ``over`` says the store is still too big: only messages with undelivered deliveries are left."""
        size = before = self.run_read(retention.disk_size)
        total = 0
        if size > max_size:
            size = before = self.size()
            per = size / max(1, self.run_read(retention.message_count))  # first guess: the average message
            for _ in range(20):  # then what the last pass freed per message, until under (one pass on PostgreSQL)
                want = retention.to_prune(size, max_size, per)
                if not want:
                    break
                n = self._prune(None, True, chunk, want, progress)
                total += n
                if n:
                    self.tidy_text_index()  # a segment of the text index whose messages are gone counts no more
                size, last = self.size(), size
                if n < want:
                    break  # what is left is undelivered
                if last > size:
                    per = (last - size) / n
        if vacuum and total:
            self.vacuum()
        return retention.SizePrune(total, before, size, max_size)

    def _prune(
        self,
        cutoff: float | None,
        keep_unsent: bool,
        chunk: int,
        limit: int | None,
        progress: Callable[[int], None] | None,
    ) -> int:
        pacer = retention.Pacer(chunk)
        after: tuple[float, int] | None = None
        total = 0
        while limit is None or total < limit:
            size = pacer.size if limit is None else min(pacer.size, limit - total)
            started = time.perf_counter()
            n, after = self.run_write(retention.prune_chunk, cutoff, keep_unsent, size, after)
            total += n
            if progress is not None:
                progress(total)
            if n < size:
                break
            pause = pacer.done(time.perf_counter() - started)
            retention.checkpoint(self.engine)  # SQLite: off the writer's thread
            time.sleep(pause)  # what waits for the writer goes first
        return total

    def size(self) -> int:
        """The store's size as ``retention.max_size`` counts it: SQLite's pages in use, PostgreSQL's live data."""
        return self.run_read(retention.store_size)

    def vacuum(self, *, full: bool = False) -> int:
        """SQLite: give the space of deleted rows back to the file system, in short steps (``full``: one VACUUM,
        which also switches a file made before auto_vacuum — see :func:`hub.store.retention.give_back`). Returns
        the bytes given back; 0 on PostgreSQL, where autovacuum makes that space reusable by new rows."""
        try:
            return retention.give_back(self.engine, full=full)
        except SQLAlchemyError as exc:
            raise store_error(exc) from exc

    def tidy_text_index(self) -> int:
        """SQLite, after a prune: retire the text index segments whose messages are all gone and those that are
        mostly stale (these are indexed again), one segment per writer transaction, then delete the retired tables'
        rows in steps of about :data:`hub.store.retention.CHUNK_SECONDS` (accepts go between them); returns how many
        segments it changed."""
        n = 0
        while self.run_write(search_index.tidy):
            n += 1
            time.sleep(0.01)  # what waits for the writer goes first
        rows = 200
        while True:  # the retired tables' pages, a step of about CHUNK_SECONDS at a time
            started = time.perf_counter()
            if not self.run_write(search_index.shrink_retired, rows):
                break
            took = time.perf_counter() - started
            log.debug("store: deleted %d rows of a retired text index segment in %.3f s", rows, took)
            rows = retention.adapt(rows, took, 20, 20_000)
            retention.checkpoint(self.engine)  # off the writer's thread
            time.sleep(min(max(took / 4, 0.005), 0.1))
        return n

    def index_text(self, *, rows: int = 200, budget: float | None = None, step: float = 0.02) -> int:
        """SQLite: index the messages the text index does not cover yet (newest segment first), a batch per writer
        transaction of about ``step`` seconds (the accepts queued behind one wait no longer), until all are or
        ``budget`` seconds have passed; returns how many it indexed. The running hub calls it every second
        (:class:`hub.engine.Engine`); a search scans what is not indexed yet, so it only makes searches faster."""
        if self.dialect != "sqlite" or not self.run_read(search_index.pending):
            return 0
        total = 0
        ends = None if budget is None else time.monotonic() + budget
        while ends is None or time.monotonic() < ends:
            started = time.perf_counter()
            n = self._write(FnOp(search_index.index_step, (rows,), durable=False))
            if not n:
                break
            total += n
            took = time.perf_counter() - started
            if took > step:
                rows = max(20, int(rows * step / took))
            elif took < step / 2:
                rows = min(20_000, rows * 2)
            time.sleep(min(max(took, 0.002), 0.05))  # what waits for the writer goes first
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
            return self.run_write(leases.acquire, name, self.node, ttl, self.dead_after)
        except StoreError:
            return False

    def release_lease(self, name: str) -> None:
        self.run_write(leases.release, name, self.node)

    # ---------------------------------------------------------------- nodes and shared channel state
    def heartbeat(self, started_at: float, pid: int | None = None, version: str = "") -> None:
        """Record that this node is alive (``cluster.heartbeat``); see :mod:`hub.store.nodes`."""
        self.run_write(nodes.heartbeat, self.node, started_at, pid, socket.gethostname(), version)

    def leave(self) -> None:
        """This node stops cleanly: its heartbeat row goes."""
        self.run_write(nodes.leave, self.node)

    def take_over(self) -> tuple[int, list[str]]:
        """Put back the deliveries of dead nodes and of expired leases (ids kept: FIFO order holds) and free the
        dead nodes' named leases. Returns (deliveries taken back, the dead nodes)."""
        return self.run_write(nodes.take_over, self.node, self.dead_after)

    def nodes(self) -> list[dict[str, Any]]:
        """The nodes sharing the store, with their heartbeat and whether they are alive."""
        return self._read(lambda conn: nodes.list_nodes(conn, self.dead_after))

    def channel_states(self) -> dict[str, SharedState]:
        """Each channel's shared paused/enabled state (channels never paused nor disabled are absent)."""
        return self._read(nodes.channel_states)

    def channel_report(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """Each channel's last state as a running hub recorded it ({state, error, node, at}), or ``paused`` /
        ``disabled`` (with changed_by, changed_at) as the shared channel state says; channels never started nor
        paused: absent. (``hub status`` and the notifier.)"""
        out: dict[str, dict[str, Any]] = {}
        for name in names:
            raw = self.get_cursor(f"{nodes.CHANNEL_STATE_PREFIX}{name}")
            if raw:
                try:
                    out[name] = json.loads(raw)
                except ValueError:
                    continue
        try:  # paused or disabled in the store (by any node): that is the state every node applies
            shared = self.channel_states()
        except StoreError:
            shared = {}
        for name in names:
            st = shared.get(name)
            if st is None or (st.enabled and not st.paused):
                continue
            rec = out.get(name, {})
            if st.enabled and rec.get("state") == "failed":
                continue  # paused, but its source could not start either: failed says more
            out[name] = {
                **rec,
                "state": "paused" if st.enabled else "disabled",
                "changed_by": st.changed_by,
                "changed_at": st.changed_at,
            }
        return out

    def set_channel_state(
        self, channel: str, *, paused: bool | None = None, enabled: bool | None = None, by: str | None = None
    ) -> SharedState:
        """Pause/resume (``paused``) or disable/enable (``enabled``) a channel on every node sharing the store."""
        return self.run_write(
            lambda conn: nodes.set_channel_state(conn, channel, paused=paused, enabled=enabled, by=by)
        )

    # ---------------------------------------------------------------- read path
    def run_read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)`` on a reader connection; database errors become StoreError."""
        try:
            with self.engine.connect() as conn:
                return fn(conn)
        except SQLAlchemyError as exc:
            raise store_error(exc) from exc

    _read = run_read

    def fold_counters(self) -> None:
        """PostgreSQL: fold the count deltas the writes appended into the counters (:mod:`hub.store.counters`), so
        they stay few; the readers of counts call it. A no-op on SQLite; a failure only leaves them for later."""
        if self.dialect != "postgresql":
            return
        try:
            with self.engine.begin() as conn:
                counters.fold(conn)
            with self.engine.begin() as conn:
                rollups.fold(conn)
        except SQLAlchemyError as exc:
            log.warning("store: cannot fold the counters now: %s", exc)

    # ---------------------------------------------------------------- rollups, queue samples, alerts (0009)
    def rollup_sums(
        self, start: float, end: float, step: int, *, channel: str | None = None, destination: str | None = None
    ) -> dict[str, dict[int, int]]:
        """metric → {bucket start: count} of the per-minute rollups (:func:`hub.store.rollups.sums`)."""
        return self._read(lambda conn: rollups.sums(conn, start, end, step, channel=channel, destination=destination))

    def rollup_minutes(self, start: float, end: float, metrics: Sequence[str]) -> dict[str, dict[int, int]]:
        """Every channel's per-minute counts of ``metrics`` (:func:`hub.store.rollups.minutes`)."""
        return self._read(lambda conn: rollups.minutes(conn, start, end, metrics))

    def queue_samples(
        self, start: float, end: float, *, channel: str | None = None, destination: str | None = None
    ) -> dict[int, int]:
        return self._read(
            lambda conn: rollups.queue_samples(conn, start, end, channel=channel, destination=destination)
        )

    def sample_queues(self, now: float | None = None) -> int:
        """Record this minute's depth of every queue (the engine's sampler, one node at a time)."""
        return self.run_write(rollups.sample_queues, now)

    def prune_rollups(self, now: float | None = None) -> int:
        """Rollups and queue samples older than 8 days, alerts resolved more than 7 days ago."""
        return self.run_write(rollups.prune, now)

    def alerts(self, since: float) -> tuple[list[rollups.Alert], list[rollups.Alert]]:
        """(firing now, resolved since ``since``)."""
        return self._read(lambda conn: (rollups.open_alerts(conn), rollups.recent_alerts(conn, since)))

    def record_alerts(
        self, fired: Sequence[tuple[str, str, str, str | None, str, str | None]], resolved: Sequence[int]
    ) -> None:
        """Record alerts that started firing ((rule, severity, channel, destination, summary, status) each) and
        those that stopped, in one transaction."""

        def fn(conn: Connection) -> None:
            for args in fired:
                rollups.fire(conn, *args)
            rollups.resolve(conn, resolved)

        self.run_write(fn)

    def status(self) -> dict[str, Any]:
        """Counts per channel (messages by status) and per destination (deliveries by status, oldest queued), in
        constant time: from the counters kept with the writes."""
        self.fold_counters()
        return self._read(search.status)

    def search(self, q: SearchQuery) -> list[dict[str, Any]]:
        return self._read(lambda conn: search.search(conn, q))

    def get_message(self, message_id: int) -> dict[str, Any] | None:
        """A message with its raw bytes, its deliveries (content, response, errors) and their attempts."""
        return self._read(lambda conn: search.get_message(conn, message_id))

    def message_ids(self, q: SearchQuery) -> list[int]:
        return [r["id"] for r in self.search(q)]

    def queue_depth(self) -> dict[tuple[str, str], int]:
        self.fold_counters()
        return self._read(search.queue_depth)

    def delivery_states(self, message_id: int) -> list[str]:
        return self._read(lambda conn: search.delivery_states(conn, message_id))


_REVISION = re.compile(r'^(down_revision|revision)\s*=\s*"([^"]*)"', re.M)


def _head_revision() -> str | None:
    """The newest revision of ``migrations/versions``: the one no other revision names as its ``down_revision``
    (read from the files' text, as Alembic would, without importing Alembic); None when it is not one."""
    revs: set[str] = set()
    downs: set[str] = set()
    for f in (Path(__file__).parent / "migrations" / "versions").glob("*.py"):
        for key, value in _REVISION.findall(f.read_text(encoding="utf-8")):
            (revs if key == "revision" else downs).add(value)
    heads = revs - downs
    return heads.pop() if len(heads) == 1 else None


def open_store(cfg: Config, *, migrate: bool = True) -> Store:
    """The store of a hub's config, open (migrated unless ``migrate=False``)."""
    s = cfg.hub.store
    return Store(
        cfg.store_url(),
        batch_max=s.batch_max,
        synchronous=s.synchronous,
        pool_size=s.pool_size,
        node=cfg.hub.node,
        dead_after=parse_duration(cfg.hub.cluster.dead_after),
    ).open(migrate=migrate)


class Repository:
    """Base of the repositories that keep their own tables in the store (users and audit, claim status …):
    reads on a reader connection, writes through the store's group-commit writer."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _read(self, fn: Callable[[Connection], T]) -> T:
        return self.store.run_read(fn)

    def _write(self, fn: Callable[[Connection], T]) -> T:
        return self.store.run_write(fn)
