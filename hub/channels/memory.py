"""In-memory connectors: the stand-ins ``hub test`` puts in place of real sources and destinations.

``memory`` destinations record what they were sent (and can be told to fail, for tests of retries);
the ``memory`` source is fed by calling :meth:`MemorySource.push`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hub.channels.base import Context, Receipt, Receiver
from hub.errors import PermanentDelivery, RetryableDelivery
from hub.message import Message
from hub.spec import DestinationConfig, SourceConfig

__all__ = ["MemorySource", "MemoryDestination", "ChannelSource"]


class MemorySource:
    class Config(SourceConfig):
        """A source fed from code (tests)."""

        type: Literal["memory"] = "memory"

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self._receive: Receiver | None = None

    async def start(self, receive: Receiver) -> None:
        self._receive = receive

    async def stop(self) -> None:
        self._receive = None

    async def push(self, raw: bytes, **kw: object) -> Receipt:
        assert self._receive is not None, "source not started"
        return await self._receive(raw, **kw)


class MemoryDestination:
    class Config(DestinationConfig):
        """Keeps what it is sent in memory (tests). ``fail``: raise retry/permanent errors for the first N sends."""

        type: Literal["memory"] = "memory"
        fail: Literal["none", "retry", "permanent"] = "none"
        fail_times: int = Field(default=0, ge=0)

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.sent: list[Message] = []
        self.calls = 0

    async def send(self, message: Message) -> str | None:
        self.calls += 1
        if self.config.fail != "none" and self.calls <= self.config.fail_times:
            if self.config.fail == "retry":
                raise RetryableDelivery(f"simulated failure {self.calls}")
            raise PermanentDelivery(f"simulated permanent failure {self.calls}")
        self.sent.append(message)
        return "ok"

    async def close(self) -> None:
        return None


class ChannelSource:
    """``source: {type: channel}``: the channel takes input only from other channels' ``channel`` destinations."""

    class Config(SourceConfig):
        type: Literal["channel"] = "channel"

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config

    async def start(self, receive: Receiver) -> None:
        return None

    async def stop(self) -> None:
        return None
