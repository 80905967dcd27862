"""Security: pending confirmations of proposed actions; raw alert sizes and a received-at index for retention.

Revision ID: 0003_security
Revises: 0002_pages_postmortems
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003_security"
down_revision = "0002_pages_postmortems"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    """Add ``raw_alerts.body_bytes``, the ``raw_alerts_received`` index and the ``confirmations`` table."""
    with op.batch_alter_table("raw_alerts") as batch:
        batch.add_column(sa.Column("body_bytes", sa.Integer))
    op.create_index("raw_alerts_received", "raw_alerts", ["received_at"])
    op.create_table(
        "confirmations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sender", sa.Text, nullable=False),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("arguments", Json, nullable=False),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("proposed_by", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("decided_at", sa.Float),
    )
    op.create_index("confirmations_sender", "confirmations", ["sender", "status", "id"])


def downgrade() -> None:
    """Drop what ``upgrade`` added."""
    op.drop_index("confirmations_sender", table_name="confirmations")
    op.drop_table("confirmations")
    op.drop_index("raw_alerts_received", table_name="raw_alerts")
    with op.batch_alter_table("raw_alerts") as batch:
        batch.drop_column("body_bytes")
