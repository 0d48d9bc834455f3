"""The store on SQLite and PostgreSQL: one transaction per accept, dedup, FIFO and per-key claims, marks,
replay, prune without orphans, sequences, leases, recovery of expired leases."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from sqlalchemy import func, select

from hub.store import Mark, NewDelivery, NewMessage, SearchQuery, Store
from hub.store.schema import attempts, deliveries, messages


def msg(channel="c", raw=b"data", dests=("d",), key=None, **meta):
    return NewMessage(
        channel,
        raw,
        "raw",
        meta=meta,
        dedup_key=key,
        deliveries=[NewDelivery(d, order_key=meta.get("patient_id")) for d in dests],
    )


def count(store, table, *where):
    with store.engine.connect() as c:
        return c.execute(select(func.count()).select_from(table).where(*where)).scalar()


def test_accept_stores_message_once_with_one_delivery_per_destination(store):
    [a] = store.accept([msg(raw=b"hello", dests=("x", "y"), control_id="42")])
    assert not a.duplicate and len(a.delivery_ids) == 2
    got = store.get_message(a.message_id)
    assert got["raw"] == b"hello" and got["control_id"] == "42"
    assert sorted(d["destination"] for d in got["deliveries"]) == ["x", "y"]
    assert all(d["status"] == "queued" and d["content"] is None for d in got["deliveries"])


def test_dedup_key_takes_an_input_only_once(store):
    first = store.accept([msg(key="file:a"), msg(key="file:a")])
    again = store.accept([msg(key="file:a")])
    assert not first[0].duplicate and first[1].duplicate and again[0].duplicate
    assert first[1].message_id == again[0].message_id == first[0].message_id
    assert count(store, messages) == 1
    # the same key on another channel is another input
    assert not store.accept([msg(channel="other", key="file:a")])[0].duplicate


def test_group_commit_shares_transactions_between_concurrent_producers(store):
    batches = []
    store.writer.on_batch = lambda n, secs: batches.append(n)
    results = []

    def producer(i):
        for j in range(20):
            results.append(store.accept([msg(raw=f"{i}-{j}".encode())]))

    threads = [threading.Thread(target=producer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 160 and count(store, messages) == 160
    assert len(batches) < 160, "concurrent accepts should share commits"


async def test_fifo_claim_stops_at_a_delivery_waiting_for_retry(store):
    ids = [store.accept([msg(raw=str(i).encode())])[0].delivery_ids[0] for i in range(3)]
    claimed = await store.claim("c", "d", limit=10, ordered=False)
    assert [c.id for c in claimed] == ids
    # first fails and waits; the others are handed back untouched
    await store.mark(
        [Mark(ids[0], "retry", 1, error="down", next_at=time.time() + 60)]
        + [Mark(i, "queued", 0, record=False) for i in ids[1:]]
    )
    assert await store.claim("c", "d", limit=10, ordered=False) == []  # nothing overtakes the head
    await store.mark([])
    store.replay(statuses=["retry"])  # an operator says: try now
    again = await store.claim("c", "d", limit=10, ordered=False)
    assert [c.id for c in again] == ids


async def test_ordered_claim_gives_one_head_per_key_and_skips_a_retrying_key(store):
    a1 = store.accept([msg(patient_id="A")])[0].delivery_ids[0]
    a2 = store.accept([msg(patient_id="A")])[0].delivery_ids[0]
    b1 = store.accept([msg(patient_id="B")])[0].delivery_ids[0]
    claimed = await store.claim("c", "d", limit=10, ordered=True)
    assert sorted(c.id for c in claimed) == [a1, b1]
    await store.mark([Mark(a1, "retry", 1, next_at=time.time() + 60), Mark(b1, "sent", 1)])
    b2 = store.accept([msg(patient_id="B")])[0].delivery_ids[0]
    claimed = await store.claim("c", "d", limit=10, ordered=True)
    assert [c.id for c in claimed] == [b2], "key A waits behind its retry, key B flows"
    await store.mark([Mark(b2, "sent", 1)])
    # a dead head no longer blocks its key
    store.replay([], statuses=["retry"])  # no-op: empty id list
    with store.engine.begin() as c:
        c.execute(deliveries.update().where(deliveries.c.id == a1).values(status="dead"))
    claimed = await store.claim("c", "d", limit=10, ordered=True)
    assert [c.id for c in claimed] == [a2]


async def test_mark_records_attempts_and_drops_content_when_asked(store):
    [a] = store.accept([NewMessage("c", b"raw", "raw", deliveries=[NewDelivery("d", content=b"transformed")])])
    [c] = await store.claim("c", "d", limit=5, ordered=False)
    assert c.content == b"transformed"
    await store.mark([Mark(c.id, "sent", 1, response="AA", drop_content=True)])
    got = store.get_message(a.message_id)["deliveries"][0]
    assert got["status"] == "sent" and got["response"] == "AA" and got["content"] is None
    assert [x["outcome"] for x in got["attempt_log"]] == ["sent"]


async def test_expired_leases_are_recovered_for_another_node(store_url):
    one = Store(store_url, node="one", lease_seconds=0.2).open()
    two = Store(store_url, node="two").open()
    try:
        one.accept([msg()])
        assert len(await one.claim("c", "d", limit=5, ordered=False)) == 1
        assert await two.claim("c", "d", limit=5, ordered=False) == []
        await asyncio.sleep(0.3)
        assert two.recover() == 1
        [c] = await two.claim("c", "d", limit=5, ordered=False)
        # the dead node's late mark is ignored: the delivery now belongs to node two
        await one.mark([Mark(c.id, "sent", 1)])
        assert two.get_message(c.message_id)["deliveries"][0]["status"] == "sending"
    finally:
        one.close()
        two.close()


def test_search_uses_metadata_and_pages(store):
    for i in range(5):
        store.accept(
            [msg(raw=f"MSH|{i}|needle{i}".encode(), control_id=f"C{i}", patient_id=f"P{i % 2}", message_type="ADT^A04")]
        )
    store.accept([msg(raw=b"other", message_type="ORU^R01")])
    assert [r["control_id"] for r in store.search(SearchQuery(patient_id="P1"))] == ["C3", "C1"]
    assert len(store.search(SearchQuery(message_type="ADT"))) == 5
    assert len(store.search(SearchQuery(message_type="ORU^R01"))) == 1
    assert [r["control_id"] for r in store.search(SearchQuery(text="needle4"))] == ["C4"]
    page1 = store.search(SearchQuery(limit=2))
    page2 = store.search(SearchQuery(limit=2, before_id=page1[-1]["id"]))
    assert len(page2) == 2 and page2[0]["id"] < page1[-1]["id"]
    assert store.search(SearchQuery(status="queued", limit=100))[0]["deliveries"] == {"queued": 1}


def test_prune_never_leaves_orphans_and_keeps_unsent(store):
    old = time.time() - 100 * 86400
    sent = NewMessage("c", b"old sent", "raw", received_at=old, deliveries=[NewDelivery("d")])
    unsent = NewMessage("c", b"old queued", "raw", received_at=old, deliveries=[NewDelivery("d")])
    fresh = NewMessage("c", b"new", "raw")
    a, b, _ = store.accept([sent, unsent, fresh])
    with store.engine.begin() as c:
        c.execute(deliveries.update().where(deliveries.c.id == a.delivery_ids[0]).values(status="sent"))
        c.execute(attempts.insert().values(delivery_id=a.delivery_ids[0], number=1, at=old, outcome="sent"))
    assert store.prune(30 * 86400) == 1
    assert store.get_message(a.message_id) is None and store.get_message(b.message_id) is not None
    assert count(store, attempts) == 0
    assert count(store, deliveries, deliveries.c.message_id.not_in(select(messages.c.id))) == 0
    assert store.prune(30 * 86400, keep_unsent=False) == 1
    assert count(store, messages) == 1


def test_sequences_are_unique_and_survive_reopen(store_url):
    with Store(store_url) as s:
        assert [s.next_sequence("x12:ch:isa") for _ in range(3)] == [1, 2, 3]
    with Store(store_url) as s:
        assert s.next_sequence("x12:ch:isa") == 4
        assert s.next_sequence("other", start=1000) == 1000


def test_leases_keep_a_second_node_out_until_they_expire(store_url):
    a = Store(store_url, node="a").open()
    b = Store(store_url, node="b").open()
    try:
        assert a.acquire_lease("poll:inbox", 0.3)
        assert not b.acquire_lease("poll:inbox", 0.3)
        assert a.acquire_lease("poll:inbox", 0.3)  # renew
        time.sleep(0.4)
        assert b.acquire_lease("poll:inbox", 10)
        assert not a.acquire_lease("poll:inbox", 10)
    finally:
        a.close()
        b.close()


def test_unreachable_store_raises_store_error():
    from hub.errors import StoreError

    with pytest.raises(StoreError):
        Store("postgresql+psycopg://postgres@127.0.0.1:1/nothing").open()


def test_search_by_metadata_uses_indexes_not_a_scan(tmp_path):
    from sqlalchemy import text

    s = Store(f"sqlite:///{tmp_path / 'h.db'}").open()
    try:
        with s.engine.connect() as c:
            for col in ("patient_id", "control_id", "message_type"):
                plan = " ".join(
                    str(r[-1])
                    for r in c.execute(
                        text(f"EXPLAIN QUERY PLAN SELECT id FROM messages WHERE {col} = 'x' ORDER BY id DESC LIMIT 50")
                    )
                )
                assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, plan
    finally:
        s.close()


def test_a_constraint_failure_in_an_accept_is_a_store_error(store):
    """The driver's own executemany (hub.store.bulk) raises sqlite3's errors: they reach callers as StoreError too,
    which the sources answer AE / 503 for, like every other store failure."""
    from hub.errors import StoreError
    from hub.store import NewMessage

    with pytest.raises(StoreError):
        store.accept([NewMessage(None, b"x", "raw")])  # type: ignore[arg-type]
    [ok] = store.accept([NewMessage("c", b"y", "raw")])
    assert ok.message_id
