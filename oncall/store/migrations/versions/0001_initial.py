"""The first schema: raw alerts, incidents and their alerts, timeline, investigations, tool calls,
messages and tickets (the tables of the agent's first, SQLite-only version).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    """Create the tables and indexes."""
    op.create_table(
        "raw_alerts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("body_sha256", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("valid", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("group_key", sa.Text),
        sa.Column("incident_id", sa.Integer),
    )
    op.create_index("raw_alerts_sha", "raw_alerts", ["body_sha256"])
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("group_key", sa.Text, nullable=False, unique=True),
        sa.Column("status", sa.Text, nullable=False, server_default="firing"),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("service", sa.Text),
        sa.Column("severity", sa.Text),
        sa.Column("group_labels", Json, nullable=False),
        sa.Column("common_labels", Json, nullable=False),
        sa.Column("common_annotations", Json, nullable=False),
        sa.Column("external_url", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("resolved_at", sa.Float),
        sa.Column("acknowledged_at", sa.Float),
        sa.Column("acknowledged_by", sa.Text),
        sa.Column("investigation_status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("diagnosis", Json),
        sa.Column("diagnosed_at", sa.Float),
    )
    op.create_table(
        "incident_alerts",
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id"), primary_key=True),
        sa.Column("fingerprint", sa.Text, primary_key=True),
        sa.Column("alertname", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("labels", Json, nullable=False),
        sa.Column("annotations", Json, nullable=False),
        sa.Column("starts_at", sa.Text),
        sa.Column("ends_at", sa.Text),
        sa.Column("generator_url", sa.Text),
        sa.Column("first_seen_at", sa.Float, nullable=False),
        sa.Column("last_seen_at", sa.Float, nullable=False),
        sa.Column("resolved_at", sa.Float),
    )
    op.create_table(
        "timeline",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("detail", Json, nullable=False),
    )
    op.create_index("timeline_incident", "timeline", ["incident_id", "id"])
    op.create_table(
        "investigations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.Column("status", sa.Text, nullable=False, server_default="running"),
        sa.Column("engine", sa.Text),
        sa.Column("rounds", sa.Integer, nullable=False, server_default="0"),
        sa.Column("prompt_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("completion_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error", sa.Text),
    )
    op.create_index("investigations_incident", "investigations", ["incident_id"])
    op.create_table(
        "tool_calls",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("incident_id", sa.Integer, nullable=False),
        sa.Column("investigation_id", sa.Integer),
        sa.Column("round", sa.Integer, nullable=False, server_default="0"),
        sa.Column("call_id", sa.Text),
        sa.Column("tool", sa.Text, nullable=False),
        sa.Column("arguments", sa.Text, nullable=False),
        sa.Column("ok", sa.Integer, nullable=False),
        sa.Column("result", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("duration_s", sa.Float, nullable=False),
    )
    op.create_index("tool_calls_incident", "tool_calls", ["incident_id", "id"])
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("incident_id", sa.Integer),
        sa.Column("direction", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("to_number", sa.Text),
        sa.Column("from_number", sa.Text),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("message_sid", sa.Text, unique=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("messages_incident", "messages", ["incident_id", "id"])
    op.create_table(
        "tickets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("jira_key", sa.Text),
        sa.Column("url", sa.Text),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("assignee_query", sa.Text),
        sa.Column("assignee_account_id", sa.Text),
        sa.Column("payload", Json, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("tickets_incident", "tickets", ["incident_id"])


def downgrade() -> None:
    """Drop every table."""
    for table in ("tickets", "messages", "tool_calls", "investigations", "timeline", "incident_alerts", "incidents"):
        op.drop_table(table)
    op.drop_table("raw_alerts")
