"""What goes into the store and comes out of it: messages and deliveries to accept, a claimed delivery, the
result of an attempt, a search; and the statuses they take (DESIGN.md §2).

Delivery states: ``queued → sending → sent``, or ``sending → retry → sending … → dead``. Message states:
``accepted``, ``filtered``, ``rejected``, ``error``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MESSAGE_STATUSES",
    "DELIVERY_STATUSES",
    "PENDING",
    "INDEXED",
    "NewDelivery",
    "NewMessage",
    "Accepted",
    "Claimed",
    "Mark",
    "SearchQuery",
]

MESSAGE_STATUSES = ("accepted", "filtered", "rejected", "error")
DELIVERY_STATUSES = ("queued", "sending", "retry", "sent", "dead")
PENDING = ("queued", "retry", "sending")  # a delivery not yet done with
INDEXED = ("control_id", "message_type", "sending_app", "sending_facility", "patient_id")  # metadata with a column
_LIMITS = {"control_id": 200, "message_type": 60, "sending_app": 200, "sending_facility": 200, "patient_id": 200}


def _clip(key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)[: _LIMITS.get(key, 200)]


@dataclass
class NewDelivery:
    destination: str
    route: str | None = None
    content: bytes | None = None  # None: the message's raw bytes
    content_type: str | None = None
    order_key: str | None = None


@dataclass
class NewMessage:
    channel: str
    raw: bytes
    content_type: str
    status: str = "accepted"
    received_at: float = field(default_factory=time.time)
    meta: dict[str, Any] = field(default_factory=dict)
    source_ref: str | None = None
    dedup_key: str | None = None
    error: str | None = None
    error_code: str | None = None
    deliveries: list[NewDelivery] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        extra = {k: v for k, v in self.meta.items() if k not in INDEXED and v is not None}
        return {
            "channel": self.channel,
            "received_at": self.received_at,
            "status": self.status,
            "content_type": self.content_type,
            **{k: _clip(k, self.meta.get(k)) for k in INDEXED},
            "source_ref": (self.source_ref or None) and self.source_ref[:500],
            "dedup_key": self.dedup_key,
            "error": self.error,
            "error_code": self.error_code,
            "meta": json.dumps(extra, default=str) if extra else None,
            "size": len(self.raw),
            "raw": self.raw,
        }


@dataclass
class Accepted:
    message_id: int
    duplicate: bool = False
    delivery_ids: list[int] = field(default_factory=list)


@dataclass
class Claimed:
    """A delivery claimed by a worker, with what it needs to send it."""

    id: int
    message_id: int
    channel: str
    destination: str
    attempts: int
    order_key: str | None
    content: bytes
    content_type: str
    received_at: float
    meta: dict[str, Any]


@dataclass
class Mark:
    """The result of one attempt: ``sent``, ``retry`` (with ``next_at``) or ``dead``."""

    delivery_id: int
    outcome: str
    attempts: int
    error: str | None = None
    response: str | None = None
    next_at: float | None = None
    drop_content: bool = False
    record: bool = True  # False: hand a claimed delivery back without counting an attempt (FIFO stop)


@dataclass
class SearchQuery:
    channel: str | None = None
    status: str | None = None  # a message status or a delivery status (a message with such a delivery)
    since: float | None = None
    until: float | None = None
    control_id: str | None = None
    patient_id: str | None = None
    message_type: str | None = None  # "ADT" matches ADT^*, "ADT^A04" exactly
    text: str | None = None
    destination: str | None = None
    before_id: int | None = None  # keyset paging: messages with a smaller id
    limit: int = 100
