"""The sending end of MLLP: :class:`MllpDestination` (the ``mllp`` destination), the client connection it and
``hub send`` use (:class:`MllpConnection`), :func:`send_messages` (``hub send``), :func:`ack_summary` and
:func:`parse_mllp_url`.

Destination (``MllpDestination``): a small pool of persistent connections per destination (``connections``),
reconnecting with backoff; every call has a timeout (``connect_timeout``, ``ack_timeout``). AA/CA → sent, and
the ACK is stored with the delivery; AE/CE, AR/CR and a missing ACK go to ``on_ae``/``on_ar``/``on_timeout``
(retry or dead). An ACK whose MSA-2 is not the control id just sent means the connection is out of step: it is
closed and the delivery retried. Its open connections are in the gauge ``hub_mllp_connections{channel,
endpoint=<destination>}`` and in :meth:`MllpDestination.peer_state`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import Gauge
from pydantic import Field, field_validator

from hub import metrics
from hub.channels.base import Context
from hub.channels.mllp.framing import READ_SIZE, Framer, frame, normalise_segments
from hub.channels.mllp.tls import MllpTls, client_context, optional_duration, seconds_or_never
from hub.errors import Hl7ParseError, PermanentDelivery, RetryableDelivery
from hub.message import Message
from hub.spec import BackoffSpec, DestinationConfig, parse_duration, parse_listen
from hub.transforms.hl7v2 import parse

__all__ = ["MllpDestination", "MllpConnection", "SendResult", "send_messages", "ack_summary", "parse_mllp_url"]

log = logging.getLogger("hub.mllp")


def ack_summary(ack: bytes) -> tuple[str | None, str | None, str | None]:
    """(MSA-1 code, MSA-2 control id, error text) of an ACK; (None, None, reason) when it cannot be read."""
    try:
        msg = parse(ack)
    except Hl7ParseError as exc:
        return None, None, f"the answer is not an HL7 message: {exc}"
    code = (msg.get("MSA-1") or "").upper() or None
    if code is None:
        return None, None, "the answer has no MSA-1 (acknowledgement code)"
    text = msg.get("ERR-8") or msg.get("MSA-3") or msg.get("ERR-3.2") or msg.get("ERR-1.4.2")
    return code, msg.get("MSA-2"), text


def parse_mllp_url(url: str) -> tuple[str, int, bool]:
    """``mllp://host:port`` → (host, port, False); ``mllps://host:port`` → (host, port, True)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "mllp", url
    if scheme not in ("mllp", "mllps"):
        raise ValueError(f"{url!r}: use mllp://host:port (or mllps:// for TLS)")
    host, port = parse_listen(rest.rstrip("/"))
    return host, port, scheme == "mllps"


