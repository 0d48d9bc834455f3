"""Text search index built beside the writes, in segments (issue 15)

SQLite: migration 0005's single ``messages_fts`` table, kept in step by triggers on ``messages``, cost every commit
its FTS5 insert (single producer 718 → 570 messages/s) and kept the entries of pruned messages until a merge that
stalled an accept for seconds (FTS5 records a delete in a contentless table as a new entry; SQLite 3.40 has no
``contentless_delete``). This revision drops the triggers and that table, and keeps the index in **segments**: one
contentless FTS5 table ``search_fts_<n>`` per :data:`SEGMENT` message ids, listed in ``search_segments`` with how far
each is indexed. The hub's indexer fills them in batches through the writer (:mod:`hub.store.search_index`); a
search reads the index where it is built and scans what it does not cover yet (the newest messages); retention drops
a segment whose messages are gone and rebuilds one that is mostly stale. The index is built after the upgrade by
the running hub (newest messages first), not in the migration. PostgreSQL: nothing (its GIN index stays).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Migration 0005's SQLite objects (recreated, and back-filled, by the downgrade).
_TEXT = "CASE WHEN instr({raw}, x'00') > 0 THEN char(1, 2, 3) || CAST({raw} AS TEXT) ELSE CAST({raw} AS TEXT) END"
V5_UP = [
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


def _fts5_trigram(bind) -> bool:  # type: ignore[no-untyped-def]
    try:
        with bind.begin_nested():
            bind.exec_driver_sql("CREATE VIRTUAL TABLE temp.probe_trigram USING fts5(x, tokenize='trigram')")
            bind.exec_driver_sql("DROP TABLE temp.probe_trigram")
        return True
    except Exception:
        return False


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    for name in ("messages_fts_update", "messages_fts_delete", "messages_fts_insert"):
        bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
    bind.exec_driver_sql("DROP TABLE IF EXISTS messages_fts")
    if not _fts5_trigram(bind):
        return  # an SQLite without FTS5's trigram tokenizer: text search scans (hub/store/search_index.py)
    bind.exec_driver_sql(
        "CREATE TABLE search_segments (seg INTEGER PRIMARY KEY, indexed_to INTEGER NOT NULL, "
        "entries INTEGER NOT NULL DEFAULT 0)"
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    found = bind.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'search_segments'"
    ).scalar()
    if found:
        names = bind.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'search_fts_%' "
            "AND sql LIKE 'CREATE VIRTUAL TABLE%'"
        ).scalars()
        for name in list(names):
            bind.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        bind.exec_driver_sql("DROP TABLE search_segments")
    if _fts5_trigram(bind):
        for sql in V5_UP:
            bind.exec_driver_sql(sql)
