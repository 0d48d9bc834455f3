"""The hub's own notifications (``alerts:`` in hub.yaml, hub.channels.notify) through a running Engine: a real HTTP
server receives the webhook for dead letters, grouped and rate-limited, and for a failed or paused channel; a real
SMTP server (aiosmtpd) receives the email; no message content is in either; a failing receiver is counted and
retried without harming the engine; with two nodes on one store only the lease holder sends."""

from __future__ import annotations

import email
import socket

import pytest
from pydantic import ValidationError

from hub.channels.notify import DEAD_CURSOR, LEASE, SENT_CURSOR, Notifier
from hub.engine import Engine
from hub.metrics import ALERT_NOTIFICATIONS
from hub.spec import AlertsSpec, load_config
from hub.store import Store
from support import WebhookReceiver, until, write_config

SECRET = "DOE^JANE-SECRET-CONTENT"  # in every message: must never appear in a notification


class Hooks(WebhookReceiver):
    """The notifier's webhook, at /hook."""

    @property
    def url(self) -> str:
        return self.base_url + "/hook"


@pytest.fixture
def hooks():
    h = Hooks()
    yield h
    h.close()


def hub_yaml(url: str, alerts: str) -> str:
    return f"store: {{url: '{url}'}}\nweb: {{enabled: false}}\nalerts: {alerts}\n"


CHANNEL = """
name: c
source: {type: memory, format: raw}
routes:
  - {name: all, to: [out]}
destinations:
  out: {type: memory, fail: permanent, fail_times: 1000000}
"""


async def start(tmp_path, store_url: str, alerts: str, channels: dict[str, str] | None = None) -> Engine:
    cfg = load_config(write_config(tmp_path / "cfg", hub_yaml(store_url, alerts), channels or {"c": CHANNEL}))
    eng = Engine(cfg, idle_poll=0.05)
    await eng.start()
    assert eng.notifier is not None
    # The tests look themselves, when they choose: the schedule's own first look (run at start) could otherwise come
    # late — after a test made its dead letters — and notify them first.
    await eng.notifier.stop()
    eng.notifier.settle = 0.0  # read dead letters up to now (the test waits for them to be committed)
    await eng.notifier.check()  # the first look: nothing to tell yet
    return eng


async def dead(eng: Engine, n: int) -> list[int]:
    """Push n messages that go dead at once; their message ids once all are dead."""
    src = eng.sources["c"]
    ids = [(await src.push(f"MSG {i} {SECRET}".encode())).results[0].message_id for i in range(n)]
    assert eng.store is not None
    store = eng.store
    await until(lambda: all(store.delivery_states(m) == ["dead"] for m in ids), what="deliveries dead")
    return ids


def counted(receiver: str, outcome: str) -> float:
    return ALERT_NOTIFICATIONS.labels(receiver, outcome)._value.get()


