"""``timeline``: what happened to an incident, in order.

Kinds: ``created``, ``alert_firing``, ``alert_resolved``, ``reopened``, ``investigation_started``,
``investigation_fallback``, ``investigation_resumed``, ``diagnosis``, ``investigation_failed``,
``notified``, ``reply``, ``ticket``, ``acknowledged``, ``resolved``, ``remediation_approved``,
``remediation_rejected``, ``remediation_refused``, ``remediation_result``.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import insert, select

from oncall.store.database import Connection
from oncall.store.rows import Row, all_rows
from oncall.store.schema import timeline


async def add(conn: Connection, incident_id: int, kind: str, detail: dict[str, Any] | None = None) -> None:
    """Append an event (``detail``: a JSON-serialisable dict) to the incident's timeline, stamped now."""
    await conn.execute(insert(timeline).values(incident_id=incident_id, at=time.time(), kind=kind, detail=detail or {}))


async def for_incident(conn: Connection, incident_id: int) -> list[Row]:
    """The incident's events oldest first: ``{"id", "at", "kind", "detail"}``."""
    result = await conn.execute(
        select(timeline.c.id, timeline.c.at, timeline.c.kind, timeline.c.detail)
        .where(timeline.c.incident_id == incident_id)
        .order_by(timeline.c.id)
    )
    return all_rows(result)
