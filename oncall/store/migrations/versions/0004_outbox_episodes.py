"""Episodes (one investigation per episode, claimed with a lease) and the transactional outbox.

- ``incidents``: ``episode`` (current episode number, 1 first), ``episode_after`` (end of the previous
  episode, epoch s: older alert activity belongs to it) and ``episode_ends_at`` (end of the current one
  from the alerts' own ``endsAt``, once resolved).
- ``investigations`` (engine runs): the ``episode`` they investigate and the ``replica_id`` that ran them.
- ``episodes``: one row per incident episode; its investigation is a work claim.
- ``outbox``: outgoing WhatsApp messages and Jira calls, unique ``event_key``.

Existing incidents become episode 1 with an ``episodes`` row whose investigation state follows the
incident's ``investigation_status`` (a firing incident's cut-off investigation is queued again).

Revision ID: 0004_outbox_episodes
Revises: 0003_security
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004_outbox_episodes"
down_revision = "0003_security"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    """Add the episode columns, the episodes and outbox tables, and episode rows for existing incidents."""
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("episode", sa.Integer, nullable=False, server_default="1"))
        batch.add_column(sa.Column("episode_after", sa.Float))
        batch.add_column(sa.Column("episode_ends_at", sa.Float))
    with op.batch_alter_table("investigations") as batch:
        batch.add_column(sa.Column("episode", sa.Integer))
        batch.add_column(sa.Column("replica_id", sa.Text))
    op.create_table(
        "episodes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("resolved_at", sa.Float),
        sa.Column("resolution", sa.Text),
        sa.Column("investigation", sa.Text, nullable=False, server_default="none"),
        sa.Column("queued_at", sa.Float),
        sa.Column("claimed_by", sa.Text),
        sa.Column("lease_until", sa.Float),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("finished_at", sa.Float),
        sa.UniqueConstraint("incident_id", "number", name="episodes_incident_number"),
    )
    op.create_index("episodes_investigation", "episodes", ["investigation", "queued_at"])
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("event_key", sa.Text, nullable=False, unique=True),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("operation", sa.Text, nullable=False),
        sa.Column("incident_id", sa.Integer),
        sa.Column("payload", Json, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("claimed_by", sa.Text),
        sa.Column("lease_until", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("delivered_at", sa.Float),
        sa.Column("delivered_by", sa.Text),
        sa.Column("warned", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("outbox_due", "outbox", ["status", "next_attempt_at"])
    op.create_index("outbox_incident", "outbox", ["incident_id", "channel", "id"])
    op.execute(
        "INSERT INTO episodes (incident_id, number, opened_at, resolved_at, resolution, investigation, queued_at)"
        " SELECT id, 1, created_at, resolved_at,"
        " CASE WHEN status = 'resolved' THEN 'alerts' END,"
        " CASE WHEN investigation_status IN ('pending', 'running') AND status = 'firing' THEN 'queued'"
        " WHEN investigation_status IN ('failed', 'interrupted') THEN 'failed'"
        " WHEN investigation_status = 'done' THEN 'done' ELSE 'none' END,"
        " created_at FROM incidents"
    )


def downgrade() -> None:
    """Drop the outbox and episodes tables and the episode columns."""
    op.drop_table("outbox")
    op.drop_table("episodes")
    with op.batch_alter_table("investigations") as batch:
        batch.drop_column("replica_id")
        batch.drop_column("episode")
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("episode_ends_at")
        batch.drop_column("episode_after")
        batch.drop_column("episode")