async def test_dead_letters_make_one_webhook_grouped_and_rate_limited(tmp_path, store_url, hooks):
    alerts = (
        f"{{webhook: {{url: '{hooks.url}', headers: {{Authorization: 'Bearer t0k'}}}}, check: 1h, min_interval: 1h, "
        "dashboard: 'https://hub.clinic.example/'}"
    )
    eng = await start(tmp_path, store_url, alerts)
    try:
        assert hooks.received == []
        sent_before = counted("webhook", "sent")
        first = await dead(eng, 5)
        note = await eng.notifier.check()
        assert note is not None and len(hooks.received) == 1  # five dead letters: one notification
        headers, body = hooks.received[0]
        assert headers["Authorization"] == "Bearer t0k" and headers["Content-Type"] == "application/json"
        (event,) = body["events"]
        assert event["event"] == "dead_letter" and (event["channel"], event["destination"]) == ("c", "out")
        assert event["count"] == 5 and event["message_ids"] == first
        assert event["link"] == "https://hub.clinic.example/dead-letters"
        assert event["message_links"][0] == f"https://hub.clinic.example/messages/{first[0]}"
        assert body["summary"] == "hub: 5 dead letters" and "c/out: 5 deliveries went dead" in body["text"]
        assert counted("webhook", "sent") == sent_before + 1

        # within min_interval: more dead letters wait (in the store) and are grouped into the next notification
        second = await dead(eng, 3)
        assert await eng.notifier.check() is None and len(hooks.received) == 1
        third = await dead(eng, 2)
        assert await eng.notifier.check() is None and len(hooks.received) == 1
        assert eng.store is not None
        eng.store.set_cursor(SENT_CURSOR, "0")  # as if the interval had passed
        assert await eng.notifier.check() is not None and len(hooks.received) == 2
        (event,) = hooks.received[1][1]["events"]
        assert event["count"] == 5 and event["message_ids"] == second + third
        # nothing new: nothing sent
        eng.store.set_cursor(SENT_CURSOR, "0")
        assert await eng.notifier.check() is None and len(hooks.received) == 2
        assert all(SECRET.encode() not in raw and b"MSG " not in raw for raw in hooks.raw)
    finally:
        await eng.stop()


