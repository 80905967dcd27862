"""The incident lifecycle: the ONE place that changes an incident's status and investigation status.

Incident ``status``: ``firing`` -> ``resolved`` (all alerts resolved, or by hand) -> ``firing`` again
(``reopen``: a new episode). ``acknowledged_at/by``: set once, by the first acknowledgement.
``investigation_status``: ``pending`` -> ``running`` -> ``done`` | ``failed``; ``interrupted`` when
the agent restarted while a resolved incident was being investigated; a cancelled investigation
stays ``running`` so the next start resumes it.

Every function takes the caller's connection, so a status change commits in the same transaction as
whatever caused it, and records the change on the incident's timeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from oncall.diagnosis import Diagnosis
from oncall.store import incidents, timeline
from oncall.store.rows import Row


@dataclass(frozen=True)
class Acknowledgement:
    """Outcome of ``acknowledge``: the incident row after it, and whether it was acknowledged before."""

    incident: Row
    already: bool


@dataclass(frozen=True)
class Resolution:
    """Outcome of ``resolve_by_hand``: the incident row after it, and whether it was resolved before."""

    incident: Row
    already: bool


async def open_incident(conn: AsyncConnection, values: dict[str, Any], receiver: str) -> int:
    """Create a ``firing`` incident (``values``: its columns) and return its id."""
    incident_id = await incidents.add(conn, {**values, "status": "firing", "investigation_status": "pending"})
    await timeline.add(conn, incident_id, "created", {"group_key": values["group_key"], "receiver": receiver})
    return incident_id


async def reopen(conn: AsyncConnection, incident_id: int, fingerprints: list[str]) -> None:
    """A resolved incident fires again: a new episode with its own investigation."""
    await incidents.update_fields(conn, incident_id, status="firing", resolved_at=None, investigation_status="pending")
    await timeline.add(conn, incident_id, "reopened", {"fingerprints": fingerprints})


async def resolve_from_alerts(conn: AsyncConnection, incident_id: int, now: float, *, notify: bool) -> None:
    """Every alert of the incident resolved at ``now`` (epoch s); ``notify`` says whether the engineer is told."""
    await incidents.update_fields(conn, incident_id, status="resolved", resolved_at=now)
    await timeline.add(conn, incident_id, "resolved", {"notify": notify})


async def acknowledge(
    conn: AsyncConnection, incident_id: int, by: str, now: float, note: str | None = None
) -> Acknowledgement:
    """Acknowledge the incident for ``by``; the first acknowledgement wins.

    Raises:
        LookupError: no such incident.
    """
    changed = await incidents.acknowledge_once(conn, incident_id, by, now)
    if changed:
        await timeline.add(conn, incident_id, "acknowledged", {"by": by, "note": note})
    return Acknowledgement(await _existing(conn, incident_id), already=not changed)


async def resolve_by_hand(
    conn: AsyncConnection, incident_id: int, by: str, now: float, note: str | None = None
) -> Resolution:
    """Resolve the incident by hand for ``by`` (its alerts may still fire).

    Raises:
        LookupError: no such incident.
    """
    changed = await incidents.resolve_if_open(conn, incident_id, now)
    if changed:
        await timeline.add(conn, incident_id, "resolved", {"by": by, "manual": True, "note": note})
    return Resolution(await _existing(conn, incident_id), already=not changed)


async def begin_investigation(
    conn: AsyncConnection, incident_id: int, engine: str, alert_count: int, now: float
) -> None:
    """The investigation of the incident's current episode starts with ``engine``."""
    await incidents.update_fields(conn, incident_id, investigation_status="running", updated_at=now)
    await timeline.add(conn, incident_id, "investigation_started", {"engine": engine, "alerts": alert_count})


async def record_diagnosis(conn: AsyncConnection, incident_id: int, diagnosis: Diagnosis, now: float) -> None:
    """Store the diagnosis on the incident; its investigation is ``done``."""
    await incidents.update_fields(
        conn,
        incident_id,
        diagnosis=diagnosis.model_dump(mode="json"),
        diagnosed_at=now,
        investigation_status="done",
        updated_at=now,
    )
    await timeline.add(
        conn,
        incident_id,
        "diagnosis",
        {
            "engine": diagnosis.engine,
            "fault_type": diagnosis.fault_type.value,
            "priority": diagnosis.priority,
            "affected_replicas": diagnosis.affected_replicas,
            "summary": diagnosis.summary,
        },
    )


async def fail_investigation(conn: AsyncConnection, incident_id: int, error: str, now: float) -> bool:
    """Mark a pending or running investigation ``failed`` with ``error``; False when it was not running."""
    changed = await incidents.fail_if_running(conn, incident_id, now)
    if changed:
        await timeline.add(conn, incident_id, "investigation_failed", {"error": error})
    return changed


async def interrupted_by_restart(conn: AsyncConnection) -> list[int]:
    """At start: resolved incidents cut off mid-investigation become ``interrupted``; returns the firing
    incidents whose investigation must run again (each gets an ``investigation_resumed`` event)."""
    await incidents.interrupt_resolved_running(conn)
    resumed = await incidents.ids_to_resume(conn)
    for incident_id in resumed:
        await timeline.add(conn, incident_id, "investigation_resumed", {"reason": "agent restarted"})
    return resumed


async def _existing(conn: AsyncConnection, incident_id: int) -> Row:
    incident = await incidents.get(conn, incident_id)
    if incident is None:
        raise LookupError(f"incident {incident_id} not found")
    return incident
