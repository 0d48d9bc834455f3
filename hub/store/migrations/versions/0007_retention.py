"""Retention that gives the space back (issue 15)

SQLite: a file made before this revision has ``auto_vacuum = NONE`` and keeps the pages of pruned messages (for new
rows) instead of giving them back; only a full ``VACUUM`` can switch it to ``INCREMENTAL``. This revision does that
VACUUM at once when the file is at most 256 MB (seconds); a bigger file is left as it is, with a warning, until
``hub prune --vacuum`` is run once (it rewrites the whole file while holding the write lock). New files are
incremental from their start (hub.store.connect). PostgreSQL: nothing to do (autovacuum reuses the space).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import logging
from typing import Any

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

VACUUM_AT_ONCE = 256 * 1024 * 1024  # bytes: a bigger file is switched by `hub prune --vacuum`, not at start-up

log = logging.getLogger("hub.store")


def _sqlite() -> Any | None:
    """The migration's SQLite driver connection, or None on another database."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return None
    return bind.connection.driver_connection


def _pragma(dbapi: Any, name: str) -> int:
    cur = dbapi.execute(f"PRAGMA {name}")
    try:
        return int(cur.fetchone()[0])
    finally:
        cur.close()


def _vacuum(mode: str) -> None:
    dbapi = _sqlite()
    if dbapi is None:
        return
    want = {"INCREMENTAL": 2, "NONE": 0}[mode]
    if _pragma(dbapi, "auto_vacuum") == want:
        return  # a new file (incremental from its first table), or done before
    size = _pragma(dbapi, "page_count") * _pragma(dbapi, "page_size")
    if size > VACUUM_AT_ONCE:
        log.warning(
            "store: the SQLite file (%d MB) does not give the space of pruned messages back; run "
            "`hub prune --vacuum` once, in a quiet hour (it rewrites the file and holds writes meanwhile)",
            size >> 20,
        )
        return
    # VACUUM cannot run inside a transaction: executescript commits what the earlier revisions did first (their
    # alembic_version row with it, so a failure here leaves the store at 0006); the rest continues in a new one.
    dbapi.executescript(f"PRAGMA auto_vacuum = {mode}; VACUUM;")


def upgrade() -> None:
    _vacuum("INCREMENTAL")


def downgrade() -> None:
    _vacuum("NONE")
