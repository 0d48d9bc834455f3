"""Time in the configuration: durations (``30s``, ``5m``, ``250ms``) and schedules (DESIGN.md §5 ``schedule:``);
and sizes (``500MB``, ``20GB``: :func:`parse_size`, for ``retention.max_size`` and the SFTP source's
``max_size``/``chunk_size``).

A schedule is a duration (every 30 seconds) or a five-field cron string (minute, hour, day of month, month, day of
week). APScheduler's triggers decide both what is valid and when a schedule fires — the same objects check the
configuration when it is loaded (:func:`check_schedule`, so ``hub check`` says what the running hub would say) and
compute fire times in :class:`hub.channels.schedule.Poller`. Its trigger classes are pure computation over dates;
the schedulers that run threads or loops are never imported (the pollers run their own asyncio loop).
"""

from __future__ import annotations

import re

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

__all__ = ["parse_duration", "parse_size", "make_trigger", "check_schedule"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS: dict[str | None, float] = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: str | int | float) -> float:
    """``"30s"``, ``"5m"``, ``"2h"``, ``"30d"``, ``"250ms"`` or a number of seconds → seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a duration (use e.g. 500ms, 30s, 5m, 2h, 30d)")
    return float(m.group(1)) * _UNITS[m.group(2)]


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1024, "kib": 1024, "mb": 1024**2, "mib": 1024**2, "gb": 1024**3, "gib": 1024**3}
_SIZE_UNITS.update(tb=1024**4, tib=1024**4)


def parse_size(value: str | int) -> int:
    """``"20GB"``, ``"500MB"``, ``"4 MiB"`` or a number of bytes → bytes (KB/MB/GB/TB are binary: 1024-based)."""
    if isinstance(value, int):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a size (use e.g. 512KB, 4MB, 20GB)")
    return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()])


def make_trigger(schedule: str | int | float) -> CronTrigger | IntervalTrigger:
    """The trigger of a schedule: cron when it has five fields, else an interval; ValueError when invalid."""
    text = str(schedule).strip()
    if len(text.split()) == 5:
        return CronTrigger.from_crontab(text)
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError("a schedule interval must be positive")
    return IntervalTrigger(seconds=seconds)


def check_schedule(value: str | int | float) -> str | int | float:
    """``value`` when it is a schedule, else ValueError saying what is wrong and what a schedule looks like."""
    try:
        make_trigger(value)
    except ValueError as exc:
        raise ValueError(
            f"schedule {value!r}: {exc} (use a duration like 30s or cron like '*/15 8-18 * * 1-5')"
        ) from None
    return value
