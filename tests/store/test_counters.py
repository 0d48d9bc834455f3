"""The counts kept with the writes (hub.store.counters, migration 0004) on SQLite and PostgreSQL: after every kind
of write — accept, claim, mark, recover, replay, reprocess, prune, a plain UPDATE/DELETE — they equal a fresh
GROUP BY over the tables; ``status()``/``queue_depth()`` read them; the migration back-fills and removes them."""

from __future__ import annotations

import time

from sqlalchemy import text

from hub.store import Mark, NewDelivery, NewMessage, Store, counters
from hub.store.schema import deliveries, messages


def msg(channel="c", dests=("d", "e"), status="accepted", received_at=None, key=None):
    return NewMessage(
        channel,
        b"MSH|^~\\&|A|B|C|D|20261207||ADT^A04|1|P|2.5.1\r",
        "hl7v2",
        status=status,
        received_at=received_at or time.time(),
        dedup_key=key,
        deliveries=[NewDelivery(d) for d in dests] if status == "accepted" else [],
    )


def kept(store: Store) -> list[tuple[str, str, str, int]]:
    store.fold_counters()
    return sorted(store.run_read(counters.counts))


def truth(store: Store) -> list[tuple[str, str, str, int]]:
    return sorted(store.run_read(counters.recount))


def groupby_status(store: Store) -> dict:
    """What status() computed before the counters: GROUP BY over messages and deliveries."""
    chans: dict = {}
    dests: dict = {}
    for ch, dest, st, n in truth(store):
        if dest == "":
            chans.setdefault(ch, {})[st] = n
        else:
            dests.setdefault((ch, dest), {"oldest_queued": None})[st] = n
    with store.engine.connect() as c:
        for ch, dest, oldest in c.execute(
            text(
                "SELECT channel, destination, MIN(created_at) FROM deliveries "
                "WHERE status IN ('queued', 'retry', 'sending') GROUP BY channel, destination"
            )
        ):
            dests[(ch, dest)]["oldest_queued"] = oldest
    return {"channels": chans, "destinations": dests}


async def test_counters_follow_every_write_path(store):
    old = time.time() - 100 * 86400
    accepted = store.accept(
        [msg(), msg(), msg("f", ("x",)), msg(status="filtered"), msg(status="rejected"), msg("f", status="error")]
        + [msg(received_at=old), msg("f", ("x",), received_at=old), msg(received_at=old, key="k1")]
    )
    store.accept([msg(key="k1")])  # a duplicate: nothing new
    assert kept(store) == truth(store)

    claimed = await store.claim("c", "d", limit=10, ordered=False)
    assert kept(store) == truth(store) and any(r[2] == "sending" for r in kept(store))
    await store.mark(
        [Mark(claimed[0].id, "sent", 1), Mark(claimed[1].id, "retry", 1, error="down", next_at=time.time() + 60)]
        + [Mark(c.id, "dead", 5, error="AE") for c in claimed[2:3]]
    )
    assert kept(store) == truth(store)

    more = await store.claim("c", "e", limit=2, ordered=False)
    assert more and store.recover(everything=True) >= len(more)  # sending → retry
    assert kept(store) == truth(store)

    assert store.replay(channel="c", destination="d", statuses=["dead", "retry"]) >= 1
    assert kept(store) == truth(store)

    filtered = accepted[3].message_id
    store.reprocess(filtered, NewMessage("c", b"again", "hl7v2", deliveries=[NewDelivery("d"), NewDelivery("z")]))
    assert kept(store) == truth(store)

    for c in await store.claim("f", "x", limit=10, ordered=False):
        await store.mark([Mark(c.id, "sent", 1)])
    assert store.prune(30 * 86400) >= 1
    assert kept(store) == truth(store)
    assert store.prune(30 * 86400, keep_unsent=False) >= 1
    assert kept(store) == truth(store)

    def by_hand(conn):  # any other write to the tables is counted too
        conn.execute(deliveries.update().where(deliveries.c.destination == "z").values(status="dead"))
        conn.execute(deliveries.delete().where(deliveries.c.destination == "e"))
        conn.execute(messages.delete().where(messages.c.id == filtered))  # its deliveries go by ON DELETE CASCADE

    store.run_write(by_hand)
    assert kept(store) == truth(store)
    assert store.status() == groupby_status(store)
    pending = {(ch, d): 0 for ch, d, st, _ in truth(store) if d}
    for ch, d, st, n in truth(store):
        if d and st in ("queued", "retry", "sending"):
            pending[(ch, d)] += n
    assert store.queue_depth() == {k: v for k, v in pending.items() if v}


