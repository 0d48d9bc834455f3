"""The store: accept, claim, mark, replay, search, status, prune, leases and sequences.

Writes go through the :class:`~hub.store.writer.GroupWriter` (group commit); reads use their own pooled
connections (SQLite in WAL mode lets readers run beside the writer).

Delivery states (DESIGN.md §2): ``queued → sending → sent``, or ``sending → retry → sending … → dead``.
A ``sending`` row carries a lease (owner, until); when a node dies its leases expire and
:meth:`Store.recover` puts those rows back to ``retry`` for any node to take (at-least-once).
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import (
    Connection,
    and_,
    create_engine,
    delete,
    event,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from hub.errors import StoreError
from hub.store.schema import attempts, cursors, deliveries, leases, messages, sequences
from hub.store.writer import GroupWriter, store_error

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

log = logging.getLogger("hub.store")

MESSAGE_STATUSES = ("accepted", "filtered", "rejected", "error")
DELIVERY_STATUSES = ("queued", "sending", "retry", "sent", "dead")
PENDING = ("queued", "retry", "sending")
INDEXED = ("control_id", "message_type", "sending_app", "sending_facility", "patient_id")
_LIMITS = {"control_id": 200, "message_type": 60, "sending_app": 200, "sending_facility": 200, "patient_id": 200}


def _clip(key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)[: _LIMITS.get(key, 200)]


# ------------------------------------------------------------------------------------------------ value objects
@dataclass
class NewDelivery:
    destination: str
    route: str | None = None
    content: bytes | None = None  # None: the message's raw bytes
    content_type: str | None = None
    order_key: str | None = None


@dataclass
class NewMessage:
    channel: str
    raw: bytes
    content_type: str
    status: str = "accepted"
    received_at: float = field(default_factory=time.time)
    meta: dict[str, Any] = field(default_factory=dict)
    source_ref: str | None = None
    dedup_key: str | None = None
    error: str | None = None
    error_code: str | None = None
    deliveries: list[NewDelivery] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        extra = {k: v for k, v in self.meta.items() if k not in INDEXED and v is not None}
        return {
            "channel": self.channel,
            "received_at": self.received_at,
            "status": self.status,
            "content_type": self.content_type,
            **{k: _clip(k, self.meta.get(k)) for k in INDEXED},
            "source_ref": (self.source_ref or None) and self.source_ref[:500],
            "dedup_key": self.dedup_key,
            "error": self.error,
            "error_code": self.error_code,
            "meta": json.dumps(extra, default=str) if extra else None,
            "size": len(self.raw),
            "raw": self.raw,
        }


@dataclass
class Accepted:
    message_id: int
    duplicate: bool = False
    delivery_ids: list[int] = field(default_factory=list)


@dataclass
class Claimed:
    """A delivery claimed by a worker, with what it needs to send it."""

    id: int
    message_id: int
    channel: str
    destination: str
    attempts: int
    order_key: str | None
    content: bytes
    content_type: str
    received_at: float
    meta: dict[str, Any]


@dataclass
class Mark:
    """The result of one attempt: ``sent``, ``retry`` (with ``next_at``) or ``dead``."""

    delivery_id: int
    outcome: str
    attempts: int
    error: str | None = None
    response: str | None = None
    next_at: float | None = None
    drop_content: bool = False
    record: bool = True  # False: hand a claimed delivery back without counting an attempt (FIFO stop)


@dataclass
class SearchQuery:
    channel: str | None = None
    status: str | None = None  # a message status or a delivery status (a message with such a delivery)
    since: float | None = None
    until: float | None = None
    control_id: str | None = None
    patient_id: str | None = None
    message_type: str | None = None  # "ADT" matches ADT^*, "ADT^A04" exactly
    text: str | None = None
    destination: str | None = None
    before_id: int | None = None  # keyset paging: messages with a smaller id
    limit: int = 100


# ------------------------------------------------------------------------------------------------ write operations
def _delivery_row(message_id: int, channel: str, d: NewDelivery, now: float) -> dict[str, Any]:
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
    items: list[NewMessage]

    @staticmethod
    def run_batch(conn: Connection, ops: Sequence[AcceptOp]) -> list[list[Accepted]]:
        now = time.time()
        flat = [item for op in ops for item in op.items]
        results: list[Accepted | None] = [None] * len(flat)

        # Dedup: an item whose (channel, dedup_key) is already stored, or repeats an earlier item, is a duplicate.
        dup_of: dict[int, int] = {}  # index → index of the first item with the same key in this batch
        keyed = [(i, (it.channel, it.dedup_key)) for i, it in enumerate(flat) if it.dedup_key]
        if keyed:
            wanted = {k for _, k in keyed}
            found: dict[tuple[str, str], int] = {}
            for chunk in _chunks(sorted({key for _, key in wanted}), 500):
                q = select(messages.c.id, messages.c.channel, messages.c.dedup_key).where(
                    messages.c.dedup_key.in_(chunk)
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

        fresh = [i for i in range(len(flat)) if results[i] is None and i not in dup_of]
        if fresh:
            ids = _insert_many(conn, messages, [flat[i].row() for i in fresh])
            drows: list[dict[str, Any]] = []
            owners: list[int] = []
            for i, mid in zip(fresh, ids, strict=False):
                results[i] = Accepted(mid)
                for d in flat[i].deliveries:
                    drows.append(_delivery_row(mid, flat[i].channel, d, now))
                    owners.append(i)
            if drows:
                for i, did in zip(owners, _insert_many(conn, deliveries, drows), strict=False):
                    results[i].delivery_ids.append(did)  # type: ignore[union-attr]
        for i, j in dup_of.items():
            results[i] = Accepted(results[j].message_id, duplicate=True)  # type: ignore[union-attr]
        out: list[list[Accepted]] = []
        pos = 0
        for op in ops:
            out.append([r for r in results[pos : pos + len(op.items)]])  # type: ignore[misc]
            pos += len(op.items)
        return out

    def run(self, conn: Connection) -> list[Accepted]:
        return self.run_batch(conn, [self])[0]


@dataclass
class ClaimOp:
    # Not flushed to disk at commit (see hub.store.writer): a claim lost to a power cut is claimed again.
    durable: ClassVar[bool] = False

    channel: str
    destination: str
    limit: int
    ordered: bool
    owner: str
    lease: float

    def run(self, conn: Connection) -> list[Claimed]:
        now = time.time()
        d = deliveries.c
        sqlite = conn.dialect.name == "sqlite"
        drv = conn.connection.driver_connection if sqlite else None  # type: ignore[union-attr]
        if not sqlite:  # PostgreSQL: one claimer per queue at a time across nodes (FIFO)
            conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"{self.channel}/{self.destination}"))))
        if self.ordered:
            e = deliveries.alias("e")
            earlier = exists().where(
                and_(
                    e.c.channel == d.channel,
                    e.c.destination == d.destination,
                    e.c.order_key == d.order_key,
                    e.c.status.in_(PENDING),
                    e.c.id < d.id,
                )
            )
            ids = list(
                conn.execute(
                    select(d.id)
                    .where(
                        d.channel == self.channel,
                        d.destination == self.destination,
                        d.status.in_(("queued", "retry")),
                        d.next_at <= now,
                        ~earlier,
                    )
                    .order_by(d.id)
                    .limit(self.limit)
                ).scalars()
            )
        elif sqlite:
            ids = []
            for did, status, next_at in drv.execute(
                _SQLITE_FIFO, (self.channel, self.destination, *PENDING, self.limit)
            ):
                if status == "sending" or next_at > now:
                    break
                ids.append(did)
        else:
            # Strict FIFO: the longest prefix of the queue that is ready; stop at the first that is not.
            ids = []
            for did, status, next_at in conn.execute(
                select(d.id, d.status, d.next_at)
                .where(d.channel == self.channel, d.destination == self.destination, d.status.in_(PENDING))
                .order_by(d.id)
                .limit(self.limit)
            ):
                if status == "sending" or next_at > now:
                    break
                ids.append(did)
        if not ids:
            return []
        if sqlite:
            # The driver's own statements: SQLAlchemy's expanding IN costs ~60 µs per claimed row here, and a
            # claim holds the one writer that the sources' ACKs wait for. Measured with the commit: a claim of
            # 50 rows 3.4 → 1.3 ms (a mark of 50, through _executemany: 2.5 → 1.5 ms).
            marks = ",".join("?" * len(ids))
            drv.execute(
                f"UPDATE deliveries SET status = 'sending', lease_owner = ?, lease_until = ?, updated_at = ? WHERE id IN ({marks})",
                (self.owner, now + self.lease, now, *ids),
            )
            rows = drv.execute(_SQLITE_CLAIMED.format(marks=marks), ids).fetchall()
        else:
            conn.execute(
                update(deliveries)
                .where(d.id.in_(ids))
                .values(status="sending", lease_owner=self.owner, lease_until=now + self.lease, updated_at=now)
            )
            m = messages.c
            rows = conn.execute(
                select(*(d[c] if t == "d" else m[c] for t, c in _CLAIM_COLUMNS))
                .join(messages, m.id == d.message_id)
                .where(d.id.in_(ids))
                .order_by(d.id)
            ).all()
        out = []
        for r in rows:
            (
                did,
                message_id,
                attempts,
                order_key,
                content,
                content_type,
                raw,
                m_content_type,
                received_at,
                *indexed,
                source_ref,
                meta_json,
            ) = r
            meta = json.loads(meta_json) if meta_json else {}
            for k, v in zip(INDEXED, indexed, strict=False):
                if v is not None:
                    meta[k] = v
            if source_ref:
                meta.setdefault("source_ref", source_ref)
            out.append(
                Claimed(
                    id=did,
                    message_id=message_id,
                    channel=self.channel,
                    destination=self.destination,
                    attempts=attempts,
                    order_key=order_key,
                    content=content if content is not None else raw,
                    content_type=content_type or m_content_type,
                    received_at=received_at,
                    meta=meta,
                )
            )
        return out


# What a claim reads of each delivery and its message (d: deliveries, m: messages), in this order.
_CLAIM_COLUMNS = (
    ("d", "id"),
    ("d", "message_id"),
    ("d", "attempts"),
    ("d", "order_key"),
    ("d", "content"),
    ("d", "content_type"),
    ("m", "raw"),
    ("m", "content_type"),
    ("m", "received_at"),
    *(("m", k) for k in INDEXED),
    ("m", "source_ref"),
    ("m", "meta"),
)
_SQLITE_FIFO = (
    "SELECT id, status, next_at FROM deliveries WHERE channel = ? AND destination = ? AND status IN (?, ?, ?) "
    "ORDER BY id LIMIT ?"
)
_SQLITE_CLAIMED = (
    "SELECT "
    + ", ".join(f"{t}.{c}" for t, c in _CLAIM_COLUMNS)
    + " FROM deliveries d JOIN messages m ON m.id = d.message_id WHERE d.id IN ({marks}) ORDER BY d.id"
)


_RELEASE = (
    "UPDATE deliveries SET status = :status, lease_owner = NULL, lease_until = NULL, updated_at = :updated_at "
    "WHERE id = :b_id AND lease_owner = :b_owner"
)
_MARK = (
    "UPDATE deliveries SET status = :status, attempts = :attempts, next_at = :next_at, last_error = :last_error, "
    "response = :response, sent_at = :sent_at, updated_at = :updated_at, lease_owner = NULL, lease_until = NULL "
    "WHERE id = :b_id AND lease_owner = :b_owner"
)


@dataclass
class MarkOp:
    # Not flushed to disk at commit (see hub.store.writer): a result lost to a power cut within the next second
    # makes the delivery go out again (at-least-once), never lost.
    durable: ClassVar[bool] = False

    marks: list[Mark]
    owner: str

    @staticmethod
    def run_batch(conn: Connection, ops: Sequence[MarkOp]) -> list[None]:
        now = time.time()
        d = deliveries.c
        params = []
        arows = []
        drop = []
        released = []
        for op in ops:
            for mk in op.marks:
                if not mk.record:
                    released.append(
                        {
                            "b_id": mk.delivery_id,
                            "b_owner": op.owner,
                            "status": "retry" if mk.attempts else "queued",
                            "updated_at": now,
                        }
                    )
                    continue
                params.append(
                    {
                        "b_id": mk.delivery_id,
                        "b_owner": op.owner,
                        "status": mk.outcome,
                        "attempts": mk.attempts,
                        "next_at": mk.next_at if mk.next_at is not None else now,
                        "last_error": mk.error,
                        "response": mk.response,
                        "sent_at": now if mk.outcome == "sent" else None,
                        "updated_at": now,
                    }
                )
                arows.append(
                    {
                        "delivery_id": mk.delivery_id,
                        "number": mk.attempts,
                        "at": now,
                        "outcome": mk.outcome,
                        "error": mk.error,
                        "response": mk.response,
                        "node": op.owner,
                    }
                )
                if mk.drop_content and mk.outcome == "sent":
                    drop.append(mk.delivery_id)
        if released:
            _executemany(conn, _RELEASE, released)
        if params:
            _executemany(conn, _MARK, params)
            _insert_many(conn, attempts, arows)
        for chunk in _chunks(drop, 500):
            conn.execute(update(deliveries).where(d.id.in_(chunk)).values(content=None))
        return [None] * len(ops)

    def run(self, conn: Connection) -> None:
        self.run_batch(conn, [self])


@dataclass
class FnOp:
    """Any other write: a function of the connection, run in the writer's transaction."""

    fn: Any
    args: tuple[Any, ...] = ()

    def run(self, conn: Connection) -> Any:
        return self.fn(conn, *self.args)


