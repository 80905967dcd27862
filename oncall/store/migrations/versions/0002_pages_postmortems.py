"""Escalation pages (one row per incident episode and level: its timer and who was paged) and
post-mortem drafts (one per incident episode).

Revision ID: 0002_pages_postmortems
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002_pages_postmortems"
down_revision = "0001"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    """Create ``pages`` and ``postmortems``."""
    op.create_table(
        "pages",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("episode", sa.Integer, nullable=False, server_default="1"),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("due_at", sa.Float, nullable=False),
        sa.Column("episode_started_at", sa.Float, nullable=False),
        sa.Column("service", sa.Text),
        sa.Column("team", sa.Text),
        sa.Column("policy", sa.Text),
        sa.Column("paged_at", sa.Float),
        sa.Column("recipients", Json, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("stopped_at", sa.Float),
        sa.Column("stop_reason", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("incident_id", "episode", "level", name="pages_level_once"),
    )
    op.create_index("pages_due", "pages", ["status", "due_at"])
    op.create_table(
        "postmortems",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("episode", sa.Integer, nullable=False, server_default="1"),
        sa.Column("markdown", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.UniqueConstraint("incident_id", "episode", name="postmortems_episode_once"),
    )


def downgrade() -> None:
    """Drop ``postmortems`` and ``pages``."""
    op.drop_table("postmortems")
    op.drop_index("pages_due", table_name="pages")
    op.drop_table("pages")