async def test_a_failed_and_a_paused_channel_are_notified_once_each(tmp_path, hooks):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    lab = f"""
name: lab
source: {{type: mllp, listen: '127.0.0.1:{port}'}}
routes:
  - {{name: all, to: [out]}}
destinations:
  out: {{type: memory}}
"""
    alerts = f"{{webhook: {{url: '{hooks.url}'}}, check: 1h, min_interval: 0s}}"
    try:
        eng = await start(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", alerts, {"c": CHANNEL, "lab": lab})
    finally:
        taken.close()
    try:
        assert eng.channel_state("lab") == "failed"
        await until(lambda: len(hooks.received) >= 1, what="the failed channel's webhook")
        events = hooks.received[0][1]["events"]
        assert [(e["event"], e["channel"]) for e in events] == [("channel_failed", "lab")]
        assert events[0]["reason"] and hooks.received[0][1]["summary"] == "hub: channel lab failed"
        # still failed: not told again
        assert await eng.notifier.check() is None and len(hooks.received) == 1
        await eng.pause("c")
        assert await eng.notifier.check() is not None
        assert [(e["event"], e["channel"]) for e in hooks.received[1][1]["events"]] == [("channel_stopped", "c")]
        assert await eng.notifier.check() is None
        await eng.resume("c")
        assert await eng.notifier.check() is None  # running again is not an alert
    finally:
        await eng.stop()


async def test_a_failing_webhook_is_counted_logged_and_tried_again_without_harm(tmp_path, caplog):
    hooks = Hooks(statuses=[500])
    alerts = f"{{webhook: {{url: '{hooks.url}'}}, check: 1h, min_interval: 1h}}"
    eng = await start(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", alerts)
    try:
        failed, sent = counted("webhook", "failed"), counted("webhook", "sent")
        ids = await dead(eng, 2)
        assert await eng.notifier.check() is None  # HTTP 500: nothing taken, the cursors did not move
        assert counted("webhook", "failed") == failed + 1 and hooks.received == []
        assert "webhook receiver failed: HTTP 500" in caplog.text and SECRET not in caplog.text
        assert await eng.notifier.check() is not None  # tried again at the next check (not rate-limited)
        assert hooks.received[0][1]["events"][0]["message_ids"] == ids
        assert counted("webhook", "sent") == sent + 1
        # a receiver that is not there at all
        eng.notifier.spec.webhook.url = "http://127.0.0.1:9/nothing-listens"  # type: ignore[union-attr]
        eng.store.set_cursor(SENT_CURSOR, "0")
        await dead(eng, 1)
        assert await eng.notifier.check() is None and counted("webhook", "failed") == failed + 2
        assert eng.channel_state("c") == "running"  # the engine is unharmed
    finally:
        await eng.stop()
        hooks.close()


async def test_the_notification_is_emailed_through_a_real_smtp_server(tmp_path):
    from aiosmtpd.controller import Controller

    class Mailbox:
        def __init__(self) -> None:
            self.mails: list[tuple[list[str], bytes]] = []

        async def handle_DATA(self, server, session, envelope):
            self.mails.append((list(envelope.rcpt_tos), envelope.content))
            return "250 OK"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    box = Mailbox()
    smtp = Controller(box, hostname="127.0.0.1", port=port)
    smtp.start()
    alerts = (
        f"{{email: {{smtp: '127.0.0.1:{port}', from: hub@clinic.example,"
        " to: [it@clinic.example, oncall@clinic.example], starttls: false},"
        " check: 1h, min_interval: 1h, dashboard: 'https://hub.clinic.example'}"
    )
    eng = await start(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", alerts)
    try:
        sent = counted("email", "sent")
        ids = await dead(eng, 3)
        assert await eng.notifier.check() is not None
        assert len(box.mails) == 1 and counted("email", "sent") == sent + 1
        rcpt, raw = box.mails[0]
        assert rcpt == ["it@clinic.example", "oncall@clinic.example"] and SECRET.encode() not in raw
        mail = email.message_from_bytes(raw)
        assert mail["Subject"] == "hub: 3 dead letters" and mail["From"] == "hub@clinic.example"
        body = mail.get_payload(decode=True).decode()
        assert f"c/out: 3 deliveries went dead (messages {', '.join(map(str, ids))})" in body
        assert "https://hub.clinic.example/dead-letters" in body
    finally:
        await eng.stop()
        smtp.stop()


async def test_with_two_nodes_on_one_store_only_the_lease_holder_sends(tmp_path, store_url, hooks):
    spec = AlertsSpec.model_validate({"webhook": {"url": hooks.url}, "check": "1h", "min_interval": "0s"})
    a, b = Store(store_url, node="node-a").open(), Store(store_url, node="node-b").open()
    states = {"lab": ("failed", "cannot listen")}
    na = Notifier(spec, a, states=lambda: states, pairs=lambda: [("lab", "out")])
    nb = Notifier(spec, b, states=lambda: states, pairs=lambda: [("lab", "out")])
    try:
        assert await na.check() is not None and len(hooks.received) == 1
        assert hooks.received[0][1]["node"] == "node-a"
        assert await nb.check() is None and len(hooks.received) == 1  # node-a holds the lease
        await na.stop()  # gives the lease up (a dead node's expires)
        assert await nb.check() is not None and len(hooks.received) == 2  # takes over, tells what is still wrong
        assert hooks.received[1][1]["node"] == "node-b"
        assert await na.check() is None  # node-b holds it now
        assert a.get_cursor(DEAD_CURSOR) is not None and LEASE == "alerts"
    finally:
        await nb.stop()
        a.close()
        b.close()


def test_alerts_settings_need_a_receiver_and_sane_values():
    with pytest.raises(ValidationError, match="give a webhook, an email, or both"):
        AlertsSpec.model_validate({"events": ["dead_letter"]})
    with pytest.raises(ValidationError):
        AlertsSpec.model_validate({"webhook": {"url": "ftp://x"}})
    with pytest.raises(ValidationError):
        AlertsSpec.model_validate({"webhook": {"url": "http://x"}, "events": ["everything"]})
    with pytest.raises(ValidationError):
        AlertsSpec.model_validate({"email": {"smtp": "mail", "from": "a@b", "to": ["c@d"]}, "min_interval": "soon"})
    spec = AlertsSpec.model_validate({"email": {"smtp": "mail.example:587", "from": "a@b", "to": ["c@d"]}})
    assert spec.events == ["dead_letter", "channel_stopped", "channel_failed"] and spec.email is not None
    assert spec.email.from_ == "a@b" and spec.email.starttls is True
