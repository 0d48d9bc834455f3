"""The JSON API (``/api/…``), described by the OpenAPI document at ``/api/openapi.json``.

Routes that read or write the store are plain ``def`` functions: FastAPI runs them in worker threads, so the
engine's event loop (sources, workers) never waits on a query. Routes that start or stop sources are ``async``
and hand their store work to a thread.

Roles (hub/store/auth.py): ``view`` shows channels, queues and message metadata with patient ids and error texts
hidden; ``content`` shows raw content, per-destination content and responses (each view is audited); ``replay``
queues deliveries again; ``channels`` pauses/resumes and disables/enables channels (on every node: the state is kept
in the store) and checks/reloads the configuration; ``users`` and ``audit`` are the admin's.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import logging
import re
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from hub import metrics
from hub.channels.base import ReportsPeer
from hub.channels.channel import Channel
from hub.engine import Engine
from hub.errors import StoreError
from hub.spec import parse_duration
from hub.store import DELIVERY_STATUSES, MESSAGE_STATUSES, SearchQuery
from hub.store.auth import LastAdminError
from hub.web import queries
from hub.web.render import render
from hub.web.security import COOKIE, Principal, audit, client_ip, principal, require
from hub.web.state import WebState

__all__ = ["router"]

log = logging.getLogger("hub.web")

router = APIRouter(prefix="/api")

P = ParamSpec("P")
T = TypeVar("T")

# Ids are the store's 64-bit integers (SQLite INTEGER, PostgreSQL BIGINT): a larger number is refused with 422 here
# instead of overflowing in the database driver (HTTP 500).
ID_MIN, ID_MAX = -(2**63), 2**63 - 1
PathId = Annotated[int, Path(ge=ID_MIN, le=ID_MAX)]
StoreId = Annotated[int, Field(ge=ID_MIN, le=ID_MAX)]


def _id_query(description: str | None = None) -> Any:
    return Query(None, ge=ID_MIN, le=ID_MAX, description=description)


_SECRET_WORDS = (
    "password",
    "secret",
    "token",
    "passphrase",
    "credential",
    "private_key",
    "api_key",
    "apikey",
    "authorization",
)


# ------------------------------------------------------------------------------------------------ helpers
def _hub(request: Request) -> WebState:
    state: WebState = request.app.state.hub
    return state


def _when(value: str | None, name: str) -> float | None:
    """Epoch seconds, a duration ago (``1h``, ``30m``) or an ISO date/time."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return time.time() - parse_duration(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise HTTPException(
            422, f"{name}: {value!r} is neither epoch seconds, a duration (1h, 7d) nor an ISO date/time"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _store_call(fn: Callable[P, T], *args: P.args, **kw: P.kwargs) -> T:
    try:
        return fn(*args, **kw)
    except StoreError as exc:
        log.error("web: store unavailable: %s", exc)
        raise HTTPException(503, "the store is unavailable") from None