_SQL_CACHE: dict[tuple[str, tuple[str, ...]], str] = {}


def _insert_many(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> list[int]:
    """INSERT rows and return their new ids, in order.

    On SQLite this bypasses SQLAlchemy's insert-many-with-RETURNING, which costs ~2.5x the driver's own
    executemany on the ingest hot path (measured: 348 vs 130 µs per message in batches of 8). The ids are read
    back with last_insert_rowid(): the writer holds SQLite's single write lock from the first INSERT to the
    commit, and an INTEGER PRIMARY KEY without AUTOINCREMENT gives each new row max(rowid)+1, so the rows of
    one executemany get consecutive ids. PostgreSQL keeps SQLAlchemy's RETURNING (several nodes insert at once).
    """
    if conn.dialect.name != "sqlite":
        return [r[0] for r in conn.execute(table.insert().returning(table.c.id, sort_by_parameter_order=True), rows)]
    cols = tuple(rows[0])
    key = (table.name, cols)
    sql = _SQL_CACHE.get(key)
    if sql is None:
        sql = f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        _SQL_CACHE[key] = sql
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.executemany(sql, [tuple(r[c] for c in cols) for r in rows])
        last = cur.execute("SELECT last_insert_rowid()").fetchone()[0]
    finally:
        cur.close()
    return list(range(last - len(rows) + 1, last + 1))


def _executemany(conn: Connection, sql: str, rows: list[dict[str, Any]]) -> None:
    """One statement with ``:name`` parameters for many rows. On SQLite the driver's own executemany: SQLAlchemy's
    per-row parameter handling costs ~8 µs a row on the writer the sources' ACKs wait for (marks of 50: 880 vs 500 µs)."""
    if conn.dialect.name == "sqlite":
        conn.connection.driver_connection.executemany(sql, rows)  # type: ignore[union-attr]
    else:
        conn.execute(text(sql), rows)


def _chunks(seq: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


# ------------------------------------------------------------------------------------------------ the store
def _sqlite_pragmas(synchronous: str):  # type: ignore[no-untyped-def]
    def on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous.upper()}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=15000")
        cur.close()

    return on_connect


class _SqliteDurability:
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
            conn.connection.driver_connection.execute("PRAGMA synchronous=NORMAL")  # type: ignore[union-attr]

    def within(self, conn: Connection, durable: bool) -> None:
        return None


class _PostgresDurability:
    """Batches of claims and marks commit without waiting for the WAL flush (synchronous_commit=off); PostgreSQL's
    own WAL writer flushes them within 3 × wal_writer_delay (600 ms by default)."""

    wal_path = None

    def connected(self, conn: Connection) -> None:
        return None

    def within(self, conn: Connection, durable: bool) -> None:
        if not durable:
            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")


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
        u = make_url(url)
        self.dialect = u.get_backend_name()
        kwargs: dict[str, Any] = {}
        if self.dialect == "sqlite":
            db = u.database
            if db and db != ":memory:":
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 15, "check_same_thread": False}
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_timeout=10)
            if self.dialect == "postgresql":
                kwargs["connect_args"] = {"connect_timeout": 10}
        # hide_parameters: an error's text never carries the values bound to the statement (patient data)
        self.engine: Engine = create_engine(url, hide_parameters=True, **kwargs)
        durability: Any = None
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas(synchronous))
            memory = not u.database or u.database == ":memory:"
            durability = _SqliteDurability(synchronous, None if memory else str(Path(u.database).resolve()))
        elif self.dialect == "postgresql":
            durability = _PostgresDurability()
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

    def __exit__(self, *exc: Any) -> None:
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
    def _write(self, op: Any) -> Any:
        if not self._opened:
            raise StoreError("store is not open")
        return self.writer.submit(op).result()

    async def _awrite(self, op: Any) -> Any:
        if not self._opened:
            raise StoreError("store is not open")
        return await self.writer.submit_async(op)

    def accept(self, items: list[NewMessage]) -> list[Accepted]:
        """Store messages and their deliveries in one transaction; returns after the commit."""
        return self._write(AcceptOp(items))

    async def accept_async(self, items: list[NewMessage]) -> list[Accepted]:
        return await self._awrite(AcceptOp(items))

    async def claim(self, channel: str, destination: str, *, limit: int, ordered: bool) -> list[Claimed]:
        return await self._awrite(ClaimOp(channel, destination, limit, ordered, self.node, self.lease_seconds))

    async def mark(self, marks: list[Mark]) -> None:
        if marks:
            await self._awrite(MarkOp(marks, self.node))

    def run_write(self, fn: Any, *args: Any) -> Any:
        return self._write(FnOp(fn, args))

    async def run_write_async(self, fn: Any, *args: Any) -> Any:
        return await self._awrite(FnOp(fn, args))

    def recover(self, *, everything: bool = False, mine: bool = False) -> int:
        """Put ``sending`` rows back to ``retry``: those whose lease expired; with ``mine``, also this node's
        (at start-up: a restarted node resumes what it was sending when it died); with ``everything``, all of
        them (the start of a single-node SQLite hub, where no other process can be sending).
        """

        def op(conn: Connection) -> int:
            now = time.time()
            d = deliveries.c
            conds = [d.status == "sending"]
            if not everything:
                conds.append(or_(d.lease_until < now, d.lease_owner == self.node) if mine else d.lease_until < now)
            res = conn.execute(
                update(deliveries)
                .where(*conds)
                .values(status="retry", lease_owner=None, lease_until=None, next_at=now, updated_at=now)
            )
            return res.rowcount or 0

        return self.run_write(op)

    def replay(
        self,
        message_ids: Sequence[int] | None = None,
        *,
        channel: str | None = None,
        destination: str | None = None,
        statuses: Sequence[str] | None = None,
    ) -> int:
        """Queue deliveries again (attempts reset). Returns how many. Does not touch deliveries being sent."""

        def op(conn: Connection) -> int:
            now = time.time()
            d = deliveries.c
            conds = [d.status != "sending"]
            if message_ids is not None:
                conds.append(d.message_id.in_(list(message_ids)))
            if channel:
                conds.append(d.channel == channel)
            if destination:
                conds.append(d.destination == destination)
            if statuses:
                conds.append(d.status.in_(list(statuses)))
            res = conn.execute(
                update(deliveries).where(*conds).values(status="queued", attempts=0, next_at=now, updated_at=now)
            )
            return res.rowcount or 0

        return self.run_write(op)

    def reprocess(self, message_id: int, item: NewMessage) -> list[int]:
        """Record a new pipeline result for a stored message (after its channel or mappings were fixed):
        its status, error and metadata are replaced and its deliveries (if any) queued. Returns delivery ids."""

        def op(conn: Connection) -> list[int]:
            row = item.row()
            values = {k: row[k] for k in ("status", "error", "error_code", "meta", *INDEXED)}
            conn.execute(update(messages).where(messages.c.id == message_id).values(**values))
            now = time.time()
            drows = [_delivery_row(message_id, item.channel, d, now) for d in item.deliveries]
            return _insert_many(conn, deliveries, drows) if drows else []

        return self.run_write(op)

    def prune(self, older_than: float, *, keep_unsent: bool = True, chunk: int = 1000) -> int:
        """Delete messages received more than ``older_than`` seconds ago, with their deliveries and attempts.

        With ``keep_unsent`` a message that still has a queued, sending, retrying or dead delivery is kept.
        Deletes children first and in chunks, so no orphan is ever left and no transaction grows unbounded.
        """
        cutoff = time.time() - older_than
        total = 0
        while True:

            def op(conn: Connection) -> int:
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

            n = self.run_write(op)
            total += n
            if n < chunk:
                return total

    def next_sequence(self, name: str, start: int = 1) -> int:
        """The next number of a named sequence (X12 control numbers …): unique, increasing, durable."""

        def op(conn: Connection) -> int:
            res = conn.execute(
                update(sequences)
                .where(sequences.c.name == name)
                .values(value=sequences.c.value + 1)
                .returning(sequences.c.value)
            ).scalar()
            if res is None:
                conn.execute(sequences.insert().values(name=name, value=start))
                res = start
            return int(res)

        return self.run_write(op)

    def acquire_lease(self, name: str, ttl: float) -> bool:
        """Take or renew the lease ``name`` for this node; False while another node holds an unexpired one."""

        def op(conn: Connection) -> bool:
            now = time.time()
            row = conn.execute(select(leases.c.owner, leases.c.until).where(leases.c.name == name)).first()
            if row is None:
                conn.execute(leases.insert().values(name=name, owner=self.node, until=now + ttl))
                return True
            if row.owner == self.node or row.until < now:
                res = conn.execute(
                    update(leases)
                    .where(leases.c.name == name, or_(leases.c.owner == self.node, leases.c.until < now))
                    .values(owner=self.node, until=now + ttl)
                )
                return bool(res.rowcount)
            return False

        try:
            return self.run_write(op)
        except StoreError:
            return False

    def release_lease(self, name: str) -> None:
        self.run_write(
            lambda conn: conn.execute(delete(leases).where(leases.c.name == name, leases.c.owner == self.node))
        )

    def get_cursor(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(cursors.c.value).where(cursors.c.name == name)).scalar()

    def set_cursor(self, name: str, value: str) -> None:
        def op(conn: Connection) -> None:
            res = conn.execute(
                update(cursors).where(cursors.c.name == name).values(value=value, updated_at=time.time())
            )
            if not res.rowcount:
                conn.execute(cursors.insert().values(name=name, value=value, updated_at=time.time()))

        self.run_write(op)

    # ---------------------------------------------------------------- read path
    def run_read(self, fn: Any) -> Any:
        """Run ``fn(connection)`` on a reader connection; database errors become StoreError."""
        try:
            with self.engine.connect() as conn:
                return fn(conn)
        except SQLAlchemyError as exc:
            raise store_error(exc) from exc

    _read = run_read

    def status(self) -> dict[str, Any]:
        """Counts per channel (messages by status) and per destination (deliveries by status, oldest queued)."""

        def fn(conn: Connection) -> dict[str, Any]:
            m, d = messages.c, deliveries.c
            chans: dict[str, dict[str, int]] = {}
            for ch, st, n in conn.execute(select(m.channel, m.status, func.count()).group_by(m.channel, m.status)):
                chans.setdefault(ch, {})[st] = n
            dests: dict[tuple[str, str], dict[str, Any]] = {}
            for ch, dest, st, n, oldest in conn.execute(
                select(d.channel, d.destination, d.status, func.count(), func.min(d.created_at)).group_by(
                    d.channel, d.destination, d.status
                )
            ):
                row = dests.setdefault((ch, dest), {"oldest_queued": None})
                row[st] = n
                if st in PENDING and oldest is not None:
                    prev = row["oldest_queued"]
                    row["oldest_queued"] = oldest if prev is None else min(prev, oldest)
            return {"channels": chans, "destinations": dests}

        return self._read(fn)

    def search(self, q: SearchQuery) -> list[dict[str, Any]]:
        def fn(conn: Connection) -> list[dict[str, Any]]:
            m, d = messages.c, deliveries.c
            cols = [
                m.id,
                m.channel,
                m.received_at,
                m.status,
                m.content_type,
                m.control_id,
                m.message_type,
                m.sending_app,
                m.sending_facility,
                m.patient_id,
                m.source_ref,
                m.error,
                m.size,
            ]
            stmt = select(*cols)
            if q.channel:
                stmt = stmt.where(m.channel == q.channel)
            if q.status:
                if q.status in MESSAGE_STATUSES:
                    stmt = stmt.where(m.status == q.status)
                else:
                    sub = exists().where(d.message_id == m.id, d.status == q.status)
                    if q.destination:
                        sub = sub.where(d.destination == q.destination)
                    stmt = stmt.where(sub)
            elif q.destination:
                stmt = stmt.where(exists().where(d.message_id == m.id, d.destination == q.destination))
            if q.since is not None:
                stmt = stmt.where(m.received_at >= q.since)
            if q.until is not None:
                stmt = stmt.where(m.received_at < q.until)
            if q.control_id:
                stmt = stmt.where(m.control_id == q.control_id)
            if q.patient_id:
                stmt = stmt.where(m.patient_id == q.patient_id)
            if q.message_type:
                if "^" in q.message_type:
                    stmt = stmt.where(m.message_type == q.message_type)
                else:
                    stmt = stmt.where(
                        or_(
                            m.message_type == q.message_type,
                            m.message_type.between(q.message_type + "^", q.message_type + "^\uffff"),
                        )
                    )
            if q.text:
                needle = q.text.encode()
                if conn.dialect.name == "postgresql":
                    stmt = stmt.where(func.position(literal(needle).op("IN")(m.raw)) > 0)
                else:
                    stmt = stmt.where(func.instr(m.raw, literal(needle)) > 0)
            if q.before_id is not None:
                stmt = stmt.where(m.id < q.before_id)
            stmt = stmt.order_by(m.id.desc()).limit(q.limit)
            rows = [dict(r._mapping) for r in conn.execute(stmt)]
            if rows:
                ids = [r["id"] for r in rows]
                summary: dict[int, dict[str, int]] = {}
                for mid, st, n in conn.execute(
                    select(d.message_id, d.status, func.count())
                    .where(d.message_id.in_(ids))
                    .group_by(d.message_id, d.status)
                ):
                    summary.setdefault(mid, {})[st] = n
                for r in rows:
                    r["deliveries"] = summary.get(r["id"], {})
            return rows

        return self._read(fn)

    def get_message(self, message_id: int) -> dict[str, Any] | None:
        """A message with its raw bytes, its deliveries (content, response, errors) and their attempts."""

        def fn(conn: Connection) -> dict[str, Any] | None:
            row = conn.execute(select(messages).where(messages.c.id == message_id)).first()
            if row is None:
                return None
            msg = dict(row._mapping)
            msg["meta"] = json.loads(msg["meta"]) if msg["meta"] else {}
            dl = [
                dict(r._mapping)
                for r in conn.execute(
                    select(deliveries).where(deliveries.c.message_id == message_id).order_by(deliveries.c.id)
                )
            ]
            by_id = {x["id"]: x for x in dl}
            for x in dl:
                x["attempt_log"] = []
            if by_id:
                for a in conn.execute(
                    select(attempts).where(attempts.c.delivery_id.in_(list(by_id))).order_by(attempts.c.id)
                ):
                    by_id[a.delivery_id]["attempt_log"].append(dict(a._mapping))
            msg["deliveries"] = dl
            return msg

        return self._read(fn)

    def message_ids(self, q: SearchQuery) -> list[int]:
        return [r["id"] for r in self.search(q)]

    def queue_depth(self) -> dict[tuple[str, str], int]:
        def fn(conn: Connection) -> dict[tuple[str, str], int]:
            d = deliveries.c
            return {
                (ch, dest): n
                for ch, dest, n in conn.execute(
                    select(d.channel, d.destination, func.count())
                    .where(d.status.in_(PENDING))
                    .group_by(d.channel, d.destination)
                )
            }

        return self._read(fn)

    def delivery_states(self, message_id: int) -> list[str]:
        return self._read(
            lambda conn: list(
                conn.execute(select(deliveries.c.status).where(deliveries.c.message_id == message_id)).scalars()
            )
        )


class Repository:
    """Base of the repositories that keep their own tables in the store (users and audit, claims …):
    reads on a reader connection, writes through the store's group-commit writer."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _read(self, fn: Any) -> Any:
        return self.store.run_read(fn)

    def _write(self, fn: Any) -> Any:
        return self.store.run_write(fn)
