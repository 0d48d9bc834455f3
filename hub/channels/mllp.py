"""The ``mllp`` connector: HL7 v2 over MLLP — a listener (source) and a sender (destination).

MLLP (HL7's Minimal Lower Layer Protocol) frames each message as ``<VT> message <FS><CR>`` (``0x0b`` … ``0x1c
0x0d``) on a TCP connection that usually stays open for hours; the receiver answers every frame with an ACK in
its own frame before the sender sends the next one.

Source (``MllpSource``), per connection (asyncio, one task each, any number at once):

* the peer must be on the ``allow`` list (when set), and present a certificate when ``tls.client_cert`` asks;
* bytes are cut into frames by :class:`Framer`; a frame goes to ``receive`` (parse once → filters → routes →
  one store commit) and is answered from the :class:`~hub.channels.base.Receipt`: accepted/filtered → AA,
  rejected → AR with an ERR segment (HL7 table 0357 code and location), error (the store is down) → AE;
  CA/CR/CE when the message asks for enhanced mode (MSH-15/16), and no answer at all when MSH-15 says the
  sender does not want one (NE, ER on success, SU on error);
* ``ack: after_store`` (default) answers right after the commit; ``ack: after_delivery`` waits until every
  destination has the message (AA) or one gave up or ``ack_timeout`` passed (AE);
* broken input never stops the listener: bytes outside frames, a frame over ``max_message_bytes``, a frame
  that never ends (``frame_timeout``) and a message that cannot be parsed are answered with AR when a control id
  can be recovered, otherwise the connection is closed; each is counted in :attr:`MllpSource.counts` and
  logged without content;
* ``dedup_window`` answers a message whose MSH-3/MSH-4/MSH-10 was already taken within the window with the
  same acknowledgement code, without storing it twice.

Destination (``MllpDestination``): a small pool of persistent connections per destination (``connections``),
reconnecting with backoff; every call has a timeout (``connect_timeout``, ``ack_timeout``). AA/CA → sent, and
the ACK is stored with the delivery; AE/CE, AR/CR and a missing ACK go to ``on_ae``/``on_ar``/``on_timeout``
(retry or dead). An ACK whose MSA-2 is not the control id just sent means the connection is out of step: it is
closed and the delivery retried.

Also here: :func:`send_messages` (used by ``hub send``) and :func:`ack_summary`.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import os
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from hub import metrics
from hub.channels.base import Context, Receipt, Receiver, Result
from hub.errors import ConfigError, Hl7ParseError, PermanentDelivery, RetryableDelivery
from hub.message import Message, Outcome
from hub.spec import BackoffSpec, DestinationConfig, SourceConfig, Strict, parse_duration, parse_listen
from hub.transforms.hl7v2 import Hl7Message, accept_ack_wanted, ack_code, ack_for_unparseable, build_ack, parse
from hub.transforms.hl7v2.ack import recover_msh

__all__ = [
    "MllpSource",
    "MllpDestination",
    "MllpTls",
    "Framer",
    "frame",
    "MllpConnection",
    "send_messages",
    "ack_summary",
    "parse_mllp_url",
    "normalise_segments",
]

log = logging.getLogger("hub.mllp")

VT, FS, CR = 0x0B, 0x1C, 0x0D
START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\r"
READ_SIZE = 65536
_HEAD = 4096  # bytes of a broken frame kept to recover its MSH for an AR
_WHITESPACE = b" \t\r\n\x00"


def _duration(v: Any) -> Any:
    if v is not None:
        parse_duration(v)
    return v


def _seconds(v: Any) -> float | None:
    """A duration setting in seconds; None or 0 means "never"."""
    if v is None:
        return None
    s = parse_duration(v)
    return s if s > 0 else None


# ============================================================================================ configuration
class MllpTls(Strict):
    """TLS for an MLLP listener or sender. Files are PEM, relative to home."""

    cert: str | None = Field(
        None,
        description="This side's certificate (chain). Required for a listener; for a sender, the client certificate "
        "it presents when the peer asks for mutual TLS.",
        examples=["/etc/hub/tls/hub.crt"],
    )
    key: str | None = Field(None, description="The private key of `cert`.", examples=["/etc/hub/tls/hub.key"])
    ca: str | None = Field(
        None,
        description="CA certificate(s) the peer's certificate must chain to. Listener: checks client certificates "
        "(mutual TLS); sender: checks the server (default: the system's CAs).",
        examples=["/etc/hub/tls/partners-ca.crt"],
    )
    client_cert: Literal["none", "optional", "required"] = Field(
        "none", description="Listener: ask peers for a certificate signed by `ca` (required = mutual TLS)."
    )
    verify: bool = Field(
        True, description="Sender: verify the server's certificate and name (turn off only for tests)."
    )
    server_name: str | None = Field(
        None, description="Sender: the name the server's certificate must carry (default: the host of `address`)."
    )
    min_version: Literal["1.2", "1.3"] = Field("1.2", description="Oldest TLS version accepted.")

    @model_validator(mode="after")
    def _pair(self) -> MllpTls:
        if bool(self.cert) != bool(self.key):
            raise ValueError("tls: cert and key go together")
        if self.client_cert != "none" and not self.ca:
            raise ValueError("tls: client_cert needs ca (the CA that signs the peers' certificates)")
        return self


def _min_version(tls: MllpTls) -> ssl.TLSVersion:
    return ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2


def server_context(tls: MllpTls, ctx: Context) -> ssl.SSLContext:
    """The listener's TLS context (reads the files: call at start, not in a constructor)."""
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    c.minimum_version = _min_version(tls)
    assert tls.cert and tls.key
    c.load_cert_chain(str(ctx.resolve(tls.cert)), str(ctx.resolve(tls.key)))
    if tls.client_cert != "none":
        assert tls.ca
        c.load_verify_locations(cafile=str(ctx.resolve(tls.ca)))
        c.verify_mode = ssl.CERT_REQUIRED if tls.client_cert == "required" else ssl.CERT_OPTIONAL
    return c


