"""Retention (issue 15): pruning gives SQLite's file space back, runs in chunks that let accepts through, and
``retention.max_size`` prunes the oldest messages first, never one with an undelivered delivery."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select, update

from hub.schedules import parse_size
from hub.spec import RetentionSpec
from hub.store import NewDelivery, NewMessage, Store
from hub.store.schema import deliveries, messages

DAY = 86400.0


def old_messages(
    n: int, *, size: int = 2000, start: float | None = None, dests: tuple[str, ...] = (), plain: bool = False
) -> list:
    """``n`` messages a second apart from ``start`` (100 days ago), of random bytes (``plain``: one repeated letter,
    which the SQLite text search index keeps in a few bytes: FTS5 gives a deleted message's entries back only
    when it merges its segments on its own)."""
    t0 = start if start is not None else time.time() - 100 * DAY
    return [
        NewMessage(
            "c",
            b"x" * size if plain else os.urandom(size),
            "raw",
            received_at=t0 + i,
            deliveries=[NewDelivery(d) for d in dests],
        )
        for i in range(n)
    ]


def pragma(path: Path, name: str) -> int:
    with sqlite3.connect(path) as c:
        return int(c.execute(f"PRAGMA {name}").fetchone()[0])


def ids(store: Store) -> list[int]:
    with store.engine.connect() as c:
        return list(c.execute(select(messages.c.id).order_by(messages.c.id)).scalars())


def test_sizes_parse_like_the_sftp_source():
    assert parse_size("20GB") == 20 * 1024**3
    assert parse_size("500 mb") == 500 * 1024**2
    assert parse_size(4096) == 4096
    assert RetentionSpec(max_size="20GB").max_size == "20GB"
    with pytest.raises(ValueError):
        RetentionSpec(max_size="lots")
    with pytest.raises(ValueError):
        RetentionSpec(max_size=0)


def test_prune_gives_the_file_space_back_on_sqlite(tmp_path):
    db = tmp_path / "hub.db"
    with Store(f"sqlite:///{db}") as store:
        for _ in range(4):
            store.accept(old_messages(1000, plain=True))
        store.accept(old_messages(100, start=time.time(), plain=True))
        assert pragma(db, "auto_vacuum") == 2  # incremental from the first table on
        before = db.stat().st_size
        assert store.prune(30 * DAY) == 4000
        assert pragma(db, "freelist_count") == 0
        after = db.stat().st_size
    assert after < before / 4, (before, after)


def test_an_older_file_switches_by_one_full_vacuum(tmp_path):
    db = tmp_path / "hub.db"
    with Store(f"sqlite:///{db}") as store:
        store.accept(old_messages(500))
        store.migrate("0006", downgrade=True)  # the downgrade switches the (small) file back
    assert pragma(db, "auto_vacuum") == 0
    store = Store(f"sqlite:///{db}").open(migrate=False)  # as a big file would be left by the migration
    try:
        store.prune(30 * DAY, vacuum=False)
        assert pragma(db, "freelist_count") > 0
        assert store.vacuum() == 0  # not incremental: nothing given back step by step
        assert pragma(db, "freelist_count") > 0
        assert store.vacuum(full=True) > 0  # `hub prune --vacuum`
    finally:
        store.close()
    assert pragma(db, "auto_vacuum") == 2 and pragma(db, "freelist_count") == 0
    with Store(f"sqlite:///{db}") as store:  # and migrates up again (a small file: VACUUM at once, here a no-op)
        assert ids(store) == []


def test_a_small_older_file_is_switched_by_the_migration(tmp_path):
    db = tmp_path / "hub.db"
    with sqlite3.connect(db) as c:  # a file made without auto_vacuum, as every store before 0007 was
        c.execute("PRAGMA auto_vacuum = NONE")
        c.execute("CREATE TABLE scratch (a)")
    assert pragma(db, "auto_vacuum") == 0
    with Store(f"sqlite:///{db}") as store:
        store.accept(old_messages(3))
    assert pragma(db, "auto_vacuum") == 2


def test_an_accept_during_a_long_prune_completes_before_the_prune_ends(store):
    store.accept(old_messages(1000, size=200))
    accepted = threading.Event()
    seen: dict[str, int] = {}

    def accept_now():
        store.accept([NewMessage("c", b"fresh", "raw", deliveries=[NewDelivery("d")])])
        accepted.set()

    def progress(total: int) -> None:
        if "started" not in seen:
            seen["started"] = total
            threading.Thread(target=accept_now).start()
        elif accepted.is_set() and "accepted" not in seen:
            seen["accepted"] = total

    n = store.prune(30 * DAY, chunk=10, progress=progress)
    assert n == 1000
    assert accepted.wait(30)
    assert seen["accepted"] < n  # chunks still followed the accept: it did not wait for the whole prune
    assert len(ids(store)) == 1


def _mark(store: Store, message_ids: list[int], status: str) -> None:
    with store.engine.begin() as c:
        c.execute(update(deliveries).where(deliveries.c.message_id.in_(message_ids)).values(status=status))


def test_max_size_prunes_oldest_first_and_never_an_undelivered_message(store):
    got = store.accept(old_messages(300, size=4000, dests=("d",)))
    all_ids = [a.message_id for a in got]
    unsent = {"queued": all_ids[0:10], "retry": all_ids[10:20], "dead": all_ids[20:30], "sending": all_ids[30:40]}
    for status, mids in unsent.items():
        _mark(store, mids, status)
    undelivered = set(all_ids[:40])
    _mark(store, all_ids[40:], "sent")

    size = store.size()
    assert size > 300 * 4000
    result = store.prune_to_size(size - 100 * 4000)
    left = ids(store)
    assert not result.over and result.size_after <= result.max_size
    assert 0 < result.pruned < 260
    assert undelivered <= set(left)
    gone = set(all_ids) - set(left)
    assert len(gone) == result.pruned
    assert max(gone) < min(set(left) - undelivered)  # oldest first

    again = store.prune_to_size(result.size_after + 1_000_000)
    assert again.pruned == 0 and not again.over

    rest = store.prune_to_size(1)  # smaller than the undelivered alone: everything else goes, they stay
    assert rest.over
    assert set(ids(store)) == undelivered


HUB_YAML = (
    "home: ..\nstore: {{url: '{url}'}}\nweb: {{enabled: false}}\nretention: {{messages: 30d, max_size: {size}}}\n"
)
CHANNEL = """
name: relay
source: {type: file, path: in, glob: "*.txt", format: raw}
routes:
  - {name: all, to: [out]}
