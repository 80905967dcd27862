"""The outbox worker: delivers the ``outbox`` rows (``oncall.store.outbox``) of every replica, each until
delivered or expired, with exponential backoff, across restarts.

- Each replica runs one worker. It claims due rows with a lease of ``LEASE_S`` seconds (a replica that
  dies mid-delivery loses it; another replica delivers the row after the lease) and hands each to its
  channel's ``Deliverer`` (``whatsapp``: ``oncall.channels.whatsapp.sender``; ``jira``:
  ``oncall.channels.jira.client``), at most ``concurrency`` at once, never inside an investigation.
- Outcome of an attempt: ``delivered``; ``retry`` (a transient error: next attempt after
  ``backoff_s * 2**(attempts-1)`` seconds, at most ``backoff_max_s``, with jitter); ``failed`` (a
  permanent error, e.g. Twilio 21211 invalid number). A row still undelivered ``expiry_s`` seconds
  after it was written is ``expired``. The outcome and what it causes (the ``messages`` row's status,
  a ticket, a confirmation) commit in one transaction, and only while the claim is still held.
- Visible failures: ``oncall_outbox_*`` metrics; a ``delivery_delayed`` timeline event once a row is
  still undelivered after ``warn_attempts`` attempts; ``delivery_failed`` when it fails or expires;
  the oldest undelivered age in ``/healthz`` (``backlog``).
- Exactly once per event: rows are unique by ``event_key``; the one window left is a replica dying
  after the provider accepted a request and before the outcome committed (milliseconds). Twilio's
  Messages API has no idempotency key, so that message may be sent twice; Jira issues carry a unique
  label and a retry first searches for it (see ``oncall.channels.jira.client``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from oncall.metrics import OUTBOX_DELIVERIES, OUTBOX_OLDEST_PENDING_SECONDS, OUTBOX_PENDING, OUTBOX_UNDELIVERABLE
from oncall.settings import Settings
from oncall.store import outbox, timeline
from oncall.store.database import Connection, Store
from oncall.store.rows import Row
from oncall.tasks import BackgroundTasks, Poller

GAUGE_REFRESH_S = 1.0
"""Shortest interval between two refreshes of the outbox gauges (a storm runs many delivery rounds a second)."""

log = logging.getLogger("oncall.outbox")

Settled = Literal["delivered", "retry", "failed", "expired"]


@dataclass(frozen=True)
class Attempt:
    """What one delivery attempt gave: ``delivered``, ``retry`` (transient) or ``failed`` (permanent), the
    error text (credential-free) and what the provider answered (e.g. ``{"sid": ...}``)."""

    outcome: Literal["delivered", "retry", "failed"]
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)


class Deliverer(Protocol):
    """A channel that delivers outbox rows."""

    async def deliver(self, row: Row) -> Attempt:
        """Make the outside call for ``row`` (an ``outbox`` row, payload decoded); never raise for its errors."""
        ...

    async def settled(self, conn: Connection, row: Row, attempt: Attempt, status: Settled) -> None:
        """Write what the outcome causes, in the transaction that records it (``status`` as recorded)."""
        ...


class OutboxWorker:
    """Claims and delivers outbox rows (see module docstring).

    Args:
        store: the agent database.
        deliverers: ``{channel: Deliverer}`` (``whatsapp``, ``jira``).
        tasks: where the deliveries run.
        replica_id: this replica's ``AGENT_REPLICA_ID``.
        lease_s: lease of a claimed row, seconds (longer than any provider timeout).
        poll_s: longest wait between two looks for due rows, seconds.
        expiry_s: a row undelivered this many seconds after it was written expires (``OUTBOX_EXPIRY_S``).
        backoff_s: first retry wait, seconds; doubles per attempt up to ``backoff_max_s`` (``OUTBOX_BACKOFF_MAX_S``).
        warn_attempts: attempts after which a ``delivery_delayed`` timeline event is recorded (once).
        concurrency: deliveries in flight at once on this replica.
    """

    def __init__(
        self,
        store: Store,
        deliverers: dict[str, Deliverer],
        tasks: BackgroundTasks,
        *,
        replica_id: str,
        lease_s: float = 30.0,
        poll_s: float = 2.0,
        expiry_s: float = 21600.0,
        backoff_s: float = 1.0,
        backoff_max_s: float = 60.0,
        warn_attempts: int = 5,
        concurrency: int = 4,
    ) -> None:
        self.store = store
        self.deliverers = deliverers
        self.tasks = tasks
        self.replica_id = replica_id
        self.lease_s = lease_s
        self.expiry_s = expiry_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.warn_attempts = warn_attempts
        self.concurrency = concurrency
        self._inflight: set[asyncio.Task[None]] = set()
        self._gauges_refreshed_at = 0.0
        self._ended = 0  # deliveries that ended (``drain`` looks again when one ended while it looked)
        self.poller = Poller("outbox", self.run_due, poll_s)

    @classmethod
    def from_settings(
        cls, settings: Settings, store: Store, tasks: BackgroundTasks, deliverers: dict[str, Deliverer]
    ) -> OutboxWorker:
        """This replica's worker: ``AGENT_REPLICA_ID``, ``LEASE_S``, ``WORK_POLL_S`` and the ``OUTBOX_*`` settings."""
        return cls(
            store,
            deliverers,
            tasks,
            replica_id=settings.agent_replica_id,
            lease_s=settings.lease_s,
            poll_s=settings.work_poll_s,
            expiry_s=settings.outbox_expiry_s,
            backoff_max_s=settings.outbox_backoff_max_s,
            warn_attempts=settings.outbox_warn_attempts,
        )

    def wake(self) -> None:
        """Deliver now (a row was just written)."""
        self.poller.wake()

    async def start(self) -> None:
        """Drop the leases a previous process with this replica id left, then start delivering."""
        async with self.store.write() as conn:
            await outbox.release(conn, self.replica_id)
        self.poller.start()

    async def stop(self) -> None:
        """Stop claiming, wait a moment for deliveries in flight, then release the leases still held."""
        await self.poller.stop()
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=5)
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        async with self.store.write() as conn:
            await outbox.release(conn, self.replica_id)

    def backoff(self, attempts: int) -> float:
        """Seconds before the next attempt after ``attempts`` failed ones: exponential, capped, jittered (50-100%)."""
        delay = min(self.backoff_max_s, self.backoff_s * 2 ** max(0, attempts - 1))
        return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography

    async def run_due(self) -> float | None:
        """Claim due rows for the free delivery slots and deliver them; returns seconds until the next is due
        (None: nothing pending, or no free slot). The gauges are refreshed at most every ``GAUGE_REFRESH_S``."""
        free = self.concurrency - len(self._inflight)
        if free <= 0:
            return None  # every slot busy: each delivery wakes the poller when it ends
        now = time.time()
        async with self.store.write() as conn:
            rows = await outbox.claim_due(conn, self.replica_id, now, self.lease_s, free)
        for row in rows:
            task = self.tasks.spawn(self._deliver(row), name=f"outbox-{row['id']}")
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        if len(rows) == free:
            return 0.0  # there may be more due; the next round waits for a free slot
        refresh_in = GAUGE_REFRESH_S - (now - self._gauges_refreshed_at)
        async with self.store.read() as conn:
            next_due = await outbox.next_due_at(conn)
            if refresh_in <= 0:
                self._gauges_refreshed_at = now
                await self._refresh_gauges(conn, now)
        delay = None if next_due is None else max(0.0, next_due - time.time())
        if refresh_in > 0:  # gauges skipped this round: come back for them
            delay = refresh_in if delay is None else min(delay, refresh_in)
        return delay

    async def drain(self, timeout: float = 30.0, *, retries: bool = False) -> None:
        """Deliver until no row is due now and nothing is in flight; with ``retries``, also wait for the rows
        in backoff until nothing is pending at all (tests, one-shot runs).

        Raises:
            TimeoutError: rows were still due (or pending, with ``retries``) after ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while True:
                ended = self._ended
                delay = await self.run_due()
                if self._inflight:
                    await asyncio.wait(set(self._inflight))
                    continue
                if self._ended != ended:
                    continue  # a delivery ended while run_due looked: its delay may be stale
                if delay is None or (delay > 0 and not retries):
                    return
                await asyncio.sleep(min(delay, self.poller.poll_s))  # a delivery may end sooner than its lease

    async def _deliver(self, row: Row) -> None:
        try:
            await self._attempt(row)
        finally:
            self._ended += 1

    async def _attempt(self, row: Row) -> None:
        deliverer = self.deliverers.get(row["channel"])
        if time.time() > row["created_at"] + self.expiry_s:
            last = f"; last error: {row['last_error']}" if row["last_error"] else ""
            attempt = Attempt("retry", error=f"undelivered after OUTBOX_EXPIRY_S={self.expiry_s:g} s{last}")
        elif deliverer is None:
            attempt = Attempt("failed", error=f"no deliverer for channel {row['channel']!r}")
        else:
            try:
                attempt = await deliverer.deliver(row)
            except Exception as exc:  # noqa: BLE001 - a bug in a channel must not lose the row
                log.exception("outbox row %s: delivery raised", row["id"])
                attempt = Attempt("retry", error=f"{type(exc).__name__}: {exc}")
        await self._settle(row, attempt, deliverer)

    async def _settle(self, row: Row, attempt: Attempt, deliverer: Deliverer | None) -> None:
        """Record the attempt's outcome (fenced by the claim) and what it causes, in one transaction."""
        now = time.time()
        status: Settled = attempt.outcome
        next_at = now + self.backoff(int(row["attempts"]))
        if status == "retry" and next_at > row["created_at"] + self.expiry_s:
            status = "expired"
        error = attempt.error or ""
        async with self.store.write() as conn:
            if status == "delivered":
                held = await outbox.mark_delivered(conn, row["id"], self.replica_id, now)
            elif status == "retry":
                held = await outbox.retry_later(conn, row["id"], self.replica_id, error, next_at)
            else:
                held = await outbox.give_up(conn, row["id"], self.replica_id, status, error)
            if not held:
                log.warning("outbox row %s: claim lost before the outcome was recorded", row["id"])
                return
            if deliverer is not None:
                await deliverer.settled(conn, row, attempt, status)
            await self._record_visibly(conn, row, status, error)
        OUTBOX_DELIVERIES.labels(channel=row["channel"], operation=row["operation"], outcome=status).inc()
        self.poller.wake()  # a slot is free, and a delivered notice or Jira issue may have queued messages

    async def _record_visibly(self, conn: Connection, row: Row, status: Settled, error: str) -> None:
        """Timeline events and logs for rows that keep failing."""
        detail = {
            "event_key": row["event_key"],
            "channel": row["channel"],
            "operation": row["operation"],
            "attempts": row["attempts"],
            "error": error,
            "replica": self.replica_id,
        }
        if status in ("failed", "expired"):
            log.error(
                "outbox row %s (%s) %s after %d attempt(s): %s",
                row["id"],
                row["event_key"],
                status,
                row["attempts"],
                error,
            )
            if row["incident_id"] is not None:
                await timeline.add(conn, row["incident_id"], "delivery_failed", {**detail, "status": status})
        elif status == "retry" and row["attempts"] >= self.warn_attempts and await outbox.mark_warned(conn, row["id"]):
            log.error(
                "outbox row %s (%s) still undelivered after %d attempts: %s",
                row["id"],
                row["event_key"],
                row["attempts"],
                error,
            )
            if row["incident_id"] is not None:
                await timeline.add(conn, row["incident_id"], "delivery_delayed", detail)

    async def _refresh_gauges(self, conn: Connection, now: float) -> None:
        state = await outbox.backlog(conn)
        OUTBOX_PENDING.set(state["pending"])
        oldest = state["oldest_pending_at"]
        OUTBOX_OLDEST_PENDING_SECONDS.set(max(0.0, now - oldest) if oldest is not None else 0.0)
        for status in ("failed", "expired"):
            OUTBOX_UNDELIVERABLE.labels(status=status).set(state[status])


async def backlog(store: Store) -> dict[str, Any]:
    """``{"pending", "failed", "expired", "oldest_pending_age_s"}`` of the outbox (``/healthz``)."""
    async with store.read() as conn:
        state = await outbox.backlog(conn)
    oldest = state.pop("oldest_pending_at")
    return {**state, "oldest_pending_age_s": round(time.time() - oldest, 1) if oldest is not None else None}
