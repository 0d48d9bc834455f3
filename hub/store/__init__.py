"""The durable store (SQLAlchemy Core; SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

from hub.store.repository import (
    DELIVERY_STATUSES,
    MESSAGE_STATUSES,
    Accepted,
    Claimed,
    Mark,
    NewDelivery,
    NewMessage,
    SearchQuery,
    Store,
)

__all__ = [
    "Store",
    "NewMessage",
    "NewDelivery",
    "Accepted",
    "Claimed",
    "Mark",
    "SearchQuery",
    "MESSAGE_STATUSES",
    "DELIVERY_STATUSES",
]
