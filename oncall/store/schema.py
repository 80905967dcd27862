"""The agent's tables (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Times are Unix epoch seconds (float); JSON columns hold dicts/lists (decoded by SQLAlchemy). The
Alembic migrations in ``migrations/versions`` create exactly this schema (a test compares them).

- ``raw_alerts``: every body POSTed to /alerts: a valid one whole (applied after the acknowledgement: by
  whom received, when applied, with what outcome), an invalid one as its SHA-256,
  size, reason and first KiB; deleted after ``RAW_ALERT_RETENTION_DAYS``.
- ``incidents``: one per Alertmanager group key; status ``firing``/``resolved``; investigation state.
- ``incident_alerts``: alerts of an incident by fingerprint, with their latest status.
- ``timeline``: what happened to an incident, in order.
- ``investigations``: one row per engine run (engine, rounds, tokens, outcome).
- ``tool_calls``: audit trail of every tool call (arguments, capped result, timing).
- ``messages``: WhatsApp conversation and outbox (direction ``out``/``in``).
- ``tickets``: Jira issues created, or drafts kept when Jira is not configured.
- ``episodes``: one row per episode of an incident (firing until all its alerts resolve), holding the
  episode's one investigation as a work claim (``claimed_by`` / ``lease_until``).
- ``outbox``: every outgoing WhatsApp message and Jira call, written in the transaction of the state
  change that causes it, delivered by a claimed lease until delivered or expired; ``event_key`` unique.
- ``confirmations``: side-effecting actions the agent proposed to an engineer and waits for a YES on.
- ``pages``: the escalation chain of an incident episode, one row per level (its timer, who was paged).
- ``postmortems``: the post-mortem draft (Markdown) of an incident episode, written on resolution.
- ``remediations``: decisions on the remediation actions a diagnosis proposed (approved, rejected, refused)
  and each approved action's execution (claimed under a lease), request, result and verification.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Float, ForeignKey, Index, Integer, MetaData, Table, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

Json = JSON().with_variant(JSONB(), "postgresql")
"""JSON column type: TEXT holding JSON on SQLite, JSONB on PostgreSQL."""

RAW_UNAPPLIED = text("valid = 0 AND error IS NULL")
"""A body stored but not applied yet (``raw_alerts_unapplied``, the applier's claim)."""

raw_alerts = Table(
    "raw_alerts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("received_at", Float, nullable=False),
    Column("body_sha256", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("valid", Integer, nullable=False),
    Column("error", Text),
    Column("group_key", Text),
    Column("incident_id", Integer),
    Column("body_bytes", Integer),
    Column("received_by", Text),
    Column("applied_at", Float),
    Column("outcome", Text),
    Index("raw_alerts_sha", "body_sha256"),
    Index("raw_alerts_received", "received_at"),
    Index("raw_alerts_unapplied", "id", sqlite_where=RAW_UNAPPLIED, postgresql_where=RAW_UNAPPLIED),
)

incidents = Table(
    "incidents",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("group_key", Text, nullable=False, unique=True),
    Column("status", Text, nullable=False, server_default="firing"),
    Column("title", Text, nullable=False),
    Column("service", Text),
    Column("severity", Text),
    Column("group_labels", Json, nullable=False),
    Column("common_labels", Json, nullable=False),
    Column("common_annotations", Json, nullable=False),
    Column("external_url", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("resolved_at", Float),
    Column("acknowledged_at", Float),
    Column("acknowledged_by", Text),
    Column("investigation_status", Text, nullable=False, server_default="pending"),
    Column("diagnosis", Json),
    Column("diagnosed_at", Float),
    Column("episode", Integer, nullable=False, server_default="1"),
    Column("episode_after", Float),
    Column("episode_ends_at", Float),
)

incident_alerts = Table(
    "incident_alerts",
    metadata,
    Column("incident_id", Integer, ForeignKey("incidents.id"), primary_key=True),
    Column("fingerprint", Text, primary_key=True),
    Column("alertname", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("labels", Json, nullable=False),
    Column("annotations", Json, nullable=False),
    Column("starts_at", Text),
    Column("ends_at", Text),
    Column("generator_url", Text),
    Column("first_seen_at", Float, nullable=False),
    Column("last_seen_at", Float, nullable=False),
    Column("resolved_at", Float),
)

timeline = Table(
    "timeline",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("incident_id", Integer, ForeignKey("incidents.id"), nullable=False),
    Column("at", Float, nullable=False),
    Column("kind", Text, nullable=False),
    Column("detail", Json, nullable=False),
    Index("timeline_incident", "incident_id", "id"),
)

investigations = Table(
    "investigations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("incident_id", Integer, ForeignKey("incidents.id"), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("status", Text, nullable=False, server_default="running"),
    Column("engine", Text),
    Column("rounds", Integer, nullable=False, server_default="0"),
    Column("prompt_tokens", Integer, nullable=False, server_default="0"),
    Column("completion_tokens", Integer, nullable=False, server_default="0"),
    Column("error", Text),
    Column("episode", Integer),
    Column("replica_id", Text),
    Index("investigations_incident", "incident_id"),
)

tool_calls = Table(
    "tool_calls",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("incident_id", Integer, nullable=False),
    Column("investigation_id", Integer),
    Column("round", Integer, nullable=False, server_default="0"),
    Column("call_id", Text),
    Column("tool", Text, nullable=False),
    Column("arguments", Text, nullable=False),
    Column("ok", Integer, nullable=False),
    Column("result", Text),
    Column("error", Text),
    Column("started_at", Float, nullable=False),
    Column("duration_s", Float, nullable=False),
    Index("tool_calls_incident", "incident_id", "id"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("incident_id", Integer),
    Column("direction", Text, nullable=False),
    Column("channel", Text, nullable=False),
    Column("to_number", Text),
    Column("from_number", Text),
    Column("body", Text, nullable=False),
    Column("message_sid", Text, unique=True),
    Column("status", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("error", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("messages_incident", "incident_id", "id"),
)

tickets = Table(
    "tickets",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("incident_id", Integer, ForeignKey("incidents.id"), nullable=False),
    Column("status", Text, nullable=False),
    Column("jira_key", Text),
    Column("url", Text),
    Column("summary", Text, nullable=False),
    Column("assignee_query", Text),
    Column("assignee_account_id", Text),
    Column("payload", Json, nullable=False),
    Column("error", Text),
    Column("created_at", Float, nullable=False),
    Index("tickets_incident", "incident_id"),
)

episodes = Table(
    "episodes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("incident_id", Integer, ForeignKey("incidents.id"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("opened_at", Float, nullable=False),
    Column("resolved_at", Float),
    Column("resolution", Text),
    Column("investigation", Text, nullable=False, server_default="none"),
    Column("queued_at", Float),
    Column("claimed_by", Text),
    Column("lease_until", Float),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("finished_at", Float),
    UniqueConstraint("incident_id", "number", name="episodes_incident_number"),
    Index("episodes_investigation", "investigation", "queued_at"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("event_key", Text, nullable=False, unique=True),
    Column("channel", Text, nullable=False),
    Column("operation", Text, nullable=False),
    Column("incident_id", Integer),
    Column("payload", Json, nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Float, nullable=False),
    Column("claimed_by", Text),
    Column("lease_until", Float),
    Column("created_at", Float, nullable=False),
    Column("last_error", Text),
    Column("delivered_at", Float),
    Column("delivered_by", Text),
    Column("warned", Integer, nullable=False, server_default="0"),
    Index("outbox_due", "status", "next_attempt_at"),
    Index("outbox_incident", "incident_id", "channel", "id"),
)

confirmations = Table(
    "confirmations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("sender", Text, nullable=False),
    Column("incident_id", Integer, ForeignKey("incidents.id"), nullable=False),
    Column("action", Text, nullable=False),
    Column("arguments", Json, nullable=False),
    Column("question", Text, nullable=False),
    Column("proposed_by", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("decided_at", Float),
    Index("confirmations_sender", "sender", "status", "id"),
)

pages = Table(
    "pages",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("incident_id", Integer, ForeignKey("incidents.id"), nullable=False),
    Column("episode", Integer, nullable=False, server_default="1"),
    Column("level", Integer, nullable=False),
    Column("status", Text, nullable=False),
    Column("due_at", Float, nullable=False),
    Column("episode_started_at", Float, nullable=False),
    Column("service", Text),
    Column("team", Text),
    Column("policy", Text),
    Column("paged_at", Float),
    Column("recipients", Json, nullable=False),
    Column("reason", Text),
    Column("stopped_at", Float),
    Column("stop_reason", Text),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("incident_id", "episode", "level", name="pages_level_once"),
    Index("pages_due", "status", "due_at"),
)

postmortems = Table(
    "postmortems",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("incident_id", Integer, ForeignKey("incidents.id"), nullable=False),
    Column("episode", Integer, nullable=False, server_default="1"),
    Column("markdown", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("incident_id", "episode", name="postmortems_episode_once"),
)

remediations = Table(
    "remediations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("incident_id", Integer, ForeignKey("incidents.id"), nullable=False),
    Column("proposal_key", Text, nullable=False),
    Column("number", Integer, nullable=False),
    Column("service", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target", Text),
    Column("params", Json, nullable=False),
    Column("risk", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("decided_by", Text, nullable=False),
    Column("decided_at", Float, nullable=False),
    Column("reason", Text),
    Column("claimed_by", Text),
    Column("lease_until", Float),
    Column("request", Json),
    Column("sent_at", Float),
    Column("result", Json),
    Column("verification", Json),
    Column("finished_at", Float),
    UniqueConstraint("incident_id", "proposal_key", "number", name="remediations_proposal"),
    Index("remediations_service", "service", "decided_at"),
    Index("remediations_status", "status", "lease_until"),
)
