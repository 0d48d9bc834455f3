"""The file connector end to end through a running Engine: folders, done/error, dedup after a crash,
half-written files, atomic writes, path templates, an unwritable destination."""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import re
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from hub.channels.base import Context
from hub.channels.file import TEMPLATE_FIELDS, FileDestination, render_path, unique_names
from hub.cli import main
from hub.engine import Engine
from hub.errors import PermanentDelivery
from hub.message import Message
from hub.spec import load_config
from hub.store import NewDelivery, NewMessage, SearchQuery, Store
from support import ROOT, until, write_config

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

CHECKS = """
from hub.errors import MappingError

def reject_bad(message):
    if message.raw.startswith(b"BAD"):
        raise MappingError("content starts with BAD")
    return message
"""


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
        year = datetime.now(UTC).year
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
    m = Message(
        b"x",
        "hl7v2",
        meta={"control_id": "../../etc/passwd", "message_type": "ADT^A04", "delivery_id": 7},
        id=12,
        channel="c",
    )
    m.received_at = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
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
        store.accept(
            [
                NewMessage(
                    "files",
                    f"m{i}".encode(),
                    "raw",
                    meta={"control_id": f"m{i}"},
                    deliveries=[NewDelivery("out", route="out")],
                )
                for i in range(1, 5)
            ]
        )
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
        # the files are in place a moment before the worker records them as sent
        await until(lambda: len(eng.store.search(SearchQuery(status="sent"))) == 3, what="three deliveries marked sent")
        dead = eng.store.search(SearchQuery(status="dead"))
        assert [row["control_id"] for row in dead] == ["m2"]
        assert len(eng.store.search(SearchQuery(status="sent"))) == 3
    finally:
        await eng.stop()


# ============================================================================================ nothing overwritten
def adt(control_id: str | None, body: str) -> Message:
    return Message(body.encode(), "hl7v2", meta={"control_id": control_id} if control_id else {}, channel="files")


def destination(home: Path, path: str = "out/{control_id}.hl7", **over: object) -> FileDestination:
    return FileDestination(FileDestination.Config(type="file", path=path, **over), Context(home=home))


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


async def test_a_reused_control_id_or_a_missing_one_never_replaces_another_delivery(tmp_path):
    """Senders reuse MSH-10 and FHIR orders have none: by default (exists: unique) every delivery keeps its file."""
    d = destination(tmp_path)
    answers = [await d.send(adt("ADT00002", f"message {i}")) for i in (1, 2, 3)]
    answers += [await d.send(adt(None, f"no control id {i}")) for i in (1, 2)]
    assert contents(tmp_path / "out") == {
        "ADT00002.hl7": b"message 1",
        "ADT00002-2.hl7": b"message 2",
        "ADT00002-3.hl7": b"message 3",
        "_.hl7": b"no control id 1",
        "_-2.hl7": b"no control id 2",
    }
    assert "ADT00002-3.hl7" in answers[2], "the answer stored with the delivery names the file it wrote"


async def test_overwrite_only_when_the_channel_says_so_and_error_keeps_the_first(tmp_path):
    d = destination(tmp_path, exists="overwrite")
    await d.send(adt("A1", "first"))
    await d.send(adt("A1", "second"))
    assert contents(tmp_path / "out") == {"A1.hl7": b"second"}
    d = destination(tmp_path, exists="error")
    with pytest.raises(PermanentDelivery, match="already exists"):
        await d.send(adt("A1", "third"))
    assert contents(tmp_path / "out") == {"A1.hl7": b"second"}, "no temporary file left, the file kept"
    assert FileDestination.Config(type="file", path="x").exists == "unique"


async def test_a_name_taken_between_the_check_and_the_write_is_not_replaced(tmp_path, monkeypatch):
    """Another writer (a second hub node, a second worker) creates the same name while this one writes its
    temporary file: the hard link fails instead of replacing the other's file, and the next free name is used."""
    d = destination(tmp_path)
    real_fsync = os.fsync
    raced: list[bool] = []

    def other_writer_meanwhile(fd: int) -> None:
        real_fsync(fd)
        if not raced:
            raced.append(True)
            (tmp_path / "out" / "ADT00002.hl7").write_bytes(b"the other writer's message")

    monkeypatch.setattr(os, "fsync", other_writer_meanwhile)
    await d.send(adt("ADT00002", "this writer's message"))
    assert raced
    assert contents(tmp_path / "out") == {
        "ADT00002.hl7": b"the other writer's message",
        "ADT00002-2.hl7": b"this writer's message",
    }


