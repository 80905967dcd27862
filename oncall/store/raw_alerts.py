"""``raw_alerts``: every body POSTed to ``/alerts`` (a valid one whole, an invalid one as its first KiB with
its hash, size and reason), committed before it is parsed or applied; deleted after the retention period.

A row is applied when ``valid = 1``; a row with ``valid = 0`` and no ``error`` was stored but not applied
(the process died in between, or is applying it right now): ``claim_unapplied`` hands the ones older
than a grace period to the replay at start and to any replica afterwards.
"""

from __future__ import annotations

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from oncall.store.database import storable
from oncall.store.rows import Row, first_row
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


async def mark_applied(conn: AsyncConnection, raw_id: int, group_key: str, incident_id: int | None) -> bool:
    """Mark a body valid and applied to ``incident_id`` (its group key's incident) unless it was applied
    already (by a replay, or another replica's); True when this call marked it."""
    result = await conn.execute(
        update(raw_alerts)
        .where(raw_alerts.c.id == raw_id, raw_alerts.c.valid == 0)
        .values(valid=1, group_key=storable(group_key), incident_id=incident_id)
    )
    return bool(result.rowcount)


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


async def claim_unapplied(conn: AsyncConnection, received_before: float) -> Row | None:
    """The oldest stored-but-unapplied body received before ``received_before`` (epoch s), locked for the
    transaction (``FOR UPDATE SKIP LOCKED``: two replicas never replay the same row), or None."""
    result = await conn.execute(
        select(raw_alerts.c.id, raw_alerts.c.body, raw_alerts.c.body_sha256, raw_alerts.c.received_at)
        .where(raw_alerts.c.valid == 0, raw_alerts.c.error.is_(None), raw_alerts.c.received_at < received_before)
        .order_by(raw_alerts.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return first_row(result)
