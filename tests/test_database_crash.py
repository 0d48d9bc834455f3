"""The database source's exactly-once promise under kill -9: a real `hub run` reads rows from a real PostgreSQL or
MariaDB and dies by SIGKILL at the dangerous moments — between the store's commit and the `after` statement, between
two reads, or wherever a kill from outside lands — and after a restart every row is stored exactly once (and, with
`after`, marked once stored).

The moments are chosen by the connector's test hook ``HUB_TEST_DATABASE_CRASH=point:n`` (hub/channels/database.py:
the process kills itself the n-th time it passes ``after_read``, ``after_accept`` or ``after_after``)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from support import sql, write_config

pytestmark = pytest.mark.slow  # `hub run` in its own process, several times

N = 40


def rows(url: str, n: int) -> None:
    sql(url, "CREATE TABLE results (id INTEGER PRIMARY KEY, mrn VARCHAR(20), processed INTEGER NOT NULL DEFAULT 0)")
    sql(
        url,
        "INSERT INTO results (id, mrn) VALUES (:id, :mrn)",
        params=[{"id": i, "mrn": f"M{i:04d}"} for i in range(1, n + 1)],
    )


MODES = {
    "cursor": {"query": "SELECT id, mrn FROM results WHERE id > :cursor ORDER BY id", "cursor": "id", "start": 0},
    "cursor_key": {
        "query": "SELECT id, mrn FROM results WHERE id > :cursor ORDER BY id",
        "cursor": "id",
        "start": 0,
        "key": "id",
    },
    "after": {
        "query": "SELECT id, mrn FROM results WHERE processed = 0 ORDER BY id",
        "after": "UPDATE results SET processed = processed + 1 WHERE id = :id",
        "key": "id",
    },
}


def config(home: Path, url: str, mode: str, max_rows: int = 3) -> Path:
    source = {"type": "database", "url": url, "schedule": "100ms", "format": "csv", "max_rows": max_rows, **MODES[mode]}
    ch = {
        "name": "lis",
        "source": source,
        "routes": [{"name": "all", "to": ["out"]}],
        "destinations": {"out": {"type": "file", "path": "out/{message_id}.csv"}},
    }
    hub = f"home: ..\nstore: {{url: 'sqlite:///{home / 'hub.db'}'}}\nweb: {{enabled: false}}\n"
    return write_config(home / "cfg", hub, {"lis": yaml.safe_dump(ch)})


def start(cfg: Path, log: Path, crash: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "HUB_TEST_DATABASE_CRASH"}
    if crash:
        env["HUB_TEST_DATABASE_CRASH"] = crash
    return subprocess.Popen(
        [sys.executable, "-m", "hub", "run", "--config", str(cfg)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=cfg.parent,
        env=env,
    )


def stored(home: Path) -> dict[str, int]:
    """source_ref → how many messages the store holds for it."""
    if not (home / "hub.db").exists():
        return {}
    conn = sqlite3.connect(home / "hub.db", timeout=10)
    try:
        return dict(conn.execute("SELECT source_ref, count(*) FROM messages GROUP BY source_ref").fetchall())
    except sqlite3.OperationalError:  # not migrated yet
        return {}
    finally:
        conn.close()


def wait_for(cond, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        if proc.poll() is not None:
            raise AssertionError(f"hub exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out; log:\n{log.read_text()[-3000:]}")


def finish_and_check(home: Path, cfg: Path, url: str, mode: str, log: Path, n: int = N) -> None:
    """Restart without the hook: every row ends up stored once (and marked once), every message delivered."""
    proc = start(cfg, log)
    try:
        want = {f"db:lis:{i}": 1 for i in range(1, n + 1)}
        wait_for(lambda: len(stored(home)) == n, proc, log)
        if mode == "after":
            wait_for(lambda: sql(url, "SELECT count(*) FROM results WHERE processed = 0") == [(0,)], proc, log)
        wait_for(lambda: len(list((home / "out").glob("*.csv"))) == n, proc, log)
        time.sleep(0.5)  # a few more polls: nothing else comes
        assert stored(home) == want
        if mode == "after":
            assert sql(url, "SELECT count(*) FROM results WHERE processed <> 1") == [(0,)]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()[-2000:]
    bodies = sorted(p.read_bytes() for p in (home / "out").glob("*.csv"))
    assert bodies == sorted(f"id,mrn\r\n{i},M{i:04d}\r\n".encode() for i in range(1, n + 1))


@pytest.mark.parametrize("mode", ["after", "cursor"])
def test_killed_between_the_store_commit_and_what_follows_it(tmp_path, db_url, mode):
    """SIGKILL right after a store commit. With `after` (the messages of one read are accepted together, then marked
    in one transaction): after the second read's accepts, before its `after` ran — rows 4 to 6 are stored but not
    marked. With a cursor (one message after the other): after the 5th message's accept, which set the cursor."""
    rows(db_url, N)
    cfg = config(tmp_path, db_url, mode)
    log = tmp_path / "hub.log"
    proc = start(cfg, log, crash="after_accept:2" if mode == "after" else "after_accept:5")
    assert proc.wait(timeout=60) == -signal.SIGKILL, log.read_text()[-3000:]
    if mode == "after":
        assert stored(tmp_path) == {f"db:lis:{i}": 1 for i in range(1, 7)}
        assert sql(db_url, "SELECT id FROM results WHERE processed = 1 ORDER BY id") == [(1,), (2,), (3,)]
    else:
        assert stored(tmp_path) == {f"db:lis:{i}": 1 for i in range(1, 6)}
        conn = sqlite3.connect(tmp_path / "hub.db")
        assert conn.execute("SELECT value FROM cursors WHERE name = 'database:lis'").fetchall() == [("int:5",)]
        conn.close()
    finish_and_check(tmp_path, cfg, db_url, mode, log)


