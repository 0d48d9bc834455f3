"""A channel that cannot start, or whose polls fail, fails alone and visibly (issue 13, "Failing loudly and alone").

* An MLLP port already in use: the channel shows as failed (API, `hub status`) with one log line naming the channel
  and the port; the hub and its other channels keep running.
* An SFTP source whose polls fail (its key file is missing): the API's channel data carries the error, and the
  metrics the shipped alerts read exist from the start (the last-success timestamp at 0, a failed-poll counter).
"""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from websupport import HUB, until

from hub.cli import main
from hub.engine import Engine
from hub.metrics import render
from hub.spec import load_config
from hub.store.auth import AuthStore
from support import write_config

MEMORY = """
name: fa_adt
source: {type: memory, format: hl7v2}
routes:
  - {name: all, to: [out]}
destinations:
  out: {type: memory}
"""

MLLP = """
name: fa_busy
source: {{type: mllp, listen: '127.0.0.1:{port}'}}
routes:
  - {{name: all, to: [out]}}
destinations:
  out: {{type: memory}}
"""

MLLP_FREE = """
name: fa_free
source: {type: mllp, listen: '127.0.0.1:0'}
routes:
  - {name: all, to: [out]}
destinations:
  out: {type: memory}
"""

SFTP = """
name: fa_roster
source:
  type: sftp
  host: 127.0.0.1
  port: {port}
  user: clinic
  key_file: {key}
  known_hosts: {known}
  path: outbox
  schedule: 1h
  format: csv
routes:
  - {{name: all, to: [out]}}
destinations:
  out: {{type: memory}}
"""

ADT = (
    b"MSH|^~\\&|PM|CLINIC|EHR|CLINIC|20260310090000||ADT^A04^ADT_A01|FA0001|P|2.5.1\r"
    b"EVN|A04|20260310090000\rPID|1||FA100^^^CLINIC^MR||DOE^JANE||19800214|F\rPV1|1|O\r"
)


@pytest.fixture
def busy_port():
    """A port some other program already listens on (127.0.0.1)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    yield s.getsockname()[1]
    s.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_port_in_use_fails_that_channel_alone_in_one_line(tmp_path, busy_port, caplog):

    cfg_dir = write_config(
        tmp_path / "config",
        HUB.format(db=tmp_path / "hub.db", port=18080),
        {"fa_adt": MEMORY, "fa_busy": MLLP.format(port=busy_port), "fa_free": MLLP_FREE},
    )
    eng = Engine(load_config(cfg_dir), idle_poll=0.05)
    with caplog.at_level(logging.INFO, logger="hub"):
        await eng.start()  # before: OSError out of start() — the whole hub exited
    try:
        assert "fa_busy" in eng.failed and "fa_busy" not in eng.sources
        assert {"fa_adt", "fa_free"} <= set(eng.sources)
        failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(failures) == 1, [r.getMessage() for r in failures]
        line = failures[0].getMessage()
        assert "fa_busy" in line and f"127.0.0.1:{busy_port}" in line and "\n" not in line
        assert failures[0].exc_info is None  # no traceback

        # the other channels work
        receipt = await eng.sources["fa_adt"].push(ADT)
        assert receipt.results[0].outcome == "accepted"

        # the API says so
        by_name = await api_channels(eng)
        assert by_name["fa_busy"]["state"] == "failed"
        assert f"127.0.0.1:{busy_port}" in by_name["fa_busy"]["error"]
        assert by_name["fa_adt"]["state"] == "running" and by_name["fa_adt"]["error"] is None
        assert by_name["fa_free"]["state"] == "running"
    finally:
        await eng.stop()


async def api_channels(eng: Engine) -> dict[str, dict]:
    """GET /api/channels as a viewer, by channel name."""
    import httpx

    from hub.web.app import create_app

    app = create_app(eng)
    auth: AuthStore = app.state.hub.auth
    await asyncio.to_thread(auth.add_user, "viewer", "viewer", None)
    token = await asyncio.to_thread(auth.create_token, "viewer")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://hub.test",
        headers={"Authorization": f"Bearer {token}"},
    ) as c:
        r = await c.get("/api/channels")
    assert r.status_code == 200
    return {ch["name"]: ch for ch in r.json()}


async def test_hub_status_shows_the_failed_channel(tmp_path, busy_port, capsys):
    cfg_dir = write_config(
        tmp_path / "config",
        HUB.format(db=tmp_path / "hub.db", port=18080),
        {"fa_adt": MEMORY, "fa_busy": MLLP.format(port=busy_port)},
    )
    eng = Engine(load_config(cfg_dir), idle_poll=0.05)
    await eng.start()
    try:
        capsys.readouterr()
        assert await asyncio.to_thread(main, ["status", "--config", str(cfg_dir)]) == 0
        out = capsys.readouterr().out
        assert "FAILED" in out and f"127.0.0.1:{busy_port}" in out
        assert await asyncio.to_thread(main, ["status", "--json", "--config", str(cfg_dir)]) == 0
        import json

        rows = {r["channel"]: r for r in json.loads(capsys.readouterr().out)}
        assert rows["fa_busy"]["state"] == "failed" and rows["fa_adt"]["state"] == "running"
    finally:
        await eng.stop()


async def test_a_failing_sftp_poll_shows_in_the_channel_and_the_metrics(tmp_path):

    known = tmp_path / "known_hosts"
    known.write_text("")
    cfg_dir = write_config(
        tmp_path / "config",
        HUB.format(db=tmp_path / "hub.db", port=18080),
        {"fa_adt": MEMORY, "fa_roster": SFTP.format(port=_closed_port(), key=tmp_path / "no_such_key", known=known)},
    )
    eng = Engine(load_config(cfg_dir), idle_poll=0.05)
    await eng.start()
    try:
        src = eng.sources["fa_roster"]
        await until(lambda: src.polls >= 1)
        text = render().decode()
        # exists from the start at 0 (the stale-poll alert can fire), and the failed polls are counted
        assert 'hub_sftp_last_poll_success_timestamp_seconds{channel="fa_roster"} 0.0' in text
        errors = [ln for ln in text.splitlines() if ln.startswith('hub_sftp_poll_errors_total{channel="fa_roster"}')]
        assert errors and float(errors[0].split()[-1]) >= 1

        roster = (await api_channels(eng))["fa_roster"]
        assert "no_such_key" in roster["peers"]["sftp_error"] and "not found" in roster["peers"]["sftp_error"]
        assert roster["peers"]["sftp_last_poll"] is None  # no poll has reached the server
    finally:
        await eng.stop()
