"""``remediations``: decisions on the remediation actions a diagnosis proposed, and their executions.

A row exists once an engineer (or the ``auto-low-risk`` safety mode) decided on proposal ``number`` of one
diagnosis (``proposal_key``): ``rejected``, or ``approved`` and then executed. The row is unique by
(incident, proposal key, number): of two approvals of the same proposal (a replayed webhook, two replicas,
a second message) exactly one inserts it, so an action approved twice runs once.

Execution states: ``approved`` -> ``running`` (claimed by a replica under a lease; ``request`` and
``sent_at`` are written *before* the control plane is called) -> ``verifying`` -> ``recovered`` |
``not_recovered`` | ``failed``. A replica that dies mid-action loses its lease; another claims the row
(``claim_stale``) and, when ``sent_at`` is set, only verifies instead of calling the control plane again.
Times are epoch seconds.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, or_, select, update

from oncall.store.database import Connection, storable
from oncall.store.rows import Row, all_rows, first_row, insert_ignoring_conflicts
from oncall.store.schema import remediations

IN_FLIGHT = ("running", "verifying")
EXECUTED = ("approved", "running", "verifying", "recovered", "not_recovered", "failed")
FINISHED = ("recovered", "not_recovered", "failed")


def proposal_key(incident: Row) -> str:
    """The key of an incident's current diagnosis' proposals: its ``diagnosed_at`` (epoch s), so a newer
    diagnosis makes new options."""
    return repr(float(incident.get("diagnosed_at") or 0.0))


async def with_decisions(conn: Connection, incident: Row) -> list[Row]:
    """The current diagnosis' proposed actions, each with its ``number`` and its decision: ``status``
    (``proposed`` while undecided), ``decided_by``, ``decided_at``, ``result``, ``verification``."""
    proposed = (incident.get("diagnosis") or {}).get("proposed_actions") or []
    rows = {
        row["number"]: row
        for row in await for_incident(conn, int(incident["id"]))
        if row["proposal_key"] == proposal_key(incident)
    }
    out = []
    for number, action in enumerate(proposed, 1):
        row = rows.get(number) or {}
        decided = {k: row.get(k) for k in ("decided_by", "decided_at", "result", "verification")}
        out.append({**action, "number": number, "status": row.get("status", "proposed"), **decided})
    return out


async def decide(
    conn: Connection,
    *,
    incident_id: int,
    proposal_key: str,
    number: int,
    service: str,
    action: dict[str, Any],
    status: str,
    decided_by: str,
    now: float,
    reason: str | None = None,
) -> int | None:
    """Record a decision (``approved`` or ``rejected``) on proposal ``number``; returns the row id, or None
    when that proposal was decided before (nothing is written).

    ``action``: the proposed action (``action``, ``target``, ``params``, ``risk``) exactly as it will run.
    """
    result = await conn.execute(
        insert_ignoring_conflicts(conn, remediations)
        .values(
            incident_id=incident_id,
            proposal_key=proposal_key,
            number=number,
            service=service,
            action=action["action"],
            target=action.get("target"),
            params=action.get("params") or {},
            risk=action["risk"],
            status=status,
            decided_by=storable(decided_by),
            decided_at=now,
            reason=storable(reason) if reason else None,
        )
        .returning(remediations.c.id)
    )
    row = result.first()
    return int(row.id) if row is not None else None


async def get(conn: Connection, remediation_id: int) -> Row | None:
    """One row, or None."""
    return first_row(await conn.execute(select(remediations).where(remediations.c.id == remediation_id)))


async def decision(conn: Connection, incident_id: int, proposal_key: str, number: int) -> Row | None:
    """The decision on proposal ``number`` of the diagnosis ``proposal_key``, or None when undecided."""
    query = select(remediations).where(
        remediations.c.incident_id == incident_id,
        remediations.c.proposal_key == proposal_key,
        remediations.c.number == number,
    )
    return first_row(await conn.execute(query))


def _claimable(now: float) -> Any:
    """Approved or in flight, and nobody holds a live lease on it."""
    free = or_(remediations.c.lease_until.is_(None), remediations.c.lease_until < now)
    return and_(remediations.c.status.in_(("approved", *IN_FLIGHT)), free)


async def claim(conn: Connection, remediation_id: int, replica_id: str, now: float, lease_s: float) -> bool:
    """Claim the execution of an approved row (or one whose lease expired) for ``replica_id`` for
    ``lease_s`` seconds; False when another replica holds it or it finished."""
    result = await conn.execute(
        update(remediations)
        .where(remediations.c.id == remediation_id, _claimable(now))
        .values(claimed_by=replica_id, lease_until=now + lease_s)
    )
    return bool(result.rowcount)


async def claimable_ids(conn: Connection, now: float, limit: int = 10) -> list[int]:
    """Rows waiting for an executor: approved and unclaimed, or in flight with an expired lease."""
    query = select(remediations.c.id).where(_claimable(now)).order_by(remediations.c.id).limit(limit)
    return [int(row.id) for row in await conn.execute(query)]


def _held(remediation_id: int, replica_id: str) -> Any:
    return and_(
        remediations.c.id == remediation_id,
        remediations.c.claimed_by == replica_id,
        remediations.c.status.in_(("approved", *IN_FLIGHT)),
    )


async def advance(
    conn: Connection, remediation_id: int, replica_id: str, now: float, lease_s: float, **values: Any
) -> bool:
    """Update the row ``replica_id`` holds (``status``, ``request``, ``sent_at``, ``result``, ...) and renew
    its lease; False when the claim was lost (fencing: the caller must stop)."""
    result = await conn.execute(
        update(remediations).where(_held(remediation_id, replica_id)).values(lease_until=now + lease_s, **values)
    )
    return bool(result.rowcount)


async def finish(
    conn: Connection, remediation_id: int, replica_id: str, status: str, now: float, **values: Any
) -> bool:
    """End the execution ``replica_id`` holds with ``status`` (``recovered``, ``not_recovered``, ``failed``)."""
    result = await conn.execute(
        update(remediations)
        .where(_held(remediation_id, replica_id))
        .values(status=status, finished_at=now, lease_until=None, **values)
    )
    return bool(result.rowcount)


async def release(conn: Connection, replica_id: str) -> int:
    """Drop the leases ``replica_id`` holds (its shutdown): another replica may take the rows over at once."""
    result = await conn.execute(
        update(remediations)
        .where(remediations.c.claimed_by == replica_id, remediations.c.status.in_(("approved", *IN_FLIGHT)))
        .values(lease_until=0.0)
    )
    return int(result.rowcount)


async def for_incident(conn: Connection, incident_id: int) -> list[Row]:
    """The incident's decisions and executions, oldest first."""
    query = select(remediations).where(remediations.c.incident_id == incident_id).order_by(remediations.c.id)
    return all_rows(await conn.execute(query))


