"""MLLP benchmark (issue 3): prints figures, asserts only that every AA'd message is in the store.

1. Throughput and ACK latency. The same client (asyncio, in this process) drives, one after the other:
   * a bare asyncio MLLP server that only answers AA (a separate process: the ceiling of this machine and client);
   * the hub (``hub run`` in a separate process) with an MLLP → store → file channel on SQLite, once with the
     store's default ``synchronous: full`` (each commit fsynced), once with ``synchronous: normal``, and once
     with no destination at all (what the deliveries' claims and marks cost the ACK path);
   with 5,000 ADT^A01 over 1 connection and over 8 connections: messages/s and p50/p99 of the time from writing a
   frame to reading its ACK. Afterwards every message the hub AA'd is looked up in its store.
   For scale, two ceilings below the bare server that any engine which ACKs only durable messages lives under:
   * the durable floor: a Python asyncio server (a separate process) that does nothing but append each frame to a
     journal file and answer AA once an fdatasync covering it has returned (group commit on a thread, like the
     hub's store): no parsing, no database — the least "an ACK means the message is on disk" costs here;
   * the store's own: sqlite3 alone (no Python around it) inserting into the hub's schema with synchronous=FULL,
     1 and 8 messages per commit — 8 connections that each wait for their ACK share at most that.
2. Memory: the hub with 50,000 deliveries queued for an absent MLLP peer and 200 open idle connections: RSS.
3. Beside a heavy channel: ACK latency on one connection (a message every 2 ms) while another channel of the same
   hub takes a 2,000-claim 835 through ``x12_835_to_csv`` and ``x12_999`` (pyx12) — the work that used to hold
   every listener of the hub for seconds, and now runs on a worker thread (hub.channels.channel).

Run: ``make bench`` (or ``pytest -s tests/bench/bench_mllp.py -o python_files='bench_*.py' -o addopts=''``).
``HUB_BENCH_N`` sets the message count (default 5000), ``HUB_BENCH_QUEUED`` the queued deliveries (50000).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from hub.store import NewDelivery, NewMessage, Store
from support import write_config

N = int(os.environ.get("HUB_BENCH_N", "5000"))
QUEUED = int(os.environ.get("HUB_BENCH_QUEUED", "50000"))
IDLE = 200
HUB = str(Path(sys.executable).with_name("hub"))


def adt(cid: str, i: int) -> bytes:
    return (
        f"MSH|^~\\&|PM|CLINIC|HUB|CLINIC|20260310091500||ADT^A01^ADT_A01|{cid}|P|2.5.1\r"
        f"EVN|A01|20260310091500\r"
        f"PID|1||MRN{i:06d}^^^CLINIC^MR||SAMPLE^PAT^Q||19800101|F|||1 MAIN ST^^SPRINGFIELD^IL^62701"
        "||^PRN^PH^^1^217^5550100\r"
        f"PV1|1|I|WARD^101^1^CLINIC||||1234567893^WELBY^MARCUS^^^DR^MD^^NPI|||MED||||1|||1234567893^WELBY^MARCUS|IP|V{i:08d}\r"
    ).encode()


# The bare server: cuts frames and answers each with AA at once. The durable floor (FLOOR) is the same server, but
# each frame is appended to a journal and answered only once a thread's fdatasync (one per group) covers it.
SERVER = r"""
import asyncio, os, sys, threading

class Bare(asyncio.Protocol):
    def connection_made(self, transport):
        self.t, self.buf = transport, b""

    def data_received(self, data):
        buf = self.buf + data
        while True:
            end = buf.find(b"\x1c\r")
            if end < 0:
                break
            msg, buf = buf[buf.find(b"\x0b") + 1 : end], buf[end + 2 :]
            head = msg.split(b"\r", 1)[0].split(b"|")
            cid = head[9] if len(head) > 9 else b""
            self.answer(msg, b"\x0bMSH|^~\\&|BENCH|BENCH|PM|CLINIC|20260310091500||ACK^A01^ACK|" + cid
                        + b"|P|2.5.1\rMSA|AA|" + cid + b"\r\x1c\r")
        self.buf = buf

    def answer(self, msg, ack):
        self.t.write(ack)

