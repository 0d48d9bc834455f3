"""Notifications sent by the hub itself (``alerts:`` in hub.yaml), for sites that run no Prometheus/Alertmanager.

A :class:`Notifier` looks every ``alerts.check`` at

* the store, for deliveries that went dead since the last notification (``dead_letter``): per destination, a
  count and the first ``max_ids`` message ids. It reads the store rather than hooking the delivery worker, so the
  hot path pays nothing, a dead letter marked by any node is seen, and nothing is missed across a restart (the
  point reached is kept in the store's cursor ``alerts:dead_after``);
* the channels' states (``channel_failed``: its source could not start, here or — as recorded in the store — on
  another node; ``channel_stopped``: paused), notified when a channel enters that state.

What it found goes out as **one** notification to the webhook (a JSON POST, with httpx) and/or the email receiver
(smtplib, in a thread), at most once per ``alerts.min_interval`` (the time of the last one is kept in the store's
cursor ``alerts:last_sent``): whatever happens in between is grouped into the next, so a thousand dead letters make
one notification, not a thousand. A notification names channels, destinations, counts, message ids and links to the
dashboard — never message content or patient data. When no receiver took it, it is tried again at the next check;
every attempt is counted in ``hub_alert_notifications_total{receiver, outcome}`` and a failure is logged by its
exception class. Nothing here can stop the engine: a failed check is logged and the next one runs.

With several nodes sharing a store only the holder of the store's named lease ``alerts`` checks and sends; when it
dies another takes the lease over (when it expires, ``3 × check`` but at least 30 s after its last renewal, or
sooner once the store sees the holder's heartbeat stop) and goes on from the store's cursors (a channel still
failed or paused is then reported once more).
"""

from __future__ import annotations

import asyncio
import json
import logging
import smtplib
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import httpx
from sqlalchemy import Connection, func, select

from hub.channels.schedule import Poller
from hub.metrics import count_notification
from hub.spec import AlertsSpec, parse_duration, parse_listen
from hub.store import Store
from hub.store.schema import deliveries

__all__ = [
    "Notifier",
    "Event",
    "Notification",
    "LEASE",
    "DEAD_CURSOR",
    "SENT_CURSOR",
    "AlertEvaluator",
    "RULES",
]

log = logging.getLogger("hub.notify")

LEASE = "alerts"
DEAD_CURSOR = "alerts:dead_after"
SENT_CURSOR = "alerts:last_sent"
# A delivery's updated_at is taken before its mark is committed (group commit, flushed within a second): dead
# letters are read only up to this many seconds ago, so one committed late is not skipped.
SETTLE = 2.0

#: channel → (state, reason) as the engine sees it: state is one of Engine.channel_state's words.
States = Mapping[str, tuple[str, str | None]]


@dataclass
class Event:
    """One thing to tell: ``dead_letter`` (per destination), ``channel_failed`` or ``channel_stopped``."""

    kind: str
    channel: str
    destination: str | None = None
    count: int = 1
    message_ids: list[int] = field(default_factory=list)
    reason: str | None = None

    def line(self) -> str:
        if self.kind == "dead_letter":
            ids = ", ".join(str(i) for i in self.message_ids)
            more = " …" if self.count > len(self.message_ids) else ""
            noun = "delivery" if self.count == 1 else "deliveries"
            return f"{self.channel}/{self.destination}: {self.count} {noun} went dead (messages {ids}{more})"
        if self.kind == "channel_failed":
            return f"channel {self.channel} failed to start" + (f": {self.reason}" if self.reason else "")
        return f"channel {self.channel} is stopped (paused)"


