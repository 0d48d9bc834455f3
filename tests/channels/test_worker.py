"""Delivery workers through a running Engine: FIFO, per-key order, retry with backoff, dead, replay."""

from __future__ import annotations

import pytest

from hub.channels.worker import backoff_delay
from hub.engine import Engine
from hub.errors import RetryableDelivery
from hub.spec import QueueSpec, load_config
from support import until, write_config

HUB = "store: {{url: '{url}'}}\nweb: {{enabled: false}}\n"


def channel(queue: str, fail: str = "none", fail_times: int = 0, fmt: str = "raw") -> str:
    return f"""
name: c
source: {{type: memory, format: {fmt}}}
routes:
  - {{name: all, to: [out]}}
destinations:
  out: {{type: memory, fail: {fail}, fail_times: {fail_times}, queue: {queue}}}
"""


async def start(tmp_path, store_url, chan: str) -> Engine:
    cfg = load_config(write_config(tmp_path / "cfg", HUB.format(url=store_url), {"c": chan}))
    eng = Engine(cfg, idle_poll=0.05)
    await eng.start()
    return eng


def test_backoff_grows_exponentially_to_its_maximum():
    q = QueueSpec.model_validate({"backoff": {"initial": "1s", "max": "10s", "multiplier": 3}})
    assert [backoff_delay(q, n) for n in (1, 2, 3, 4)] == [1, 3, 9, 10]


async def test_fifo_delivery_keeps_order_through_retries(tmp_path, store_url):
    eng = await start(
        tmp_path, store_url, channel("{max_attempts: 5, backoff: {initial: 50ms, max: 100ms}}", "retry", 2)
    )
    try:
        src = eng.sources["c"]
        for i in range(10):
            assert (await src.push(f"m{i}".encode())).outcome.value == "accepted"
        dest = eng.destinations[("c", "out")]
        await until(lambda: len(dest.sent) == 10)
        assert [m.raw for m in dest.sent] == [f"m{i}".encode() for i in range(10)]
        # the peer has it before the store marks it sent: wait for the mark, then read the attempts
        await until(lambda: eng.store.delivery_states(dest.sent[0].id) == ["sent"])
        first = eng.store.get_message(dest.sent[0].id)["deliveries"][0]
        assert first["attempts"] == 3 and [a["outcome"] for a in first["attempt_log"]] == ["retry", "retry", "sent"]
    finally:
        await eng.stop()


async def test_after_max_attempts_a_delivery_is_dead_and_the_queue_moves_on(tmp_path, store_url):
    eng = await start(
        tmp_path, store_url, channel("{max_attempts: 2, backoff: {initial: 20ms, max: 20ms}}", "retry", 2)
    )
    try:
        src = eng.sources["c"]
        r1 = await src.push(b"first")
        await src.push(b"second")
        dest = eng.destinations[("c", "out")]
        mid = r1.results[0].message_id
        await until(lambda: len(dest.sent) == 1 and eng.store.delivery_states(mid) == ["dead"])
        assert dest.sent[0].raw == b"second"
        dead = eng.store.get_message(r1.results[0].message_id)["deliveries"][0]
        assert dead["status"] == "dead" and "simulated failure 2" in dead["last_error"]
        # dead is kept and replayable
        assert eng.store.replay([r1.results[0].message_id]) == 1
        eng.workers[("c", "out")].wake()
        await until(lambda: len(dest.sent) == 2)
        assert dest.sent[1].raw == b"first"
    finally:
        await eng.stop()


async def test_permanent_failure_is_dead_at_once(tmp_path, store_url):
    eng = await start(tmp_path, store_url, channel("{max_attempts: 10}", "permanent", 1))
    try:
        r = await eng.sources["c"].push(b"x")
        mid = r.results[0].message_id
        await until(lambda: eng.store.delivery_states(mid) == ["dead"])
        assert eng.store.get_message(mid)["deliveries"][0]["attempts"] == 1
    finally:
        await eng.stop()


class Flaky:
    """Fails every send for patient A; records the rest."""

    def __init__(self):
        self.sent = []

    async def send(self, message):
        if message.meta.get("patient_id") == "A":
            raise RetryableDelivery("A's system is down")
        self.sent.append(message.raw)
        return "ok"

    async def close(self):
        pass


