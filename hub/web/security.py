"""Who is asking: a session cookie (browser) or a bearer API token (scripts, Prometheus), and what they may do.

Every route but ``/healthz``, the login page and its static assets depends on :func:`principal` (through
:func:`require`). A cookie-authenticated request that changes something must also carry the session's CSRF token
in ``X-CSRF-Token`` (the dashboard's script sends it); bearer-token requests need none, since a browser never
attaches them by itself. The session cookie is HttpOnly and SameSite=Strict, and Secure under HTTPS.

Sending systems are users too: the ``fhir`` sources' ``POST /fhir/{channel}`` needs ``require("send")`` — the
token of a ``sender`` user, one the channel names in ``senders`` when it names any (see
:meth:`hub.channels.fhir.FhirSource.router`). The web port checks no client certificates (no mutual TLS).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, HTTPException, Request

from hub.errors import StoreError
from hub.store.auth import AuditEntry, AuthStore, User

__all__ = ["Principal", "principal", "require", "COOKIE", "CSRF_HEADER", "client_ip", "LoginThrottle", "audit"]

log = logging.getLogger("hub.web")

COOKIE = "hub_session"
CSRF_HEADER = "x-csrf-token"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Principal:
    user: User
    via: str  # "session" | "token"
    csrf: str | None = None
    session: str | None = None  # the cookie value (to end the session at logout)

    @property
    def name(self) -> str:
        return self.user.name

    def can(self, permission: str) -> bool:
        return self.user.can(permission)


def _state(request: Request) -> Any:
    return request.app.state.hub


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "-"


def _identify(request: Request) -> Principal | None:
    auth: AuthStore = _state(request).auth
    header = request.headers.get("authorization", "")
    try:
        if header[:7].lower() == "bearer ":
            user = auth.user_for_token(header[7:].strip())
            return Principal(user, "token") if user is not None else None
        cookie = request.cookies.get(COOKIE)
        if cookie:
            found = auth.session(cookie)
            if found is not None:
                return Principal(found[0], "session", csrf=found[1], session=cookie)
    except StoreError as exc:
        log.error("web: cannot check credentials, the store is unavailable: %s", exc)
        raise HTTPException(503, "the store is unavailable") from None
    return None


def principal(request: Request) -> Principal:
    """The authenticated caller, or 401. Sync on purpose: FastAPI runs it in a worker thread (it reads the store)."""
    p = _identify(request)
    if p is None:
        raise HTTPException(
            401, "log in or send an API token (Authorization: Bearer …)", headers={"WWW-Authenticate": "Bearer"}
        )
    if p.via == "session" and request.method not in _SAFE:
        sent = request.headers.get(CSRF_HEADER, "")
        if not p.csrf or not hmac.compare_digest(sent.encode(), p.csrf.encode()):
            raise HTTPException(403, "missing or wrong X-CSRF-Token header for a cookie session")
    return p


def optional_principal(request: Request) -> Principal | None:
    try:
        return _identify(request)
    except HTTPException:
        return None


def require(permission: str) -> Callable[..., Principal]:
    """A dependency: the caller must hold ``permission`` (see :data:`hub.store.auth.PERMISSIONS`)."""

    def dep(p: Principal = Depends(principal)) -> Principal:
        if not p.can(permission):
            raise HTTPException(403, f"your role ({p.user.role}) may not do this (needs {permission!r})")
        return p

    dep.__name__ = f"require_{permission}"
    return dep


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
    auth: AuthStore = _state(request).auth
    auth.audit(
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
