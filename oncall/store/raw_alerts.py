"""``raw_alerts``: every body POSTed to ``/alerts`` (a valid one whole, an invalid one as its first KiB with
its hash, size and reason), committed before it is parsed or applied; deleted after the retention period.

A row is applied when ``valid = 1`` (``outcome`` ``accepted`` or ``duplicate``, at ``applied_at``); a row
with ``valid = 0`` and no ``error`` is stored but not applied yet: ``claim_unapplied`` hands it to the
applier of the replica that received it at once, and to any replica once it is older than a grace period
(the receiving process died).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, or_, select, update

from oncall.store.database import Connection, storable
from oncall.store.rows import Row, first_row
from oncall.store.schema import raw_alerts


async def add_invalid(
    conn: Connection, head: str, sha256: str, received_at: float, body_bytes: int, reason: str
) -> int:
    """Store a refused body as its first KiB (``head``), the SHA-256 hex digest and number of the bytes
    received and why it was refused (outcome ``invalid``; never applied); returns its id."""
    result = await conn.execute(
        insert(raw_alerts)
        .values(
            received_at=received_at,
            body_sha256=sha256,
            body=storable(head),
            body_bytes=body_bytes,
            valid=0,
            error=storable(reason),
            outcome="invalid",
        )
        .returning(raw_alerts.c.id)
    )
    return int(result.scalar_one())


@dataclass(frozen=True)
class StoredBody:
    """A valid body to store: its text (redacted, cut past ``KEPT_VALID_BYTES``), the SHA-256 hex digest
    and number of the bytes received, when (epoch s) and by which replica (``AGENT_REPLICA_ID``).
    ``duplicate_of_group``: the group key when the body is byte-identical to one already stored (it is
    stored applied, outcome ``duplicate``: applying it could change nothing), else None."""

    body: str
    sha256: str
    body_bytes: int
    received_at: float
    received_by: str
    duplicate_of_group: str | None = None


async def add_received(conn: Connection, bodies: Sequence[StoredBody]) -> list[int]:
    """Store valid bodies (``valid=0`` until applied; a duplicate applied at once) inside a write transaction;
    returns their ids in order.

    PostgreSQL: one ``INSERT ... RETURNING`` whose rows SQLAlchemy puts back in parameter order. SQLite
    has no INSERT form that ties new rowids to the parameter order, so SQLAlchemy would run one INSERT per
    body there ("insertmanyvalues", ``sort_by_parameter_order``; SQLAlchemy 2.0 docs, "Correlating
    RETURNING rows to parameter sets"): the rows go in as one ``executemany`` instead, and since this
    transaction holds SQLite's write lock (``BEGIN IMMEDIATE``) the rows above the largest id read just
    before are exactly these, each given "one larger than the largest ROWID" in insertion order (SQLite,
    "ROWIDs and the INTEGER PRIMARY KEY").

    Raises:
        RuntimeError: SQLite stored another number of rows than bodies (a writer outside the lock).
    """
    values = [
        {
            "received_at": b.received_at,
            "body_sha256": b.sha256,
            "body": storable(b.body),
            "body_bytes": b.body_bytes,
            "valid": 0 if b.duplicate_of_group is None else 1,
            "received_by": b.received_by,
            "group_key": None if b.duplicate_of_group is None else storable(b.duplicate_of_group),
            "outcome": None if b.duplicate_of_group is None else "duplicate",
            "applied_at": None if b.duplicate_of_group is None else b.received_at,
        }
        for b in bodies
    ]
    if conn.dialect.name != "sqlite":
        result = await conn.execute(insert(raw_alerts).returning(raw_alerts.c.id, sort_by_parameter_order=True), values)
        return [int(row.id) for row in result]
    before = (await conn.execute(select(func.coalesce(func.max(raw_alerts.c.id), 0)))).scalar_one()
    await conn.execute(insert(raw_alerts), values)
    ids = (await conn.execute(select(raw_alerts.c.id).where(raw_alerts.c.id > before).order_by(raw_alerts.c.id))).all()
    if len(ids) != len(values):
        raise RuntimeError(f"stored {len(ids)} webhook bodies for {len(values)}: another writer inserted meanwhile")
    return [int(row.id) for row in ids]


async def get(conn: Connection, raw_id: int) -> Row | None:
    """What became of one stored body: when and by whom received, whether applied (``valid``, ``outcome``,
    ``applied_at``, ``incident_id``: for a duplicate stored at receipt, the incident its first copy was
    applied to) or why not (``error``); None when there is no such row."""
    c, first = raw_alerts.c, raw_alerts.alias("first_copy")
    first_incident = (
        select(first.c.incident_id)
        .where(first.c.body_sha256 == c.body_sha256, first.c.incident_id.is_not(None))
        .order_by(first.c.id)
        .limit(1)
        .scalar_subquery()
    )
    result = await conn.execute(
        select(
            c.id,
            c.received_at,
            c.received_by,
            c.valid,
            c.outcome,
            c.applied_at,
            func.coalesce(c.incident_id, first_incident).label("incident_id"),
            c.error,
            c.body_bytes,
        ).where(c.id == raw_id)
    )
    return first_row(result)


async def delete_received_before(conn: Connection, before: float) -> int:
    """Delete the bodies received before ``before`` (epoch seconds); returns how many."""
    result = await conn.execute(delete(raw_alerts).where(raw_alerts.c.received_at < before))
    return int(result.rowcount)


async def set_error(conn: Connection, raw_id: int, error: str) -> None:
    """Record why a valid body failed to apply (outcome ``failed``; it is not tried again)."""
    await conn.execute(
        update(raw_alerts).where(raw_alerts.c.id == raw_id).values(error=storable(error), outcome="failed")
    )


async def mark_applied(
    conn: Connection, raw_id: int, group_key: str, incident_id: int | None, outcome: str, applied_at: float
) -> bool:
    """Mark a body valid and applied to ``incident_id`` (its group key's incident) with ``outcome``
    (``accepted``/``duplicate``) at ``applied_at`` (epoch s), unless it was applied already (by another
    replica's applier); True when this call marked it."""
    result = await conn.execute(
        update(raw_alerts)
        .where(raw_alerts.c.id == raw_id, raw_alerts.c.valid == 0)
        .values(valid=1, group_key=storable(group_key), incident_id=incident_id, outcome=outcome, applied_at=applied_at)
    )
    return bool(result.rowcount)


async def applied_copy_incident(conn: Connection, sha256: str, other_than: int) -> tuple[bool, int | None]:
    """Whether a byte-identical body (same ``sha256``) other than ``other_than`` was already applied
    (outcome ``accepted``: a copy the intake stored as ``duplicate`` may be younger than its original's
    application), and the incident it was applied to."""
    c = raw_alerts.c
    result = await conn.execute(
        select(c.incident_id)
        .where(c.body_sha256 == sha256, c.valid == 1, c.outcome == "accepted", c.id != other_than)
        .limit(1)
    )
    row = result.first()
    return (row is not None, row.incident_id if row is not None else None)


async def claim_unapplied(conn: Connection, replica_id: str, received_before: float) -> Row | None:
    """The oldest stored-but-unapplied body that ``replica_id`` received, or that anyone received before
    ``received_before`` (epoch s), locked for the transaction (``FOR UPDATE SKIP LOCKED``: two replicas
    never apply the same row), or None: ``{"id", "body_sha256", "received_at", "received_by"}``, without the
    body (megabytes for a large group; ``stored_text`` reads it when the notification must be parsed again).
    Reads the partial index ``raw_alerts_unapplied``."""
    c = raw_alerts.c
    result = await conn.execute(
        select(c.id, c.body_sha256, c.received_at, c.received_by)
        .where(c.valid == 0, c.error.is_(None), or_(c.received_by == replica_id, c.received_at < received_before))
        .order_by(c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return first_row(result)


async def stored_text(conn: Connection, raw_id: int) -> str | None:
    """The stored text of one body (redacted, cut past ``KEPT_VALID_BYTES``), or None when there is no such row."""
    return (await conn.execute(select(raw_alerts.c.body).where(raw_alerts.c.id == raw_id))).scalar_one_or_none()
