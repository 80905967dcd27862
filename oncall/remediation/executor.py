"""Execution of an approved action: claimed under a lease, checked, sent to the control plane, verified.

Steps (each recorded on the ``remediations`` row, fenced by the claim, so a replica that lost its lease
stops): claim (``REMEDIATION_LEASE_S``) -> precondition on the live fleet (target exists, no operation in
progress, ``guardrails.fleet_check``, a rollback goes to ``previous_version``) -> figures before ->
the request written with ``sent_at`` -> the process manager call -> its answer -> wait for the operation
it started to end -> ``Verifier.watch`` -> ``recovered`` / ``not_recovered`` / ``failed``, with a
``remediation_result`` timeline event and a WhatsApp notice to the approver (or the on-call numbers), the
notice an outbox row written in the transaction that records the outcome (``oncall.channels.outbox``).

A replica that dies mid-action loses its lease; ``resume`` (at start, then every half lease in ``watch``)
claims rows whose lease expired. When the dead replica had already sent the request (``sent_at`` set) the request is
not sent again: the new owner only verifies, so an action runs at most once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from oncall.catalog.models import Catalog, ServiceEntry
from oncall.diagnosis import ProposedAction
from oncall.remediation.catalogue import describe
from oncall.remediation.controlplane import ControlPlaneError, Fleet, ProcessManager, request_for
from oncall.remediation.guardrails import fleet_check
from oncall.remediation.verifier import Figures, Verifier, figures_text
from oncall.store import incidents, remediations, timeline
from oncall.store.database import Connection, Store
from oncall.store.rows import Row
from oncall.tasks import BackgroundTasks

log = logging.getLogger("oncall.remediation")

OPERATION_POLL_S = 1.0


class SendsMessages(Protocol):
    """What the executor needs from ``oncall.channels.whatsapp.sender.WhatsAppSender``: ``queue`` writes the
    message to the outbox in the caller's transaction (once per ``event``), ``wake`` has it delivered now."""

    async def send(self, body: str, *, incident_id: int | None, to: list[str] | None = None) -> list[int]: ...

    async def queue(
        self,
        conn: Connection,
        body: str,
        *,
        incident_id: int | None,
        event: str,
        to: list[str] | None = None,
        now: float | None = None,
    ) -> list[int]: ...

    def wake(self) -> None: ...


