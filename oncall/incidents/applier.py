"""The applier: every stored webhook body is applied here, after ``POST /alerts`` acknowledged it.

``POST /alerts`` answers once the body is committed to ``raw_alerts`` (``oncall.incidents.intake``) and
hands the parsed notification over to this replica's applier. The applier claims the oldest unapplied
body (``FOR UPDATE SKIP LOCKED``; one replica per row), applies it in the claiming transaction
(``oncall.incidents.ingest.apply_notification``) and wakes the scheduler or the outbox worker when the
notification queued an investigation or resolved an incident. A replica claims the bodies it received
at once and anyone's once they are ``grace_s`` old (their receiver died before applying them: the
notification is parsed again from the stored text, which is redacted and cut past ``KEPT_VALID_BYTES``;
a cut body is marked not replayable). It runs when woken, at start and every ``poll_s`` seconds. It
waits while the intake commits, so acknowledgements go first: they get SQLite's one writer, the event loop's
CPU and, on PostgreSQL, the WAL flushes of the commits (a storm's bodies are applied once it eases).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from oncall.incidents.body import receive_stored
from oncall.incidents.ingest import IngestResult, apply_notification
from oncall.incidents.payload import WebhookNotification
from oncall.metrics import (
    ALERT_NOTIFICATIONS,
    ALERTS_RECEIVED,
    INCIDENTS_OPEN,
    RAW_ALERT_APPLY_SECONDS,
    RAW_ALERTS_REPLAYED,
    RAW_ALERTS_WAITING,
)
from oncall.store import incidents, raw_alerts
from oncall.store.database import Store
from oncall.store.rows import Row
from oncall.tasks import Poller

log = logging.getLogger("oncall.applier")

BATCH = 50


class RawAlertApplier:
    """Applies stored webhook bodies (see module docstring).

    Args:
        store: the agent database.
        replica_id: this replica's ``AGENT_REPLICA_ID`` (the ``received_by`` of the bodies it stored).
        grace_s: seconds after which another replica's unapplied body is taken over (``LEASE_S``).
        poll_s: seconds between two looks when not woken (default ``grace_s``).
        on_investigation: called when a body queued an investigation (wakes the scheduler).
        on_notice: called when a body resolved an incident (wakes the outbox worker).
    """

    def __init__(
        self,
        store: Store,
        replica_id: str,
        grace_s: float,
        *,
        poll_s: float | None = None,
        on_investigation: Callable[[], None] = lambda: None,
        on_notice: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.replica_id = replica_id
        self.grace_s = grace_s
        self.on_investigation = on_investigation
        self.on_notice = on_notice
        self.parsed: dict[int, WebhookNotification] = {}
        self.poller = Poller("raw-alert-applier", self.apply_due, poll_s or grace_s)
        self._intake_idle = asyncio.Event()
        self._intake_idle.set()

    def hand_over(self, raw_id: int, notification: WebhookNotification) -> None:
        """Keep the parsed notification of a body this process is storing (applied from memory, whole)."""
        self.parsed[raw_id] = notification
        RAW_ALERTS_WAITING.set(len(self.parsed))

    def forget(self, raw_ids: list[int]) -> None:
        """Drop notifications handed over for bodies whose transaction did not commit."""
        for raw_id in raw_ids:
            self.parsed.pop(raw_id, None)
        RAW_ALERTS_WAITING.set(len(self.parsed))

    def pause(self) -> None:
        """The intake is committing bodies: apply nothing until ``resume`` (the acknowledgements go first; a body
        being applied finishes)."""
        self._intake_idle.clear()

    def resume(self) -> None:
        """The intake has nothing left to commit: apply again."""
        self._intake_idle.set()

    def wake(self) -> None:
        """Apply what is waiting as soon as possible."""
        self.poller.wake()

    def start(self) -> None:
        """Apply at once, then whenever woken and every ``poll_s`` seconds."""
        self.poller.start()

    async def stop(self) -> None:
        """Stop applying (a body not applied yet stays in ``raw_alerts`` for the next start or replica)."""
        await self.poller.stop()

    async def apply_due(self) -> float | None:
        """Apply up to ``BATCH`` waiting bodies, then refresh the firing-incidents gauge; returns 0 when more may
        wait."""
        accepted = 0
        try:
            for _ in range(BATCH):
                await self._intake_idle.wait()
                result = await self.apply_one()
                if result is None:
                    return None
                accepted += result.outcome == "accepted"
            return 0.0
        finally:
            if accepted:
                await self._refresh_open_incidents()

    async def _refresh_open_incidents(self) -> None:
        """Set the firing-incidents gauge (once per round, not per body)."""
        async with self.store.read() as conn:
            INCIDENTS_OPEN.set(await incidents.count_firing(conn))

    async def apply_one(self) -> IngestResult | None:
        """Claim and apply the oldest body this replica may take; None when none waits.

        A body that fails to apply (a bug) gets the error on its row (outcome ``failed``), so it is not
        tried forever.
        """
        claimed: int | None = None
        try:
            async with self.store.write() as conn:
                row = await raw_alerts.claim_unapplied(conn, self.replica_id, time.time() - self.grace_s)
                if row is None:
                    return None
                claimed = int(row["id"])
                notification = self.parsed.pop(claimed, None)
                RAW_ALERTS_WAITING.set(len(self.parsed))
                if notification is None:
                    notification = await self._parse_stored(row, await raw_alerts.stored_text(conn, claimed) or "")
                if notification is None:
                    error = "not replayable: the stored body is not whole"
                    await raw_alerts.set_error(conn, claimed, error)
                    return IngestResult(outcome="failed", raw_id=claimed, error=error)
                result = await apply_notification(conn, claimed, row["body_sha256"], notification)
        except Exception as exc:
            if claimed is None:
                raise
            log.exception("applying raw_alerts#%d failed", claimed)
            error = f"processing failed: {type(exc).__name__}: {exc}"
            async with self.store.write() as conn:
                await raw_alerts.set_error(conn, claimed, error)
            return IngestResult(outcome="failed", raw_id=claimed, error=error)
        self._report(row, notification, result)
        return result

    async def _parse_stored(self, row: Row, text: str) -> WebhookNotification | None:
        """The notification of a body another process stored (it died before applying it) from its stored
        ``text``, or None when that does not parse (kept cut)."""
        received = await receive_stored(text.encode())
        RAW_ALERTS_REPLAYED.inc()
        log.warning(
            "raw_alerts#%d received by %s %.0f s ago was never applied: applying it now",
            row["id"],
            row["received_by"] or "an earlier version",
            time.time() - row["received_at"],
        )
        return received.notification

    def _report(self, row: Row, n: WebhookNotification, result: IngestResult) -> None:
        """Metrics, the log line and the wake-ups of one applied body."""
        waited_s = max(0.0, time.time() - row["received_at"])
        ALERT_NOTIFICATIONS.labels(outcome=result.outcome).inc()
        RAW_ALERT_APPLY_SECONDS.observe(waited_s)
        if result.outcome == "accepted":
            for alert in n.alerts:
                ALERTS_RECEIVED.labels(status=alert.status).inc()
        log.info(
            "notification raw#%d %s %.3f s after receipt: incident %s, new firing %s, newly resolved %s%s%s",
            result.raw_id,
            result.outcome,
            waited_s,
            result.incident_id,
            list(result.new_firing)[:20],
            list(result.newly_resolved)[:20],
            ", investigation queued" if result.start_investigation else "",
            ", incident resolved" if result.resolved_now else "",
        )
        if result.start_investigation:
            self.on_investigation()
        if result.resolved_now:
            self.on_notice()