class MllpConnection:
    """One client connection: write a frame, read the answering frame. Used by the destination and ``hub send``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_bytes: int) -> None:
        self.reader = reader
        self.writer = writer
        self.framer = Framer(max_bytes)
        self.last_used = time.monotonic()
        self.pending: collections.deque[bytes] = collections.deque()
        self.closed = False

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        max_bytes: int = 10 * 1024 * 1024,
    ) -> MllpConnection:
        kw: dict[str, Any] = {}
        if ssl_context is not None:
            kw["ssl"] = ssl_context
            kw["server_hostname"] = server_hostname or host
            kw["ssl_handshake_timeout"] = timeout
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=READ_SIZE * 4, **kw)
        return cls(reader, writer, max_bytes)

    def stale(self, idle_close: float | None) -> bool:
        """Closed by the peer while idle (EOF already seen), or unused longer than ``idle_close``."""
        if self.closed or self.writer.is_closing() or self.reader.at_eof() or self.reader.exception() is not None:
            return True
        return idle_close is not None and time.monotonic() - self.last_used > idle_close

    async def send(self, payload: bytes) -> None:
        if self.pending or getattr(self.reader, "_buffer", None):  # bytes nobody asked for: the stream is out of step
            raise ConnectionError("the peer sent data before being asked")
        self.writer.write(frame(payload))
        await self.writer.drain()

    async def receive(self, timeout: float | None) -> bytes:
        """The next frame from the peer. Raises TimeoutError, or EOFError when the peer closes first."""
        try:
            if timeout is None:
                return await self._next()
            async with asyncio.timeout(timeout):
                return await self._next()
        finally:
            self.last_used = time.monotonic()

    async def _next(self) -> bytes:
        while not self.pending:
            data = await self.reader.read(READ_SIZE)
            if not data:
                raise EOFError("the peer closed the connection without answering")
            for kind, value in self.framer.feed(data):
                if kind == "frame":
                    self.pending.append(value)
                elif kind == "too_large":
                    raise ConnectionError("the peer's answer is larger than the limit")
        return self.pending.popleft()

    async def exchange(self, payload: bytes, timeout: float | None) -> bytes:
        await self.send(payload)
        return await self.receive(timeout)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.writer.close()
            except Exception:
                pass


@dataclass
class SendResult:
    payload: bytes
    ack: bytes | None = None
    error: str | None = None

    @property
    def code(self) -> str | None:
        return ack_summary(self.ack)[0] if self.ack is not None else None


async def send_messages(
    host: str,
    port: int,
    payloads: list[bytes],
    *,
    ack_timeout: float = 30.0,
    connect_timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> list[SendResult]:
    """Send each payload on one connection and wait for its ACK (``hub send``). Stops at a broken connection;
    the payloads not sent get an error each."""
    results = [SendResult(p) for p in payloads]
    try:
        conn = await MllpConnection.open(
            host, port, timeout=connect_timeout, ssl_context=ssl_context, server_hostname=server_hostname
        )
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        for r in results:
            r.error = f"cannot connect to {host}:{port}: {exc}"
        return results
    try:
        for i, r in enumerate(results):
            try:
                r.ack = await conn.exchange(r.payload, ack_timeout)
            except TimeoutError:
                r.error = f"no answer within {ack_timeout:g}s"
            except (OSError, EOFError, ssl.SSLError) as exc:
                r.error = f"{exc}"
            if r.error is not None:
                for rest in results[i + 1 :]:
                    rest.error = "not sent (the connection failed)"
                break
    finally:
        conn.close()
    return results


class MllpDestination:
    class Config(DestinationConfig):
        """Send HL7 v2 over MLLP and wait for each ACK: ``{type: mllp, address: 127.0.0.1:2600}``."""

        type: Literal["mllp"] = "mllp"
        address: str = Field(
            description="host:port of the receiving system.", examples=["10.20.0.15:2600", "lab.example:6661"]
        )
        connect_timeout: str | int | float = Field(
            "10s", description="Longest wait to open a connection (and TLS handshake)."
        )
        ack_timeout: str | int | float = Field(
            "30s", description="Longest wait for the ACK of a message; then on_timeout applies."
        )
        on_ae: Literal["retry", "dead"] = Field(
            "retry", description="AE/CE (the receiver had an error): try again later, or dead."
        )
        on_ar: Literal["dead", "retry"] = Field(
            "dead", description="AR/CR (the receiver rejected it): dead (a person looks), or retry."
        )
        on_timeout: Literal["retry", "dead"] = Field(
            "retry", description="No ACK within ack_timeout: retry (the default), or dead."
        )
        check_control_id: bool = Field(
            True, description="The ACK's MSA-2 must be the control id just sent (else retry on a new connection)."
        )
        connections: int = Field(
            1, ge=1, le=64, description="Connections kept open to the peer (more only help with queue.order_by)."
        )
        idle_close: str | int | float | None = Field(
            "5m",
            description="Close a pooled connection unused this long (firewalls drop idle ones silently); null: keep.",
        )
        reconnect: BackoffSpec = Field(
            default_factory=lambda: BackoffSpec.model_validate({"initial": "500ms", "max": "30s"}),
            description="After a failed connect, wait this long before the next (growing to max).",
        )
        segment_separator: Literal["cr", "keep"] = Field(
            "cr",
            description="cr: send segments ended by CR as HL7 requires (LF/CRLF from files are converted); "
            "keep: as stored.",
        )
        max_ack_bytes: int = Field(1024 * 1024, ge=64, description="Largest answer read.")
        tls: MllpTls | None = Field(
            None, description="Connect with TLS (ca to check the server; cert + key for mutual TLS)."
        )

        _v_durations = field_validator("connect_timeout", "ack_timeout")(lambda cls, v: (parse_duration(v), v)[1])
        _v_idle = field_validator("idle_close")(lambda cls, v: optional_duration(v))

        @field_validator("address")
        @classmethod
        def _address(cls, v: str) -> str:
            host, sep, _port = str(v).rpartition(":")
            if not sep or not host:
                raise ValueError(f"{v!r} is not host:port")
            parse_listen(v)
            return v

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx
        self.host, self.port = parse_listen(config.address)
        self.connect_timeout = parse_duration(config.connect_timeout)
        self.ack_timeout = parse_duration(config.ack_timeout)
        self.idle_close = seconds_or_never(config.idle_close)
        self._initial = parse_duration(config.reconnect.initial)
        self._max = parse_duration(config.reconnect.max)
        self._delay = 0.0
        self._next_connect = 0.0
        self._idle: list[MllpConnection] = []
        self._slots: asyncio.Semaphore | None = None
        self._ssl: ssl.SSLContext | None = None
        self._closed = False
        self._gauge: Gauge | None = None  # hub_mllp_connections{channel, endpoint}, labelled at the first message
        self._endpoint: str | None = None  # that endpoint: the destination's name
        self._open = 0  # connections open now (what the gauge counts)
        self.opened = 0  # connections opened (tests and logs)

    # ------------------------------------------------------------------ connections
    def peer_state(self) -> dict[str, Any]:
        """:class:`~hub.channels.base.ReportsPeer`: ``{"mllp": {destination name: open connections}}``, the
        number in ``hub_mllp_connections``; nothing before the first message (which names the destination)."""
        if self._endpoint is None:
            return {}
        return {"mllp": {self._endpoint: self._open}}

    def _label(self, message: Message) -> None:
        """Learn the destination's name from the first message and label the gauge with it."""
        self._endpoint = str(message.meta.get("destination") or "mllp")
        try:
            self._gauge = metrics.MLLP_CONNECTIONS.labels(self.ctx.channel, self._endpoint)
        except Exception:
            self._gauge = None

    async def _connect(self) -> MllpConnection:
        now = time.monotonic()
        if now < self._next_connect:
            wait = self._next_connect - now
            raise RetryableDelivery(
                f"{self.config.address}: reconnecting in {wait:.1f}s (the last attempt failed)", retry_after=wait
            )
        if self.config.tls is not None and self._ssl is None:
            self._ssl = client_context(self.config.tls, self.ctx)
        try:
            conn = await MllpConnection.open(
                self.host,
                self.port,
                timeout=self.connect_timeout,
                ssl_context=self._ssl,
                server_hostname=(self.config.tls.server_name if self.config.tls else None),
                max_bytes=self.config.max_ack_bytes,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self._delay = min(
                self._max, self._delay * self.config.reconnect.multiplier if self._delay else self._initial
            )
            self._next_connect = time.monotonic() + self._delay
            what = (
                "timed out"
                if isinstance(exc, TimeoutError)
                else (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
            )
            raise RetryableDelivery(f"cannot connect to {self.config.address}: {what}") from exc
        self._delay = 0.0
        self._next_connect = 0.0
        self.opened += 1
        self._open += 1
        if self._gauge is not None:
            self._gauge.inc()
        log.info("channel %s: MLLP connected to %s", self.ctx.channel, self.config.address)
        return conn

    def _drop(self, conn: MllpConnection) -> None:
        if not conn.closed:
            conn.close()
            self._open -= 1
            if self._gauge is not None:
                self._gauge.dec()

    # ------------------------------------------------------------------ sending
    async def send(self, message: Message) -> str | None:
        if self._closed:
            raise RetryableDelivery("the destination is closing")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.config.connections)
        payload = normalise_segments(message.raw) if self.config.segment_separator == "cr" else message.raw
        control_id: str | None = None
        no_ack = False
        try:
            sent = parse(payload)
            control_id = sent.control_id
            no_ack = (sent.get("MSH-15") or "").upper() == "NE"
        except Hl7ParseError:
            pass  # not HL7 (a raw channel): sent as it is, the answer is still checked for MSA-1
        if self._endpoint is None:
            self._label(message)
        async with self._slots:
            for attempt in (1, 2):
                conn = self._pooled()
                reused = conn is not None
                if conn is None:
                    conn = await self._connect()
                try:
                    await conn.send(payload)
                    if no_ack:
                        self._release(conn)
                        return "sent; MSH-15 is NE (no accept acknowledgement expected)"
                    answer = await conn.receive(self.ack_timeout)
                except TimeoutError:
                    self._drop(conn)  # a late ACK must not be read as the next message's
                    text = f"no ACK from {self.config.address} within {self.ack_timeout:g}s"
                    if self.config.on_timeout == "dead":
                        raise PermanentDelivery(text) from None
                    raise RetryableDelivery(text) from None
                except (OSError, EOFError, ssl.SSLError) as exc:
                    self._drop(conn)
                    if reused and attempt == 1:
                        log.info(
                            "channel %s: pooled MLLP connection to %s was closed; sending on a new one",
                            self.ctx.channel,
                            self.config.address,
                        )
                        continue
                    raise RetryableDelivery(f"{self.config.address}: {exc or type(exc).__name__}") from exc
                return self._judge(answer, control_id, conn)
        raise AssertionError("unreachable")

    def _pooled(self) -> MllpConnection | None:
        """An idle connection of the pool still fit to use (stale ones are closed on the way), or None."""
        while self._idle:
            c = self._idle.pop()
            if not c.stale(self.idle_close):
                return c
            self._drop(c)
        return None

    def _release(self, conn: MllpConnection) -> None:
        if self._closed or conn.closed:
            self._drop(conn)
        else:
            self._idle.append(conn)

    def _judge(self, answer: bytes, control_id: str | None, conn: MllpConnection) -> str:
        """AA/CA → the ACK text (stored); everything else raises per the on_* policy."""
        try:
            ack = parse(answer)
            text = answer.decode(ack.codec, "replace")
        except (Hl7ParseError, LookupError):
            text = answer.decode("utf-8", "replace")
            self._drop(conn)
            raise RetryableDelivery(
                f"{self.config.address} answered something that is not an HL7 ACK", response=text[:4000]
            ) from None
        code = (ack.get("MSA-1") or "").upper()
        acked = ack.get("MSA-2")
        if self.config.check_control_id and control_id is not None and acked != control_id:
            self._drop(conn)
            raise RetryableDelivery(
                f"{self.config.address} acknowledged control id {acked!r}, not {control_id!r}; reconnecting",
                response=text,
            )
        self._release(conn)
        if code in ("AA", "CA"):
            return text
        detail = ack.get("ERR-8") or ack.get("MSA-3") or ack.get("ERR-3.2") or ack.get("ERR-1.4.2") or ""
        err = ack.get("ERR-3.1") or ack.get("ERR-1.4.1") or ""
        why = (
            f"{self.config.address} answered {code or 'no MSA-1'}"
            + (f" (error {err})" if err else "")
            + (f": {detail}" if detail else "")
        )
        if code in ("AE", "CE"):
            policy = self.config.on_ae
        elif code in ("AR", "CR"):
            policy = self.config.on_ar
        else:
            policy = "retry"
        if policy == "dead":
            raise PermanentDelivery(why, response=text)
        raise RetryableDelivery(why, response=text)

    async def close(self) -> None:
        """Close every pooled connection. Idempotent."""
        self._closed = True
        while self._idle:
            self._drop(self._idle.pop())
