"""Who is asking over HTTP: a session cookie (browser) or a bearer API token (scripts, sending systems), and
what they may do — checked against the users of the store (:mod:`hub.store.auth`).

It sits below the web app so that both it and the HTTP sources use it: the web app's routes (through
:mod:`hub.web.security`) and the ``fhir`` source's ``POST /fhir/{channel}``, which needs ``require("send")`` —
the token of a ``sender`` user (:meth:`hub.channels.fhir.FhirSource.router`). The app that serves these routes
keeps its :class:`~hub.store.auth.AuthStore` at ``app.state.hub.auth`` (:class:`hub.web.state.WebState`).

A cookie-authenticated request that changes something must also carry the session's CSRF token in
``X-CSRF-Token`` (the dashboard's script sends it); bearer-token requests need none, since a browser never
attaches them by itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request

from hub.errors import StoreError
from hub.store.auth import AuthStore, User

__all__ = [
    "Principal",
    "principal",
    "optional_principal",
    "require",
    "basic_principal",
    "COOKIE",
    "CSRF_HEADER",
    "client_ip",
]

log = logging.getLogger("hub.web")

COOKIE = "hub_session"
CSRF_HEADER = "x-csrf-token"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Principal:
    user: User
    via: str  # "session" | "token" | "basic"
    csrf: str | None = None
    session: str | None = None  # the cookie value (to end the session at logout)

    @property
    def name(self) -> str:
        return self.user.name

    def can(self, permission: str) -> bool:
        return self.user.can(permission)


def auth_store(request: Request) -> AuthStore:
    """The users of the app serving ``request`` (``app.state.hub.auth``)."""
    auth: AuthStore = request.app.state.hub.auth
    return auth


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "-"


def _identify(request: Request) -> Principal | None:
    auth = auth_store(request)
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


# ---------------------------------------------------------------------------------------------- HTTP Basic
# A password check is scrypt (~0.1 s, on purpose): a legacy peer sending Basic with every request would spend that
# on each one. A name and password that matched are remembered (only their SHA-256 with a per-process salt) for
# BASIC_TTL seconds; the user is read again on every request, so a disabled or deleted user or a changed role stops
# at once, and a changed password within BASIC_TTL.
BASIC_TTL = 60.0
_BASIC_MAX = 1000
_basic_salt = hashlib.sha256(str(time.time_ns()).encode() + __name__.encode()).digest()
_basic_seen: dict[str, tuple[int, float]] = {}  # digest → (user id, until)
_basic_lock = threading.Lock()


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    name, sep, password = decoded.partition(":")
    return (name, password) if sep and name else None


def basic_principal(request: Request) -> Principal | None:
    """The user whose name and password came as HTTP Basic (``Authorization: Basic …``), when they match an enabled
    user with a password; None otherwise (no Basic header, or wrong credentials). Reads the store: call it from a
    worker thread. 503 when the store is unavailable."""
    creds = _basic_credentials(request)
    if creds is None:
        return None
    name, password = creds
    key = hashlib.sha256(_basic_salt + name.encode() + b"\0" + password.encode()).hexdigest()
    auth = auth_store(request)
    now = time.monotonic()
    try:
        with _basic_lock:
            seen = _basic_seen.get(key)
        if seen is not None and seen[1] > now:
            user = auth.get_user(name)
            if user is not None and user.id == seen[0] and not user.disabled and user.has_password:
                return Principal(user, "basic")
        found = auth.authenticate(name, password)
    except StoreError as exc:
        log.error("web: cannot check credentials, the store is unavailable: %s", exc)
        raise HTTPException(503, "the store is unavailable", headers={"Retry-After": "10"}) from None
    if found is None:
        with _basic_lock:
            _basic_seen.pop(key, None)
        return None
    with _basic_lock:
        if len(_basic_seen) >= _BASIC_MAX:
            for k in [k for k, (_, until) in _basic_seen.items() if until <= now] or list(_basic_seen)[:100]:
                _basic_seen.pop(k, None)
        _basic_seen[key] = (found.id, now + BASIC_TTL)
    return Principal(found, "basic")
