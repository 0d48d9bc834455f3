"""The ``http`` source's throughput: HL7 v2 posts from 8 concurrent clients to the hub's web app (sender token,
parse, route, one store commit each — group commit shares them — and the AA ACK), requests/s and p50/p99 latency,
against a bare uvicorn app answering 200 to the same posts in the same run (the ceiling of the HTTP stack alone).
The clients run in a process of their own, so they do not share the server's event loop.

Run: ``.venv/bin/pytest tests/bench/bench_http.py -s`` (prints figures; asserts nothing about speed)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import uvicorn

from hub.cli import _services
from hub.engine import Engine
from hub.spec import load_config
from hub.store.auth import AuthStore
from support import write_config

CLIENTS = 8
SECONDS = 5.0

HUB = "store: {{url: 'sqlite:///{db}'}}\nweb: {{listen: '127.0.0.1:0'}}\n"
CHANNEL = """
name: lab_in
source: {type: http, path: /in/lab, format: hl7v2, idempotency_header: null}
routes:
  - {name: all, to: [out]}
destinations:
  out: {type: memory}
"""

LOAD = r"""
import asyncio, json, sys, time
import httpx

url, token, clients, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
def body(i):
    return (f"MSH|^~\\&|LIS|CLINIC|HUB|CLINIC|20260310090000||ADT^A04^ADT_A01|B{i}|P|2.5.1\r"
            f"EVN|A04|20260310090000\rPID|1||MRN{i}^^^CLINIC^MR||DOE^JANE||19800214|F\rPV1|1|O\r").encode()
async def main():
    lat, errors = [], 0
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "x-application/hl7-v2+er7"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as c:
        for i in range(20):  # warm up
            await c.post(url, content=body(i))
        end = time.perf_counter() + seconds
        n = 0
        async def worker(k):
            nonlocal n, errors
            while time.perf_counter() < end:
                n += 1
                t = time.perf_counter()
                r = await c.post(url, content=body(k * 1_000_000 + n))
                lat.append(time.perf_counter() - t)
                if r.status_code != 200:
                    errors += 1
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(clients)))
        took = time.perf_counter() - t0
    lat.sort()
    print(json.dumps({"n": len(lat), "rps": len(lat) / took, "p50": lat[len(lat) // 2],
                      "p99": lat[int(len(lat) * 0.99)], "errors": errors}))
asyncio.run(main())
"""


async def _load(url: str, token: str) -> dict[str, float]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LOAD, url, token, str(CLIENTS), str(SECONDS), stdout=subprocess.PIPE
    )
    out, _ = await proc.communicate()
    result: dict[str, float] = json.loads(out)
    return result


async def _bare() -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    """A bare uvicorn app (no framework) that reads the body and answers 200."""

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        more = True
        while more:
            msg = await receive()
            more = msg.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    server.capture_signals = lambda: __import__("contextlib").nullcontext()  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, task, f"http://127.0.0.1:{port}/in"


async def test_bench_http_source(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path / "cfg", HUB.format(db=tmp_path / "hub.db"), {"lab_in": CHANNEL}))
    eng = Engine(cfg, services=_services(cfg), idle_poll=0.05)
    await eng.start()
    try:
        auth = AuthStore(eng.store)
        await asyncio.to_thread(auth.add_user, "lab", "sender", None)
        token = await asyncio.to_thread(auth.create_token, "lab")
        hub = await _load(eng.services[0].url + "/in/lab", token)
    finally:
        await eng.stop()
    server, task, url = await _bare()
    try:
        bare = await _load(url, "x")
    finally:
        server.should_exit = True
        await task
    print(
        f"\nhttp source, {CLIENTS} clients, HL7 v2 ADT posts, SQLite synchronous=full: "
        f"{hub['rps']:.0f} req/s, p50 {hub['p50'] * 1000:.1f} ms, p99 {hub['p99'] * 1000:.1f} ms "
        f"({int(hub['n'])} requests, {int(hub['errors'])} not 200)\n"
        f"bare uvicorn app answering 200: {bare['rps']:.0f} req/s, p50 {bare['p50'] * 1000:.1f} ms, "
        f"p99 {bare['p99'] * 1000:.1f} ms\n"
        f"ratio hub / bare: {hub['rps'] / bare['rps']:.2f}"
    )