def _redact(value: Any) -> Any:
    """A config mapping with secret values replaced (passwords, tokens …), for showing a channel's settings."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(k, str) and any(w in k.lower() for w in _SECRET_WORDS) and not isinstance(v, (dict, list)):
                out[k] = "***" if v not in (None, "") else v
            else:
                out[k] = _redact(v)
        return out
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def _age(ts: float | None, now: float) -> float | None:
    return None if ts is None else max(0.0, round(now - ts, 1))


def _peers(engine: Engine, channel: str) -> dict[str, Any]:
    """Connection status of the channel's MLLP/SFTP peers as its components report it
    (:meth:`hub.engine.Engine.peer_state`), with the age of the last SFTP poll that reached the server."""
    out = engine.peer_state(channel)
    if "sftp_last_poll" in out:
        last = out["sftp_last_poll"] or None  # None/0: no poll has reached the server since the start
        out["sftp_last_poll"] = last
        out["sftp_last_poll_age"] = _age(last, time.time()) if last else None
    return out


def _channel_names(hub: WebState, status: dict[str, Any]) -> list[str]:
    names = {c.name for c in hub.engine.cfg.channels if c.enabled} | set(hub.engine.channels)
    names |= set(status["channels"]) | {k[0] for k in status["destinations"]}
    return sorted(names)


def _channel_item(
    hub: WebState, name: str, status: dict[str, Any], recent: dict[str, Any], p: Principal
) -> dict[str, Any]:
    now = time.time()
    engine = hub.engine
    counts = status["channels"].get(name, {})
    last = recent["channels"].get(name, {})
    ch = engine.channels.get(name)
    spec = ch.spec if ch is not None else None
    failed = engine.failed.get(name)  # why its source could not start (e.g. the port is taken)
    state = engine.channel_state(name)
    dest_names = set(ch.destinations) if ch is not None else set()
    dest_names |= {d for (c, d) in status["destinations"] if c == name}
    dests = []
    for d in sorted(dest_names):
        row = status["destinations"].get((name, d), {})
        lastd = recent["destinations"].get((name, d), {})
        worker = engine.workers.get((name, d))
        conf = ch.destinations.get(d) if ch is not None else None
        item = {
            "name": d,
            "type": getattr(conf, "type", None),
            **{k: row.get(k, 0) for k in DELIVERY_STATUSES},
            "oldest_queued_age": _age(row.get("oldest_queued"), now),
            "last_hour": {k: lastd.get(k, 0) for k in DELIVERY_STATUSES},
            "worker": "running" if worker is not None else "none",
        }
        if p.can("content"):
            item["last_error"] = worker.last_error if worker is not None else None
        dests.append(item)
    received = sum(counts.values())
    last_received = sum(last.values())
    return {
        "name": name,
        "description": spec.description if spec is not None else "",
        "state": state,
        "source": spec.source.get("type") if spec is not None else None,
        "received": received,
        **{k: counts.get(k, 0) for k in MESSAGE_STATUSES},
        "last_hour": {
            "received": last_received,
            **{k: last.get(k, 0) for k in MESSAGE_STATUSES},
            "per_minute": round(last_received / 60, 2),
        },
        "destinations": dests,
        "peers": _peers(engine, name),
        "error": failed,
    }


def _wanted_channel(hub: WebState, name: str) -> Channel:
    ch = hub.engine.channels.get(name)
    if ch is None:
        raise HTTPException(404, f"no running channel named {name!r}")
    return ch


# ------------------------------------------------------------------------------------------------ session
class LoginRequest(BaseModel):
    username: str = Field(max_length=100)
    password: str = Field(max_length=1000)


@router.post("/login", tags=["session"], summary="Log in with a name and password; sets the session cookie")
def login(body: LoginRequest, request: Request, response: Response) -> dict[str, Any]:
    hub = _hub(request)
    ip = client_ip(request)
    keys = (f"user:{body.username}", f"ip:{ip}")
    if hub.throttle.blocked(*keys):
        metrics.WEB_LOGINS.labels("locked").inc()
        raise HTTPException(429, "too many failed logins; wait a few minutes")
    user = _store_call(hub.auth.authenticate, body.username, body.password)
    if user is None:
        hub.throttle.failed(*keys)
        metrics.WEB_LOGINS.labels("failed").inc()
        _store_call(audit, request, None, "login_failed", username=body.username[:100])
        log.warning("web: failed login for user %s from %s", body.username[:100], ip)
        raise HTTPException(401, "wrong name or password")
    hub.throttle.succeeded(*keys)
    token, csrf = _store_call(hub.auth.create_session, user, hub.session_ttl)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(hub.session_ttl),
        httponly=True,
        samesite="strict",
        secure=hub.secure_cookies,
        path="/",
    )
    metrics.WEB_LOGINS.labels("ok").inc()
    _store_call(audit, request, Principal(user, "session"), "login")
    return {**user.public(), "csrf": csrf}


@router.post("/logout", tags=["session"], summary="End the session")
def logout(request: Request, response: Response, p: Principal = Depends(principal)) -> dict[str, Any]:
    if p.session:
        _store_call(_hub(request).auth.end_session, p.session)
    response.delete_cookie(COOKIE, path="/")
    return {"ok": True}


@router.get(
    "/me", tags=["session"], summary="Who is logged in, their role and permissions (and the CSRF token of a session)"
)
def me(p: Principal = Depends(principal)) -> dict[str, Any]:
    return {**p.user.public(), "via": p.via, "csrf": p.csrf}


class PasswordChange(BaseModel):
    current: str = Field(max_length=1000)
    new: str = Field(max_length=1000)


@router.post("/me/password", tags=["session"], summary="Change your own password (ends your other sessions)")
def change_password(body: PasswordChange, request: Request, p: Principal = Depends(principal)) -> dict[str, Any]:
    hub = _hub(request)
    if _store_call(hub.auth.authenticate, p.name, body.current) is None:
        raise HTTPException(403, "the current password is wrong")
    try:
        _store_call(hub.auth.update_user, p.name, password=body.new)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    _store_call(audit, request, p, "password_change", target=p.name)
    return {"ok": True}


# ------------------------------------------------------------------------------------------------ channels
@router.get(
    "/channels", tags=["channels"], summary="Every channel: state, counts, last-hour rates, destinations and queues"
)
def list_channels(request: Request, p: Principal = Depends(require("view"))) -> list[dict[str, Any]]:
    hub = _hub(request)
    status = _store_call(hub.status)
    recent = _store_call(hub.recent, 3600)
    return [_channel_item(hub, n, status, recent, p) for n in _channel_names(hub, status)]


@router.get(
    "/channels/{name}", tags=["channels"], summary="One channel's status; its settings (secrets hidden) for analysts"
)
def get_channel(name: str, request: Request, p: Principal = Depends(require("view"))) -> dict[str, Any]:
    hub = _hub(request)
    status = _store_call(hub.status)
    if name not in _channel_names(hub, status):
        raise HTTPException(404, f"no channel named {name!r}")
    item = _channel_item(hub, name, status, _store_call(hub.recent, 3600), p)
    ch = hub.engine.channels.get(name)
    if p.can("channels") and ch is not None:
        item["config"] = _redact(ch.spec.model_dump(mode="json", by_alias=True))
        item["file"] = str(hub.engine.cfg.channel_files.get(name, ""))
    return item


@router.get(
    "/channels/{name}/stats", tags=["channels"], summary="Counts over a recent window (default 1h) and rates per minute"
)
def channel_stats(
    name: str,
    request: Request,
    window: str = Query("1h", description="A duration: 15m, 1h, 24h (at most 7d)."),
    p: Principal = Depends(require("view")),
) -> dict[str, Any]:
    hub = _hub(request)
    try:
        seconds = parse_duration(window)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    if not 0 < seconds <= 7 * 86400:
        raise HTTPException(422, "window must be between 1s and 7d")
    recent = _store_call(hub.recent, seconds)
    counts = recent["channels"].get(name, {})
    received = sum(counts.values())
    minutes = seconds / 60
    return {
        "channel": name,
        "window_seconds": seconds,
        "received": received,
        **{k: counts.get(k, 0) for k in MESSAGE_STATUSES},
        "per_minute": round(received / minutes, 3),
        "destinations": {
            d: {
                **{k: row.get(k, 0) for k in DELIVERY_STATUSES},
                "sent_per_minute": round(row.get("sent", 0) / minutes, 3),
            }
            for (c, d), row in sorted(recent["destinations"].items())
            if c == name
        },
    }


async def _change_channel(
    request: Request, p: Principal, name: str, action: Literal["pause", "resume", "disable", "enable"]
) -> dict[str, Any]:
    """Pause, resume, disable or enable a channel through the engine (kept in the store for every node), audited.

    Pause and resume need the channel's source (409 without one); resume and enable start a source, so their
    failure is a 500 that says why (a port in use …); the store being down is a 503."""
    hub = _hub(request)
    _wanted_channel(hub, name)
    if action in ("pause", "resume") and name not in hub.engine.sources:
        raise HTTPException(409, f"channel {name!r} has no source to {action}")
    change = getattr(hub.engine, action)
    try:
        changed = await change(name, by=p.name)
    except StoreError as exc:
        log.error("web: store unavailable: %s", exc)
        raise HTTPException(503, "the store is unavailable") from None
    except Exception as exc:
        if action not in ("resume", "enable"):
            raise
        log.error("web: channel %s could not be %sd: %s", name, action, exc)
        raise HTTPException(500, f"the source did not start: {exc}") from None
    if changed:
        log.info("web: channel %s %sd by %s", name, action, p.name)
    await asyncio.to_thread(_store_call, audit, request, p, action, channel=name)
    return {"channel": name, "state": "paused" if action == "pause" else hub.engine.channel_state(name)}


@router.post(
    "/channels/{name}/pause",
    tags=["channels"],
    summary="Stop the channel's source on every node (queued deliveries still go out); kept in the store",
)
async def pause_channel(name: str, request: Request, p: Principal = Depends(require("channels"))) -> dict[str, Any]:
    return await _change_channel(request, p, name, "pause")


@router.post("/channels/{name}/resume", tags=["channels"], summary="Start the channel's source again on every node")
async def resume_channel(name: str, request: Request, p: Principal = Depends(require("channels"))) -> dict[str, Any]:
    return await _change_channel(request, p, name, "resume")


@router.post(
    "/channels/{name}/disable",
    tags=["channels"],
    summary="Stop the channel — source and delivery workers — on every node and keep it stopped across restarts",
)
async def disable_channel(name: str, request: Request, p: Principal = Depends(require("channels"))) -> dict[str, Any]:
    return await _change_channel(request, p, name, "disable")


@router.post("/channels/{name}/enable", tags=["channels"], summary="Start a disabled channel again on every node")
async def enable_channel(name: str, request: Request, p: Principal = Depends(require("channels"))) -> dict[str, Any]:
    return await _change_channel(request, p, name, "enable")


def _check(hub: WebState) -> list[str]:
    from hub.engine import check
    from hub.spec import load_config

    cfg = load_config(hub.engine.cfg.folder)
    return [str(pr) for pr in check(cfg)]


@router.post("/config/check", tags=["channels"], summary="Run `hub check` on the config folder as it is on disk now")
def config_check(request: Request, p: Principal = Depends(require("channels"))) -> dict[str, Any]:
    problems = _check(_hub(request))
    _store_call(audit, request, p, "config_check", problems=len(problems))
    return {"ok": not problems, "problems": problems}


@router.post(
    "/config/reload",
    tags=["channels"],
    summary="Check the config folder and, when it is clean, restart every channel from it (queues are kept)",
    responses={422: {"description": "the configuration has problems; nothing was changed"}},
)
async def config_reload(request: Request, p: Principal = Depends(require("channels"))) -> dict[str, Any]:
    hub = _hub(request)
    problems = [str(pr) for pr in await hub.engine.reload()]
    _store_call(audit, request, p, "config_reload", problems=len(problems), applied=not problems)
    if problems:
        raise HTTPException(
            422, {"message": "the configuration has problems; nothing was changed", "problems": problems}
        )
    hub.invalidate()  # every channel was started again from the files (paused and disabled ones stay so)
    return {
        "reloaded": True,
        "channels": sorted(hub.engine.channels),
        "note": "store and web settings apply at the next restart",
    }


# A literal secret written in a channel file (``hub check`` refuses them; ${VAR} references are kept as written).
_SECRET_LINE = re.compile(
    r"(?P<key>\b[\w-]*(?:password|passwd|secret|token|passphrase|api_?key|private_key|credential)"
    r"(?![\w-]*(?:_url|_file|_path|_env))[\w-]*[\"']?\s*:[ \t]*)"
    r"(?P<value>(?!\$\{)(?![|>][ \t]*(?:#.*)?$)[^\s,}#\[{][^,}#\n]*)",
    re.IGNORECASE | re.MULTILINE,
)


def redact_yaml(text: str) -> str:
    """The YAML text with the values of password/token/secret-like keys replaced by ``***`` unless they are
    ``${VAR}`` references."""
    return _SECRET_LINE.sub(lambda m: m.group("key") + "***", text)


def _read_text(path: FilePath | None) -> str | None:
    if path is None or not path.is_file():
        return None
    return redact_yaml(path.read_text(encoding="utf-8", errors="replace"))


def _last_reload(hub: WebState) -> dict[str, Any] | None:
    rows = hub.auth.search_audit(action="config_reload", limit=1)
    if not rows:
        return None
    r = rows[0]
    return {"at": r["at"], "by": r["username"], "ok": bool(r["detail"].get("applied"))}


@router.get(
    "/channels/{name}/config",
    tags=["channels"],
    summary="A channel's file and test file as on disk (literal secrets hidden), its `hub check` problems, "
    "the last reload",
)
def channel_config(name: str, request: Request, p: Principal = Depends(require("channels"))) -> dict[str, Any]:
    from hub.engine import check
    from hub.errors import ConfigError
    from hub.spec import load_config

    hub = _hub(request)
    cfg = hub.engine.cfg
    file = cfg.channel_files.get(name)
    try:
        disk = load_config(cfg.folder)
        problems = [(pr.file, pr.line, pr.message) for pr in check(disk)]
        file = disk.channel_files.get(name, file)
    except ConfigError as exc:
        problems = list(exc.problems)
    if file is None:
        raise HTTPException(404, f"no channel named {name!r}")
    test_file = file.with_name(file.stem + "_test.yaml")
    mine = {str(file), str(file.resolve()), str(test_file), str(test_file.resolve()), file.name, test_file.name}
    return {
        "file": str(file),
        "yaml": _read_text(file),
        "test_file": str(test_file) if test_file.is_file() else None,
        "test_yaml": _read_text(test_file),
        "problems": [
            {"file": f, "line": line, "message": m}
            for f, line, m in problems
            if str(f) in mine or FilePath(str(f)).name in mine
        ],
        "last_reload": _store_call(_last_reload, hub),
    }


# ------------------------------------------------------------------------------------------------ destinations
@router.get(
    "/destinations",
    tags=["queues"],
    summary="Every destination's queue: queued, retry, sending, sent, dead, oldest age",
)
def list_destinations(request: Request, p: Principal = Depends(require("view"))) -> list[dict[str, Any]]:
    hub = _hub(request)
    status = _store_call(hub.status)
    recent = _store_call(hub.recent, 3600)
    out = []
    for name in _channel_names(hub, status):
        for d in _channel_item(hub, name, status, recent, p)["destinations"]:
            out.append({"channel": name, **d})
    return out


@router.get(
    "/dead-letters",
    tags=["queues"],
    summary="Dead deliveries (newest first), with the error for roles that see content",
)
def dead_letters(
    request: Request,
    channel: str | None = None,
    destination: str | None = None,
    before_id: int | None = _id_query("Page: deliveries with a smaller id."),
    limit: int = Query(100, ge=1, le=1000),
    p: Principal = Depends(require("view")),
) -> dict[str, Any]:
    hub = _hub(request)
    rows = _store_call(
        queries.dead_letters, hub.store, channel=channel, destination=destination, before_id=before_id, limit=limit
    )
    if not p.can("content"):
        for r in rows:
            r["last_error"] = None
            r["patient_id"] = None
    return {"items": rows, "next_before_id": rows[-1]["id"] if len(rows) == limit else None}


# ------------------------------------------------------------------------------------------------ dashboard (issue 17)
@router.get(
    "/charts",
    tags=["dashboard"],
    summary="A channel's (or destination's) received, sent, errors and queue depth over 1h/24h/7d, latency percentiles",
)
def charts(
    request: Request,
    channel: str = Query(..., description="The channel."),
    destination: str | None = Query(None, description="One of its destinations (default: the channel as a whole)."),
    range_: Literal["1h", "24h", "7d"] = Query(
        "1h", alias="range", description="1h (per minute), 24h (per 15 min), 7d (per 2 h)."
    ),
    p: Principal = Depends(require("view")),
) -> dict[str, Any]:
    hub = _hub(request)
    return _store_call(queries.charts, hub.store, channel, destination or None, range_, time.time())


def _dest_peer(engine: Engine, channel: str, destination: str) -> dict[str, Any]:
    dest = engine.destinations.get((channel, destination))
    if not isinstance(dest, ReportsPeer):
        return {}
    try:
        return dict(dest.peer_state())
    except Exception:
        return {}


def _health(state: str, dead: int, queued: int, oldest: float | None) -> str:
    if state == "failed" or dead:
        return "error"
    if state in ("paused", "disabled") or queued > 500 or (oldest is not None and oldest > 900):
        return "warn"
    return "ok"


@router.get(
    "/overview",
    tags=["dashboard"],
    summary="Every channel at a glance: state, health, last hour's per-minute in/out, queues, dead letters, peers",
)
def overview(request: Request, p: Principal = Depends(require("view"))) -> list[dict[str, Any]]:
    hub = _hub(request)
    engine = hub.engine
    now = time.time()
    status = _store_call(hub.status)
    spark = _store_call(queries.sparks, hub.store, now)
    out = []
    for name in _channel_names(hub, status):
        ch = engine.channels.get(name)
        dest_names = set(ch.destinations) if ch is not None else set()
        dest_names |= {d for (c, d) in status["destinations"] if c == name}
        dests: list[dict[str, Any]] = []
        for d in sorted(dest_names):
            row = status["destinations"].get((name, d), {})
            dests.append(
                {
                    "destination": d,
                    "queued": int(row.get("queued", 0)) + int(row.get("sending", 0)),
                    "retry": int(row.get("retry", 0)),
                    "dead": int(row.get("dead", 0)),
                    "sent": int(row.get("sent", 0)),
                    "oldest_waiting_s": _age(row.get("oldest_queued"), now),
                    "peer": _dest_peer(engine, name, d),
                }
            )
        state = engine.channel_state(name)
        queued = sum(d["queued"] + d["retry"] for d in dests)
        dead = sum(d["dead"] for d in dests)
        ages: list[float] = [d["oldest_waiting_s"] for d in dests if d["oldest_waiting_s"] is not None]
        oldest = max(ages) if ages else None
        out.append(
            {
                "channel": name,
                "state": state,
                "health": _health(state, dead, queued, oldest),
                "spark": spark.get(name, {"in": [0] * 60, "out": [0] * 60}),
                "queued": queued,
                "oldest_waiting_s": oldest,
                "dead": dead,
                "peer": _peers(engine, name),
                "destinations": dests,
            }
        )
    return out


@router.get(
    "/alerts",
    tags=["dashboard"],
    summary="The alerts the hub evaluates itself: firing now, and resolved in the last 7 days",
)
def alerts(
    request: Request,
    since: str | None = Query(None, description="Resolved since (default 7d ago): epoch, duration ago or ISO."),
    p: Principal = Depends(require("view")),
) -> dict[str, Any]:
    hub = _hub(request)
    after = _when(since, "since") or time.time() - 7 * 86400
    firing, recent = _store_call(hub.store.alerts, after)
    return {"firing": [a.public() for a in firing], "recent": [a.public() for a in recent]}


# ------------------------------------------------------------------------------------------------ messages
def search_filters(
    channel: str | None = None,
    status: str | None = Query(
        None,
        description="accepted, filtered, rejected, error, or a delivery status: queued, retry, sending, sent, dead",
    ),
    destination: str | None = Query(
        None, description="Messages with a delivery to this destination (with status: in that state)."
    ),
    since: str | None = Query(None, description="Epoch seconds, a duration ago (1h) or an ISO date/time."),
    until: str | None = None,
    control_id: str | None = None,
    patient_id: str | None = Query(None, description="Needs a role that sees content."),
    message_type: str | None = Query(None, description="ADT (any trigger) or ADT^A04."),
    text: str | None = Query(None, description="Text contained in the raw message. Needs a role that sees content."),
    rollup: str | None = Query(None, description="dead: messages whose rolled-up state is dead."),
    before_id: int | None = _id_query("Page: messages with a smaller id."),
) -> SearchQuery:
    """The filters of ``GET /api/messages`` and of the exports, as one query."""
    if rollup:  # dead is the worst state: a message rolled up "dead" is one with a dead delivery
        if rollup != "dead" or (status and status != "dead"):
            raise HTTPException(422, "rollup: only 'dead' is a filter (use status for the others)")
        status = "dead"
    if status and status not in MESSAGE_STATUSES + DELIVERY_STATUSES:
        raise HTTPException(422, f"status: one of {', '.join(MESSAGE_STATUSES + DELIVERY_STATUSES)}")
    return SearchQuery(
        channel=channel or None,
        status=status or None,
        destination=destination or None,
        since=_when(since, "since"),
        until=_when(until, "until"),
        control_id=control_id or None,
        patient_id=patient_id or None,
        message_type=message_type or None,
        text=text or None,
        before_id=before_id,
    )


@router.get("/messages", tags=["messages"], summary="Search messages (newest first); page with before_id")
def search_messages(
    request: Request,
    q: SearchQuery = Depends(search_filters),
    limit: int = Query(50, ge=1, le=500),
    p: Principal = Depends(require("view")),
) -> dict[str, Any]:
    hub = _hub(request)
    if (q.patient_id or q.text) and not p.can("content"):
        raise HTTPException(403, "searching by patient id or content needs a role that sees message content")
    q = dataclasses.replace(q, limit=limit)
    rows = _store_call(hub.store.search, q)
    for r in rows:
        r["rollup"] = rollup_status(r["status"], r.get("deliveries") or {})
    if not p.can("content"):
        for r in rows:
            r["patient_id"] = None
            r["error"] = None
            r["source_ref"] = None
    elif q.patient_id or q.text:
        _store_call(
            audit,
            request,
            p,
            "search",
            channel=q.channel,
            patient_id=q.patient_id,
            text=bool(q.text),
            results=len(rows),
        )
    return {"items": rows, "next_before_id": rows[-1]["id"] if len(rows) == limit else None}


# ------------------------------------------------------------------------------------------------ exports (issue 17)
EXPORT_CSV_MAX = 100_000
EXPORT_ZIP_MAX = 10_000
_EXT = {"hl7v2": "hl7", "fhir": "json", "x12": "x12", "csv": "csv", "json": "json", "xml": "xml", "raw": "txt"}
_CSV_COLUMNS = (
    "id",
    "received_at",
    "channel",
    "status",
    "rollup",
    "message_type",
    "control_id",
    "sending_app",
    "sending_facility",
    "error_code",
    "size",
    "deliveries",
)


def _pages(hub: WebState, q: SearchQuery, most: int, page: int = 500) -> Iterator[list[dict[str, Any]]]:
    """The search's rows, newest first, a page at a time, at most ``most``."""
    seen = 0
    before = q.before_id
    while seen < most:
        size = min(page, most - seen)
        rows = hub.store.search(replace(q, before_id=before, limit=size))
        if not rows:
            return
        seen += len(rows)
        yield rows
        if len(rows) < size:
            return
        before = rows[-1]["id"]


