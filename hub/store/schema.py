"""The store's tables (SQLAlchemy Core). Alembic migrations under ``migrations/`` create and change them.

Times are UTC epoch seconds (floats): cheap to compare and index in SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

__all__ = ["metadata", "messages", "deliveries", "attempts", "leases", "sequences", "cursors"]

metadata = MetaData()

# SQLite only makes INTEGER PRIMARY KEY an alias of the rowid (autoincrementing); PostgreSQL gets BIGINT.
Id = BigInteger().with_variant(Integer(), "sqlite")

messages = Table(
    "messages",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("channel", String(100), nullable=False),
    Column("received_at", Float, nullable=False),
    Column("status", String(16), nullable=False),  # accepted | filtered | rejected | error
    Column("content_type", String(16), nullable=False),
    Column("control_id", String(200)),
    Column("message_type", String(60)),  # "ADT^A04", "837", "Bundle" …
    Column("sending_app", String(200)),
    Column("sending_facility", String(200)),
    Column("patient_id", String(200)),
    Column("source_ref", String(500)),  # the file, peer address or parent message it came from
    Column("dedup_key", String(500)),  # unique per channel when set: a file/SFTP object or MSH-10 already taken
    Column("error", Text),
    Column("error_code", String(20)),
    Column("meta", Text),  # JSON of the remaining metadata
    Column("size", Integer, nullable=False),
    Column("raw", LargeBinary, nullable=False),
    UniqueConstraint("channel", "dedup_key", name="uq_messages_dedup"),
)
Index("ix_messages_channel_received", messages.c.channel, messages.c.received_at)
Index("ix_messages_received", messages.c.received_at)
Index("ix_messages_control_id", messages.c.control_id)
Index("ix_messages_patient_id", messages.c.patient_id)
Index("ix_messages_type", messages.c.message_type)
Index("ix_messages_status", messages.c.channel, messages.c.status)
Index("ix_messages_status_id", messages.c.status, messages.c.id)  # search by status alone (0005)
# Text search (0005): SQLite's FTS5 table messages_fts and its triggers, PostgreSQL's pg_trgm index
# ix_messages_raw_trgm on encode(raw, 'escape') — outside this metadata; see hub/store/search_index.py.

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("message_id", Id, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("channel", String(100), nullable=False),
    Column("destination", String(100), nullable=False),
    Column("route", String(100)),
    Column("status", String(16), nullable=False),  # queued | sending | retry | sent | dead
    Column("order_key", String(200)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_at", Float, nullable=False),
    Column("lease_owner", String(100)),
    Column("lease_until", Float),
    Column("content_type", String(16)),
    Column("content", LargeBinary),  # NULL: send the message's raw bytes
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("sent_at", Float),
    Column("last_error", Text),
    Column("response", Text),
)
Index("ix_deliveries_queue", deliveries.c.channel, deliveries.c.destination, deliveries.c.status, deliveries.c.id)
Index("ix_deliveries_key", deliveries.c.channel, deliveries.c.destination, deliveries.c.order_key, deliveries.c.id)
Index("ix_deliveries_message", deliveries.c.message_id)
Index("ix_deliveries_status", deliveries.c.status, deliveries.c.message_id)  # search by delivery status (0005)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("delivery_id", Id, ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("at", Float, nullable=False),
    Column("outcome", String(16), nullable=False),  # sent | retry | dead
    Column("error", Text),
    Column("response", Text),
    Column("node", String(100)),
)
Index("ix_attempts_delivery", attempts.c.delivery_id)

leases = Table(
    "leases",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("owner", String(100), nullable=False),
    Column("until", Float, nullable=False),
)

sequences = Table(
    "sequences",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

cursors = Table(
    "cursors",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# ------------------------------------------------------------------------------------ users, sessions, audit (0002)
users = Table(
    "users",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("role", String(16), nullable=False),  # viewer | operator | analyst | admin
    Column("password_hash", String(300)),  # scrypt; NULL: token-only (a Prometheus scraper, a script)
    Column("disabled", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("user_id", Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),  # sha256 hex of the token; the token is shown once
    Column("label", String(100)),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),
    Column("revoked", Integer, nullable=False, default=0),
)
Index("ix_api_tokens_user", api_tokens.c.user_id)

sessions = Table(
    "sessions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),  # sha256 hex of the cookie value
    Column("user_id", Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)
Index("ix_sessions_user", sessions.c.user_id)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("username", String(100), nullable=False),
    Column("role", String(16)),
    Column("action", String(40), nullable=False),  # view_message, replay, pause, resume, user_add …
    Column("message_id", BigInteger),  # no foreign key: the audit outlives pruned messages
    Column("channel", String(100)),
    Column("detail", Text),  # JSON: filters, counts, target user … never message content
    Column("remote", String(100)),
)
Index("ix_audit_at", audit_log.c.at)
Index("ix_audit_user", audit_log.c.username, audit_log.c.at)
Index("ix_audit_message", audit_log.c.message_id)
Index("ix_audit_action", audit_log.c.action, audit_log.c.at)

__all__ += ["users", "api_tokens", "sessions", "audit_log"]

# ----------------------------------------------------------------------------------- X12 claims and their status (0003)
# One row per claim submitted to a trading partner (an 837 written by the `x12_837` assembler). ``message_id`` is
# the charge message (DFT^P03 / FHIR Claim) it came from; no foreign key: the billing record outlives pruned messages.
# Control numbers are kept without leading zeros ("000000012" → "12") so a 999's AK1/AK2 echo matches either way.
claims = Table(
    "claims",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("message_id", BigInteger, nullable=False),
    Column("channel", String(100), nullable=False),
    Column("destination", String(100)),
    Column("partner", String(100), nullable=False),
    Column("kind", String(1), nullable=False),  # P | I
    Column("patient_control_number", String(40), nullable=False),  # CLM01
    Column("charge", String(20)),  # CLM02
    Column("isa13", String(20), nullable=False),
    Column("gs06", String(20), nullable=False),
    Column("st02", String(20), nullable=False),
    Column("batch_reference", String(60)),  # BHT03
    Column("submitted_at", Float, nullable=False),
    Column("status", String(20), nullable=False),  # submitted | acknowledged | accepted | pending | rejected
    Column("status_at", Float, nullable=False),
    Column("status_detail", Text),
    Column("payer_claim_number", String(60)),  # 277CA REF*1K
)
Index("ix_claims_message", claims.c.message_id)
Index("ix_claims_transaction", claims.c.partner, claims.c.st02)
Index("ix_claims_pcn", claims.c.patient_control_number)
Index("ix_claims_status", claims.c.status, claims.c.message_id)

claim_events = Table(
    "claim_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("claim_id", Id, ForeignKey("claims.id", ondelete="CASCADE"), nullable=False),
    Column("at", Float, nullable=False),
    Column("source", String(10), nullable=False),  # 837 | 999 | 277CA
    Column("status", String(20), nullable=False),
    Column("code", String(20)),  # IK501 / AK901 / STC01-1
    Column("detail", Text),
    Column("message_id", BigInteger),  # the acknowledgement message that said so
)
Index("ix_claim_events_claim", claim_events.c.claim_id)

__all__ += ["claims", "claim_events"]

# ------------------------------------------------------------------------------- counts kept with the writes (0004)
# Messages per (channel, status) with destination '' and deliveries per (channel, destination, status), kept by
# triggers on messages and deliveries in the writing transaction (hub.store.counters). SQLite adds to `counters`
# directly (one writer); PostgreSQL appends to `counter_deltas` (insert-only: nodes never wait on a counter row's
# lock) and a reader folds the deltas into `counters` now and then. A count is the sum of both.
counters = Table(
    "counters",
    metadata,
    Column("channel", String(100), primary_key=True),
    Column("destination", String(100), primary_key=True),
    Column("status", String(16), primary_key=True),
    Column("n", BigInteger, nullable=False),
)

counter_deltas = Table(
    "counter_deltas",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("channel", String(100), nullable=False),
    Column("destination", String(100), nullable=False),
    Column("status", String(16), nullable=False),
    Column("n", BigInteger, nullable=False),
)

# The oldest waiting (or dead) delivery of a queue: MIN(created_at) read from this small partial index.
Index(
    "ix_deliveries_waiting_age",
    deliveries.c.channel,
    deliveries.c.destination,
    deliveries.c.status,
    deliveries.c.created_at,
    sqlite_where=text("status IN ('queued', 'retry', 'sending', 'dead')"),
    postgresql_where=text("status IN ('queued', 'retry', 'sending', 'dead')"),
)

__all__ += ["counters", "counter_deltas"]

# --------------------------------------------------------------------- nodes and shared channel state (0006)
# One row per running hub process sharing the store: its heartbeat tells the others it is alive; a node whose
# heartbeat is older than `cluster.dead_after` is dead and its leases are taken over (hub.store.nodes).
nodes = Table(
    "nodes",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("pid", Integer),
    Column("host", String(200)),
    Column("version", String(40)),
)

# Pause and enable/disable of a channel, written by any node (web, CLI) and applied by every node.
channel_state = Table(
    "channel_state",
    metadata,
    Column("channel", String(100), primary_key=True),
    Column("paused", Integer, nullable=False, default=0),
    Column("enabled", Integer, nullable=False, default=1),
    Column("changed_by", String(100)),
    Column("changed_at", Float, nullable=False),
)

Index(
    "ix_deliveries_sending",
    deliveries.c.lease_owner,
    deliveries.c.lease_until,
    sqlite_where=text("status = 'sending'"),
    postgresql_where=text("status = 'sending'"),
)

__all__ += ["nodes", "channel_state"]
