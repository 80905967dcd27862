"""``incidents`` and ``incident_alerts``: one incident per Alertmanager group key, its alerts by fingerprint.

Only ``oncall.incidents`` (ingest and the lifecycle) writes these tables; everything else reads.
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import exists, func, insert, select, update

from oncall.store.database import Connection
from oncall.store.rows import Row, all_rows, first_row, insert_ignoring_conflicts
from oncall.store.schema import incident_alerts, incidents, messages

IncidentStatus = Literal["firing", "resolved"]
InvestigationStatus = Literal["pending", "running", "done", "failed", "interrupted"]


async def get(conn: Connection, incident_id: int) -> Row | None:
    """The incident row (JSON columns decoded; ``diagnosis`` a dict or None), or None."""
    return first_row(await conn.execute(select(incidents).where(incidents.c.id == incident_id)))


async def exists_id(conn: Connection, incident_id: int) -> bool:
    """True when the incident exists."""
    result = await conn.execute(select(incidents.c.id).where(incidents.c.id == incident_id))
    return result.first() is not None


async def by_group_key(conn: Connection, group_key: str) -> Row | None:
    """The incident of ``group_key``, locked for the transaction on PostgreSQL (``FOR UPDATE``)."""
    result = await conn.execute(select(incidents).where(incidents.c.group_key == group_key).with_for_update())
    return first_row(result)


async def lock(conn: Connection, incident_id: int) -> Row | None:
    """The incident row locked for the transaction (PostgreSQL ``FOR UPDATE``; SQLite writers are serialised)."""
    return first_row(await conn.execute(select(incidents).where(incidents.c.id == incident_id).with_for_update()))


async def add_if_absent(conn: Connection, values: dict[str, Any]) -> int | None:
    """Insert an incident (``values``: its columns) unless its group key has one (``INSERT ... ON CONFLICT DO
    NOTHING``: concurrent replicas never create two); returns the new id, or None when it existed."""
    result = await conn.execute(insert_ignoring_conflicts(conn, incidents).values(**values).returning(incidents.c.id))
    row = result.first()
    return int(row.id) if row is not None else None


async def update_fields(conn: Connection, incident_id: int, **values: Any) -> int:
    """Set columns of one incident; returns the number of rows changed (0 or 1).

    Status columns (``status``, ``investigation_status``, ``acknowledged_*``) are changed only by
    ``oncall.incidents.lifecycle``.
    """
    result = await conn.execute(update(incidents).where(incidents.c.id == incident_id).values(**values))
    return int(result.rowcount)


async def acknowledge_once(conn: Connection, incident_id: int, by: str, now: float) -> bool:
    """Set ``acknowledged_at/by`` unless the incident was acknowledged before; True when this call set them."""
    result = await conn.execute(
        update(incidents)
        .where(incidents.c.id == incident_id, incidents.c.acknowledged_at.is_(None))
        .values(acknowledged_at=now, acknowledged_by=by, updated_at=now)
    )
    return bool(result.rowcount)


async def resolve_if_open(conn: Connection, incident_id: int, now: float) -> bool:
    """Set ``status='resolved'`` unless it already is; True when this call resolved it."""
    result = await conn.execute(
        update(incidents)
        .where(incidents.c.id == incident_id, incidents.c.status != "resolved")
        .values(status="resolved", resolved_at=now, updated_at=now)
    )
    return bool(result.rowcount)


async def set_investigation_status(
    conn: Connection, incident_id: int, status: InvestigationStatus, now: float, episode: int | None = None
) -> int:
    """Set ``investigation_status`` (only while the incident is in ``episode`` when given); returns rows changed."""
    query = update(incidents).where(incidents.c.id == incident_id)
    if episode is not None:
        query = query.where(incidents.c.episode == episode)
    result = await conn.execute(query.values(investigation_status=status, updated_at=now))
    return int(result.rowcount)


async def count_firing(conn: Connection) -> int:
    """Number of incidents with status ``firing``."""
    result = await conn.execute(select(func.count()).select_from(incidents).where(incidents.c.status == "firing"))
    return int(result.scalar_one())


async def summaries(conn: Connection, status: IncidentStatus | None, limit: int) -> list[Row]:
    """Incident summaries newest first, with ``alerts_total``/``alerts_firing`` and the raw ``diagnosis``."""
    total = (
        select(func.count())
        .select_from(incident_alerts)
        .where(incident_alerts.c.incident_id == incidents.c.id)
        .scalar_subquery()
    )
    firing = (
        select(func.count())
        .select_from(incident_alerts)
        .where(incident_alerts.c.incident_id == incidents.c.id, incident_alerts.c.status == "firing")
        .scalar_subquery()
    )
    query = select(
        *(
            incidents.c[name]
            for name in (
                "id",
                "group_key",
                "title",
                "status",
                "service",
                "severity",
                "created_at",
                "updated_at",
                "resolved_at",
                "acknowledged_at",
                "acknowledged_by",
                "investigation_status",
                "diagnosis",
            )
        ),
        total.label("alerts_total"),
        firing.label("alerts_firing"),
    )
    if status is not None:
        query = query.where(incidents.c.status == status)
    return all_rows(
        await conn.execute(query.order_by(incidents.c.created_at.desc(), incidents.c.id.desc()).limit(limit))
    )


async def latest_id(conn: Connection, *, firing_only: bool, paged_number: str | None = None) -> int | None:
    """The newest incident id: only firing ones with ``firing_only``; with ``paged_number``, only those
    that number (or the console channel) was messaged about."""
    query = select(incidents.c.id)
    if firing_only:
        query = query.where(incidents.c.status == "firing")
    if paged_number is not None:
        query = query.where(
            exists().where(
                messages.c.incident_id == incidents.c.id,
                messages.c.direction == "out",
                messages.c.to_number.in_((paged_number, "console")),
            )
        )
    result = await conn.execute(query.order_by(incidents.c.id.desc()).limit(1))
    row = result.first()
    return int(row.id) if row is not None else None


# ---------------------------------------------------------------- incident_alerts


ALERT_HEAD_COLUMNS = tuple(column for column in incident_alerts.c if column.name != "annotations")
"""Every ``incident_alerts`` column but ``annotations`` (the bulk of a large group: megabytes of templated text)."""
HEADS_PER_QUERY = 500
"""Alerts read by one ``alert_heads`` query: the event loop runs between two (1,000 rows took 28 ms to decode on
2026-12-04's loaded machine; 10,000 alerts with their annotations in one query held the loop 0.4 s)."""
ANNOTATED_PER_QUERY = 500
"""Fingerprints looked up by one ``annotate`` query (far below SQLite's and PostgreSQL's parameter limits)."""


async def alert_heads(conn: Connection, incident_id: int) -> list[Row]:
    """The incident's alerts without their annotations (labels decoded), oldest first (``first_seen_at``, then
    fingerprint): enough to count, summarise and choose the few shown, which ``annotate`` completes. Read in
    pages of ``HEADS_PER_QUERY`` along the primary key."""
    heads: list[Row] = []
    query = select(*ALERT_HEAD_COLUMNS).where(incident_alerts.c.incident_id == incident_id)
    page = query
    while True:
        rows = all_rows(await conn.execute(page.order_by(incident_alerts.c.fingerprint).limit(HEADS_PER_QUERY)))
        heads.extend(rows)
        if len(rows) < HEADS_PER_QUERY:
            break
        page = query.where(incident_alerts.c.fingerprint > rows[-1]["fingerprint"])
    heads.sort(key=lambda alert: (alert["first_seen_at"], alert["fingerprint"]))
    return heads


async def annotate(conn: Connection, incident_id: int, alerts: list[Row]) -> None:
    """Set ``annotations`` (a dict) on each of ``alerts`` (rows of ``alert_heads`` of this incident), in place;
    an alert deleted meanwhile gets ``{}``."""
    found: dict[str, Any] = {}
    fingerprints = [alert["fingerprint"] for alert in alerts]
    for start in range(0, len(fingerprints), ANNOTATED_PER_QUERY):
        result = await conn.execute(
            select(incident_alerts.c.fingerprint, incident_alerts.c.annotations).where(
                incident_alerts.c.incident_id == incident_id,
                incident_alerts.c.fingerprint.in_(fingerprints[start : start + ANNOTATED_PER_QUERY]),
            )
        )
        found.update((row.fingerprint, row.annotations) for row in result)
    for alert in alerts:
        alert["annotations"] = found.get(alert["fingerprint"], {})


async def alert_states(conn: Connection, incident_id: int) -> dict[str, Row]:
    """``{fingerprint: {"status", "starts_at", "ends_at"}}`` of the incident's alerts (times as stored, RFC 3339)."""
    result = await conn.execute(
        select(
            incident_alerts.c.fingerprint,
            incident_alerts.c.status,
            incident_alerts.c.starts_at,
            incident_alerts.c.ends_at,
        ).where(incident_alerts.c.incident_id == incident_id)
    )
    return {
        row.fingerprint: {"status": row.status, "starts_at": row.starts_at, "ends_at": row.ends_at} for row in result
    }


async def add_alert(conn: Connection, values: dict[str, Any]) -> None:
    """Insert an alert seen for the first time in its incident (``values``: its columns)."""
    await conn.execute(insert(incident_alerts).values(**values))


async def update_alert(conn: Connection, incident_id: int, fingerprint: str, values: dict[str, Any]) -> None:
    """Set columns of one alert of an incident."""
    await conn.execute(
        update(incident_alerts)
        .where(incident_alerts.c.incident_id == incident_id, incident_alerts.c.fingerprint == fingerprint)
        .values(**values)
    )


async def alerts_page(
    conn: Connection, incident_id: int, *, status: str | None, offset: int, limit: int
) -> tuple[int, list[Row]]:
    """``(total, rows)``: the number of the incident's alerts (with ``status`` when given) and ``limit``
    of them from ``offset``, oldest first."""
    where = [incident_alerts.c.incident_id == incident_id]
    if status is not None:
        where.append(incident_alerts.c.status == status)
    total = (await conn.execute(select(func.count()).select_from(incident_alerts).where(*where))).scalar_one()
    result = await conn.execute(
        select(incident_alerts)
        .where(*where)
        .order_by(incident_alerts.c.first_seen_at, incident_alerts.c.fingerprint)
        .offset(offset)
        .limit(limit)
    )
    return int(total), all_rows(result)
