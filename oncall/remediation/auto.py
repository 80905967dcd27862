"""``SAFETY_MODE=auto-low-risk``: the first low-risk option of a new diagnosis runs at once, and is reported.

After an investigation the proposer calls ``AutoApprover.proposed(incident_id, since)``; in the background the
approver waits until that diagnosis is stored (``diagnosed_at`` >= ``since``, at most ``WAIT_S`` seconds), then
approves its first ``low`` risk option as ``auto-low-risk`` through ``Decisions.record`` (same guardrails,
budgets, circuit breaker and audit trail as an engineer's approval; medium and high risk options still wait
for one) and tells the on-call numbers what it started.
"""

from __future__ import annotations

import asyncio
import logging
import time

from oncall.remediation.decisions import Decisions, proposals
from oncall.remediation.executor import SendsMessages
from oncall.store import incidents
from oncall.store.database import Store
from oncall.tasks import BackgroundTasks

log = logging.getLogger("oncall.remediation")

AUTO_APPROVER = "auto-low-risk (SAFETY_MODE)"
WAIT_S = 60.0
POLL_S = 0.5


class AutoApprover:
    """Approves low-risk options on its own (see module docstring).

    Args:
        store: the agent database.
        decisions: records the approval (and starts the execution).
        sender: tells the on-call numbers.
        tasks: where the waiting runs.
    """

    def __init__(self, store: Store, decisions: Decisions, sender: SendsMessages, tasks: BackgroundTasks) -> None:
        self.store = store
        self.decisions = decisions
        self.sender = sender
        self.tasks = tasks

    def proposed(self, incident_id: int, since: float) -> None:
        """A diagnosis of ``incident_id`` with proposals is being stored (investigation ended at ``since``)."""
        self.tasks.spawn(self.approve_when_stored(incident_id, since), name=f"auto-approve-{incident_id}")

    async def approve_when_stored(self, incident_id: int, since: float) -> int | None:
        """Approve the first low-risk option once the diagnosis is stored; returns its number, or None."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            async with self.store.read() as conn:
                incident = await incidents.get(conn, incident_id)
            if incident is not None and float(incident.get("diagnosed_at") or 0) >= since:
                return await self._approve_first_low_risk(incident_id, incident)
            await asyncio.sleep(POLL_S)
        log.warning("auto-low-risk: the diagnosis of incident %d was not stored within %.0f s", incident_id, WAIT_S)
        return None

    async def _approve_first_low_risk(self, incident_id: int, incident: dict) -> int | None:
        number = next((n for n, a in enumerate(proposals(incident), 1) if a.risk == "low"), None)
        if number is None:
            return None
        outcome = await self.decisions.record(incident_id, number, True, AUTO_APPROVER, via="auto")
        await self.sender.send(
            f"#{incident_id} (SAFETY_MODE=auto-low-risk): {outcome['message']}", incident_id=incident_id
        )
        return number if outcome["ok"] else None
