"""Remediation: decisions on proposed actions and their executions (lease, request, result, verification).

Revision ID: 0005_remediations
Revises: 0004_outbox_episodes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005_remediations"
down_revision = "0004_outbox_episodes"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    """Add the ``remediations`` table."""
    op.create_table(
        "remediations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("proposal_key", sa.Text, nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("service", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("target", sa.Text),
        sa.Column("params", Json, nullable=False),
        sa.Column("risk", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("decided_by", sa.Text, nullable=False),
        sa.Column("decided_at", sa.Float, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("claimed_by", sa.Text),
        sa.Column("lease_until", sa.Float),
        sa.Column("request", Json),
        sa.Column("sent_at", sa.Float),
        sa.Column("result", Json),
        sa.Column("verification", Json),
        sa.Column("finished_at", sa.Float),
        sa.UniqueConstraint("incident_id", "proposal_key", "number", name="remediations_proposal"),
    )
    op.create_index("remediations_service", "remediations", ["service", "decided_at"])
    op.create_index("remediations_status", "remediations", ["status", "lease_until"])


def downgrade() -> None:
    """Drop what ``upgrade`` added."""
    op.drop_index("remediations_status", table_name="remediations")
    op.drop_index("remediations_service", table_name="remediations")
    op.drop_table("remediations")
