"""Per-minute rollups, queue samples and alert history (hub.store.rollups, migration 0009) on SQLite and
PostgreSQL: written by triggers with every write, read summed (PostgreSQL: before and after the fold), pruned."""

from __future__ import annotations

import time

from sqlalchemy import text

from hub.store import Mark, NewDelivery, NewMessage, Store, rollups


def msg(channel="c", dests=("d",), status="accepted", received_at=None):
    return NewMessage(
        channel,
        b"MSH|^~\\&|A|B|C|D|20261207||ADT^A04|1|P|2.5.1\r",
        "hl7v2",
        status=status,
        received_at=received_at or time.time(),
        deliveries=[NewDelivery(d) for d in dests] if status == "accepted" else [],
    )


def totals(store: Store, **kw) -> dict[str, int]:
    now = time.time()
    sums = store.rollup_sums(now - 3600, now + 120, 60, **kw)
    return {m: sum(v.values()) for m, v in sums.items()}


async def test_rollups_count_every_write(store):
    store.accept([msg() for _ in range(5)] + [msg(status="rejected"), msg(status="filtered"), msg("g", ("x",))])
    claimed = await store.claim("c", "d", limit=10, ordered=False)
    assert len(claimed) == 5
    await store.mark([Mark(c.id, "sent", 1) for c in claimed[:3]] + [Mark(claimed[3].id, "retry", 1, next_at=0)])
    await store.mark([Mark(claimed[4].id, "dead", 1, error="AE")])
    again = await store.claim("c", "d", limit=10, ordered=False)
    await store.mark([Mark(c.id, "sent", 2) for c in again])

    t = totals(store, channel="c")
    assert t["accepted"] == 5 and t["rejected"] == 1 and t["filtered"] == 1
    assert t["queued"] == 5 and t["sent"] == 4 and t["dead"] == 1 and t["retry"] == 1
    lat = {m: n for m, n in t.items() if m.startswith("lat:")}
    assert sum(lat.values()) == 4
    p = rollups.percentiles(lat)
    assert p["count"] == 4 and p["p50"] is not None and 0 <= p["p50"] <= p["p99"] <= 60000
    assert totals(store, channel="c", destination="d")["sent"] == 4
    assert totals(store, channel="g") == {"accepted": 1, "queued": 1}

    store.fold_counters()  # PostgreSQL: the deltas move into rollups; the sums stay the same
    assert totals(store, channel="c") == t
    if store.dialect == "postgresql":
        assert store.run_read(lambda c: c.execute(text("SELECT COUNT(*) FROM rollup_deltas")).scalar()) == 0

    # replay: dead → queued → sent counts one more sent
    assert store.replay(channel="c", destination="d", statuses=["dead"]) == 1
    for c in await store.claim("c", "d", limit=10, ordered=False):
        await store.mark([Mark(c.id, "sent", 1)])
    assert totals(store, channel="c")["sent"] == 5


def test_minutes_buckets_and_percentiles(store):
    now = time.time()
    store.accept([msg(received_at=now - 600), msg(received_at=now - 600), msg(received_at=now)])
    m = store.rollup_minutes(now - 3600, now + 60, ["accepted"])
    per = m["c\0accepted"]
    assert sum(per.values()) == 3 and per[int(now - 600) // 60 * 60] == 2
    start = int(now // 60 * 60) - 3540
    sums = store.rollup_sums(start, start + 3600, 900, channel="c")
    assert sum(sums["accepted"].values()) == 3 and all((t - start) % 900 == 0 for t in sums["accepted"])

    assert rollups.percentiles({}) == {"p50": None, "p90": None, "p99": None, "count": 0}
    p = rollups.percentiles({"lat:10": 50, "lat:100": 50})
    assert p["count"] == 100 and 5 < p["p50"] <= 10 and 90 < p["p99"] <= 100
    assert rollups.percentiles({"lat:inf": 2})["p99"] == 60000.0


async def test_queue_samples_and_prune(store):
    store.accept([msg(dests=("d", "e")) for _ in range(3)])
    now = time.time()
    assert store.sample_queues(now) == 2
    store.sample_queues(now)  # the same minute again: replaced
    assert store.queue_samples(now - 60, now + 60, channel="c") == {int(now // 60 * 60): 6}
    assert store.queue_samples(now - 60, now + 60, channel="c", destination="d") == {int(now // 60 * 60): 3}
    old = now - 9 * 86400
    store.accept([msg(received_at=old)])
    store.sample_queues(old)
    store.record_alerts([("dead_letter", "warning", "c", "d", "1 dead", "dead")], [])
    firing, _ = store.alerts(0)
    store.record_alerts([], [firing[0].id])
    store.run_write(lambda c: c.execute(text("UPDATE alert_events SET resolved_at = :t"), {"t": now - 8 * 86400}))
    store.fold_counters()
    assert store.prune_rollups(now) >= 3  # the old minute's rollups (+ queued), its sample, the old alert
    assert store.queue_samples(old - 60, old + 60) == {}
    assert store.alerts(0) == ([], [])
    assert totals(store, channel="c")["accepted"] == 3


def test_alert_history(store):
    store.record_alerts(
        [("dead_letter", "warning", "c", "d", "1 dead", "dead"), ("channel_stopped", "info", "c", None, "x", None)],
        [],
    )
    firing, recent = store.alerts(0)
    assert [a.rule for a in firing] == ["dead_letter", "channel_stopped"] and recent == []
    assert firing[0].public()["messages"] == {"channel": "c", "status": "dead", "destination": "d"}
    assert firing[1].destination is None
    store.record_alerts([], [firing[0].id])
    firing2, recent = store.alerts(0)
    assert [a.rule for a in firing2] == ["channel_stopped"]
    assert recent[0].rule == "dead_letter" and recent[0].resolved_at is not None
    assert "resolved_at" in recent[0].public()


def test_migration_down_and_up(store):
    store.migrate("0008", downgrade=True)
    store.accept([msg()])  # no trigger any more
    store.migrate()
    assert totals(store) == {}
    store.accept([msg()])
    assert totals(store)["accepted"] == 1
