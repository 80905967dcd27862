"""``outbox``: every outgoing WhatsApp message and Jira call, written in the transaction of the state change
that causes it, then delivered by an outbox worker (``oncall.channels.outbox``) under a lease.

A row: ``event_key`` (unique: one row per (incident, event), e.g. ``incident:7:episode:1:diagnosis``),
``channel`` (``whatsapp``, ``jira``), ``operation`` (``notice``, ``message``, ``create_issue``), the
``payload`` the channel needs, and the delivery state: ``status`` ``pending`` -> ``delivered`` |
``failed`` (a permanent error) | ``expired`` (undelivered ``OUTBOX_EXPIRY_S`` after ``created_at``); ``attempts``,
``next_attempt_at`` (epoch s), ``claimed_by``/``lease_until`` while a replica delivers it, ``last_error``.

Order: the rows of one incident and channel are delivered one after the other, oldest first (a
resolved notice never overtakes the diagnosis). Claims use ``FOR UPDATE SKIP LOCKED`` on PostgreSQL;
SQLite serialises writers (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, exists, func, or_, select, update

from oncall.store.database import Connection, storable
from oncall.store.rows import Row, all_rows, insert_ignoring_conflicts
from oncall.store.schema import outbox


async def add(
    conn: Connection,
    *,
    event_key: str,
    channel: str,
    operation: str,
    incident_id: int | None,
    payload: dict[str, Any],
    now: float,
) -> int | None:
    """Insert a ``pending`` row due now; returns its id, or None when ``event_key`` exists (already written)."""
    result = await conn.execute(
        insert_ignoring_conflicts(conn, outbox)
        .values(
            event_key=storable(event_key),
            channel=channel,
            operation=operation,
            incident_id=incident_id,
            payload=payload,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        .returning(outbox.c.id)
    )
    row = result.first()
    return int(row.id) if row is not None else None


async def set_payload(conn: Connection, outbox_id: int, payload: dict[str, Any]) -> None:
    """Replace a row's payload (e.g. to link the ``messages`` row written after it)."""
    await conn.execute(update(outbox).where(outbox.c.id == outbox_id).values(payload=payload))


def _heads() -> Any:
    """Pending rows that wait for no earlier pending row of their incident and channel (FIFO per incident)."""
    earlier = outbox.alias("earlier")
    waits_for_earlier = exists().where(
        earlier.c.incident_id == outbox.c.incident_id,
        earlier.c.channel == outbox.c.channel,
        earlier.c.status == "pending",
        earlier.c.id < outbox.c.id,
    )
    return and_(outbox.c.status == "pending", ~waits_for_earlier)


async def claim_due(conn: Connection, replica_id: str, now: float, lease_s: float, limit: int) -> list[Row]:
    """Claim up to ``limit`` due rows for ``replica_id`` (lease ``lease_s`` seconds), oldest first; only the
    oldest pending row of each (incident, channel) is due. Returns the rows with ``attempts`` counting this try."""
    query = (
        select(outbox)
        .where(
            _heads(),
            outbox.c.next_attempt_at <= now,
            or_(outbox.c.lease_until.is_(None), outbox.c.lease_until < now),
        )
        .order_by(outbox.c.next_attempt_at, outbox.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=outbox)
    )
    rows = all_rows(await conn.execute(query))
    for row in rows:
        await conn.execute(
            update(outbox)
            .where(outbox.c.id == row["id"])
            .values(claimed_by=replica_id, lease_until=now + lease_s, attempts=outbox.c.attempts + 1)
        )
        row["attempts"] += 1
    return rows


def _held(outbox_id: int, replica_id: str) -> Any:
    return and_(outbox.c.id == outbox_id, outbox.c.claimed_by == replica_id, outbox.c.status == "pending")


async def mark_delivered(conn: Connection, outbox_id: int, replica_id: str, now: float) -> bool:
    """The row ``replica_id`` holds was delivered; False when its claim was lost (fencing: write nothing else)."""
    result = await conn.execute(
        update(outbox)
        .where(_held(outbox_id, replica_id))
        .values(status="delivered", delivered_at=now, delivered_by=replica_id, lease_until=None, last_error=None)
    )
    return bool(result.rowcount)


async def retry_later(conn: Connection, outbox_id: int, replica_id: str, error: str, next_attempt_at: float) -> bool:
    """A transient failure: try again at ``next_attempt_at`` (epoch s); False when the claim was lost."""
    result = await conn.execute(
        update(outbox)
        .where(_held(outbox_id, replica_id))
        .values(next_attempt_at=next_attempt_at, lease_until=None, last_error=storable(error))
    )
    return bool(result.rowcount)


async def give_up(conn: Connection, outbox_id: int, replica_id: str, status: str, error: str) -> bool:
    """Stop delivering: ``status`` ``failed`` (permanent error) or ``expired``; False when the claim was lost."""
    result = await conn.execute(
        update(outbox).where(_held(outbox_id, replica_id)).values(status=status, lease_until=None, last_error=error)
    )
    return bool(result.rowcount)


async def mark_warned(conn: Connection, outbox_id: int) -> bool:
    """Flag that the "still undelivered" warning was recorded; True the first time only."""
    result = await conn.execute(update(outbox).where(outbox.c.id == outbox_id, outbox.c.warned == 0).values(warned=1))
    return bool(result.rowcount)


async def release(conn: Connection, replica_id: str) -> int:
    """Drop the leases ``replica_id`` holds (shutdown, or start after a crash): the rows are due again."""
    result = await conn.execute(
        update(outbox)
        .where(outbox.c.claimed_by == replica_id, outbox.c.status == "pending", outbox.c.lease_until.is_not(None))
        .values(lease_until=None)
    )
    return int(result.rowcount)


UNDELIVERED = ("pending", "failed", "expired")
"""Outbox statuses of rows not delivered (``backlog`` counts each)."""


async def backlog(conn: Connection) -> Row:
    """``{"pending", "failed", "expired", "oldest_pending_at"}`` over the whole outbox; reads only the rows
    not delivered (index ``outbox_due``), however many were delivered before."""
    result = await conn.execute(
        select(outbox.c.status, func.count().label("n"), func.min(outbox.c.created_at).label("oldest"))
        .where(outbox.c.status.in_(UNDELIVERED))
        .group_by(outbox.c.status)
    )
    by_status = {row.status: row for row in result}
    state: Row = {status: int(by_status[status].n) if status in by_status else 0 for status in UNDELIVERED}
    state["oldest_pending_at"] = by_status["pending"].oldest if "pending" in by_status else None
    return state


async def next_due_at(conn: Connection) -> float | None:
    """When the next row can be claimed (epoch s: its next attempt, or the end of the lease someone holds),
    or None when nothing is pending."""
    ready = case(
        (outbox.c.lease_until > outbox.c.next_attempt_at, outbox.c.lease_until), else_=outbox.c.next_attempt_at
    )
    value = (await conn.execute(select(func.min(ready)).where(_heads()))).scalar_one()
    return float(value) if value is not None else None


async def for_incident(conn: Connection, incident_id: int) -> list[Row]:
    """The incident's outbox rows oldest first, without payloads (the messages and tickets show those)."""
    columns = [column for column in outbox.c if column.name != "payload"]
    result = await conn.execute(select(*columns).where(outbox.c.incident_id == incident_id).order_by(outbox.c.id))
    return all_rows(result)
