"""The durable store (SQLAlchemy Core; SQLite by default, PostgreSQL by URL).

:class:`Store` (hub.store.repository) is the one entry point; the value objects it takes and gives are in
hub.store.records. The repositories of other tables built on it: hub.store.auth (users, tokens, sessions, audit)
and hub.store.claim_status (X12 claims submitted and their 999/277CA status).
"""

from __future__ import annotations

from hub.store.records import (
    DELIVERY_STATUSES,
    MESSAGE_STATUSES,
    Accepted,
    Claimed,
    Mark,
    NewDelivery,
    NewMessage,
    SearchQuery,
)
from hub.store.repository import Store

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
