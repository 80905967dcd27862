"""Past incidents as the similar-incident ranking and the Jira reopen rule read them.

``with_history`` attaches to incident rows what a comparison needs: alert names and replicas, the
latest ticket, the resolution, the actions taken (timeline kinds in ``ACTION_KINDS``), when the
last episode started, and the newest successful ``fetch_logs`` result (text; the error signature is
read from it). Five statements for any number of incidents (``IN`` lists), never one per incident.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from oncall.store.database import Connection
from oncall.store.rows import Row, all_rows, first_row
from oncall.store.schema import incident_alerts, incidents, tickets, timeline, tool_calls

ACTION_KINDS = ("ticket", "action", "remediation", "rollback")
"""Timeline kinds that record an action taken on an incident (``ticket`` today; remediations later)."""
HISTORY_COLUMNS = (
    "id",
    "group_key",
    "title",
    "status",
    "service",
    "common_labels",
    "created_at",
    "resolved_at",
    "acknowledged_at",
    "acknowledged_by",
    "diagnosis",
)


async def resolved_candidates(conn: Connection, *, exclude_id: int, limit: int) -> list[Row]:
    """Resolved incidents other than ``exclude_id``, most recently resolved first, at most ``limit``,
    each with its history (see ``with_history``)."""
    query = (
        select(*(incidents.c[name] for name in HISTORY_COLUMNS))
        .where(incidents.c.status == "resolved", incidents.c.id != exclude_id)
        .order_by(incidents.c.resolved_at.desc(), incidents.c.id.desc())
        .limit(limit)
    )
    return await with_history(conn, all_rows(await conn.execute(query)))


async def one(conn: Connection, incident_id: int) -> Row | None:
    """One incident (any status) with its history, or None."""
    query = select(*(incidents.c[name] for name in HISTORY_COLUMNS)).where(incidents.c.id == incident_id)
    found = await with_history(conn, all_rows(await conn.execute(query)))
    return found[0] if found else None


async def with_history(conn: Connection, rows: list[Row]) -> list[Row]:
    """Add to each incident row: ``alertnames`` and ``replicas`` (the distinct alert names and ``replica``
    label values of its alerts, sorted; read as distinct pairs, never alert by alert), ``ticket`` (the newest
    ``created`` ticket, else the newest one, or None), ``resolution`` (the last ``resolved`` event
    ``{"at", "detail"}`` or None), ``actions`` (``[{"at", "kind", "detail"}]`` oldest first),
    ``episode_started_at`` (the last ``reopened`` event, else ``created_at``) and ``log_summary`` (the
    newest successful ``fetch_logs`` result text, or None)."""
    ids = [int(row["id"]) for row in rows]
    if not ids:
        return rows
    replica = incident_alerts.c.labels["replica"].as_string().label("replica")  # NULL when the label is absent
    alerts = await _grouped(
        conn,
        select(incident_alerts.c.incident_id, incident_alerts.c.alertname, replica)
        .where(incident_alerts.c.incident_id.in_(ids))
        .distinct(),
    )
    ticket_rows = await _grouped(conn, select(tickets).where(tickets.c.incident_id.in_(ids)).order_by(tickets.c.id))
    events = await _grouped(
        conn,
        select(timeline.c.incident_id, timeline.c.at, timeline.c.kind, timeline.c.detail)
        .where(timeline.c.incident_id.in_(ids), timeline.c.kind.in_(("resolved", "reopened", *ACTION_KINDS)))
        .order_by(timeline.c.id),
    )
    newest_logs = (
        select(func.max(tool_calls.c.id))
        .where(tool_calls.c.incident_id.in_(ids), tool_calls.c.tool == "fetch_logs", tool_calls.c.ok == 1)
        .group_by(tool_calls.c.incident_id)
    )
    logs = await _grouped(
        conn, select(tool_calls.c.incident_id, tool_calls.c.result).where(tool_calls.c.id.in_(newest_logs))
    )
    for row in rows:
        incident_id = int(row["id"])
        found = alerts.get(incident_id, [])
        row["alertnames"] = sorted({alert["alertname"] for alert in found})
        row["replicas"] = sorted({alert["replica"] for alert in found if alert["replica"]})
        row["ticket"] = _preferred_ticket(ticket_rows.get(incident_id, []))
        row.update(_episode_facts(row, events.get(incident_id, [])))
        row["log_summary"] = next((entry["result"] for entry in logs.get(incident_id, [])), None)
    return rows


async def _grouped(conn: Connection, query: Any) -> dict[int, list[Row]]:
    """Rows of ``query`` grouped by their ``incident_id``, in query order."""
    grouped: dict[int, list[Row]] = {}
    for row in all_rows(await conn.execute(query)):
        grouped.setdefault(int(row["incident_id"]), []).append(row)
    return grouped


def _preferred_ticket(rows: list[Row]) -> Row | None:
    created = [row for row in rows if row["status"] == "created"]
    preferred = created or rows
    return preferred[-1] if preferred else None


def _episode_facts(row: Row, events: list[Row]) -> Row:
    resolutions = [event for event in events if event["kind"] == "resolved"]
    reopened = [event for event in events if event["kind"] == "reopened"]
    return {
        "resolution": {"at": resolutions[-1]["at"], "detail": resolutions[-1]["detail"]} if resolutions else None,
        "actions": [
            {k: event[k] for k in ("at", "kind", "detail")} for event in events if event["kind"] in ACTION_KINDS
        ],
        "episode_started_at": reopened[-1]["at"] if reopened else row["created_at"],
    }


async def last_ticket_of_group(conn: Connection, group_key: str) -> Row | None:
    """The newest ``created`` Jira ticket of the incident with ``group_key`` (the same alert group),
    with ``incident_status`` and ``last_resolved_at`` (epoch s of its last ``resolved`` event, None
    when it never resolved); None without such a ticket."""
    last_resolved = (
        select(func.max(timeline.c.at))
        .where(timeline.c.incident_id == incidents.c.id, timeline.c.kind == "resolved")
        .scalar_subquery()
    )
    query = (
        select(
            tickets.c.id.label("ticket_id"),
            tickets.c.jira_key,
            tickets.c.url,
            tickets.c.created_at,
            incidents.c.id.label("incident_id"),
            incidents.c.status.label("incident_status"),
            last_resolved.label("last_resolved_at"),
        )
        .join(incidents, incidents.c.id == tickets.c.incident_id)
        .where(incidents.c.group_key == group_key, tickets.c.status == "created", tickets.c.jira_key.is_not(None))
        .order_by(tickets.c.id.desc())
        .limit(1)
    )
    return first_row(await conn.execute(query))
