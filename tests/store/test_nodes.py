"""Nodes sharing a store (hub.store.nodes), on SQLite and PostgreSQL: heartbeats, a dead node's deliveries taken
over in place (FIFO order kept) by a claim and by the heartbeat's takeover, its named leases freed, a node without
a heartbeat only by lease expiry; the shared channel state; migration 0006 up and down."""

from __future__ import annotations

import time

from sqlalchemy import inspect, update

from hub.store import Mark, NewDelivery, NewMessage, Store
from hub.store import nodes as cluster
from hub.store.schema import nodes


def msg(i: int) -> NewMessage:
    return NewMessage("c", f"m{i}".encode(), "raw", deliveries=[NewDelivery("d")])


def silence(store: Store, node: str, seconds: float) -> None:
    """Make ``node``'s last heartbeat ``seconds`` old."""
    store.run_write(
        lambda conn: conn.execute(update(nodes).where(nodes.c.name == node).values(heartbeat_at=time.time() - seconds))
    )


async def test_a_dead_nodes_fifo_rows_are_claimed_in_place_and_in_order(store_url):
    a = Store(store_url, node="a", dead_after=5).open()
    b = Store(store_url, node="b", dead_after=5).open()
    try:
        a.heartbeat(time.time())
        b.heartbeat(time.time())
        a.accept([msg(i) for i in range(6)])
        held = await a.claim("c", "d", limit=3, ordered=False)  # a holds the first three (a 60 s lease)
        assert [c.content for c in held] == [b"m0", b"m1", b"m2"]
        assert await b.claim("c", "d", limit=10, ordered=False) == []  # a is alive: FIFO waits behind it
        silence(a, "a", 6)
        got = await b.claim("c", "d", limit=10, ordered=False)
        assert [c.content for c in got] == [b"m0", b"m1", b"m2", b"m3", b"m4", b"m5"]  # a's rows first, same ids
        assert [c.id for c in got[:3]] == [c.id for c in held]
        assert [c.attempts for c in got[:3]] == [0, 0, 0]
        await a.mark([Mark(held[0].id, "sent", 1)])  # the dead node's late result is ignored: b owns the row now
        await b.mark([Mark(c.id, "sent", 1) for c in got])
        assert a.delivery_states(held[0].message_id) == ["sent"]
    finally:
        a.close()
        b.close()


async def test_the_heartbeat_takes_over_a_dead_nodes_rows_and_leases(store_url):
    a = Store(store_url, node="a", dead_after=5).open()
    b = Store(store_url, node="b", dead_after=5).open()
    try:
        a.heartbeat(time.time())
        b.heartbeat(time.time())
        a.accept([msg(i) for i in range(4)])
        held = await a.claim("c", "d", limit=2, ordered=True)
        assert a.acquire_lease("sftp:h:22:/in", 60)
        assert not b.acquire_lease("sftp:h:22:/in", 60)
        assert b.take_over() == (0, [])
        silence(a, "a", 6)
        assert b.take_over() == (2, ["a"])  # a's two rows back to retry, due now, ids kept
        assert [n["name"] for n in b.nodes() if not n["alive"]] == ["a"]  # its row is kept until dead for long
        assert b.acquire_lease("sftp:h:22:/in", 60)  # freed by the takeover
        got = await b.claim("c", "d", limit=10, ordered=True)
        assert [c.id for c in got][:2] == [c.id for c in held]
    finally:
        a.close()
        b.close()


async def test_a_dead_owner_loses_its_named_lease_without_waiting_for_it_to_expire(store_url):
    a = Store(store_url, node="a", dead_after=5).open()
    b = Store(store_url, node="b", dead_after=5).open()
    try:
        a.heartbeat(time.time())
        assert a.acquire_lease("batch:x", 600)
        assert not b.acquire_lease("batch:x", 600)
        silence(a, "a", 6)
        assert b.acquire_lease("batch:x", 600)
        assert not a.acquire_lease("batch:x", 600)  # a came back: b holds it now
    finally:
        a.close()
        b.close()


async def test_a_node_without_a_heartbeat_is_taken_over_only_when_its_lease_expires(store_url):
    a = Store(store_url, node="a", lease_seconds=0.3, dead_after=0.1).open()
    b = Store(store_url, node="b", dead_after=0.1).open()
    try:
        a.accept([msg(0)])
        assert len(await a.claim("c", "d", limit=5, ordered=False)) == 1
        time.sleep(0.15)
        assert await b.claim("c", "d", limit=5, ordered=False) == []  # no heartbeat row: not known to be dead
        time.sleep(0.2)
        assert [c.content for c in await b.claim("c", "d", limit=5, ordered=False)] == [b"m0"]  # lease expired
    finally:
        a.close()
        b.close()


def test_a_nodes_own_rows_are_never_taken_over_by_itself_and_leave_removes_it(store):
    store.heartbeat(time.time())
    silence(store, store.node, 3600)
    assert store.take_over() == (0, [])  # a node is never dead to itself
    assert [n["name"] for n in store.nodes()] == [store.node]
    store.leave()
    assert store.nodes() == []


def test_channel_state_is_shared_and_kept(store):
    assert store.channel_states() == {}
    st = store.set_channel_state("adt", paused=True, by="ana")
    assert (st.paused, st.enabled, st.changed_by) == (True, True, "ana")
    st = store.set_channel_state("adt", enabled=False, by="bob")
    assert (st.paused, st.enabled, st.changed_by) == (True, False, "bob")
    again = Store(store.url).open()
    try:
        assert again.channel_states()["adt"] == st
        again.set_channel_state("adt", paused=False, enabled=True)
    finally:
        again.close()
    assert not store.channel_states()["adt"].paused and store.channel_states()["adt"].enabled


def test_migration_0006_up_and_down(store_url):
    store = Store(store_url).open()
    try:
        store.heartbeat(time.time())
        store.migrate("0005", downgrade=True)
        with store.engine.connect() as c:
            insp = inspect(c)
            assert not {"nodes", "channel_state"} & set(insp.get_table_names())
            assert "ix_deliveries_sending" not in {i["name"] for i in insp.get_indexes("deliveries")}
        store.migrate("head")
        with store.engine.connect() as c:
            insp = inspect(c)
            assert {"nodes", "channel_state"} <= set(insp.get_table_names())
            assert "ix_deliveries_sending" in {i["name"] for i in insp.get_indexes("deliveries")}
        store.set_channel_state("x", paused=True)
        assert cluster.SharedState is type(store.channel_states()["x"])
    finally:
        store.close()
