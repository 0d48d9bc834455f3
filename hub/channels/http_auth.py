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

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request

from hub.errors import StoreError
from hub.store.auth import AuthStore, User

__all__ = ["Principal", "principal", "optional_principal", "require", "COOKIE", "CSRF_HEADER", "client_ip"]

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
