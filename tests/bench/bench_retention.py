"""Retention at scale (issue 15): prune most of a year of messages while a thread keeps accepting, and print what
was pruned, how long it took, the SQLite file's size before and after, and the longest an accept waited.

Works on a copy of the cached scale store (tests/bench/scale_store.py), so the cache stays whole. Sizes:
``HUB_BENCH_N`` messages (default 1,000,000); ``HUB_BENCH_PRUNE_OLDER`` what is pruned (default ``30d``: about
eleven months of the year). ``HUB_BENCH_PG=1`` also runs it on PostgreSQL (``HUB_BENCH_SCALE_PG_N`` messages,
default 300,000, on ``HUB_TEST_PG_HOST:PORT``), on a copy of the cached database ``hub_bench_scale_<n>`` that
bench_scale.py uses, made with ``CREATE DATABASE … TEMPLATE``.

    .venv/bin/python tests/bench/bench_retention.py
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT, ROOT / "tests" / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from scale_store import build  # noqa: E402

from hub.schedules import parse_duration  # noqa: E402
from hub.store import NewDelivery, NewMessage, Store  # noqa: E402

N = int(os.environ.get("HUB_BENCH_N", "1000000"))
OLDER = os.environ.get("HUB_BENCH_PRUNE_OLDER", "30d")
PG = os.environ.get("HUB_BENCH_PG") == "1"
PG_N = int(os.environ.get("HUB_BENCH_SCALE_PG_N", "300000"))
PG_HOST = os.environ.get("HUB_TEST_PG_HOST", "127.0.0.1")
PG_PORT = os.environ.get("HUB_TEST_PG_PORT", "5432")
ADT = (
    b"MSH|^~\\&|PM|CLINIC|EHR|CLINIC|20260101120000||ADT^A04|BENCH{n}|P|2.5.1\r"
    b"PID|1||MRN{n}^^^CLINIC^MR||Doe^Jane||19800101|F\r"
)


class Ingest(threading.Thread):
    """Accepts one message at a time (about 200 a second) and records how long each accept took."""

    def __init__(self, store: Store) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.latencies: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            raw = ADT.replace(b"{n}", str(i).encode())
            t = time.perf_counter()
            self.store.accept([NewMessage("pm_adt", raw, "hl7v2", deliveries=[NewDelivery("ehr")])])
            self.latencies.append(time.perf_counter() - t)
            i += 1
            time.sleep(0.005)

    def figures(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return (
            f"{len(lat):,} accepts, max {lat[-1] * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
            f"median {statistics.median(lat) * 1000:.1f} ms"
        )


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:,.0f} MB"


def _files(db: Path) -> int:
    wal = Path(f"{db}-wal")
    return db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def run(store: Store, label: str, db: Path | None = None) -> None:
    size0 = store.size()
    disk0 = _files(db) if db is not None else 0
    print(f"[{label}] store size {_mb(size0)}" + (f", files {_mb(disk0)}" if db is not None else ""))
    ingest = Ingest(store)
    ingest.start()
    time.sleep(1)
    t = time.perf_counter()
    n = store.prune(parse_duration(OLDER), vacuum=False)
    prune_s = time.perf_counter() - t
    during_prune = ingest.figures()
    t = time.perf_counter()
    freed = store.vacuum()
    vacuum_s = time.perf_counter() - t
    ingest.stop.set()
    ingest.join()
    print(f"[{label}] pruned {n:,} messages older than {OLDER} in {prune_s:.1f} s ({n / max(prune_s, 1e-9):,.0f}/s)")
    print(f"[{label}] ingest during prune + give-back: {ingest.figures()}; during prune alone: {during_prune}")
    print(f"[{label}] gave back {_mb(freed)} in {vacuum_s:.1f} s; store size now {_mb(store.size())}")
    if db is not None:
        print(f"[{label}] files (db + wal) {_mb(disk0)} -> {_mb(_files(db))}; db file {_mb(db.stat().st_size)}")


def bench_sqlite() -> None:
    src = build(n=N)
    copy = src.with_name(f"retention-{N}.db")
    for f in (copy, Path(f"{copy}-wal"), Path(f"{copy}-shm")):
        f.unlink(missing_ok=True)
    t = time.perf_counter()
    with sqlite3.connect(src) as a, sqlite3.connect(copy) as b:
        a.backup(b)
    print(f"[sqlite {N:,}] copied the scale store in {time.perf_counter() - t:.1f} s")
    store = Store(f"sqlite:///{copy}").open()
    try:
        with sqlite3.connect(copy) as c:
            mode = c.execute("PRAGMA auto_vacuum").fetchone()[0]
        if mode != 2:
            t = time.perf_counter()
            freed = store.vacuum(full=True)
            print(
                f"[sqlite {N:,}] one-time VACUUM to auto_vacuum=incremental (`hub prune --vacuum`): "
                f"{time.perf_counter() - t:.1f} s, {_mb(freed)} given back"
            )
        run(store, f"sqlite {N:,}", copy)
    finally:
        store.close()
    for f in (copy, Path(f"{copy}-wal"), Path(f"{copy}-shm")):
        f.unlink(missing_ok=True)


def bench_postgres() -> None:
    import psycopg

    server = f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}"
    base = f"hub_bench_scale_{PG_N}"
    build(None, PG_N, url=f"{server}/{base}")
    name = f"hub_bench_retention_{PG_N}"
    admin = f"host={PG_HOST} port={PG_PORT} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{base}"')
    try:
        with Store(f"{server}/{name}") as store:
            run(store, f"postgresql {PG_N:,}")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    bench_sqlite()
    if PG:
        bench_postgres()
