"""Ingest benchmark (issue 2): prints figures, asserts nothing about speed.

1. ``store.accept()`` from concurrent producers (1 and 8 threads): messages/s and p50/p99 latency of each
   accept (the time a source waits for its commit), on SQLite and PostgreSQL.
2. N messages through a file → file channel in a running Engine: messages/s from first poll to last file
   written, and p50/p99 of received → sent per delivery.

Run: ``make bench`` (or ``pytest -s tests/bench/bench_ingest.py -o python_files='bench_*.py'``).
``HUB_BENCH_N`` sets N (default 5000 for accept, 2000 for file→file).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from hub.engine import Engine
from hub.spec import load_config
from hub.store import NewDelivery, NewMessage, Store
from support import write_config

N = int(os.environ.get("HUB_BENCH_N", "5000"))
ADT = (
    b"MSH|^~\\&|PM|CLINIC|EHR|CLINIC|20261123101500||ADT^A04^ADT_A01|{i}|P|2.5.1\r"
    b"PID|1||MRN{i}^^^CLINIC^MR||DOE^JANE^Q||19800101|F|||1 MAIN ST^^SPRINGFIELD^IL^62701\r"
    b"PV1|1|O|CLINIC^101^1||||1234567893^WELBY^MARCUS\r"
)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000


def report(label: str, n: int, seconds: float, lat: list[float]) -> None:
    print(
        f"  {label:44} {n / seconds:9.0f} msg/s   p50 {pct(lat, 0.5):6.2f} ms   p99 {pct(lat, 0.99):7.2f} ms   ({n} in "
        f"{seconds:.2f}s)"
    )


def accept_bench(url: str, threads: int, n: int) -> None:
    store = Store(url).open()
    lat: list[float] = []
    per = n // threads

    def producer(t: int) -> None:
        for i in range(per):
            raw = ADT.replace(b"|{i}|", f"|{t}-{i}|".encode())
            item = NewMessage(
                "bench",
                raw,
                "hl7v2",
                meta={"control_id": f"{t}-{i}", "patient_id": f"MRN{i}", "message_type": "ADT^A04"},
                deliveries=[NewDelivery("ehr"), NewDelivery("archive")],
            )
            t0 = time.perf_counter()
            store.accept([item])
            lat.append(time.perf_counter() - t0)

    start = time.perf_counter()
    ts = [threading.Thread(target=producer, args=(t,)) for t in range(threads)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    elapsed = time.perf_counter() - start
    store.close()
    report(f"accept(), {threads} producer(s)", per * threads, elapsed, lat)


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_bench_accept(db, tmp_path, request):
    url = f"sqlite:///{tmp_path / 'bench.db'}" if db == "sqlite" else request.getfixturevalue("pg_url")
    print(f"\n[{db}] store.accept(): one message + 2 deliveries per call")
    for threads in (1, 8):
        accept_bench(url, threads, N)


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_bench_file_to_file(db, tmp_path, request):
    n = int(os.environ.get("HUB_BENCH_FILES", "2000"))
    url = f"sqlite:///{tmp_path / 'bench.db'}" if db == "sqlite" else request.getfixturevalue("pg_url")
    chan = """
name: f2f
source: {type: file, path: in, glob: "*.hl7", schedule: 50ms, settle: 0s, format: hl7v2, max_files: 100000}
routes:
  - {name: all, to: [out]}
destinations:
  out: {type: file, path: "out/{control_id}.hl7", queue: {batch: 200}}
"""
    cfg = load_config(
        write_config(tmp_path / "cfg", f"home: ..\nstore: {{url: '{url}'}}\nweb: {{enabled: false}}\n", {"f2f": chan})
    )
    inbox = tmp_path / "in"
    inbox.mkdir()
    old = time.time() - 10
    for i in range(n):
        p = inbox / f"{i:06d}.hl7"
        p.write_bytes(ADT.replace(b"|{i}|", f"|C{i}|".encode()))
        os.utime(p, (old, old))

    async def run() -> tuple[float, list[float]]:
        eng = Engine(cfg, idle_poll=0.05)
        start = time.perf_counter()
        await eng.start()
        out = tmp_path / "out"
        while not out.exists() or sum(1 for _ in out.glob("*.hl7")) < n:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - start
        with eng.store.engine.connect() as c:
            from sqlalchemy import select

            from hub.store.schema import deliveries, messages

            rows = c.execute(
                select(messages.c.received_at, deliveries.c.sent_at).join(
                    deliveries, deliveries.c.message_id == messages.c.id
                )
            ).all()
        await eng.stop()
        return elapsed, [s - r for r, s in rows if s is not None]

    elapsed, lat = asyncio.run(run())
    print(f"\n[{db}] file → store → file channel (fsync on every file and every commit)")
    report("files in → files out", n, elapsed, lat)
    print("  (latency: received → sent per delivery)")
