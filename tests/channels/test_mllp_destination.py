"""The MLLP sender through a running Engine to a scriptable peer on 127.0.0.1: ACK policies, the control-id check,
a persistent connection, reconnecting after the peer dies, the ACK stored with the delivery."""

from __future__ import annotations

import asyncio

from test_mllp_support import Peer, adt, start_engine, until

from hub import metrics
from hub.channels.base import Context, ReportsPeer
from hub.channels.mllp import MllpDestination
from hub.errors import PermanentDelivery, RetryableDelivery
from hub.message import Message

FAST = "queue: {max_attempts: 50, backoff: {initial: 50ms, max: 200ms}}, reconnect: {initial: 50ms, max: 200ms}"


def channel(port: int, extra: str = "", queue: str = FAST) -> str:
    return f"""
name: c
source: {{type: memory, format: hl7v2}}
routes:
  - {{name: all, to: [lab]}}
destinations:
  lab: {{type: mllp, address: "127.0.0.1:{port}", {queue}{", " + extra if extra else ""}}}
"""


def deliveries(eng, mid):
    return eng.store.get_message(mid)["deliveries"]


async def push(eng, raw: bytes) -> int:
    receipt = await eng.sources["c"].push(raw)
    assert receipt.outcome.value == "accepted", receipt.reasons
    return receipt.results[0].message_id


async def test_aa_is_sent_on_one_persistent_connection_and_the_ack_is_stored(tmp_path, store_url):
    peer = await Peer().start()
    eng = await start_engine(tmp_path, store_url, {"c": channel(peer.port)})
    try:
        ids = [await push(eng, adt(f"P{i}")) for i in range(20)]
        await until(lambda: all(eng.store.delivery_states(m) == ["sent"] for m in ids))
        assert peer.connections == 1  # persistent: one connection for all twenty
        assert [p.split(b"|")[9] for p in peer.received] == [f"P{i}".encode() for i in range(20)]  # FIFO
        d = deliveries(eng, ids[3])[0]
        assert d["attempts"] == 1 and "MSA|AA|P3" in d["response"]  # the ACK is kept with the delivery
    finally:
        await eng.stop()
        await peer.stop()


