"""What connectors are given and what they implement.

A source is built as ``Source(config, ctx)`` and started with the channel's ``receive`` coroutine; it hands
each input to ``receive`` and answers its peer from the returned :class:`Receipt` (DESIGN.md §2 outcomes).
A destination is built as ``Destination(config, ctx)``; its ``send`` returns the peer's answer (stored with the
delivery) or raises :class:`~hub.errors.RetryableDelivery` / :class:`~hub.errors.PermanentDelivery`.
Neither imports the engine: everything they may use arrives in the :class:`Context` (DESIGN.md §6.6), the
running engine as :class:`EngineServices` — what a component may ask of it: another channel's input
(:class:`ChannelInput`, for the ``channel`` destination) and waiting for deliveries (:class:`DeliveryWaiter`, for
``ack: after_delivery``, and for one delivery's response). :class:`hub.engine.Engine` implements both.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from hub.message import Message, Outcome

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from hub.spec import Config
    from hub.store import NewDelivery, Store

__all__ = [
    "Context",
    "Result",
    "Receipt",
    "Processed",
    "Receiver",
    "Source",
    "Destination",
    "ReportsPeer",
    "ChannelInput",
    "DeliveryWaiter",
    "EngineServices",
]


@dataclass
class Context:
    """Services injected into components. Tests build one with only what they need."""

    home: Path = field(default_factory=Path.cwd)
    mappings_dir: Path = field(default_factory=lambda: Path("mappings"))
    config: Config | None = None
    store: Store | None = None
    engine: EngineServices | None = None  # the running hub.engine.Engine (None in `hub check`, `hub test`)
    node: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    channel: str = ""
    testing: bool = False  # built for `hub test`: no sockets, no folders created
    executor: Executor | None = None  # threads for pipelines too slow for the event loop (None: asyncio's default)

    def resolve(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.home / p


@dataclass
class Result:
    """What became of one message of an input."""

    outcome: Outcome
    message_id: int | None = None
    reason: str | None = None
    code: str | None = None  # the protocol's error code (HL7 table 0357, X12, FHIR issue type)
    location: str | None = None
    message: Message | None = None  # with its parsed document, for building an acknowledgement
    duplicate: bool = False
    delivery_ids: list[int] = field(default_factory=list)


@dataclass
class Processed:
    """The pure result of running one message through filters, routes and transforms
    (:meth:`hub.channels.channel.Channel.process`), before anything is stored."""

    message: Message
    status: str  # accepted | filtered | rejected | error
    reason: str | None = None
    code: str | None = None
    location: str | None = None
    deliveries: list[NewDelivery] = field(default_factory=list)
    outputs: dict[str, list[Message]] = field(default_factory=dict)  # destination → transformed messages


_SEVERITY = {Outcome.ERROR: 3, Outcome.REJECTED: 2, Outcome.ACCEPTED: 1, Outcome.FILTERED: 0}


@dataclass
class Receipt:
    """The results of one input (a file may hold a batch of messages)."""

    results: list[Result]

    @property
    def outcome(self) -> Outcome:
        """The worst outcome of the input: error > rejected > accepted > filtered."""
        if not self.results:
            return Outcome.FILTERED
        return max((r.outcome for r in self.results), key=_SEVERITY.__getitem__)

    @property
    def reasons(self) -> list[str]:
        return [r.reason for r in self.results if r.reason]


Receiver = Callable[..., Awaitable[Receipt]]


class Source(Protocol):
    async def start(self, receive: Receiver) -> None: ...

    async def stop(self) -> None: ...


class Destination(Protocol):
    async def send(self, message: Message) -> str | None: ...

    async def close(self) -> None: ...

    # Optional: ``async def send_many(self, messages) -> list[str | None | BaseException]`` sends several in order
    # and stops at the first failure (its exception is the last item; the rest are not sent). A FIFO worker uses it
    # for what it claimed at once, so a destination can share work between them (one folder fsync for many files).


@runtime_checkable
class ReportsPeer(Protocol):
    """Optional on a source or destination that talks to a remote peer (MLLP, SFTP …): how that connection is now.

    The engine's facade (what the web and ``hub status`` read) asks each running component for it instead of
    reading the Prometheus gauges back. Keys, all optional: ``mllp`` ({endpoint: open connections}, endpoint
    ``source`` for a listener's peers, else the destination's name), ``sftp_last_poll`` (epoch seconds of the last
    poll that reached the server, None before the first), ``sftp_error`` (why the last poll failed, None once one
    works).
    """

    def peer_state(self) -> dict[str, Any]: ...


class ChannelInput(Protocol):
    """How a component hands a message to another channel of this hub (the ``channel`` destination)."""

    def channel_input(self, channel: str) -> Receiver | None:
        """The running channel's ``receive``; None when no channel of that name runs."""
        ...


class DeliveryWaiter(Protocol):
    """How a source with ``ack: after_delivery`` waits until the messages it took were delivered."""

    async def wait_delivered(self, message_ids: list[int], timeout: float) -> dict[int, list[str]]:
        """Message id → its deliveries' states once all are final (sent or dead) or ``timeout`` seconds passed."""
        ...

    async def wait_response(self, message_id: int, destination: str, timeout: float) -> tuple[str, str | None] | None:
        """The state and stored response of the message's delivery to ``destination`` (of the message's channel)
        once it is final (sent or dead), or as it is when ``timeout`` seconds passed; None when the message has no
        delivery to that destination. For a source that answers with what a destination answered (the ``http``
        source's ``response: after_delivery``)."""
        ...


class EngineServices(ChannelInput, DeliveryWaiter, Protocol):
    """What components may ask of the running engine (:attr:`Context.engine`)."""
