"""X12 claim submissions and their status from 999/277CA acknowledgements (issue 5)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "claims",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.BigInteger, nullable=False),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("destination", sa.String(100)),
        sa.Column("partner", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(1), nullable=False),
        sa.Column("patient_control_number", sa.String(40), nullable=False),
        sa.Column("charge", sa.String(20)),
        sa.Column("isa13", sa.String(20), nullable=False),
        sa.Column("gs06", sa.String(20), nullable=False),
        sa.Column("st02", sa.String(20), nullable=False),
        sa.Column("batch_reference", sa.String(60)),
        sa.Column("submitted_at", sa.Float, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("status_at", sa.Float, nullable=False),
        sa.Column("status_detail", sa.Text),
        sa.Column("payer_claim_number", sa.String(60)),
    )
    op.create_index("ix_claims_message", "claims", ["message_id"])
    op.create_index("ix_claims_transaction", "claims", ["partner", "st02"])
    op.create_index("ix_claims_pcn", "claims", ["patient_control_number"])
    op.create_index("ix_claims_status", "claims", ["status", "message_id"])
    op.create_table(
        "claim_events",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("claim_id", Id, sa.ForeignKey("claims.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("code", sa.String(20)),
        sa.Column("detail", sa.Text),
        sa.Column("message_id", sa.BigInteger),
    )
    op.create_index("ix_claim_events_claim", "claim_events", ["claim_id"])


def downgrade() -> None:
    op.drop_table("claim_events")
    op.drop_table("claims")
