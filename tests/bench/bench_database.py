"""Database source benchmark: rows/s from a real PostgreSQL or MariaDB table into the store, through a channel
(CSV messages, accepted with one delivery row each to a memory destination), for each way of taking rows exactly
once. Prints figures, asserts nothing about speed.

* ``cursor``: ``WHERE id > :cursor``; each message is accepted with the cursor in its own store transaction, one
  after the other (so the cursor can never pass a message that is not stored);
* ``cursor+key``: the same with ``key: id``: the messages of a read are accepted together, the last with the cursor;
* ``after``: ``WHERE processed = 0`` and ``UPDATE … SET processed = 1 WHERE id = :id`` after the store's commit;
  each message carries its dedup key ``db:<id>``;
* ``after, store already holding M messages``: the same with M messages with dedup keys already in the store (the
  dedup look-up's cost as the store grows).

Run: ``pytest -s tests/bench/bench_database.py -o python_files='bench_*.py' --override-ini addopts=``.
``HUB_BENCH_N`` sets the rows (default 5000), ``HUB_BENCH_PRELOAD`` M (default 200000).
"""

from __future__ import annotations

import os
import time
import uuid

import pytest
import yaml
from sqlalchemy import create_engine, text

from hub.engine import build
from hub.spec import load_config
from hub.store import NewMessage, Store
from support import write_config

N = int(os.environ.get("HUB_BENCH_N", "5000"))
PRELOAD = int(os.environ.get("HUB_BENCH_PRELOAD", "200000"))
MODES = {
    "cursor": {"query": "SELECT * FROM results WHERE id > :cursor ORDER BY id", "cursor": "id", "start": 0},
    "cursor+key": {
        "query": "SELECT * FROM results WHERE id > :cursor ORDER BY id",
        "cursor": "id",
        "start": 0,
        "key": "id",
    },
    "after": {
        "query": "SELECT * FROM results WHERE processed = 0 ORDER BY id",
        "after": "UPDATE results SET processed = 1 WHERE id = :id",
        "key": "id",
    },
}


def fill(url: str, n: int) -> None:
    eng = create_engine(url)
    with eng.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS results"))
        conn.execute(
            text(
                "CREATE TABLE results (id INTEGER PRIMARY KEY, mrn VARCHAR(20), code VARCHAR(20), value NUMERIC(10,2), "
                "taken TIMESTAMP NULL, processed INTEGER NOT NULL DEFAULT 0)"
            )
        )
        conn.execute(
            text("INSERT INTO results (id, mrn, code, value, taken) VALUES (:i, :m, 'GLU', :v, '2026-01-02 03:04:05')"),
            [{"i": i, "m": f"MRN{i:06d}", "v": f"{i % 1000}.25"} for i in range(1, n + 1)],
        )
    eng.dispose()


def preload(store: Store, m: int) -> None:
    for start in range(0, m, 5000):
        store.accept(
            [
                NewMessage("lis", b"{}", "json", dedup_key=f"db:old-{start + i}", source_ref="x")
                for i in range(min(5000, m - start))
            ]
        )


async def run(tmp, db_url: str, store_url: str, mode: str, preloaded: int = 0) -> tuple[float, int]:
    fill(db_url, N)
    source = {
        "type": "database",
        "url": db_url,
        "schedule": "0 0 1 1 *",
        "max_rows": 1000,
        "format": "csv",
        **MODES[mode],
    }
    ch = {"name": "lis", "source": source, "routes": [{"name": "all", "to": ["out"]}],
          "destinations": {"out": {"type": "memory"}}}  # fmt: skip
    folder = tmp / f"cfg-{uuid.uuid4().hex[:6]}"
    cfg = load_config(write_config(folder, "web: {enabled: false}\n", {"lis": yaml.safe_dump(ch)}))
    store = Store(store_url).open()
    try:
        if preloaded:
            preload(store, preloaded)
        built = build(cfg, store=store)
        assert not built.problems, built.problems
        src = built.sources["lis"]
        await src.start(built.channels["lis"].receive)
        try:
            t0 = time.perf_counter()
            taken = await src.poll()
            took = time.perf_counter() - t0
        finally:
            await src.stop()
        return took, taken
    finally:
        store.close()


@pytest.mark.parametrize("peer", ["postgres", "mariadb"])
async def test_rows_per_second_into_the_store(tmp_path, peer, request):
    db_url = request.getfixturevalue("pg_url" if peer == "postgres" else "mariadb_url")
    print(f"\ndatabase source, {N} rows from {peer}:")
    for store_kind in ("sqlite", "postgres"):
        for mode in MODES:
            store_url = f"sqlite:///{tmp_path / uuid.uuid4().hex}.db" if store_kind == "sqlite" else _pg_store(request)
            took, taken = await run(tmp_path, db_url, store_url, mode)
            assert taken == N
            print(f"  store {store_kind:8} {mode:10} {N / took:8.0f} rows/s   ({N} in {took:.2f}s)")
    if peer == "postgres":
        took, taken = await run(tmp_path, db_url, f"sqlite:///{tmp_path / 'big.db'}", "after", PRELOAD)
        print(f"  store sqlite   after, store already holding {PRELOAD} messages: {N / took:8.0f} rows/s")


def _pg_store(request) -> str:
    """Another fresh PostgreSQL database (the pg_url fixture gives one per test)."""
    import psycopg

    from conftest import PG_HOST, PG_PORT

    name = f"hub_bench_{uuid.uuid4().hex[:10]}"
    admin = f"host={PG_HOST} port={PG_PORT} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    request.addfinalizer(drop)
    return f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}"


@pytest.fixture
def mariadb_url():
    import pymysql

    name = f"hub_bench_{uuid.uuid4().hex[:10]}"
    admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    yield f"mysql+pymysql://root@127.0.0.1:3306/{name}"
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    admin.close()
