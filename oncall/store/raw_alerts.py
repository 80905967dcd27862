"""``raw_alerts``: every body POSTed to ``/alerts`` (a valid one whole, an invalid one as its first KiB with
its hash, size and reason), committed before it is applied; deleted after the retention period."""

from __future__ import annotations

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from oncall.store.database import storable
from oncall.store.schema import raw_alerts


async def add(
    conn: AsyncConnection,
    body: str,
    sha256: str,
    received_at: float,
    body_bytes: int | None = None,
    error: str | None = None,
) -> int:
    """Store a body (``valid=0`` until applied) and return its id.

    Args:
        body: the text kept: the whole body, or the first KiB of an invalid one.
        sha256: hex digest of the exact bytes received; ``body_bytes``: their number.
        error: why the body was rejected (an invalid body), else None.
    """
    result = await conn.execute(
        insert(raw_alerts)
        .values(
            received_at=received_at,
            body_sha256=sha256,
            body=storable(body),
            body_bytes=body_bytes,
            valid=0,
            error=storable(error) if error else None,
        )
        .returning(raw_alerts.c.id)
    )
    return int(result.scalar_one())


async def delete_received_before(conn: AsyncConnection, before: float) -> int:
    """Delete the bodies received before ``before`` (epoch seconds); returns how many."""
    result = await conn.execute(delete(raw_alerts).where(raw_alerts.c.received_at < before))
    return int(result.rowcount)


async def set_error(conn: AsyncConnection, raw_id: int, error: str) -> None:
    """Record why a body was rejected or failed to apply."""
    await conn.execute(update(raw_alerts).where(raw_alerts.c.id == raw_id).values(error=storable(error)))


async def mark_applied(conn: AsyncConnection, raw_id: int, group_key: str, incident_id: int | None) -> None:
    """Mark a body valid and applied to ``incident_id`` (its group key's incident)."""
    await conn.execute(
        update(raw_alerts)
        .where(raw_alerts.c.id == raw_id)
        .values(valid=1, group_key=storable(group_key), incident_id=incident_id)
    )


async def applied_copy_incident(conn: AsyncConnection, sha256: str, other_than: int) -> tuple[bool, int | None]:
    """Whether a byte-identical body (same ``sha256``) other than ``other_than`` was already applied,
    and the incident it was applied to."""
    result = await conn.execute(
        select(raw_alerts.c.incident_id)
        .where(raw_alerts.c.body_sha256 == sha256, raw_alerts.c.valid == 1, raw_alerts.c.id != other_than)
        .limit(1)
    )
    row = result.first()
    return (row is not None, row.incident_id if row is not None else None)
