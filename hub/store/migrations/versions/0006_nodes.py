"""Nodes heartbeat in the store; channel state (paused, enabled) shared by every node (issue 15)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
        sa.Column("pid", sa.Integer),
        sa.Column("host", sa.String(200)),
        sa.Column("version", sa.String(40)),
    )
    op.create_table(
        "channel_state",
        sa.Column("channel", sa.String(100), primary_key=True),
        sa.Column("paused", sa.Integer, nullable=False, server_default="0"),
        sa.Column("enabled", sa.Integer, nullable=False, server_default="1"),
        sa.Column("changed_by", sa.String(100)),
        sa.Column("changed_at", sa.Float, nullable=False),
    )
    # The deliveries being sent, by the node holding them: small (only rows in flight), read by each heartbeat's
    # takeover of a dead node's rows and by the recovery of expired leases without scanning the whole table.
    op.create_index(
        "ix_deliveries_sending",
        "deliveries",
        ["lease_owner", "lease_until"],
        sqlite_where=sa.text("status = 'sending'"),
        postgresql_where=sa.text("status = 'sending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_sending", table_name="deliveries")
    op.drop_table("channel_state")
    op.drop_table("nodes")