async def test_order_by_lets_other_keys_flow_while_one_key_retries(tmp_path, store_url):
    pytest.importorskip("hub.transforms.hl7v2")
    eng = await start(
        tmp_path,
        store_url,
        channel("{max_attempts: 50, order_by: PID-3.1, backoff: {initial: 50ms, max: 50ms}}", fmt="hl7v2"),
    )
    try:
        flaky = Flaky()
        eng.workers[("c", "out")].destination = flaky
        src = eng.sources["c"]

        def adt(pid, n):
            return f"MSH|^~\\&|PM|F|EHR|F|20260101||ADT^A08|{pid}{n}|P|2.5.1\rPID|1||{pid}^^^F^MR\r".encode()

        for n in range(3):
            for pid in ("A", "B", "C"):
                await src.push(adt(pid, n))
        await until(lambda: len(flaky.sent) == 6)
        order = [m.split(b"|")[9].decode() for m in flaky.sent]
        assert [o for o in order if o.startswith("B")] == ["B0", "B1", "B2"]
        assert [o for o in order if o.startswith("C")] == ["C0", "C1", "C2"]
        st = eng.store.status()["destinations"][("c", "out")]
        assert st.get("sent") == 6 and st.get("retry", 0) + st.get("queued", 0) + st.get("sending", 0) == 3
    finally:
        await eng.stop()


async def test_wait_delivered_returns_when_every_delivery_is_final(tmp_path, store_url):
    eng = await start(
        tmp_path, store_url, channel("{max_attempts: 2, backoff: {initial: 50ms, max: 50ms}}", "retry", 1)
    )
    try:
        r = await eng.sources["c"].push(b"x")
        mid = r.results[0].message_id
        states = await eng.wait_delivered([mid], timeout=10)
        assert states == {mid: ["sent"]}
        # a timeout returns the states as they are
        eng.workers[("c", "out")].destination.config.fail_times = 100
        eng.workers[("c", "out")].destination.calls = 0
        r = await eng.sources["c"].push(b"y")
        states = await eng.wait_delivered([r.results[0].message_id], timeout=0.01)
        assert states[r.results[0].message_id][0] in ("queued", "sending", "retry")
    finally:
        await eng.stop()


async def test_batch_destination_sends_what_queued_as_one_payload(tmp_path, store_url):
    chan = """
name: c
source: {type: memory, format: hl7v2}
routes:
  - {name: all, to: [out]}
destinations:
  out: {type: memory, batch: {schedule: 300ms, max: 3, assemble: {type: hl7_batch, sending_app: CLINIC}}}
"""
    cfg = load_config(write_config(tmp_path / "cfg", HUB.format(url=store_url), {"c": chan}))
    eng = Engine(cfg, idle_poll=0.05)
    await eng.start()
    try:
        for n in range(4):
            await eng.sources["c"].push(f"MSH|^~\\&|PM|F|EHR|F|20260101||ADT^A08|C{n}|P|2.5.1\rPID|1||P{n}\r".encode())
        dest = eng.destinations[("c", "out")]
        await until(lambda: len(dest.sent) == 2)
        first, second = dest.sent
        from hub.transforms.hl7v2 import split_batch

        assert [m.split(b"|")[9] for m in split_batch(first.raw)] == [b"C0", b"C1", b"C2"]
        assert first.raw.startswith(b"FHS|^~\\&|CLINIC") and b"BTS|3\r" in first.raw
        assert len(split_batch(second.raw)) == 1
        await until(lambda: eng.store.status()["destinations"][("c", "out")].get("sent") == 4)
    finally:
        await eng.stop()


async def test_a_failed_batch_is_retried_whole(tmp_path, store_url):
    chan = """
name: c
source: {type: memory, format: raw}
routes:
  - {name: all, to: [out]}
destinations:
  out: {type: memory, fail: retry, fail_times: 1, queue: {backoff: {initial: 10ms, max: 10ms}},
    batch: {schedule: 200ms}}
"""
    cfg = load_config(write_config(tmp_path / "cfg", HUB.format(url=store_url), {"c": chan}))
    eng = Engine(cfg, idle_poll=0.05)
    await eng.start()
    try:
        for n in range(3):
            await eng.sources["c"].push(f"line {n}".encode())
        dest = eng.destinations[("c", "out")]
        await until(lambda: len(dest.sent) == 1, timeout=15)
        assert dest.sent[0].raw == b"line 0\nline 1\nline 2\n" and dest.calls == 2
    finally:
        await eng.stop()
