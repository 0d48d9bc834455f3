"""A running engine with the web app in front of it, users of every role, and an httpx client per role."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from hub.cli import _services
from hub.engine import Engine
from hub.spec import Config, load_config
from hub.store.auth import AuthStore
from hub.web import WebServer
from support import SAMPLES, write_config

PASSWORD = "synthetic-test-password-1"
ROLES = ("viewer", "operator", "analyst", "admin")

HUB = """
store: {{url: 'sqlite:///{db}'}}
web: {{listen: '127.0.0.1:{port}'}}
"""

ADT = """
name: adt
description: Registrations from the PM system (test)
source: {type: memory, format: hl7v2}
routes:
  - {name: all, to: [ehr, flaky]}
destinations:
  ehr: {type: memory}
  flaky: {type: memory, fail: permanent, fail_times: 1, queue: {max_attempts: 1}}
"""

OTHER = """
name: other
source: {type: memory, format: raw}
routes:
  - {name: all, to: [out]}
destinations:
  out: {type: memory}
"""


def sample(name: str) -> bytes:
    return (SAMPLES / "hl7v2" / name).read_bytes()


def hl7(control_id: str, patient: str, trigger: str = "A04", name: str = "DOE^JANE") -> bytes:
    """A small synthetic ADT message."""
    return (
        f"MSH|^~\\&|PM|CLINIC|EHR|CLINIC|20260310090000||ADT^{trigger}^ADT_A01|{control_id}|P|2.5.1\r"
        f"EVN|{trigger}|20260310090000\r"
        f"PID|1||{patient}^^^CLINIC^MR||{name}||19800214|F\r"
        "PV1|1|O\r"
    ).encode()


async def until(cond: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


@dataclass
class Hub:
    engine: Engine
    app: Any
    auth: AuthStore
    tokens: dict[str, str] = field(default_factory=dict)
    clients: list[httpx.AsyncClient] = field(default_factory=list)
    base_url: str = "http://hub.test"

    def client(self, role: str | None = None, **kw: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        c = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url=self.base_url, headers=headers, **kw
        )
        self.clients.append(c)
        return c

    async def push(self, raw: bytes, channel: str = "adt") -> int:
        receipt = await self.engine.sources[channel].push(raw)
        return receipt.results[0].message_id

    async def close(self) -> None:
        for c in self.clients:
            await c.aclose()
        await self.engine.stop()


def web_engine(cfg: Config, **kw: Any) -> Engine:
    """An engine composed like `hub run` does it: with the web app as a service when web.enabled."""
    return Engine(cfg, services=_services(cfg), **kw)


def web_server(eng: Engine) -> WebServer | None:
    """The web app an engine of :func:`web_engine` serves (None before start, after stop, or when disabled)."""
    return next((s for s in eng.services if isinstance(s, WebServer)), None)


def make_config(folder: Path, port: int = 0) -> Any:
    db = folder / "hub.db"
    return load_config(
        write_config(folder / "config", HUB.format(db=db, port=port or 18080), {"adt": ADT, "other": OTHER})
    )


async def start_hub(folder: Path, *, passwords: bool = False) -> Hub:
    """Engine (memory sources, no web server) + the app, and one user and API token per role (users named
    after their role; with ``passwords`` they can also log in with PASSWORD — scrypt costs ~0.15 s each)."""
    from hub.web.app import create_app

    cfg = make_config(folder)
    eng = Engine(cfg, idle_poll=0.05)  # no services: the app is driven through httpx's ASGI transport
    await eng.start()
    app = create_app(eng)
    auth = app.state.hub.auth
    hub = Hub(eng, app, auth)
    for role in ROLES:
        await asyncio.to_thread(auth.add_user, role, role, PASSWORD if passwords else None)
        hub.tokens[role] = await asyncio.to_thread(auth.create_token, role)
    return hub
