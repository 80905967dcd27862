"""``postmortems``: the Markdown post-mortem draft of an incident episode (one per episode, rewritten
when the episode is drafted again)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from oncall.store.database import Connection, storable
from oncall.store.rows import Row, first_row
from oncall.store.schema import postmortems


async def save(conn: Connection, incident_id: int, episode: int, markdown: str, now: float) -> None:
    """Store the draft of ``(incident_id, episode)``, replacing an earlier one (``created_at`` kept)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(postmortems).values(
        incident_id=incident_id, episode=episode, markdown=storable(markdown), created_at=now, updated_at=now
    )
    statement = statement.on_conflict_do_update(
        index_elements=[postmortems.c.incident_id, postmortems.c.episode],
        set_={"markdown": statement.excluded.markdown, "updated_at": statement.excluded.updated_at},
    )
    await conn.execute(statement)


async def latest(conn: Connection, incident_id: int) -> Row | None:
    """The incident's newest draft (highest episode): ``id, incident_id, episode, markdown, created_at,
    updated_at``, or None."""
    result = await conn.execute(
        select(postmortems)
        .where(postmortems.c.incident_id == incident_id)
        .order_by(postmortems.c.episode.desc())
        .limit(1)
    )
    return first_row(result)
