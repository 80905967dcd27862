"""Read model of incidents for the HTTP API (``GET /incidents`` and ``GET /incidents/{id}``).

All times are Unix epoch seconds. JSON columns are decoded; ``tool_calls.result`` and
``tickets.payload`` are decoded when they hold JSON and returned as text otherwise.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from oncall.db import Database, get_incident, get_incident_alerts

IncidentStatus = Literal["firing", "resolved"]


def list_incidents(db: Database, status: IncidentStatus | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Return incident summaries, newest first.

    Args:
        status: only incidents with this status when given.
        limit: at most this many rows (the caller bounds it).
    Each item: id, group_key, title, status, service, severity, created_at, updated_at, resolved_at,
    acknowledged_at, acknowledged_by, investigation_status, fault_type (from the diagnosis, or None),
    alerts_total, alerts_firing.
    """
    where = "WHERE i.status = ?" if status else ""
    params: tuple = (status, limit) if status else (limit,)
    rows = db.query(
        "SELECT i.id, i.group_key, i.title, i.status, i.service, i.severity, i.created_at, i.updated_at, i.resolved_at,"
        " i.acknowledged_at, i.acknowledged_by, i.investigation_status, i.diagnosis,"
        " (SELECT COUNT(*) FROM incident_alerts a WHERE a.incident_id = i.id) AS alerts_total,"
        " (SELECT COUNT(*) FROM incident_alerts a WHERE a.incident_id = i.id AND a.status = 'firing') AS alerts_firing"
        f" FROM incidents i {where} ORDER BY i.created_at DESC, i.id DESC LIMIT ?",
        params,
    )
    for row in rows:
        diagnosis = json.loads(row.pop("diagnosis")) if row["diagnosis"] else None
        row["fault_type"] = diagnosis.get("fault_type") if diagnosis else None
    return rows


def incident_detail(db: Database, incident_id: int) -> dict[str, Any] | None:
    """Return everything known about one incident, or None when it does not exist.

    Keys: the ``incidents`` row's columns (id, status, title, resolved_at, ...; JSON columns decoded),
    diagnosis (dict or None), alerts, timeline, investigations, tool_calls, messages, tickets
    (lists oldest first).
    """
    incident = get_incident(db, incident_id)
    if incident is None:
        return None
    timeline = db.query("SELECT id, at, kind, detail FROM timeline WHERE incident_id = ? ORDER BY id", (incident_id,))
    for event in timeline:
        event["detail"] = json.loads(event["detail"])
    tool_calls = db.query("SELECT * FROM tool_calls WHERE incident_id = ? ORDER BY id", (incident_id,))
    for call in tool_calls:
        call["ok"] = bool(call["ok"])
        call["result"] = _json_or_text(call["result"])
    tickets = db.query("SELECT * FROM tickets WHERE incident_id = ? ORDER BY id", (incident_id,))
    for ticket in tickets:
        ticket["payload"] = _json_or_text(ticket["payload"])
    return {
        **incident,
        "alerts": get_incident_alerts(db, incident_id),
        "timeline": timeline,
        "investigations": db.query("SELECT * FROM investigations WHERE incident_id = ? ORDER BY id", (incident_id,)),
        "tool_calls": tool_calls,
        "messages": db.query("SELECT * FROM messages WHERE incident_id = ? ORDER BY id", (incident_id,)),
        "tickets": tickets,
    }


def _json_or_text(value: str | None) -> Any:
    """Decode a TEXT column that usually holds JSON; keep it as text when it does not."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value
