"""Per-minute rollups for the dashboard's charts, queue depth samples and the hub's own alert history (issue 17).

Migration 0009 makes the tables and the triggers that write ``rollups`` in the transaction of every write to
``messages`` and ``deliveries`` (so any write path is counted, as the counters of :mod:`hub.store.counters` are):

* messages stored, by the status they were stored with (``accepted``, ``rejected``, ``error``, ``filtered``;
  destination ''), deliveries created (``queued``), deliveries reaching ``sent``, ``dead`` or ``retry``, and the
  latency of each delivery sent (``sent_at − created_at``: from its message's accept to its send) as a histogram
  with the fixed bucket bounds :data:`BOUNDS` (metric ``lat:<ms>``, ``lat:inf`` above the last), so percentiles can
  be computed over any range, per minute (``minute``: epoch seconds of the minute's start).
* SQLite: row triggers upsert the minute's row; the single writer never waits on itself.
* PostgreSQL: **insert-only deltas**, as the counters do. Per-minute rows upserted with ``ON CONFLICT`` by the
  triggers would make every writer of a busy channel update the same row within a minute: writers on several nodes
  would queue on (and could deadlock over, with several channels in one group commit) that row's lock. So the
  statement triggers append the statement's counts to ``rollup_deltas``; :func:`fold` (run with the counters' fold,
  by the heartbeat and the readers) moves them into ``rollups``; a read sums both, so it is exact before a fold.

``queue_samples``: the depth (queued + retry + sending) of every destination's queue, sampled once a minute from the
counters by one node (:func:`sample_queues`, the engine's poller holding the store's lease ``rollups``).
``alert_events``: the hub's own alerts (:func:`open_alerts`, :func:`fire`, :func:`resolve`), firing while
``resolved_at`` is NULL. :func:`prune` keeps :data:`KEEP_ROLLUPS` of rollups and samples, :data:`KEEP_ALERTS` of
resolved alerts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from hub.store import counters

__all__ = [
    "BOUNDS",
    "KEEP_ROLLUPS",
    "KEEP_ALERTS",
    "MESSAGE_METRICS",
    "Alert",
    "fold",
    "sums",
    "minutes",
    "percentiles",
    "sample_queues",
    "queue_samples",
    "prune",
    "open_alerts",
    "recent_alerts",
    "fire",
    "resolve",
]

#: Upper bounds (ms) of the latency histogram's buckets (migration 0009 writes the same); above the last: ``inf``.
BOUNDS: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000)
KEEP_ROLLUPS = 8 * 86400.0
KEEP_ALERTS = 7 * 86400.0
#: The statuses a message is stored with: their sum is what a channel received.
MESSAGE_METRICS = ("accepted", "rejected", "error", "filtered")

_BOTH = (
    "SELECT channel, destination, minute, metric, n FROM rollups WHERE minute >= :start AND minute < :end{cond} "
    "UNION ALL SELECT channel, destination, minute, metric, n FROM rollup_deltas "
    "WHERE minute >= :start AND minute < :end{cond}"
)

_FOLD = text(
    "WITH moved AS (DELETE FROM rollup_deltas RETURNING channel, destination, minute, metric, n) "
    "INSERT INTO rollups (channel, destination, minute, metric, n) "
    "SELECT channel, destination, minute, metric, SUM(n) FROM moved GROUP BY channel, destination, minute, metric "
    "ORDER BY channel, destination, minute, metric "
    "ON CONFLICT (channel, destination, minute, metric) DO UPDATE SET n = rollups.n + excluded.n"
)
_FOLD_LOCK = 4242017  # pg advisory lock: one fold at a time across nodes; the others skip


def fold(conn: Connection) -> bool:
    """PostgreSQL: move the pending deltas into ``rollups`` (in the caller's transaction, which must commit).
    Skipped (False) on SQLite, which has no deltas, and while another node folds."""
    return counters.fold_deltas(conn, _FOLD, _FOLD_LOCK)


def _where(channel: str | None, destination: str | None) -> tuple[str, dict[str, Any]]:
    cond, params = "", {}
    if channel is not None:
        cond += " AND channel = :channel"
        params["channel"] = channel
    if destination is not None:
        cond += " AND destination = :destination"
        params["destination"] = destination
    return cond, params


def sums(
    conn: Connection, start: float, end: float, step: int, *, channel: str | None = None, destination: str | None = None
) -> dict[str, dict[int, int]]:
    """metric → {bucket start: count} over ``[start, end)`` in buckets of ``step`` seconds (``start`` a multiple of
    60): the minutes of one channel (all its destinations, and its messages), or of one of its destinations."""
    cond, params = _where(channel, destination)
    rows = conn.execute(
        text(
            f"SELECT metric, (minute - :start) / :step AS b, SUM(n) FROM ({_BOTH.format(cond=cond)}) AS u "
            "GROUP BY metric, (minute - :start) / :step"
        ),
        {**params, "start": int(start), "end": int(end), "step": int(step)},
    )
    out: dict[str, dict[int, int]] = {}
    for metric, b, n in rows:
        t = int(start) + int(b) * int(step)
        out.setdefault(str(metric), {})[t] = out.get(str(metric), {}).get(t, 0) + int(n)
    return out


def minutes(conn: Connection, start: float, end: float, metrics: Sequence[str]) -> dict[str, dict[int, int]]:
    """``(channel, metric) → {minute: count}`` over ``[start, end)``, every channel (the overview's sparklines);
    keys are ``channel + "\\0" + metric``."""
    names = ", ".join(f"'{m}'" for m in metrics if m.replace(":", "").replace("_", "").isalnum())
    rows = conn.execute(
        text(
            f"SELECT channel, metric, minute, SUM(n) FROM ({_BOTH.format(cond='')}) AS u "
            f"WHERE metric IN ({names}) GROUP BY channel, metric, minute"
        ),
        {"start": int(start), "end": int(end)},
    )
    out: dict[str, dict[int, int]] = {}
    for ch, metric, minute, n in rows:
        d = out.setdefault(f"{ch}\0{metric}", {})
        d[int(minute)] = d.get(int(minute), 0) + int(n)
    return out


def percentiles(histogram: dict[str, int], qs: Iterable[float] = (0.5, 0.9, 0.99)) -> dict[str, Any]:
    """``{"p50": ms, "p90": ms, "p99": ms, "count": n}`` from ``lat:<ms>`` counts, interpolated linearly within the
    bucket (as Prometheus' histogram_quantile does); above the last bound: that bound. None when nothing was sent."""
    counts = [histogram.get(f"lat:{b}", 0) for b in BOUNDS] + [histogram.get("lat:inf", 0)]
    total = sum(counts)
    out: dict[str, Any] = {}
    for q in qs:
        key = f"p{round(q * 100):d}"
        if not total:
            out[key] = None
            continue
        rank, seen = q * total, 0
        for i, n in enumerate(counts):
            if n and seen + n >= rank:
                if i == len(BOUNDS):
                    out[key] = float(BOUNDS[-1])
                    break
                lo = 0.0 if i == 0 else float(BOUNDS[i - 1])
                hi = float(BOUNDS[i])
                out[key] = round(lo + (hi - lo) * max(0.0, rank - seen) / n, 1)
                break
            seen += n
    out["count"] = total
    return out


_DEPTHS = (
    "SELECT channel, destination, SUM(n) FROM ("
    "SELECT channel, destination, n FROM counters WHERE status IN ('queued', 'retry', 'sending') "
    "UNION ALL SELECT channel, destination, n FROM counter_deltas WHERE status IN ('queued', 'retry', 'sending')"
    ") AS u WHERE destination <> '' GROUP BY channel, destination"
)


def sample_queues(conn: Connection, now: float | None = None) -> int:
    """Write this minute's depth of every destination's queue (from the counters; a repeated sample in the same
    minute replaces it). Returns how many queues."""
    minute = int(math.floor((time.time() if now is None else now) / 60) * 60)
    rows = [{"c": ch, "d": dest, "m": minute, "n": max(0, int(n))} for ch, dest, n in conn.execute(text(_DEPTHS))]
    if rows:
        conn.execute(
            text(
                "INSERT INTO queue_samples (channel, destination, minute, depth) VALUES (:c, :d, :m, :n) "
                "ON CONFLICT (channel, destination, minute) DO UPDATE SET depth = excluded.depth"
            ),
            rows,
        )
    return len(rows)


def queue_samples(
    conn: Connection, start: float, end: float, *, channel: str | None = None, destination: str | None = None
) -> dict[int, int]:
    """minute → the sampled depth over ``[start, end)`` (summed over a channel's destinations)."""
    cond, params = _where(channel, destination)
    rows = conn.execute(
        text(
            "SELECT minute, SUM(depth) FROM queue_samples WHERE minute >= :start AND minute < :end"
            f"{cond} GROUP BY minute"
        ),
        {**params, "start": int(start), "end": int(end)},
    )
    return {int(m): int(n) for m, n in rows}


def prune(conn: Connection, now: float | None = None) -> int:
    """Delete rollups and samples older than :data:`KEEP_ROLLUPS`, alerts resolved more than :data:`KEEP_ALERTS`
    ago. Returns how many rows."""
    now = time.time() if now is None else now
    cut = {"cut": int(now - KEEP_ROLLUPS)}
    n = 0
    for table in ("rollups", "rollup_deltas", "queue_samples"):
        n += conn.execute(text(f"DELETE FROM {table} WHERE minute < :cut"), cut).rowcount or 0
    n += (
        conn.execute(
            text("DELETE FROM alert_events WHERE resolved_at IS NOT NULL AND resolved_at < :cut"),
            {"cut": now - KEEP_ALERTS},
        ).rowcount
        or 0
    )
    return n


# ------------------------------------------------------------------------------------------------ alerts
@dataclass(frozen=True)
class Alert:
    """One alert the hub evaluated itself: firing while ``resolved_at`` is None."""

    id: int
    rule: str
    severity: str
    channel: str
    destination: str | None
    since: float
    summary: str
    status: str | None = None  # the message search the dashboard opens (``dead`` …)
    resolved_at: float | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.rule, self.channel, self.destination or "")

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "rule": self.rule,
            "severity": self.severity,
            "channel": self.channel,
            "destination": self.destination,
            "since": self.since,
            "summary": self.summary,
            "messages": {"channel": self.channel, "status": self.status}
            | ({"destination": self.destination} if self.destination else {}),
        }
        if self.resolved_at is not None:
            out["resolved_at"] = self.resolved_at
        return out


_ALERT_COLS = "id, rule, severity, channel, destination, since, summary, status, resolved_at"


def _alert(row: Any) -> Alert:
    i, rule, sev, ch, dest, since, summary, status, resolved = row
    return Alert(int(i), rule, sev, ch, dest or None, float(since), summary, status, resolved)


def open_alerts(conn: Connection) -> list[Alert]:
    """The alerts firing now, oldest first."""
    q = f"SELECT {_ALERT_COLS} FROM alert_events WHERE resolved_at IS NULL ORDER BY since, id"
    return [_alert(r) for r in conn.execute(text(q))]


def recent_alerts(conn: Connection, since: float, limit: int = 200) -> list[Alert]:
    """Alerts resolved since ``since``, newest first."""
    q = (
        f"SELECT {_ALERT_COLS} FROM alert_events WHERE resolved_at IS NOT NULL AND resolved_at >= :since "
        "ORDER BY resolved_at DESC, id DESC LIMIT :limit"
    )
    return [_alert(r) for r in conn.execute(text(q), {"since": since, "limit": limit})]


def fire(
    conn: Connection,
    rule: str,
    severity: str,
    channel: str,
    destination: str | None,
    summary: str,
    status: str | None = None,
    since: float | None = None,
) -> None:
    """Record an alert that started firing (the caller checked it is not firing already)."""
    conn.execute(
        text(
            "INSERT INTO alert_events (rule, severity, channel, destination, since, summary, status) "
            "VALUES (:rule, :sev, :ch, :dest, :since, :summary, :status)"
        ),
        {
            "rule": rule,
            "sev": severity,
            "ch": channel,
            "dest": destination or "",
            "since": time.time() if since is None else since,
            "summary": summary,
            "status": status,
        },
    )


def resolve(conn: Connection, ids: Sequence[int], at: float | None = None) -> int:
    """Mark these alerts resolved."""
    n = 0
    for i in ids:
        n += (
            conn.execute(
                text("UPDATE alert_events SET resolved_at = :at WHERE id = :id AND resolved_at IS NULL"),
                {"at": time.time() if at is None else at, "id": int(i)},
            ).rowcount
            or 0
        )
    return n