@pytest.mark.parametrize("mode", ["after", "cursor"])
def test_killed_after_the_after_statement_and_between_reads(tmp_path, pg_url, mode):
    rows(pg_url, N)
    cfg = config(tmp_path, pg_url, mode)
    log = tmp_path / "hub.log"
    proc = start(cfg, log, crash="after_read:3")  # two reads of 3 taken, the third read made and lost
    assert proc.wait(timeout=60) == -signal.SIGKILL, log.read_text()[-3000:]
    assert stored(tmp_path) == {f"db:lis:{i}": 1 for i in range(1, 7)}
    if mode == "after":
        proc = start(cfg, log, crash="after_after:2")  # the 2nd read's after committed, then killed
        assert proc.wait(timeout=60) == -signal.SIGKILL, log.read_text()[-3000:]
        assert sql(pg_url, "SELECT count(*) FROM results WHERE processed = 1") == [(12,)]
        assert stored(tmp_path) == {f"db:lis:{i}": 1 for i in range(1, 13)}
    finish_and_check(tmp_path, cfg, pg_url, mode, log)


@pytest.mark.parametrize("mode", ["after", "cursor", "cursor_key"])
def test_killed_from_outside_while_it_takes_rows(tmp_path, db_url, mode):
    """kill -9 from outside, wherever it lands, up to three times during the run."""
    n = 1000
    rows(db_url, n)
    cfg = config(tmp_path, db_url, mode, max_rows=50)
    log = tmp_path / "hub.log"
    landed = []
    for at in (20, 400, 700):
        if len(stored(tmp_path)) >= n:
            break
        proc = start(cfg, log)
        wait_for(lambda at=at: len(stored(tmp_path)) >= at, proc, log)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        landed.append(len(stored(tmp_path)))
        assert set(stored(tmp_path).values()) == {1}
    assert landed[0] < n, "the first kill should land while rows are being taken"
    finish_and_check(tmp_path, cfg, db_url, mode, log, n)


def test_cursor_with_a_key_killed_before_the_reads_cursor_was_stored(tmp_path, pg_url):
    """cursor and key: a read's messages but the last are accepted together, the last with the cursor. Killed in
    between: 1 and 2 are stored, the cursor is not; the next read takes 1 and 2 again as duplicates."""
    rows(pg_url, N)
    cfg = config(tmp_path, pg_url, "cursor_key")
    log = tmp_path / "hub.log"
    proc = start(cfg, log, crash="after_accept:1")
    assert proc.wait(timeout=60) == -signal.SIGKILL, log.read_text()[-3000:]
    assert stored(tmp_path) == {"db:lis:1": 1, "db:lis:2": 1}
    conn = sqlite3.connect(tmp_path / "hub.db")
    assert conn.execute("SELECT value FROM cursors WHERE name = 'database:lis'").fetchall() == []
    conn.close()
    finish_and_check(tmp_path, cfg, pg_url, "cursor_key", log)
