"""Plain HTTP connectors: the ``http`` source (served by the hub's web app) and the ``http`` destination.

Source ``http`` (``{type: http, path: /in/lab}``; the web app mounts :meth:`HttpSource.router`, as for ``fhir``):
any body a peer sends with one of the listed ``methods`` becomes one input of the channel — HL7 v2, X12, CSV, JSON,
XML, FHIR or raw bytes, the type named by ``format:`` or else read from the request's ``Content-Type``
(:func:`format_of`; ``application/octet-stream`` or none: the channel sniffs). The sender authenticates with the
API token of a ``sender`` user, or HTTP Basic (that user's name and password) when ``basic: true``, and with a
client certificate when the web app asks for one (``web.tls.client_cert``). The answer comes only after the store
committed the input:

* accepted / filtered → ``status`` (200): an HL7 v2 body is answered with its AA (CA) ACK, anything else with JSON
  naming the message ids (also in ``X-Hub-Message-Id``);
* rejected → 422 with the reason: the AR (CR) ACK with its ERR segment for HL7 v2, the channel's 999 (or TA1) for
  X12 when a route of the channel makes one (``x12_999``), else JSON ``{status, reason, code, location}``;
* the store is down → 503 with ``Retry-After`` (an AE ACK for HL7 v2): nothing was stored, the peer sends again;
  a transform that failed unexpectedly → 500 (the message is stored with status ``error``);
* too large → 413; a method not listed → 405; no or wrong credentials → 401; another role or a user not in
  ``senders`` → 403.

``response: after_delivery`` answers with what the destination ``response_from`` answered (request/response: a
270 in, the clearinghouse's 271 back): its status, content type and body; 502 with its answer when that delivery
went dead; 202 when no answer came within ``response_timeout`` (the message is stored and is still delivered).
An ``Idempotency-Key`` header makes a resent request (after a lost answer) be answered as the first without
storing it twice.

Destination ``http`` (``{type: http, url: 'https://api.example.org/orders/{PID-3.1}', method: PUT}``): the url and
header values are templates (``{message_id}``, ``{control_id}``, any metadata key, or a path of the message such as
``{PID-3.1}``); auth is bearer, basic, OAuth 2 client credentials (the token is cached until it expires and fetched
again on a 401) or none, plus mutual TLS (``tls.cert``/``tls.key``). 2xx → sent, the answer (status, content type,
body) stored with the delivery and, with ``response_to: <channel>``, handed to that channel as a message of its
own; 408/429/5xx, timeouts and connection errors → retry (``Retry-After`` honoured); any other status → dead with
the answer stored. An HL7 v2 ACK in a 2xx answer is judged like MLLP's (AE → retry, AR → dead).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import ssl
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hub.channels.base import Context, Receipt, Receiver, Result
from hub.channels.fhir import AuthBase, BearerAuth, NoAuth
from hub.channels.fhir_delivery import retry_after_seconds
from hub.channels.http_auth import Principal, basic_principal, client_ip, principal
from hub.errors import ConfigError, InputError, PermanentDelivery, RetryableDelivery, retryable_http_status
from hub.message import Message, Outcome, sniff_content_type
from hub.spec import DestinationConfig, SourceConfig, parse_duration

if TYPE_CHECKING:
    from hub.spec import Config as HubConfig

__all__ = ["HttpSource", "HttpDestination", "format_of", "media_type_of", "encode_answer", "decode_answer"]

log = logging.getLogger("hub.http")

for _name in ("httpx", "httpcore"):  # httpx logs each URL at INFO; a templated URL may carry a patient id
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.WARNING)

Format = Literal["hl7v2", "x12", "csv", "json", "xml", "raw", "fhir"]
HL7_MEDIA = "x-application/hl7-v2+er7"

# ---------------------------------------------------------------------------------------------- content types
_MEDIA: dict[str, str] = {
    "application/json": "json",
    "text/json": "json",
    "application/fhir+json": "fhir",
    "application/json+fhir": "fhir",
    "application/xml": "xml",
    "text/xml": "xml",
    "x-application/hl7-v2+er7": "hl7v2",
    "application/hl7-v2": "hl7v2",
    "application/hl7-v2+er7": "hl7v2",
    "application/x-hl7": "hl7v2",
    "text/hl7": "hl7v2",
    "text/x-hl7": "hl7v2",
    "application/edi-x12": "x12",
    "application/x12": "x12",
    "application/x-x12": "x12",
    "text/csv": "csv",
    "application/csv": "csv",
    "text/comma-separated-values": "csv",
}
_OUT_MEDIA = {
    "hl7v2": HL7_MEDIA,
    "x12": "application/edi-x12",
    "csv": "text/csv",
    "json": "application/json",
    "xml": "application/xml",
    "fhir": "application/fhir+json",
    "raw": "application/octet-stream",
}


def format_of(content_type: str | None, body: bytes = b"") -> str | None:
    """The hub's content type for an HTTP ``Content-Type``: application/json → json (fhir when the body names a
    ``resourceType``: EHRs post FHIR as plain JSON too), application/xml and text/xml → xml,
    x-application/hl7-v2+er7 → hl7v2, application/edi-x12 → x12, text/csv → csv, application/fhir+json → fhir,
    ``*+json``/``*+xml`` → json/xml, text/plain → hl7v2 or x12 when the body starts like one (else raw); None for
    no header or application/octet-stream (the channel then uses its ``format`` or sniffs); raw for anything else."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if not media or media == "application/octet-stream":
        return None
    known = _MEDIA.get(media)
    if known == "json" and sniff_content_type(body) == "fhir":
        return "fhir"  # many EHRs post FHIR resources as plain application/json
    if known is not None:
        return known
    if media.endswith("+json"):
        return "json"
    if media.endswith("+xml"):
        return "xml"
    if media == "text/plain":
        sniffed = sniff_content_type(body)
        return sniffed if sniffed in ("hl7v2", "x12") else "raw"
    return "raw"


