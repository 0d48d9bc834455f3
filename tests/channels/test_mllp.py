"""The MLLP listener through real sockets on 127.0.0.1 with a running Engine and a real store: framing, ACKs from
the receipt (original and enhanced mode), broken input, connection limits, duplicates, charsets, batches."""

from __future__ import annotations

import asyncio

import pytest
from test_mllp_support import HOLD_ENTERED, HOLD_RELEASE, Client, adt, mllp_channel, msa, segment, start_engine, until

from hub import metrics
from hub.channels.base import ReportsPeer
from hub.channels.mllp import Framer, MllpSource, frame, normalise_segments
from hub.errors import ConfigError, StoreError
from hub.store import SearchQuery


def source(eng) -> MllpSource:
    return eng.sources["c"]


# ---------------------------------------------------------------------------------------------- framing (pure)
def test_framer_handles_split_reads_several_frames_and_fs_without_cr():
    f = Framer(1000)
    assert f.feed(b"\x0bMSH|1\x1c\r\x0bMSH|2\x1c") == [("frame", b"MSH|1"), ("frame", b"MSH|2")]
    assert f.feed(b"\r\n\x0bMSH") == []  # whitespace between frames is not garbage
    assert f.in_frame and f.pending == 3
    assert f.feed(b"|3\r") == [] and f.feed(b"PID|\x1c") == [("frame", b"MSH|3\rPID|")]


def test_framer_reports_garbage_oversized_and_abandoned_frames():
    f = Framer(64)
    assert f.feed(b"GET / HTTP/1.1\r\n") == [("garbage", 14)]
    big = b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|BIG1|P|2.5.1\r" + b"X" * 200
    events = f.feed(b"\x0b" + big[:100]) + f.feed(big[100:] + b"\x1c\r")
    assert [e[0] for e in events] == ["too_large"]
    assert events[0][1].startswith(b"MSH|") and len(events[0][1]) <= 4096  # only the head is kept
    assert f.feed(b"\x0bMSH|half\x0bMSH|next\x1c\r") == [("unterminated", b"MSH|half"), ("frame", b"MSH|next")]


def test_normalise_segments():
    assert normalise_segments(b"MSH|1\nPID|2\n") == b"MSH|1\rPID|2\r"
    assert normalise_segments(b"MSH|1\r\nPID|2\r\n") == b"MSH|1\rPID|2\r"
    assert normalise_segments(b"MSH|1\rNTE|a\nb\r") == b"MSH|1\rNTE|a\nb\r"  # a line break inside a value stays


def test_config_is_checked_without_io():
    conf = MllpSource.Config.model_validate({"type": "mllp", "listen": "127.0.0.1:2575"})
    assert conf.format == "hl7v2" and conf.ack == "after_store"
    with pytest.raises(ValueError):
        MllpSource.Config.model_validate({"type": "mllp", "listen": "127.0.0.1:2575", "allow": ["not-an-ip"]})
    with pytest.raises(ValueError):
        MllpSource.Config.model_validate({"type": "mllp", "listen": "x", "tls": {"cert": "a.crt"}})
    with pytest.raises(ConfigError):
        from hub.channels.base import Context

        MllpSource(MllpSource.Config.model_validate({"type": "mllp", "listen": "127.0.0.1:1", "tls": {}}), Context())


# ---------------------------------------------------------------------------------------------- the main flow
async def test_200_messages_over_8_connections_are_all_acked_and_stored(tmp_path, store_url):
    eng = await start_engine(tmp_path, store_url, {"c": mllp_channel()})
    try:
        port = source(eng).port

        async def one_connection(c: int) -> list[list[str]]:
            client = await Client.connect(port)
            try:
                return [msa(await client.send(adt(f"C{c}-{i}", mrn=f"M{c}{i}"))) for i in range(25)]
            finally:
                client.close()

        answers = await asyncio.gather(*(one_connection(c) for c in range(8)))
        flat = [a for conn in answers for a in conn]
        assert len(flat) == 200 and all(a[0] == "AA" for a in flat)
        assert {a[1] for a in flat} == {f"C{c}-{i}" for c in range(8) for i in range(25)}  # MSA-2 echoes each MSH-10
        rows = eng.store.search(SearchQuery(channel="c", limit=1000))
        assert len(rows) == 200 and {r["control_id"] for r in rows} == {a[1] for a in flat}
        assert {r["status"] for r in rows} == {"accepted"}
        one = eng.store.search(SearchQuery(control_id="C3-7"))[0]
        assert one["message_type"] == "ADT^A01" and one["patient_id"] == "M37"
        assert eng.store.get_message(one["id"])["raw"] == adt("C3-7", mrn="M37")  # byte for byte
        await until(lambda: len(eng.destinations[("c", "out")].sent) == 200)
        assert source(eng).counts["frames"] == 200
    finally:
        await eng.stop()


