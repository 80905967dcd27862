"""``investigations`` (one row per engine run) and ``tool_calls`` (the audit trail of every tool call)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, or_, select, update

from oncall.store.database import Connection, storable
from oncall.store.rows import Row, all_rows
from oncall.store.schema import investigations, tool_calls


async def start(
    conn: Connection,
    incident_id: int,
    engine: str,
    started_at: float,
    *,
    episode: int | None = None,
    replica_id: str | None = None,
) -> int:
    """Insert a ``running`` engine run (of the incident's ``episode``, run by ``replica_id``) and return its id."""
    result = await conn.execute(
        insert(investigations)
        .values(
            incident_id=incident_id,
            started_at=started_at,
            status="running",
            engine=engine,
            episode=episode,
            replica_id=replica_id,
        )
        .returning(investigations.c.id)
    )
    return int(result.scalar_one())


async def finish(
    conn: Connection,
    investigation_id: int,
    status: str,
    finished_at: float,
    *,
    error: str | None = None,
    rounds: int = 0,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
) -> None:
    """Close an engine run: ``status`` is ``done``, ``failed`` or ``interrupted``."""
    await conn.execute(
        update(investigations)
        .where(investigations.c.id == investigation_id)
        .values(
            finished_at=finished_at,
            status=status,
            error=storable(error) if error else None,
            rounds=rounds,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )
    )


async def interrupt_running(
    conn: Connection,
    finished_at: float,
    reason: str,
    *,
    replica_id: str | None = None,
    incident_id: int | None = None,
) -> int:
    """Close ``running`` engine runs as ``interrupted``: those of ``replica_id`` (and runs from before replicas
    were recorded) at its start, or those of ``incident_id`` when its claim is taken over. Returns how many."""
    query = update(investigations).where(investigations.c.status == "running")
    if replica_id is not None:
        query = query.where(or_(investigations.c.replica_id == replica_id, investigations.c.replica_id.is_(None)))
    if incident_id is not None:
        query = query.where(investigations.c.incident_id == incident_id)
    result = await conn.execute(query.values(status="interrupted", finished_at=finished_at, error=storable(reason)))
    return int(result.rowcount)


async def for_incident(conn: Connection, incident_id: int) -> list[Row]:
    """The incident's engine runs, oldest first."""
    result = await conn.execute(
        select(investigations).where(investigations.c.incident_id == incident_id).order_by(investigations.c.id)
    )
    return all_rows(result)


async def add_tool_call(conn: Connection, values: dict[str, Any]) -> None:
    """Append one tool call to the audit trail (``values``: the ``tool_calls`` columns but ``id``)."""
    clean = {key: storable(value) if isinstance(value, str) else value for key, value in values.items()}
    await conn.execute(insert(tool_calls).values(**clean))


async def tool_calls_for(conn: Connection, incident_id: int, tool: str | None = None) -> list[Row]:
    """The incident's tool calls oldest first (only successful calls of ``tool`` when given)."""
    query = select(tool_calls).where(tool_calls.c.incident_id == incident_id)
    if tool is not None:
        query = query.where(tool_calls.c.tool == tool, tool_calls.c.ok == 1)
    return all_rows(await conn.execute(query.order_by(tool_calls.c.id)))
