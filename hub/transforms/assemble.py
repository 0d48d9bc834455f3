"""Assemblers: many queued messages → one payload, for destinations with ``batch:`` (DESIGN.md §3).

An assembler is built like a transform (``Config`` model + ``(config, ctx)``) and called with the messages of
one batch, in queue order. It returns an :class:`Assembled`: the payload, plus the positions of messages it
could not include and why (those deliveries go dead with that reason; the others are sent). The delivery
worker runs it in a thread, so an assembler may draw numbers from the store through the context (X12
control numbers); it must not send anything itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field

from hub.message import Message
from hub.spec import TransformConfig

__all__ = ["Assembled", "ConcatAssembler", "Hl7BatchAssembler"]


@dataclass
class Assembled:
    content: bytes
    content_type: str
    skipped: dict[int, str] = field(default_factory=dict)  # index in the batch → why it was left out


class ConcatAssembler:
    class Config(TransformConfig):
        """The messages one after another, each ended by ``separator``."""

        type: Literal["concat"] = "concat"
        separator: str = Field("\n", description="Written after each message (YAML escapes like \\r\\n work).")

    def __init__(self, config: Config, ctx: Any) -> None:
        self.sep = config.separator.encode()

    def __call__(self, messages: list[Message]) -> Assembled:
        body = b"".join(m.raw if m.raw.endswith(self.sep) else m.raw + self.sep for m in messages)
        return Assembled(body, messages[0].content_type if messages else "raw")


class Hl7BatchAssembler:
    class Config(TransformConfig):
        """An HL7 v2 batch file: FHS, BHS, the messages, BTS with the count, FTS."""

        type: Literal["hl7_batch"] = "hl7_batch"
        sending_app: str = Field("HUB", description="FHS-3/BHS-3.")
        receiving_app: str = Field("", description="FHS-5/BHS-5.")

    def __init__(self, config: Config, ctx: Any) -> None:
        self.config = config

    def __call__(self, messages: list[Message]) -> Assembled:
        c = self.config
        now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        header = f"|^~\\&|{c.sending_app}||{c.receiving_app}||{now}"
        parts = [f"FHS{header}", f"BHS{header}"]
        for m in messages:
            text = m.raw.decode("utf-8", errors="surrogateescape").replace("\r\n", "\r").replace("\n", "\r").strip("\r")
            parts.append(text)
        parts += [f"BTS|{len(messages)}", "FTS|1"]
        return Assembled(("\r".join(parts) + "\r").encode("utf-8", errors="surrogateescape"), "hl7v2")