async def serve(protocol):
    await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", int(sys.argv[1]), backlog=512)
    print("ready", flush=True)
    await asyncio.Event().wait()
"""
BARE = SERVER + "asyncio.run(serve(Bare))\n"
FLOOR = (
    SERVER
    + r"""
class Journal:
    def __init__(self, path, loop):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.loop, self.frames, self.answers, self.cond = loop, [], [], threading.Condition()
        threading.Thread(target=self.flush, daemon=True).start()

    def append(self, data, answer):
        with self.cond:
            self.frames.append(data)
            self.answers.append(answer)
            self.cond.notify()

    def flush(self):
        while True:
            with self.cond:
                while not self.frames:
                    self.cond.wait()
                frames, answers, self.frames, self.answers = self.frames, self.answers, [], []
            os.write(self.fd, b"".join(frames))
            os.fdatasync(self.fd)
            self.loop.call_soon_threadsafe(answer_all, answers)

def answer_all(answers):
    for answer in answers:
        answer()

class Floor(Bare):
    def answer(self, msg, ack):
        JOURNAL.append(b"\x0b" + msg + b"\x1c\r", lambda: self.t.write(ack))

async def main():
    global JOURNAL
    JOURNAL = Journal(sys.argv[2], asyncio.get_running_loop())
    await serve(Floor)

