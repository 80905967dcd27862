"""``episodes``: one row per episode of an incident, and the episode's one investigation as a work claim.

An episode runs from the first firing alert until every alert of the incident is resolved; a later
firing alert opens the next one (``incidents.episode``). ``investigation``: ``none`` (not asked for:
no alert of the episode was seen firing) -> ``queued`` -> ``running`` (claimed by ``claimed_by`` until
``lease_until``, epoch s, renewed by a heartbeat) -> ``done`` | ``failed``. A ``running`` claim whose
lease passed is taken over by the next claim (the replica holding it died or stalled).

Claims: PostgreSQL locks the claimed rows with ``FOR UPDATE SKIP LOCKED`` (replicas claiming at the
same moment get different rows); SQLite writers are serialised by ``BEGIN IMMEDIATE`` (``Store.write``),
which is the single-writer equivalent. Lease times compare the claiming replica's clock with the
holder's, so replicas need synchronised clocks (NTP; skew well under ``LEASE_S``).
"""

from __future__ import annotations

from sqlalchemy import and_, exists, func, or_, select, update

from oncall.store.database import Connection
from oncall.store.rows import Row, all_rows, first_row, insert_ignoring_conflicts
from oncall.store.schema import episodes

CLAIMABLE = or_(episodes.c.investigation == "queued", episodes.c.investigation == "running")


async def open_episode(conn: Connection, incident_id: int, number: int, now: float) -> None:
    """Insert episode ``number`` of the incident (nothing when it exists)."""
    await conn.execute(
        insert_ignoring_conflicts(conn, episodes).values(incident_id=incident_id, number=number, opened_at=now)
    )


async def get(conn: Connection, incident_id: int, number: int) -> Row | None:
    """Episode ``number`` of the incident, or None."""
    result = await conn.execute(
        select(episodes).where(episodes.c.incident_id == incident_id, episodes.c.number == number)
    )
    return first_row(result)


async def for_incident(conn: Connection, incident_id: int) -> list[Row]:
    """The incident's episodes, oldest first."""
    result = await conn.execute(
        select(episodes).where(episodes.c.incident_id == incident_id).order_by(episodes.c.number)
    )
    return all_rows(result)


async def queue_investigation(conn: Connection, incident_id: int, number: int, now: float) -> bool:
    """Ask for the episode's investigation; True when this call did (it was ``none``), False otherwise."""
    result = await conn.execute(
        update(episodes)
        .where(episodes.c.incident_id == incident_id, episodes.c.number == number, episodes.c.investigation == "none")
        .values(investigation="queued", queued_at=now)
    )
    return bool(result.rowcount)


async def set_resolution(
    conn: Connection, incident_id: int, number: int, resolved_at: float | None, resolution: str | None
) -> None:
    """Record how the episode ended (``alerts`` or ``manual``, at ``resolved_at``), or clear it (None, None)."""
    await conn.execute(
        update(episodes)
        .where(episodes.c.incident_id == incident_id, episodes.c.number == number)
        .values(resolved_at=resolved_at, resolution=resolution)
    )


async def claim(conn: Connection, replica_id: str, now: float, lease_s: float, limit: int) -> list[Row]:
    """Claim up to ``limit`` investigations for ``replica_id``: queued ones, oldest first, and running ones
    whose lease passed (taken over). An incident with a live claim is not claimed twice.

    Returns the claimed rows as they were before the claim (``investigation`` ``running`` = a takeover,
    ``claimed_by`` = the previous holder), with ``attempts`` already counting this claim.
    """
    other = episodes.alias("other")
    live_claim = exists().where(
        other.c.incident_id == episodes.c.incident_id,
        other.c.id != episodes.c.id,
        other.c.investigation == "running",
        other.c.lease_until >= now,
    )
    due = or_(
        episodes.c.investigation == "queued",
        and_(episodes.c.investigation == "running", episodes.c.lease_until < now),
    )
    query = (
        select(episodes)
        .where(due, ~live_claim)
        .order_by(episodes.c.queued_at, episodes.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=episodes)
    )
    rows = [dict(row._mapping) for row in await conn.execute(query)]
    for row in rows:
        await conn.execute(
            update(episodes)
            .where(episodes.c.id == row["id"])
            .values(
                investigation="running",
                claimed_by=replica_id,
                lease_until=now + lease_s,
                attempts=episodes.c.attempts + 1,
            )
        )
        row["attempts"] += 1
    return rows


async def claim_one(conn: Connection, episode_id: int, replica_id: str, now: float, lease_s: float) -> bool:
    """Claim this episode's investigation whatever its state (an explicit request); True when claimed."""
    result = await conn.execute(
        update(episodes)
        .where(episodes.c.id == episode_id)
        .values(
            investigation="running",
            claimed_by=replica_id,
            lease_until=now + lease_s,
            attempts=episodes.c.attempts + 1,
            queued_at=func.coalesce(episodes.c.queued_at, now),
        )
    )
    return bool(result.rowcount)


async def renew(conn: Connection, episode_ids: list[int], replica_id: str, lease_until: float) -> set[int]:
    """Extend the leases ``replica_id`` still holds among ``episode_ids``; returns the ids still held."""
    if not episode_ids:
        return set()
    held = episodes.c.id.in_(episode_ids), episodes.c.claimed_by == replica_id, episodes.c.investigation == "running"
    await conn.execute(update(episodes).where(*held).values(lease_until=lease_until))
    return {int(row.id) for row in await conn.execute(select(episodes.c.id).where(*held))}


async def finish(conn: Connection, episode_id: int, replica_id: str, outcome: str, now: float) -> bool:
    """Close the investigation ``replica_id`` holds as ``done`` or ``failed``; False when the claim was lost
    (another replica took it over): the caller then discards its result (fencing)."""
    result = await conn.execute(
        update(episodes)
        .where(episodes.c.id == episode_id, episodes.c.claimed_by == replica_id, episodes.c.investigation == "running")
        .values(investigation=outcome, finished_at=now, lease_until=None)
    )
    return bool(result.rowcount)


async def release(conn: Connection, replica_id: str, episode_ids: list[int] | None = None) -> int:
    """Hand running investigations of ``replica_id`` back to the queue (all, or ``episode_ids``): at shutdown,
    and at start for claims a previous process with the same replica id left. Returns how many."""
    query = update(episodes).where(episodes.c.claimed_by == replica_id, episodes.c.investigation == "running")
    if episode_ids is not None:
        query = query.where(episodes.c.id.in_(episode_ids))
    result = await conn.execute(query.values(investigation="queued", lease_until=None))
    return int(result.rowcount)


async def backlog(conn: Connection, now: float) -> Row:
    """``{"queued", "running", "expired_leases", "oldest_queued_at"}`` over all incidents."""
    result = await conn.execute(
        select(
            func.count().filter(episodes.c.investigation == "queued").label("queued"),
            func.count().filter(episodes.c.investigation == "running").label("running"),
            func.count()
            .filter(episodes.c.investigation == "running", episodes.c.lease_until < now)
            .label("expired_leases"),
            func.min(episodes.c.queued_at).filter(episodes.c.investigation == "queued").label("oldest_queued_at"),
        ).where(CLAIMABLE)
    )
    row = first_row(result)
    assert row is not None
    return row
