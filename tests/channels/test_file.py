"""The file connector end to end through a running Engine: folders, done/error, dedup after a crash,
half-written files, atomic writes, path templates, an unwritable destination."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from support import until, write_config
from hub.channels.file import FileDestination, render_path
from hub.engine import Engine
from hub.message import Message
from hub.spec import load_config
from hub.store import NewDelivery, NewMessage, SearchQuery, Store

HUB = "home: ..\nstore: {{url: '{url}'}}\nweb: {{enabled: false}}\npython_path: [py]\n"

CHANNEL = """
name: files
source: {type: file, path: in, glob: "*.txt", schedule: 100ms, settle: 200ms, format: raw}
routes:
  - name: out
    transforms: [{python: "checks:reject_bad"}]
    to: [out]
destinations:
  out:
    type: file
    path: "out/{received_at:%Y}/{source_name}"
    queue: {max_attempts: 3, backoff: {initial: 50ms, max: 100ms}}
"""

CHECKS = '''
from hub.errors import MappingError

def reject_bad(message):
    if message.raw.startswith(b"BAD"):
        raise MappingError("content starts with BAD")
    return message
'''




@pytest.fixture
def home(tmp_path):
    (tmp_path / "py").mkdir()
    (tmp_path / "py" / "checks.py").write_text(CHECKS)
    return tmp_path


def config(home: Path, url: str, channel: str = CHANNEL):
    return load_config(write_config(home / "cfg", HUB.format(url=url), {"files": channel}))


def drop(folder: Path, name: str, data: bytes, age: float = 1.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_bytes(data)
    t = time.time() - age
    os.utime(p, (t, t))
    return p


async def test_files_flow_to_done_and_out_and_bad_ones_to_error(home, store_url):
    eng = Engine(config(home, store_url), idle_poll=0.05)
    await eng.start()
    try:
        drop(home / "in", "a.txt", b"alpha")
        drop(home / "in", "b.txt", b"BAD content")
        year = datetime.now(timezone.utc).year
        await until(lambda: (home / f"out/{year}/a.txt").exists() and (home / "in/error/b.txt").exists())
        assert (home / f"out/{year}/a.txt").read_bytes() == b"alpha"
        assert (home / "in/done/a.txt").exists() and not (home / "in/a.txt").exists()
        assert "content starts with BAD" in (home / "in/error/b.txt.error.txt").read_text()
        rejected = eng.store.search(SearchQuery(status="rejected"))
        assert [r["source_ref"] for r in rejected] == ["b.txt"] and "BAD" in rejected[0]["error"]
        assert not list((home / "out").rglob(".*.tmp"))
    finally:
        await eng.stop()


async def test_a_file_still_being_written_waits(home, store_url):
    eng = Engine(config(home, store_url), idle_poll=0.05)
    await eng.start()
    try:
        p = drop(home / "in", "slow.txt", b"part", age=0)
        for _ in range(3):
            await asyncio.sleep(0.06)
            with p.open("ab") as fh:
                fh.write(b"+more")
        await until(lambda: (home / "in/done/slow.txt").exists())
        [row] = eng.store.search(SearchQuery())
        assert eng.store.get_message(row["id"])["raw"] == b"part+more+more+more"
    finally:
        await eng.stop()


async def test_a_crash_between_commit_and_move_does_not_ingest_twice(home, store_url, monkeypatch):
    from hub.channels import file as filemod

    cfg = config(home, store_url)
    drop(home / "in", "once.txt", b"only once")

    def crash(*args):
        raise RuntimeError("the process dies here")

    monkeypatch.setattr(filemod.FileSource, "_move", staticmethod(crash))
    eng = Engine(cfg, idle_poll=0.05)
    try:
        await eng.start()
        await until(lambda: eng.store.search(SearchQuery()) != [])
    finally:
        await eng.stop()  # before the real move is back: no poll may move the file in between
        monkeypatch.undo()
    assert (home / "in/once.txt").exists(), "the crash left the file in the inbox"
    eng = Engine(cfg, idle_poll=0.05)
    await eng.start()
    try:
        await until(lambda: (home / "in/done/once.txt").exists())
        rows = eng.store.search(SearchQuery())
        assert len(rows) == 1, "the second poll found the file already taken"
    finally:
        await eng.stop()


async def test_store_down_leaves_the_file_for_the_next_poll(home, tmp_path):
    url = f"sqlite:///{tmp_path / 'db' / 'hub.db'}"
    eng = Engine(config(home, url), idle_poll=0.05)
    await eng.start()
    try:
        eng.store.writer.close()  # the store stops taking writes
        drop(home / "in", "wait.txt", b"please keep me")
        await asyncio.sleep(0.6)
        assert (home / "in/wait.txt").exists() and not (home / "in/done/wait.txt").exists()
    finally:
        await eng.stop()


async def test_unwritable_destination_retries_then_goes_dead_and_is_replayable(home, store_url):
    if os.geteuid() == 0:
        blocker = home / "out"
        blocker.write_text("a file where the folder should be")  # root ignores permissions; this fails for everyone
    else:
        (home / "out").mkdir()
        (home / "out").chmod(0o500)
    eng = Engine(config(home, store_url), idle_poll=0.05)
    await eng.start()
    try:
        drop(home / "in", "x.txt", b"x")
        q = SearchQuery
        await until(lambda: eng.store.search(q(status="dead")) != [])
        [row] = eng.store.search(q(status="dead"))
        d = eng.store.get_message(row["id"])["deliveries"][0]
        assert d["attempts"] == 3 and "out" in d["last_error"]
        # an operator fixes the folder and replays
        if (home / "out").is_file():
            (home / "out").unlink()
        else:
            (home / "out").chmod(0o700)
        eng.store.replay([row["id"]])
        await until(lambda: list((home / "out").rglob("x.txt")) != [])
    finally:
        await eng.stop()


def test_path_templates_are_filled_and_made_safe():
    m = Message(b"x", "hl7v2", meta={"control_id": "../../etc/passwd", "message_type": "ADT^A04", "delivery_id": 7}, id=12, channel="c")
    m.received_at = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    path = render_path("{received_at:%Y/%m/%d}/{message_type}/{control_id}-{message_id}-{patient_id}.{ext}", m)
    assert path == "2026/03/04/ADT^A04/_.._etc_passwd-12-_.hl7"  # one file name: no separator, no '..' component
    assert ".." not in path.split("/")


async def test_a_batch_of_files_stops_at_the_first_failure_and_the_rest_are_sent_later(home, store_url, monkeypatch):
    """The worker hands what it claimed to the destination at once (one folder fsync for all); a file that
    cannot be written goes dead alone and the ones after it are written in the next round, in order."""
    channel = """