asyncio.run(main())
"""
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000


async def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


async def drive(port: int, n: int, conns: int, prefix: str) -> tuple[float, list[float], dict[str, str]]:
    """Send n messages over `conns` connections (each waits for its ACK before the next):
    (seconds, latencies, cid → code)."""
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(conns)]
    lat: list[float] = []
    acks: dict[str, str] = {}
    per = n // conns

    async def one(c: int) -> None:
        reader, writer = streams[c]
        for i in range(per):
            cid = f"{prefix}-{c}-{i}"
            payload = b"\x0b" + adt(cid, c * per + i) + b"\x1c\r"
            t0 = time.perf_counter()
            writer.write(payload)
            data = await reader.readuntil(b"\x1c\r")
            lat.append(time.perf_counter() - t0)
            k = data.find(b"\rMSA|")
            acks[cid] = data[k + 5 : k + 7].decode() if k >= 0 else "??"

    t0 = time.perf_counter()
    await asyncio.gather(*(one(c) for c in range(conns)))
    seconds = time.perf_counter() - t0
    for _, w in streams:
        w.close()
    return seconds, lat, acks


def line(label: str, n: int, seconds: float, lat: list[float]) -> str:
    return f"  {label:48} {n / seconds:8.0f} msg/s   p50 {pct(lat, 0.5):6.2f} ms   p99 {pct(lat, 0.99):6.2f} ms"


def summary(lat: list[float]) -> str:
    return f"p50 {pct(lat, 0.5):6.2f} ms   p99 {pct(lat, 0.99):6.2f} ms   max {max(lat) * 1000:7.1f} ms"


def sqlite_ceiling(folder: Path, per: int, commits: int = 1500) -> float:
    """Messages/s of the store's own INSERTs with nothing else: sqlite3 with no Python around it, the hub's schema
    and synchronous=FULL, ``per`` messages (+ one delivery each) per commit — what 8 connections can share at most."""
    Store(f"sqlite:///{folder / 'ceiling.db'}").open().close()  # the hub's schema, migrated
    db = sqlite3.connect(folder / "ceiling.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    body = adt("X", 0)
    t0 = time.perf_counter()
    for i in range(commits):
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO messages (channel, received_at, status, content_type, control_id, message_type, sending_app,"
            " sending_facility, patient_id, meta, size, raw)"
            " VALUES ('bench', ?, 'accepted', 'hl7v2', ?, 'ADT^A01', 'PM', 'CLINIC', ?, '{}', ?, ?)",
            [(time.time(), f"C{i}-{k}", f"MRN{i * per + k:06d}", len(body), body) for k in range(per)],
        )
        last = db.execute("SELECT last_insert_rowid()").fetchone()[0]
        db.executemany(
            "INSERT INTO deliveries (message_id, channel, destination, route, status, attempts, next_at, created_at,"
            " updated_at) VALUES (?, 'bench', 'files', 'all', 'queued', 0, ?, ?, ?)",
            [(last - k, time.time(), time.time(), time.time()) for k in range(per)],
        )
        db.execute("COMMIT")
    seconds = time.perf_counter() - t0
    db.close()
    return commits * per / seconds


def hub_config(folder: Path, channel: str, sync: str = "full") -> Path:
    hub_yaml = (
        f"home: {folder}\nstore: {{url: 'sqlite:///{folder / 'hub.db'}', synchronous: {sync}}}\n"
        "web: {enabled: false}\nlog_level: warning\n"
    )
    return write_config(folder / "config", hub_yaml, {"bench": channel})


def rss_mb(pid: int) -> float:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1]) / 1024
    return float("nan")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def test_bench_mllp_throughput_and_latency(tmp_path):
    results: dict[tuple[str, int], tuple[float, list[float]]] = {}
    print(
        f"\nMLLP: {N} ADT^A01 per run, each connection waits for its ACK before sending the next"
        f" (python {sys.version.split()[0]})"
    )

    # the ceiling: a bare asyncio server that answers AA and does nothing else
    # and the durable floor: the same server, but each frame is on disk (fdatasync) before its AA
    for name, args in (("bare", ["-c", BARE]), ("floor", ["-c", FLOOR])):
        port = free_port()
        server = subprocess.Popen([sys.executable, *args, str(port), str(tmp_path / "journal")], stdout=subprocess.PIPE)
        try:
            await wait_port(port, server)
            await drive(port, 500, 1, "warm")
            for conns in (1, 8):
                seconds, lat, _ = await drive(port, N, conns, f"{name}{conns}")
                results[(name, conns)] = (N / seconds, lat)
                label = "bare asyncio server" if name == "bare" else "durable floor (append + fdatasync)"
                ratio = "" if name == "bare" else f"   = {N / seconds / results[('bare', conns)][0]:.0%} of bare"
                print(line(f"{label}, {conns} conn.", N, seconds, lat) + ratio)
        finally:
            stop(server)
    for per in (1, 8):
        rate = sqlite_ceiling(tmp_path, per)
        conns = 8 if per == 8 else 1
        print(
            f"  {f'SQLite alone, {per} msg per fsynced commit':48} {rate:8.0f} msg/s   "
            f"= {rate / results[('bare', conns)][0]:.0%} of the bare server at {conns} conn."
        )

    # the hub: MLLP → store (SQLite) → file; synchronous=full is the default (every commit fsynced: survives a power
    # loss), synchronous=normal survives a crash of the hub process but not of the machine
    # (and, to show what the deliveries cost the ACK path, once without a destination: MLLP → store only)
    variants = [("full", True), ("normal", True), ("full", False)]
    for sync, files in variants:
        label = f"synchronous={sync}" + ("" if files else ", no destination")
        folder = tmp_path / f"hub-{sync}-{files}"
        port = free_port()
        channel = f"""
name: bench
source: {{type: mllp, listen: "127.0.0.1:{port}"}}
"""
        if files:
            channel += f"""routes: [{{name: all, to: [files]}}]
destinations:
  files: {{type: file, path: "{folder}/out/{{control_id}}.hl7"}}