async def recent(conn: Connection, limit: int = 20) -> list[Row]:
    """The newest decisions and executions of every incident, newest first."""
    return all_rows(await conn.execute(select(remediations).order_by(remediations.c.id.desc()).limit(limit)))


async def executed_count(
    conn: Connection, *, since: float, service: str | None = None, incident_id: int | None = None
) -> int:
    """Approved actions (executed or about to be) decided since ``since``, for a service or an incident."""
    query = (
        select(func.count())
        .select_from(remediations)
        .where(remediations.c.status.in_(EXECUTED), remediations.c.decided_at >= since)
    )
    if service is not None:
        query = query.where(remediations.c.service == service)
    if incident_id is not None:
        query = query.where(remediations.c.incident_id == incident_id)
    return int((await conn.execute(query)).scalar_one())


async def last_outcomes(conn: Connection, service: str, since: float, limit: int) -> list[str]:
    """The statuses of the service's ``limit`` newest executions finished since ``since``, newest first."""
    query = (
        select(remediations.c.status)
        .where(
            remediations.c.service == service,
            remediations.c.status.in_(FINISHED),
            remediations.c.finished_at >= since,
        )
        .order_by(remediations.c.finished_at.desc())
        .limit(limit)
    )
    return [str(row.status) for row in await conn.execute(query)]