name: files
source: {type: memory, format: raw}
routes: [{name: out, to: [out]}]
destinations:
  out: {type: file, path: "out/{control_id}.txt", exists: error, queue: {batch: 10, max_attempts: 1}}
"""
    (home / "out").mkdir()
    (home / "out" / "m2.txt").write_text("already here")
    with Store(store_url) as store:  # queued before the worker starts: its first claim takes all four
        store.accept([NewMessage("files", f"m{i}".encode(), "raw", meta={"control_id": f"m{i}"}, deliveries=[NewDelivery("out", route="out")])
                      for i in range(1, 5)])
    batches: list[int] = []
    real = FileDestination._write_all

    def spy(self, targets, payloads):  # type: ignore[no-untyped-def]
        batches.append(len(targets))
        return real(self, targets, payloads)

    monkeypatch.setattr(FileDestination, "_write_all", spy)
    eng = Engine(config(home, store_url, channel), idle_poll=0.05)
    await eng.start()
    try:
        await until(lambda: all((home / "out" / f"m{i}.txt").exists() for i in (1, 3, 4)))
        assert batches[:2] == [4, 2]  # all four handed over at once; after m2 failed, m3 and m4 together
        assert (home / "out" / "m2.txt").read_text() == "already here"
        dead = eng.store.search(SearchQuery(status="dead"))
        assert [row["control_id"] for row in dead] == ["m2"]
        assert len(eng.store.search(SearchQuery(status="sent"))) == 3
    finally:
        await eng.stop()
