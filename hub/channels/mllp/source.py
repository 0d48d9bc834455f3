"""The receiving end of MLLP: :class:`MllpSource`, the ``mllp`` source — a listener that takes HL7 v2 frames and
answers each with an ACK.

Per connection (asyncio, one task each, any number at once):

* the peer must be on the ``allow`` list (when set), and present a certificate when ``tls.client_cert`` asks;
* bytes are cut into frames by :class:`~hub.channels.mllp.framing.Framer`; a frame goes to ``receive`` (parse once
  → filters → routes → one store commit) and is answered from the :class:`~hub.channels.base.Receipt`:
  accepted/filtered → AA, rejected → AR with an ERR segment (HL7 table 0357 code and location), error (the store
  is down) → AE; CA/CR/CE when the message asks for enhanced mode (MSH-15/16), and no answer at all when MSH-15
  says the sender does not want one (NE, ER on success, SU on error);
* ``ack: after_store`` (default) answers right after the commit; ``ack: after_delivery`` waits until every
  destination has the message (AA) or one gave up or ``ack_timeout`` passed (AE);
* broken input never stops the listener: bytes outside frames, a frame over ``max_message_bytes``, a frame
  that never ends (``frame_timeout``) and a message that cannot be parsed are answered with AR when a control id
  can be recovered, otherwise the connection is closed; each is counted in :attr:`MllpSource.counts` and
  logged without content;
* ``dedup_window`` answers a message whose MSH-3/MSH-4/MSH-10 was already taken within the window with the
  same acknowledgement code, without storing it twice.

The open connections are in the gauge ``hub_mllp_connections{channel, endpoint="source"}`` and in
:meth:`MllpSource.peer_state`.
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

from prometheus_client import Gauge
from pydantic import Field, field_validator

from hub import metrics
from hub.channels.base import Context, Receipt, Receiver, Result
from hub.channels.mllp.framing import HEAD_BYTES, READ_SIZE, Framer, frame
from hub.channels.mllp.tls import MllpTls, optional_duration, seconds_or_never, server_context
from hub.errors import ConfigError, Hl7ParseError
from hub.message import Message, Outcome
from hub.spec import SourceConfig, parse_duration, parse_listen
from hub.transforms.hl7v2 import Hl7Message, accept_ack_wanted, ack_code, ack_for_unparseable, build_ack, parse
from hub.transforms.hl7v2.ack import recover_msh

__all__ = ["MllpSource"]

log = logging.getLogger("hub.mllp")

# How a message was answered (kept for its duplicates): outcome, reason, error code, error location.
_Answered = tuple[str, str | None, str | None, str | None]


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


@dataclass(slots=True)
class _Peer:
    """One connection's bookkeeping (no content)."""

    address: str
    task: asyncio.Task[Any] | None
    writer: asyncio.StreamWriter
    busy: bool = False
    frames: int = 0
    garbage: int = 0  # bytes outside frames since the last frame


@dataclass
class _Seen:
    """A control id already taken (duplicate suppression): when it expires and how it was answered."""

    key: str
    expires: float
    done: asyncio.Future[_Answered | None] = field(repr=False)


