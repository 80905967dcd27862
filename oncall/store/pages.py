"""``pages``: the escalation chain of an incident episode, one row per level.

A row is ``scheduled`` (its timer: page this level at ``due_at`` unless the chain stops), then
``paged`` (``paged_at``, ``recipients``, ``reason``) or ``cancelled`` (``stop_reason``: acknowledged,
resolved, ...). ``(incident_id, episode, level)`` is unique, so a level exists, and is paged, once.

Claiming due rows: on PostgreSQL ``SELECT ... FOR UPDATE SKIP LOCKED`` lets several agent replicas
claim different rows at once (a row one replica holds is skipped by the others, and the
``status = 'scheduled'`` guard of ``mark_paged`` refuses a row another replica already paged);
on SQLite the write transaction (``BEGIN IMMEDIATE``) serialises claimers.
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import func, select, update

from oncall.store.database import Connection
from oncall.store.rows import Row, all_rows, insert_ignoring_conflicts
from oncall.store.schema import incidents, pages

PageStatus = Literal["scheduled", "paged", "cancelled"]


async def schedule(
    conn: Connection,
    *,
    incident_id: int,
    episode: int,
    level: int,
    due_at: float,
    episode_started_at: float,
    service: str | None,
    team: str | None,
    policy: str | None,
    now: float,
) -> int | None:
    """Insert the ``scheduled`` timer of one level (epoch s); its id, or None when the level already has a row."""
    result = await conn.execute(
        insert_ignoring_conflicts(conn, pages)
        .values(
            incident_id=incident_id,
            episode=episode,
            level=level,
            status="scheduled",
            due_at=due_at,
            episode_started_at=episode_started_at,
            service=service,
            team=team,
            policy=policy,
            recipients=[],
            created_at=now,
        )
        .returning(pages.c.id)
    )
    row = result.first()
    return int(row.id) if row is not None else None


async def claim_due(conn: Connection, now: float, limit: int) -> list[Row]:
    """Up to ``limit`` ``scheduled`` rows due at ``now`` (epoch s), oldest due first, locked for this
    transaction (PostgreSQL: rows other transactions hold are skipped), each with its incident's
    ``incident_status`` and ``acknowledged_at``."""
    query = (
        select(pages, incidents.c.status.label("incident_status"), incidents.c.acknowledged_at)
        .join(incidents, incidents.c.id == pages.c.incident_id)
        .where(pages.c.status == "scheduled", pages.c.due_at <= now)
        .order_by(pages.c.due_at, pages.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=pages)
    )
    return all_rows(await conn.execute(query))


async def mark_paged(
    conn: Connection, page_id: int, *, recipients: list[dict[str, Any]], reason: str, now: float
) -> bool:
    """A ``scheduled`` row becomes ``paged`` at ``now`` with its recipients; False when it was not scheduled."""
    result = await conn.execute(
        update(pages)
        .where(pages.c.id == page_id, pages.c.status == "scheduled")
        .values(status="paged", paged_at=now, recipients=recipients, reason=reason)
    )
    return bool(result.rowcount)


async def cancel(conn: Connection, page_id: int, reason: str, now: float) -> bool:
    """A ``scheduled`` row becomes ``cancelled`` with ``reason``; False when it was not scheduled."""
    result = await conn.execute(
        update(pages)
        .where(pages.c.id == page_id, pages.c.status == "scheduled")
        .values(status="cancelled", stopped_at=now, stop_reason=reason)
    )
    return bool(result.rowcount)


async def cancel_open(conn: Connection, incident_id: int, reason: str, now: float, episode: int | None) -> int:
    """Cancel the incident's ``scheduled`` rows (of ``episode`` only when given); returns how many."""
    query = update(pages).where(pages.c.incident_id == incident_id, pages.c.status == "scheduled")
    if episode is not None:
        query = query.where(pages.c.episode == episode)
    result = await conn.execute(query.values(status="cancelled", stopped_at=now, stop_reason=reason))
    return int(result.rowcount)


async def for_incident(conn: Connection, incident_id: int) -> list[Row]:
    """The incident's rows by episode then level (``recipients`` decoded)."""
    result = await conn.execute(
        select(pages).where(pages.c.incident_id == incident_id).order_by(pages.c.episode, pages.c.level)
    )
    return all_rows(result)


async def next_due_at(conn: Connection) -> float | None:
    """When the earliest ``scheduled`` level is due (epoch s), or None when no level is armed."""
    result = await conn.execute(select(func.min(pages.c.due_at)).where(pages.c.status == "scheduled"))
    value = result.scalar()
    return float(value) if value is not None else None


async def paged_numbers(conn: Connection, incident_id: int, episode: int) -> list[str]:
    """The WhatsApp numbers paged for the episode (every ``paged`` level), in paging order, each once."""
    result = await conn.execute(
        select(pages.c.recipients)
        .where(pages.c.incident_id == incident_id, pages.c.episode == episode, pages.c.status == "paged")
        .order_by(pages.c.level)
    )
    numbers = [str(r["whatsapp"]) for row in result for r in (row.recipients or []) if r.get("whatsapp")]
    return list(dict.fromkeys(numbers))
