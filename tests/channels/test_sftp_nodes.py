"""Two real ``hub run`` processes (nodes ``a`` and ``b``) share one PostgreSQL store and poll the same SFTP folder:
the folder's lease lets one of them poll at a time, the other takes over when the holder is killed, and every
file is ingested exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from test_sftp import PASSPHRASE, SshServer, conn_yaml, drop, need_sshd

from support import ROOT, write_config

pytestmark = pytest.mark.postgres


def _wait(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not met in {timeout}s")


def test_two_hub_processes_share_the_folder_and_take_every_file_once(pg_url, tmp_path):
    need_sshd()
    server = SshServer(tmp_path / "sshd")
    server.start()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        inbox = server.folder("in")
        adt = (
            "MSH|^~\\&|PM|CLINIC|HUB|CLINIC|20261123101500||ADT^A04^ADT_A01|N{n:04d}|P|2.5.1\r"
            "PID|1||{n}^^^CLINIC^MR||TESTER^ANNA\r"
        )
        for n in range(60):
            drop(inbox, f"f{n:04d}.hl7", adt.format(n=n).encode())
        channel = f"""
name: shared
source: {{type: sftp, {conn_yaml(server)}, path: '{inbox}', schedule: 200ms, settle: 100ms, lease_ttl: 3s,
          max_files: 5, format: hl7v2}}
routes: [{{name: out, to: [out]}}]
destinations:
  out: {{type: file, path: 'out/{{control_id}}.hl7'}}
"""
        env = {**os.environ, "TEST_SFTP_PASSPHRASE": PASSPHRASE, "PYTHONPATH": str(ROOT)}
        for node in ("a", "b"):
            home = tmp_path / node
            hub_yaml = f"home: ..\nnode: {node}\nstore: {{url: '{pg_url}'}}\nweb: {{enabled: false}}\nlog_level: info\n"
            cfg = write_config(home / "cfg", hub_yaml, {"shared": channel})
            with open(home / "hub.log", "wb") as log:  # the child keeps its own copy of the descriptor
                procs[node] = subprocess.Popen(
                    [sys.executable, "-m", "hub", "run", "--config", str(cfg)],
                    cwd=home,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        db = sa.create_engine(pg_url)

        def count() -> int:
            try:
                with db.connect() as c:
                    return c.execute(sa.text("select count(*) from messages")).scalar() or 0
            except sa.exc.SQLAlchemyError:
                return 0

        def holder() -> str | None:
            try:
                with db.connect() as c:
                    return c.execute(sa.text("select owner from leases where name like 'sftp:%'")).scalar()
            except sa.exc.SQLAlchemyError:
                return None

        _wait(lambda: count() >= 15, 60, "the first files")
        first = holder()
        assert first in ("a", "b")
        procs[first].send_signal(signal.SIGKILL)  # the polling node dies mid-work
        procs[first].wait(10)
        for n in range(60, 80):  # more arrive while the survivor waits for the lease to expire
            drop(inbox, f"f{n:04d}.hl7", adt.format(n=n).encode())
        _wait(lambda: len(list((inbox / "archive").glob("*.hl7"))) == 80, 60, "all 80 files archived")
        _wait(lambda: count() >= 80, 10, "80 messages")
        assert holder() == ("b" if first == "a" else "a")
        with db.connect() as c:
            rows = c.execute(sa.text("select source_ref, control_id, dedup_key from messages")).fetchall()
        assert len(rows) == 80, "every file exactly once"
        assert len({r.source_ref for r in rows}) == 80 and {r.control_id for r in rows} == {
            f"N{n:04d}" for n in range(80)
        }
        assert not list(inbox.glob("*.hl7")) and not (inbox / "error").exists()
        db.dispose()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        server.stop()
