"""hub/metrics.py: the engine feeds the counters and histograms; queue gauges are read from the store at scrape time."""

from __future__ import annotations

import time

from websupport import hl7, until

from hub import metrics
from hub.engine import Engine
from hub.spec import load_config
from hub.store import NewDelivery, NewMessage
from hub.web import queries
from support import write_config

HUB = "store: {{url: 'sqlite:///{db}'}}\nweb: {{enabled: false}}\n"
CHANNEL = """
name: {name}
source: {{type: memory, format: hl7v2}}
routes:
  - {{name: all, to: [ok, bad]}}
destinations:
  ok: {{type: memory}}
  bad: {{type: memory, fail: retry, fail_times: 1, queue: {{max_attempts: 2, backoff: {{initial: 10ms, max: 10ms}}}}}}
"""


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_the_engine_counts_messages_outcomes_latency_and_deliveries(tmp_path):
    name = f"m{time.time_ns()}"  # counters are process-wide: a channel name of its own
    cfg = load_config(
        write_config(tmp_path / "cfg", HUB.format(db=tmp_path / "hub.db"), {name: CHANNEL.format(name=name)})
    )
    eng = Engine(cfg, idle_poll=0.05)
    await eng.start()
    try:
        src = eng.sources[name]
        await src.push(hl7("M1", "MRN1"))
        await src.push(hl7("M2", "MRN2"))
        await src.push(b"garbage")
        await until(lambda: value("hub_deliveries_total", channel=name, destination="bad", outcome="sent") == 2)
        assert value("hub_messages_received_total", channel=name) == 3
        assert value("hub_messages_total", channel=name, outcome="accepted") == 2
        assert value("hub_messages_total", channel=name, outcome="rejected") == 1
        assert value("hub_ingest_seconds_count", channel=name) == 3
        assert 0 < value("hub_ingest_seconds_sum", channel=name) < 5
        assert value("hub_deliveries_total", channel=name, destination="ok", outcome="sent") == 2
        assert value("hub_deliveries_total", channel=name, destination="bad", outcome="retry") == 1
        assert value("hub_delivery_latency_seconds_count", channel=name, destination="ok") == 2
        # the store goes away: the input is answered 'error' and the store error is counted
        before = value("hub_store_errors_total", operation="accept")
        eng.store.writer.close()
        receipt = await src.push(hl7("M3", "MRN3"))
        assert receipt.outcome.value == "error"
        assert value("hub_store_errors_total", operation="accept") == before + 1
        assert value("hub_messages_total", channel=name, outcome="error") == 1
    finally:
        await eng.stop()


def test_touch_channel_makes_zero_series_so_silence_is_visible():
    metrics.touch_channel("quiet_channel", ["d1"])
    assert metrics.REGISTRY.get_sample_value("hub_messages_received_total", {"channel": "quiet_channel"}) == 0.0
    assert (
        metrics.REGISTRY.get_sample_value(
            "hub_deliveries_total", {"channel": "quiet_channel", "destination": "d1", "outcome": "dead"}
        )
        == 0.0
    )
    text = metrics.render().decode()
    assert 'hub_messages_received_total{channel="quiet_channel"} 0.0' in text


def test_the_gauges_connectors_set_are_exported():
    metrics.MLLP_CONNECTIONS.labels("lab", "source").inc()
    metrics.SFTP_LAST_POLL.labels("claims").set(1234.0)
    text = metrics.render().decode()
    assert 'hub_mllp_connections{channel="lab",endpoint="source"} 1.0' in text
    assert 'hub_sftp_last_poll_success_timestamp_seconds{channel="claims"} 1234.0' in text
    metrics.MLLP_CONNECTIONS.labels("lab", "source").dec()


def test_queue_collector_reads_the_store_at_scrape_time_and_caches_it():
    calls = []
    now = time.time()

    def read():
        calls.append(1)
        return [
            ("c", "d", "queued", 3, now - 30),
            ("c", "d", "retry", 2, now - 90),
            ("c", "d", "dead", 4, now - 900),
            ("c", "e", "sent", 0, None),
        ]

    col = metrics.QueueCollector(read, lambda: {"c": 1, "p": 0}, ttl=60)
    fams = {f.name: f for f in col.collect()}
    samples = {(f, tuple(sorted(s.labels.items()))): s.value for f, fam in fams.items() for s in fam.samples}
    assert samples[("hub_queue_depth", (("channel", "c"), ("destination", "d")))] == 5
    assert samples[("hub_queue_retrying", (("channel", "c"), ("destination", "d")))] == 2
    assert samples[("hub_dead_letters", (("channel", "c"), ("destination", "d")))] == 4
    assert (
        89 <= samples[("hub_queue_oldest_age_seconds", (("channel", "c"), ("destination", "d")))] < 100
    )  # dead ones do not count
    assert samples[("hub_store_up", ())] == 1
    assert samples[("hub_channel_running", (("channel", "p"),))] == 0
    list(col.collect())
    assert len(calls) == 1  # cached

    def broken():
        raise RuntimeError("store down")

    before = metrics.REGISTRY.get_sample_value("hub_store_errors_total", {"operation": "read"}) or 0
    bad = metrics.QueueCollector(broken, ttl=0)
    fams = {f.name: f for f in bad.collect()}
    assert fams["hub_store_up"].samples[0].value == 0
    assert metrics.REGISTRY.get_sample_value("hub_store_errors_total", {"operation": "read"}) == before + 1


def test_queue_rows_query_on_the_real_store(store):
    store.accept(
        [
            NewMessage("c", b"a", "raw", deliveries=[NewDelivery("d"), NewDelivery("e")]),
            NewMessage("c", b"b", "raw", deliveries=[NewDelivery("d")]),
        ]
    )
    rows = sorted(queries.queue_rows(store))
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [("c", "d", "queued", 2), ("c", "e", "queued", 1)]
    assert all(time.time() - r[4] < 60 for r in rows)
    col = metrics.QueueCollector(lambda: queries.queue_rows(store))
    depth = {s.labels["destination"]: s.value for f in col.collect() if f.name == "hub_queue_depth" for s in f.samples}
    assert depth == {"d": 2, "e": 1}
    recent = queries.recent_counts(store, time.time() - 60)
    assert recent["channels"] == {"c": {"accepted": 2}} and recent["destinations"][("c", "d")] == {"queued": 2}
    from sqlalchemy import update

    from hub.store.schema import deliveries

    store.run_write(
        lambda conn: conn.execute(
            update(deliveries).where(deliveries.c.destination == "e").values(status="dead", last_error="boom")
        )
    )
    dead = queries.dead_letters(store, channel="c")
    assert [(d["destination"], d["last_error"], d["message_id"]) for d in dead] == [("e", "boom", 1)]
    assert (
        queries.dead_letters(store, destination="d") == []
        and queries.dead_letters(store, before_id=dead[0]["id"]) == []
    )
    queries.ping(store)
