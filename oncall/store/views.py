"""Read models of incidents for the HTTP API (``GET /incidents`` and ``GET /incidents/{id}``).

All times are Unix epoch seconds. ``tool_calls.result`` is decoded when it holds JSON and returned as
text otherwise (a result capped for the audit trail is no longer valid JSON).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from oncall.store import episodes, incidents, investigations, messages, outbox, tickets, timeline
from oncall.store.incidents import IncidentStatus
from oncall.store.rows import Row


async def incident_list(conn: AsyncConnection, status: IncidentStatus | None = None, limit: int = 50) -> list[Row]:
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


async def incident_detail(conn: AsyncConnection, incident_id: int) -> Row | None:
    """Everything known about one incident, or None when it does not exist.

    Keys: the ``incidents`` row's columns (JSON decoded), alerts, timeline, investigations,
    tool_calls, messages, tickets, episodes (each with its investigation claim: ``investigation``,
    ``claimed_by``, ``attempts``) and outbox (delivery state of every message and Jira call:
    ``event_key``, ``status``, ``attempts``, ``last_error``, ``delivered_by``), lists oldest first.
    """
    incident = await incidents.get(conn, incident_id)
    if incident is None:
        return None
    calls = await investigations.tool_calls_for(conn, incident_id)
    for call in calls:
        call["ok"] = bool(call["ok"])
        call["result"] = json_or_text(call["result"])
    return {
        **incident,
        "alerts": await incidents.alerts(conn, incident_id),
        "timeline": await timeline.for_incident(conn, incident_id),
        "investigations": await investigations.for_incident(conn, incident_id),
        "tool_calls": calls,
        "messages": await messages.for_incident(conn, incident_id),
        "tickets": await tickets.for_incident(conn, incident_id),
        "episodes": await episodes.for_incident(conn, incident_id),
        "outbox": await outbox.for_incident(conn, incident_id),
    }


def json_or_text(value: str | None) -> Any:
    """Decode a TEXT column that usually holds JSON; keep it as text when it does not."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value
