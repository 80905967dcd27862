"""``messages``: the WhatsApp conversation the incident page shows, inbound (``in``) and outbound (``out``;
an outbound row mirrors the delivery state of its ``outbox`` row)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update

from oncall.store.database import Connection, storable
from oncall.store.rows import Row, all_rows, insert_ignoring_conflicts
from oncall.store.schema import messages


async def queue_outbound(
    conn: Connection,
    *,
    incident_id: int | None,
    channel: str,
    to_number: str,
    from_number: str | None,
    body: str,
    now: float,
) -> int:
    """Insert one outbound part as ``queued`` and return its id."""
    result = await conn.execute(
        insert(messages)
        .values(
            incident_id=incident_id,
            direction="out",
            channel=channel,
            to_number=to_number,
            from_number=from_number,
            body=storable(body),
            status="queued",
            created_at=now,
            updated_at=now,
        )
        .returning(messages.c.id)
    )
    return int(result.scalar_one())


async def finish_outbound(
    conn: Connection,
    message_id: int,
    *,
    status: str,
    attempts: int,
    now: float,
    error: str | None = None,
    message_sid: str | None = None,
) -> None:
    """Store the delivery outcome of an outbound part (``sent``/``failed``), keeping an earlier SID."""
    values: dict[str, Any] = {"status": status, "attempts": attempts, "error": error, "updated_at": now}
    if message_sid is not None:
        values["message_sid"] = message_sid
    await conn.execute(update(messages).where(messages.c.id == message_id).values(**values))


async def add_inbound(
    conn: Connection, *, from_number: str, to_number: str | None, body: str, message_sid: str, now: float
) -> bool:
    """Store an inbound message; False when its ``message_sid`` was already stored (a Twilio retry)."""
    result = await conn.execute(
        insert_ignoring_conflicts(conn, messages).values(
            direction="in",
            channel="twilio",
            to_number=storable(to_number) if to_number else None,
            from_number=storable(from_number),
            body=storable(body),
            message_sid=storable(message_sid),
            status="received",
            attempts=0,
            created_at=now,
            updated_at=now,
        )
    )
    return bool(result.rowcount)


async def link_inbound(conn: Connection, message_sid: str, incident_id: int) -> None:
    """Attach an inbound message to the incident it was about."""
    await conn.execute(update(messages).where(messages.c.message_sid == message_sid).values(incident_id=incident_id))


async def for_incident(conn: Connection, incident_id: int) -> list[Row]:
    """The incident's messages, both directions, oldest first."""
    result = await conn.execute(select(messages).where(messages.c.incident_id == incident_id).order_by(messages.c.id))
    return all_rows(result)
