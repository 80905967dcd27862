"""``timeline``: what happened to an incident, in order.

Kinds: ``created``, ``alert_firing``, ``alert_resolved``, ``reopened``, ``investigation_started``,
``investigation_fallback``, ``investigation_resumed``, ``diagnosis``, ``investigation_failed``,
``notified``, ``reply``, ``ticket``, ``acknowledged``, ``resolved``, ``remediation_approved``,
``remediation_rejected``, ``remediation_refused``, ``remediation_result``.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from typing import Any

from sqlalchemy import func, insert, select

from oncall.store.database import Connection
from oncall.store.rows import Row, all_rows
from oncall.store.schema import timeline

ALERT_EVENTS = ("alert_firing", "alert_resolved")
"""Timeline kinds of alert state changes (one per alert and change: a large group has thousands)."""
OMITTED_KIND = "alert_events_omitted"
"""Kind of the event standing for the alert state changes a page leaves out."""


async def add(conn: Connection, incident_id: int, kind: str, detail: dict[str, Any] | None = None) -> None:
    """Append an event (``detail``: a JSON-serialisable dict) to the incident's timeline, stamped now."""
    await conn.execute(insert(timeline).values(incident_id=incident_id, at=time.time(), kind=kind, detail=detail or {}))


async def for_incident(conn: Connection, incident_id: int, alert_events: int) -> list[Row]:
    """The incident's events oldest first (``{"id", "at", "kind", "detail"}``) with only the first ``alert_events``
    alert state changes (``ALERT_EVENTS``; a group of 10,000 alerts has 10,000 of them): the others are replaced,
    where the first of them was, by one ``alert_events_omitted`` event (``"id"`` None, ``"detail"``
    ``{"count", "by_kind"}``). At most three statements; the omitted events are counted, never read."""
    events = select(timeline.c.id, timeline.c.at, timeline.c.kind, timeline.c.detail).where(
        timeline.c.incident_id == incident_id
    )
    rows = all_rows(await conn.execute(events.where(timeline.c.kind.not_in(ALERT_EVENTS))))
    alert_events_first = events.where(timeline.c.kind.in_(ALERT_EVENTS)).order_by(timeline.c.id)
    alert_rows = all_rows(await conn.execute(alert_events_first.limit(alert_events + 1)))
    rows = sorted(rows + alert_rows[:alert_events], key=lambda row: row["id"])
    if len(alert_rows) > alert_events:
        first_omitted = alert_rows[alert_events]
        by_kind = await _omitted_by_kind(conn, incident_id, alert_rows[:alert_events])
        detail = {"count": sum(by_kind.values()), "by_kind": by_kind}
        marker = {"id": None, "at": first_omitted["at"], "kind": OMITTED_KIND, "detail": detail}
        rows.insert(bisect.bisect([row["id"] for row in rows], first_omitted["id"]), marker)
    return rows


async def _omitted_by_kind(conn: Connection, incident_id: int, kept: list[Row]) -> dict[str, int]:
    """``{kind: count}`` of the incident's alert state changes that are not in ``kept``."""
    result = await conn.execute(
        select(timeline.c.kind, func.count().label("events"))
        .where(timeline.c.incident_id == incident_id, timeline.c.kind.in_(ALERT_EVENTS))
        .group_by(timeline.c.kind)
        .order_by(timeline.c.kind)
    )
    shown = Counter(row["kind"] for row in kept)
    counts = {row.kind: int(row.events) - shown[row.kind] for row in result}
    return {kind: count for kind, count in counts.items() if count > 0}
