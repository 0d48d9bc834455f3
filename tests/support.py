"""Helpers shared by tests (import with `from support import ...`; conftest.py files share one module name)."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "samples"
CORPUS = ROOT.parent / "shared" / "corpus"


def need_peer(available: bool, reason: str) -> None:
    """Skip with a visible reason when a real peer is missing — except in CI, where that is a failure.

    Under ``HUB_UNIT=1`` (``make unit``, the quick tier) every test that needs a peer is skipped at once."""
    if os.environ.get("HUB_UNIT") == "1":
        pytest.skip(f"make unit skips what needs a peer ({reason}); make test runs it")
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must provide this peer: {reason}")
    pytest.skip(reason)


def write_config(folder: Path, hub_yaml: str, channels: dict[str, str]) -> Path:
    """A config folder with hub.yaml and channels/<name>.yaml files; returns the folder."""
    (folder / "channels").mkdir(parents=True, exist_ok=True)
    (folder / "hub.yaml").write_text(hub_yaml)
    for name, text in channels.items():
        (folder / "channels" / f"{name}.yaml").write_text(text)
    return folder


async def until(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition", every: float = 0.02) -> None:
    """Poll ``cond`` until it is true; fail the test after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        await asyncio.sleep(every)
    raise AssertionError(f"{what} not met in {timeout}s")


class WebhookReceiver(http.server.ThreadingHTTPServer):
    """A real HTTP server on 127.0.0.1:<free port> receiving webhooks: answers ``statuses`` in turn (then 200) and
    keeps what it accepted — ``received`` (headers, JSON body), ``raw`` bodies, ``paths``; ``arrived`` is set on the
    first. ``close()`` when done."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.received: list[tuple[dict[str, str], Any]] = []
        self.raw: list[bytes] = []
        self.paths: list[str] = []
        self.statuses = list(statuses or [])
        self.arrived = threading.Event()
        hooks = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = hooks.statuses.pop(0) if hooks.statuses else 200
                if status < 300:
                    hooks.raw.append(body)
                    hooks.paths.append(self.path)
                    hooks.received.append((dict(self.headers), json.loads(body)))
                    hooks.arrived.set()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


#: The machine's MariaDB (root, empty password): the peer of the database connectors' tests.
MARIADB = ("127.0.0.1", int(os.environ.get("HUB_TEST_MARIADB_PORT", "3306")))


def listening(addr: tuple[str, int]) -> bool:
    """Whether something accepts TCP connections at ``addr`` (a peer server is up)."""
    try:
        with socket.create_connection(addr, timeout=1):
            return True
    except OSError:
        return False


def sql(url: str, *statements: str, params: list[dict] | dict | None = None) -> list:
    """Run statements on a peer database (PostgreSQL, MariaDB; one transaction) through SQLAlchemy; the rows of the
    last, as tuples."""
    from sqlalchemy import create_engine, text

    eng = create_engine(url)
    try:
        with eng.begin() as conn:
            rows: list = []
            for s in statements:
                r = conn.execute(text(s), params) if params is not None else conn.execute(text(s))
                rows = [tuple(x) for x in r] if r.returns_rows else []
            return rows
    finally:
        eng.dispose()