class _Counts(collections.Counter[str]):
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
        """Listen for HL7 v2 over MLLP: ``{type: mllp, listen: 127.0.0.1:2575}``.
        One frame = one message (or a batch)."""

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
            description="When to answer: after_store = as soon as the message is committed "
            "(the peer may send the next); after_delivery = once every destination has it (AA), "
            "or AE when one gave up or ack_timeout passed.",
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
            description="A frame must end (FS CR) this long after it began; "
            "else AR (when possible) and the connection closes.",
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
            description="Suppress duplicates: a message whose sending app, facility and MSH-10 were already taken "
            "within this window is answered with the same code and not stored again (null: off).",
            examples=["10m"],
        )

        _v_durations = field_validator("ack_timeout", "frame_timeout")(lambda cls, v: (parse_duration(v), v)[1])
        _v_optional = field_validator("idle_timeout", "dedup_window")(lambda cls, v: optional_duration(v))

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
        self.idle_timeout = seconds_or_never(config.idle_timeout)
        self.frame_timeout = parse_duration(config.frame_timeout)
        self.dedup_window = seconds_or_never(config.dedup_window)
        self.counts: collections.Counter[str] = _Counts(ctx.channel)
        self._receive: Receiver | None = None
        self._server: asyncio.AbstractServer | None = None
        self._peers: dict[int, _Peer] = {}
        self._stopping = False
        self._seen: collections.OrderedDict[str, _Seen] = collections.OrderedDict()
        self._gauge: Gauge | None = None  # hub_mllp_connections{channel, endpoint="source"}, labelled at start
        self._open = 0  # connections open now (what the gauge counts)
        self._tls: ssl.SSLContext | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self, receive: Receiver) -> None:
        self._receive = receive
        self._stopping = False
        self._tls = server_context(self.config.tls, self.ctx) if self.config.tls is not None else None
        try:
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

    def peer_state(self) -> dict[str, Any]:
        """:class:`~hub.channels.base.ReportsPeer`: ``{"mllp": {"source": connected peers}}``, the number in
        ``hub_mllp_connections``."""
        return {"mllp": {"source": self._open}}

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

    def _refusal(self, ip: str) -> str | None:
        """Why a new connection from ``ip`` is refused, or None when it is taken."""
        if self._stopping:
            return "stopping"
        if not self._allowed(ip):
            return "not on the allow list"
        if len(self._peers) >= self.config.max_connections:
            return "too many connections"
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection, from accept to close (the server runs it as a task of its own)."""
        peername = writer.get_extra_info("peername") or ("?", 0)
        ip, port = str(peername[0]), int(peername[1]) if len(peername) > 1 else 0
        address = f"{ip}:{port}"
        refused = self._refusal(ip)
        if refused is not None:
            self.counts["refused"] += 1
            log.warning("channel %s: MLLP connection from %s refused (%s)", self.ctx.channel, address, refused)
            writer.close()
            return
        peer = self._opened(address, writer)
        why = "closed by the peer"
        try:
            # TLS is started here (after the allow list), so failed handshakes are seen and counted.
            if self._tls is not None and not await self._start_tls(writer, address):
                why = "TLS handshake failed"
                return
            why = await self._converse(reader, writer, peer)
        except asyncio.CancelledError:
            why = "hub stopping"
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            self.counts["connection_errors"] += 1
            why = f"{type(exc).__name__}"
        except Exception:
            self.counts["internal_errors"] += 1
            log.exception("channel %s: MLLP connection from %s failed", self.ctx.channel, address)
            why = "internal error"
        finally:
            self._closed(peer, why)

    def _opened(self, address: str, writer: asyncio.StreamWriter) -> _Peer:
        """Count a connection taken in (``connections``, the gauge) and keep its bookkeeping."""
        peer = _Peer(address, asyncio.current_task(), writer)
        self._peers[id(peer)] = peer
        self.counts["connections"] += 1
        self._open += 1
        if self._gauge is not None:
            self._gauge.inc()
        log.debug("channel %s: MLLP connection from %s", self.ctx.channel, address)
        return peer

    def _closed(self, peer: _Peer, why: str) -> None:
        """Close a connection and forget it (``why`` is for the log)."""
        self._peers.pop(id(peer), None)
        self._open -= 1
        if self._gauge is not None:
            self._gauge.dec()
        try:
            peer.writer.close()
        except Exception:
            pass
        log.debug(
            "channel %s: MLLP connection from %s closed (%s) after %d frame(s)",
            self.ctx.channel,
            peer.address,
            why,
            peer.frames,
        )

    async def _start_tls(self, writer: asyncio.StreamWriter, address: str) -> bool:
        """The TLS handshake on a new connection; False (counted and logged) when it fails."""
        assert self._tls is not None
        try:
            await writer.start_tls(self._tls, ssl_handshake_timeout=self.frame_timeout)
        except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as exc:
            self.counts["tls_failed"] += 1
            reason = getattr(exc, "reason", None) or type(exc).__name__
            log.warning(
                "channel %s: TLS handshake with %s failed (%s); connection closed", self.ctx.channel, address, reason
            )
            return False
        return True

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: _Peer) -> str:
        """Read frames and answer each until the connection should close; returns why (for the log).

        The hot path: one read, the frames in it handled and answered, one drain."""
        framer = Framer(self.config.max_message_bytes)
        address = peer.address
        while not self._stopping:
            if framer.in_frame:
                timeout: float | None = max(0.0, framer.started + self.frame_timeout - time.monotonic())
            else:
                timeout = self.idle_timeout
            try:
                if timeout is None:
                    data = await reader.read(READ_SIZE)
                else:
                    async with asyncio.timeout(timeout):
                        data = await reader.read(READ_SIZE)
            except TimeoutError:
                return self._timed_out(framer, writer, address)
            if not data:
                if framer.in_frame:
                    self._cut_off(framer, address)
                return "closed by the peer"
            for kind, value in framer.feed(data):
                if kind == "frame":
                    peer.busy = True
                    try:
                        answer, close = await self._handle(value, address)
                    finally:
                        peer.busy = False
                    peer.frames += 1
                    peer.garbage = 0
                    if answer is not None:
                        writer.write(frame(answer))
                    if close:
                        return "message could not be answered"
                else:
                    why = self._broken(kind, value, peer)
                    if why is not None:
                        return why
            await writer.drain()
        return "hub stopping"

    def _timed_out(self, framer: Framer, writer: asyncio.StreamWriter, address: str) -> str:
        """Nothing read in time: a frame in progress that did not end within ``frame_timeout`` (answered AR when
        possible), or an idle connection. Returns why the connection closes."""
        if not framer.in_frame:
            self.counts["idle_closed"] += 1
            return f"idle for {self.idle_timeout:g}s"
        self.counts["unterminated"] += 1
        log.warning(
            "channel %s: MLLP frame from %s not ended within %gs (%d bytes); answering AR if possible and closing",
            self.ctx.channel,
            address,
            self.frame_timeout,
            framer.pending,
        )
        ack = self._ack_broken(framer.head(), f"the MLLP frame did not end within {self.frame_timeout:g}s")
        if ack is not None:
            writer.write(frame(ack))
        return "unterminated frame"

    def _cut_off(self, framer: Framer, address: str) -> None:
        """The peer closed the connection in the middle of a frame."""
        self.counts["unterminated"] += 1
        log.warning(
            "channel %s: MLLP peer %s closed the connection in the middle of a frame (%d bytes)",
            self.ctx.channel,
            address,
            framer.pending,
        )

    def _broken(self, kind: str, value: Any, peer: _Peer) -> str | None:
        """Input that is not a frame (a :class:`Framer` event other than ``frame``): counted, logged, answered AR
        when a control id can be recovered. Returns why the connection must close, or None to read on."""
        channel = self.ctx.channel
        if kind == "garbage":
            self.counts["garbage"] += 1
            peer.garbage += value
            if peer.frames == 0 or peer.garbage > HEAD_BYTES:
                log.warning(
                    "channel %s: %d bytes outside MLLP frames from %s; closing (not MLLP)", channel, value, peer.address
                )
                return "bytes outside frames"
            log.warning("channel %s: %d bytes outside MLLP frames from %s discarded", channel, value, peer.address)
        elif kind == "too_large":
            self.counts["too_large"] += 1
            log.warning(
                "channel %s: MLLP frame from %s larger than max_message_bytes (%d) discarded",
                channel,
                peer.address,
                self.config.max_message_bytes,
            )
            ack = self._ack_broken(value, f"the message is larger than {self.config.max_message_bytes} bytes")
            if ack is None:
                return "frame too large"
            peer.writer.write(frame(ack))
        elif kind == "unterminated":
            self.counts["unterminated"] += 1
            log.warning(
                "channel %s: MLLP frame from %s abandoned (a new frame began before its end)", channel, peer.address
            )
            ack = self._ack_broken(value, "the MLLP frame was not ended before the next one began")
            if ack is not None:
                peer.writer.write(frame(ack))
        return None

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
        engine = self.ctx.engine
        if not ids or engine is None:
            return
        states = await engine.wait_delivered(ids, self.ack_timeout)
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
        """(ACK, True) for one result; (None, False) when the sender asked for none; (None, True) when none can be
        built."""
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

    def _ack_duplicate(self, raw: bytes, known: _Answered) -> tuple[bytes | None, bool]:
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

    async def _duplicate(self, dkey: str) -> _Answered | None:
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

    def _forget(self, entry: _Seen, answer: _Answered | None) -> None:
        """Resolve a remembered control id; an answer of None (store down) forgets it, so a resend is taken."""
        if not entry.done.done():
            entry.done.set_result(answer)
        if answer is None and self._seen.get(entry.key) is entry:
            del self._seen[entry.key]
