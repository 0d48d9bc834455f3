"""initial tables: messages, deliveries, attempts, leases, sequences, cursors

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("content_type", sa.String(16), nullable=False),
        sa.Column("control_id", sa.String(200)),
        sa.Column("message_type", sa.String(60)),
        sa.Column("sending_app", sa.String(200)),
        sa.Column("sending_facility", sa.String(200)),
        sa.Column("patient_id", sa.String(200)),
        sa.Column("source_ref", sa.String(500)),
        sa.Column("dedup_key", sa.String(500)),
        sa.Column("error", sa.Text),
        sa.Column("error_code", sa.String(20)),
        sa.Column("meta", sa.Text),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("channel", "dedup_key", name="uq_messages_dedup"),
    )
    op.create_index("ix_messages_channel_received", "messages", ["channel", "received_at"])
    op.create_index("ix_messages_received", "messages", ["received_at"])
    op.create_index("ix_messages_control_id", "messages", ["control_id"])
    op.create_index("ix_messages_patient_id", "messages", ["patient_id"])
    op.create_index("ix_messages_type", "messages", ["message_type"])
    op.create_index("ix_messages_status", "messages", ["channel", "status"])

    op.create_table(
        "deliveries",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("message_id", Id, sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("destination", sa.String(100), nullable=False),
        sa.Column("route", sa.String(100)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("order_key", sa.String(200)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_at", sa.Float, nullable=False),
        sa.Column("lease_owner", sa.String(100)),
        sa.Column("lease_until", sa.Float),
        sa.Column("content_type", sa.String(16)),
        sa.Column("content", sa.LargeBinary),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("sent_at", sa.Float),
        sa.Column("last_error", sa.Text),
        sa.Column("response", sa.Text),
    )
    op.create_index("ix_deliveries_queue", "deliveries", ["channel", "destination", "status", "id"])
    op.create_index("ix_deliveries_key", "deliveries", ["channel", "destination", "order_key", "id"])
    op.create_index("ix_deliveries_message", "deliveries", ["message_id"])

    op.create_table(
        "attempts",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", Id, sa.ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("response", sa.Text),
        sa.Column("node", sa.String(100)),
    )
    op.create_index("ix_attempts_delivery", "attempts", ["delivery_id"])

    op.create_table(
        "leases",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("until", sa.Float, nullable=False),
    )
    op.create_table(
        "sequences",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "cursors",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("cursors", "sequences", "leases", "attempts", "deliveries", "messages"):
        op.drop_table(table)
