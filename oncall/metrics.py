"""Prometheus metrics of the agent, exposed at ``GET /metrics`` (prometheus-client default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ALERT_NOTIFICATIONS = Counter(
    "oncall_alert_notifications_total",
    "Alertmanager webhook POSTs, by outcome: accepted, duplicate (applied), failed (applying raised), invalid,"
    " too_large, unauthorized (refused).",
    ["outcome"],
)
ALERTS_RECEIVED = Counter(
    "oncall_alerts_received_total",
    "Alerts carried by accepted notifications, by alert status (firing, resolved).",
    ["status"],
)
INCIDENTS_OPEN = Gauge("oncall_incidents_open", "Incidents whose alerts are not all resolved.")
INVESTIGATIONS = Counter(
    "oncall_investigations_total",
    "Finished investigations, by engine (offline, openai) and outcome (the diagnosis fault_type, or error).",
    ["engine", "outcome"],
)
INVESTIGATION_SECONDS = Histogram(
    "oncall_investigation_duration_seconds",
    "Wall time of one investigation, seconds.",
    ["engine"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
)
TOOL_CALL_SECONDS = Histogram(
    "oncall_tool_call_duration_seconds",
    "Wall time of one tool call, seconds, by tool and result (ok, error).",
    ["tool", "result"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LLM_TOKENS = Counter("oncall_llm_tokens_total", "Model tokens used, by kind (prompt, completion).", ["kind"])
WHATSAPP_MESSAGES = Counter(
    "oncall_whatsapp_messages_total",
    "Outbound WhatsApp messages by channel (twilio, console) and final status (sent, failed).",
    ["channel", "status"],
)
EVENT_LOOP_LAG = Histogram(
    "oncall_event_loop_lag_seconds",
    "How late a 10 ms timer fired on the agent's event loop, seconds: how long the loop was held (or the "
    "process waited for a CPU).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
JIRA_TICKETS = Counter("oncall_jira_tickets_total", "Jira tickets by outcome (created, draft, failed).", ["outcome"])
INVESTIGATION_CLAIMS = Counter(
    "oncall_investigation_claims_total",
    "Investigations claimed by this replica, by kind (queued, takeover: another replica's lease had expired).",
    ["kind"],
)
OUTBOX_DELIVERIES = Counter(
    "oncall_outbox_deliveries_total",
    "Outbox delivery attempts by channel (whatsapp, jira), operation (notice, message, create_issue) and outcome "
    "(delivered, retry, failed, expired).",
    ["channel", "operation", "outcome"],
)
OUTBOX_PENDING = Gauge("oncall_outbox_pending", "Outbox rows not delivered yet (all replicas).")
OUTBOX_OLDEST_PENDING_SECONDS = Gauge(
    "oncall_outbox_oldest_pending_seconds", "Age of the oldest undelivered outbox row, seconds (0 when none)."
)
OUTBOX_UNDELIVERABLE = Gauge(
    "oncall_outbox_undeliverable", "Outbox rows given up (failed permanently or expired), by status.", ["status"]
)
RAW_ALERTS_REPLAYED = Counter(
    "oncall_raw_alerts_replayed_total",
    "Stored webhook bodies that were not applied (the receiving process died) and were applied by a replay.",
)
RAW_ALERTS_WAITING = Gauge(
    "oncall_raw_alerts_waiting",
    "Webhook bodies this replica acknowledged and has not applied yet (the applier's backlog).",
)
RAW_ALERT_APPLY_SECONDS = Histogram(
    "oncall_raw_alert_apply_seconds",
    "Seconds from a webhook body's receipt to its application (the acknowledgement comes first).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
INCIDENT_PHASE_SECONDS = Histogram(
    "oncall_incident_phase_seconds",
    "Seconds an incident episode spent in each phase (ingest, investigation, notification, acknowledgement, "
    "action, resolution), observed once per episode when it resolves.",
    ["phase"],
    buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
)