def test_status_reads_the_same_numbers_as_a_group_by(store):
    store.accept([msg(), msg("g", ("y",)), msg(status="rejected")])
    st = store.status()
    assert st == groupby_status(store)
    assert st["channels"] == {"c": {"accepted": 1, "rejected": 1}, "g": {"accepted": 1}}
    assert st["destinations"][("c", "d")]["queued"] == 1 and st["destinations"][("c", "d")]["oldest_queued"]


def test_counts_of_emptied_channels_disappear(store):
    store.accept([msg(received_at=time.time() - 100 * 86400)])
    assert store.prune(30 * 86400, keep_unsent=False) == 1
    assert store.status() == {"channels": {}, "destinations": {}}
    assert kept(store) == []


def test_postgres_writes_append_deltas_that_a_fold_moves(pg_url):
    store = Store(pg_url).open()
    try:
        store.accept([msg(), msg()])
        with store.engine.connect() as c:
            assert c.execute(text("SELECT COUNT(*) FROM counter_deltas")).scalar() > 0
        assert sorted(store.run_read(counters.counts)) == truth(store)  # exact before a fold
        store.fold_counters()
        with store.engine.connect() as c:
            assert c.execute(text("SELECT COUNT(*) FROM counter_deltas")).scalar() == 0
            assert c.execute(text("SELECT COUNT(*) FROM counters")).scalar() == 3
        assert kept(store) == truth(store)
    finally:
        store.close()


def test_migration_back_fills_and_downgrade_removes(store_url):
    store = Store(store_url).open()
    try:
        store.accept([msg(), msg("f", ("x",)), msg(status="filtered")])
        store.migrate("0003", downgrade=True)
        with store.engine.connect() as c:
            tables = set(c.dialect.get_table_names(c))
        assert "counters" not in tables and "counter_deltas" not in tables
        # written while no trigger counts: the upgrade must count them
        with store.engine.begin() as c:
            c.execute(deliveries.update().where(deliveries.c.destination == "e").values(status="sent"))
        store.migrate("head")
        assert kept(store) == truth(store)
        store.accept([msg()])
        assert kept(store) == truth(store)
    finally:
        store.close()


def test_two_nodes_writing_and_folding_at_once_keep_exact_counts(pg_url):
    """Two stores (two nodes) accept, claim and mark concurrently while both fold: no deadlock, no lost count."""
    import asyncio
    import threading

    one, two = Store(pg_url, node="one").open(), Store(pg_url, node="two").open()
    errors: list[BaseException] = []

    def work(store: Store, channel: str) -> None:
        try:
            for i in range(30):
                store.accept([msg(channel, ("d", "e")), msg("shared", ("d",))])
                if i % 5 == 0:
                    store.fold_counters()

            async def drain() -> None:
                for c in await store.claim(channel, "d", limit=50, ordered=False):
                    await store.mark([Mark(c.id, "sent", 1)])

            asyncio.run(drain())
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=work, args=(s, ch)) for s, ch in ((one, "a"), (two, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert kept(one) == truth(one)
        assert dict(((ch, d, st), n) for ch, d, st, n in truth(one))[("shared", "", "accepted")] == 60
    finally:
        one.close()
        two.close()
