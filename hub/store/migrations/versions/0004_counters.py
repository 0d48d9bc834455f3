"""Counts per channel and destination kept with the writes, so the operations screens answer in constant time (issue 15)

Tables ``counters`` (channel, destination — '' for the channel's messages — status → n) and ``counter_deltas``;
triggers on ``messages`` and ``deliveries`` that keep them in the writing transaction, so every write path (accept,
claim, mark, recover, replay, reprocess, prune, any later one) is counted at once; the counts of the rows already
stored are back-filled here. SQLite: row triggers add to ``counters`` (one writer, no contention). PostgreSQL:
statement triggers append one delta row per (channel, destination, status) changed by the statement to
``counter_deltas`` (insert-only: two nodes never wait on, or deadlock over, a counter row), folded into
``counters`` by readers (:func:`hub.store.counters.fold`).

Also a partial index on the deliveries still waiting (or dead), from which the oldest of a queue is read.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
WAITING = "status IN ('queued', 'retry', 'sending', 'dead')"

# ------------------------------------------------------------------------------------------------ SQLite
_SQLITE_ADD = (
    "INSERT INTO counters (channel, destination, status, n) VALUES ({ch}, {dest}, {st}, {n}) "
    "ON CONFLICT (channel, destination, status) DO UPDATE SET n = n + excluded.n;"
)


def _sqlite_triggers(table: str, dest: str) -> list[str]:
    """Row triggers of ``table``; ``dest`` is the destination column ('' for messages)."""
    new_dest = f"NEW.{dest}" if dest else "''"
    old_dest = f"OLD.{dest}" if dest else "''"
    add_new = _SQLITE_ADD.format(ch="NEW.channel", dest=new_dest, st="NEW.status", n=1)
    sub_old = _SQLITE_ADD.format(ch="OLD.channel", dest=old_dest, st="OLD.status", n=-1)
    cols = "channel, status" + (f", {dest}" if dest else "")
    changed = "OLD.status IS NOT NEW.status OR OLD.channel IS NOT NEW.channel" + (
        f" OR OLD.{dest} IS NOT NEW.{dest}" if dest else ""
    )
    return [
        f"CREATE TRIGGER counters_{table}_ins AFTER INSERT ON {table} BEGIN {add_new} END",
        f"CREATE TRIGGER counters_{table}_upd AFTER UPDATE OF {cols} ON {table} WHEN {changed} "
        f"BEGIN {sub_old} {add_new} END",
        f"CREATE TRIGGER counters_{table}_del AFTER DELETE ON {table} BEGIN {sub_old} END",
    ]


# ------------------------------------------------------------------------------------------------ PostgreSQL
def _pg_functions(table: str, dest: str) -> list[str]:
    d = dest or "''"
    plus = f"SELECT channel, {d} AS destination, status, 1 AS n FROM new_rows"
    minus = f"SELECT channel, {d} AS destination, status, -1 AS n FROM old_rows"
    body = {
        "ins": plus,
        "upd": f"{plus} UNION ALL {minus}",
        "del": minus,
    }
    out = []
    for ev, rows in body.items():
        out.append(
            f"CREATE FUNCTION counters_{table}_{ev}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO counter_deltas (channel, destination, status, n) "
            f"SELECT channel, destination, status, SUM(n) FROM ({rows}) AS c "
            "GROUP BY channel, destination, status HAVING SUM(n) <> 0; "
            "RETURN NULL; END $$"
        )
    return out


def _pg_triggers(table: str) -> list[str]:
    return [
        f"CREATE TRIGGER counters_{table}_ins AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows "
        f"FOR EACH STATEMENT EXECUTE FUNCTION counters_{table}_ins()",
        f"CREATE TRIGGER counters_{table}_upd AFTER UPDATE ON {table} REFERENCING OLD TABLE AS old_rows "
        f"NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION counters_{table}_upd()",
        f"CREATE TRIGGER counters_{table}_del AFTER DELETE ON {table} REFERENCING OLD TABLE AS old_rows "
        f"FOR EACH STATEMENT EXECUTE FUNCTION counters_{table}_del()",
    ]


TABLES = (("messages", ""), ("deliveries", "destination"))


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "counters",
        sa.Column("channel", sa.String(100), primary_key=True),
        sa.Column("destination", sa.String(100), primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "counter_deltas",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("destination", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "ix_deliveries_waiting_age",
        "deliveries",
        ["channel", "destination", "status", "created_at"],
        sqlite_where=sa.text(WAITING),
        postgresql_where=sa.text(WAITING),
    )
    if dialect == "postgresql":
        # No row is written while the counts are taken and the triggers made (they must agree).
        op.execute("LOCK TABLE messages, deliveries IN SHARE ROW EXCLUSIVE MODE")
    op.execute(
        "INSERT INTO counters (channel, destination, status, n) "
        "SELECT channel, '', status, COUNT(*) FROM messages GROUP BY channel, status"
    )
    op.execute(
        "INSERT INTO counters (channel, destination, status, n) "
        "SELECT channel, destination, status, COUNT(*) FROM deliveries GROUP BY channel, destination, status"
    )
    for table, dest in TABLES:
        if dialect == "postgresql":
            for ddl in [*_pg_functions(table, dest), *_pg_triggers(table)]:
                op.execute(ddl)
        else:
            for ddl in _sqlite_triggers(table, dest):
                op.execute(ddl)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table, _ in TABLES:
        for ev in ("ins", "upd", "del"):
            if dialect == "postgresql":
                op.execute(f"DROP TRIGGER IF EXISTS counters_{table}_{ev} ON {table}")
                op.execute(f"DROP FUNCTION IF EXISTS counters_{table}_{ev}()")
            else:
                op.execute(f"DROP TRIGGER IF EXISTS counters_{table}_{ev}")
    op.drop_index("ix_deliveries_waiting_age", table_name="deliveries")
    op.drop_table("counter_deltas")
    op.drop_table("counters")
