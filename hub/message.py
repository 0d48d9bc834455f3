"""The message envelope that travels through a channel, and the outcome a source answers its peer with."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["Message", "Outcome", "CONTENT_TYPES", "sniff_content_type", "utcnow"]

CONTENT_TYPES = ("hl7v2", "fhir", "x12", "csv", "json", "xml", "raw")

# Metadata keys the store keeps in indexed columns (DESIGN.md §2); anything else stays in ``meta``.
INDEXED_META = (
    "control_id",
    "message_type",
    "trigger",
    "sending_app",
    "sending_facility",
    "patient_id",
)


def utcnow() -> datetime:
    return datetime.now(UTC)


# (str, Enum), not StrEnum: StrEnum would change str()/format() of a member from "Outcome.ACCEPTED" to "accepted".
class Outcome(str, enum.Enum):  # noqa: UP042 - see above: str() and format() must stay as they are
    """What a source answers its peer (DESIGN.md §2)."""

    ACCEPTED = "accepted"  # stored durably (and routed): MLLP AA, HTTP 200, file → done/
    FILTERED = "filtered"  # stored, no route wanted it: MLLP AA, HTTP 200, file → done/
    REJECTED = "rejected"  # bad input, never retried: MLLP AR, HTTP 422, file → error/
    ERROR = "error"  # the hub could not store it: MLLP AE, HTTP 503, file left for the next poll


@dataclass
class Message:
    """One unit of data: raw bytes, a content type and metadata.

    ``meta`` holds ``control_id``, ``message_type`` (e.g. ``ADT^A04``), ``trigger``, ``sending_app``,
    ``sending_facility``, ``patient_id`` and free keys such as ``source_name`` (the file it came from).
    ``parsed`` caches the format's document object (see :mod:`hub.transforms.document`) so a message is parsed
    once per pipeline; transforms that change content return a new Message with ``parsed`` set or ``None``.
    """

    raw: bytes
    content_type: str = "raw"
    meta: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    channel: str = ""
    received_at: datetime = field(default_factory=utcnow)
    parsed: Any = field(default=None, repr=False, compare=False)

    def replace(self, raw: bytes, content_type: str | None = None, parsed: Any = None) -> Message:
        """A copy with new content (metadata kept), for transforms."""
        return Message(
            raw=raw,
            content_type=content_type or self.content_type,
            meta=dict(self.meta),
            id=self.id,
            channel=self.channel,
            received_at=self.received_at,
            parsed=parsed,
        )

    @property
    def control_id(self) -> str | None:
        return self.meta.get("control_id")


def sniff_content_type(raw: bytes) -> str:
    """Guess the format from the first bytes (DESIGN.md §5): MSH|/FHS|/BHS| → hl7v2, ISA → x12, ``{`` → fhir when
    the input names a ``"resourceType"`` (else json), ``[`` → json, ``<`` → xml; anything else is raw."""
    head = raw[:16].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head[:3] in (b"MSH", b"FHS", b"BHS"):
        return "hl7v2"
    if head[:3] == b"ISA":
        return "x12"
    if head[:1] == b"{":
        return "fhir" if b'"resourceType"' in raw else "json"
    if head[:1] == b"[":
        return "json"
    if head[:1] == b"<":
        return "xml"
    return "raw"
