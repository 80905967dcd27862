"""Replay of webhook bodies that were stored but never applied (the receiving process died in between).

``POST /alerts`` commits the raw body before it parses and applies it. A body still unapplied
(``valid = 0``, no ``error``) ``grace_s`` seconds after it was received is claimed here, by any replica
(``FOR UPDATE SKIP LOCKED``; one replica per row), parsed as ``POST /alerts`` parses (its stored text:
redacted, and cut past ``KEPT_VALID_BYTES``, in which case it is marked not replayable) and applied in
the claiming transaction, so
its investigation and notices are written as if the POST had completed. ``apply_notification`` locks
the raw row first, so the original request and a replay never both apply it. Runs at start and then
every ``poll_s`` seconds (default ``LEASE_S``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable

from oncall.incidents.body import receive_notification
from oncall.incidents.ingest import apply_notification
from oncall.metrics import RAW_ALERTS_REPLAYED
from oncall.store import raw_alerts
from oncall.store.database import Store
from oncall.tasks import Poller

log = logging.getLogger("oncall.replay")

BATCH = 50


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    yield body


class RawAlertReplay:
    """Applies stored-but-unapplied webhook bodies (see module docstring).

    Args:
        store: the agent database.
        grace_s: a body younger than this (seconds) may still be in flight in its request (``LEASE_S``).
        poll_s: seconds between two looks (default ``grace_s``).
        on_investigation: called when a replayed body queued an investigation (wakes the scheduler).
        on_notice: called when a replayed body resolved an incident (wakes the outbox worker).
    """

    def __init__(
        self,
        store: Store,
        grace_s: float,
        *,
        poll_s: float | None = None,
        on_investigation: Callable[[], None] = lambda: None,
        on_notice: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.grace_s = grace_s
        self.on_investigation = on_investigation
        self.on_notice = on_notice
        self.poller = Poller("raw-alert-replay", self.replay_due, poll_s or grace_s)

    def start(self) -> None:
        """Replay at once, then every ``poll_s`` seconds."""
        self.poller.start()

    async def stop(self) -> None:
        """Stop replaying."""
        await self.poller.stop()

    async def replay_due(self) -> float | None:
        """Apply up to ``BATCH`` unapplied bodies older than the grace period; returns 0 when more may wait."""
        for _ in range(BATCH):
            if not await self.replay_one(time.time() - self.grace_s):
                return None
        return 0.0

    async def replay_one(self, received_before: float) -> bool:
        """Claim and apply the oldest unapplied body received before ``received_before``; False when none.

        A body that fails to apply (a bug) gets the error on its row, so it is not replayed forever.
        """
        claimed: int | None = None
        try:
            async with self.store.write() as conn:
                row = await raw_alerts.claim_unapplied(conn, received_before)
                if row is None:
                    return False
                claimed = int(row["id"])
                received = await receive_notification(_chunks(row["body"].encode()))
                if received.notification is None:  # e.g. a body kept cut (over KEPT_VALID_BYTES)
                    reason = received.error.reason if received.error else "no notification"
                    await raw_alerts.set_error(conn, claimed, f"not replayable: {reason}")
                    log.warning("replayed raw_alerts#%d is not a valid notification: %s", claimed, reason)
                    return True
                result = await apply_notification(conn, claimed, row["body_sha256"], received.notification)
        except Exception as exc:
            if claimed is None:
                raise
            log.exception("replay of raw_alerts#%d failed", claimed)
            async with self.store.write() as conn:
                await raw_alerts.set_error(conn, claimed, f"replay failed: {type(exc).__name__}: {exc}")
            return True
        RAW_ALERTS_REPLAYED.inc()
        log.warning(
            "replayed raw_alerts#%d received %.0f s ago and never applied: %s, incident %s",
            claimed,
            time.time() - row["received_at"],
            result.outcome,
            result.incident_id,
        )
        if result.start_investigation:
            self.on_investigation()
        if result.resolved_now:
            self.on_notice()
        return True
