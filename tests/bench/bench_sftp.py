"""SFTP source benchmark (issue 6): prints figures, asserts only that everything arrived.

Against a real OpenSSH sshd on loopback (the test server of tests/channels/test_sftp.py), through a running
Engine on SQLite:

1. a folder of N small files (one ADT each, default 1,000): files/s from engine start to the last file archived
   (list twice, download, accept, move to archive/ — one poll takes up to max_files), one file at a time
   (``parallel: 1``, the folder's order kept) and eight at a time (``parallel: 8``);
2. one large file (default 100 MB: an HL7 batch of ~100 KB ORU messages with an embedded document): MB/s
   from start to archived (download streamed to a temporary file while hashed, then accepted in chunks of
   chunk_size), the download alone in MB/s, and the peak growth of the process's resident memory during it —
   which stays near a few chunk sizes, not the file size, because the file is never held whole.

Run: ``make bench`` (or ``pytest -s tests/bench/bench_sftp.py -o python_files='bench_*.py'``).
``HUB_BENCH_SFTP_FILES`` and ``HUB_BENCH_SFTP_MB`` change the sizes.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "channels"))

from test_sftp import PASSPHRASE, SshServer, conn_yaml, drop, need_sshd

from hub.channels.sftp import SftpSource
from hub.engine import Engine
from hub.spec import load_config
from support import write_config

FILES = int(os.environ.get("HUB_BENCH_SFTP_FILES", "1000"))
MB = int(os.environ.get("HUB_BENCH_SFTP_MB", "100"))


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class PeakRss:
    """Samples the resident set size every 5 ms while running."""

    def __init__(self) -> None:
        self.base = rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def channel(server: SshServer, folder: Path, extra: str = "") -> str:
    return f"""
name: bench
source: {{type: sftp, {conn_yaml(server)}, path: '{folder}', schedule: 100ms, settle: 100ms, max_files: 1000,
          format: hl7v2{extra}}}
# no routes: every message is stored (as filtered) and nothing is delivered — the figures are the poll's
"""


def small(i: int) -> bytes:
    return (
        f"MSH|^~\\&|PM|CLINIC|HUB|CLINIC|20261123101500||ADT^A04^ADT_A01|B{i:06d}|P|2.5.1\r"
        f"EVN|A04|20261123101500\rPID|1||{100000 + i}^^^CLINIC^MR||TESTER^ANNA||19800101|F\rPV1|1|O\r"
    ).encode()


def big_batch(total: int) -> tuple[bytes, int]:
    """An HL7 batch of ORU^R01 messages each carrying ~100 KB of base64 (a scanned report)."""
    doc = base64.b64encode(os.urandom(75 * 1024)).decode()
    msgs = []
    size = 0
    i = 0
    while size < total:
        m = (
            f"MSH|^~\\&|LAB|CLINIC|HUB|CLINIC|20261123101500||ORU^R01^ORU_R01|L{i:06d}|P|2.5.1\r"
            f"PID|1||{200000 + i}^^^CLINIC^MR||TESTER^ANNA||19800101|F\r"
            f"OBR|1||R{i}|11502-2^Lab report^LN\r"
            f"OBX|1|ED|11502-2^Lab report^LN||^application^pdf^Base64^{doc}||||||F\r"
        ).encode()
        msgs.append(m)
        size += len(m)
        i += 1
    body = b"FHS|^~\\&|LAB\rBHS|^~\\&|LAB\r" + b"".join(msgs) + f"BTS|{i}\rFTS|1\r".encode()
    return body, i


async def run(cfg_dir: Path, done) -> float:
    eng = Engine(load_config(cfg_dir), idle_poll=0.05)
    t0 = time.perf_counter()
    await eng.start()
    try:
        while not done():
            await asyncio.sleep(0.02)
        return time.perf_counter() - t0
    finally:
        await eng.stop()


def test_bench_sftp_poll(tmp_path):
    need_sshd()
    os.environ["TEST_SFTP_PASSPHRASE"] = PASSPHRASE
    server = SshServer(tmp_path / "sshd")
    server.start()
    try:
        print(f"\nSFTP source (OpenSSH {server.port} on loopback, SQLite store)")
        # ---- 1. many small files, one at a time (folder order kept) and eight at a time
        for parallel in (1, 8):
            inbox = server.folder(f"small{parallel}")
            for i in range(FILES):
                drop(inbox, f"adt{i:05d}.hl7", small(i))
            home = tmp_path / f"small{parallel}"
            cfg = write_config(
                home / "cfg",
                f"home: ..\nstore: {{url: 'sqlite:///{home / 'hub.db'}'}}\nweb: {{enabled: false}}\n",
                {"bench": channel(server, inbox, f", parallel: {parallel}")},
            )
            secs = asyncio.run(
                run(
                    cfg,
                    lambda inbox=inbox: (inbox / "archive").exists() and len(os.listdir(inbox / "archive")) == FILES,
                )
            )
            print(
                f"  {FILES} small files ({len(small(0))} bytes), parallel {parallel}: {FILES / secs:6.0f} files/s"
                f"   ({secs:.2f}s: list twice → download → accept → archive)"
            )

        # ---- 2. one large file
        inbox = server.folder("large")
        data, n_msgs = big_batch(MB * 1024 * 1024)
        drop(inbox, "big.hl7", data)
        size = len(data)
        del data
        timing: dict[str, float] = {}
        original = SftpSource._download

        def timed(self, remote, attrs):
            t = time.perf_counter()
            try:
                return original(self, remote, attrs)
            finally:
                timing["download"] = time.perf_counter() - t

        SftpSource._download = timed  # type: ignore[method-assign]
        cfg = write_config(
            tmp_path / "b" / "cfg",
            f"home: ..\nstore: {{url: 'sqlite:///{tmp_path / 'b.db'}'}}\nweb: {{enabled: false}}\n",
            {"bench": channel(server, inbox)},
        )
        try:
            with PeakRss() as mem:
                secs = asyncio.run(run(cfg, lambda: (inbox / "archive" / "big.hl7").exists()))
        finally:
            SftpSource._download = original  # type: ignore[method-assign]
        mb = size / 1024 / 1024
        print(f"  1 large file ({mb:.0f} MB, {n_msgs} ORU messages):  {mb / secs:8.1f} MB/s end to end   ({secs:.2f}s)")
        print(
            f"      download alone (streamed to a temp file, hashed): {mb / timing['download']:6.1f} MB/s"
            f"   ({timing['download']:.2f}s)"
        )
        print(
            f"      peak resident memory growth: {(mem.peak - mem.base) / 1024 / 1024:6.1f} MB"
            f"   (chunk_size 4MB; the file is {mb:.0f} MB)"
        )
        assert (inbox / "archive" / "big.hl7").stat().st_size == size
    finally:
        server.stop()
