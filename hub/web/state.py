"""What the web app knows about the running hub: the engine's facade, the auth store and small caches.

Which channels are paused is the engine's (:meth:`hub.engine.Engine.pause`), not the web app's: a reload, the
metrics and the API all see the one set.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hub.engine import Engine
from hub.store import Store
from hub.store.auth import AuthStore
from hub.web import queries
from hub.web.security import LoginThrottle

__all__ = ["WebState"]

T = TypeVar("T")


@dataclass
class WebState:
    engine: Engine
    auth: AuthStore
    session_ttl: float = 12 * 3600.0
    secure_cookies: bool = False
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    cache_ttl: float = 2.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cache: dict[Hashable, tuple[float, Any]] = field(default_factory=dict)

    @property
    def store(self) -> Store:
        store = self.engine.store
        if store is None:  # the web app is only made for a started engine
            raise RuntimeError("the engine has no store: it is not started")
        return store

    @property
    def paused(self) -> frozenset[str]:
        """The engine's paused channels."""
        return self.engine.paused

    def _cached(self, key: Hashable, fn: Callable[[], T]) -> T:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < self.cache_ttl:
                value: T = hit[1]
                return value
        value = fn()
        with self._lock:
            self._cache[key] = (now, value)
        return value

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()

    def status(self) -> dict[str, Any]:
        """store.status(), cached for a couple of seconds (the overview polls it)."""
        return self._cached("status", self.store.status)

    def recent(self, window: float) -> dict[str, Any]:
        """Counts of the last ``window`` seconds (rounded so the cache is shared)."""
        return self._cached(("recent", int(window)), lambda: queries.recent_counts(self.store, time.time() - window))

    def running(self) -> dict[str, int]:
        """Each channel with a source: 1 running, 0 paused (the ``hub_channel_running`` gauge)."""
        return self.engine.sources_running()

    def wake(self, channel: str | None = None) -> None:
        for (ch, _), w in list(self.engine.workers.items()):
            if channel is None or ch == channel:
                w.wake()
