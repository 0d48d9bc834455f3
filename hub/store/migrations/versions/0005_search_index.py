"""Indexed text search and status-only search (issue 15)

SQLite: ``messages_fts``, a contentless FTS5 table with the ``trigram`` tokenizer (case-sensitive, ``detail=none``)
over a text form of ``messages.raw``: the raw bytes read as UTF-8 text. FTS5 stops reading a value at a NUL byte,
so a message holding one is indexed with the marker ``\\x01\\x02\\x03`` in front, which every text search also asks
for. Triggers on ``messages`` (insert, delete, update of ``raw``) keep it in step; this revision back-fills it.
PostgreSQL: a ``pg_trgm`` GIN index on ``encode(raw, 'escape')`` (plain ASCII, every byte of the raw content kept,
so it needs no trigger). Without FTS5's trigram tokenizer (SQLite before 3.34) or the pg_trgm extension the text
index is left out, with a warning, and text search scans as before. Both: ``(status, id)`` on messages and
``(status, message_id)`` on deliveries, for a search by status alone. How search uses them:
``hub/store/search_index.py``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

log = logging.getLogger("hub.store")

# The text form FTS5 indexes (hub/store/search_index.py asks for NUL_MARKER with every needle).
_TEXT = "CASE WHEN instr({raw}, x'00') > 0 THEN char(1, 2, 3) || CAST({raw} AS TEXT) ELSE CAST({raw} AS TEXT) END"

SQLITE_UP = [
    "CREATE VIRTUAL TABLE messages_fts USING fts5(body, content='', detail=none, tokenize='trigram case_sensitive 1')",
    "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN "
    f"INSERT INTO messages_fts(rowid, body) VALUES (new.id, {_TEXT.format(raw='new.raw')}); END",
    "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, body) "
    f"VALUES ('delete', old.id, {_TEXT.format(raw='old.raw')}); END",
    "CREATE TRIGGER messages_fts_update AFTER UPDATE OF raw ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, body) "
    f"VALUES ('delete', old.id, {_TEXT.format(raw='old.raw')}); "
    f"INSERT INTO messages_fts(rowid, body) VALUES (new.id, {_TEXT.format(raw='new.raw')}); END",
    f"INSERT INTO messages_fts(rowid, body) SELECT id, {_TEXT.format(raw='raw')} FROM messages",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS messages_fts_update",
    "DROP TRIGGER IF EXISTS messages_fts_delete",
    "DROP TRIGGER IF EXISTS messages_fts_insert",
    "DROP TABLE IF EXISTS messages_fts",
]
PG_INDEX = "ix_messages_raw_trgm"


def upgrade() -> None:
    op.create_index("ix_messages_status_id", "messages", ["status", "id"])
    op.create_index("ix_deliveries_status", "deliveries", ["status", "message_id"])
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        try:
            with bind.begin_nested():
                bind.exec_driver_sql(SQLITE_UP[0])
        except sa.exc.OperationalError as exc:  # an SQLite without FTS5 or its trigram tokenizer (before 3.34)
            log.warning("SQLite has no FTS5 trigram tokenizer (%s): text search will scan the messages", exc)
            return
        for sql in SQLITE_UP[1:]:
            bind.exec_driver_sql(sql)
    elif bind.dialect.name == "postgresql":
        try:
            with bind.begin_nested():
                bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except sa.exc.DBAPIError as exc:
            log.warning("pg_trgm is not available (%s): text search will scan the messages", type(exc).__name__)
            return
        bind.exec_driver_sql(
            f"CREATE INDEX {PG_INDEX} ON messages USING gin (encode(raw, 'escape'::text) gin_trgm_ops)"
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for sql in SQLITE_DOWN:
            bind.exec_driver_sql(sql)
    elif bind.dialect.name == "postgresql":
        # The pg_trgm extension stays: it belongs to the database, and other objects may use it.
        bind.exec_driver_sql(f"DROP INDEX IF EXISTS {PG_INDEX}")
    # IF EXISTS: a store made while this revision was still empty (during development) lacks them.
    bind.exec_driver_sql("DROP INDEX IF EXISTS ix_deliveries_status")
    bind.exec_driver_sql("DROP INDEX IF EXISTS ix_messages_status_id")
