"""What the web app knows about the running hub: the engine, the auth store, paused channels and small caches."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from hub.store.auth import AuthStore
from hub.web import queries
from hub.web.security import LoginThrottle

__all__ = ["WebState"]


@dataclass
class WebState:
    engine: Any
    auth: AuthStore
    session_ttl: float = 12 * 3600.0
    secure_cookies: bool = False
    paused: set[str] = field(default_factory=set)
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    cache_ttl: float = 2.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cache: dict[Any, tuple[float, Any]] = field(default_factory=dict)

    @property
    def store(self) -> Any:
        return self.engine.store

    def _cached(self, key: Any, fn: Any) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < self.cache_ttl:
                return hit[1]
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
        return {name: 0 if name in self.paused else 1 for name in self.engine.sources}

    def wake(self, channel: str | None = None) -> None:
        for (ch, _), w in list(self.engine.workers.items()):
            if channel is None or ch == channel:
                w.wake()