async def test_a_slow_transform_in_one_channel_does_not_hold_another_listeners_acks(tmp_path):
    """Every listener shares the event loop: a pipeline with a transform not marked light (here a python transform
    that waits) runs on a worker thread, so channel c keeps answering while channel slow is still transforming."""
    HOLD_ENTERED.clear()
    HOLD_RELEASE.clear()
    slow = mllp_channel(
        routes="  - {name: all, transforms: [{type: python, function: 'test_mllp_support:hold'}], to: [out]}"
    )
    light = mllp_channel(routes="  - {name: all, transforms: [{type: set, path: MSH-5, value: EHR}], to: [out]}")
    eng = await start_engine(
        tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", {"c": light, "slow": slow.replace("name: c", "name: slow")}
    )
    try:
        assert eng.channels["c"].inline and not eng.channels["slow"].inline
        waiting = await Client.connect(eng.sources["slow"].port)
        waiting.writer.write(frame(adt("SLOW1")))
        await until(HOLD_ENTERED.is_set, what="the slow pipeline started")
        client = await Client.connect(source(eng).port)
        for i in range(3):
            assert msa(await client.send(adt(f"FAST{i}"), timeout=5))[:2] == ["AA", f"FAST{i}"]
        HOLD_RELEASE.set()
        assert msa(await waiting.read())[:2] == ["AA", "SLOW1"]
        rows = {r["control_id"]: r["status"] for r in eng.store.search(SearchQuery())}
        assert rows == {"SLOW1": "accepted", "FAST0": "accepted", "FAST1": "accepted", "FAST2": "accepted"}
        client.close()
        waiting.close()
    finally:
        HOLD_RELEASE.set()
        await eng.stop()


async def test_ack_layout_and_codes_from_the_receipt(tmp_path):
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    chan = mllp_channel(filters="filters:\n  - {path: MSH-9.1, in: [ADT, ORU]}")
    eng = await start_engine(tmp_path, url, {"c": chan})
    try:
        client = await Client.connect(source(eng).port)
        ack = await client.send(adt("OK1", trigger="A04"))
        msh = segment(ack, "MSH").split("|")
        assert msh[2:6] == ["HUB", "CLINIC", "PM", "CLINIC"]  # MSH-3..6 swapped
        assert msh[8] == "ACK^A04^ACK" and msh[10:12] == ["P", "2.5.1"]
        assert msa(ack)[:2] == ["AA", "OK1"] and segment(ack, "ERR") is None

        # filtered (no filter matched) is still AA: the message is stored, nobody wanted it
        orm = adt("F1").replace(b"ADT^A01^ADT_A01", b"ORM^O01^ORM_O01")
        assert msa(await client.send(orm))[:2] == ["AA", "F1"]

        # rejected by validation → AR with ERR: table 0357 code and location
        no_version = adt("R1").replace(b"|P|2.5.1", b"|P|")
        ack = await client.send(no_version)
        assert msa(ack)[:2] == ["AR", "R1"]
        err = segment(ack, "ERR")
        assert err is not None and "^HL70357" in err and "|MSH^1^12" in err and "101^" in err

        # enhanced mode (MSH-15 AL): CA; MSH-15 NE: no answer at all; ER: only errors are answered
        assert msa(await client.send(adt("E1", extra_msh="|||AL|NE")))[:2] == ["CA", "E1"]
        client.writer.write(frame(adt("E2", extra_msh="|||NE|NE")))
        client.writer.write(frame(adt("E3", extra_msh="|||ER|NE")))
        bad = adt("E4", extra_msh="|||ER|NE").replace(b"ADT^A01^ADT_A01", b"")
        ack = await client.send(bad)  # the only answer to the three frames is the CR for E4
        assert msa(ack)[:2] == ["CR", "E4"]
        rows = {r["control_id"]: r["status"] for r in eng.store.search(SearchQuery(channel="c"))}
        assert rows == {
            "OK1": "accepted",
            "F1": "filtered",
            "R1": "rejected",
            "E1": "accepted",
            "E2": "accepted",
            "E3": "accepted",
            "E4": "rejected",
        }
        client.close()
    finally:
        await eng.stop()


