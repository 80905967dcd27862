"""Runs investigations and resolved notices in the background, never two at once for one incident and
at most ``MAX_CONCURRENT_INVESTIGATIONS`` at once overall; resumes the ones a restart cut off.

Work for one incident is serialised by a per-incident lock, so a resolved notice is sent after the
diagnosis of the same episode. An investigation already waiting for its turn is not queued twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from oncall.diagnosis import Diagnosis
from oncall.incidents import lifecycle
from oncall.store import incidents, investigations
from oncall.store.database import Store
from oncall.store.rows import Row
from oncall.tasks import BackgroundTasks

log = logging.getLogger("oncall.scheduler")


class Investigates(Protocol):
    """What the scheduler needs from ``oncall.investigate.investigator.Investigator``."""

    @property
    def first_engine(self) -> str: ...

    async def investigate(self, incident: Row, alerts: list[Row]) -> Diagnosis: ...


class Notifies(Protocol):
    """What the scheduler needs from ``oncall.channels.whatsapp.sender.WhatsAppSender``."""

    async def send_diagnosis(self, incident_id: int) -> list[int]: ...

    async def send_investigation_failed(self, incident_id: int, error: str) -> list[int]: ...

    async def send_resolved(self, incident_id: int) -> list[int]: ...

    async def resend_queued(self) -> int: ...


class InvestigationScheduler:
    """Schedules investigations (then the diagnosis message) and resolved notices.

    Args:
        store: the agent database.
        investigator: runs the engines for one incident.
        sender: sends the WhatsApp messages.
        tasks: where the background work runs.
        max_concurrent: investigations running at once (1-32); the others wait their turn.
    """

    def __init__(
        self, store: Store, investigator: Investigates, sender: Notifies, tasks: BackgroundTasks, max_concurrent: int
    ) -> None:
        self.store = store
        self.investigator = investigator
        self.sender = sender
        self.tasks = tasks
        self._locks: dict[int, asyncio.Lock] = {}
        self._waiting: set[int] = set()
        # An alert storm must not start hundreds of investigations at once: their parallel tool calls
        # would starve the event loop that acknowledges webhooks (measured in bench/README.md, ingest).
        self._slots = asyncio.Semaphore(max_concurrent)

    def investigate(self, incident_id: int) -> bool:
        """Schedule the investigation then the diagnosis message; False when one is already waiting to run."""
        if incident_id in self._waiting:
            return False
        self._waiting.add(incident_id)
        self.tasks.spawn(self._investigate(incident_id), name=f"investigate-{incident_id}")
        return True

    def notify_resolved(self, incident_id: int) -> None:
        """Schedule the one short "resolved" WhatsApp message of this episode."""
        self.tasks.spawn(self._notify_resolved(incident_id), name=f"resolved-{incident_id}")

    async def resume_interrupted(self) -> list[int]:
        """At start: close engine runs a previous process left ``running``, investigate again the
        firing incidents whose investigation was cut off (returns their ids), and deliver the
        messages it left queued (in the background)."""
        async with self.store.write() as conn:
            await investigations.interrupt_running(conn, time.time(), "agent restarted")
            resumed = await lifecycle.interrupted_by_restart(conn)
        for incident_id in resumed:
            self.investigate(incident_id)
        self.tasks.spawn(self.sender.resend_queued(), name="resend-queued-messages")
        if resumed:
            log.info("resuming %d interrupted investigation(s): incidents %s", len(resumed), resumed)
        return resumed

    def _lock(self, incident_id: int) -> asyncio.Lock:
        return self._locks.setdefault(incident_id, asyncio.Lock())

    async def _investigate(self, incident_id: int) -> None:
        async with self._slots, self._lock(incident_id):
            self._waiting.discard(incident_id)
            await self.investigate_now(incident_id)

    async def investigate_now(self, incident_id: int) -> Diagnosis | None:
        """Investigate the incident at once (no slot, no lock: ``investigate`` schedules with both), store
        the diagnosis and send it; on failure mark the investigation failed and page the engineer anyway.

        Returns the diagnosis, or None when the investigation failed.
        Raises:
            LookupError: no such incident.
        """
        async with self.store.write() as conn:
            incident = await incidents.get(conn, incident_id)
            if incident is None:
                raise LookupError(f"incident {incident_id} not found")
            alerts = await incidents.alerts(conn, incident_id)
            await lifecycle.begin_investigation(
                conn, incident_id, self.investigator.first_engine, len(alerts), time.time()
            )
        try:
            diagnosis = await self.investigator.investigate(incident, alerts)
        except Exception as exc:  # noqa: BLE001 - recorded on the incident; must not stay 'running' forever
            log.exception("investigation of incident %d failed", incident_id)
            error = f"{type(exc).__name__}: {exc}"
            async with self.store.write() as conn:
                await lifecycle.fail_investigation(conn, incident_id, error, time.time())
            await self.sender.send_investigation_failed(incident_id, error)  # the engineer is paged regardless
            return None
        async with self.store.write() as conn:
            await lifecycle.record_diagnosis(conn, incident_id, diagnosis, time.time())
        await self.sender.send_diagnosis(incident_id)
        return diagnosis

    async def _notify_resolved(self, incident_id: int) -> None:
        async with self._lock(incident_id):
            await self.sender.send_resolved(incident_id)
