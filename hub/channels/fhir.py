"""The FHIR REST connectors: the ``fhir_rest`` destination, the ``fhir`` HTTP source and the ``fhir_poll`` source.

Destination (``{type: fhir_rest, base_url: ${EHR_FHIR_URL}}``): a ``transaction``/``batch`` Bundle is written in
chunks of at most ``max_entries``, each entry after the entries it references, as transactions, batches or one
request per resource (``mode``); a conditional update is merged into what the server holds (``update: merge``, the
rules in ``mappings/fhir/merge.yaml``) — see :mod:`hub.channels.fhir_delivery`. Anything else (a single resource, a
``collection``) is written resource by resource — the entry's own request (conditional ``PUT Patient?identifier=…``,
``POST`` with ``If-None-Exist``), else ``PUT [type]/[id]`` or ``POST [type]``. Auth: a bearer token, or SMART
backend services (client-credentials grant with a JWT assertion signed by the client's private key; the access
token is cached until it expires and fetched again on a 401). Answers: 2xx → sent, every entry's status and
location are the stored answer; 408/429/5xx and connection errors → retry (429/503 ``Retry-After`` is honoured);
other 4xx → dead, with the OperationOutcome stored as the answer and a reason naming the chunk and its entries;
a batch-response whose entries failed is judged by the worst entry.

Source ``fhir`` (served by the hub's web app through :meth:`FhirSource.router`): ``POST /fhir/{channel}`` takes
a resource or a Bundle, ``POST /fhir/{channel}/{ResourceType}`` a resource of that type. The sender authenticates
with the API token of a ``sender`` user (401 without, 403 for another role or a user not in ``senders``), checked by
:mod:`hub.channels.http_auth` like every caller of the web app. The body is validated
(422 with an OperationOutcome listing the issues), then handed to the channel; the answer (201/200 with an
OperationOutcome naming the message id) comes only after the store has committed it; a store that is down is
a 503 with ``Retry-After``.

Source ``fhir_poll``: a FHIR search run on a schedule; each resource found becomes a message; the
``_lastUpdated`` cursor is kept in the store (advanced only past what was accepted) and a lease keeps the
polling to one node.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hub.channels.base import Context, Receiver
from hub.channels.fhir_delivery import BundleDelivery, MergeRules, load_merge_rules, outcome_summary
from hub.channels.fhir_delivery import retry_after_seconds as _retry_after
from hub.channels.http_auth import Principal, require
from hub.channels.schedule import Poller, check_schedule
from hub.errors import ConfigError, FhirParseError, PermanentDelivery, RetryableDelivery, retryable_http_status
from hub.message import Message, Outcome
from hub.spec import DestinationConfig, SourceConfig, parse_duration

__all__ = ["FhirRestDestination", "FhirSource", "FhirPollSource", "BearerAuth", "SmartAuth"]

log = logging.getLogger("hub.fhir")

# httpx logs every request's URL at INFO ("HTTP Request: PUT …/Patient?identifier=…|MRN …"): a conditional
# URL carries a patient's identifier, so its request log stays off unless someone set its level on purpose.
for _name in ("httpx", "httpcore"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.WARNING)

FHIR_JSON = "application/fhir+json"


# ---------------------------------------------------------------------------------------------- auth
class AuthBase(BaseModel):
    """Base of the destinations' auth settings (unknown keys refused)."""

    model_config = ConfigDict(extra="forbid")


class BearerAuth(AuthBase):
    """A fixed token: ``{type: bearer, token: ${EHR_TOKEN}}`` (the ``fhir_rest`` and ``http`` destinations)."""

    type: Literal["bearer"] = "bearer"
    token: str = Field(
        description="The bearer token (write ${VAR} to keep it out of git); empty: no Authorization header is sent."
    )

    def header(self) -> str | None:
        # An empty token (``${API_TOKEN:-}`` unset) sends no header rather than "Bearer " with nothing after it:
        # the server's 401 then says plainly that credentials are missing.
        return f"Bearer {self.token}" if self.token else None