"""
        cfg = hub_config(folder, channel, sync)
        hub = subprocess.Popen([HUB, "run", "--config", str(cfg)])
        acked: dict[str, str] = {}
        try:
            await wait_port(port, hub)
            _, _, warm = await drive(port, 500, 1, "warm")
            acked.update(warm)
            for conns in (1, 8):
                seconds, lat, acks = await drive(port, N, conns, f"hub{conns}")
                acked.update(acks)
                results[(label, conns)] = (N / seconds, lat)
                print(line(f"hub, {label}, {conns} conn.", N, seconds, lat))
            if files:
                t0 = time.perf_counter()
                out = folder / "out"
                while time.perf_counter() - t0 < 120 and len(list(out.glob("*.hl7"))) < len(acked):
                    await asyncio.sleep(0.2)
                written = len(list(out.glob("*.hl7")))
                print(
                    f"  {'':6}files written: {written}/{len(acked)}"
                    f" ({time.perf_counter() - t0:.1f}s after the last ACK)"
                )
        finally:
            stop(hub)
        # every AA'd message is in the store
        assert set(acked.values()) == {"AA"}, set(acked.values())
        with sqlite3.connect(folder / "hub.db") as db:
            stored = {row[0] for row in db.execute("select control_id from messages where channel = 'bench'")}
        missing = set(acked) - stored
        print(f"  {'':6}AA'd: {len(acked)}, in the store: {len(stored & set(acked))}, missing: {len(missing)}")
        assert not missing

    for sync, files in variants:
        label = f"synchronous={sync}" + ("" if files else ", no destination")
        ratios = ", ".join(f"{results[(label, c)][0] / results[('bare', c)][0]:.0%} at {c}" for c in (1, 8))
        floor = ", ".join(f"{results[(label, c)][0] / results[('floor', c)][0]:.0%} at {c}" for c in (1, 8))
        print(
            f"  hub ({label}) / bare: {ratios} conn.; / durable floor: {floor} conn.; "
            f"p99 at 1 connection {pct(results[(label, 1)][1], 0.99):.2f} ms"
        )
    print("  target: ≥ 50% of bare at 8 connections; p99 ≤ 5 ms at 1 connection")


async def test_bench_mllp_memory_idle_connections_and_queued_deliveries(tmp_path):
    folder = tmp_path / "mem"
    listen, absent = free_port(), free_port()
    channel = f"""
name: bench
source: {{type: mllp, listen: "127.0.0.1:{listen}"}}
routes: [{{name: all, to: [lab]}}]
destinations:
  lab: {{type: mllp, address: "127.0.0.1:{absent}", queue: {{max_attempts: 1000, backoff: {{initial: 1s, max: 5s}}}}}}
"""
    cfg = hub_config(folder, channel)
    store = Store(f"sqlite:///{folder / 'hub.db'}").open()
    t0 = time.perf_counter()
    try:
        for start in range(0, QUEUED, 1000):
            store.accept(
                [
                    NewMessage(
                        "bench",
                        adt(f"Q{i}", i),
                        "hl7v2",
                        meta={"control_id": f"Q{i}", "message_type": "ADT^A01", "patient_id": f"MRN{i:06d}"},
                        deliveries=[NewDelivery("lab")],
                    )
                    for i in range(start, min(QUEUED, start + 1000))
                ]
            )
    finally:
        store.close()
    print(f"\nMLLP memory: {QUEUED} deliveries queued for an absent peer (filled in {time.perf_counter() - t0:.1f}s)")
    hub = subprocess.Popen([HUB, "run", "--config", str(cfg)])
    streams = []
    try:
        await wait_port(listen, hub)
        await asyncio.sleep(2)  # the worker claims, fails to connect, backs off
        base = rss_mb(hub.pid)
        for i in range(IDLE):
            r, w = await asyncio.open_connection("127.0.0.1", listen)
            w.write(b"\x0b" + adt(f"IDLE{i}", i) + b"\x1c\r")
            await r.readuntil(b"\x1c\r")  # each connection used once, then left open and idle
            streams.append((r, w))
        await asyncio.sleep(2)
        rss = rss_mb(hub.pid)
        assert hub.poll() is None
        print(f"  hub RSS with the queue and no connections: {base:.0f} MB")
        print(f"  hub RSS with the queue and {IDLE} idle connections: {rss:.0f} MB (target < 300 MB)")
    finally:
        for _, w in streams:
            w.close()
        stop(hub)
    with sqlite3.connect(folder / "hub.db") as db:
        pending = db.execute("select count(*) from deliveries where status in ('queued', 'retry')").fetchone()[0]
    print(f"  deliveries still waiting for the peer: {pending}")


async def test_bench_mllp_latency_beside_a_heavy_channel(tmp_path):
    from bench_x12 import _write_835

    root = Path(__file__).resolve().parents[2]
    folder, claims = tmp_path / "heavy", 2000
    (folder / "in").mkdir(parents=True)
    port = free_port()
    mllp = f"""
