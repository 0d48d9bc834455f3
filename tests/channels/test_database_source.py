"""The `database` source against real PostgreSQL and MariaDB: rows become messages, exactly once by a cursor kept
with the accept or by an `after` statement run after the commit; one poller per source; what `hub check` says."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

from hub.channels.database import DatabaseSource, _decode_cursor, _encode_cursor
from hub.engine import build, check
from hub.errors import ConfigError, StoreError
from hub.spec import load_config
from hub.store import Store
from support import sql, write_config


def make_results(url: str, n: int, start: int = 1) -> None:
    blob = "BYTEA" if url.startswith("postgresql") else "BLOB"
    sql(
        url,
        "CREATE TABLE IF NOT EXISTS results (id INTEGER PRIMARY KEY, mrn VARCHAR(20) NOT NULL, code VARCHAR(20), "
        f"value NUMERIC(10,2), taken TIMESTAMP NULL, image {blob}, processed INTEGER NOT NULL DEFAULT 0)",
    )
    rows = [
        {"id": i, "mrn": f"MRN{i:04d}", "code": "GLU", "value": f"{i}.50", "taken": f"2026-01-02 03:04:{i % 60:02d}"}
        for i in range(start, start + n)
    ]
    if rows:
        sql(url, "INSERT INTO results (id, mrn, code, value, taken, image) VALUES (:id, :mrn, :code, :value, :taken, "
            "NULL)", params=rows)  # fmt: skip


HUB = "store: {{url: 'sqlite:///{db}'}}\nweb: {{enabled: false}}\n"
NEVER = "0 0 1 1 *"  # the tests poll by hand


def channel(source: dict, name: str = "lis") -> str:
    return yaml.safe_dump(
        {
            "name": name,
            "source": source,
            "routes": [{"name": "all", "to": ["out"]}],
            "destinations": {"out": {"type": "memory"}},
        }
    )


class Running:
    """A channel with a database source, built as the engine builds it, on a SQLite store."""

    def __init__(self, tmp_path: Path, source: dict, node: str = "node-a", folder: str = "cfg") -> None:
        cfg = load_config(write_config(tmp_path / folder, HUB.format(db=tmp_path / "hub.db"), {"lis": channel(source)}))
        self.store = Store(f"sqlite:///{tmp_path / 'hub.db'}", node=node).open()
        built = build(cfg, store=self.store)
        assert not built.problems, built.problems
        self.channel = built.channels["lis"]
        self.source: DatabaseSource = built.sources["lis"]  # type: ignore[assignment]

    async def __aenter__(self) -> Running:
        await self.source.start(self.channel.receive)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.source.stop()
        self.store.close()

    def messages(self) -> list[dict]:
        rows = self.store.run_read(
            lambda c: c.execute(text("SELECT source_ref, raw, status, content_type FROM messages ORDER BY id")).all()
        )
        return [{"ref": r[0], "raw": bytes(r[1]), "status": r[2], "type": r[3]} for r in rows]

    def cursor(self) -> str | None:
        return self.store.get_cursor("database:lis")


# ---------------------------------------------------------------------------------------------- cursor
async def test_cursor_mode_takes_each_row_once_and_keeps_the_cursor_with_the_accept(tmp_path, db_url):
    make_results(db_url, 5)
    src = {
        "type": "database",
        "url": db_url,
        "query": "SELECT id, mrn, code, value, taken, image FROM results WHERE id > :cursor ORDER BY id",
        "cursor": "id",
        "start": 0,
        "max_rows": 2,  # three reads in one poll
        "schedule": NEVER,
    }
    async with Running(tmp_path, src) as run:
        assert await run.source.poll() == 5
        msgs = run.messages()
        assert [m["ref"] for m in msgs] == [f"db:lis:{i}" for i in range(1, 6)]
        first = json.loads(msgs[0]["raw"])
        # dates ISO 8601, decimals as strings, NULL as null
        assert first == {"id": 1, "mrn": "MRN0001", "code": "GLU", "value": "1.50", "taken": "2026-01-02T03:04:01",
                         "image": None}  # fmt: skip
        assert {(m["type"], m["status"]) for m in msgs} == {("json", "accepted")}
        assert run.cursor() == "int:5"
        assert await run.source.poll() == 0  # nothing new
        make_results(db_url, 3, start=6)
        assert await run.source.poll() == 3
        assert len(run.messages()) == 8 and run.cursor() == "int:8"


async def test_a_failed_accept_leaves_the_cursor_where_the_last_stored_message_is(tmp_path, db_url):
    make_results(db_url, 4)
    src = {
        "type": "database",
        "url": db_url,
        "query": "SELECT id, mrn FROM results WHERE id > :cursor ORDER BY id",
        "cursor": "id",
        "start": 0,
        "schedule": NEVER,
        "format": "csv",
    }
    async with Running(tmp_path, src) as run:
        real = run.store.accept_async
        calls = 0

        async def flaky(items, **kw):
            nonlocal calls
            calls += 1
            if calls == 3:
                raise StoreError("disk full")
            return await real(items, **kw)

        run.store.accept_async = flaky  # type: ignore[method-assign]
        assert await run.source.poll() == 2  # the third stops the poll
        assert run.cursor() == "int:2" and len(run.messages()) == 2
        assert await run.source.poll() == 2  # the next poll reads after 2
        msgs = run.messages()
        assert [m["ref"] for m in msgs] == [f"db:lis:{i}" for i in range(1, 5)]
        assert msgs[0]["raw"] == b"id,mrn\r\n1,MRN0001\r\n" and {m["status"] for m in msgs} == {"accepted"}
        assert run.cursor() == "int:4"


async def test_timestamp_cursor_is_bound_back_as_a_timestamp(tmp_path, db_url):
    make_results(db_url, 3)
    src = {
        "type": "database",
        "url": db_url,
        "query": "SELECT id, taken FROM results WHERE taken > :cursor ORDER BY taken",
        "cursor": "taken",
        "start": "2000-01-01 00:00:00",
        "schedule": NEVER,
    }
    async with Running(tmp_path, src) as run:
        assert await run.source.poll() == 3
        assert run.cursor() == "ts:2026-01-02T03:04:03"
        assert await run.source.poll() == 0


def test_cursor_values_keep_their_type():
    import datetime as dt
    import decimal

    for v in (7, decimal.Decimal("1.50"), 2.5, dt.datetime(2026, 1, 2, 3, 4, 5), dt.date(2026, 1, 2), "abc:def"):
        assert _decode_cursor(_encode_cursor(v)) == v


# ---------------------------------------------------------------------------------------------- after
async def test_after_mode_marks_rows_and_a_row_read_again_is_not_stored_twice(tmp_path, db_url):
    make_results(db_url, 4)
    src = {
        "type": "database",
        "url": db_url,
        "query": "SELECT id, mrn, image FROM results WHERE processed = 0 ORDER BY id",
        "after": "UPDATE results SET processed = 1 WHERE id = :id",
        "key": "id",
        "schedule": NEVER,
    }
    sql(db_url, "UPDATE results SET image = :b WHERE id = 1", params={"b": b"\x00\xffPNG"})
    async with Running(tmp_path, src) as run:
        real = run.source._run_after
        failed = []

        def crash_once(rows):  # the process "dies" between the store's commit and the after statement
            if not failed:
                failed.append([r["id"] for r in rows])
                from sqlalchemy.exc import OperationalError

                raise OperationalError("UPDATE", {}, Exception("server closed the connection"))
            return real(rows)

        run.source._run_after = crash_once  # type: ignore[method-assign]
        assert await run.source.poll() == 0  # stored, not marked
        assert failed == [[1, 2, 3, 4]]  # the rows of one read are marked in one transaction
        assert sql(db_url, "SELECT count(*) FROM results WHERE processed = 1") == [(0,)]
        assert len(run.messages()) == 4
        assert await run.source.poll() == 4  # read again: duplicates, not stored again; after runs now
        assert sql(db_url, "SELECT count(*) FROM results WHERE processed = 0") == [(0,)]
        msgs = run.messages()
        assert [m["ref"] for m in msgs] == ["db:lis:1", "db:lis:2", "db:lis:3", "db:lis:4"]
        assert base64.b64decode(json.loads(msgs[0]["raw"])["image"]) == b"\x00\xffPNG"
        assert await run.source.poll() == 0


async def test_groups_of_rows_become_one_message_and_a_cut_group_waits(tmp_path, db_url):
    sql(db_url, "CREATE TABLE order_lines (order_id INTEGER, line INTEGER, item VARCHAR(20), done INTEGER DEFAULT 0)")
    rows = [{"o": o, "l": ln, "i": f"item{o}-{ln}"} for o in (10, 11, 12) for ln in (1, 2)]
    sql(db_url, "INSERT INTO order_lines (order_id, line, item) VALUES (:o, :l, :i)", params=rows)
    src = {
        "type": "database",
        "url": db_url,
        "query": "SELECT order_id, line, item FROM order_lines WHERE done = 0 ORDER BY order_id, line",
        "group_by": "order_id",
        "after": "UPDATE order_lines SET done = 1 WHERE order_id = :order_id AND line = :line",
        "max_rows": 3,  # cuts order 11: it is read whole by the next read
        "schedule": NEVER,
    }
    async with Running(tmp_path, src) as run:
        assert await run.source.poll() == 3
        docs = [json.loads(m["raw"]) for m in run.messages()]
        assert [d["order_id"] for d in docs] == [10, 11, 12]
        assert [[r["item"] for r in d["rows"]] for d in docs] == [
            ["item10-1", "item10-2"],
            ["item11-1", "item11-2"],
            ["item12-1", "item12-2"],
        ]
        assert [m["ref"] for m in run.messages()] == ["db:lis:10", "db:lis:11", "db:lis:12"]


async def test_key_alone_takes_each_row_once_however_often_the_query_returns_it(tmp_path, db_url):
    make_results(db_url, 3)
    src = {"type": "database", "url": db_url, "query": "SELECT id, mrn FROM results", "key": "id", "schedule": NEVER}
    async with Running(tmp_path, src) as run:
        assert await run.source.poll() == 3
        assert await run.source.poll() == 3  # read again, known: duplicates, not stored
        assert len(run.messages()) == 3


async def test_one_node_polls_a_source_at_a_time(tmp_path, db_url):
    make_results(db_url, 2)
    src = {"type": "database", "url": db_url, "query": "SELECT id FROM results", "key": "id", "schedule": NEVER}
    async with Running(tmp_path, src, node="node-a") as a, Running(tmp_path, src, node="node-b", folder="b") as b:
        b.store.heartbeat(0.0)
        a.store.heartbeat(0.0)
        assert await a.source.poll() == 2
        assert await b.source.poll() == 0  # node-a holds the lease
    async with Running(tmp_path, src, node="node-b", folder="b") as b:
        make_results(db_url, 1, start=3)
        assert await b.source.poll() == 3  # node-a stopped and gave the lease back


async def test_a_query_without_the_named_columns_takes_nothing(tmp_path, db_url, caplog):
    make_results(db_url, 2)
    src = {"type": "database", "url": db_url, "query": "SELECT mrn FROM results", "key": "id", "schedule": NEVER}
    async with Running(tmp_path, src) as run:
        await run.source._poll_safely()
        assert run.messages() == []
        assert "returns no column id (it has mrn)" in caplog.text


async def test_an_unreachable_database_is_logged_without_taking_anything(tmp_path, caplog):
    src = {
        "type": "database",
        "url": "postgresql+psycopg://postgres@127.0.0.1:9/nowhere",
        "query": "SELECT 1 AS id",
        "key": "id",
        "timeout": "2s",
        "schedule": NEVER,
    }
    async with Running(tmp_path, src) as run:
        await run.source._poll_safely()
        assert run.messages() == []
        assert "database poll failed: OperationalError" in caplog.text


# ---------------------------------------------------------------------------------------------- hub check
def problems(tmp_path: Path, source: dict, hub: str = "web: {enabled: false}\n") -> list[str]:
    cfg = load_config(write_config(tmp_path / "chk", hub, {"lis": channel(source)}))
    return [str(p) for p in check(cfg)]


BASE = {"type": "database", "url": "postgresql+psycopg://hub@db/lis", "query": "SELECT * FROM r WHERE id > :cursor"}


@pytest.mark.parametrize(
    "change, complaint",
    [
        ({"cursor": "id", "start": 0, "after": "UPDATE r SET p = 1 WHERE id = :id"}, "cursor and after exclude"),
        ({"cursor": "id"}, "cursor needs start"),
        ({"after": "UPDATE r SET p = 1"}, "after needs key"),
        ({}, "name cursor (a column kept in the store) or key"),
        ({"cursor": "id", "start": 0, "query": "SELECT * FROM r WHERE id > :last"}, "must read after :cursor"),
        (
            {"cursor": "id", "start": 0, "query": "SELECT * FROM r WHERE id > :cursor AND s = :site"},
            ":site has no value",
        ),
        ({"key": "id", "query": "SELECT * FROM r WHERE id > :cursor"}, ":cursor has no value"),
        ({"key": "id", "url": "nonsense"}, "is not a SQLAlchemy URL"),
        ({"key": "id", "url": "mssql+pyodbc://hub@sqlserver/lis"}, "pip install 'hub[mssql]'"),
        ({"key": "id", "url": "sybase+what://x/y"}, "SQLAlchemy has no dialect"),
        ({"key": "id", "poll": "30s"}, "poll"),
        ({"key": "id", "format": "hl7v2"}, "format"),
    ],
)
def test_hub_check_names_each_problem(tmp_path, change, complaint):
    found = problems(tmp_path, {**BASE, **change})
    assert any(complaint in p for p in found), found


def test_hub_check_names_a_missing_secret_and_never_prints_a_password(tmp_path, monkeypatch):
    monkeypatch.delenv("LIS_DB_PASSWORD", raising=False)
    src = {**BASE, "cursor": "id", "start": 0, "password": "${LIS_DB_PASSWORD}"}
    found = problems(tmp_path, src)
    assert any("${LIS_DB_PASSWORD} is not defined" in p for p in found), found
    monkeypatch.setenv("LIS_DB_PASSWORD", "s3cr:t@/x")
    assert problems(tmp_path, src) == []
    bad = {**BASE, "url": "postgresql+psycopg://hub:hunter2@db/lis", "key": "id", "cursor": "id"}
    assert not any("hunter2" in p for p in problems(tmp_path, bad))


def test_the_constructor_refuses_a_missing_driver_as_a_config_error():
    with pytest.raises(ConfigError, match=r"hub\[oracle\]"):
        DatabaseSource(DatabaseSource.Config(**{**BASE, "key": "id", "url": "oracle+oracledb://u@h/s"}), None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- the store's part
async def test_the_store_sets_a_cursor_in_the_accepts_transaction_or_not_at_all(store):
    from hub.store import NewMessage

    [a] = store.accept([NewMessage("c", b"1", "raw", dedup_key="k1")], cursor=("poll:c", "int:1"))
    assert store.get_cursor("poll:c") == "int:1"
    [b] = await store.accept_async([NewMessage("c", b"2", "raw")], cursor=("poll:c", "int:2"))
    assert store.get_cursor("poll:c") == "int:2" and b.message_id > a.message_id
    await store.accept_async([NewMessage("c", b"3", "raw")])  # no cursor given: the cursor stays
    assert store.get_cursor("poll:c") == "int:2"
    [dup] = store.accept([NewMessage("c", b"1", "raw", dedup_key="k1")], cursor=("poll:c", "int:3"))
    assert dup.duplicate and store.get_cursor("poll:c") == "int:3"  # a duplicate still moves the reader on
    with pytest.raises(Exception):  # noqa: B017 - the accept fails (StoreError; raw sqlite3 error on SQLite): no cursor either
        store.accept([NewMessage(None, b"4", "raw")], cursor=("poll:c", "int:4"))  # type: ignore[arg-type]
    assert store.get_cursor("poll:c") == "int:3"
