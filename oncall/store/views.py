"""Read models of incidents for the HTTP API (``GET /incidents`` and ``GET /incidents/{id}``).

All times are Unix epoch seconds. ``tool_calls.result`` is decoded when it holds JSON and returned as
text otherwise (a result capped for the audit trail is no longer valid JSON).

A large incident's page stays small: at most ``PAGE_ALERTS`` alerts (the most telling, with the
counts in ``alert_summary``; all of them page by page through ``GET /incidents/{id}/alerts``) and at
most ``PAGE_ALERT_EVENTS`` alert state changes on the timeline (every other event is kept).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from oncall.store import (
    episodes,
    incidents,
    investigations,
    messages,
    outbox,
    pages,
    postmortems,
    remediations,
    tickets,
    timeline,
)
from oncall.store.alert_summary import summarise_alerts
from oncall.store.database import Connection
from oncall.store.incidents import IncidentStatus
from oncall.store.rows import Row

PAGE_ALERTS = 50
"""Alerts shown on an incident's page."""
PAGE_ALERT_EVENTS = 100
"""``alert_firing`` / ``alert_resolved`` timeline events shown on an incident's page (the first ones)."""


async def incident_list(conn: Connection, status: IncidentStatus | None = None, limit: int = 50) -> list[Row]:
    """Incident summaries, newest first.

    Args:
        status: only incidents with this status when given.
        limit: at most this many rows (the caller bounds it).
    Each item: id, group_key, title, status, service, severity, created_at, updated_at, resolved_at,
    acknowledged_at, acknowledged_by, investigation_status, fault_type (from the diagnosis, or None),
    alerts_total, alerts_firing.
    """
    rows = await incidents.summaries(conn, status, limit)
    for row in rows:
        diagnosis = row.pop("diagnosis")
        row["fault_type"] = diagnosis.get("fault_type") if diagnosis else None
    return rows


async def incident_detail(conn: Connection, incident_id: int) -> Row | None:
    """Everything known about one incident, or None when it does not exist.

    Keys: the ``incidents`` row's columns (JSON decoded), alerts (at most ``PAGE_ALERTS``, the most
    telling first), alert_summary (counts by status, alert name and label; ``shown``, ``omitted``),
    timeline (alert events capped, see ``timeline.for_incident``), investigations, tool_calls, messages,
    tickets, episodes (each with its investigation claim: ``investigation``, ``claimed_by``,
    ``attempts``), outbox (delivery state of every message and Jira call: ``event_key``, ``status``,
    ``attempts``, ``last_error``, ``delivered_by``), lists oldest first; proposed_actions (the diagnosis'
    options with their decisions, see ``remediations.with_decisions``); pages (the escalation levels by
    episode and level: ``status``, ``recipients``, ``reason``, ``due_at``, ``paged_at``, ``stop_reason``) and
    postmortem (the stored draft of the latest resolved episode: ``episode``, ``updated_at``, ``text``
    Markdown; None before any resolution).
    """
    incident = await incidents.get(conn, incident_id)
    if incident is None:
        return None
    calls = await investigations.tool_calls_for(conn, incident_id)
    for call in calls:
        call["ok"] = bool(call["ok"])
        call["result"] = json_or_text(call["result"])
    alerts = await incidents.alert_heads(conn, incident_id)
    # pure Python over every alert (0.1 s for 10,000): on a worker thread the loop gets the GIL every 5 ms
    summary = await asyncio.to_thread(summarise_alerts, alerts, PAGE_ALERTS)
    shown = alerts if len(alerts) <= PAGE_ALERTS else summary["alerts"]
    summary.pop("alerts")
    await incidents.annotate(conn, incident_id, shown)
    return {
        **incident,
        "alerts": shown,
        "alert_summary": summary,
        "timeline": await timeline.for_incident(conn, incident_id, PAGE_ALERT_EVENTS),
        "investigations": await investigations.for_incident(conn, incident_id),
        "tool_calls": calls,
        "messages": await messages.for_incident(conn, incident_id),
        "tickets": await tickets.for_incident(conn, incident_id),
        "episodes": await episodes.for_incident(conn, incident_id),
        "outbox": await outbox.for_incident(conn, incident_id),
        "proposed_actions": await remediations.with_decisions(conn, incident),
        "pages": await pages.for_incident(conn, incident_id),
        "postmortem": stored_postmortem(await postmortems.latest(conn, incident_id)),
    }


def stored_postmortem(row: Row | None) -> Row | None:
    """``{"episode", "updated_at", "text"}`` of a ``postmortems`` row, or None."""
    if row is None:
        return None
    return {"episode": row["episode"], "updated_at": row["updated_at"], "text": row["markdown"]}


def json_or_text(value: str | None) -> Any:
    """Decode a TEXT column that usually holds JSON; keep it as text when it does not."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value
