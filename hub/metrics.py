"""Every Prometheus metric of the hub, defined once (DESIGN.md §6.7).

Labels are bounded: ``channel`` and ``destination`` are names from the config files, ``outcome`` is one of a
handful of words, ``operation`` one of a few store operations, ``endpoint`` is ``source`` or a destination name.
Never a message id, a control id, a peer address or any content.

The hot path calls :func:`count_received` (per input, in ``Channel.receive``) and :func:`count_delivery` (per
marked batch, in the delivery worker); both cache their label children, so each costs a dict lookup and an
increment. Queue depth, dead letters and the oldest queued age are not counted here: :class:`QueueCollector`
reads them from the store when Prometheus scrapes (cached for two seconds), so they are right after a restart
and across several nodes sharing one store.

Store-wide or per node — what to aggregate over the ``instance`` label when several nodes share one store:

* **store-wide** (every node reports the same value, read from the shared store): ``hub_queue_depth``,
  ``hub_queue_retrying``, ``hub_dead_letters``, ``hub_queue_oldest_age_seconds``. Aggregate them with ``max by
  (channel, destination)``, never ``sum`` (two nodes would double the queue). ``hub_store_up`` is per node (this
  node's read of the store worked): ``min`` or ``max`` by instance.
* **per node** (what this process did): the counters ``hub_messages_received_total``, ``hub_messages_total``,
  ``hub_deliveries_total``, ``hub_store_errors_total``, ``hub_mllp_problems_total``, ``hub_sftp_poll_errors_total``,
  ``hub_web_logins_total``, ``hub_alert_notifications_total`` and the histograms ``hub_ingest_seconds``,
  ``hub_delivery_latency_seconds``: ``sum`` their rates over instances. The gauges ``hub_mllp_connections`` and
  ``hub_channel_running`` are per node too (``max`` asks "does any node …", ``min`` "does every node …"), and
  ``hub_sftp_last_poll_success_timestamp_seconds`` is per node (only the lease holder polls: take the ``max``).
  ``hub_store_size_bytes`` and ``hub_store_over_max_size`` are set by each node's retention run on the shared
  store: take the ``max``.

Set by connector modules (each imports the gauge from here)::

    MLLP_CONNECTIONS.labels(channel, endpoint).inc() / .dec()   # endpoint: "source" or the destination name
    SFTP_LAST_POLL.labels(channel).set_to_current_time()         # after a poll that reached the server (0 from start)
    SFTP_POLL_ERRORS.labels(channel).inc()                       # a poll that failed
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "REGISTRY",
    "MESSAGES_RECEIVED",
    "MESSAGES",
    "INGEST_SECONDS",
    "DELIVERIES",
    "DELIVERY_SECONDS",
    "STORE_ERRORS",
    "MLLP_CONNECTIONS",
    "MLLP_PROBLEMS",
    "SFTP_LAST_POLL",
    "SFTP_POLL_ERRORS",
    "WEB_LOGINS",
    "ALERT_NOTIFICATIONS",
    "QueueCollector",
    "count_received",
    "count_delivery",
    "count_store_error",
    "count_notification",
    "touch_channel",
    "render",
    "CONTENT_TYPE_LATEST",
    "METRIC_NAMES",
]

log = logging.getLogger("hub.metrics")

#: The hub's own registry (not the client's global one): what /metrics serves, nothing imported by accident.
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_DELIVERY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

MESSAGES_RECEIVED = Counter(
    "hub_messages_received",
    "Messages received by a channel (after splitting batches), whatever their outcome.",
    ["channel"],
    registry=REGISTRY,
)
MESSAGES = Counter(
    "hub_messages",
    "Messages by outcome: accepted (stored and routed), filtered, rejected (bad input), error (could not be stored).",
    ["channel", "outcome"],
    registry=REGISTRY,
)
INGEST_SECONDS = Histogram(
    "hub_ingest_seconds",
    "Time from an input reaching Channel.receive to its store commit (what the peer waits for its answer).",
    ["channel"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "hub_deliveries",
    "Delivery attempts by outcome: sent, retry (failed, will try again), dead (gave up: waits for a person).",
    ["channel", "destination", "outcome"],
    registry=REGISTRY,
)
DELIVERY_SECONDS = Histogram(
    "hub_delivery_latency_seconds",
    "Time from a message's receipt to its successful delivery to a destination (queueing and retries included).",
    ["channel", "destination"],
    buckets=_DELIVERY_BUCKETS,
    registry=REGISTRY,
)
STORE_ERRORS = Counter(
    "hub_store_errors", "Store operations that failed (accept, claim, mark, read).", ["operation"], registry=REGISTRY
)
MLLP_CONNECTIONS = Gauge(
    "hub_mllp_connections",
    "Open MLLP connections: endpoint=source counts peers connected to a channel's listener, "
    "endpoint=<destination> the hub's own connection to that peer (0 or 1).",
    ["channel", "endpoint"],
    registry=REGISTRY,
)
MLLP_PROBLEMS = Counter(
    "hub_mllp_problems",
    "Input an MLLP listener could not take as sent: reason = refused (allow-list, too many connections), tls_failed, "
    "garbage (bytes between frames), too_large, unterminated, unparseable, unanswerable, connection_errors, "
    "internal_errors.",
    ["channel", "reason"],
    registry=REGISTRY,
)
SFTP_LAST_POLL = Gauge(
    "hub_sftp_last_poll_success_timestamp_seconds",
    "Unix time of an SFTP source's last poll that reached its server (0 from the channel's start until one does).",
    ["channel"],
    registry=REGISTRY,
)
SFTP_POLL_ERRORS = Counter(
    "hub_sftp_poll_errors",
    "SFTP source polls that failed (server unreachable, login refused, key file missing, folder unreadable).",
    ["channel"],
    registry=REGISTRY,
)
WEB_LOGINS = Counter(
    "hub_web_logins", "Dashboard logins by outcome: ok, failed, locked.", ["outcome"], registry=REGISTRY
)
STORE_SIZE = Gauge(
    "hub_store_size_bytes",
    "The store's size as retention.max_size counts it (SQLite: pages in use; PostgreSQL: live data), measured by "
    "this node's last retention run with max_size set.",
    registry=REGISTRY,
)
STORE_OVER_MAX_SIZE = Gauge(
    "hub_store_over_max_size",
    "1 when this node's last retention run left the store bigger than retention.max_size: only messages with "
    "undelivered deliveries (queued, sending, retrying, dead) were left to prune.",
    registry=REGISTRY,
)
ALERT_NOTIFICATIONS = Counter(
    "hub_alert_notifications",
    "Notifications the hub itself sent (alerts: in hub.yaml) by receiver (webhook, email) and outcome (sent, failed).",
    ["receiver", "outcome"],
    registry=REGISTRY,
)

# Hot-path caches of label children: .labels() parses its arguments on every call; a dict lookup does not.
_received: dict[str, Any] = {}
_outcomes: dict[tuple[str, str], Any] = {}
_ingest: dict[str, Any] = {}
_deliveries: dict[tuple[str, str, str], Any] = {}
_delivery_latency: dict[tuple[str, str], Any] = {}


def touch_channel(channel: str, destinations: Iterable[str] = ()) -> None:
    """Create a channel's series at zero, so a channel that has received nothing yet reads 0, not absent
    (the 'silent channel' alert needs the series to exist)."""
    MESSAGES_RECEIVED.labels(channel)
    for outcome in ("accepted", "filtered", "rejected", "error"):
        MESSAGES.labels(channel, outcome)
    for d in destinations:
        for outcome in ("sent", "retry", "dead"):
            DELIVERIES.labels(channel, d, outcome)


def count_received(channel: str, outcomes: Iterable[str], seconds: float) -> None:
    """One input of ``channel`` was answered: the outcome of each of its messages, and the time it took."""
    n = 0
    for outcome in outcomes:
        n += 1
        child = _outcomes.get((channel, outcome))
        if child is None:
            child = _outcomes[(channel, outcome)] = MESSAGES.labels(channel, outcome)
        child.inc()
    rec = _received.get(channel)
    if rec is None:
        rec = _received[channel] = MESSAGES_RECEIVED.labels(channel)
        _ingest[channel] = INGEST_SECONDS.labels(channel)
    rec.inc(n)
    _ingest[channel].observe(seconds)


def count_delivery(channel: str, destination: str, outcome: str, since_received: float | None = None) -> None:
    """One delivery attempt was recorded (sent, retry or dead); for ``sent``, its end-to-end latency."""
    key = (channel, destination, outcome)
    child = _deliveries.get(key)
    if child is None:
        child = _deliveries[key] = DELIVERIES.labels(channel, destination, outcome)
    child.inc()
    if outcome == "sent" and since_received is not None:
        h = _delivery_latency.get((channel, destination))
        if h is None:
            h = _delivery_latency[(channel, destination)] = DELIVERY_SECONDS.labels(channel, destination)
        h.observe(max(0.0, since_received))


def count_store_error(operation: str) -> None:
    STORE_ERRORS.labels(operation).inc()


def count_notification(receiver: str, outcome: str) -> None:
    """One notification of hub.channels.notify went to ``receiver`` (webhook, email): ``sent`` or ``failed``."""
    ALERT_NOTIFICATIONS.labels(receiver, outcome).inc()


class QueueCollector(Collector):
    """Queue gauges read from the store at scrape time (cached ``ttl`` seconds).

    ``read`` returns rows of ``(channel, destination, status, count, oldest_created_at)`` for the statuses
    queued, retry, sending and dead; ``running`` (optional) returns channel → 1 running / 0 paused;
    ``known`` (optional) the (channel, destination) pairs to report even when nothing waits (as 0).
    """

    def __init__(
        self,
        read: Callable[[], list[tuple[str, str, str, int, float | None]]],
        running: Callable[[], dict[str, int]] | None = None,
        ttl: float = 2.0,
        known: Callable[[], Iterable[tuple[str, str]]] | None = None,
    ) -> None:
        self.read = read
        self.running = running
        self.known = known
        self.ttl = ttl
        self._lock = threading.Lock()
        self._at = 0.0
        self._rows: list[tuple[str, str, str, int, float | None]] = []
        self._up = 1

    def describe(self) -> list[Metric]:
        return []  # collected lazily: no store query when the registry is built

    def _snapshot(self) -> tuple[list[tuple[str, str, str, int, float | None]], int]:
        with self._lock:
            now = time.monotonic()
            if now - self._at >= self.ttl:
                try:
                    self._rows = self.read()
                    self._up = 1
                except Exception as exc:
                    count_store_error("read")
                    log.warning("metrics: cannot read queue depths from the store: %s", exc)
                    self._up = 0
                self._at = now
            return self._rows, self._up

    def collect(self) -> Iterable[Metric]:
        rows, up = self._snapshot()
        now = time.time()
        depth = GaugeMetricFamily(
            "hub_queue_depth",
            "Deliveries waiting to be sent (queued, retrying or being sent).",
            labels=["channel", "destination"],
        )
        retrying = GaugeMetricFamily(
            "hub_queue_retrying", "Deliveries waiting for a retry after a failure.", labels=["channel", "destination"]
        )
        dead = GaugeMetricFamily(
            "hub_dead_letters",
            "Dead deliveries: kept, waiting for a person to replay them.",
            labels=["channel", "destination"],
        )
        oldest = GaugeMetricFamily(
            "hub_queue_oldest_age_seconds",
            "Age of the oldest delivery still waiting (0 when none).",
            labels=["channel", "destination"],
        )
        acc: dict[tuple[str, str], dict[str, Any]] = {}
        for pair in self.known() if self.known is not None else ():
            acc[pair] = {"pending": 0, "retry": 0, "dead": 0, "oldest": None}
        for ch, dest, status, n, first in rows:
            a = acc.setdefault((ch, dest), {"pending": 0, "retry": 0, "dead": 0, "oldest": None})
            if status == "dead":
                a["dead"] += n
                continue
            a["pending"] += n
            if status == "retry":
                a["retry"] += n
            if first is not None and (a["oldest"] is None or first < a["oldest"]):
                a["oldest"] = first
        for (ch, dest), a in sorted(acc.items()):
            depth.add_metric([ch, dest], a["pending"])
            retrying.add_metric([ch, dest], a["retry"])
            dead.add_metric([ch, dest], a["dead"])
            oldest.add_metric([ch, dest], max(0.0, now - a["oldest"]) if a["oldest"] is not None else 0.0)
        yield depth
        yield retrying
        yield dead
        yield oldest
        store_up = GaugeMetricFamily("hub_store_up", "1 when the last read of the store for these gauges worked.")
        store_up.add_metric([], up)
        yield store_up
        if self.running is not None:
            running = GaugeMetricFamily(
                "hub_channel_running", "1 when a channel's source is running, 0 when paused.", labels=["channel"]
            )
            for ch, v in sorted(self.running().items()):
                running.add_metric([ch], v)
            yield running


#: Names of every series the hub exposes (without _total/_bucket suffixes), for checking alert rules.
METRIC_NAMES = frozenset(
    {
        "hub_messages_received_total",
        "hub_messages_total",
        "hub_ingest_seconds",
        "hub_deliveries_total",
        "hub_delivery_latency_seconds",
        "hub_store_errors_total",
        "hub_mllp_connections",
        "hub_mllp_problems_total",
        "hub_sftp_last_poll_success_timestamp_seconds",
        "hub_sftp_poll_errors_total",
        "hub_web_logins_total",
        "hub_alert_notifications_total",
        "hub_queue_depth",
        "hub_queue_retrying",
        "hub_dead_letters",
        "hub_queue_oldest_age_seconds",
        "hub_store_up",
        "hub_channel_running",
        "hub_store_size_bytes",
        "hub_store_over_max_size",
    }
)


def render() -> bytes:
    """The text exposition of :data:`REGISTRY` (what /metrics returns)."""
    return generate_latest(REGISTRY)