class SmartAuth(AuthBase):
    """SMART backend services: client-credentials grant with a signed JWT client assertion."""

    type: Literal["smart"] = "smart"
    token_url: str = Field(
        description="The authorization server's token endpoint.", examples=["https://ehr.example.org/oauth2/token"]
    )
    client_id: str = Field(description="The client id registered with the EHR.")
    private_key_file: str = Field(description="PEM private key (RSA or EC) that signs the assertion; relative to home.")
    key_id: str | None = Field(None, description="The 'kid' of the key in the client's JWKS.")
    algorithm: Literal["RS384", "ES384", "RS256", "ES256"] = Field(
        "RS384", description="JWT signing algorithm (SMART asks for RS384 or ES384)."
    )
    scope: str = Field("system/*.write system/*.read", description="Scopes requested.")


class NoAuth(AuthBase):
    """No Authorization header."""

    type: Literal["none"] = "none"


Auth = Annotated[BearerAuth | SmartAuth | NoAuth, Field(discriminator="type")]


class _TokenSource:
    """Gives the Authorization header value; SMART tokens are fetched when needed and cached until they expire."""

    def __init__(self, auth: BearerAuth | SmartAuth | NoAuth, ctx: Context, timeout: float) -> None:
        self.auth = auth
        self.ctx = ctx
        self.timeout = timeout
        self._token: str | None = None
        self._expires = 0.0
        self._key: bytes | None = None
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        self._token = None
        self._expires = 0.0

    async def header(self, client: httpx.AsyncClient) -> str | None:
        auth = self.auth
        if isinstance(auth, BearerAuth):
            return auth.header()
        if not isinstance(auth, SmartAuth):
            return None
        async with self._lock:
            if self._token is None or time.time() > self._expires:
                await self._fetch(client, auth)
            return f"Bearer {self._token}"

    def assertion(self, auth: SmartAuth) -> str:
        import jwt

        if self._key is None:
            try:
                self._key = self.ctx.resolve(auth.private_key_file).read_bytes()
            except OSError as exc:
                raise PermanentDelivery(
                    f"cannot read the SMART private key {auth.private_key_file}: {exc.strerror or exc}"
                ) from None
        now = int(time.time())
        claims = {
            "iss": auth.client_id,
            "sub": auth.client_id,
            "aud": auth.token_url,
            "exp": now + 300,
            "iat": now,
            "jti": uuid.uuid4().hex,
        }
        headers = {"kid": auth.key_id} if auth.key_id else None
        return jwt.encode(claims, self._key, algorithm=auth.algorithm, headers=headers)

    async def _fetch(self, client: httpx.AsyncClient, auth: SmartAuth) -> None:
        form = {
            "grant_type": "client_credentials",
            "scope": auth.scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": self.assertion(auth),
        }
        try:
            r = await client.post(
                auth.token_url, data=form, headers={"Accept": "application/json"}, timeout=self.timeout
            )
        except httpx.TimeoutException as exc:
            raise RetryableDelivery(f"token request timed out: {exc}") from exc
        except httpx.TransportError as exc:
            raise RetryableDelivery(f"token request failed: {type(exc).__name__}: {exc}") from exc
        if r.status_code != 200:
            err = RetryableDelivery if retryable_http_status(r.status_code) else PermanentDelivery
            raise err(
                f"token endpoint answered HTTP {r.status_code}", response=r.text[:4000], retry_after=_retry_after(r)
            )
        try:
            body = r.json()
            self._token = str(body["access_token"])
        except (ValueError, KeyError, TypeError):
            raise PermanentDelivery("token endpoint answered without an access_token", response=r.text[:4000]) from None
        expires_in = body.get("expires_in")
        self._expires = (
            time.time() + max(0.0, float(expires_in) - 30)
            if isinstance(expires_in, (int, float))
            else time.time() + 240
        )


def _check_url(v: str) -> str:
    if not v.startswith(("http://", "https://")):
        raise ValueError(f"{v!r} is not an http(s) URL")
    return v