def client_context(tls: MllpTls, ctx: Context | None = None) -> ssl.SSLContext:
    """A sender's TLS context (reads the files)."""
    resolve = ctx.resolve if ctx is not None else (lambda p: p)
    c = ssl.create_default_context(cafile=str(resolve(tls.ca)) if tls.ca else None)
    c.minimum_version = _min_version(tls)
    if not tls.verify:
        c.check_hostname = False
        c.verify_mode = ssl.CERT_NONE
    if tls.cert and tls.key:
        c.load_cert_chain(str(resolve(tls.cert)), str(resolve(tls.key)))
    return c


# ============================================================================================ framing
def frame(payload: bytes) -> bytes:
    """``payload`` in an MLLP frame."""
    return START_BLOCK + payload + END_BLOCK


def normalise_segments(raw: bytes) -> bytes:
    """HL7 ends segments with CR; files often use LF or CRLF. A message without any CR gets its LFs turned into
    CRs, CRLF becomes CR; a lone LF inside a CR-terminated message (a line break in a value) is left alone."""
    if b"\n" not in raw:
        return raw
    if b"\r" not in raw:
        return raw.replace(b"\n", b"\r")
    return raw.replace(b"\r\n", b"\r")


class Framer:
    """Cuts an MLLP byte stream into frames. Pure (no I/O), so source, sender and tests share it.

    :meth:`feed` returns events in stream order:

    * ``("frame", payload)`` — a complete frame (without VT and FS CR);
    * ``("garbage", n)`` — ``n`` bytes outside any frame (whitespace between frames is not counted);
    * ``("too_large", head)`` — a frame longer than ``max_bytes`` has ended; ``head`` is its first bytes (the
      rest was discarded as it arrived, so memory stays bounded);
    * ``("unterminated", head)`` — a new start block came before the end of the frame in progress.

    A frame may end with FS alone (no CR), as some senders do.
    """

    __slots__ = ("buf", "in_frame", "max_bytes", "oversized", "started")

    def __init__(self, max_bytes: int = 10 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.buf = bytearray()
        self.in_frame = False
        self.oversized = False
        self.started = 0.0  # monotonic time the frame in progress began

    @property
    def pending(self) -> int:
        """Bytes of the frame in progress held so far."""
        return len(self.buf)

    def head(self) -> bytes:
        return bytes(self.buf[:_HEAD])

    def _open(self) -> None:
        self.in_frame = True
        self.oversized = False
        self.buf.clear()
        self.started = time.monotonic()

    def _append(self, chunk: bytes | memoryview) -> None:
        if self.oversized:
            return
        if len(self.buf) + len(chunk) > self.max_bytes:
            self.oversized = True
            keep = max(0, _HEAD - len(self.buf))
            self.buf += chunk[:keep]
            return
        self.buf += chunk

    def feed(self, data: bytes) -> list[tuple[str, Any]]:
        events: list[tuple[str, Any]] = []
        n = len(data)
        pos = 0
        # The common case: a whole frame (or several) in one read, nothing in progress.
        while pos < n:
            if not self.in_frame:
                i = data.find(START_BLOCK, pos)
                junk = data[pos:] if i < 0 else data[pos:i]
                if junk:
                    stray = len(junk.strip(_WHITESPACE))
                    if stray:
                        events.append(("garbage", stray))
                if i < 0:
                    return events
                pos = i + 1
                j = data.find(b"\x1c", pos)
                k = data.find(START_BLOCK, pos, j if j >= 0 else n)
                if j >= 0 and k < 0 and j - pos <= self.max_bytes:
                    events.append(("frame", data[pos:j]))
                    pos = j + 1
                    if pos < n and data[pos] == CR:
                        pos += 1
                    continue
                self._open()
            # inside a frame: look for its end, or a start block that abandons it
            j = data.find(b"\x1c", pos)
            k = data.find(START_BLOCK, pos, j if j >= 0 else n)
            if k >= 0:
                self._append(memoryview(data)[pos:k])
                events.append(("unterminated", self.head()))
                self.in_frame = False
                self.buf.clear()
                pos = k
                continue
            if j < 0:
                self._append(memoryview(data)[pos:])
                return events
            self._append(memoryview(data)[pos:j])
            if self.oversized:
                events.append(("too_large", self.head()))
            else:
                events.append(("frame", bytes(self.buf)))
            self.in_frame = False
            self.oversized = False
            self.buf.clear()
            pos = j + 1
            if pos < n and data[pos] == CR:
                pos += 1
        return events


# ============================================================================================ small HL7 helpers
def _header_fields(raw: bytes) -> list[bytes] | None:
    """The fields of the MSH line of ``raw`` as bytes (MSH-1 at index 1 is missing: index i is MSH-(i+1)),
    without decoding or parsing — for duplicate keys. None when ``raw`` does not start with MSH."""
    head = raw[:2048].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head[:3] != b"MSH" or len(head) < 4:
        return None
    end = len(head)
    for sep in (b"\r", b"\n"):
        i = head.find(sep)
        if 0 <= i < end:
            end = i
    return head[:end].split(head[3:4])


def _single_message(raw: bytes) -> bool:
    return b"\rMSH" not in raw and b"\nMSH" not in raw


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


# ============================================================================================ source
@dataclass
class _Peer:
    """One connection's bookkeeping (no content)."""

    address: str
    task: asyncio.Task[Any] | None
    writer: asyncio.StreamWriter
    busy: bool = False
    frames: int = 0


@dataclass
class _Seen:
    """A control id already taken (duplicate suppression): when it expires and how it was answered."""

    key: str
    expires: float
    done: asyncio.Future[tuple[str, str | None, str | None, str | None] | None] = field(repr=False)


class _Counts(collections.Counter):  # type: ignore[type-arg]
    """The listener's counts; the problem ones also feed ``hub_mllp_problems_total{channel, reason}``."""

    PROBLEMS = frozenset(
        {
            "refused",
            "tls_failed",
            "garbage",
            "too_large",
            "unterminated",
            "unparseable",
            "unanswerable",
            "connection_errors",
            "internal_errors",
        }
    )

    def __init__(self, channel: str) -> None:
        super().__init__()
        self.channel = channel

    def __setitem__(self, key: str, value: int) -> None:
        delta = value - self.get(key, 0)
        super().__setitem__(key, value)
        if delta > 0 and key in self.PROBLEMS:
            metrics.MLLP_PROBLEMS.labels(self.channel, key).inc(delta)


class MllpSource:
    class Config(SourceConfig):
        """Listen for HL7 v2 over MLLP: ``{type: mllp, listen: 127.0.0.1:2575}``. One frame = one message (or a batch)."""

        type: Literal["mllp"] = "mllp"
        format: Literal["hl7v2", "fhir", "x12", "csv", "raw"] | None = Field(
            "hl7v2",
            description="Content type of the frames (MLLP carries HL7 v2; anything unreadable is answered with AR).",
        )
        listen: str = Field(
            description="host:port to listen on (127.0.0.1 = this machine only; 0.0.0.0 = every interface).",
            examples=["127.0.0.1:2575", "0.0.0.0:2575"],
        )
        ack: Literal["after_store", "after_delivery"] = Field(
            "after_store",
            description="When to answer: after_store = as soon as the message is committed (the peer may send the next); "
            "after_delivery = once every destination has it (AA), or AE when one gave up or ack_timeout passed.",
        )
        ack_timeout: str | int | float = Field(
            "30s", description="ack: after_delivery — longest wait before answering AE."
        )
        max_message_bytes: int = Field(
            10 * 1024 * 1024,
            ge=64,
            description="Largest frame taken; a longer one is discarded as it arrives and answered AR.",
        )
        idle_timeout: str | int | float | None = Field(
            "1h",
            description="Close a connection that sends nothing for this long (null: never).",
            examples=["15m", None],
        )
        frame_timeout: str | int | float = Field(
            "60s",
            description="A frame must end (FS CR) this long after it began; else AR (when possible) and the connection closes.",
        )
        max_connections: int = Field(
            1000, ge=1, description="Connections open at once; more are refused (closed at once)."
        )
        allow: list[str] = Field(
            default_factory=list,
            description="Peer addresses or networks allowed to connect (empty: anyone who can reach the port).",
            examples=[["10.20.0.15", "10.30.0.0/24"]],
        )
        tls: MllpTls | None = Field(
            None, description="Serve MLLP over TLS (cert + key); mutual TLS with client_cert: required."
        )
        dedup_window: str | int | float | None = Field(
            None,
            description="Suppress duplicates: a message whose sending app, facility and MSH-10 were already taken within "
            "this window is answered with the same code and not stored again (null: off).",
            examples=["10m"],
        )

        _v_durations = field_validator("ack_timeout", "frame_timeout")(lambda cls, v: (parse_duration(v), v)[1])
        _v_optional = field_validator("idle_timeout", "dedup_window")(lambda cls, v: _duration(v))

        @field_validator("listen")
        @classmethod
        def _listen(cls, v: str) -> str:
            parse_listen(v)
            return v

        @field_validator("allow")
        @classmethod
        def _allow(cls, v: list[str]) -> list[str]:
            for a in v:
                try:
                    ipaddress.ip_network(a, strict=False)
                except ValueError:
                    raise ValueError(
                        f"allow: {a!r} is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/24)"
                    ) from None
            return v

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx
        self.host, self.port = parse_listen(config.listen)
        if config.tls is not None and not (config.tls.cert and config.tls.key):
            raise ConfigError("tls: a listener needs cert and key")
        self.networks = [ipaddress.ip_network(a, strict=False) for a in config.allow]
        self.ack_timeout = parse_duration(config.ack_timeout)
        self.idle_timeout = _seconds(config.idle_timeout)
        self.frame_timeout = parse_duration(config.frame_timeout)
        self.dedup_window = _seconds(config.dedup_window)
        self.counts: collections.Counter[str] = _Counts(ctx.channel)
        self._receive: Receiver | None = None
        self._server: asyncio.AbstractServer | None = None
        self._peers: dict[int, _Peer] = {}
        self._stopping = False
        self._seen: collections.OrderedDict[str, _Seen] = collections.OrderedDict()
        self._gauge: Any = None
        self._tls: ssl.SSLContext | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self, receive: Receiver) -> None:
        self._receive = receive
        self._stopping = False
        self._tls = server_context(self.config.tls, self.ctx) if self.config.tls is not None else None
        try:
            from hub import metrics

            self._gauge = metrics.MLLP_CONNECTIONS.labels(self.ctx.channel, "source")
        except Exception:
            self._gauge = None
        try:
            # TLS is started per connection in _serve (after the allow list), so failed handshakes are seen and counted.
            self._server = await asyncio.start_server(
                self._serve, self.host, self.port, reuse_address=True, backlog=512, limit=READ_SIZE * 4
            )
        except OSError as exc:  # the engine logs it in one line and marks the channel failed; the others run on
            why = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
            raise OSError(f"cannot listen on {self.host}:{self.port}: {why}") from None
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        log.info(
            "channel %s: MLLP listening on %s:%d%s",
            self.ctx.channel,
            self.host,
            self.port,
            " (TLS)" if self._tls else "",
        )

    async def stop(self) -> None:
        """Stop listening, let messages in progress be answered (up to 5 s), close every connection. Idempotent."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
            self._server = None
        peers = list(self._peers.values())
        for p in peers:
            if not p.busy and p.task is not None:
                p.task.cancel()
        tasks = [p.task for p in peers if p.task is not None]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=5)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1)
        for p in peers:
            p.writer.close()
        self._peers.clear()

    @property
    def connections(self) -> int:
        return len(self._peers)

    # ------------------------------------------------------------------ one connection
    def _allowed(self, ip: str) -> bool:
        if not self.networks:
            return True
        try:
            addr = ipaddress.ip_address(ip.split("%")[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in n for n in self.networks)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername") or ("?", 0)
        ip, port = str(peername[0]), int(peername[1]) if len(peername) > 1 else 0
        address = f"{ip}:{port}"
        channel = self.ctx.channel
        if self._stopping or not self._allowed(ip) or len(self._peers) >= self.config.max_connections:
            why = (
                "stopping"
                if self._stopping
                else "not on the allow list"
                if not self._allowed(ip)
                else "too many connections"
            )
            self.counts["refused"] += 1
            log.warning("channel %s: MLLP connection from %s refused (%s)", channel, address, why)
            writer.close()
            return
        task = asyncio.current_task()
        peer = _Peer(address, task, writer)
        key = id(peer)
        self._peers[key] = peer
        self.counts["connections"] += 1
        if self._gauge is not None:
            self._gauge.inc()
        log.debug("channel %s: MLLP connection from %s", channel, address)
        framer = Framer(self.config.max_message_bytes)
        garbage = 0
        why = "closed by the peer"
        try:
            if self._tls is not None:
                try:
                    await writer.start_tls(self._tls, ssl_handshake_timeout=self.frame_timeout)
                except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as exc:
                    self.counts["tls_failed"] += 1
                    reason = getattr(exc, "reason", None) or type(exc).__name__
                    log.warning(
                        "channel %s: TLS handshake with %s failed (%s); connection closed", channel, address, reason
                    )
                    why = "TLS handshake failed"
                    return
            while not self._stopping:
                timeout = self.frame_timeout if framer.in_frame else self.idle_timeout
                if framer.in_frame:
                    timeout = max(0.0, framer.started + self.frame_timeout - time.monotonic())
                try:
                    if timeout is None:
                        data = await reader.read(READ_SIZE)
                    else:
                        async with asyncio.timeout(timeout):
                            data = await reader.read(READ_SIZE)
                except TimeoutError:
                    if framer.in_frame:
                        self.counts["unterminated"] += 1
                        log.warning(
                            "channel %s: MLLP frame from %s not ended within %gs (%d bytes); answering AR if possible and closing",
                            channel,
                            address,
                            self.frame_timeout,
                            framer.pending,
                        )
                        ack = self._ack_broken(
                            framer.head(), f"the MLLP frame did not end within {self.frame_timeout:g}s"
                        )
                        if ack is not None:
                            writer.write(frame(ack))
                        why = "unterminated frame"
                    else:
                        self.counts["idle_closed"] += 1
                        why = f"idle for {self.idle_timeout:g}s"
                    break
                if not data:
                    if framer.in_frame:
                        self.counts["unterminated"] += 1
                        log.warning(
                            "channel %s: MLLP peer %s closed the connection in the middle of a frame (%d bytes)",
                            channel,
                            address,
                            framer.pending,
                        )
                    break
                close = False
                for kind, value in framer.feed(data):
                    if kind == "frame":
                        peer.busy = True
                        try:
                            answer, close = await self._handle(value, address)
                        finally:
                            peer.busy = False
                        peer.frames += 1
                        garbage = 0
                        if answer is not None:
                            writer.write(frame(answer))
                        if close:
                            why = "message could not be answered"
                            break
                    elif kind == "garbage":
                        self.counts["garbage"] += 1
                        garbage += value
                        if peer.frames == 0 or garbage > _HEAD:
                            log.warning(
                                "channel %s: %d bytes outside MLLP frames from %s; closing (not MLLP)",
                                channel,
                                value,
                                address,
                            )
                            why, close = "bytes outside frames", True
                            break
                        log.warning(
                            "channel %s: %d bytes outside MLLP frames from %s discarded", channel, value, address
                        )
                    elif kind == "too_large":
                        self.counts["too_large"] += 1
                        log.warning(
                            "channel %s: MLLP frame from %s larger than max_message_bytes (%d) discarded",
                            channel,
                            address,
                            self.config.max_message_bytes,
                        )
                        ack = self._ack_broken(
                            value, f"the message is larger than {self.config.max_message_bytes} bytes"
                        )
                        if ack is None:
                            why, close = "frame too large", True
                            break
                        writer.write(frame(ack))
                    elif kind == "unterminated":
                        self.counts["unterminated"] += 1
                        log.warning(
                            "channel %s: MLLP frame from %s abandoned (a new frame began before its end)",
                            channel,
                            address,
                        )
                        ack = self._ack_broken(value, "the MLLP frame was not ended before the next one began")
                        if ack is not None:
                            writer.write(frame(ack))
                if close:
                    break
                await writer.drain()
            else:
                why = "hub stopping"
        except asyncio.CancelledError:
            why = "hub stopping"
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            self.counts["connection_errors"] += 1
            why = f"{type(exc).__name__}"
        except Exception:
            self.counts["internal_errors"] += 1
            log.exception("channel %s: MLLP connection from %s failed", channel, address)
            why = "internal error"
        finally:
            self._peers.pop(key, None)
            if self._gauge is not None:
                self._gauge.dec()
            try:
                writer.close()
            except Exception:
                pass
            log.debug(
                "channel %s: MLLP connection from %s closed (%s) after %d frame(s)", channel, address, why, peer.frames
            )

    # ------------------------------------------------------------------ one frame
    async def _handle(self, raw: bytes, address: str) -> tuple[bytes | None, bool]:
        """Receive one frame and build its answer: (ACK bytes or None, close the connection?)."""
        assert self._receive is not None
        self.counts["frames"] += 1
        seen: _Seen | None = None
        store_key: str | None = None
        if self.dedup_window is not None:
            dkey = self._dedup_key(raw)
            if dkey is not None:
                known = await self._duplicate(dkey)
                if known is not None:
                    self.counts["duplicates"] += 1
                    log.info(
                        "channel %s: duplicate message from %s answered %s without storing it",
                        self.ctx.channel,
                        address,
                        known[0],
                    )
                    return self._ack_duplicate(raw, known)
                seen = self._remember(dkey)
                store_key = f"mllp:{dkey}:{int(time.time() // self.dedup_window)}"
        try:
            receipt = await self._receive(raw, source_ref=f"mllp:{address}", dedup_key=store_key)
        except BaseException:
            if seen is not None:
                self._forget(seen, None)
            raise
        if self.config.ack == "after_delivery" and self.ctx.engine is not None:
            await self._wait_delivered(receipt)
        answer, close = self._answer(receipt, raw)
        if seen is not None:
            r = receipt.results[0] if len(receipt.results) == 1 else None
            if r is None or r.outcome is Outcome.ERROR:
                self._forget(seen, None)
            else:
                self._forget(seen, (r.outcome.value, r.reason, r.code, r.location))
        if any(r.outcome is Outcome.REJECTED for r in receipt.results):
            self.counts["rejected"] += 1
        return answer, close

    async def _wait_delivered(self, receipt: Receipt) -> None:
        """ack: after_delivery — turn accepted results whose deliveries did not all succeed in time into errors."""
        ids = [r.message_id for r in receipt.results if r.outcome is Outcome.ACCEPTED and r.message_id is not None]
        if not ids:
            return
        states = await self.ctx.engine.wait_delivered(ids, self.ack_timeout)
        for r in receipt.results:
            if r.outcome is not Outcome.ACCEPTED or r.message_id is None:
                continue
            st = states.get(r.message_id, [])
            if all(s == "sent" for s in st):
                continue
            r.outcome = Outcome.ERROR
            r.code = "207"
            r.location = None
            if "dead" in st:
                r.reason = "the message was stored but a destination gave up delivering it"
            else:
                r.reason = f"the message was stored but not delivered within {self.ack_timeout:g}s"

    # ------------------------------------------------------------------ acknowledgements
    def _answer(self, receipt: Receipt, raw: bytes) -> tuple[bytes | None, bool]:
        """The ACK for a receipt (a batch of ACKs for a batch), or (None, close) when none can or need be sent."""
        acks: list[bytes] = []
        cannot = 0
        for r in receipt.results:
            ack, wanted = self._ack_for(r, raw)
            if ack is not None:
                acks.append(ack)
            elif wanted:
                cannot += 1
        if not receipt.results:
            return None, True
        if cannot and not acks:
            self.counts["unanswerable"] += 1
            log.warning(
                "channel %s: a frame with no readable MSH was stored as rejected; closing the connection",
                self.ctx.channel,
            )
            return None, True
        if not acks:
            return None, False  # MSH-15 asked for no acknowledgement
        if len(acks) == 1 and len(receipt.results) == 1:
            return acks[0], False
        body = b"".join(a if a.endswith(b"\r") else a + b"\r" for a in acks)
        return b"BHS|^~\\&\r" + body + f"BTS|{len(acks)}\r".encode(), False

    def _ack_for(self, r: Result, raw: bytes) -> tuple[bytes | None, bool]:
        """(ACK, True) for one result; (None, False) when the sender asked for none; (None, True) when none can be built."""
        msg = r.message.parsed if r.message is not None else None
        if not isinstance(msg, Hl7Message):
            content = r.message.raw if r.message is not None else raw
            if r.outcome in (Outcome.ACCEPTED, Outcome.FILTERED):
                try:
                    msg = parse(content)  # a channel with format: raw still answers in HL7
                except Hl7ParseError:
                    msg = recover_msh(content)  # accepted as raw although not HL7: answer from what MSH there is
                    if msg is None:
                        return None, True
            else:
                self.counts["unparseable"] += 1
                ack = self._ack_broken(
                    content, r.reason or "the message cannot be read", r.code or "100", r.location or ""
                )
                return ack, True
        code = ack_code(r.outcome, msg)
        if not accept_ack_wanted(msg, code):
            return None, False
        if r.outcome in (Outcome.ACCEPTED, Outcome.FILTERED):
            return build_ack(msg, code), True
        return build_ack(msg, code, text=r.reason, error_code=r.code or "207", error_location=r.location), True

    def _ack_broken(self, raw: bytes, reason: str, code: str = "207", location: str = "") -> bytes | None:
        """AR/CR for input that could not be taken, when its MSH can be recovered; else None."""
        try:
            return ack_for_unparseable(raw, Hl7ParseError(reason, code=code, location=location))
        except Exception:
            return None

    def _ack_duplicate(
        self, raw: bytes, known: tuple[str, str | None, str | None, str | None]
    ) -> tuple[bytes | None, bool]:
        outcome, reason, code, location = known
        try:
            msg = parse(raw)
        except Hl7ParseError:
            ack = self._ack_broken(raw, reason or "the message cannot be read", code or "100", location or "")
            return ack, ack is None
        m = Message(raw=raw, content_type="hl7v2", parsed=msg)
        ack, wanted = self._ack_for(
            Result(Outcome(outcome), reason=reason, code=code, location=location, message=m), raw
        )
        return ack, ack is None and wanted

    # ------------------------------------------------------------------ duplicate suppression
    def _dedup_key(self, raw: bytes) -> str | None:
        fields = _header_fields(raw)
        if fields is None or len(fields) < 10 or not _single_message(raw):
            return None
        control = fields[9].strip()
        if not control:
            return None
        return b"^".join((fields[2], fields[3], control)).decode("latin-1")[:400]

    async def _duplicate(self, dkey: str) -> tuple[str, str | None, str | None, str | None] | None:
        now = time.monotonic()
        seen = self._seen
        while seen:
            first = next(iter(seen.values()))
            if first.expires > now or not first.done.done():
                break
            seen.popitem(last=False)
        entry = seen.get(dkey)
        if entry is None or entry.expires <= now:
            return None
        return await asyncio.shield(entry.done)  # the first copy may still be in flight: answer as it is answered

    def _remember(self, dkey: str) -> _Seen:
        assert self.dedup_window is not None
        entry = _Seen(dkey, time.monotonic() + self.dedup_window, asyncio.get_running_loop().create_future())
        self._seen.pop(dkey, None)
        self._seen[dkey] = entry
        return entry

    def _forget(self, entry: _Seen, answer: tuple[str, str | None, str | None, str | None] | None) -> None:
        """Resolve a remembered control id; an answer of None (store down) forgets it, so a resend is taken."""
        if not entry.done.done():
            entry.done.set_result(answer)
        if answer is None and self._seen.get(entry.key) is entry:
            del self._seen[entry.key]


# ============================================================================================ client side
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


# ============================================================================================ destination
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
            default_factory=lambda: BackoffSpec(initial="500ms", max="30s"),
            description="After a failed connect, wait this long before the next (growing to max).",
        )
        segment_separator: Literal["cr", "keep"] = Field(
            "cr",
            description="cr: send segments ended by CR as HL7 requires (LF/CRLF from files are converted); keep: as stored.",
        )
        max_ack_bytes: int = Field(1024 * 1024, ge=64, description="Largest answer read.")
        tls: MllpTls | None = Field(
            None, description="Connect with TLS (ca to check the server; cert + key for mutual TLS)."
        )

        _v_durations = field_validator("connect_timeout", "ack_timeout")(lambda cls, v: (parse_duration(v), v)[1])
        _v_idle = field_validator("idle_close")(lambda cls, v: _duration(v))

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
        self.idle_close = _seconds(config.idle_close)
        self._initial = parse_duration(config.reconnect.initial)
        self._max = parse_duration(config.reconnect.max)
        self._delay = 0.0
        self._next_connect = 0.0
        self._idle: list[MllpConnection] = []
        self._slots: asyncio.Semaphore | None = None
        self._ssl: ssl.SSLContext | None = None
        self._closed = False
        self._gauge: Any = None
        self.opened = 0  # connections opened (tests and logs)

    # ------------------------------------------------------------------ connections
    def _gauge_for(self, message: Message) -> Any:
        if self._gauge is None:
            try:
                from hub import metrics

                self._gauge = metrics.MLLP_CONNECTIONS.labels(
                    self.ctx.channel, str(message.meta.get("destination") or "mllp")
                )
            except Exception:
                self._gauge = False
        return self._gauge or None

    async def _connect(self, gauge: Any) -> MllpConnection:
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
        if gauge is not None:
            gauge.inc()
        log.info("channel %s: MLLP connected to %s", self.ctx.channel, self.config.address)
        return conn

    def _drop(self, conn: MllpConnection, gauge: Any) -> None:
        if not conn.closed:
            conn.close()
            if gauge is not None:
                gauge.dec()

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
        gauge = self._gauge_for(message)
        async with self._slots:
            for attempt in (1, 2):
                conn = None
                while self._idle:
                    c = self._idle.pop()
                    if c.stale(self.idle_close):
                        self._drop(c, gauge)
                    else:
                        conn = c
                        break
                reused = conn is not None
                if conn is None:
                    conn = await self._connect(gauge)
                try:
                    await conn.send(payload)
                    if no_ack:
                        self._release(conn, gauge)
                        return "sent; MSH-15 is NE (no accept acknowledgement expected)"
                    answer = await conn.receive(self.ack_timeout)
                except TimeoutError:
                    self._drop(conn, gauge)  # a late ACK must not be read as the next message's
                    text = f"no ACK from {self.config.address} within {self.ack_timeout:g}s"
                    if self.config.on_timeout == "dead":
                        raise PermanentDelivery(text) from None
                    raise RetryableDelivery(text) from None
                except (OSError, EOFError, ssl.SSLError) as exc:
                    self._drop(conn, gauge)
                    if reused and attempt == 1:
                        log.info(
                            "channel %s: pooled MLLP connection to %s was closed; sending on a new one",
                            self.ctx.channel,
                            self.config.address,
                        )
                        continue
                    raise RetryableDelivery(f"{self.config.address}: {exc or type(exc).__name__}") from exc
                break
            return self._judge(answer, control_id, conn, gauge)
        raise AssertionError("unreachable")

    def _release(self, conn: MllpConnection, gauge: Any) -> None:
        if self._closed or conn.closed:
            self._drop(conn, gauge)
        else:
            self._idle.append(conn)

    def _judge(self, answer: bytes, control_id: str | None, conn: MllpConnection, gauge: Any) -> str:
        """AA/CA → the ACK text (stored); everything else raises per the on_* policy."""
        try:
            ack = parse(answer)
            text = answer.decode(ack.codec, "replace")
        except (Hl7ParseError, LookupError):
            text = answer.decode("utf-8", "replace")
            self._drop(conn, gauge)
            raise RetryableDelivery(
                f"{self.config.address} answered something that is not an HL7 ACK", response=text[:4000]
            ) from None
        code = (ack.get("MSA-1") or "").upper()
        acked = ack.get("MSA-2")
        if self.config.check_control_id and control_id is not None and acked != control_id:
            self._drop(conn, gauge)
            raise RetryableDelivery(
                f"{self.config.address} acknowledged control id {acked!r}, not {control_id!r}; reconnecting",
                response=text,
            )
        self._release(conn, gauge)
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
        gauge = self._gauge or None
        while self._idle:
            self._drop(self._idle.pop(), gauge)
