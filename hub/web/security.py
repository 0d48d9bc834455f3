"""Who is asking and what they may do, for the web app's routes; the audit log; the login throttle.

The caller is a session cookie (browser) or a bearer API token (scripts, Prometheus): :func:`principal`,
:func:`require` and :class:`Principal` live in :mod:`hub.channels.http_auth` (below the web app, so that the HTTP
sources use the same check) and are re-exported here. Every route but ``/healthz``, the login page and its static
assets depends on :func:`principal` (through :func:`require`). A cookie-authenticated request that changes
something must also carry the session's CSRF token in ``X-CSRF-Token`` (the dashboard's script sends it);
bearer-token requests need none, since a browser never attaches them by itself. The session cookie is HttpOnly
and SameSite=Strict, and Secure under HTTPS.

Sending systems are users too: the ``fhir`` sources' ``POST /fhir/{channel}`` needs ``require("send")`` — the
token of a ``sender`` user, one the channel names in ``senders`` when it names any (see
:meth:`hub.channels.fhir.FhirSource.router`). The web port checks no client certificates (no mutual TLS).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import Request

from hub.channels.http_auth import (
    COOKIE,
    CSRF_HEADER,
    Principal,
    auth_store,
    client_ip,
    optional_principal,
    principal,
    require,
)
from hub.store.auth import AuditEntry

__all__ = [
    "Principal",
    "principal",
    "optional_principal",
    "require",
    "COOKIE",
    "CSRF_HEADER",
    "client_ip",
    "LoginThrottle",
    "audit",
]


def audit(
    request: Request,
    p: Principal | None,
    action: str,
    *,
    message_id: int | None = None,
    channel: str | None = None,
    username: str | None = None,
    **detail: Any,
) -> None:
    """Write one audit entry (blocking: call from sync routes or through a thread)."""
    auth_store(request).audit(
        AuditEntry(
            username=p.name if p is not None else (username or "-"),
            role=p.user.role if p is not None else None,
            action=action,
            message_id=message_id,
            channel=channel,
            detail={k: v for k, v in detail.items() if v is not None},
            remote=client_ip(request),
        )
    )


class LoginThrottle:
    """After ``limit`` failed logins for one name or from one address within ``window`` seconds, refuse more."""

    def __init__(self, limit: int = 5, window: float = 300.0) -> None:
        self.limit = limit
        self.window = window
        self._fails: dict[str, list[float]] = {}

    def _recent(self, key: str, now: float) -> list[float]:
        times = [t for t in self._fails.get(key, []) if now - t < self.window]
        if times:
            self._fails[key] = times
        else:
            self._fails.pop(key, None)
        return times

    def blocked(self, *keys: str) -> bool:
        now = time.monotonic()
        return any(len(self._recent(k, now)) >= self.limit for k in keys)

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        if len(self._fails) > 10000:  # bounded memory under a spray of names
            self._fails.clear()
        for k in keys:
            self._fails.setdefault(k, []).append(now)

    def succeeded(self, *keys: str) -> None:
        for k in keys:
            self._fails.pop(k, None)