async def test_without_hard_links_names_are_reserved_with_o_excl(tmp_path, monkeypatch):
    """A file system without hard links (FAT, some network mounts): the name is claimed with O_EXCL instead."""

    def no_links(src, dst, **kw):  # type: ignore[no-untyped-def]
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    d = destination(tmp_path)
    for i in (1, 2):
        await d.send(adt("ADT00002", f"message {i}"))
    assert contents(tmp_path / "out") == {"ADT00002.hl7": b"message 1", "ADT00002-2.hl7": b"message 2"}


def test_unique_names_keep_the_extension():
    names = list(itertools.islice(unique_names("var/out/ADT00002.hl7"), 3))
    assert names == ["var/out/ADT00002.hl7", "var/out/ADT00002-2.hl7", "var/out/ADT00002-3.hl7"]
    assert list(itertools.islice(unique_names("out/README"), 2)) == ["out/README", "out/README-2"]
    assert list(itertools.islice(unique_names(".hidden"), 2)) == [".hidden", ".hidden-2"]
    tail = list(unique_names("a.b.x12"))[98:]
    assert tail[0] == "a.b-99.x12" and all(n.startswith("a.b-") and n.endswith(".x12") for n in tail[1:])


# ============================================================================================ template fields
def test_hub_check_rejects_an_unknown_template_field_naming_the_destination_and_field(tmp_path, capsys):
    channel = """
name: typo
source: {type: file, path: in}
routes: [{name: r, to: [good, archive]}]
destinations:
  good: {type: file, path: "out/{received_at:%Y/%m}/{control_id}-{delivery_id}.{ext}"}
  archive: {type: file, path: "archive/{control_idd}.hl7"}
"""
    folder = write_config(tmp_path / "cfg", "web: {enabled: false}\n", {"typo": channel})
    assert main(["check", "--config", str(folder)]) == 1
    out = capsys.readouterr().out
    [problem] = [line for line in out.splitlines() if "control_idd" in line]
    assert problem.startswith(f"{folder / 'channels' / 'typo.yaml'}:7: destinations.archive.path:")
    assert "unknown field {control_idd}" in problem and "control_id," in problem  # the known fields are listed
    assert "good" not in out


@pytest.mark.parametrize(
    "template, complaint",
    [
        ("out/{control_idd}.hl7", "unknown field {control_idd}"),
        ("out/{Control_ID}.hl7", "unknown field {Control_ID}"),
        ("out/{}.hl7", "has no name"),
        ("out/{0}.hl7", "has no name"),
        ("out/{control_id:%Y}.hl7", "bad path template"),
        ("out/{control_id.hl7", "bad path template"),
    ],
)
def test_template_fields_are_checked(template, complaint):
    with pytest.raises(ValidationError, match=re.escape(complaint)):
        FileDestination.Config(type="file", path=template)


def test_every_field_render_path_fills_is_accepted():
    for field in TEMPLATE_FIELDS:
        spec = ":%Y%m%d" if field in ("received_at", "now") else ""
        FileDestination.Config(type="file", path=f"out/{{{field}{spec}}}.dat")
    FileDestination.Config(type="file", path="out/{received_at.year}/{now:%H%M%S}-{uuid}.{ext}")


# ============================================================================================ temporary files
KILLED_WRITER = """
import asyncio, os, signal, sys
from pathlib import Path
from hub.channels.base import Context
from hub.channels.file import FileDestination
from hub.message import Message

d = FileDestination(FileDestination.Config(type="file", path="out/{control_id}.hl7"), Context(home=Path(sys.argv[1])))
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # killed with the temporary file written, not yet in place
asyncio.run(d.send(Message(b"never finished", "hl7v2", meta={"control_id": "ADT00001"})))
"""


