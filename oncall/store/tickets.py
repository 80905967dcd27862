"""``tickets``: Jira issues created for incidents (``queued`` while the outbox creates them), drafts kept
when Jira is not configured, and failures."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update

from oncall.store.database import Connection
from oncall.store.rows import Row, all_rows, first_row
from oncall.store.schema import tickets


async def add(conn: Connection, values: dict[str, Any]) -> int:
    """Insert a ticket row (``values``: its columns but ``id``) and return its id."""
    result = await conn.execute(insert(tickets).values(**values).returning(tickets.c.id))
    return int(result.scalar_one())


async def update_fields(conn: Connection, ticket_id: int, **values: Any) -> None:
    """Set columns of one ticket row (its outcome once the outbox delivered or gave up its creation)."""
    await conn.execute(update(tickets).where(tickets.c.id == ticket_id).values(**values))


async def latest(conn: Connection, incident_id: int, statuses: tuple[str, ...] | None = None) -> Row | None:
    """The incident's newest ticket row (only with one of ``statuses`` when given), or None."""
    query = select(tickets).where(tickets.c.incident_id == incident_id)
    if statuses is not None:
        query = query.where(tickets.c.status.in_(statuses))
    return first_row(await conn.execute(query.order_by(tickets.c.id.desc()).limit(1)))


async def for_incident(conn: Connection, incident_id: int) -> list[Row]:
    """The incident's ticket rows, oldest first."""
    result = await conn.execute(select(tickets).where(tickets.c.incident_id == incident_id).order_by(tickets.c.id))
    return all_rows(result)
