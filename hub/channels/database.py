"""The ``database`` connectors: a SQL query polled as a source, a SQL statement as a destination.

Both take a SQLAlchemy URL (``postgresql+psycopg://…``, ``mysql+pymysql://…`` for MariaDB and MySQL — both drivers
come with the hub; ``mssql+pyodbc://…`` with ``pip install 'hub[mssql]'``, ``oracle+oracledb://…`` with
``pip install 'hub[oracle]'``). Each component has one SQLAlchemy engine (a small pool, ``pool_pre_ping``),
created at start and disposed at stop; every database call runs on a thread, so the event loop stays free.

Source (``{type: database, url: …, query: …, schedule: 30s}``): each row the query returns — or each group of
consecutive rows with the same ``group_by`` values — becomes one message: a JSON object of the row (dates and
times ISO 8601, decimals as strings, bytes base64; a group is ``{<group columns>, rows: [...]}``) or CSV with a
header. Exactly once, in one of two ways:

* ``cursor: id`` — the query reads after ``:cursor`` (``WHERE id > :cursor ORDER BY id``); the cursor column's value
  of each message is set in the store **in the same transaction** that accepts the message (``receive(…,
  cursor=)`` → :meth:`hub.store.Store.accept`), so a crash can never separate the two: after a restart the query
  reads after the last message stored, none lost, none twice. That is one store commit per message; with a
  ``key`` as well, the messages of one read are accepted together (with their dedup keys) and only the read's last
  one carries the cursor, once the others are stored — a crash before it makes the next read find them stored.
* ``after: UPDATE results SET processed = 1 WHERE id = :id`` — run in the source database after the store committed
  the messages, its parameters taken from each row. Each message is accepted with the dedup key ``db:<key>``
  (``key:`` columns, by default the ``group_by`` columns), in the accept's own transaction; the messages of one
  read are accepted together (sharing the store's group commits), then ``after`` runs for those stored in one
  transaction of the source database. A crash between the commit and ``after`` leaves the rows unprocessed, so
  they are read again, found already stored (duplicates, not stored twice) and ``after`` is run for them then.

With neither, ``key:`` alone takes each row once by its key (the query may return it again). One node polls a
source at a time (a lease in the store, ``database:<channel>``).

Destination (``{type: database, url: …, statement: 'INSERT … VALUES (:mrn, :name)', params: {mrn: PID-3.1}}``):
the statement's named parameters come from the message by path (``PID-3.1`` for HL7 v2, ``$.patient.mrn`` for
JSON …), from its envelope or from constants; one transaction per delivery (``transaction: batch``: one for what a
worker claimed at once). Connection errors, deadlocks, lock and statement timeouts retry; a constraint
violation, a bad value or a broken statement is dead at once, with the database's message.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import decimal
import io
import json
import logging
import os
import re
import signal
import time as time_
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from sqlalchemy import Engine, create_engine, exc, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.sql.elements import TextClause

from hub.channels.base import Context, Receiver
from hub.channels.schedule import Poller, check_schedule
from hub.errors import ConfigError, DeliveryError, InputError, PermanentDelivery, RetryableDelivery
from hub.message import Message, Outcome
from hub.spec import DestinationConfig, SourceConfig, Strict, parse_duration

__all__ = ["DatabaseSource", "DatabaseDestination", "Param", "classify_db_error", "statement_params", "row_json"]

log = logging.getLogger("hub.database")

# The drivers that are not installed with the hub: the extra that brings each.
_EXTRAS = {
    "mssql": "pip install 'hub[mssql]' (pyodbc, with Microsoft's ODBC driver for SQL Server)",
    "oracle": "pip install 'hub[oracle]' (oracledb)",
}

# Errors worth retrying whatever class the driver gave them: deadlocks, serialization failures, lock and statement
# timeouts, a connection that went away.
_RETRY_SQLSTATES = {"40P01", "40001", "55P03", "57014", "57P01", "57P02", "57P03", "53300"}
_RETRY_MYSQL = {1205, 1213, 1040, 1053, 2002, 2003, 2006, 2013, 1927, 3024}


# ---------------------------------------------------------------------------------------------- shared
def statement_params(statement: str) -> list[str]:
    """The named parameters (``:name``) of a SQL statement, as SQLAlchemy's ``text()`` reads them (``::int`` casts
    are not parameters)."""
    return list(text(statement)._bindparams)


def _redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return "(not a URL)"


def _check_url(url: str) -> URL:
    """The URL parsed, its dialect known and its driver installed — else a ConfigError that says what to do."""
    try:
        u = make_url(url)
    except exc.ArgumentError:
        raise ConfigError(
            f"url {_redact(url)} is not a SQLAlchemy URL (dialect+driver://user@host:port/database)"
        ) from None
    try:
        dialect = u.get_dialect()
    except exc.NoSuchModuleError:
        raise ConfigError(f"url: SQLAlchemy has no dialect {u.drivername!r}") from None
    try:
        dialect.import_dbapi()
    except ImportError as e:
        hint = _EXTRAS.get(u.get_backend_name(), f"install the Python package {e.name or 'of the driver'}")
        raise ConfigError(f"url: the driver of {u.drivername} is not installed: {hint}") from None
    return u


def _make_engine(url: str, password: str | None, timeout: float, connect_args: dict[str, Any], pool: int) -> Engine:
    u = make_url(url)
    if password is not None:
        u = u.set(password=password)
    args = dict(connect_args)
    backend = u.get_backend_name()
    if backend in ("postgresql", "mysql", "mariadb"):
        args.setdefault("connect_timeout", max(1, int(timeout)))
    return create_engine(
        u,
        pool_pre_ping=True,
        pool_size=pool,
        max_overflow=pool,
        pool_recycle=1800,
        pool_timeout=timeout,
        connect_args=args,
    )


def _code(e: BaseException) -> tuple[str | None, int | None]:
    """(SQLSTATE, MySQL error number) of a driver's exception, when it has them."""
    orig = getattr(e, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    number = None
    args = getattr(orig, "args", None)
    if args and isinstance(args[0], int):
        number = args[0]
    return (sqlstate if isinstance(sqlstate, str) else None), number


def _db_message(e: BaseException) -> str:
    orig = getattr(e, "orig", None)
    text_ = str(orig if orig is not None else e).strip()
    args = getattr(orig, "args", None)
    if args and len(args) == 2 and isinstance(args[0], int):  # PyMySQL: (1062, "Duplicate entry …")
        text_ = f"({args[0]}) {args[1]}"
    return text_[:4000]


def _kind(e: BaseException) -> str:
    """SQLAlchemy's class of the error, and the driver's when it says more: ``IntegrityError (UniqueViolation)``."""
    orig = getattr(e, "orig", None)
    kind, detail = type(e).__name__, type(orig).__name__ if orig is not None else None
    return f"{kind} ({detail})" if detail and detail != kind else kind


def classify_db_error(e: BaseException) -> DeliveryError:
    """A database error → retry (connection, deadlock, lock or statement timeout, pool exhausted) or dead
    (constraint violation, bad data, broken SQL), with the database's own message."""
    if isinstance(e, DeliveryError):
        return e
    sqlstate, number = _code(e)
    message = f"{_kind(e)}{f' [{sqlstate or number}]' if (sqlstate or number) else ''}: {_db_message(e)}"
    if sqlstate in _RETRY_SQLSTATES or number in _RETRY_MYSQL or (sqlstate or "").startswith("08"):
        return RetryableDelivery(message)
    if isinstance(e, (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError, exc.TimeoutError)):
        return RetryableDelivery(message)
    if isinstance(e, exc.DBAPIError) and e.connection_invalidated:
        return RetryableDelivery(message)
    if isinstance(e, (exc.IntegrityError, exc.ProgrammingError, exc.DataError, exc.NotSupportedError)):
        return PermanentDelivery(message, response=message)
    if isinstance(e, exc.InternalError):
        return RetryableDelivery(message)
    if isinstance(e, exc.StatementError) and not isinstance(e, exc.DBAPIError):  # a value the driver cannot bind
        return PermanentDelivery(message, response=message)
    return RetryableDelivery(message)


def _log_reason(e: BaseException) -> str:
    """What may be logged of a database error: its class and code, and the driver's first line only for errors of
    the connection (a constraint's or a value's error text may quote data)."""
    sqlstate, number = _code(e)
    kind = _kind(e)
    code = f" [{sqlstate or number}]" if (sqlstate or number) else ""
    if isinstance(e, (exc.OperationalError, exc.InterfaceError)) and (
        (sqlstate or "").startswith(("08", "28"))  # connection; login refused (names a user, host, database)
        or number in (1044, 1045, 1049, 2002, 2003, 2006, 2013)
        or sqlstate is None
    ):
        first = _db_message(e).splitlines()[0][:200] if _db_message(e) else ""
        return f"{kind}{code}: {first}"
    return f"{kind}{code}"


def _crash_point(point: str) -> None:
    """Test hook of the crash tests (tests/test_database_crash.py): ``HUB_TEST_DATABASE_CRASH=point[:n]`` kills this
    process with SIGKILL the n-th time it passes ``point`` (``after_read``, ``after_accept``, ``after_after``)."""
    want = os.environ.get("HUB_TEST_DATABASE_CRASH")
    if not want:
        return
    name, _, nth = want.partition(":")
    if name != point:
        return
    _CRASH_COUNTS[point] = _CRASH_COUNTS.get(point, 0) + 1
    if _CRASH_COUNTS[point] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


_CRASH_COUNTS: dict[str, int] = {}
_TOGETHER = 64  # messages of one read handed to the channel at once (key and after modes)


# ---------------------------------------------------------------------------------------------- rows → messages
def _json_value(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if v == v and v not in (float("inf"), float("-inf")) else str(v)
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, (datetime, date, time)):
        return v.isoformat()
    if isinstance(v, timedelta):
        return str(v.total_seconds())
    if isinstance(v, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(v)).decode("ascii")
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    return str(v)


def row_json(columns: list[str], row: tuple[Any, ...]) -> dict[str, Any]:
    """One row as a JSON object: dates and times ISO 8601, decimals as strings, bytes base64."""
    return {c: _json_value(v) for c, v in zip(columns, row, strict=True)}


def _csv_text(v: Any) -> str:
    j = _json_value(v)
    if j is None:
        return ""
    if isinstance(j, bool):
        return "true" if j else "false"
    if isinstance(j, (list, dict)):
        return json.dumps(j, ensure_ascii=False, separators=(",", ":"))
    return str(j)


def _encode_cursor(v: Any) -> str:
    """A cursor value as the store keeps it: its type, then its text (so it is bound back as what it was)."""
    if isinstance(v, bool) or v is None:
        raise ValueError(f"a cursor column's value must be a number, a date/time or text, not {v!r}")
    if isinstance(v, int):
        return f"int:{v}"
    if isinstance(v, decimal.Decimal):
        return f"dec:{v}"
    if isinstance(v, float):
        return f"float:{v!r}"
    if isinstance(v, datetime):
        return f"ts:{v.isoformat()}"
    if isinstance(v, date):
        return f"date:{v.isoformat()}"
    return f"str:{v}"


def _decode_cursor(s: str) -> Any:
    kind, _, value = s.partition(":")
    if kind == "int":
        return int(value)
    if kind == "dec":
        return decimal.Decimal(value)
    if kind == "float":
        return float(value)
    if kind == "ts":
        return datetime.fromisoformat(value)
    if kind == "date":
        return date.fromisoformat(value)
    return value


def _newer(a: Any, b: Any) -> bool:
    try:
        return bool(a > b)
    except TypeError:
        return str(a) > str(b)


@dataclass
class _Taken:
    """One message to hand to the channel: its content, its rows, its key and its cursor value."""

    raw: bytes
    rows: list[dict[str, Any]]  # the rows as the driver gave them (the after statement's parameters)
    key: str | None
    cursor: Any = None


# ---------------------------------------------------------------------------------------------- source
class DatabaseSource:
    class Config(SourceConfig):
        """Poll a SQL query: ``{type: database, url: 'postgresql+psycopg://lab@db/lis', query: 'SELECT … WHERE id >
        :cursor ORDER BY id LIMIT 500', cursor: id, start: 0, schedule: 30s}``.

        Each row (or each group of rows, ``group_by``) becomes one message, JSON or CSV with a header. Exactly once
        either by a ``cursor`` column kept in the store with each accepted message, or by an ``after`` statement run
        in the source database once the message is stored (a row read again after a crash is recognised by its
        ``key`` and not stored twice). One node polls a source at a time.
        """

        type: Literal["database"] = "database"
        format: Literal["json", "csv"] = Field(
            "json",
            description="json: one object per row ({column: value}; dates ISO 8601, decimals as strings, bytes "
            "base64; a group is {<group_by columns>, rows: [...]}); csv: a header and the row(s).",
        )
        url: str = Field(
            description="SQLAlchemy URL: postgresql+psycopg://, mysql+pymysql:// (MariaDB, MySQL); mssql+pyodbc:// "
            "needs pip install 'hub[mssql]', oracle+oracledb:// pip install 'hub[oracle]'. Keep the password out of "
            "it (password:).",
            examples=["postgresql+psycopg://hub@lis-db:5432/lis", "mysql+pymysql://hub@127.0.0.1:3306/lis"],
        )
        password: str | None = Field(
            None, description="The database password, e.g. ${LIS_DB_PASSWORD} (any characters; no URL escaping)."
        )
        query: str = Field(
            description="The SELECT run on each poll. With cursor it reads after :cursor in cursor order "
            "(WHERE id > :cursor ORDER BY id); a LIMIT keeps each read short (max_rows is read at most anyway).",
            examples=["SELECT * FROM results WHERE processed = 0 ORDER BY id LIMIT 500"],
        )
        schedule: str | int | float = Field("30s", description="How often to poll: a duration or a cron string.")
        cursor: str | None = Field(
            None,
            description="Column whose value of each message is kept in the store with the message (same "
            "transaction) and bound as :cursor on the next read. The query must return rows in its order. One store "
            "commit a message; with key as well, a read's messages are accepted together and the last carries the "
            "cursor (several times faster).",
            examples=["id", "updated_at"],
        )
        start: str | int | float | None = Field(
            None, description="With cursor: :cursor's value before anything was stored (0, '2026-01-01')."
        )
        after: str | None = Field(
            None,
            description="Statement run in the source database once a message is stored, its :parameters taken from "
            "the row's columns (once per row of a group), e.g. UPDATE results SET processed = 1 WHERE id = :id. "
            "Needs key.",
            examples=["UPDATE results SET processed = 1 WHERE id = :id"],
        )
        key: str | list[str] | None = Field(
            None,
            description="Column(s) that identify a row (default: group_by): a message is taken once per key (a row "
            "read again after a crash is not stored twice); its source_ref is db:<channel>:<key>. Add a version "
            "column (updated_at) when a row may come back changed and should be taken again.",
            examples=["id", ["order_id", "revision"]],
        )
        group_by: str | list[str] | None = Field(
            None,
            description="Consecutive rows with the same values of these columns make one message (order the query "
            "by them).",
            examples=["order_id"],
        )
        max_rows: int = Field(
            1000, ge=1, description="Most rows read at once; a poll reads again while it gets this many."
        )
        timeout: str | int | float = Field("30s", description="Time allowed to connect.")
        connect_args: dict[str, Any] = Field(
            default_factory=dict, description="Extra arguments of the driver's connect() (sslmode, options …)."
        )

        _v_schedule = field_validator("schedule")(lambda cls, v: check_schedule(v))
        _v_timeout = field_validator("timeout")(lambda cls, v: (parse_duration(v), v)[1])

        @model_validator(mode="after")
        def _modes(self) -> DatabaseSource.Config:
            if self.cursor and self.after:
                raise ValueError(
                    "cursor and after exclude each other: with a cursor a row is never read again, so an after "
                    "statement cut off by a crash would never run; choose one"
                )
            if self.cursor and self.start is None:
                raise ValueError(
                    "cursor needs start: the value :cursor has before anything was stored (0, '2026-01-01')"
                )
            if self.after and not (self.key or self.group_by):
                raise ValueError(
                    "after needs key: the column(s) that identify a row (a row read again is not stored twice)"
                )
            if not (self.cursor or self.key or self.group_by):
                raise ValueError(
                    "name cursor (a column kept in the store) or key (with after: a statement that marks the row "
                    "taken): without either every poll would take the same rows again"
                )
            return self

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx
        _check_url(config.url)
        self.query = text(config.query)
        self.after = text(config.after) if config.after else None
        params = set(statement_params(config.query))
        if config.cursor:
            if "cursor" not in params:
                raise ConfigError(
                    f"query: with cursor: {config.cursor} the query must read after :cursor "
                    f"(WHERE {config.cursor} > :cursor ORDER BY {config.cursor})"
                )
            params.discard("cursor")
        if params:
            raise ConfigError(
                f"query: :{', :'.join(sorted(params))} has no value (the query's one parameter is :cursor, with "
                "cursor:)"
            )
        self.after_params = statement_params(config.after) if config.after else []
        self.keys = _names(config.key) or _names(config.group_by)
        self.group = _names(config.group_by)
        self.timeout = parse_duration(config.timeout)
        self.name = f"database:{ctx.channel}"
        self.engine: Engine | None = None
        self.poller: Poller | None = None
        self._receive: Receiver | None = None
        self._stopping = False
        self._failing: str | None = None  # why the last poll failed (None once one works)
        self._reached: float | None = None  # when a poll last read the database (epoch seconds)

    def peer_state(self) -> dict[str, float | str | None]:
        """:class:`~hub.channels.base.ReportsPeer`: when a poll last read the database (epoch seconds, None before
        the first) and why the last poll failed (None once one works) — the API's and dashboard's peers."""
        return {"database_last_poll": self._reached, "database_error": self._failing}

    # ---------------------------------------------------------------- lifecycle
    async def start(self, receive: Receiver) -> None:
        self._receive = receive
        self._stopping = False
        c = self.config
        self.engine = _make_engine(c.url, c.password, self.timeout, c.connect_args, 1)
        self.poller = Poller(c.schedule, self._poll_safely, f"{self.ctx.channel}:database")
        self.poller.start()

    async def stop(self) -> None:
        self._stopping = True
        if self.poller is not None:
            await self.poller.stop()
            self.poller = None
        engine, self.engine = self.engine, None
        if engine is not None:
            await asyncio.to_thread(engine.dispose)
        store = self.ctx.store
        if store is not None:  # another node may take over at once
            try:
                await asyncio.to_thread(store.release_lease, self.name)
            except Exception as e:
                log.debug("channel %s: lease not released: %s", self.ctx.channel, type(e).__name__)

    async def _poll_safely(self) -> None:
        try:
            await self.poll()
        except exc.SQLAlchemyError as e:
            self._failing = _log_reason(e)
            log.warning("channel %s: database poll failed: %s", self.ctx.channel, self._failing)
        except ConfigError as e:  # the query's columns do not fit the settings (names only, no data)
            self._failing = str(e)
            log.error("channel %s: database poll: %s", self.ctx.channel, e)
        except Exception as e:
            self._failing = type(e).__name__
            log.warning("channel %s: database poll failed: %s", self.ctx.channel, self._failing)

    # ---------------------------------------------------------------- polling
    async def poll(self) -> int:
        """Read and take what the query returns, again while a read fills ``max_rows``; returns the messages taken
        (duplicates of messages already stored included)."""
        assert self._receive is not None and self.engine is not None
        store = self.ctx.store
        ttl = max(60.0, self.timeout * 4)
        taken = 0
        while not self._stopping:
            if store is not None and not await asyncio.to_thread(store.acquire_lease, self.name, ttl):
                return taken
            cursor = self.config.start
            if self.config.cursor and store is not None:
                stored = await asyncio.to_thread(store.get_cursor, self.name)
                if stored is not None:
                    cursor = _decode_cursor(stored)
            columns, rows = await asyncio.to_thread(self._read, cursor)
            self._reached, self._failing = time_.time(), None
            _crash_point("after_read")
            full = len(rows) >= self.config.max_rows
            messages = self._messages(columns, rows, full)
            if self.config.cursor and self.keys and len(messages) > 1:
                # with a key as well: all but the last together (their dedup keys make a second read harmless),
                # then the last with the read's cursor, once the others are stored
                done, fresh, ok = await self._take_together(messages[:-1])
                if ok:
                    last = messages[-1]
                    newest = last.cursor
                    for m in messages[:-1]:
                        if _newer(m.cursor, newest):
                            newest = m.cursor
                    more, new, ok = await self._take_in_order([_Taken(last.raw, last.rows, last.key, newest)])
                    done, fresh = done + more, fresh + new
            elif self.config.cursor:
                done, fresh, ok = await self._take_in_order(messages)
            else:
                done, fresh, ok = await self._take_together(messages)
            taken += done
            if not ok or self._stopping:
                break
            if not full or not messages or (self.config.after is None and not self.config.cursor):
                break  # key alone: the query may give the same rows again, read once a poll
            if self.config.after is not None and not fresh:
                break  # all were stored before and after ran for them: an after that does not take rows out
        return taken

    def _read(self, cursor: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
        assert self.engine is not None
        params = {"cursor": cursor} if self.config.cursor else {}
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True).execute(self.query, params)
            columns = list(result.keys())
            rows = [tuple(r) for r in result.fetchmany(self.config.max_rows)]
            result.close()
        missing = [c for c in (*self.keys, *self.group, *([self.config.cursor] if self.config.cursor else ()))]
        missing = [c for c in missing if c not in columns]
        if missing:
            raise ConfigError(f"the query returns no column {', '.join(missing)} (it has {', '.join(columns)})")
        if self.after is not None:
            lacking = [p for p in self.after_params if p not in columns]
            if lacking:
                raise ConfigError(f"after: :{', :'.join(lacking)} is not a column the query returns")
        return columns, rows

    def _messages(self, columns: list[str], rows: list[tuple[Any, ...]], full: bool) -> list[_Taken]:
        c = self.config
        index = {name: i for i, name in enumerate(columns)}
        groups: list[list[tuple[Any, ...]]] = []
        if self.group:
            gi = [index[g] for g in self.group]
            last: tuple[Any, ...] | None = None
            for r in rows:
                k = tuple(r[i] for i in gi)
                if not groups or k != last:
                    groups.append([])
                    last = k
                groups[-1].append(r)
            if full and len(groups) > 1:
                groups.pop()  # max_rows may have cut the last group: it is read whole next time
            elif full:
                log.warning(
                    "channel %s: one group filled max_rows (%d): it is taken as read; raise max_rows",
                    self.ctx.channel,
                    c.max_rows,
                )
        else:
            groups = [[r] for r in rows]
        out = []
        for g in groups:
            if c.format == "csv":
                buf = io.StringIO()
                w = csv.writer(buf, lineterminator="\r\n")
                w.writerow(columns)
                for r in g:
                    w.writerow([_csv_text(v) for v in r])
                raw = buf.getvalue().encode("utf-8")
            else:
                if self.group:
                    doc: dict[str, Any] = {name: _json_value(g[0][index[name]]) for name in self.group}
                    doc["rows"] = [row_json(columns, r) for r in g]
                else:
                    doc = row_json(columns, g[0])
                raw = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            key = "/".join(_csv_text(g[0][index[k]]) for k in self.keys) if self.keys else None
            cursor = None
            if c.cursor:
                ci = index[c.cursor]
                cursor = g[0][ci]
                for r in g[1:]:
                    if _newer(r[ci], cursor):
                        cursor = r[ci]
            out.append(_Taken(raw, [dict(zip(columns, r, strict=True)) for r in g], key, cursor))
        return out

    def _ref(self, m: _Taken) -> tuple[str, str | None]:
        """The message's source_ref (db:<channel>:<key or cursor value>) and dedup key (db:<key>, with a key)."""
        ref = f"db:{self.ctx.channel}:{m.key if m.key is not None else _csv_text(m.cursor)}"
        return ref, (f"db:{m.key}" if m.key is not None else None)

    async def _take_in_order(self, messages: list[_Taken]) -> tuple[int, int, bool]:
        """Cursor: one message after the other, each accepted with its cursor value in the same store transaction
        (so the cursor never passes a message that is not stored). With a key as well, only a read's last message
        comes here, with the read's newest cursor value, after the others were stored. (taken, new, go on)."""
        assert self._receive is not None
        store = self.ctx.store
        taken = fresh = 0
        for m in messages:
            if self._stopping:
                return taken, fresh, False
            ref, dedup = self._ref(m)
            cursor = (self.name, _encode_cursor(m.cursor)) if store is not None else None
            receipt = await self._receive(m.raw, source_ref=ref, dedup_key=dedup, cursor=cursor)
            if receipt.outcome is Outcome.ERROR:
                log.warning("channel %s: the store did not take a row; the poll stops here", self.ctx.channel)
                return taken, fresh, False
            _crash_point("after_accept")
            taken += 1
            fresh += not all(r.duplicate for r in receipt.results)
        return taken, fresh, True

    async def _take_together(self, messages: list[_Taken]) -> tuple[int, int, bool]:
        """Key (and after): the messages of one read are handed to the channel together (their accepts share the
        store's group commits), each with its dedup key; then ``after`` runs for those stored, in one transaction
        of the source database. A crash between the two: the rows are read again, found stored (duplicates, not
        stored twice), and ``after`` runs then. (taken, new, go on)."""
        assert self._receive is not None
        receive = self._receive
        gate = asyncio.Semaphore(_TOGETHER)

        async def one(m: _Taken) -> Any:
            ref, dedup = self._ref(m)
            async with gate:
                return await receive(m.raw, source_ref=ref, dedup_key=dedup)

        receipts = await asyncio.gather(*(one(m) for m in messages), return_exceptions=True)
        stored = [
            (m, r)
            for m, r in zip(messages, receipts, strict=True)
            if not isinstance(r, BaseException) and r.outcome is not Outcome.ERROR
        ]
        ok = len(stored) == len(messages)
        if not ok:
            log.warning(
                "channel %s: the store did not take %d row(s); they are read again next poll",
                self.ctx.channel,
                len(messages) - len(stored),
            )
        _crash_point("after_accept")
        if self.after is not None and stored:
            try:
                await asyncio.to_thread(self._run_after, [row for m, _ in stored for row in m.rows])
            except exc.SQLAlchemyError as e:
                log.warning(
                    "channel %s: the after statement failed (%s); the rows are stored and read again next poll",
                    self.ctx.channel,
                    _log_reason(e),
                )
                return 0, 0, False
            _crash_point("after_after")
        fresh = sum(1 for _, r in stored if not all(x.duplicate for x in r.results))
        return len(stored), fresh, ok

    def _run_after(self, rows: list[dict[str, Any]]) -> None:
        assert self.engine is not None and self.after is not None
        with self.engine.begin() as conn:
            for r in rows:
                conn.execute(self.after, {p: r[p] for p in self.after_params})


def _names(v: str | list[str] | None) -> list[str]:
    if v is None:
        return []
    return [v] if isinstance(v, str) else list(v)


# ---------------------------------------------------------------------------------------------- destination
Envelope = Literal[
    "id", "raw", "channel", "received_at", "delivery_id", "content_type", "control_id", "message_type", "patient_id"
]  # fmt: skip


class Param(Strict):
    """One parameter of the statement: a path in the message, a field of its envelope, or a constant."""

    path: str | None = Field(None, description="Where the value is, in the format's path notation.")
    message: Envelope | None = Field(
        None,
        description="A field of the message's envelope: id, raw, channel, received_at, delivery_id, content_type, "
        "control_id, message_type, patient_id.",
    )
    value: str | int | float | bool | None = Field(None, description="A constant.")
    type: Literal["text", "int", "decimal", "float", "bool", "date", "datetime", "json"] = Field(
        "text",
        description="What the value is bound as: text, int, decimal, float, bool, date or datetime (from HL7 "
        "YYYYMMDD[HHMM[SS]][+ZZZZ] or ISO 8601), json (the value as JSON text).",
    )
    default: str | int | float | bool | None = Field(
        None, description="Bound when the path has no value (else NULL, or dead with required)."
    )
    required: bool = Field(False, description="A message without a value here is dead (not stored with NULL).")

    @model_validator(mode="after")
    def _one(self) -> Param:
        given = [k for k in ("path", "message", "value") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of path, message or value")
        return self


_HL7_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?$")


def _to_datetime(s: str, want: str) -> date | datetime:
    m = _HL7_TS.match(s)
    if m is None:
        d = datetime.fromisoformat(s)
        return d.date() if want == "date" else d
    y, mo, d_, h, mi, sec, frac, tz = m.groups()
    if want == "date":
        return date(int(y), int(mo or 1), int(d_ or 1))
    tzinfo = None
    if tz:
        sign = 1 if tz[0] == "+" else -1
        tzinfo = timezone(sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[3:5])))
    return datetime(
        int(y), int(mo or 1), int(d_ or 1), int(h or 0), int(mi or 0), int(sec or 0),
        int((frac or "0").ljust(6, "0")), tzinfo=tzinfo,
    )  # fmt: skip


