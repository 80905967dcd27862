"""Runs the queued investigations (``episodes`` rows) of every replica sharing the database, each exactly
once per episode, at most ``MAX_CONCURRENT_INVESTIGATIONS`` at once on this replica.

- Work claims: a replica claims due investigations with a lease of ``LEASE_S`` seconds
  (``oncall.store.episodes.claim``: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, serialised writers on
  SQLite) and renews its leases every ``LEASE_S / 3`` seconds while the engines run. A replica that
  dies (``kill -9``, lost machine) stops renewing: after ``LEASE_S`` another replica, or the same one
  restarted, claims the investigation again and runs it from the start.
- Fencing: the outcome is recorded only while this replica still holds the claim
  (``episodes.finish``); a replica that stalled past its lease and lost the claim discards its result,
  so one diagnosis is recorded and paged per episode.
- Lock order: a transaction that changes an incident and its episode locks the incident row first, as
  the applier does (``open_or_lock``), so recording a diagnosis while a notification resolves the
  incident cannot deadlock on PostgreSQL (it did, once in an alert storm of the HA benchmark).
- The diagnosis message is written to the outbox in the transaction that records the diagnosis;
  sending is the outbox worker's, so a slow or hanging WhatsApp provider never holds a slot.
- Wake-ups: the replica that queued an investigation wakes its own poller at once (``wake``); the
  others find it within ``WORK_POLL_S``.
- Shutdown hands the claims back (queued again) so another replica takes them at once; a start
  releases the claims a previous process with the same ``AGENT_REPLICA_ID`` left behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from oncall.diagnosis import Diagnosis
from oncall.incidents import lifecycle
from oncall.investigate.prompts import shown_alerts
from oncall.metrics import INVESTIGATION_CLAIMS
from oncall.paging.escalation import Escalations
from oncall.settings import Settings
from oncall.store import episodes, incidents, investigations
from oncall.store.database import Store
from oncall.store.rows import Row
from oncall.tasks import BackgroundTasks, Poller

log = logging.getLogger("oncall.scheduler")


class Investigates(Protocol):
    """What the scheduler needs from ``oncall.investigate.investigator.Investigator``."""

    @property
    def first_engine(self) -> str: ...

    async def investigate(self, incident: Row, alerts: list[Row], *, episode: int | None = None) -> Diagnosis: ...


class InvestigationScheduler:
    """Claims and runs investigations (see module docstring).

    Args:
        store: the agent database.
        investigator: runs the engines for one incident.
        tasks: where the background work runs.
        max_concurrent: investigations running at once on this replica (1-32); the others stay queued.
        replica_id: this replica's ``AGENT_REPLICA_ID`` (stamped on claims, engine runs and timeline events).
        lease_s: lease of a claim, seconds (``LEASE_S``); renewed every third of it.
        poll_s: longest wait between two looks for queued work, seconds (``WORK_POLL_S``).
        on_outcome: called after an outcome (and its notices) was committed (wakes the outbox worker).
        escalations: the escalation chains; the diagnosis is paged to level 1 of the chain its
            transaction starts (None: to the default recipients).
    """

    def __init__(
        self,
        store: Store,
        investigator: Investigates,
        tasks: BackgroundTasks,
        max_concurrent: int,
        *,
        replica_id: str,
        lease_s: float = 30.0,
        poll_s: float = 2.0,
        on_outcome: Callable[[], None] = lambda: None,
        escalations: Escalations | None = None,
    ) -> None:
        self.store = store
        self.investigator = investigator
        self.tasks = tasks
        self.max_concurrent = max_concurrent
        self.replica_id = replica_id
        self.lease_s = lease_s
        self.on_outcome = on_outcome
        self.escalations = escalations
        self._running: dict[int, asyncio.Task[Diagnosis | None]] = {}
        self.poller = Poller("investigation-claims", self.run_due, poll_s)
        self.heartbeat = Poller("investigation-leases", self.renew_leases, lease_s / 3)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: Store,
        investigator: Investigates,
        tasks: BackgroundTasks,
        on_outcome: Callable[[], None] = lambda: None,
        escalations: Escalations | None = None,
    ) -> InvestigationScheduler:
        """The scheduler of this replica with ``MAX_CONCURRENT_INVESTIGATIONS``, ``AGENT_REPLICA_ID``, ``LEASE_S``
        and ``WORK_POLL_S``."""
        return cls(
            store,
            investigator,
            tasks,
            settings.max_concurrent_investigations,
            replica_id=settings.agent_replica_id,
            lease_s=settings.lease_s,
            poll_s=settings.work_poll_s,
            on_outcome=on_outcome,
            escalations=escalations,
        )

    def wake(self) -> None:
        """Look for queued investigations now (this replica just queued one)."""
        self.poller.wake()

    async def start(self) -> int:
        """Release the claims a previous process with this replica id left, then start claiming.
        Returns how many investigations were handed back to the queue."""
        now = time.time()
        async with self.store.write() as conn:
            released = await episodes.release(conn, self.replica_id)
            await investigations.interrupt_running(
                conn, now, f"replica {self.replica_id} restarted", replica_id=self.replica_id
            )
        if released:
            log.info("%d investigation(s) this replica held before its restart are queued again", released)
        self.poller.start()
        self.heartbeat.start()
        return released

    async def stop(self) -> None:
        """Stop claiming, cancel the running investigations and hand their claims back to the queue."""
        await self.poller.stop()
        await self.heartbeat.stop()
        running = list(self._running.values())
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        async with self.store.write() as conn:
            released = await episodes.release(conn, self.replica_id)
        if released:
            log.info("handed %d running investigation(s) back to the queue at shutdown", released)

    async def run_due(self) -> float | None:
        """Claim as many queued investigations as this replica has free slots and start them."""
        free = self.max_concurrent - len(self._running)
        if free <= 0:
            return None
        async with self.store.write() as conn:
            claims = await episodes.claim(conn, self.replica_id, time.time(), self.lease_s, free)
        for claim in claims:
            kind = "takeover" if claim["investigation"] == "running" else "queued"
            INVESTIGATION_CLAIMS.labels(kind=kind).inc()
            if kind == "takeover":
                log.warning(
                    "incident %s episode %s: lease of %s expired, taking the investigation over",
                    claim["incident_id"],
                    claim["number"],
                    claim["claimed_by"],
                )
            task = self.tasks.spawn(self._run(claim), name=f"investigate-{claim['incident_id']}-{claim['number']}")
            self._running[int(claim["id"])] = task
        return 0.0 if len(claims) == free else None

    async def renew_leases(self) -> None:
        """Extend the leases of the running investigations; cancel the ones whose claim was lost."""
        ids = list(self._running)
        if not ids:
            return
        async with self.store.write() as conn:
            held = await episodes.renew(conn, ids, self.replica_id, time.time() + self.lease_s)
        for episode_id in set(ids) - held:
            task = self._running.get(episode_id)
            if task is not None:
                log.warning("claim on investigation %d lost to another replica: cancelling it here", episode_id)
                task.cancel()

    async def investigate_now(self, incident_id: int) -> Diagnosis | None:
        """Claim and run the investigation of the incident's current episode at once, whatever its state
        (tests and explicit requests; no slot is taken). Returns the diagnosis, or None when it failed.

        Raises:
            LookupError: no such incident.
        """
        async with self.store.write() as conn:
            incident = await incidents.get(conn, incident_id)
            if incident is None:
                raise LookupError(f"incident {incident_id} not found")
            number = int(incident["episode"])
            await episodes.open_episode(conn, incident_id, number, time.time())
            row = await episodes.get(conn, incident_id, number)
            assert row is not None
            await episodes.claim_one(conn, int(row["id"]), self.replica_id, time.time(), self.lease_s)
            claim = {**row, "attempts": row["attempts"] + 1}
        return await self._run(claim)

    async def _run(self, claim: Row) -> Diagnosis | None:
        """Run one claimed investigation and record its outcome while the claim is still ours."""
        episode_id, incident_id, number = int(claim["id"]), int(claim["incident_id"]), int(claim["number"])
        try:
            alerts = await self._alerts(incident_id)
            now = time.time()
            async with self.store.write() as conn:
                incident = await incidents.lock(conn, incident_id)  # the incident row first, then its episode
                assert incident is not None  # episodes reference their incident
                if claim["investigation"] == "running" and claim["claimed_by"] != self.replica_id:
                    reason = f"lease of replica {claim['claimed_by']} expired; taken over by {self.replica_id}"
                    await investigations.interrupt_running(conn, now, reason, incident_id=incident_id)
                await lifecycle.begin_investigation(
                    conn, claim, self.investigator.first_engine, len(alerts), self.replica_id, now
                )
            return await self._outcome(episode_id, incident, alerts, number)
        finally:
            self._running.pop(episode_id, None)
            self.poller.wake()  # a slot is free

    async def _alerts(self, incident_id: int) -> list[Row]:
        """The incident's alerts for its investigation, read before the write transaction (which then holds no
        lock while thousands are read); only the alerts the prompt shows carry their annotations."""
        async with self.store.read() as conn:
            alerts = await incidents.alert_heads(conn, incident_id)
            await incidents.annotate(conn, incident_id, shown_alerts(alerts))
        return alerts

    async def _outcome(self, episode_id: int, incident: Row, alerts: list[Row], number: int) -> Diagnosis | None:
        incident_id = int(incident["id"])
        try:
            diagnosis = await self.investigator.investigate(incident, alerts, episode=number)
        except Exception as exc:  # noqa: BLE001 - recorded on the incident; the engineer is paged anyway
            log.exception("investigation of incident %d failed", incident_id)
            error = f"{type(exc).__name__}: {exc}"
            async with self.store.write() as conn:
                await incidents.lock(conn, incident_id)  # lock order: incident, then episode (as the applier)
                if await episodes.finish(conn, episode_id, self.replica_id, "failed", time.time()):
                    await lifecycle.fail_investigation(
                        conn, incident_id, number, error, self.replica_id, time.time(), self.escalations
                    )
            self.on_outcome()
            return None
        async with self.store.write() as conn:
            await incidents.lock(conn, incident_id)  # lock order: incident, then episode (as the applier)
            held = await episodes.finish(conn, episode_id, self.replica_id, "done", time.time())
            if held:
                await lifecycle.record_diagnosis(
                    conn, incident_id, number, diagnosis, self.replica_id, time.time(), self.escalations
                )
        if not held:
            log.warning("incident %d: claim lost before the diagnosis was recorded; discarded", incident_id)
        self.on_outcome()
        return diagnosis