async def test_a_temporary_file_left_by_kill_9_is_removed_by_the_next_run_and_nothing_else(tmp_path):
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", KILLED_WRITER, str(tmp_path), cwd=str(ROOT))
    assert await proc.wait() == -signal.SIGKILL
    out = tmp_path / "out"
    [stale] = [p.name for p in out.iterdir()]
    assert stale.startswith(".ADT00001.hl7.hub-") and stale.endswith(".tmp"), "the killed write left its temporary file"
    others = {
        ".notes.tmp": b"someone else's",
        ".ADT00009.hl7.1234abcd.tmp": b"not our pattern",
        "keep.hl7": b"a delivered file",
    }
    for name, data in others.items():
        (out / name).write_bytes(data)

    d = destination(tmp_path)  # the hub starts again; the delivery that was cut short is sent again
    await d.send(adt("ADT00001", "sent again"))
    assert contents(out) == {**others, "ADT00001.hl7": b"sent again"}


async def test_stale_temporary_files_go_from_the_fixed_folder_and_each_folder_written_but_a_newer_one_stays(tmp_path):
    d = destination(tmp_path, path="out/{received_at:%Y}/{control_id}.hl7")
    msg = adt("A1", "x")
    dated = tmp_path / "out" / f"{msg.received_at:%Y}"
    dated.mkdir(parents=True)
    old = time.time() - 3600
    stale = [tmp_path / "out" / ".B7.hl7.hub-0123456789ab.tmp", dated / ".A0.hl7.hub-abcdef012345.tmp"]
    for p in stale:
        p.write_bytes(b"half")
        os.utime(p, (old, old))
    in_progress = dated / ".A2.hl7.hub-fedcba987654.tmp"  # another hub process writing right now: newer than d
    in_progress.write_bytes(b"being written")
    future = time.time() + 5
    os.utime(in_progress, (future, future))
    await d.send(msg)
    assert not any(p.exists() for p in stale)
    assert in_progress.exists() and (dated / "A1.hl7").read_bytes() == b"x"


def test_the_example_clinic_writes_names_that_cannot_collide():
    """Every file and SFTP destination of config/ names its files after the message or delivery (unique per
    delivery) and keeps the default exists: unique, so neither a reused control id nor a replay replaces a file."""
    cfg = load_config(ROOT / "config")
    checked = 0
    for spec in cfg.channels:
        for name, data in spec.destinations.items():
            if data.get("type") not in ("file", "sftp"):
                continue
            checked += 1
            where = f"{spec.name}.{name}: {data['path']}"
            assert data.get("exists", "unique") != "overwrite", where
            assert FileDestination.Config(type="file", path=data["path"]).exists == "unique"
            assert any(f"{{{f}}}" in data["path"] for f in ("message_id", "delivery_id", "uuid")), where
    assert checked >= 15


async def test_a_delivery_repeated_after_a_crash_finds_its_own_file_instead_of_making_a_copy(tmp_path):
    """The worker writes, then marks sent: a crash in between sends the same delivery again. Its file is already
    there with the same bytes, so that counts as done (exists: unique and exists: error alike)."""
    d = destination(tmp_path / "u")
    assert "wrote" in await d.send(adt("ADT00002", "message 1"))
    assert "wrote" in await d.send(adt("ADT00002", "message 2"))
    assert "ADT00002.hl7 already holds" in await d.send(adt("ADT00002", "message 1"))  # the first, sent again
    assert "ADT00002-2.hl7 already holds" in await d.send(adt("ADT00002", "message 2"))
    assert "wrote" in await d.send(adt("ADT00002", "message 3"))
    assert contents(tmp_path / "u" / "out") == {
        "ADT00002.hl7": b"message 1",
        "ADT00002-2.hl7": b"message 2",
        "ADT00002-3.hl7": b"message 3",
    }

    d = destination(tmp_path / "e", exists="error")
    await d.send(adt("ADT00002", "message 1"))
    assert "already holds" in await d.send(adt("ADT00002", "message 1")), "sent again: done, not dead"
    with pytest.raises(PermanentDelivery):
        await d.send(adt("ADT00002", "message 2"))
    assert contents(tmp_path / "e" / "out") == {"ADT00002.hl7": b"message 1"}
