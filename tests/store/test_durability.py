"""What waits for the disk: accepted messages are flushed before anyone hears "stored"; a worker's claims and
results are committed without a flush and flushed soon after (hub.store.writer)."""

from __future__ import annotations

import errno
import os
import time

import pytest

from hub.errors import StoreError
from hub.store import Mark, NewDelivery, NewMessage, Store
from hub.store import writer as writer_module
from support import until


def item(cid: str) -> NewMessage:
    return NewMessage(
        "c",
        f"MSH|^~\\&|A|B|C|D|||ADT^A01|{cid}|P|2.5.1\r".encode(),
        "hl7v2",
        meta={"control_id": cid},
        deliveries=[NewDelivery("out")],
    )


class Flushes(list):  # type: ignore[type-arg]
    """Every fdatasync the store's WAL syncer makes, as the file it flushed; ``ended``: when the last one returned."""

    ended = 0.0


@pytest.fixture
def flushes(monkeypatch):
    calls = Flushes()
    real = os.fdatasync

    def recording(fd: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        time.sleep(0.05)  # a slow disk: an answer sent before the flush ends would be seen
        real(fd)
        calls.ended = time.monotonic()

    monkeypatch.setattr(writer_module.os, "fdatasync", recording)
    return calls


async def test_sqlite_accepts_are_flushed_before_they_return_and_claims_and_marks_later(tmp_path, flushes, monkeypatch):
    monkeypatch.setattr(writer_module, "FLUSH_AFTER", 0.2)
    store = Store(f"sqlite:///{tmp_path / 'hub.db'}").open()
    try:
        [accepted] = await store.accept_async([item("A1")])
        returned = time.monotonic()
        assert flushes and all(p.endswith("hub.db-wal") for p in flushes)
        assert flushes.ended <= returned  # on disk before accept returned
        flushes.clear()
        [claimed] = await store.claim("c", "out", limit=10, ordered=False)
        await store.mark([Mark(claimed.id, "sent", 1, response="ok")])
        assert flushes == []  # neither waited for the disk …
        await until(lambda: len(flushes) == 1, timeout=5, what="the idle writer's flush")  # … but both reach it
        assert store.get_message(accepted.message_id)["deliveries"][0]["status"] == "sent"
    finally:
        store.close()


def test_sqlite_synchronous_normal_never_flushes_at_commit(tmp_path, flushes):
    store = Store(f"sqlite:///{tmp_path / 'hub.db'}", synchronous="normal").open()
    try:
        store.accept([item("A1")])
        assert flushes == []
    finally:
        store.close()


def test_a_failed_flush_is_an_error_for_the_callers_not_an_ack(tmp_path, monkeypatch):
    store = Store(f"sqlite:///{tmp_path / 'hub.db'}").open()
    try:

        def broken(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(writer_module.os, "fdatasync", broken)
        with pytest.raises(StoreError, match="flushing to disk failed"):
            store.accept([item("A1")])
        monkeypatch.undo()
        store.accept([item("A2")])  # the disk is back: the store goes on
    finally:
        store.close()


class _Show:
    """Reads the session's synchronous_commit inside the writer's transaction."""

    durable = True

    def run(self, conn):  # type: ignore[no-untyped-def]
        return conn.exec_driver_sql("SHOW synchronous_commit").scalar()


class _Relaxed(_Show):
    durable = False


def test_postgresql_commits_claims_and_marks_without_waiting_for_the_wal_flush(pg_url):
    store = Store(pg_url).open()
    try:
        assert store.writer.submit(_Show()).result(timeout=10) == "on"
        assert store.writer.submit(_Relaxed()).result(timeout=10) == "off"
        assert store.writer.submit(_Show()).result(timeout=10) == "on"  # SET LOCAL: that transaction only
    finally:
        store.close()