def charset_of(content_type: str | None) -> str | None:
    for part in (content_type or "").split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return None


def media_type_of(content_type: str) -> str:
    """The HTTP ``Content-Type`` for a hub content type (x-application/hl7-v2+er7, application/edi-x12 …)."""
    return _OUT_MEDIA.get(content_type, "application/octet-stream")


# ---------------------------------------------------------------------------------------------- stored answers
def encode_answer(
    status: int, reason: str, content_type: str | None, text: str, notes: dict[str, str] | None = None
) -> str:
    """How the ``http`` destination stores what the peer answered: ``HTTP <status> <reason>``, its Content-Type (and
    the hub's own notes, ``X-Hub-…: …``), an empty line, the body — readable in ``hub show`` and the dashboard, and
    read back by :func:`decode_answer`."""
    lines = [f"HTTP {status} {reason}".rstrip()]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    for k, v in (notes or {}).items():
        lines.append(f"{k}: {_header_text(v)}")
    return "\n".join(lines) + "\n\n" + text


_STATUS_LINE = re.compile(r"HTTP (\d{3})(?: [^\n]*)?\n", re.ASCII)


def decode_answer(stored: str | None) -> tuple[int | None, str | None, str]:
    """(status, content type, body) of a stored answer; (None, None, text) for another destination's answer (an
    MLLP ACK, a file name …)."""
    if not stored:
        return None, None, ""
    m = _STATUS_LINE.match(stored)
    end = stored.find("\n\n", m.end() - 1) if m is not None else -1
    if m is None or end < 0:
        return None, None, stored
    ctype = None
    for line in stored[m.end() : end].split("\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-type":
            ctype = value.strip() or None
    return int(m.group(1)), ctype, stored[end + 2 :]


# ---------------------------------------------------------------------------------------------- source
_RESERVED = (
    "/api", "/static", "/login", "/healthz", "/readyz", "/metrics", "/messages", "/dead-letters", "/users", "/audit",
    "/alerts", "/channels",
)  # fmt: skip


class HttpSource:
    class Config(SourceConfig):
        """Receive messages over HTTP(S), served by the hub's web app (``web.listen``, ``web.tls``):
        ``{type: http, path: /in/lab, methods: [POST]}``.

        Every request needs a sender's credentials: the API token of a user of role ``sender``
        (``Authorization: Bearer …``), or with ``basic: true`` that user's name and password as HTTP Basic. The
        answer comes only after the store committed the message: ``status`` (200) when accepted or filtered (an
        HL7 v2 body is answered with its ACK, anything else with JSON naming the message ids), 422 with the reason
        when rejected (the AR ACK for HL7 v2, the channel's 999 for X12 when a route makes one), 503 with
        ``Retry-After`` when the store is down, 413 when too large. With ``response: after_delivery`` the answer is
        what the destination ``response_from`` answered (request/response).
        """

        type: Literal["http"] = "http"
        format: Format | None = Field(
            default=None,
            description="Content type of every body: hl7v2, x12, csv, json, xml, fhir or raw. Without it each "
            "request's Content-Type decides (application/json → json, application/xml or text/xml → xml, "
            "x-application/hl7-v2+er7 → hl7v2, application/edi-x12 → x12, text/csv → csv, text/plain → hl7v2 or x12 "
            "when the body starts like one); application/octet-stream or none: sniffed.",
        )
        path: str | None = Field(
            None,
            description="URL path served (default /http/<channel>); not under /api, /static and the dashboard's pages.",
            examples=["/in/lab_results"],
        )
        methods: list[Literal["POST", "PUT", "PATCH", "GET", "DELETE"]] = Field(
            default=["POST"],
            min_length=1,
            description="HTTP methods taken (others: 405). A request without a body (a GET) becomes a JSON message "
            "{method, path, query}.",
        )
        senders: list[str] = Field(
            default_factory=list,
            description="Users (role sender) who may post here; empty: any sender "
            "(`hub user add lab --role sender --no-password`, `hub user token lab`). 401 without credentials, 403 for "
            "another role or user.",
            examples=[["lab"]],
        )
        basic: bool = Field(
            False,
            description="Also take HTTP Basic (a sender user's name and password, `hub user add lab --role sender`) "
            "for legacy peers that cannot send a token. Use it over HTTPS only (web.tls).",
        )
        client_cert: bool = Field(
            False,
            description="Mutual TLS: only peers with a client certificate signed by web.tls.ca; needs "
            "web.tls.client_cert: required in hub.yaml (the web app's TLS handshake checks it, before any request).",
        )
        status: Literal[200, 201, 202, 204] = Field(
            200, description="The HTTP status of an accepted (or filtered) message, once it is stored."
        )
        response: Literal["after_store", "after_delivery"] = Field(
            "after_store",
            description="after_store: answer once stored; after_delivery: answer with what the destination "
            "response_from answered (its status, content type and body; 502 with its answer when that delivery went "
            "dead; 202 when none came within response_timeout — the message is stored and still delivered).",
        )
        response_from: str | None = Field(
            None,
            description="With after_delivery: the destination of this channel whose answer is returned (default: the "
            "channel's only destination).",
        )
        response_timeout: str | int | float = Field(
            "30s", description="With after_delivery: the longest wait for the destination's answer before 202."
        )
        max_bytes: int = Field(20_000_000, ge=1, description="Largest body accepted (413 beyond).")
        idempotency_header: str | None = Field(
            "Idempotency-Key",
            description="A request carrying this header with a value already taken is answered as the first one "
            "and not stored twice (a sender resending after a lost answer); null: not used.",
        )
        meta_headers: list[str] = Field(
            default_factory=list,
            description="Request headers kept in the message's metadata (as http_<name>), e.g. [X-Correlation-Id].",
        )

        _v_timeout = field_validator("response_timeout")(lambda cls, v: (parse_duration(v), v)[1])

        @field_validator("path")
        @classmethod
        def _path(cls, v: str | None) -> str | None:
            if v is None:
                return v
            if not v.startswith("/") or "{" in v or "?" in v:
                raise ValueError(f"path {v!r} must start with / and hold no {{…}} or ?")
            p = v.rstrip("/") or "/"
            if p == "/" or any(p == r or p.startswith(r + "/") for r in _RESERVED):
                raise ValueError(f"path {v!r} is the web app's own (not /, {', '.join(_RESERVED)})")
            return v

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx
        self.path = (config.path or f"/http/{ctx.channel}").rstrip("/")
        self.timeout = parse_duration(config.response_timeout)
        self._receive: Receiver | None = None
        self._x12_ack: Any = None  # the channel's x12_999 transform, built when first needed
        cfg = ctx.config
        self.response_from = config.response_from
        if cfg is not None and ctx.channel in cfg.channel_files:
            spec = cfg.channel(ctx.channel)
            if config.response == "after_delivery":
                if self.response_from is None:
                    if len(spec.destinations) != 1:
                        raise ConfigError("response: after_delivery needs response_from (the destination whose answer)")
                    self.response_from = next(iter(spec.destinations))
                elif self.response_from not in spec.destinations:
                    raise ConfigError(f"response_from: no destination named {self.response_from!r} in this channel")
            if config.client_cert:
                tls = cfg.hub.web.tls
                if tls is None or tls.client_cert != "required":
                    raise ConfigError(
                        "client_cert: true needs web.tls with client_cert: required in hub.yaml (the web app's TLS "
                        "handshake checks the peer's certificate)"
                    )
        elif config.response == "after_delivery" and self.response_from is None:
            raise ConfigError("response: after_delivery needs response_from")

    async def start(self, receive: Receiver) -> None:
        self._receive = receive

    async def stop(self) -> None:
        self._receive = None

    # ------------------------------------------------------------------ the route
    def router(self) -> APIRouter:
        """The routes the web app mounts for this source: ``path`` for each of ``methods``. Nothing is anonymous."""
        allowed = frozenset(self.config.senders)
        channel = self.ctx.channel
        basic = self.config.basic
        challenge = 'Bearer, Basic realm="hub"' if basic else "Bearer"

        def sender(request: Request) -> Principal:  # sync: FastAPI runs it in a thread (it reads the store)
            header = request.headers.get("authorization", "")
            p: Principal | None = None
            if header[:6].lower() == "basic ":
                if not basic:
                    raise HTTPException(
                        401,
                        f"channel {channel} takes an API token (Authorization: Bearer …), not HTTP Basic",
                        headers={"WWW-Authenticate": challenge},
                    )
                p = basic_principal(request)
                if p is None:
                    raise HTTPException(401, "wrong user name or password", headers={"WWW-Authenticate": challenge})
            else:
                try:
                    p = principal(request)
                except HTTPException as exc:
                    if exc.status_code == 401:
                        raise HTTPException(401, exc.detail, headers={"WWW-Authenticate": challenge}) from None
                    raise
            if not p.can("send"):
                raise HTTPException(403, f"your role ({p.user.role}) may not do this (needs 'send')")
            if allowed and p.name not in allowed:
                raise HTTPException(403, f"user {p.name} may not post to channel {channel} (not one of its senders)")
            return p

        router = APIRouter()

        async def endpoint(request: Request, who: Principal = Depends(sender)) -> Response:
            return await self.serve(request, who)

        router.add_api_route(
            self.path,
            endpoint,
            methods=list(self.config.methods),
            summary=f"Receive messages for channel {channel}",
            response_class=Response,
        )
        return router

    async def _body(self, request: Request) -> bytes | None:
        """The body, or None when it is larger than max_bytes."""
        limit = self.config.max_bytes
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def serve(self, request: Request, who: Principal) -> Response:
        raw = await self._body(request)
        if raw is None:
            return _json(413, {"status": "refused", "reason": f"the body is larger than {self.config.max_bytes} bytes"})
        header = request.headers.get("content-type")
        meta: dict[str, Any] = {"sender": who.name, "http_method": request.method}
        if request.query_params:
            meta["http_query"] = dict(request.query_params)
        for name in self.config.meta_headers:
            value = request.headers.get(name)
            if value is not None:
                meta[f"http_{name.lower().replace('-', '_')}"] = value[:500]
        content_type: str | None
        if not raw:
            if request.method in ("POST", "PUT", "PATCH"):
                return _json(400, {"status": "refused", "reason": "the request has no body"})
            query: dict[str, Any] = {}
            for k, v in request.query_params.multi_items():
                query.setdefault(k, []).append(v)
            doc = {
                "method": request.method,
                "path": request.url.path,
                "query": {k: v[0] if len(v) == 1 else v for k, v in query.items()},
            }
            raw = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
            content_type = "json"
        else:
            content_type = None if self.config.format else format_of(header, raw)
            charset = charset_of(header)
            if charset:
                meta["encoding"] = charset
        dedup: str | None = None
        if self.config.idempotency_header:
            key = request.headers.get(self.config.idempotency_header)
            if key:
                dedup = f"http:{self.ctx.channel}:{who.name}:{key.strip()[:200]}"
        return await self.handle(
            raw, content_type, source_ref=f"http:{client_ip(request)}{request.url.path}", dedup_key=dedup, meta=meta
        )

    async def handle(
        self,
        raw: bytes,
        content_type: str | None,
        *,
        source_ref: str | None = None,
        dedup_key: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Response:
        """Hand one body to the channel and answer from the receipt (see the module's docstring)."""
        receive = self._receive
        fmt = content_type or self.config.format or sniff_content_type(raw)
        if receive is None:
            return self._unavailable(raw, fmt, "the channel is not running (paused or stopping)")
        try:
            kwargs: dict[str, Any] = {"source_ref": source_ref or self.path, "dedup_key": dedup_key, "meta": meta}
            if content_type is not None:
                kwargs["content_type"] = content_type
            receipt = await receive(raw, **kwargs)
        except Exception as exc:
            log.error("channel %s: receiving failed: %s", self.ctx.channel, type(exc).__name__)
            return self._unavailable(raw, fmt, "the hub could not store the message")
        ids = [r.message_id for r in receipt.results if r.message_id is not None]
        headers = {"X-Hub-Message-Id": ",".join(map(str, ids))} if ids else {}
        outcome = receipt.outcome
        if outcome is Outcome.ERROR and not ids:
            return self._unavailable(raw, fmt, "; ".join(receipt.reasons) or "the hub could not store the message")
        if (
            outcome is Outcome.ACCEPTED
            and self.config.response == "after_delivery"
            and self.ctx.engine is not None
            and self.response_from is not None
        ):
            mid = next(r.message_id for r in receipt.results if r.outcome is Outcome.ACCEPTED and r.message_id)
            assert mid is not None
            got = await self.ctx.engine.wait_response(mid, self.response_from, self.timeout)
            if got is not None:
                return self._relay(got, mid, headers)
        status = {Outcome.REJECTED: 422, Outcome.ERROR: 500}.get(outcome, self.config.status)
        if fmt == "hl7v2":
            ack = _hl7_answer(receipt, raw)
            if ack is not None:
                return Response(ack, status_code=status, media_type=HL7_MEDIA, headers=headers)
        if outcome is Outcome.REJECTED and fmt == "x12":
            bad = next(r for r in receipt.results if r.outcome is Outcome.REJECTED)
            x12 = await self._x12_reply(bad, raw)
            if x12 is not None:
                headers["X-Hub-Reason"] = _header_text(bad.reason or "rejected")
                return Response(x12, status_code=422, media_type="application/edi-x12", headers=headers)
        if status == 204:
            return Response(status_code=204, headers=headers)
        return _json(status, _summary(receipt), headers)

    def _unavailable(self, raw: bytes, fmt: str, reason: str) -> Response:
        """503 with Retry-After: nothing stored, the peer must send again (an AE ACK for HL7 v2)."""
        headers = {"Retry-After": "10"}
        if fmt == "hl7v2":
            ack = _hl7_error(raw, reason)
            if ack is not None:
                return Response(ack, status_code=503, media_type=HL7_MEDIA, headers=headers)
        return _json(503, {"status": "error", "reason": reason + "; send it again later"}, headers)

    def _relay(self, got: tuple[str, str | None], mid: int, headers: dict[str, str]) -> Response:
        state, stored = got
        status, ctype, body = decode_answer(stored)
        dest = self.response_from
        if state == "sent":
            if ctype is None:
                ctype = HL7_MEDIA if body.lstrip()[:3] == "MSH" else "text/plain; charset=utf-8"
            code = status if status is not None and 200 <= status < 300 else 200
            return Response(body.encode("utf-8"), status_code=code, media_type=ctype, headers=headers)
        if state == "dead":
            headers = {**headers, "X-Hub-Reason": f"the destination {dest} did not take the message"}
            if body:
                return Response(
                    body.encode("utf-8"),
                    status_code=502,
                    media_type=ctype or "text/plain; charset=utf-8",
                    headers=headers,
                )
            return _json(502, {"status": "dead", "message_ids": [mid], "reason": headers["X-Hub-Reason"]}, headers)
        return _json(
            202,
            {
                "status": "accepted",
                "message_ids": [mid],
                "detail": f"stored; no answer from {dest} within {self.timeout:g}s (it is still being delivered)",
            },
            headers,
        )

    async def _x12_reply(self, bad: Result, raw: bytes) -> bytes | None:
        """The 999 (or TA1) of the channel's ``x12_999`` transform for a rejected X12 body, numbered from the store;
        None when the channel makes none or it cannot be made."""
        t = self._x12_ack
        if t is None:
            t = self._x12_ack = self._find_x12_ack() or False
        if t is False:
            return None
        content = bad.message.raw if bad.message is not None else raw
        try:
            out = t(Message(raw=content, content_type="x12", channel=self.ctx.channel))
        except InputError:
            return None
        except Exception as exc:
            log.warning("channel %s: could not make the 999: %s", self.ctx.channel, type(exc).__name__)
            return None
        store = self.ctx.store
        partner = getattr(t, "numbered_for", None)
        if store is None or partner is None:
            return bytes(out.raw)
        from hub.channels.x12 import StoreControlNumbers
        from hub.transforms.x12 import number_interchange

        try:
            return await asyncio.to_thread(number_interchange, out.raw, partner, StoreControlNumbers(store))
        except Exception as exc:
            log.warning("channel %s: could not number the 999: %s", self.ctx.channel, type(exc).__name__)
            return None

    def _find_x12_ack(self) -> Any:
        cfg = self.ctx.config
        if cfg is None or self.ctx.channel not in cfg.channel_files:
            return None
        from hub import registry

        for route in cfg.channel(self.ctx.channel).routes:
            for t in route.transforms:
                if isinstance(t, dict) and t.get("type") == "x12_999":
                    cls = registry.lookup("transform", "x12_999")
                    try:
                        return cls(cls.Config.model_validate(t), self.ctx)
                    except Exception:
                        return None
        return None


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _header_text(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else " " for c in text)[:300]


def _summary(receipt: Receipt) -> dict[str, Any]:
    outcome = receipt.outcome
    ids = [r.message_id for r in receipt.results if r.message_id is not None]
    body: dict[str, Any] = {"status": outcome.value, "message_ids": ids}
    if any(r.duplicate for r in receipt.results):
        body["duplicate"] = True
    if outcome in (Outcome.REJECTED, Outcome.ERROR):
        bad = next(r for r in receipt.results if r.outcome is outcome)
        body["reason"] = bad.reason or outcome.value
        if bad.code:
            body["code"] = bad.code
        if bad.location:
            body["location"] = bad.location
        if outcome is Outcome.ERROR:
            body["reason"] += "; the message is stored with status error (an operator can reprocess it)"
    elif outcome is Outcome.FILTERED:
        body["detail"] = "stored; no route wanted it"
    return body


def _hl7_answer(receipt: Receipt, raw: bytes) -> bytes | None:
    """The ACK of each message (a BHS…BTS batch of ACKs for a batch), or None when none can be built."""
    from hub.transforms.hl7v2 import Hl7Message, ack_code, build_ack, parse
    from hub.transforms.hl7v2.ack import ack_for_unparseable, recover_msh

    acks: list[bytes] = []
    for r in receipt.results:
        msg = r.message.parsed if r.message is not None else None
        content = r.message.raw if r.message is not None else raw
        if not isinstance(msg, Hl7Message):
            if r.outcome in (Outcome.ACCEPTED, Outcome.FILTERED):
                try:
                    msg = parse(content)
                except InputError:
                    msg = recover_msh(content)
            else:
                from hub.errors import Hl7ParseError

                err = Hl7ParseError(
                    r.reason or "the message cannot be read", code=r.code or "100", location=r.location or ""
                )
                try:
                    ack = ack_for_unparseable(content, err)
                except Exception:
                    ack = None
                if ack is None:
                    return None
                acks.append(ack)
                continue
        if msg is None:
            return None
        code = ack_code(r.outcome, msg)
        if r.outcome in (Outcome.ACCEPTED, Outcome.FILTERED):
            acks.append(build_ack(msg, code))
        else:
            acks.append(build_ack(msg, code, text=r.reason, error_code=r.code or "207", error_location=r.location))
    if not acks:
        return None
    if len(acks) == 1:
        return acks[0]
    body = b"".join(a if a.endswith(b"\r") else a + b"\r" for a in acks)
    return b"BHS|^~\\&\r" + body + f"BTS|{len(acks)}\r".encode()


def _hl7_error(raw: bytes, reason: str) -> bytes | None:
    """An AE (CE) for a message that could not be stored, when its MSH can be read."""
    from hub.transforms.hl7v2 import build_ack
    from hub.transforms.hl7v2.ack import ack_mode, recover_msh

    try:
        msg = recover_msh(raw)
        if msg is None:
            return None
        return build_ack(msg, "CE" if ack_mode(msg) == "enhanced" else "AE", text=reason, error_code="207")
    except Exception:
        return None


# ---------------------------------------------------------------------------------------------- destination auth
class BasicAuth(AuthBase):
    """HTTP Basic: ``{type: basic, username: hub, password: ${PEER_PASSWORD}}``."""

    type: Literal["basic"] = "basic"
    username: str = Field(description="User name.")
    password: str = Field(description="Password (write ${VAR}).")


class OAuth2Auth(AuthBase):
    """OAuth 2 client credentials: a token from ``token_url``, cached until it expires (less 30 s) and fetched again
    when the server answers 401."""

    type: Literal["oauth2"] = "oauth2"
    token_url: str = Field(
        description="The authorization server's token endpoint.", examples=["https://idp.example.org/oauth2/token"]
    )
    client_id: str = Field(description="The client id.")
    client_secret: str = Field(description="The client secret (write ${VAR}).")
    scope: str | None = Field(None, description="Scopes requested (space-separated), if the server wants them.")
    audience: str | None = Field(None, description="The audience parameter some servers want (Auth0, Okta …).")
    client_auth: Literal["basic", "post"] = Field(
        "basic",
        description="How the client authenticates to the token endpoint: basic (HTTP Basic, client_secret_basic) or "
        "post (client_id and client_secret in the form, client_secret_post).",
    )


HttpAuth = Annotated[NoAuth | BearerAuth | BasicAuth | OAuth2Auth, Field(discriminator="type")]


class TlsSettings(BaseModel):
    """TLS towards the server: which CA to trust, and the hub's client certificate for mutual TLS."""

    model_config = ConfigDict(extra="forbid")

    verify: bool = Field(default=True, description="Check the server's certificate (false only for a test peer).")
    ca: str | None = Field(
        default=None, description="PEM CA bundle the server's certificate is checked against (default: the system's)."
    )
    cert: str | None = Field(
        default=None, description="PEM client certificate (chain) for mutual TLS, relative to home."
    )
    key: str | None = Field(default=None, description="PEM private key of cert, relative to home.")

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls: give both cert and key (mutual TLS), or neither")
        return self


@dataclass
class _Token:
    value: str | None = None
    expires: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    fetched: int = 0  # how many tokens were fetched (tests, logs)


class _Authorizer:
    """The Authorization header of each request; OAuth 2 tokens are fetched when needed and cached."""

    def __init__(self, auth: NoAuth | BearerAuth | BasicAuth | OAuth2Auth, timeout: float) -> None:
        self.auth = auth
        self.timeout = timeout
        self.token = _Token()

    def invalidate(self) -> None:
        self.token.value = None
        self.token.expires = 0.0

    async def header(self, client: httpx.AsyncClient) -> str | None:
        auth = self.auth
        if isinstance(auth, BearerAuth):
            return auth.header()
        if isinstance(auth, BasicAuth):
            pair = f"{auth.username}:{auth.password}".encode()
            return "Basic " + base64.b64encode(pair).decode("ascii")
        if not isinstance(auth, OAuth2Auth):
            return None
        tok = self.token
        async with tok.lock:
            if tok.value is None or time.time() >= tok.expires:
                await self._fetch(client, auth)
            return f"Bearer {tok.value}"

    async def _fetch(self, client: httpx.AsyncClient, auth: OAuth2Auth) -> None:
        form = {"grant_type": "client_credentials"}
        headers = {"Accept": "application/json"}
        if auth.scope:
            form["scope"] = auth.scope
        if auth.audience:
            form["audience"] = auth.audience
        if auth.client_auth == "post":
            form.update(client_id=auth.client_id, client_secret=auth.client_secret)
        else:
            pair = f"{quote(auth.client_id, safe='')}:{quote(auth.client_secret, safe='')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        try:
            r = await client.post(auth.token_url, data=form, headers=headers, timeout=self.timeout)
        except httpx.TimeoutException as exc:
            raise RetryableDelivery(f"OAuth 2 token request timed out after {self.timeout:g}s") from exc
        except httpx.TransportError as exc:
            raise RetryableDelivery(f"OAuth 2 token request failed: {type(exc).__name__}: {exc}") from exc
        if r.status_code != 200:
            err = RetryableDelivery if retryable_http_status(r.status_code) else PermanentDelivery
            raise err(
                f"the OAuth 2 token endpoint answered HTTP {r.status_code}",
                response=r.text[:4000] or None,
                retry_after=retry_after_seconds(r),
            )
        try:
            body = r.json()
            value = str(body["access_token"])
        except (ValueError, KeyError, TypeError):
            raise PermanentDelivery("the OAuth 2 token endpoint answered without an access_token") from None
        expires_in = body.get("expires_in") if isinstance(body, dict) else None
        try:
            lifetime = float(expires_in) if expires_in is not None else 300.0
        except (TypeError, ValueError):
            lifetime = 300.0
        self.token.value = value
        self.token.expires = time.time() + max(0.0, lifetime - 30)
        self.token.fetched += 1


# ---------------------------------------------------------------------------------------------- templates
_TEMPLATE = re.compile(r"\{\{|\}\}|\{([^{}]+)\}")
_META_NAMES = ("control_id", "message_type", "trigger", "sending_app", "sending_facility", "patient_id")


def _template_names(template: str) -> list[str]:
    return [m.group(1).strip() for m in _TEMPLATE.finditer(template) if m.group(1)]


def _check_template(template: str) -> str:
    rest = _TEMPLATE.sub("", template)
    if "{" in rest or "}" in rest:
        raise ValueError(f"{template!r}: an unbalanced {{ or }} (write {{{{ and }}}} for literal braces)")
    return template


def _value(name: str, message: Message) -> str | None:
    if name == "message_id":
        return str(message.id) if message.id is not None else None
    if name == "delivery_id":
        v = message.meta.get("delivery_id")
        return str(v) if v is not None else None
    if name == "channel":
        return message.channel
    if name.startswith("meta."):
        v = message.meta.get(name[5:])
        return None if v is None else str(v)
    if name in _META_NAMES and message.meta.get(name) is not None:
        return str(message.meta[name])
    from hub.transforms.document import document_of

    try:
        v = document_of(message).get(name)
    except InputError:
        return None
    return None if v in (None, "") else str(v)


def render(template: str, message: Message, *, url: bool) -> str:
    """Fill ``{name}`` in a template from the message (see :class:`HttpDestination.Config`); a value in a URL is
    percent-encoded. PermanentDelivery when a name has no value (sending to a wrong URL would be worse)."""
    if "{" not in template and "}" not in template:
        return template

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "{{":
            return "{"
        if m.group(0) == "}}":
            return "}"
        name = m.group(1).strip()
        v = _value(name, message)
        if v is None:
            raise PermanentDelivery(f"{{{name}}} has no value in this message (url or header template)")
        if url:
            return quote(v, safe="")
        if "\r" in v or "\n" in v:
            raise PermanentDelivery(f"{{{name}}} holds a line break: not usable in a header")
        return v

    return _TEMPLATE.sub(sub, template)


# ---------------------------------------------------------------------------------------------- destination
class HttpDestination:
    class Config(DestinationConfig):
        """Send each message in an HTTP request: ``{type: http, url: https://api.example.org/in, method: POST}``.

        ``url`` and header values are templates: ``{message_id}``, ``{delivery_id}``, ``{channel}``,
        ``{control_id}``, ``{message_type}``, ``{patient_id}``, ``{meta.KEY}``, or a path of the message
        (``{PID-3.1}``, ``{ISA13}``, ``{Patient.id}``); a value in the URL is percent-encoded, a missing one makes
        the delivery dead. ``${VAR}`` (environment) is filled when the configuration loads — use it for secrets.
        2xx → sent, with the answer (status, content type, body) stored with the delivery; 408, 429, 5xx, timeouts
        and connection errors → retry (``Retry-After`` honoured); other statuses → dead with the answer stored.
        """

        type: Literal["http"] = "http"
        url: str = Field(
            description="The URL (a template).", examples=["https://api.example.org/orders/{control_id}", "${LAB_URL}"]
        )
        method: Literal["POST", "PUT", "PATCH", "GET", "DELETE"] = Field("POST", description="HTTP method.")
        headers: dict[str, str] = Field(
            default_factory=dict,
            description="Extra request headers; values are templates (e.g. {X-Correlation-Id: '{control_id}'}).",
        )
        content_type: str | None = Field(
            None,
            description="The request's Content-Type (default from the message: x-application/hl7-v2+er7, "
            "application/edi-x12, text/csv, application/json, application/xml, application/fhir+json, "
            "application/octet-stream).",
        )
        body: Literal["auto", "message", "none"] = Field(
            "auto", description="Send the message as the body (message), none, or auto: none for GET and DELETE."
        )
        auth: HttpAuth = Field(
            default_factory=NoAuth,
            description="none; bearer (token); basic (username, password); oauth2 (client credentials: token_url, "
            "client_id, client_secret, scope, audience, client_auth).",
        )
        tls: TlsSettings = Field(
            default_factory=TlsSettings,
            description="verify, ca (trust), and cert + key (the hub's client certificate, mutual TLS).",
        )
        timeout: str | int | float = Field("30s", description="Time allowed for the whole request and answer.")
        connect_timeout: str | int | float = Field("10s", description="Time allowed to connect (and TLS handshake).")
        hl7_ack: bool = Field(
            True,
            description="When the answer to an HL7 v2 message is an HL7 ACK, judge it as MLLP does: AA/CA sent, "
            "AE/CE retry, AR/CR dead.",
        )
        response_to: str | None = Field(
            None,
            description="A channel of this hub that receives each 2xx answer's body as a message of its own (a 271 "
            "for the 270 sent, a result for an order). If that channel cannot take it (not running, store down) the "
            "request is sent again later; a rejected answer stays in that channel as rejected.",
        )
        max_response_bytes: int = Field(
            10_000_000, ge=1, description="Most bytes of an answer kept with the delivery (the rest is cut off)."
        )

        _v_durations = field_validator("timeout", "connect_timeout")(lambda cls, v: (parse_duration(v), v)[1])

        @field_validator("url")
        @classmethod
        def _url(cls, v: str) -> str:
            if not v.startswith(("http://", "https://")):
                raise ValueError(f"{v!r} is not an http(s) URL")
            return _check_template(v)

        @field_validator("headers")
        @classmethod
        def _headers(cls, v: dict[str, str]) -> dict[str, str]:
            for value in v.values():
                _check_template(value)
            return v

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx
        self.timeout = parse_duration(config.timeout)
        self.connect_timeout = parse_duration(config.connect_timeout)
        self.authorizer = _Authorizer(config.auth, self.timeout)
        self._client: httpx.AsyncClient | None = None
        self.transport: httpx.AsyncBaseTransport | None = None  # tests may inject one
        self.reply_format: str | None = None  # the response_to channel's own format, if it names one
        cfg: HubConfig | None = ctx.config
        if config.response_to is not None and cfg is not None:
            names = {c.name for c in cfg.channels}
            if config.response_to not in names:
                raise ConfigError(f"response_to: no channel named {config.response_to!r}")
            fmt = cfg.channel(config.response_to).source.get("format")
            self.reply_format = str(fmt) if fmt else None
        tls = config.tls
        for f in (tls.ca, tls.cert, tls.key):
            if f is not None and not ctx.testing and not ctx.resolve(f).is_file():
                raise ConfigError(f"tls: {f} is not a file")

    def _ssl(self) -> ssl.SSLContext | bool:
        tls = self.config.tls
        if not tls.verify and tls.cert is None:
            return False
        ctx = ssl.create_default_context(cafile=str(self.ctx.resolve(tls.ca)) if tls.ca else None)
        if not tls.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if tls.cert is not None and tls.key is not None:
            ctx.load_cert_chain(str(self.ctx.resolve(tls.cert)), str(self.ctx.resolve(tls.key)))
        return ctx

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            try:
                verify = self._ssl()
            except (OSError, ssl.SSLError) as exc:
                raise PermanentDelivery(f"tls: cannot load the certificates: {exc}") from None
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                verify=verify,
                transport=self.transport,
                follow_redirects=False,
            )
        return self._client

    async def send(self, message: Message) -> str | None:
        c = self.config
        url = render(c.url, message, url=True)
        headers = {k: render(v, message, url=False) for k, v in c.headers.items()}
        with_body = c.body == "message" or (c.body == "auto" and c.method not in ("GET", "DELETE"))
        content = message.raw if with_body else None
        if content is not None and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = c.content_type or media_type_of(message.content_type)
        r = await self._call(c.method, url, content, headers)
        return await self._judge(message, url, r)

    async def _call(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> httpx.Response:
        client = self._http()
        oauth = isinstance(self.config.auth, OAuth2Auth)
        where = _where(url)
        for attempt in (1, 2):
            auth = await self.authorizer.header(client)
            if auth:
                headers["Authorization"] = auth
            try:
                r = await client.request(method, url, content=body, headers=headers)
            except httpx.TimeoutException as exc:
                raise RetryableDelivery(
                    f"{method} {where}: no answer within {self.timeout:g}s ({type(exc).__name__})"
                ) from exc
            except (httpx.TransportError, ssl.SSLError, OSError) as exc:  # TLS 1.3 alerts may come as ssl.SSLError
                raise RetryableDelivery(f"{method} {where}: {type(exc).__name__}: {exc}") from exc
            if r.status_code == 401 and oauth and attempt == 1:
                self.authorizer.invalidate()  # revoked or expired early: one new token, then judge the answer
                continue
            return r
        return r

    async def _judge(self, message: Message, url: str, r: httpx.Response) -> str:
        status = r.status_code
        text = r.text
        cap = self.config.max_response_bytes
        stored = encode_answer(status, r.reason_phrase, r.headers.get("content-type"), text[:cap])
        where = f"{r.request.method} {_where(url)}"
        if status >= 300:
            reason = f"{where}: HTTP {status} {r.reason_phrase}".rstrip()
            if 300 <= status < 400:
                reason += f" to {r.headers.get('location', '?')} (redirects are not followed: fix the url)"
            if retryable_http_status(status):
                raise RetryableDelivery(reason, response=stored, retry_after=retry_after_seconds(r))
            raise PermanentDelivery(reason, response=stored)
        if self.config.hl7_ack and message.content_type == "hl7v2" and text.lstrip()[:3] == "MSH" and "MSA" in text:
            from hub.channels.mllp.sender import ack_summary

            code, _, why = ack_summary(r.content)
            if code in ("AE", "CE"):
                raise RetryableDelivery(f"{where}: the ACK is {code}: {why or 'application error'}", response=stored)
            if code in ("AR", "CR"):
                raise PermanentDelivery(f"{where}: the ACK is {code}: {why or 'rejected'}", response=stored)
        if self.config.response_to is not None and r.content:
            note = await self._feed(message, r)
            stored = encode_answer(
                status, r.reason_phrase, r.headers.get("content-type"), text[:cap], {"X-Hub-Reply": note}
            )
        return stored

    async def _feed(self, message: Message, r: httpx.Response) -> str:
        """Hand the answer's body to the ``response_to`` channel; keyed by the delivery, so a resend after a crash
        does not make it twice. RetryableDelivery when the channel cannot take it now."""
        target = self.config.response_to
        assert target is not None
        engine = self.ctx.engine
        receive = engine.channel_input(target) if engine is not None else None
        if receive is None:
            raise RetryableDelivery(f"response_to: channel {target!r} is not running; the request is sent again later")
        origin = f"http:{message.channel}/{message.meta.get('destination', '')}/{message.id}"
        kwargs: dict[str, Any] = {
            "source_ref": origin,
            "dedup_key": f"{origin}/{message.meta.get('delivery_id')}",
            "meta": {"in_reply_to": message.id, "reply_channel": message.channel},
        }
        if self.reply_format is None:
            fmt = format_of(r.headers.get("content-type"), r.content)
            if fmt is not None:
                kwargs["content_type"] = fmt
        receipt = await receive(r.content, **kwargs)
        ids = ",".join(str(x.message_id) for x in receipt.results if x.message_id is not None)
        if receipt.outcome is Outcome.ERROR and not ids:
            raise RetryableDelivery(
                f"response_to: channel {target} could not store the answer: {'; '.join(receipt.reasons)}"
            )
        return f"{receipt.outcome.value} by channel {target} as message {ids}"

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def _where(url: str) -> str:
    """The URL without its query (which may carry identifiers) for reasons and logs."""
    return url.split("?", 1)[0]