def _convert(value: Any, kind: str) -> Any:
    if value is None or (kind == "text" and isinstance(value, str)):
        return value
    if kind in ("date", "datetime") and isinstance(value, date):
        return value.date() if kind == "date" and isinstance(value, datetime) else value
    if kind == "text":
        return str(value)
    if kind == "json":
        return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    s = str(value).strip()
    if kind == "int":
        return int(s)
    if kind == "decimal":
        return decimal.Decimal(s)
    if kind == "float":
        return float(s)
    if kind == "bool":
        low = s.lower()
        if low in ("1", "true", "t", "y", "yes"):
            return True
        if low in ("0", "false", "f", "n", "no"):
            return False
        raise ValueError(f"{s!r} is not a yes/no value")
    return _to_datetime(s, kind)


class DatabaseDestination:
    class Config(DestinationConfig):
        """Write each message to a database with a SQL statement: ``{type: database, url: …, statement: 'INSERT INTO
        results (mrn, code, value) VALUES (:mrn, :code, :value)', params: {mrn: PID-3.1, code: OBX-3.1, value:
        OBX-5}}``.

        Insert, upsert (ON CONFLICT / ON DUPLICATE KEY UPDATE) or a stored procedure (CALL …); one transaction per
        delivery, or per batch a worker claimed. Connection errors, deadlocks and lock timeouts retry; a constraint
        violation or a bad value is dead at once with the database's message.
        """

        type: Literal["database"] = "database"
        url: str = Field(
            description="SQLAlchemy URL, as for the database source.",
            examples=["postgresql+psycopg://hub@warehouse/results"],
        )
        password: str | None = Field(None, description="The database password, e.g. ${WAREHOUSE_PASSWORD}.")
        statement: str | list[str] = Field(
            description="SQL with named :parameters; several run in order, in one transaction.",
            examples=["INSERT INTO results (mrn, code) VALUES (:mrn, :code)", "CALL record_result(:mrn, :code)"],
        )
        params: dict[str, str | Param] = Field(
            default_factory=dict,
            description="Each :parameter's value: a path in the message (PID-3.1, $.patient.mrn), or {path, type, "
            "default, required}, {message: id|raw|channel|received_at|…} or {value: constant}. Every parameter of "
            "the statement needs one, and every one must be used.",
            examples=[{"mrn": "PID-3.1", "observed": {"path": "OBX-14", "type": "datetime"}}],
        )
        transaction: Literal["delivery", "batch"] = Field(
            "delivery",
            description="delivery: one transaction per message; batch: one for the messages a worker claimed at once "
            "(queue.batch; a failure rolls it back, the ones before it are written again alone).",
        )
        timeout: str | int | float = Field("30s", description="Time allowed to connect, and to wait for the pool.")
        connect_args: dict[str, Any] = Field(
            default_factory=dict, description="Extra arguments of the driver's connect() (sslmode, options …)."
        )

        _v_timeout = field_validator("timeout")(lambda cls, v: (parse_duration(v), v)[1])

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx
        _check_url(config.url)
        sources = [config.statement] if isinstance(config.statement, str) else list(config.statement)
        if not sources or not all(s.strip() for s in sources):
            raise ConfigError("statement: empty")
        self.statements: list[TextClause] = [text(s) for s in sources]
        used: dict[str, None] = {}
        for s in sources:
            used.update(dict.fromkeys(statement_params(s)))
        self.params: dict[str, Param] = {
            k: (Param.model_validate({"path": v}) if isinstance(v, str) else v) for k, v in config.params.items()
        }
        unmapped = [p for p in used if p not in self.params]
        unused = [p for p in self.params if p not in used]
        problems = []
        if unmapped:
            problems.append(f"the statement's :{', :'.join(unmapped)} not in params (say where each value comes from)")
        if unused:
            cast = next((u for u in unused if any(f":{u}::" in x for x in sources)), None)
            hint = f"; :{cast}::type is not a parameter, write CAST(:{cast} AS type)" if cast else ""
            problems.append(f"params {', '.join(unused)} not used by the statement (no :{unused[0]} in it{hint})")
        if problems:
            raise ConfigError("; ".join(problems))
        self.used = list(used)
        self.timeout = parse_duration(config.timeout)
        self.engine: Engine | None = None
        self._lock = asyncio.Lock()

    def _engine(self) -> Engine:
        if self.engine is None:
            c = self.config
            self.engine = _make_engine(c.url, c.password, self.timeout, c.connect_args, max(2, c.queue.parallel))
        return self.engine

    # ---------------------------------------------------------------- parameters
    def binds(self, message: Message) -> dict[str, Any]:
        """The statement's parameters for one message; PermanentDelivery when a value cannot be made."""
        out: dict[str, Any] = {}
        for name in self.used:
            p = self.params[name]
            try:
                value = self._raw_value(p, message)
                if value == "" or value is None:
                    if p.required:
                        raise PermanentDelivery(f"parameter {name}: no value at {p.path or p.message}")
                    value = p.default
                out[name] = _convert(value, p.type)
            except InputError as e:
                raise PermanentDelivery(f"parameter {name}: {e}") from None
            except (ValueError, decimal.InvalidOperation, TypeError) as e:
                raise PermanentDelivery(f"parameter {name}: not a {p.type}: {e}") from None
        return out

    def _raw_value(self, p: Param, message: Message) -> Any:
        if p.value is not None:
            return p.value
        if p.message is not None:
            return _envelope(message, p.message)
        assert p.path is not None
        from hub.transforms.document import document_of

        return document_of(message).get(p.path)

    # ---------------------------------------------------------------- sending
    async def send(self, message: Message) -> str | None:
        [result] = await self.send_many([message])
        if isinstance(result, BaseException):
            raise result
        return result

    async def send_many(self, messages: list[Message]) -> list[str | BaseException | None]:
        """Write messages in order (FIFO); stops at the first failure, which is the last item."""
        prepared: list[dict[str, Any] | BaseException] = []
        for m in messages:
            try:
                prepared.append(self.binds(m))
            except PermanentDelivery as e:
                prepared.append(e)
                break
        engine = self._engine()
        if self.config.transaction == "batch":
            return await asyncio.to_thread(self._write_batch, engine, prepared)
        return await asyncio.to_thread(self._write_each, engine, prepared)

    def _execute(self, conn: Any, binds: dict[str, Any]) -> str:
        answers = []
        for i, st in enumerate(self.statements):
            r = conn.execute(st, {k: v for k, v in binds.items() if k in st._bindparams})
            prefix = f"statement {i + 1}: " if len(self.statements) > 1 else ""
            if r.returns_rows:
                row = r.first()
                answers.append(
                    prefix + ("no row returned" if row is None else json.dumps(_json_value(dict(row._mapping))))
                )
            else:
                n = r.rowcount
                answers.append(prefix + (f"{n} row{'s' if n != 1 else ''}" if n is not None and n >= 0 else "done"))
        return "; ".join(answers)

    def _write_each(self, engine: Engine, prepared: list[dict[str, Any] | BaseException]) -> list[Any]:
        out: list[Any] = []
        for binds in prepared:
            if isinstance(binds, BaseException):
                out.append(binds)
                break
            try:
                with engine.begin() as conn:
                    out.append(self._execute(conn, binds))
            except exc.SQLAlchemyError as e:
                out.append(classify_db_error(e))
                break
        return out

    def _write_batch(self, engine: Engine, prepared: list[dict[str, Any] | BaseException]) -> list[Any]:
        good = [b for b in prepared if not isinstance(b, BaseException)]
        failed: BaseException | None = prepared[-1] if isinstance(prepared[-1], BaseException) else None
        answers: list[Any] = []
        try:
            with engine.begin() as conn:
                for b in good:
                    answers.append(self._execute(conn, b))
            return [*answers, *([failed] if failed is not None else [])]
        except exc.SQLAlchemyError as e:
            error = classify_db_error(e)
            k = len(answers)  # the one that failed; the ones before it were rolled back with it
        if k == 0:
            return [error]
        before = self._write_batch(engine, list(good[:k]))  # written again without the one that failed
        if any(isinstance(r, BaseException) for r in before):
            return before  # it failed now, earlier: the first failure ends the list
        return [*before, error]

    async def close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            await asyncio.to_thread(engine.dispose)


def _envelope(message: Message, field: str) -> Any:
    if field == "id":
        return message.id
    if field == "raw":
        return message.raw.decode("utf-8", "replace")
    if field == "channel":
        return message.channel
    if field == "content_type":
        return message.content_type
    if field == "received_at":
        r = message.received_at
        return r if r.tzinfo is not None else r.replace(tzinfo=UTC)
    return message.meta.get(field)