@dataclass
class Notification:
    events: list[Event]
    node: str
    dashboard: str | None = None
    at: float = field(default_factory=time.time)

    def summary(self) -> str:
        dead = sum(e.count for e in self.events if e.kind == "dead_letter")
        parts = [f"{dead} dead letter{'s' if dead != 1 else ''}"] if dead else []
        for kind, word in (("channel_failed", "failed"), ("channel_stopped", "stopped")):
            names = sorted({e.channel for e in self.events if e.kind == kind})
            if names:
                parts.append(f"channel{'s' if len(names) > 1 else ''} {', '.join(names)} {word}")
        return "hub: " + "; ".join(parts)

    def links(self, e: Event) -> dict[str, Any]:
        if not self.dashboard:
            return {}
        base = self.dashboard.rstrip("/")
        if e.kind == "dead_letter":
            return {"link": f"{base}/dead-letters", "message_links": [f"{base}/messages/{i}" for i in e.message_ids]}
        return {"link": f"{base}/"}

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON body (``text`` suits chat webhooks that show one field)."""
        events = []
        for e in self.events:
            d: dict[str, Any] = {"event": e.kind, "channel": e.channel}
            if e.kind == "dead_letter":
                d.update(destination=e.destination, count=e.count, message_ids=e.message_ids)
            elif e.reason:
                d["reason"] = e.reason
            d.update(self.links(e))
            events.append(d)
        return {
            "source": "hub",
            "node": self.node,
            "at": datetime.fromtimestamp(self.at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "summary": self.summary(),
            "text": self.text(),
            "dashboard": self.dashboard,
            "events": events,
        }

    def text(self) -> str:
        lines = [self.summary(), ""] + [f"- {e.line()}" for e in self.events]
        if self.dashboard:
            lines += ["", f"Dead letters: {self.dashboard.rstrip('/')}/dead-letters", f"Dashboard: {self.dashboard}"]
        lines += ["", f"Sent by the hub on node {self.node}; message content is never included."]
        return "\n".join(lines)


def _dead_since(
    conn: Connection, pairs: list[tuple[str, str]], after: float, upto: float, max_ids: int
) -> list[tuple[str, str, int, list[int], float]]:
    """Per (channel, destination): deliveries dead with after < updated_at <= upto — count, first message ids,
    latest updated_at. One indexed look-up per destination (ix_deliveries_queue: channel, destination, status)."""
    out = []
    for ch, dest in pairs:
        where = (
            deliveries.c.channel == ch,
            deliveries.c.destination == dest,
            deliveries.c.status == "dead",
            deliveries.c.updated_at > after,
            deliveries.c.updated_at <= upto,
        )
        n, latest = conn.execute(select(func.count(), func.max(deliveries.c.updated_at)).where(*where)).one()
        if not n:
            continue
        ids = conn.execute(
            select(deliveries.c.message_id).where(*where).order_by(deliveries.c.id).limit(max_ids)
        ).scalars()
        out.append((ch, dest, int(n), [int(i) for i in ids], float(latest)))
    return out


class Notifier:
    """Checks on a schedule and sends grouped, rate-limited notifications (see the module's docstring).

    ``states`` gives each channel's (state, reason) and is called in a thread (it may read the store); ``pairs``
    the (channel, destination) pairs whose dead letters count.
    """

    settle: float = SETTLE  # dead letters are read up to this many seconds ago

    def __init__(
        self,
        spec: AlertsSpec,
        store: Store,
        *,
        states: Callable[[], States],
        pairs: Callable[[], Iterable[tuple[str, str]]],
        node: str | None = None,
    ) -> None:
        self.spec = spec
        self.store = store
        self.states = states
        self.pairs = pairs
        self.node = node or str(getattr(store, "node", "") or "hub")
        self.check_every = parse_duration(spec.check)
        self.min_interval = parse_duration(spec.min_interval)
        self.lease_ttl = max(30.0, 3 * self.check_every)
        self._seen: dict[str, str] = {}  # channel → the state last looked at
        self._pending: list[Event] = []  # channel events waiting for the next notification
        self._poller: Poller | None = None
        self._lock = asyncio.Lock()  # one check at a time (the schedule's and kick()'s or a caller's)
        self.sent: list[Notification] = []  # what went out (the last few), for `hub status` and tests

    def start(self) -> None:
        self._poller = Poller(self.check_every, self.check, "alerts", run_first=True)
        self._poller.start()

    async def stop(self) -> None:
        if self._poller is not None:
            await self._poller.stop()
            self._poller = None
        try:
            await asyncio.to_thread(self.store.release_lease, LEASE)
        except Exception as exc:
            log.debug("alerts: cannot release the lease: %s", type(exc).__name__)

    def kick(self) -> None:
        if self._poller is not None:
            self._poller.kick()

    async def check(self) -> Notification | None:
        """One look: take the lease, gather events, send them if the interval allows. Never raises."""
        try:
            async with self._lock:
                return await self._check()
        except Exception as exc:
            log.warning("alerts: the check failed (%s); the next one runs as planned", type(exc).__name__)
            log.debug("alerts: check failure", exc_info=True)
            return None

    async def _check(self) -> Notification | None:
        store = self.store
        if not await asyncio.to_thread(store.acquire_lease, LEASE, self.lease_ttl):
            self._seen.clear()  # another node notifies; if we take over, we report what is still wrong
            return None
        self._channel_events(await asyncio.to_thread(self.states))
        now = time.time()
        dead_after_raw = await asyncio.to_thread(store.get_cursor, DEAD_CURSOR)
        if dead_after_raw is None:  # first run on this store: dead letters from before are not news
            dead_after = now - self.settle
            await asyncio.to_thread(store.set_cursor, DEAD_CURSOR, repr(dead_after))
        else:
            dead_after = float(dead_after_raw)
        last_sent_raw = await asyncio.to_thread(store.get_cursor, SENT_CURSOR)
        last_sent = float(last_sent_raw) if last_sent_raw else 0.0
        if now - last_sent < self.min_interval:
            return None  # rate-limited: events wait (channel events here, dead letters in the store)
        upto = now - self.settle
        events: list[Event] = []
        if "dead_letter" in self.spec.events and upto > dead_after:
            pairs = sorted(set(self.pairs()))
            rows = await asyncio.to_thread(
                store.run_read, lambda conn: _dead_since(conn, pairs, dead_after, upto, self.spec.max_ids)
            )
            events += [Event("dead_letter", ch, dest, n, ids) for ch, dest, n, ids, _ in rows]
        events += self._pending
        if not events:
            return None
        note = Notification(events, self.node, self.spec.dashboard, now)
        if not await self._send(note):
            return None  # tried again at the next check; the cursors did not move
        self._pending = []
        await asyncio.to_thread(store.set_cursor, SENT_CURSOR, repr(now))
        if upto > dead_after:
            await asyncio.to_thread(store.set_cursor, DEAD_CURSOR, repr(upto))
        self.sent = [*self.sent[-9:], note]
        log.info("alerts: notified %s", note.summary())
        return note

    def _channel_events(self, states: States) -> None:
        wanted = {"failed": "channel_failed", "paused": "channel_stopped"}
        for channel, (state, reason) in sorted(states.items()):
            before = self._seen.get(channel)
            self._seen[channel] = state
            kind = wanted.get(state)
            if kind is None or state == before or kind not in self.spec.events:
                continue
            if not any(e.kind == kind and e.channel == channel for e in self._pending):
                self._pending.append(Event(kind, channel, reason=reason))
        for channel in set(self._seen) - set(states):
            del self._seen[channel]

    async def _send(self, note: Notification) -> bool:
        """Send to every receiver; True when at least one took it."""
        ok = False
        if self.spec.webhook is not None:
            ok = await self._attempt("webhook", self._post(note)) or ok
        if self.spec.email is not None:
            ok = await self._attempt("email", asyncio.to_thread(self._mail, note)) or ok
        return ok

    async def _attempt(self, receiver: str, op: Awaitable[None]) -> bool:
        try:
            await op
        except Exception as exc:
            count_notification(receiver, "failed")
            log.warning("alerts: the %s receiver failed: %s", receiver, _why(exc))
            return False
        count_notification(receiver, "sent")
        return True

    async def _post(self, note: Notification) -> None:
        hook = self.spec.webhook
        assert hook is not None
        async with httpx.AsyncClient(timeout=parse_duration(hook.timeout)) as client:
            r = await client.post(
                hook.url,
                content=json.dumps(note.payload()).encode(),
                headers={"Content-Type": "application/json", **hook.headers},
            )
        r.raise_for_status()  # anything but 2xx

    def _mail(self, note: Notification) -> None:
        mail = self.spec.email
        assert mail is not None
        msg = EmailMessage()
        msg["Subject"] = note.summary()
        msg["From"] = mail.from_
        msg["To"] = ", ".join(mail.to)
        msg.set_content(note.text())
        host, port = parse_listen(mail.smtp)
        with smtplib.SMTP(host, port, timeout=parse_duration(mail.timeout)) as smtp:
            smtp.ehlo()
            if mail.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if mail.username:
                smtp.login(mail.username, mail.password or "")
            smtp.send_message(msg)


def _why(exc: BaseException) -> str:
    """An exception's class, and an HTTP status or SMTP code when it has one (never a body or a recipient)."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    code = getattr(exc, "smtp_code", None)
    return f"{type(exc).__name__}" + (f" {code}" if code else "")


# ------------------------------------------------------------------------------------------------ the hub's own rules
@dataclass(frozen=True)
class Rule:
    """One rule the hub evaluates itself (issue 17): the ``alerts.events`` of hub.yaml and the equivalents of the
    shipped Prometheus rules (monitoring/alerts.yml), read from the counters."""

    name: str
    severity: str
    hold: float = 0.0  # seconds the condition must hold before the alert fires (Prometheus' ``for:``)
    threshold: float = 0.0


#: The rules and their thresholds; a site's ``alerts.events`` limits the first three (all evaluated by default).
RULES: dict[str, Rule] = {
    "dead_letter": Rule("dead_letter", "warning"),  # HubDeadLetters: a dead delivery is waiting (until replayed)
    "channel_failed": Rule("channel_failed", "critical"),  # its source could not start (here or on another node)
    "channel_stopped": Rule("channel_stopped", "info"),  # HubChannelPaused (paused; a disabled channel is deliberate)
    "queue_backing_up": Rule("queue_backing_up", "warning", hold=600, threshold=500),  # HubQueueBackingUp
    "oldest_waiting": Rule("oldest_waiting", "critical", hold=300, threshold=900),  # HubOldestMessageTooOld
}
EVALUATE_EVERY = 30.0
EVAL_LEASE = "alerts:evaluate"

#: (rule, channel, destination or '') → (severity, summary, the message status the dashboard searches)
Conditions = dict[tuple[str, str, str], tuple[str, str, str | None]]


def conditions(status: Mapping[str, Any], states: States, events: Iterable[str], now: float) -> Conditions:
    """What holds now: each true rule condition from the store's counts (:meth:`Store.status`) and the channels'
    states, before any ``hold``."""
    out: Conditions = {}
    wanted = set(events)
    for (ch, dest), row in status["destinations"].items():
        dead = int(row.get("dead", 0))
        if dead and "dead_letter" in wanted:
            noun = "delivery is" if dead == 1 else "deliveries are"
            out[("dead_letter", ch, dest)] = ("warning", f"{ch}/{dest}: {dead} dead {noun} waiting", "dead")
        depth = sum(int(row.get(s, 0)) for s in ("queued", "retry", "sending"))
        rule = RULES["queue_backing_up"]
        if depth > rule.threshold:
            out[(rule.name, ch, dest)] = (rule.severity, f"{ch}/{dest}: {depth} deliveries waiting", "queued")
        oldest = row.get("oldest_queued")
        rule = RULES["oldest_waiting"]
        if oldest is not None and now - float(oldest) > rule.threshold:
            age = int(now - float(oldest))
            out[(rule.name, ch, dest)] = (rule.severity, f"{ch}/{dest}: the oldest delivery waits for {age} s", "retry")
    for ch, (state, reason) in states.items():
        if state == "failed" and "channel_failed" in wanted:
            out[("channel_failed", ch, "")] = (
                "critical",
                f"channel {ch} failed to start" + (f": {reason}" if reason else ""),
                None,
            )
        elif state == "paused" and "channel_stopped" in wanted:
            out[("channel_stopped", ch, "")] = ("info", f"channel {ch} is paused", None)
    return out


class AlertEvaluator:
    """Every :data:`EVALUATE_EVERY`, on the node holding the store's lease ``alerts:evaluate``: evaluate
    :data:`RULES` and record in the store (``alert_events``) the alerts that start and stop firing, so every node
    and a restarted one show the same (``GET /api/alerts``). Needs no receiver: it runs with or without ``alerts:``.
    """

    def __init__(self, store: Store, states: Callable[[], States], events: Iterable[str] | None = None) -> None:
        self.store = store
        self.states = states
        self.events = list(events) if events is not None else ["dead_letter", "channel_stopped", "channel_failed"]
        self._seen: dict[tuple[str, str, str], float] = {}  # condition → since when it holds (for ``hold``)
        self._lock = threading.Lock()  # the poller and a direct call never evaluate at once (no double firing)

    async def evaluate(self) -> tuple[int, int]:
        """One evaluation: (alerts started, alerts resolved). Never raises."""
        try:
            return await asyncio.to_thread(self._evaluate)
        except Exception as exc:
            log.warning("alert rules: not evaluated this time (%s: %s)", type(exc).__name__, exc)
            return 0, 0

    def _evaluate(self) -> tuple[int, int]:
        with self._lock:
            return self._evaluate_locked()

    def _evaluate_locked(self) -> tuple[int, int]:
        store = self.store
        if not store.acquire_lease(EVAL_LEASE, max(90.0, 3 * EVALUATE_EVERY)):
            return 0, 0
        now = time.time()
        holds = conditions(store.status(), self.states(), self.events, now)
        self._seen = {k: self._seen.get(k, now) for k in holds}
        firing, _ = store.alerts(now)
        open_keys = {a.key: a for a in firing}
        fired = []
        for key, (severity, summary, status) in holds.items():
            if key in open_keys:
                continue
            rule = RULES.get(key[0])
            if rule is not None and now - self._seen[key] < rule.hold:
                continue
            fired.append((key[0], severity, key[1], key[2] or None, summary, status))
        resolved = [a.id for k, a in open_keys.items() if k not in holds]
        if fired or resolved:
            store.record_alerts(fired, resolved)
            for f in fired:
                log.info("alert %s firing: %s", f[0], f[4])
        return len(fired), len(resolved)
