"""The FastAPI application: JSON API, dashboard pages, ``/metrics``, ``/healthz``, ``/readyz``.

``create_app(engine)`` builds it for a running :class:`~hub.engine.Engine` (tests drive it with httpx's ASGI
transport; ``hub run`` serves it with uvicorn, see :mod:`hub.web`). Anonymous callers reach only ``/healthz``, the
login page and its static files (no data); everything else needs a session or an API token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from hub import __version__, metrics
from hub.engine import Engine
from hub.errors import StoreError
from hub.store.auth import AuthStore
from hub.web import queries
from hub.web.api import router as api_router
from hub.web.security import Principal, optional_principal, principal, require
from hub.web.state import WebState

__all__ = ["create_app", "STATIC"]

log = logging.getLogger("hub.web")

STATIC = Path(__file__).parent / "static"
PAGES = ("/", "/messages", "/dead-letters", "/audit", "/users", "/alerts")

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def create_app(engine: Engine, *, session_ttl: float | None = None, secure_cookies: bool | None = None) -> FastAPI:
    from hub.spec import parse_duration

    web = engine.cfg.hub.web
    tls = getattr(web, "tls", None) is not None
    if session_ttl is None:
        session_ttl = parse_duration(getattr(web, "session_ttl", "12h"))
    if secure_cookies is None:
        configured = getattr(web, "secure_cookies", None)
        secure_cookies = tls if configured is None else configured
    if engine.store is None:
        raise RuntimeError("the web app needs a started engine (it has no store yet)")
    state = WebState(
        engine=engine, auth=AuthStore(engine.store), session_ttl=session_ttl, secure_cookies=bool(secure_cookies)
    )

    app = FastAPI(
        title="hub",
        version=__version__,
        description="The hub's operations API: channels, queues, messages, replay, users and audit. "
        "Authenticate with the session cookie of /api/login (plus the X-CSRF-Token header on changes) "
        "or with `Authorization: Bearer <token>` (make one with `hub user token NAME`).",
        docs_url=None,  # the Swagger/ReDoc pages load scripts from a CDN; the dashboard must work without one
        redoc_url=None,
        openapi_url=None,  # served at /api/openapi.json behind authentication instead
    )
    app.state.hub = state

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        h = response.headers
        h.setdefault("Content-Security-Policy", _CSP)
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("Referrer-Policy", "no-referrer")
        if not request.url.path.startswith("/static/"):
            h.setdefault("Cache-Control", "no-store")
        if tls:
            h.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    app.include_router(api_router)

    # ------------------------------------------------------------------ health and metrics
    @app.get("/healthz", tags=["meta"], summary="Liveness: the process answers (no authentication, no details)")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["meta"], summary="Readiness: the engine is started and the store answers")
    def readyz(p: Principal = Depends(principal)) -> JSONResponse:
        checks: dict[str, Any] = {"engine": engine.started_at is not None}
        try:
            queries.ping(state.store)
            checks["store"] = True
        except StoreError:
            checks["store"] = False
        checks["paused_channels"] = sorted(state.paused)
        ready = bool(checks["engine"] and checks["store"])
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["meta"], summary="Prometheus metrics (text exposition format)")
    def metrics_endpoint(p: Principal = Depends(require("view"))) -> Response:
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ dashboard pages
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/login", include_in_schema=False)
    def login_page() -> FileResponse:
        return FileResponse(STATIC / "login.html", media_type="text/html")

    def page(request: Request) -> Response:
        if optional_principal(request) is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        return FileResponse(STATIC / "app.html", media_type="text/html")

    for path in PAGES:
        app.add_api_route(path, page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/messages/{message_id}", page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/channels/{name}", page, methods=["GET"], include_in_schema=False)

    # ------------------------------------------------------------------ routers of sources (http/fhir)
    for name, src in list(engine.sources.items()):
        make = getattr(src, "router", None)
        if callable(make):
            try:
                app.include_router(make())
                log.info("web: channel %s serves its HTTP endpoint", name)
            except Exception:
                log.exception("web: channel %s: could not add its HTTP routes", name)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 401 and request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            if not request.url.path.startswith("/api/"):
                return RedirectResponse(f"/login?next={quote(request.url.path, safe='')}", status_code=303)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    app.state.started = time.time()
    return app


async def ensure_first_admin(auth: AuthStore, env: dict[str, str]) -> bool:
    """Create the first admin from HUB_ADMIN_USER / HUB_ADMIN_PASSWORD when the store has no user yet."""
    name, password = env.get("HUB_ADMIN_USER"), env.get("HUB_ADMIN_PASSWORD")
    if not name or not password:
        if await asyncio.to_thread(auth.count_users) == 0:
            log.warning(
                "web: no users yet: create an admin with `hub user add NAME --role admin` or set HUB_ADMIN_USER and "
                "HUB_ADMIN_PASSWORD"
            )
        return False
    try:
        made = await asyncio.to_thread(auth.ensure_admin, name, password)
    except ValueError as exc:
        log.error("web: HUB_ADMIN_USER/HUB_ADMIN_PASSWORD not used: %s", exc)
        return False
    if made:
        log.info("web: created the first admin %s from the environment", name)
    return made
