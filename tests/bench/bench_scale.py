"""Scale benchmark (issue 15): a year of messages. Prints the figures of the issue's table; asserts nothing on time.

Builds (once, cached under ``var/bench/``, see ``scale_store.py``) a store of 1,000,000 messages on SQLite and, with
``HUB_BENCH_PG=1``, 300,000 on PostgreSQL (database ``hub_bench_scale_<n>`` on ``HUB_TEST_PG_HOST:PORT``), then
times on each, median of a few runs:

- the screens (point 1): ``store.status()``, ``hub status`` (the CLI, a subprocess: start-up included),
  ``/api/channels`` and ``/api/destinations`` (the Overview page; the app in-process, an admin token, its status cache
  cleared before every call), ``/metrics`` (queue gauges read at every scrape), and ``store.queue_depth()``;
- the same screens' queries as they were before the counters (a GROUP BY over history; the last-hour counts as
  SQLite planned them), once each, for the before/after;
- search by control id and by patient id;
- :func:`search_rows` — text and status-only search (point 2); pruning (point 3) is bench_retention.py's.

Run: ``pytest -s tests/bench/bench_scale.py -o python_files='bench_*.py'`` or ``python tests/bench/bench_scale.py``.
``HUB_BENCH_SCALE_N`` / ``HUB_BENCH_SCALE_PG_N`` change the sizes (a store of another size is built once too).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for p in (str(ROOT), str(HERE), str(HERE.parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

from scale_store import WORDS, build, timed  # noqa: E402

from hub.store import SearchQuery, Store  # noqa: E402

N = int(os.environ.get("HUB_BENCH_SCALE_N", "1000000"))
PG_N = int(os.environ.get("HUB_BENCH_SCALE_PG_N", "300000"))
PG_HOST = os.environ.get("HUB_TEST_PG_HOST", "127.0.0.1")
PG_PORT = os.environ.get("HUB_TEST_PG_PORT", "5432")
REPEAT = 5

Rows = dict[str, float]  # label → median milliseconds


# ------------------------------------------------------------------------------------------------ point 1: screens
def screen_rows(url: str, folder: Path) -> Rows:
    """``store.status()``, ``hub status``, ``/api/channels``, ``/api/destinations``, ``/metrics``, queue depth."""
    rows: Rows = {}
    store = Store(url).open()
    try:
        rows["store.status()"] = timed(store.status)
        rows["store.queue_depth()"] = timed(store.queue_depth)
    finally:
        store.close()
    cfg = _config(url, folder)
    hub = [sys.executable, "-m", "hub", "status", "--config", str(cfg)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rows["`hub status` (CLI process)"] = timed(lambda: subprocess.run(hub, env=env, check=True, capture_output=True))
    rows["  Python start + imports only"] = timed(
        lambda: subprocess.run(
            [sys.executable, "-c", "import hub.cli, hub.engine"], env=env, check=True, capture_output=True
        )
    )
    rows["  open the store (migration check)"] = timed(lambda: Store(url).open().close())
    rows.update(asyncio.run(_web_rows(cfg)))
    rows.update(before_rows(url))
    return rows


# What the screens ran before the counters (issue 15), once each on the same store, for the before/after.
_BEFORE = {
    "(before: status() as a GROUP BY over history, 1 run)": [
        "SELECT channel, status, COUNT(*) FROM messages GROUP BY channel, status",
        "SELECT channel, destination, status, COUNT(*), MIN(created_at) FROM deliveries "
        "GROUP BY channel, destination, status",
    ],
    "(before: last-hour counts as planned unhinted, 1 run)": [
        "SELECT channel, status, COUNT(*) FROM messages WHERE received_at >= :since GROUP BY channel, status",
        "SELECT d.channel, d.destination, d.status, COUNT(*) FROM deliveries AS d JOIN messages AS m "
        "ON m.id = d.message_id WHERE m.received_at >= :since GROUP BY d.channel, d.destination, d.status",
    ],
}


def before_rows(url: str) -> Rows:
    from sqlalchemy import text

    store = Store(url)
    try:
        rows: Rows = {}
        with store.engine.connect() as conn:
            for label, sqls in _BEFORE.items():
                t = time.perf_counter()
                for sql in sqls:
                    conn.execute(text(sql), {"since": time.time() - 3600}).all()
                rows[label] = (time.perf_counter() - t) * 1000
        return rows
    finally:
        store.engine.dispose()


def _config(url: str, folder: Path) -> Path:
    from support import write_config

    chan = "name: bench_idle\nsource: {type: memory, format: raw}\nroutes: []\ndestinations: {}\n"
    return write_config(folder / "config", f"store: {{url: '{url}'}}\nweb: {{enabled: false}}\n", {"bench_idle": chan})


async def _web_rows(cfg_dir: Path) -> Rows:
    import httpx

    from hub import metrics
    from hub.engine import Engine
    from hub.spec import load_config
    from hub.web import queries
    from hub.web.app import create_app

    eng = Engine(load_config(cfg_dir), idle_poll=0.5)
    await eng.start()
    collector = None
    try:
        app = create_app(eng)
        state = app.state.hub
        name = f"bench-admin-{os.getpid()}-{int(time.time())}"
        await asyncio.to_thread(state.auth.add_user, name, "admin", None)
        token = await asyncio.to_thread(state.auth.create_token, name)
        # the queue gauges as `hub run` registers them, read at every scrape (ttl 0: no cache)
        collector = metrics.QueueCollector(lambda: queries.queue_rows(state.store), state.running, ttl=0)
        with contextlib.suppress(ValueError):
            metrics.REGISTRY.register(collector)
        rows: Rows = {}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://hub.test",
            headers={"Authorization": f"Bearer {token}"},
        ) as client:
            for label, path in (
                ("/api/channels", "/api/channels"),
                ("/api/destinations", "/api/destinations"),
                ("/metrics", "/metrics"),
            ):
                times = []
                for i in range(REPEAT + 1):
                    state.invalidate()
                    t = time.perf_counter()
                    r = await client.get(path)
                    if i:
                        times.append(time.perf_counter() - t)
                    assert r.status_code == 200, (path, r.status_code, r.text[:200])
                rows[label] = statistics.median(times) * 1000
        return rows
    finally:
        if collector is not None:
            with contextlib.suppress(KeyError):
                metrics.REGISTRY.unregister(collector)
        await eng.stop()


def lookup_rows(url: str) -> Rows:
    """Search by control id and by patient id (indexed columns)."""
    store = Store(url).open()
    try:
        return {
            "search by control id": timed(lambda: store.search(SearchQuery(control_id=WORDS["RARE_CONTROL_ID"]))),
            "search by patient id": timed(lambda: store.search(SearchQuery(patient_id=WORDS["RARE_PATIENT_ID"]))),
        }
    finally:
        store.close()


# ------------------------------------------------------------------------------------------------ point 2: search
def search_rows(url: str) -> Rows:
    """Text search on the trigram index and search by status alone (bench_search.py's rows)."""
    from bench_search import search_rows as rows

    return rows(url)


# ------------------------------------------------------------------------------------------------ the table
def measure(url: str) -> Rows:
    with tempfile.TemporaryDirectory(prefix="hub-bench-scale-") as tmp:
        rows = screen_rows(url, Path(tmp))
    rows.update(lookup_rows(url))
    rows.update(search_rows(url))
    return rows


def pg_url(n: int) -> str:
    return f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/hub_bench_scale_{n}"


def run() -> None:
    columns: list[tuple[str, Rows]] = []
    path = build(None, N)
    size = path.stat().st_size / 1e6
    columns.append((f"SQLite {N:,} ({size:,.0f} MB)", measure(f"sqlite:///{path}")))
    if os.environ.get("HUB_BENCH_PG") == "1":
        url = pg_url(PG_N)
        build(None, PG_N, url=url)
        columns.append((f"PostgreSQL {PG_N:,}", measure(url)))
    labels = list(dict.fromkeys(k for _, col in columns for k in col))
    print(f"\nscale benchmark (median of {REPEAT}, ms)")
    print("| operation | " + " | ".join(h for h, _ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for label in labels:
        cells = [f"{col[label]:,.1f}" if label in col else "—" for _, col in columns]
        print(f"| {label} | " + " | ".join(cells) + " |")


def test_bench_scale() -> None:
    run()


if __name__ == "__main__":
    run()