name: bench
source: {{type: mllp, listen: "127.0.0.1:{port}"}}
routes: [{{name: all, to: [files]}}]
destinations:
  files: {{type: file, path: "{folder}/out/{{control_id}}.hl7"}}
"""
    remit = f"""
name: remit
source: {{type: file, path: "{folder}/in", format: x12, split: none, schedule: 200ms}}
routes:
  - name: postings
    transforms: [{{type: x12_835_to_csv, layout: x12/835_posting_layout.yaml, on_unbalanced: error}}]
    to: [postings]
  - name: acknowledge
    transforms: [{{type: x12_999, partner: clearinghouse}}]
    to: [acks]
destinations:
  postings: {{type: file, path: "{folder}/postings/{{message_id}}.csv"}}
  acks: {{type: file, path: "{folder}/acks/{{message_id}}.x12"}}
"""
    hub_yaml = (
        f"home: {folder}\nmappings: {root / 'mappings'}\nstore: {{url: 'sqlite:///{folder / 'hub.db'}'}}\n"
        "web: {enabled: false}\nlog_level: warning\n"
    )
    cfg = write_config(folder / "config", hub_yaml, {"bench": mllp, "remit": remit})
    _write_835(folder / "big.835.part", claims)
    hub = subprocess.Popen([HUB, "run", "--config", str(cfg)])
    quiet: list[float] = []
    busy: list[float] = []
    try:
        await wait_port(port, hub)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = 0

        async def one() -> float:
            """One round trip (frame written → ACK read), then a 2 ms pause."""
            nonlocal i
            i += 1
            t0 = time.perf_counter()
            writer.write(b"\x0b" + adt(f"L{i}", i) + b"\x1c\r")
            ack = await reader.readuntil(b"\x1c\r")
            took = time.perf_counter() - t0
            assert b"MSA|AA|" in ack
            await asyncio.sleep(0.002)
            return took

        end = time.monotonic() + 2
        while time.monotonic() < end:
            quiet.append(await one())
        (folder / "big.835.part").rename(folder / "in" / "big.835")

        def finished() -> bool:  # the 835 moved to done/, its posting CSV and its 999 written
            done = (folder / "in" / "done" / "big.835").exists()
            return done and any((folder / "postings").glob("*.csv")) and any((folder / "acks").glob("*.x12"))

        end = time.monotonic() + 60
        while time.monotonic() < end and not finished():
            busy.append(await one())
        took = 60 - (end - time.monotonic())
        writer.close()
        assert finished(), "the 835 was not taken, posted and acknowledged within 60 s"
    finally:
        stop(hub)
    print(
        f"\nMLLP beside a heavy channel: one connection, an ADT every 2 ms; another channel takes a {claims}-claim 835"
    )
    print(f"  {'before the 835 arrives':40} {len(quiet):6} msgs   {summary(quiet)}")
    print(
        f"  {'while it is read, mapped, pyx12-checked':40} {len(busy):6} msgs   {summary(busy)}"
        f"   ({took:.1f}s until posted and acknowledged)"
    )
