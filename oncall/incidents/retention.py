"""Raw alert bodies are kept for ``RAW_ALERT_RETENTION_DAYS`` and then deleted.

The incidents, their alerts and timelines stay; only the ``raw_alerts`` rows (the bodies as
received, kept for audit and replay) go. Every replica may purge: the DELETE is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import time

from oncall.store import raw_alerts
from oncall.store.database import Store

log = logging.getLogger("oncall.retention")

PURGE_INTERVAL_S = 3600.0
"""Seconds between two purges (the first runs at start)."""
DAY_S = 86400.0


class RawAlertRetention:
    """Deletes raw alert bodies older than ``retention_days`` (days, > 0), at start and then every
    ``interval_s`` seconds while ``run`` runs."""

    def __init__(self, store: Store, retention_days: float, interval_s: float = PURGE_INTERVAL_S) -> None:
        self.store = store
        self.retention_days = retention_days
        self.interval_s = interval_s

    async def purge(self, now: float | None = None) -> int:
        """Delete the bodies received more than ``retention_days`` before ``now`` (epoch s); returns how many."""
        before = (time.time() if now is None else now) - self.retention_days * DAY_S
        async with self.store.write() as conn:
            deleted = await raw_alerts.delete_received_before(conn, before)
        if deleted:
            log.info("deleted %d raw alert bodies older than %g days", deleted, self.retention_days)
        return deleted

    async def run(self) -> None:
        """Purge now and every ``interval_s`` until cancelled; a failed purge is logged and retried next time."""
        while True:
            try:
                await self.purge()
            except Exception:  # noqa: BLE001 - retention must not stop the agent; the next round retries
                log.exception("purging old raw alert bodies failed")
            await asyncio.sleep(self.interval_s)