async def test_store_down_is_answered_ae_and_the_listener_recovers(tmp_path, monkeypatch):
    eng = await start_engine(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", {"c": mllp_channel()})
    try:
        client = await Client.connect(source(eng).port)
        real = eng.store.accept_async

        async def down(items, **kw):
            raise StoreError("store unavailable: OperationalError: disk I/O error")

        monkeypatch.setattr(eng.store, "accept_async", down)
        ack = await client.send(adt("DOWN1"))
        assert msa(ack)[:2] == ["AE", "DOWN1"] and "207^" in segment(ack, "ERR")
        monkeypatch.setattr(eng.store, "accept_async", real)
        assert msa(await client.send(adt("DOWN1")))[:2] == ["AA", "DOWN1"]  # the peer resends: now taken
        assert len(eng.store.search(SearchQuery(control_id="DOWN1"))) == 1
        client.close()
    finally:
        await eng.stop()


async def test_ack_after_delivery_waits_for_the_destinations(tmp_path):
    dests = "  out: {type: memory}\n  bad: {type: memory, fail: permanent, fail_times: 100}\n"
    routes = "  - {name: ok, to: [out]}\n  - {name: a08, when: {path: MSH-9.2, equals: A08}, to: [bad]}\n"
    eng = await start_engine(
        tmp_path,
        f"sqlite:///{tmp_path / 'hub.db'}",
        {
            "c": mllp_channel("ack: after_delivery, ack_timeout: 5s", destinations=dests, routes=routes),
        },
    )
    try:
        client = await Client.connect(source(eng).port)
        assert msa(await client.send(adt("D1")))[:2] == ["AA", "D1"]
        out = eng.destinations[("c", "out")]
        assert [m.meta["control_id"] for m in out.sent] == ["D1"]  # delivered before the AA came back
        ack = await client.send(adt("D2", trigger="A08"))  # one destination gives up → AE
        assert msa(ack)[:2] == ["AE", "D2"] and "gave up" in segment(ack, "ERR")
        client.close()
    finally:
        await eng.stop()
    # a destination that keeps failing: AE once ack_timeout has passed
    dests = (
        "  out: {type: memory, fail: retry, fail_times: 1000,"
        " queue: {max_attempts: 1000, backoff: {initial: 50ms, max: 50ms}}}\n"
    )
    eng = await start_engine(
        tmp_path,
        f"sqlite:///{tmp_path / 'hub2.db'}",
        {
            "c": mllp_channel("ack: after_delivery, ack_timeout: 300ms", destinations=dests),
        },
    )
    try:
        client = await Client.connect(source(eng).port)
        ack = await client.send(adt("T1"))
        assert msa(ack)[:2] == ["AE", "T1"] and "not delivered within 0.3s" in segment(ack, "ERR")
        client.close()
    finally:
        await eng.stop()


# ---------------------------------------------------------------------------------------------- broken input
async def test_broken_input_is_answered_or_closed_and_others_are_served(tmp_path, caplog):
    chan = mllp_channel("max_message_bytes: 2000, frame_timeout: 400ms")
    eng = await start_engine(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", {"c": chan})
    src = source(eng)
    try:
        good = await Client.connect(src.port)
        assert msa(await good.send(adt("G1")))[0] == "AA"

        # not MLLP at all: closed at once
        http = await Client.connect(src.port)
        http.writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await http.closed()

        # garbage between frames (after a good frame) is discarded; the next frame is answered
        c = await Client.connect(src.port)
        assert msa(await c.send(adt("B1")))[0] == "AA"
        c.writer.write(b"\x00junk\x1c\r")
        assert msa(await c.send(adt("B2")))[:2] == ["AA", "B2"]

        # a frame too large: AR with its control id (read from its head), the connection goes on
        big = adt("BIG1") + b"NTE|1||" + b"x" * 5000 + b"\r"
        ack = await c.send(big)
        assert msa(ack)[:2] == ["AR", "BIG1"] and "larger than 2000 bytes" in ack.decode()
        assert msa(await c.send(adt("B3")))[:2] == ["AA", "B3"]

        # unparseable but with a recoverable MSH → AR; stored as rejected with the reason
        broken = adt("U1") + b"this line is not a segment\r"
        ack = await c.send(broken)
        assert msa(ack)[:2] == ["AR", "U1"] and "100^" in segment(ack, "ERR")
        # nothing recoverable at all → the connection is closed
        c.writer.write(frame(b"Dear lab, please find attached"))
        assert await c.closed()

        # a frame that never ends: AR when the frame_timeout passes, then closed
        n = await Client.connect(src.port)
        n.writer.write(b"\x0b" + adt("NE1")[:90])
        ack = await n.read(timeout=5)
        assert msa(ack)[:2] == ["AR", "NE1"] and "did not end within 0.4s" in ack.decode()
        assert await n.closed()

        # a start block inside an unfinished frame: AR for the abandoned one, the new one is taken
        c2 = await Client.connect(src.port)
        c2.writer.write(b"\x0b" + adt("H1")[:90])
        acks = [await c2.send(adt("H2")), await c2.read()]
        assert [msa(a)[:2] for a in acks] == [["AR", "H1"], ["AA", "H2"]]

        # through all of it the first connection was served
        assert msa(await good.send(adt("G2")))[:2] == ["AA", "G2"]
        counts = src.counts
        assert counts["garbage"] == 2 and counts["too_large"] == 1 and counts["unterminated"] == 2
        assert counts["unparseable"] == 2 and counts["unanswerable"] == 1
        from hub.metrics import MLLP_PROBLEMS

        assert MLLP_PROBLEMS.labels("c", "too_large")._value.get() >= 1  # also exported to Prometheus
        stored = {r["control_id"]: r for r in eng.store.search(SearchQuery(channel="c", limit=100))}
        assert stored["U1"]["status"] == "rejected" and "segment" in stored["U1"]["error"]
        assert "BIG1" not in stored and "NE1" not in stored  # never complete: never stored
        # logged without payload
        text = caplog.text
        for secret in ("SAMPLE", "Dear lab", "junk", "MRN1"):
            assert secret not in text
        for cl in (good, c2):
            cl.close()
    finally:
        await eng.stop()


async def test_idle_timeout_allow_list_and_connection_limit(tmp_path):
    chan = mllp_channel("idle_timeout: 300ms, max_connections: 2, allow: [127.0.0.1/32]")
    eng = await start_engine(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", {"c": chan})
    src = source(eng)
    try:
        a = await Client.connect(src.port)
        assert msa(await a.send(adt("I1")))[0] == "AA"
        b = await Client.connect(src.port)
        c = await Client.connect(src.port)  # the third: refused
        assert await c.closed(timeout=2)
        assert await a.closed(timeout=3) and await b.closed(timeout=3)  # idle: closed
        assert src.counts["idle_closed"] == 2 and src.counts["refused"] == 1
    finally:
        await eng.stop()
    chan = mllp_channel("allow: [10.9.8.0/24]")
    eng = await start_engine(tmp_path, f"sqlite:///{tmp_path / 'hub2.db'}", {"c": chan})
    try:
        d = await Client.connect(source(eng).port)
        assert await d.closed(timeout=2)
        assert source(eng).counts["refused"] == 1
    finally:
        await eng.stop()


async def test_peer_state_counts_the_connected_peers_as_the_gauge_does(tmp_path):
    eng = await start_engine(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", {"c": mllp_channel()})
    src = source(eng)

    def gauge() -> float | None:
        return metrics.REGISTRY.get_sample_value("hub_mllp_connections", {"channel": "c", "endpoint": "source"})

    try:
        assert isinstance(src, ReportsPeer) and src.peer_state() == {"mllp": {"source": 0}}
        a, b = await Client.connect(src.port), await Client.connect(src.port)
        assert msa(await a.send(adt("S1")))[0] == "AA" and msa(await b.send(adt("S2")))[0] == "AA"
        assert src.peer_state() == {"mllp": {"source": 2}} and gauge() == 2
        a.close()
        await until(lambda: src.peer_state() == {"mllp": {"source": 1}})
        assert gauge() == 1
        b.close()
        await until(lambda: src.peer_state() == {"mllp": {"source": 0}})
        assert gauge() == 0
    finally:
        await eng.stop()


async def test_duplicates_within_the_window_are_answered_alike_and_stored_once(tmp_path):
    chan = mllp_channel("dedup_window: 10m")
    eng = await start_engine(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", {"c": chan})
    try:
        c1, c2 = await Client.connect(source(eng).port), await Client.connect(source(eng).port)
        assert msa(await c1.send(adt("DUP1")))[:2] == ["AA", "DUP1"]
        assert msa(await c2.send(adt("DUP1")))[:2] == ["AA", "DUP1"]  # the same again (e.g. our AA was lost)
        bad = adt("DUP2").replace(b"|P|2.5.1", b"|P|")
        assert msa(await c1.send(bad))[0] == "AR" and msa(await c1.send(bad))[0] == "AR"
        # concurrent copies: one is stored, both are answered
        answers = await asyncio.gather(c1.send(adt("DUP3")), c2.send(adt("DUP3")))
        assert [msa(a)[:2] for a in answers] == [["AA", "DUP3"], ["AA", "DUP3"]]
        # another sender may use the same control id
        assert msa(await c1.send(adt("DUP1", app="OTHER")))[0] == "AA"
        rows = eng.store.search(SearchQuery(channel="c", limit=100))
        assert sorted(r["control_id"] for r in rows) == ["DUP1", "DUP1", "DUP2", "DUP3"]
        assert source(eng).counts["duplicates"] == 3
        out = eng.destinations[("c", "out")]
        await until(lambda: len(out.sent) == 3)
        await asyncio.sleep(0.2)
        assert len(out.sent) == 3  # delivered once each
        c1.close(), c2.close()
    finally:
        await eng.stop()


async def test_charset_from_msh18_is_kept_and_the_ack_uses_it(tmp_path):
    eng = await start_engine(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", {"c": mllp_channel()})
    try:
        c = await Client.connect(source(eng).port)
        latin = adt("L1", extra_msh="||||||8859/1").replace(b"SAMPLE^PAT", "MÜLLER^JOSÉ".encode("latin-1"))
        ack = await c.send(latin)
        assert msa(ack)[:2] == ["AA", "L1"] and segment(ack, "MSH").endswith("|8859/1")
        row = eng.store.search(SearchQuery(control_id="L1"))[0]
        assert eng.store.get_message(row["id"])["raw"] == latin
        # UTF-8 declared: the ACK echoes it
        utf = adt("U8", extra_msh="||||||UNICODE UTF-8").replace(b"SAMPLE^PAT", "ŁUKASZ^ZOË".encode())
        assert segment(await c.send(utf), "MSH").endswith("|UNICODE UTF-8")
        c.close()
    finally:
        await eng.stop()


async def test_a_batch_in_one_frame_gets_a_batch_of_acks(tmp_path, clinic):
    eng = await start_engine(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", {"c": mllp_channel()})
    try:
        c = await Client.connect(source(eng).port)
        batch = (clinic / "tests/samples/hl7v2/batch_fhs_bhs.hl7").read_bytes()
        ack = await c.send(normalise_segments(batch))
        assert ack.startswith(b"BHS|") and ack.rstrip(b"\r").endswith(b"BTS|3")
        codes = [seg.split(b"|")[1:3] for seg in ack.split(b"\r") if seg.startswith(b"MSA")]
        assert codes == [[b"AA", b"BAT00001"], [b"AA", b"BAT00002"], [b"AA", b"BAT00003"]]
        c.close()
    finally:
        await eng.stop()


async def test_stop_closes_connections_and_is_idempotent(tmp_path):
    eng = await start_engine(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", {"c": mllp_channel()})
    src = source(eng)
    c = await Client.connect(src.port)
    assert msa(await c.send(adt("S1")))[0] == "AA"
    await eng.stop()
    assert await c.closed(timeout=3)
    await src.stop()
    with pytest.raises(OSError):
        await Client.connect(src.port)


@pytest.mark.slow  # the whole example clinic
async def test_example_clinic_takes_pm_messages_over_mllp_and_queues_lab_orders_for_an_absent_lab(clinic, monkeypatch):
    """`make run` on a machine without partners: the listeners answer, outbound MLLP queues and retries."""
    from test_mllp_support import Peer

    from hub.engine import Engine
    from hub.spec import load_config

    closed = await Peer().start()
    lab_port = closed.port
    await closed.stop()  # nobody listens there: the lab is absent
    import socket

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    monkeypatch.setenv("PM_MLLP_LISTEN", f"127.0.0.1:{free_port()}")  # not 2575/2576: a hub may be running here
    monkeypatch.setenv("LAB_RESULTS_MLLP_LISTEN", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("CHARGES_MLLP_LISTEN", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("LAB_ORDERS_MLLP_ADDRESS", f"127.0.0.1:{lab_port}")
    cfg = load_config(clinic / "config")
    assert not cfg.problems
    eng = Engine(cfg, idle_poll=0.05)
    await eng.start()
    try:
        pm = await Client.connect(eng.sources["pm_mllp"].port)
        a04 = normalise_segments((clinic / "tests/samples/hl7v2/adt_a04.hl7").read_bytes())
        assert msa(await pm.send(a04))[:2] == ["CA", "ADT00002"]  # the sample asks for enhanced mode
        s12 = normalise_segments((clinic / "tests/samples/hl7v2/siu_s12.hl7").read_bytes())
        assert msa(await pm.send(s12))[:2] == ["CA", "SIU00001"]
        pm.close()
        out = clinic / "var/outbox"  # files are named <control id>_<message id>.hl7
        await until(lambda: any(out.glob("ehr/ADT00002_*.hl7")) and any(out.glob("scheduling/SIU00001_*.hl7")))
        assert b"|EHR|" in next(out.glob("ehr/ADT00002_*.hl7")).read_bytes()
        await until(lambda: any(out.glob("lab/ADT00002_*.hl7")))  # via the lab_patient_feed channel

        lab = await Client.connect(eng.sources["lab_results"].port)
        oru = normalise_segments((clinic / "tests/samples/hl7v2/oru_r01.hl7").read_bytes())
        assert msa(await lab.send(oru))[:2] == ["CA", "ORU00001"]
        lab.close()

        orders = clinic / "var/inbox/orders"
        orders.mkdir(parents=True, exist_ok=True)
        (orders / "o1.hl7").write_bytes((clinic / "tests/samples/hl7v2/orm_o01.hl7").read_bytes())
        row = None

        def queued():
            nonlocal row
            rows = eng.store.search(SearchQuery(channel="lab_orders"))
            row = rows[0] if rows else None
            return row is not None and eng.store.delivery_states(row["id"]).count("retry") == 1

        await until(queued, timeout=15)
        d = {x["destination"]: x for x in eng.store.get_message(row["id"])["deliveries"]}
        assert d["lab"]["status"] == "retry" and "cannot connect" in d["lab"]["last_error"]
    finally:
        await eng.stop()


def test_hub_check_reports_bad_mllp_settings_and_a_port_used_twice(tmp_path):
    from hub.engine import check
    from hub.spec import load_config
    from support import write_config

    hub = "store: {url: 'sqlite:///hub.db'}\nweb: {enabled: false}\n"
    one = (
        "name: one\nsource: {type: mllp, listen: '127.0.0.1:2575'}\nroutes: [{name: r, to: [d]}]\n"
        "destinations:\n  d: {type: mllp, address: '127.0.0.1:2600'}\n"
    )
    two = "name: two\nsource:\n  type: mllp\n  listen: '127.0.0.1:2575'\n  ack: later\n"
    three = (
        "name: three\nsource: {type: mllp, listen: '127.0.0.1:2577'}\nroutes: [{name: r, to: [d]}]\n"
        "destinations:\n  d:\n    type: mllp\n    address: nowhere\n    on_ar: shrug\n"
    )
    four = "name: four\nsource: {type: mllp, listen: '127.0.0.1:2575'}\n"
    cfg = load_config(write_config(tmp_path / "cfg", hub, {"one": one, "two": two, "three": three, "four": four}))
    problems = [str(p) for p in check(cfg)]
    assert any(
        p.endswith("two.yaml:5: source.ack: Input should be 'after_store' or 'after_delivery'") for p in problems
    ), problems
    assert any("three.yaml:7: destinations.d.address" in p for p in problems), problems
    assert any("three.yaml:8: destinations.d.on_ar" in p for p in problems), problems
    assert any("one.yaml:2: source.listen 127.0.0.1:2575 is already used by channel four" in p for p in problems), (
        problems
    )