def _stamp(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def _need_content_for(q: SearchQuery, p: Principal) -> None:
    if (q.patient_id or q.text) and not p.can("content"):
        raise HTTPException(403, "searching by patient id or content needs a role that sees message content")


@router.get(
    "/messages/export.csv",
    tags=["messages"],
    summary=f"The messages a search finds as CSV (metadata only, newest first, at most {EXPORT_CSV_MAX:,}), streamed",
)
def export_csv(
    request: Request, q: SearchQuery = Depends(search_filters), p: Principal = Depends(require("view"))
) -> StreamingResponse:
    hub = _hub(request)
    _need_content_for(q, p)
    first = _store_call(hub.store.search, replace(q, limit=1))  # the store answers before the 200 goes out

    def rows() -> Iterator[str]:
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(_CSV_COLUMNS)
        if first:
            for page in _pages(hub, q, EXPORT_CSV_MAX):
                for r in page:
                    dl = r.get("deliveries") or {}
                    w.writerow(
                        [
                            r["id"],
                            _stamp(r.get("received_at")),
                            r.get("channel"),
                            r.get("status"),
                            rollup_status(r["status"], dl),
                            r.get("message_type") or "",
                            r.get("control_id") or "",
                            r.get("sending_app") or "",
                            r.get("sending_facility") or "",
                            r.get("error_code") or "",
                            r.get("size"),
                            " ".join(f"{k}={v}" for k, v in sorted(dl.items())),
                        ]
                    )
                yield out.getvalue()
                out.seek(0)
                out.truncate()
        yield out.getvalue()

    name = f"messages-{datetime.now(UTC):%Y%m%d-%H%M%S}.csv"
    return StreamingResponse(
        rows(), media_type="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


class _Chunks(io.RawIOBase):
    """A write-only stream whose bytes are taken out as they come (for a zip written while it is sent)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.buf += bytes(b)
        return len(b)

    def take(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@router.get(
    "/messages/export.zip",
    tags=["messages"],
    summary=f"The raw messages a search finds, one file each (<id>_<control id>.<ext>), at most {EXPORT_ZIP_MAX:,}; "
    "streamed and audited",
)
def export_zip(
    request: Request, q: SearchQuery = Depends(search_filters), p: Principal = Depends(require("content"))
) -> StreamingResponse:
    hub = _hub(request)
    _store_call(hub.store.search, replace(q, limit=1))  # the store answers before the 200 goes out
    _store_call(
        audit,
        request,
        p,
        "export_zip",
        channel=q.channel,
        status=q.status,
        destination=q.destination,
        since=q.since,
        until=q.until,
        control_id=q.control_id,
        patient_id=q.patient_id,
        message_type=q.message_type,
        text=bool(q.text) or None,
        limit=EXPORT_ZIP_MAX,
    )

    def chunks() -> Iterator[bytes]:
        sink = _Chunks()
        with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as zf:
            for page in _pages(hub, q, EXPORT_ZIP_MAX, page=200):
                for mid, control, ctype, raw in queries.raw_messages(hub.store, [r["id"] for r in page]):
                    label = _UNSAFE.sub("_", control or "")[:60] or "none"
                    zf.writestr(f"{mid}_{label}.{_EXT.get(ctype, 'txt')}", raw)
                yield sink.take()
        yield sink.take()

    name = f"messages-{datetime.now(UTC):%Y%m%d-%H%M%S}.zip"
    return StreamingResponse(
        chunks(), media_type="application/zip", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


def rollup_status(status: str, deliveries: dict[str, int]) -> str:
    """A message's state rolled up from its deliveries' (counts by status): the worst wins — dead, retrying,
    sending, queued, sent; a message without deliveries keeps its own status."""
    for st, word in (("dead", "dead"), ("retry", "retrying"), ("sending", "sending"), ("queued", "queued")):
        if deliveries.get(st):
            return word
    return "sent" if deliveries.get("sent") else status


def _delivery_view(d: dict[str, Any], msg: dict[str, Any], show: bool) -> dict[str, Any]:
    out = {
        k: d.get(k)
        for k in (
            "id",
            "destination",
            "route",
            "status",
            "attempts",
            "next_at",
            "created_at",
            "updated_at",
            "sent_at",
            "content_type",
        )
    }
    out["next_attempt_at"] = d.get("next_at") if d.get("status") in ("queued", "retry") else None
    out["content_is_raw"] = d.get("content") is None
    if show:
        content = d.get("content")
        out["content"] = _text(content)
        out["structure"] = (
            render(d.get("content_type") or msg["content_type"], content) if content is not None else None
        )
        out["last_error"] = d.get("last_error")
        out["response"] = d.get("response")
        resp = (d.get("response") or "").encode()
        out["response_structure"] = render(None, resp) if resp[:3] in (b"MSH", b"ISA") or resp[:1] == b"{" else None
    out["attempt_log"] = [
        {
            k: a.get(k)
            for k in (
                ("number", "at", "outcome", "node", "error", "response")
                if show
                else ("number", "at", "outcome", "node")
            )
        }
        for a in d.get("attempt_log", [])
    ]
    return out


@router.get(
    "/messages/{message_id}",
    tags=["messages"],
    summary="One message: metadata, raw content rendered by format, deliveries, responses, attempts",
)
def get_message(message_id: PathId, request: Request, p: Principal = Depends(require("view"))) -> dict[str, Any]:
    hub = _hub(request)
    msg = _store_call(hub.store.get_message, message_id)
    if msg is None:
        raise HTTPException(404, f"no message {message_id}")
    show = p.can("content")
    out = {
        k: msg.get(k)
        for k in (
            "id",
            "channel",
            "status",
            "received_at",
            "content_type",
            "control_id",
            "message_type",
            "sending_app",
            "sending_facility",
            "error_code",
            "size",
        )
    }
    out["content_visible"] = show
    if show:
        out.update(
            patient_id=msg.get("patient_id"),
            source_ref=msg.get("source_ref"),
            error=msg.get("error"),
            meta=msg.get("meta"),
            raw=_text(msg["raw"]),
            structure=render(msg["content_type"], msg["raw"]),
        )
        _store_call(audit, request, p, "view_message", message_id=message_id, channel=msg["channel"])
    out["deliveries"] = [_delivery_view(d, msg, show) for d in msg["deliveries"]]
    return out


@router.get("/messages/{message_id}/raw", tags=["messages"], summary="The raw bytes of a message (download)")
def get_raw(message_id: PathId, request: Request, p: Principal = Depends(require("content"))) -> Response:
    hub = _hub(request)
    msg = _store_call(hub.store.get_message, message_id)
    if msg is None:
        raise HTTPException(404, f"no message {message_id}")
    _store_call(audit, request, p, "view_raw", message_id=message_id, channel=msg["channel"])
    return Response(
        msg["raw"],
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="message-{message_id}.{msg["content_type"]}"'},
    )


class ReplayOne(BaseModel):
    destination: str | None = Field(
        None, description="Only this destination's delivery; default: every delivery of the message."
    )
    include_sent: bool = Field(
        False, description="Also send again deliveries already sent (default: only dead, retrying, queued ones)."
    )
    dry_run: bool = Field(False, description="Say what would be queued or reprocessed, and do nothing.")


@router.post(
    "/messages/{message_id}/replay", tags=["replay"], summary="Queue a message's deliveries again (attempts reset)"
)
def replay_message(
    message_id: PathId, request: Request, body: ReplayOne | None = None, p: Principal = Depends(require("replay"))
) -> dict[str, Any]:
    hub = _hub(request)
    msg = _store_call(hub.store.get_message, message_id)
    if msg is None:
        raise HTTPException(404, f"no message {message_id}")
    channel = msg["channel"]
    dest = body.destination if body is not None else None
    include_sent = body is not None and body.include_sent
    statuses = [*queries.NOT_SENT, "sent"] if include_sent else list(queries.NOT_SENT)
    if body is not None and body.dry_run:
        return _store_call(queries.replay_plan, hub.store, [message_id], destination=dest, statuses=statuses)
    outcome = None
    if msg["deliveries"]:
        n = _store_call(hub.store.replay, [message_id], destination=dest, statuses=statuses)
    else:  # rejected, error or filtered: run it through its channel again (after a fix), like `hub replay`
        n, outcome = _reprocess(hub, msg)
    hub.invalidate()
    hub.wake(channel)
    _store_call(
        audit,
        request,
        p,
        "replay",
        message_id=message_id,
        channel=channel,
        destination=dest,
        queued=n,
        reprocessed=outcome,
        include_sent=include_sent or None,
    )
    log.info("web: message %s replayed by %s (%d deliveries)", message_id, p.name, n)
    return {"message_id": message_id, "queued": n, "reprocessed": outcome}


def _reprocess(hub: WebState, msg: dict[str, Any]) -> tuple[int, str]:
    ch = hub.engine.channels.get(msg["channel"])
    if ch is None:
        raise HTTPException(409, f"channel {msg['channel']!r} is not running: it cannot reprocess the message")
    pr, ids = _store_call(ch.reprocess, hub.store, msg["id"], msg["raw"], msg["content_type"], msg["meta"])
    return len(ids), pr.status


Replayable = Literal["queued", "retry", "sent", "dead"]


def _dead_only() -> list[Replayable]:
    return ["dead"]


class ReplayMany(BaseModel):
    message_ids: list[StoreId] | None = Field(
        None, max_length=10000, description="These messages (else: the filter below)."
    )
    channel: str | None = None
    destination: str | None = None
    statuses: list[Replayable] = Field(
        default_factory=_dead_only, description="Which deliveries to queue again (default: dead ones)."
    )
    since: str | None = Field(None, description="Only messages received since (epoch, duration ago or ISO time).")
    until: str | None = None
    message_type: str | None = None
    control_id: str | None = None
    patient_id: str | None = None
    limit: int = Field(10000, ge=1, le=10000, description="At most this many messages when selecting by a filter.")
    include_sent: bool | None = Field(
        None,
        description="Instead of statuses: false queues again every delivery not sent yet (dead, retrying, queued) "
        "and runs the given messages that were rejected, in error or filtered through their channel again; true "
        "also sends again the deliveries already sent.",
    )
    dry_run: bool = Field(False, description="Say what would be queued or reprocessed, and do nothing.")


@router.post(
    "/replay",
    tags=["replay"],
    summary="Queue again the deliveries of a set of messages, or every dead one of a channel/destination",
)
def replay_many(body: ReplayMany, request: Request, p: Principal = Depends(require("replay"))) -> dict[str, Any]:
    hub = _hub(request)
    statuses: list[str] = list(body.statuses) or ["dead"]
    if body.include_sent is not None:
        statuses = [*queries.NOT_SENT, "sent"] if body.include_sent else list(queries.NOT_SENT)
    if "sent" in statuses and not (body.message_ids or body.channel):
        raise HTTPException(422, "re-sending sent deliveries needs message_ids or a channel")
    ids: list[int] | None = body.message_ids
    narrowed = any((body.since, body.until, body.message_type, body.control_id, body.patient_id))
    if ids is None and narrowed:
        q = SearchQuery(
            channel=body.channel,
            destination=body.destination,
            since=_when(body.since, "since"),
            until=_when(body.until, "until"),
            message_type=body.message_type,
            control_id=body.control_id,
            patient_id=body.patient_id,
            status=statuses[0] if len(statuses) == 1 else None,
            limit=body.limit,
        )
        ids = _store_call(hub.store.message_ids, q)
        if not ids:
            return {"would_queue": [], "would_reprocess": []} if body.dry_run else {"queued": 0, "messages": 0}
    if body.dry_run:
        return _store_call(
            queries.replay_plan,
            hub.store,
            ids,
            channel=body.channel,
            destination=body.destination,
            statuses=statuses,
            limit=body.limit,
        )
    n = _store_call(hub.store.replay, ids, channel=body.channel, destination=body.destination, statuses=statuses)
    reprocessed: list[int] = []
    if body.include_sent is not None and ids:  # the new semantics: rejected, error, filtered ones run again
        plan = _store_call(queries.replay_plan, hub.store, ids, channel=body.channel, statuses=())
        for mid in plan["would_reprocess"]:
            msg = _store_call(hub.store.get_message, mid)
            if msg is not None:
                _reprocess(hub, msg)
                reprocessed.append(mid)
    hub.invalidate()
    hub.wake(body.channel)
    _store_call(
        audit,
        request,
        p,
        "replay_many",
        channel=body.channel,
        destination=body.destination,
        statuses=statuses,
        messages=len(ids) if ids is not None else None,
        message_ids=ids[:100] if ids else None,
        queued=n,
        reprocessed=reprocessed[:100] or None,
        include_sent=body.include_sent,
    )
    log.info("web: %d deliveries replayed by %s", n, p.name)
    out: dict[str, Any] = {"queued": n, "messages": len(ids) if ids is not None else None}
    if body.include_sent is not None:
        out["reprocessed"] = reprocessed
    return out


# ------------------------------------------------------------------------------------------------ users (admin)
class UserCreate(BaseModel):
    name: str = Field(max_length=100)
    role: Literal["viewer", "operator", "analyst", "admin", "sender"]
    password: str | None = Field(None, max_length=1000, description="None: a token-only user (e.g. for Prometheus).")


class UserUpdate(BaseModel):
    role: Literal["viewer", "operator", "analyst", "admin", "sender"] | None = None
    password: str | None = Field(None, max_length=1000)
    disabled: bool | None = None


class TokenCreate(BaseModel):
    label: str | None = Field(None, max_length=100)
    ttl: str | None = Field(None, description="Lifetime as a duration (90d); default: until revoked.")


@router.get("/users", tags=["users"], summary="Every user and their role")
def list_users(request: Request, p: Principal = Depends(require("users"))) -> list[dict[str, Any]]:
    return [u.public() for u in _store_call(_hub(request).auth.list_users)]


@router.post("/users", tags=["users"], status_code=201, summary="Add a user")
def add_user(body: UserCreate, request: Request, p: Principal = Depends(require("users"))) -> dict[str, Any]:
    try:
        user = _store_call(_hub(request).auth.add_user, body.name, body.role, body.password)
    except ValueError as exc:
        raise HTTPException(409 if "exists" in str(exc) else 422, str(exc)) from None
    _store_call(audit, request, p, "user_add", target=body.name, role=body.role)
    return user.public()


@router.patch("/users/{name}", tags=["users"], summary="Change a user's role, password or disabled flag")
def update_user(
    name: str, body: UserUpdate, request: Request, p: Principal = Depends(require("users"))
) -> dict[str, Any]:
    auth = _hub(request).auth
    current = _store_call(auth.get_user, name)
    if current is None:
        raise HTTPException(404, f"no user {name!r}")
    try:  # the store refuses, in the change's own transaction, to remove the last enabled admin
        user = _store_call(auth.update_user, name, role=body.role, password=body.password, disabled=body.disabled)
    except LastAdminError as exc:
        raise HTTPException(409, f"that would leave the hub without an enabled admin: {exc}") from None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    _store_call(
        audit,
        request,
        p,
        "user_change",
        target=name,
        role=body.role,
        disabled=body.disabled,
        password=body.password is not None or None,
    )
    return user.public()


@router.get("/users/{name}/tokens", tags=["users"], summary="A user's API tokens (never the tokens themselves)")
def list_tokens(name: str, request: Request, p: Principal = Depends(require("users"))) -> list[dict[str, Any]]:
    return _store_call(_hub(request).auth.list_tokens, name)


@router.post(
    "/users/{name}/tokens", tags=["users"], status_code=201, summary="Make an API token for a user (shown once)"
)
def create_token(
    name: str, request: Request, body: TokenCreate | None = None, p: Principal = Depends(require("users"))
) -> dict[str, Any]:
    ttl = None
    if body is not None and body.ttl:
        try:
            ttl = parse_duration(body.ttl)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
    try:
        token = _store_call(_hub(request).auth.create_token, name, label=body.label if body else None, ttl=ttl)
    except KeyError:
        raise HTTPException(404, f"no user {name!r}") from None
    _store_call(audit, request, p, "token_create", target=name)
    return {"user": name, "token": token}


@router.delete("/tokens/{token_id}", tags=["users"], summary="Revoke an API token")
def revoke_token(token_id: PathId, request: Request, p: Principal = Depends(require("users"))) -> dict[str, Any]:
    if not _store_call(_hub(request).auth.revoke_token, token_id):
        raise HTTPException(404, f"no token {token_id}")
    _store_call(audit, request, p, "token_revoke", token_id=token_id)
    return {"revoked": token_id}


# ------------------------------------------------------------------------------------------------ audit (admin)
@router.get(
    "/audit", tags=["audit"], summary="Search the audit log: who viewed, replayed, paused or changed what, and when"
)
def search_audit(
    request: Request,
    user: str | None = None,
    action: str | None = Query(
        None,
        description="login, login_failed, view_message, view_raw, search, replay, replay_many, pause, resume, "
        "enable, disable, config_check, config_reload, user_add, user_change, token_create, token_revoke, "
        "password_change",
    ),
    message_id: int | None = _id_query(),
    channel: str | None = None,
    since: str | None = None,
    until: str | None = None,
    before_id: int | None = _id_query(),
    limit: int = Query(100, ge=1, le=1000),
    p: Principal = Depends(require("audit")),
) -> dict[str, Any]:
    rows = _store_call(
        _hub(request).auth.search_audit,
        username=user,
        action=action,
        message_id=message_id,
        channel=channel,
        since=_when(since, "since"),
        until=_when(until, "until"),
        before_id=before_id,
        limit=limit,
    )
    return {"items": rows, "next_before_id": rows[-1]["id"] if len(rows) == limit else None}


# ------------------------------------------------------------------------------------------------ health
@router.get("/openapi.json", tags=["meta"], summary="This API's OpenAPI document", include_in_schema=False)
def openapi(request: Request, p: Principal = Depends(principal)) -> dict[str, Any]:
    schema: dict[str, Any] = request.app.openapi()
    return schema
