"""Running schedules (DESIGN.md §5 ``schedule:``): a duration (``30s``: every 30 seconds) or a five-field cron string.

APScheduler's triggers compute the fire times (cron semantics, time zones, DST); each poller runs its own
asyncio loop around them so that a poll never overlaps the previous one and stopping is immediate. The triggers
are built by :mod:`hub.schedules`, which also checks schedules when the configuration is loaded (``check_schedule``,
re-exported here for the connectors' models).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from apscheduler.triggers.interval import IntervalTrigger

from hub.schedules import check_schedule, make_trigger

__all__ = ["make_trigger", "check_schedule", "Poller"]

log = logging.getLogger("hub.schedule")


class Poller:
    """Calls ``job`` at each fire time of ``schedule`` (at once first, for intervals) until stopped."""

    def __init__(
        self,
        schedule: str | int | float,
        job: Callable[[], Awaitable[object]],
        name: str,
        *,
        run_first: bool | None = None,
    ) -> None:
        self.trigger = make_trigger(schedule)
        self.job = job
        self.name = name
        self.run_first = isinstance(self.trigger, IntervalTrigger) if run_first is None else run_first
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._kick = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"poll:{self.name}")

    def kick(self) -> None:
        """Run the job now (e.g. after a file was dropped in a test)."""
        self._kick.set()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=30)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            self._task = None

    async def _loop(self) -> None:
        previous: datetime | None = None
        if self.run_first:
            await self._run()
        while not self._stop.is_set():
            now = datetime.now(UTC)
            nxt = self.trigger.get_next_fire_time(previous, now)
            previous = nxt
            delay = max(0.0, (nxt - now).total_seconds()) if nxt else 3600.0
            kick = asyncio.ensure_future(self._kick.wait())
            stop = asyncio.ensure_future(self._stop.wait())
            _done, pending = await asyncio.wait({kick, stop}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            for f in pending:
                f.cancel()
            self._kick.clear()
            if self._stop.is_set():
                break
            await self._run()

    async def _run(self) -> None:
        try:
            await self.job()
        except Exception:
            log.exception("scheduled job %s failed", self.name)