async def test_ae_retries_ar_is_dead_and_policies_can_swap_them(tmp_path):
    peer = await Peer(script=lambda n, cid: {"AE1": "AE" if n == 1 else "AA", "AR1": "AR"}.get(cid, "AA")).start()
    eng = await start_engine(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", {"c": channel(peer.port)})
    try:
        ae, ar = await push(eng, adt("AE1")), await push(eng, adt("AR1"))
        await until(lambda: eng.store.delivery_states(ae) == ["sent"] and eng.store.delivery_states(ar) == ["dead"])
        d = deliveries(eng, ae)[0]
        assert d["attempts"] == 2 and [a["outcome"] for a in d["attempt_log"]] == ["retry", "sent"]
        assert "answered AE (error 101): the lab needs an MRN" in d["attempt_log"][0]["error"]
        dead = deliveries(eng, ar)[0]
        assert dead["attempts"] == 1 and "MSA|AR|AR1" in dead["response"] and "answered AR" in dead["last_error"]
    finally:
        await eng.stop()
        await peer.stop()
    seen: dict[str, int] = {}

    def script(n: int, cid: str) -> str:
        seen[cid] = seen.get(cid, 0) + 1
        return {"X1": "AR" if seen[cid] == 1 else "AA", "X2": "AE"}[cid]

    peer = await Peer(script=script).start()
    eng = await start_engine(
        tmp_path, f"sqlite:///{tmp_path / 'hub2.db'}", {"c": channel(peer.port, "on_ar: retry, on_ae: dead")}
    )
    try:
        first, second = await push(eng, adt("X1")), await push(eng, adt("X2"))
        await until(
            lambda: eng.store.delivery_states(first) == ["sent"] and eng.store.delivery_states(second) == ["dead"]
        )
    finally:
        await eng.stop()
        await peer.stop()


async def test_no_ack_in_time_and_a_wrong_control_id_are_retried_on_a_new_connection(tmp_path):
    peer = await Peer(script=lambda n, cid: {1: "silent", 2: "wrong", 3: "garbage"}.get(n, "AA")).start()
    eng = await start_engine(
        tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", {"c": channel(peer.port, "ack_timeout: 300ms")}
    )
    try:
        mid = await push(eng, adt("W1"))
        await until(lambda: eng.store.delivery_states(mid) == ["sent"])
        log = deliveries(eng, mid)[0]["attempt_log"]
        assert [a["outcome"] for a in log] == ["retry", "retry", "retry", "sent"]
        assert "no ACK" in log[0]["error"] and "acknowledged control id 'SOMETHING-ELSE'" in log[1]["error"]
        assert "not an HL7 ACK" in log[2]["error"]
        assert peer.connections == 4  # each failure closed the connection: a late ACK cannot be mistaken
    finally:
        await eng.stop()
        await peer.stop()
    peer = await Peer(script=lambda n, cid: "silent").start()
    eng = await start_engine(
        tmp_path, f"sqlite:///{tmp_path / 'hub2.db'}", {"c": channel(peer.port, "ack_timeout: 200ms, on_timeout: dead")}
    )
    try:
        mid = await push(eng, adt("W2"))
        await until(lambda: eng.store.delivery_states(mid) == ["dead"])
    finally:
        await eng.stop()
        await peer.stop()


async def test_the_peer_killed_mid_stream_means_retries_then_delivery_in_order(tmp_path, store_url):
    peer = await Peer().start()
    port = peer.port
    eng = await start_engine(tmp_path, store_url, {"c": channel(port)})
    try:
        ids = [await push(eng, adt(f"K{i}")) for i in range(5)]
        await until(lambda: len(peer.received) == 5)
        await peer.stop()  # the lab's interface engine dies
        ids += [await push(eng, adt(f"K{i}")) for i in range(5, 15)]
        await until(lambda: any(eng.store.delivery_states(m) == ["retry"] for m in ids[5:]))
        await asyncio.sleep(0.4)
        assert all(eng.store.delivery_states(m) != ["sent"] for m in ids[5:])
        back = await Peer().start(port)  # … and comes back on its port
        await until(lambda: all(eng.store.delivery_states(m) == ["sent"] for m in ids), timeout=15)
        assert [p.split(b"|")[9] for p in back.received] == [f"K{i}".encode() for i in range(5, 15)]
        d = deliveries(eng, ids[5])[0]
        assert d["attempts"] > 1 and "cannot connect to 127.0.0.1" in d["attempt_log"][0]["error"]
        await back.stop()
    finally:
        await eng.stop()


async def test_absent_peer_queues_and_retries(tmp_path):
    peer = await Peer().start()
    port = peer.port
    await peer.stop()
    eng = await start_engine(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", {"c": channel(port)})
    try:
        mid = await push(eng, adt("Q1"))
        await until(lambda: deliveries(eng, mid)[0]["attempts"] >= 2)
        d = deliveries(eng, mid)[0]
        assert d["status"] == "retry" and "cannot connect" in d["last_error"]
    finally:
        await eng.stop()


async def _direct(port: int, **extra) -> MllpDestination:
    conf = MllpDestination.Config.model_validate({"type": "mllp", "address": f"127.0.0.1:{port}", **extra})
    return MllpDestination(conf, Context(channel="c"))


def _message(raw: bytes) -> Message:
    return Message(raw=raw, content_type="hl7v2", meta={"destination": "lab"})


async def test_a_connection_the_peer_closed_while_idle_is_replaced_transparently():
    peer = await Peer().start()
    dest = await _direct(peer.port)
    try:
        assert "MSA|AA|I1" in await dest.send(_message(adt("I1")))
        for w in peer.writers:  # the peer (or a firewall) drops the idle connection
            w.close()
        await asyncio.sleep(0.1)
        assert "MSA|AA|I2" in await dest.send(_message(adt("I2")))
        assert dest.opened == 2 and peer.connections == 2
    finally:
        await dest.close()
        await dest.close()  # idempotent
        await peer.stop()


async def test_peer_state_counts_the_open_connections_as_the_gauge_does():
    peer = await Peer().start()
    dest = await _direct(peer.port, connections=2)

    def gauge() -> float | None:
        return metrics.REGISTRY.get_sample_value("hub_mllp_connections", {"channel": "c", "endpoint": "lab"})

    try:
        assert isinstance(dest, ReportsPeer) and dest.peer_state() == {}  # the first message names the endpoint
        before = gauge() or 0.0  # the gauge is per channel and endpoint: other tests' destinations count in it too
        await asyncio.gather(*(dest.send(_message(adt(f"G{i}"))) for i in range(2)))
        assert dest.peer_state() == {"mllp": {"lab": 2}} and gauge() == before + 2
        await dest.close()
        assert dest.peer_state() == {"mllp": {"lab": 0}} and gauge() == before
    finally:
        await dest.close()
        await peer.stop()


async def test_lf_files_are_sent_with_cr_and_ne_needs_no_ack():
    peer = await Peer(script=lambda n, cid: "silent" if cid == "N1" else "AA").start()
    dest = await _direct(peer.port, ack_timeout="2s")
    try:
        lf = adt("L1").replace(b"\r", b"\n")
        await dest.send(_message(lf))
        assert peer.received[0] == adt("L1")
        assert "no accept acknowledgement" in await dest.send(_message(adt("N1", extra_msh="|||NE|NE")))
        assert "MSA|AA|L2" in await dest.send(_message(adt("L2")))
    finally:
        await dest.close()
        await peer.stop()


async def test_reconnect_backs_off_after_a_failed_connect():
    peer = await Peer().start()
    port = peer.port
    await peer.stop()
    dest = await _direct(port, reconnect={"initial": "1s", "max": "2s"})
    try:
        try:
            await dest.send(_message(adt("B1")))
        except RetryableDelivery as exc:
            assert "cannot connect" in str(exc)
        try:
            await dest.send(_message(adt("B1")))
            raise AssertionError("expected a retry")
        except RetryableDelivery as exc:
            assert "reconnecting in" in str(exc) and exc.retry_after and exc.retry_after <= 1.0
        assert dest.opened == 0
    finally:
        await dest.close()


async def test_ar_raises_permanent_with_the_ack_as_response():
    peer = await Peer(script=lambda n, cid: "AR").start()
    dest = await _direct(peer.port)
    try:
        try:
            await dest.send(_message(adt("R1")))
            raise AssertionError("expected dead")
        except PermanentDelivery as exc:
            assert exc.response and "MSA|AR|R1" in exc.response
    finally:
        await dest.close()
        await peer.stop()
