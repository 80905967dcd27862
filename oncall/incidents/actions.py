"""What an engineer can do to an incident, by WhatsApp or HTTP: acknowledge, resolve, ask its status.

Each action commits its lifecycle change in one transaction and answers with a dict that carries
the line to show the engineer (``message``).
"""

from __future__ import annotations

import time
from typing import Any

from oncall.channels.whatsapp.format import alert_name, format_duration, incident_url
from oncall.incidents import lifecycle
from oncall.metrics import INCIDENTS_OPEN
from oncall.store import incidents, tickets
from oncall.store.database import Store

DIAGNOSIS_KEYS = (
    "summary",
    "fault_type",
    "affected_replicas",
    "affected_file",
    "affected_line",
    "priority",
    "confidence",
    "suggested_fix",
)


async def acknowledge(store: Store, incident_id: int, by: str, note: str | None = None) -> dict[str, Any]:
    """Acknowledge the incident for ``by`` (first acknowledgement wins).

    Returns ``{"acknowledged": True, "already": bool, "message": str}``.
    Raises:
        LookupError: no such incident.
    """
    now = time.time()
    async with store.write() as conn:
        outcome = await lifecycle.acknowledge(conn, incident_id, by, now, note)
    incident = outcome.incident
    if outcome.already:
        ago = format_duration(now - incident["acknowledged_at"])
        message = f"#{incident_id} was already acknowledged by {incident['acknowledged_by']} {ago} ago."
    else:
        message = f"👍 #{incident_id} {alert_name(incident)} acknowledged by {by}."
    return {"acknowledged": True, "already": outcome.already, "message": message}


async def resolve(store: Store, incident_id: int, by: str, note: str | None = None) -> dict[str, Any]:
    """Resolve the incident by hand for ``by``.

    Returns ``{"resolved": True, "already": bool, "message": str}``.
    Raises:
        LookupError: no such incident.
    """
    now = time.time()
    async with store.write() as conn:
        outcome = await lifecycle.resolve_by_hand(conn, incident_id, by, now, note)
        open_count = await incidents.count_firing(conn)
    INCIDENTS_OPEN.set(open_count)
    incident = outcome.incident
    if outcome.already:
        return {"resolved": True, "already": True, "message": f"#{incident_id} is already resolved."}
    duration = format_duration(now - incident["created_at"])
    message = f"✅ #{incident_id} {alert_name(incident)} marked resolved by {by} after {duration}."
    return {"resolved": True, "already": False, "message": message}


async def status(store: Store, incident_id: int, public_base_url: str) -> dict[str, Any]:
    """The incident's state: status, acknowledgement, diagnosis essentials, latest ticket, page URL.

    Raises:
        LookupError: no such incident.
    """
    async with store.read() as conn:
        incident = await incidents.get(conn, incident_id)
        ticket = await tickets.latest(conn, incident_id)
    if incident is None:
        raise LookupError(f"incident {incident_id} not found")
    diagnosis = incident["diagnosis"] or {}
    return {
        "incident_id": incident_id,
        "alert": alert_name(incident),
        "status": incident["status"],
        "open_for": format_duration((incident["resolved_at"] or time.time()) - incident["created_at"]),
        "acknowledged_by": incident["acknowledged_by"],
        "investigation_status": incident["investigation_status"],
        "diagnosis": {key: diagnosis.get(key) for key in DIAGNOSIS_KEYS} if diagnosis else None,
        "ticket": {key: ticket[key] for key in ("status", "jira_key", "url", "error")} if ticket else None,
        "url": incident_url(public_base_url, incident_id),
    }


def status_text(state: dict[str, Any]) -> str:
    """A ``status`` answer as a short WhatsApp message."""
    incident_id = state["incident_id"]
    lines = [f"*#{incident_id} {state['alert']}*: {state['status']} ({state['open_for']})"]
    lines.append(f"Acknowledged by {state['acknowledged_by']}" if state["acknowledged_by"] else "Not acknowledged yet")
    diagnosis = state["diagnosis"]
    if diagnosis:
        where = (
            f" at {diagnosis['affected_file']}:{diagnosis['affected_line']}" if diagnosis.get("affected_file") else ""
        )
        replicas = ", ".join(diagnosis.get("affected_replicas") or []) or "no replica identified"
        lines.append(f"Diagnosis: {diagnosis['fault_type']} ({diagnosis['priority']}) on {replicas}{where}")
        lines.append(str(diagnosis["summary"]))
    else:
        lines.append(f"Investigation: {state['investigation_status']}")
    ticket = state["ticket"]
    if ticket:
        created = ticket["status"] == "created"
        lines.append(f"Ticket: {ticket['jira_key']} {ticket['url']}" if created else f"Ticket: {ticket['status']}")
    lines.append(state["url"])
    return "\n".join(lines)
