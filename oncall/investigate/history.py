"""Resolved incidents like the one investigated: evidence for both engines and the diagnosis' ``similar_incidents``.

Before a diagnosis exists only the alert-side features count (service, alert name, replicas); once it
exists its fault type and file:line count too (``oncall.history.similar``, which documents the score).
"""

from __future__ import annotations

from typing import Any

from oncall.history.similar import SimilarMatch, find_similar
from oncall.store.database import Store


class IncidentHistory:
    """Finds resolved incidents like one incident in the agent's database.

    Args:
        store: the agent database.
        top: most incidents returned (the diagnosis holds at most 3).
    """

    def __init__(self, store: Store, top: int = 3) -> None:
        self.store = store
        self.top = top

    async def similar(self, incident_id: int, diagnosis: dict[str, Any] | None = None) -> list[SimilarMatch]:
        """The resolved incidents most like ``incident_id`` (compared with ``diagnosis`` when given), best first.

        Raises:
            LookupError: no such incident.
        """
        async with self.store.read() as conn:
            return await find_similar(conn, incident_id, diagnosis=diagnosis, top=self.top)

    async def similar_summaries(self, incident_id: int) -> list[dict[str, Any]]:
        """``similar`` as the ``find_similar_incidents`` tool answers it: each match's fields and its summary."""
        return [
            {
                "incident_id": match.incident_id,
                "title": match.title,
                "score": match.score,
                "matched": list(match.matched),
                "fault_type": match.fault_type,
                "location": match.location,
                "resolution": match.resolution,
                "duration_s": match.duration_s,
                "action": match.action,
                "ticket": match.ticket_key,
                "summary": match.summary(),
            }
            for match in await self.similar(incident_id)
        ]