# ---------------------------------------------------------------------------------------------- destination
class FhirRestDestination:
    class Config(DestinationConfig):
        """Send FHIR to a server: ``{type: fhir_rest, base_url: ${EHR_FHIR_URL}, auth: {type: bearer, token: ...}}``."""

        type: Literal["fhir_rest"] = "fhir_rest"
        base_url: str = Field(
            description="The server's FHIR base ([base]).", examples=["https://ehr.example.org/fhir/R4"]
        )
        auth: Auth = Field(
            default_factory=NoAuth,
            description="none, bearer (token) or smart (backend services: token_url, client_id, private_key_file).",
        )
        timeout: str | int | float = Field("30s", description="Time allowed for each HTTP request.")
        headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers (e.g. a tenant header).")
        prefer: Literal["minimal", "representation", "OperationOutcome"] = Field(
            "minimal", description="The Prefer: return= header: what the server sends back for each entry."
        )
        verify_tls: bool | str = Field(
            True, description="Check the server's certificate (true), not (false), or against this CA file."
        )
        mode: Literal["transaction", "batch", "resources"] = Field(
            "transaction",
            description="How a transaction Bundle is written: transaction (chunks that each succeed or fail whole), "
            "batch (chunks of independent entries, each judged) or resources (one request per entry, for servers that "
            "take no transactions, as EHR vendor APIs often do not). A batch Bundle is sent as batches unless this is "
            "resources.",
        )
        max_entries: int = Field(
            8,
            ge=1,
            description="Most entries in one transaction or batch; a bigger Bundle is split, each entry after the "
            "entries it references (a reference cycle stays in one transaction), later chunks referring by the ids the "
            "server gave. 8 is Medplum's cap for a transaction with conditional entries (it also refuses more than 50 "
            "updates); raise it for a server without such a cap (HAPI FHIR unless MaximumTransactionBundleSize is set) "
            "to keep a message atomic. A server that refuses a chunk as too big makes the delivery dead with a reason "
            "saying to lower this.",
        )
        update: Literal["merge", "replace"] = Field(
            "merge",
            description="merge: before a conditional update (PUT Type?identifier=…) read what the server holds, merge "
            "the message's resource into it (merge_rules) and write PUT Type/id with If-Match (HTTP 412: read, merge, "
            "send again), so a message that carries part of a patient erases nothing (the rules may replace some types "
            "whole: results, appointments); replace: send the conditional update as it is (the resource is replaced "
            "whole). An entry's urn:hub:fhir:merge hint (merge | fill | replace; stripped before sending) wins over "
            "both, also on a conditional create (POST + ifNoneExist): fill there means found → add only what the "
            "server lacks, absent → create.",
        )
        merge_rules: str | None = Field(
            None,
            description="The merge rules file (which lists merge item by item, by which key); default "
            "<mappings>/fhir/merge.yaml, built-in rules when that is absent. Relative to home.",
            examples=["mappings/fhir/merge.yaml"],
        )

        _v_url = field_validator("base_url")(lambda cls, v: _check_url(v))
        _v_timeout = field_validator("timeout")(lambda cls, v: (parse_duration(v), v)[1])

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx
        self.base = config.base_url.rstrip("/")
        self.timeout = parse_duration(config.timeout)
        self.tokens = _TokenSource(config.auth, ctx, self.timeout)
        if config.merge_rules:
            self.merge_rules: MergeRules = load_merge_rules(ctx.resolve(config.merge_rules), required=True)
        else:
            self.merge_rules = load_merge_rules(ctx.resolve(Path(ctx.mappings_dir) / "fhir" / "merge.yaml"))
        self._client: httpx.AsyncClient | None = None
        self.transport: httpx.AsyncBaseTransport | None = None  # tests inject httpx.MockTransport here

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            verify: bool | str = self.config.verify_tls
            if isinstance(verify, str):
                verify = str(self.ctx.resolve(verify))
            self._client = httpx.AsyncClient(timeout=self.timeout, verify=verify, transport=self.transport)
        return self._client

    async def send(self, message: Message) -> str | None:
        try:
            data = json.loads(message.raw)
        except ValueError:
            raise PermanentDelivery("the content is not FHIR JSON") from None
        if not isinstance(data, dict) or "resourceType" not in data:
            raise PermanentDelivery("the content is not a FHIR resource")
        if data["resourceType"] == "Bundle" and data.get("type") in ("transaction", "batch"):
            c = self.config
            # a batch's entries may fail one by one: they are not made all-or-nothing here
            mode = "batch" if data["type"] == "batch" and c.mode == "transaction" else c.mode
            return await BundleDelivery(
                self._call,
                self.base,
                data,
                mode=mode,
                max_entries=c.max_entries,
                update=c.update,
                rules=self.merge_rules,
            ).run()
        entries = (
            [e for e in data.get("entry") or [] if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
            if data["resourceType"] == "Bundle"
            else [{"resource": data}]
        )
        answers = []
        for e in entries:
            res = e["resource"]
            req = e.get("request") or {}
            headers: dict[str, str] = {}
            method = req.get("method")
            if method:
                url = f"{self.base}/{req.get('url', res['resourceType'])}"
                if req.get("ifNoneExist"):
                    headers["If-None-Exist"] = req["ifNoneExist"]
            elif res.get("id"):
                method, url = "PUT", f"{self.base}/{res['resourceType']}/{quote(str(res['id']), safe='')}"
            else:
                method, url = "POST", f"{self.base}/{res['resourceType']}"
            body = json.dumps(res, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            answers.append(await self._request(method, url, body, headers))
        return "\n".join(answers)

    async def _request(
        self, method: str, url: str, body: bytes, extra: dict[str, str], *, bundle_type: str | None = None
    ) -> str:
        r = await self._call(method, url, body, extra)
        return self._judge(method, url, r, bundle_type)

    async def _call(self, method: str, url: str, body: bytes | None, extra: dict[str, str]) -> httpx.Response:
        """One request with the auth header; a connection error or timeout is RetryableDelivery."""
        client = self._http()
        headers = {"Accept": FHIR_JSON, "Prefer": f"return={self.config.prefer}", **self.config.headers, **extra}
        if body is not None:
            headers["Content-Type"] = FHIR_JSON
        for attempt in (1, 2):
            auth = await self.tokens.header(client)
            if auth:
                headers["Authorization"] = auth
            try:
                r = await client.request(method, url, content=body, headers=headers)
            except httpx.TimeoutException as exc:
                raise RetryableDelivery(f"{method} {url}: timed out after {self.timeout:g}s") from exc
            except httpx.TransportError as exc:
                raise RetryableDelivery(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
            if r.status_code == 401 and isinstance(self.config.auth, SmartAuth) and attempt == 1:
                self.tokens.invalidate()  # the token expired early or was revoked: fetch a new one once
                continue
            break
        return r

    def _judge(self, method: str, url: str, r: httpx.Response, bundle_type: str | None) -> str:
        status = r.status_code
        text = r.text
        if status >= 300:
            reason = f"{method} {url}: HTTP {status}{_outcome_summary(text)}"
            if retryable_http_status(status):
                raise RetryableDelivery(reason, response=text[:20000] or None, retry_after=_retry_after(r))
            raise PermanentDelivery(reason, response=text[:20000] or None)
        lines = [f"HTTP {status} {r.reason_phrase}".rstrip()]
        loc = r.headers.get("Location") or r.headers.get("Content-Location")
        if loc:
            lines.append(f"location: {loc}")
        body: Any = None
        try:
            body = r.json() if text.strip() else None
        except ValueError:
            body = None
        if (
            isinstance(body, dict)
            and body.get("resourceType") == "Bundle"
            and str(body.get("type", "")).endswith("-response")
        ):
            worst = None
            for i, e in enumerate(body.get("entry") or []):
                resp = (e or {}).get("response") or {}
                st = str(resp.get("status", ""))
                code = int(st.split()[0]) if st[:3].isdigit() else 0
                lines.append(f"entry {i}: {st} {resp.get('location') or ''}".rstrip())
                if code >= 300 and (
                    worst is None or (retryable_http_status(code) and not retryable_http_status(worst))
                ):
                    worst = code
            if worst is not None:
                summary = "\n".join(lines)
                if retryable_http_status(worst):
                    raise RetryableDelivery(
                        f"{bundle_type or 'bundle'} entries failed (worst HTTP {worst})",
                        response=summary + "\n" + text[:20000],
                        retry_after=_retry_after(r),
                    )
                raise PermanentDelivery(
                    f"{bundle_type or 'bundle'} entries failed (worst HTTP {worst})",
                    response=summary + "\n" + text[:20000],
                )
        elif isinstance(body, dict) and body.get("resourceType") and body.get("id") and not loc:
            lines.append(f"location: {body['resourceType']}/{body['id']}")
        return "\n".join(lines)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def _outcome_summary(text: str) -> str:
    summary = outcome_summary(text)
    return f": {summary}" if summary else ""


# ---------------------------------------------------------------------------------------------- HTTP source
def _oo(
    severity: str, code: str, text: str, expression: str | None = None, issues: list[Any] | None = None
) -> dict[str, Any]:
    if issues:
        from hub.transforms.fhir.validate import operation_outcome

        return operation_outcome(issues)
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": text}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


class FhirSource:
    class Config(SourceConfig):
        """Receive FHIR over HTTP at ``POST /fhir/{channel}`` and ``POST /fhir/{channel}/{ResourceType}`` (the hub's
        web app serves it): ``{type: fhir}``."""

        type: Literal["fhir"] = "fhir"
        format: Literal["fhir"] | None = Field("fhir", description="Always FHIR JSON.")
        path: str | None = Field(
            None, description="URL path served (default /fhir/<channel>).", examples=["/fhir/ehr_orders"]
        )
        validate_: Literal["none", "basic", "strict"] = Field(
            "strict",
            alias="validate",
            description="strict: fhir_validate (the R4 element index: structure, cardinality, required bindings, value "
            "formats, invariants and Bundle rules; 422 with every issue); basic: only that it is a resource; none: no "
            "check.",
        )
        resource_types: list[str] = Field(
            default_factory=list, description="Accept only these resource types (empty: any)."
        )
        ack: Literal["after_store", "after_delivery"] = Field(
            "after_store",
            description="Answer once stored (default), or once every destination has it (or ack_timeout passes).",
        )
        ack_timeout: str | int | float = Field(
            "30s", description="With after_delivery: the longest wait before answering 202."
        )
        max_bytes: int = Field(20_000_000, ge=1, description="Largest body accepted (413 beyond).")
        senders: list[str] = Field(
            default_factory=list,
            description="Users (role sender) whose tokens may post here; empty: any sender. Every post needs a "
            "sender's token (`hub user add ehr --role sender --no-password`, `hub user token ehr`): 401 without, 403 "
            "for another role or user.",
            examples=[["ehr"]],
        )

        _v_timeout = field_validator("ack_timeout")(lambda cls, v: (parse_duration(v), v)[1])

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx
        self.path = (config.path or f"/fhir/{ctx.channel}").rstrip("/")
        if not self.path.startswith("/"):
            raise ConfigError(f"path {config.path!r} must start with /")
        self._receive: Receiver | None = None

    async def start(self, receive: Receiver) -> None:
        self._receive = receive

    async def stop(self) -> None:
        self._receive = None

    def router(self) -> APIRouter:
        """The FastAPI router the web app mounts for this source. Nothing is anonymous: every post needs the token
        (or session) of a user with the ``send`` permission (role ``sender``), one named in ``senders`` when set."""
        from fastapi import Depends, HTTPException

        allowed = frozenset(self.config.senders)
        channel = self.ctx.channel

        def sender(p: Principal = Depends(require("send"))) -> Principal:
            if allowed and p.name not in allowed:
                raise HTTPException(403, f"user {p.name} may not post to channel {channel} (not one of its senders)")
            return p

        router = APIRouter(dependencies=[Depends(sender)])

        def answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
            return Response(json.dumps(body), status_code=status, media_type=FHIR_JSON, headers=headers)

        async def handle(request: Request, resource_type: str | None) -> Response:
            raw = await request.body()
            if len(raw) > self.config.max_bytes:
                return answer(413, _oo("error", "too-costly", f"the body is larger than {self.config.max_bytes} bytes"))
            status, body, headers = await self.handle(raw, resource_type, request.url.path)
            return answer(status, body, headers)

        @router.post(self.path, summary=f"Receive FHIR for channel {self.ctx.channel}")
        async def post_base(request: Request) -> Response:
            return await handle(request, None)

        @router.post(
            self.path + "/{resource_type}", summary=f"Receive one FHIR resource for channel {self.ctx.channel}"
        )
        async def post_type(request: Request, resource_type: str) -> Response:
            return await handle(request, resource_type)

        return router

    async def handle(
        self, raw: bytes, resource_type: str | None, path: str = ""
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Validate, receive, and the HTTP answer: (status, OperationOutcome, headers)."""
        from hub.transforms.fhir.document import parse
        from hub.transforms.fhir.validate import check_basic, validate

        if self._receive is None:
            return 503, _oo("error", "transient", "the channel is not running"), {"Retry-After": "10"}
        try:
            doc = parse(raw)
        except FhirParseError as exc:
            return 422, _oo("error", exc.code or "structure", str(exc), exc.location or None), {}
        rtype = doc.resource_type
        if resource_type is not None and rtype != resource_type:
            return (
                422,
                _oo("error", "invalid", f"the body is a {rtype}, the URL names {resource_type}", "resourceType"),
                {},
            )
        if self.config.resource_types and rtype not in self.config.resource_types:
            return (
                422,
                _oo(
                    "error",
                    "not-supported",
                    f"{rtype} is not accepted here (accepted: {', '.join(self.config.resource_types)})",
                    "resourceType",
                ),
                {},
            )
        level = self.config.validate_
        if level != "none":
            issues = validate(doc) if level == "strict" else check_basic(doc)
            errors = [i for i in issues if i.severity in ("error", "fatal")]
            if errors:
                return 422, _oo("error", "invalid", "", issues=issues), {}
        try:
            receipt = await self._receive(raw, source_ref=path or self.path, meta={"resource_type": rtype})
        except Exception as exc:
            log.error("channel %s: receiving failed: %s", self.ctx.channel, type(exc).__name__)
            return (
                503,
                _oo("error", "transient", "the hub could not store the message; try again"),
                {"Retry-After": "10"},
            )
        outcome = receipt.outcome
        if outcome is Outcome.ERROR:
            return (
                503,
                _oo("error", "transient", "; ".join(receipt.reasons) or "the hub could not store the message"),
                {"Retry-After": "10"},
            )
        if outcome is Outcome.REJECTED:
            bad = next(r for r in receipt.results if r.outcome is Outcome.REJECTED)
            return 422, _oo("error", bad.code or "invalid", bad.reason or "rejected", bad.location), {}
        ids = [r.message_id for r in receipt.results if r.message_id is not None]
        text = (
            f"accepted as message {', '.join(map(str, ids))}"
            if outcome is Outcome.ACCEPTED
            else "received; no route wanted it"
        )
        if self.config.ack == "after_delivery" and outcome is Outcome.ACCEPTED and self.ctx.engine is not None and ids:
            states = await self.ctx.engine.wait_delivered(ids, parse_duration(self.config.ack_timeout))
            flat = [s for st in states.values() for s in st]
            if any(s == "dead" for s in flat):
                return 502, _oo("error", "transient", f"{text}; a destination did not take it (dead)"), {}
            if not all(s == "sent" for s in flat):
                return 202, _oo("information", "informational", f"{text}; delivery still in progress"), {}
            text += "; delivered"
        headers = {"Location": f"{self.path}/_message/{ids[0]}"} if ids else {}
        status = 201 if resource_type is not None and outcome is Outcome.ACCEPTED else 200
        return status, _oo("information", "informational", text), headers


# ---------------------------------------------------------------------------------------------- polling source
class FhirPollSource:
    class Config(SourceConfig):
        """Poll a FHIR search on a schedule: ``{type: fhir_poll, base_url: ..., search: 'Observation?category=laboratory'}``.
        Each resource found becomes a message; the ``_lastUpdated`` cursor is kept in the store."""  # noqa: E501 (a Config's docstring is its documented description: kept as it is)

        type: Literal["fhir_poll"] = "fhir_poll"
        format: Literal["fhir"] | None = Field("fhir", description="Always FHIR JSON.")
        base_url: str = Field(description="The server's FHIR base.")
        search: str = Field(
            description="Resource type and search parameters.", examples=["Patient", "Observation?category=laboratory"]
        )
        schedule: str | int | float = Field("5m", description="How often to search: a duration or a cron string.")
        since: str | None = Field(
            None, description="First _lastUpdated to read from when no cursor is stored (ISO date/time)."
        )
        page_size: int = Field(100, ge=1, le=1000, description="_count per page.")
        max_pages: int = Field(50, ge=1, description="Most pages read in one poll.")
        auth: Auth = Field(default_factory=NoAuth, description="none, bearer or smart, as for fhir_rest.")
        timeout: str | int | float = Field("30s", description="Time allowed for each HTTP request.")

        _v_url = field_validator("base_url")(lambda cls, v: _check_url(v))
        _v_schedule = field_validator("schedule")(lambda cls, v: check_schedule(v))
        _v_timeout = field_validator("timeout")(lambda cls, v: (parse_duration(v), v)[1])

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx
        self.base = config.base_url.rstrip("/")
        self.timeout = parse_duration(config.timeout)
        self.tokens = _TokenSource(config.auth, ctx, self.timeout)
        self.cursor_name = f"fhir_poll:{ctx.channel}"
        self.poller: Poller | None = None
        self._receive: Receiver | None = None
        self._client: httpx.AsyncClient | None = None
        self.transport: httpx.AsyncBaseTransport | None = None

    async def start(self, receive: Receiver) -> None:
        self._receive = receive
        self.poller = Poller(self.config.schedule, self._poll_safely, f"{self.ctx.channel}:fhir_poll")
        self.poller.start()

    async def stop(self) -> None:
        if self.poller is not None:
            await self.poller.stop()
            self.poller = None
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _poll_safely(self) -> None:
        try:
            await self.poll()
        except Exception as exc:
            log.warning("channel %s: FHIR poll failed: %s", self.ctx.channel, f"{type(exc).__name__}: {exc}"[:300])

    async def poll(self) -> int:
        """Run the search once; returns how many resources were taken."""
        assert self._receive is not None
        store = self.ctx.store
        if store is not None and not await asyncio.to_thread(
            store.acquire_lease, self.cursor_name, max(60.0, self.timeout * 4)
        ):
            return 0
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, transport=self.transport)
        client = self._client
        cursor = await asyncio.to_thread(store.get_cursor, self.cursor_name) if store is not None else None
        cursor = cursor or self.config.since
        sep = "&" if "?" in self.config.search else "?"
        first = f"{self.base}/{self.config.search}{sep}_sort=_lastUpdated&_count={self.config.page_size}"
        if cursor:
            first += f"&_lastUpdated=gt{quote(cursor, safe='')}"
        url: str | None = first
        taken = 0
        newest = cursor
        for _ in range(self.config.max_pages):
            if url is None:
                break
            headers = {"Accept": FHIR_JSON}
            auth = await self.tokens.header(client)
            if auth:
                headers["Authorization"] = auth
            r = await client.get(url, headers=headers)
            if r.status_code != 200:
                log.warning("channel %s: FHIR search answered HTTP %d", self.ctx.channel, r.status_code)
                break
            page = r.json()
            stop = False
            for e in page.get("entry") or []:
                res = e.get("resource") if isinstance(e, dict) else None
                if not isinstance(res, dict) or (e.get("search") or {}).get("mode") == "include":
                    continue
                m = res.get("meta") or {}
                updated = m.get("lastUpdated")
                key = f"fhir:{res.get('resourceType')}/{res.get('id')}/{m.get('versionId') or updated or ''}"
                raw = json.dumps(res, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
                receipt = await self._receive(
                    raw, source_ref=f"{res.get('resourceType')}/{res.get('id')}", dedup_key=key
                )
                if receipt.outcome is Outcome.ERROR:
                    stop = True
                    break
                taken += 1
                if updated and (newest is None or updated > newest):
                    newest = updated
            if stop:
                break
            url = next((lk.get("url") for lk in page.get("link") or [] if lk.get("relation") == "next"), None)
        if store is not None and newest and newest != cursor:
            await asyncio.to_thread(store.set_cursor, self.cursor_name, newest)
        return taken