class Executor:
    """Runs approved actions (see module docstring).

    Args:
        store: the agent database.
        catalog: the service catalog (``control_plane`` per service).
        control_plane: builds the client of a control plane URL.
        verifier: measures and watches the service.
        sender: tells the engineer the outcome.
        tasks: where executions run.
        replica_id: this agent replica's id (the claim's owner).
        lease_s: lease of a claim, seconds (renewed at every step and verification poll).
        bounds: (min, max) replicas of a scale.
    """

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        control_plane: Callable[[str], ProcessManager],
        verifier: Verifier,
        sender: SendsMessages,
        tasks: BackgroundTasks,
        *,
        replica_id: str,
        lease_s: float = 30.0,
        bounds: tuple[int, int] = (1, 10),
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.control_plane = control_plane
        self.verifier = verifier
        self.sender = sender
        self.tasks = tasks
        self.replica_id = replica_id
        self.lease_s = lease_s
        self.bounds = bounds

    def start(self, remediation_id: int) -> None:
        """Run the execution of row ``remediation_id`` in the background."""
        self.tasks.spawn(self.run(remediation_id), name=f"remediation-{remediation_id}")

    async def resume(self) -> list[int]:
        """Claim and run the rows nobody executes (approved, or a dead replica's expired lease); returns their ids."""
        async with self.store.read() as conn:
            ids = await remediations.claimable_ids(conn, time.time())
        for remediation_id in ids:
            self.start(remediation_id)
        return ids

    async def watch(self, every_s: float) -> None:
        """Forever: every ``every_s`` seconds take over the rows nobody executes (``resume``), so an action whose
        replica died mid-way is finished by a live one (verified only, when its request was already sent)."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.resume()
            except Exception:  # noqa: BLE001 - a database outage must not end the watch
                log.exception("remediation takeover round failed")

    async def run(self, remediation_id: int) -> str | None:
        """Claim and execute one row; returns its final status, or None when another replica holds it."""
        async with self.store.write() as conn:
            claimed = await remediations.claim(conn, remediation_id, self.replica_id, time.time(), self.lease_s)
            row = await remediations.get(conn, remediation_id) if claimed else None
        if row is None:
            return None
        try:
            return await self._execute(row)
        except Exception as exc:  # noqa: BLE001 - the engineer hears about it; the row must not stay running
            log.exception("remediation %d failed", remediation_id)
            return await self._finish(row, "failed", {"error": f"{type(exc).__name__}: {exc}"[:300]}, None)

    async def _execute(self, row: Row) -> str | None:
        entry = self.catalog.get(str(row["service"]))
        if entry is None or entry.control_plane is None:
            return await self._finish(row, "failed", {"error": f"{row['service']} has no control plane"}, None)
        pm = self.control_plane(entry.control_plane.url)
        action = ProposedAction.model_validate(
            {"action": row["action"], "target": row["target"], "params": row["params"], "risk": row["risk"]}
        )
        alert = await self._alert(int(row["incident_id"]))
        if row["sent_at"] is not None:  # a dead replica sent it: never twice, only verify
            before = Figures(**(row["request"] or {}).get("before", {"at": float(row["sent_at"])}))
            return await self._verify(row, entry, alert, before, float(row["sent_at"]), {"resumed": True})
        try:
            fleet = await pm.fleet()
        except ControlPlaneError as exc:
            return await self._finish(row, "failed", {"error": f"precondition: {exc}"}, None)
        problem = self.precondition(action, fleet)
        if problem is not None:
            return await self._finish(row, "failed", {"error": f"precondition: {problem}"}, None)
        before = await self.verifier.measure(entry, alert)
        path, body = request_for(action.action, action.target, dict(action.params))
        request = {"path": path, "body": body, "before": before.as_dict()}
        if not await self._advance(row, status="running", request=request, sent_at=time.time()):
            return None
        try:
            answer = await pm.request(path, body)
        except ControlPlaneError as exc:
            return await self._finish(row, "failed", {"error": str(exc), "status": exc.status}, None)
        sent_at = time.time()
        if not await self._advance(row, status="verifying", result={"answer": _small(answer)}):
            return None
        await self._wait_for_operation(pm, row)
        return await self._verify(row, entry, alert, before, sent_at, {"answer": _small(answer)})

    def precondition(self, action: ProposedAction, fleet: Fleet) -> str | None:
        """Why ``action`` may not run on ``fleet`` now, or None."""
        if fleet.operation:
            return f"another operation is in progress ({fleet.operation.get('kind')})"
        if action.action == "rollback" and action.params.get("version") != fleet.previous_version:
            return (
                f"rollback goes to the previous deployed version {fleet.previous_version}, "
                f"not {action.params.get('version')} (current {fleet.current_version})"
            )
        return fleet_check(
            fleet.names, action, running=fleet.running, in_service=len(fleet.in_service), bounds=self.bounds
        )

    async def _wait_for_operation(self, pm: ProcessManager, row: Row) -> None:
        """Wait until the operation the request started (a rolling deploy, a scale) has ended."""
        deadline = time.monotonic() + self.verifier.verify_s
        while time.monotonic() < deadline:
            try:
                if (await pm.fleet()).operation is None:
                    return
            except ControlPlaneError as exc:
                log.warning("remediation %d: %s", row["id"], exc)
            if not await self._advance(row):
                return
            await asyncio.sleep(OPERATION_POLL_S)

    async def _verify(
        self,
        row: Row,
        entry: ServiceEntry,
        alert: tuple[str, dict[str, str]] | None,
        before: Figures,
        started_at: float,
        result: dict[str, Any],
    ) -> str | None:
        async def heartbeat() -> bool:
            return await self._advance(row)

        verification = await self.verifier.watch(entry, alert, before, started_at, heartbeat)
        if verification["claim_lost"]:
            return None
        status = "recovered" if verification["recovered"] else "not_recovered"
        return await self._finish(row, status, result, verification)

    async def _advance(self, row: Row, **values: Any) -> bool:
        async with self.store.write() as conn:
            held = await remediations.advance(
                conn, int(row["id"]), self.replica_id, time.time(), self.lease_s, **values
            )
        if not held:
            log.warning("remediation %d: claim lost, another replica carries it on", row["id"])
        return held

    async def _finish(
        self, row: Row, status: str, result: dict[str, Any], verification: dict[str, Any] | None
    ) -> str | None:
        now = time.time()
        incident_id = int(row["incident_id"])
        text = outcome_text(row, status, result, verification)
        if status != "recovered":
            text += await self._next_step(incident_id)
        async with self.store.write() as conn:
            done = await remediations.finish(
                conn, int(row["id"]), self.replica_id, status, now, result=result, verification=verification
            )
            if not done:
                return None
            event = {"remediation_id": row["id"], "status": status, "action": row["action"], "target": row["target"]}
            event.update(params=row["params"], result=result, verification=verification, by=row["decided_by"])
            await timeline.add(conn, incident_id, "remediation_result", event)
            to = [row["decided_by"]] if str(row["decided_by"]).startswith("whatsapp:") else None
            key = f"incident:{incident_id}:remediation:{row['id']}:{status}"
            await self.sender.queue(conn, text, incident_id=incident_id, event=key, to=to, now=now)
        self.sender.wake()
        return status

    async def _next_step(self, incident_id: int) -> str:
        """The next undecided option of the incident's diagnosis to approve, or the advice to escalate."""
        async with self.store.read() as conn:
            incident = await incidents.get(conn, incident_id)
            if incident is None:
                return ""
            rows = await remediations.for_incident(conn, incident_id)
        decided = {r["number"] for r in rows if r["proposal_key"] == remediations.proposal_key(incident)}
        options = (incident.get("diagnosis") or {}).get("proposed_actions") or []
        for number, option in enumerate(options, 1):
            if number not in decided:
                action = ProposedAction.model_validate(option)
                return f" Next: option {number} ({describe(action)}): reply #{incident_id} approve {number}."
        return " No other option is proposed: escalate, or act by hand."

    async def _alert(self, incident_id: int) -> tuple[str, dict[str, str]] | None:
        async with self.store.read() as conn:
            incident = await incidents.get(conn, incident_id)
        labels = dict((incident or {}).get("common_labels") or {})
        name = labels.pop("alertname", None)
        return (str(name), labels) if name else None


def _small(answer: dict[str, Any]) -> dict[str, Any]:
    """The control plane's answer, without bulky fields (kept for the audit trail)."""
    keep = ("name", "state", "version", "pid", "status", "id", "to_version", "from_version", "replicas", "ok", "error")
    return {k: answer[k] for k in keep if k in answer} or {"keys": sorted(answer)[:20]}


def outcome_text(row: Row, status: str, result: dict[str, Any], verification: dict[str, Any] | None) -> str:
    """The WhatsApp notice of an execution's outcome, with the before/after figures."""
    action = ProposedAction.model_validate(
        {"action": row["action"], "target": row["target"], "params": row["params"], "risk": row["risk"]}
    )
    ref = f"#{row['incident_id']} option {row['number']} ({describe(action)}, approved by {row['decided_by']})"
    if status == "failed":
        return f"⚠️ {ref} did not run: {result.get('error')}. Nothing changed."
    figures = figures_text(verification or {})
    if status == "recovered":
        return f"✅ {ref}: recovered in {(verification or {}).get('after_s', 0):.0f} s: {figures}."
    waited = (verification or {}).get("after_s", 0)
    return f"❌ {ref}: not recovered after {waited:.0f} s: {figures}."