destinations:
  out: {type: file, path: "out/{source_name}"}
"""


def test_the_engine_and_hub_prune_apply_max_size_and_warn_when_only_undelivered_are_left(tmp_path, capsys, caplog):
    import asyncio

    from hub.cli import main
    from hub.engine import Engine
    from hub.metrics import STORE_OVER_MAX_SIZE
    from hub.spec import load_config
    from support import write_config

    db = tmp_path / "hub.db"
    cfg = write_config(tmp_path / "cfg", HUB_YAML.format(url=f"sqlite:///{db}", size="1KB"), {"relay": CHANNEL})
    with Store(f"sqlite:///{db}") as store:
        kept = store.accept(old_messages(5, start=time.time() - DAY, dests=("out",)))  # queued: never pruned
        delivered = store.accept(old_messages(20, start=time.time() - 2 * DAY, dests=("out",)))
        _mark(store, [a.message_id for a in delivered], "sent")

    async def prune() -> int:
        eng = Engine(load_config(cfg))
        eng.store = Store(f"sqlite:///{db}").open()
        try:
            return await eng.prune()
        finally:
            eng.store.close()

    assert asyncio.run(prune()) == 20
    assert "only messages with undelivered deliveries" in caplog.text
    assert STORE_OVER_MAX_SIZE._value.get() == 1
    with Store(f"sqlite:///{db}") as store:
        assert ids(store) == sorted(a.message_id for a in kept)

    assert main(["prune", "--max-size", "20GB", "--vacuum", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "pruned 0 message(s) older than 30d" in out and "under 20GB" in out and "back to the file system" in out
    assert main(["prune", "--max-size", "lots", "--config", str(cfg)]) == 2
