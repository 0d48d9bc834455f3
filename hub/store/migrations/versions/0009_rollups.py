"""Per-minute rollups for the dashboard's charts, queue depth samples and the hub's own alert history (issue 17)

``rollups`` holds one row per (channel, destination — '' for the channel's messages —, minute, metric) with a count:

* ``accepted``, ``rejected``, ``error``, ``filtered`` (destination ''): messages stored, by the status they were
  stored with (their sum is what a channel received);
* ``queued`` (per destination): deliveries created; ``sent``, ``dead``, ``retry``: deliveries reaching that state;
* ``lat:<ms>`` (per destination): a delivery reaching ``sent``, in the latency bucket (``sent_at − created_at``, the
  time from its message's accept to its send) whose upper bound is <ms> (``lat:inf`` above the last bound).

Written by triggers in the transaction of every write, as the counters of 0004 are. SQLite: row triggers upsert the
minute's row (one writer: no contention). PostgreSQL: statement triggers append the statement's net counts to
``rollup_deltas`` (insert-only: writers on several nodes never wait on a minute's row, which every writer of a busy
channel would otherwise update), folded into ``rollups`` together with the counters' deltas; a read sums both.

``queue_samples``: the queue depth (queued + retry + sending) of every destination, sampled once a minute from the
counters by one running node (the store's lease ``rollups``). ``alert_events``: the alerts the hub evaluates itself
(firing while ``resolved_at`` is NULL), kept 7 days. Rollups and samples are kept 8 days (pruned by retention).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

#: Upper bounds (ms) of the latency histogram's buckets; above the last: ``lat:inf``. (hub.store.rollups.BOUNDS)
BOUNDS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000)


def _bucket(ms: str) -> str:
    """SQL: the latency metric name of a duration of ``ms`` milliseconds."""
    whens = " ".join(f"WHEN {ms} <= {b} THEN 'lat:{b}'" for b in BOUNDS)
    return f"CASE {whens} ELSE 'lat:inf' END"


# ------------------------------------------------------------------------------------------------ SQLite
_SQLITE_ADD = (
    "INSERT INTO rollups (channel, destination, minute, metric, n) VALUES ({ch}, {dest}, "
    "CAST({at} / 60 AS INTEGER) * 60, {metric}, 1) "
    "ON CONFLICT (channel, destination, minute, metric) DO UPDATE SET n = n + 1;"
)

SQLITE_TRIGGERS = [
    "CREATE TRIGGER rollups_messages_ins AFTER INSERT ON messages BEGIN "
    + _SQLITE_ADD.format(ch="NEW.channel", dest="''", at="NEW.received_at", metric="NEW.status")
    + " END",
    "CREATE TRIGGER rollups_deliveries_ins AFTER INSERT ON deliveries BEGIN "
    + _SQLITE_ADD.format(ch="NEW.channel", dest="NEW.destination", at="NEW.created_at", metric="'queued'")
    + " END",
    "CREATE TRIGGER rollups_deliveries_upd AFTER UPDATE OF status ON deliveries "
    "WHEN NEW.status IS NOT OLD.status AND NEW.status IN ('sent', 'dead', 'retry') BEGIN "
    + _SQLITE_ADD.format(ch="NEW.channel", dest="NEW.destination", at="NEW.updated_at", metric="NEW.status")
    + " END",
    "CREATE TRIGGER rollups_deliveries_lat AFTER UPDATE OF status ON deliveries "
    "WHEN NEW.status = 'sent' AND OLD.status IS NOT 'sent' BEGIN "
    + _SQLITE_ADD.format(
        ch="NEW.channel",
        dest="NEW.destination",
        at="NEW.updated_at",
        metric=_bucket("(COALESCE(NEW.sent_at, NEW.updated_at) - NEW.created_at) * 1000"),
    )
    + " END",
]
SQLITE_NAMES = ["rollups_messages_ins", "rollups_deliveries_ins", "rollups_deliveries_upd", "rollups_deliveries_lat"]

# ------------------------------------------------------------------------------------------------ PostgreSQL
_PG_INSERT = (
    "INSERT INTO rollup_deltas (channel, destination, minute, metric, n) "
    "SELECT channel, destination, minute, metric, COUNT(*) FROM ({rows}) AS r "
    "GROUP BY channel, destination, minute, metric; "
)
_MINUTE = "(floor({at} / 60) * 60)::bigint"
PG_FUNCTIONS = {
    "rollups_messages_ins": _PG_INSERT.format(
        rows=f"SELECT channel, '' AS destination, {_MINUTE.format(at='received_at')} AS minute, status AS metric "
        "FROM new_rows"
    ),
    "rollups_deliveries_ins": _PG_INSERT.format(
        rows=f"SELECT channel, destination, {_MINUTE.format(at='created_at')} AS minute, 'queued' AS metric "
        "FROM new_rows"
    ),
    "rollups_deliveries_upd": _PG_INSERT.format(
        rows=f"SELECT n.channel, n.destination, {_MINUTE.format(at='n.updated_at')} AS minute, n.status AS metric "
        "FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id "
        "WHERE n.status IS DISTINCT FROM o.status AND n.status IN ('sent', 'dead', 'retry') "
        f"UNION ALL SELECT n.channel, n.destination, {_MINUTE.format(at='n.updated_at')}, "
        f"{_bucket('(COALESCE(n.sent_at, n.updated_at) - n.created_at) * 1000')} "
        "FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id "
        "WHERE n.status = 'sent' AND o.status IS DISTINCT FROM 'sent'"
    ),
}
PG_TRIGGERS = {
    "rollups_messages_ins": "AFTER INSERT ON messages REFERENCING NEW TABLE AS new_rows",
    "rollups_deliveries_ins": "AFTER INSERT ON deliveries REFERENCING NEW TABLE AS new_rows",
    "rollups_deliveries_upd": "AFTER UPDATE ON deliveries REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
}
PG_TABLES = {"rollups_messages_ins": "messages", "rollups_deliveries_ins": "deliveries",
             "rollups_deliveries_upd": "deliveries"}  # fmt: skip


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "rollups",
        sa.Column("channel", sa.String(100), primary_key=True),
        sa.Column("destination", sa.String(100), primary_key=True),
        sa.Column("minute", sa.BigInteger, primary_key=True),
        sa.Column("metric", sa.String(16), primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_rollups_minute", "rollups", ["minute"])
    op.create_table(
        "rollup_deltas",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("destination", sa.String(100), nullable=False),
        sa.Column("minute", sa.BigInteger, nullable=False),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "queue_samples",
        sa.Column("channel", sa.String(100), primary_key=True),
        sa.Column("destination", sa.String(100), primary_key=True),
        sa.Column("minute", sa.BigInteger, primary_key=True),
        sa.Column("depth", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_queue_samples_minute", "queue_samples", ["minute"])
    op.create_table(
        "alert_events",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("rule", sa.String(60), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("destination", sa.String(100), nullable=False),  # '' for a channel's alert
        sa.Column("since", sa.Float, nullable=False),
        sa.Column("resolved_at", sa.Float),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("status", sa.String(16)),  # the message search the dashboard opens (dead …)
    )
    op.create_index("ix_alert_events_open", "alert_events", ["resolved_at", "rule", "channel", "destination"])
    op.create_index("ix_alert_events_since", "alert_events", ["since"])
    if dialect == "postgresql":
        for name, body in PG_FUNCTIONS.items():
            op.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body} RETURN NULL; END $$"
            )
            op.execute(f"CREATE TRIGGER {name} {PG_TRIGGERS[name]} FOR EACH STATEMENT EXECUTE FUNCTION {name}()")
    else:
        for ddl in SQLITE_TRIGGERS:
            op.execute(ddl)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for name, table in PG_TABLES.items():
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    else:
        for name in SQLITE_NAMES:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("alert_events")
    op.drop_table("queue_samples")
    op.drop_table("rollup_deltas")
    op.drop_index("ix_rollups_minute", table_name="rollups")
    op.drop_table("rollups")
