"""Approving and rejecting proposed actions: who may, when, and what is recorded.

A proposal is option ``number`` (1-based) of the incident's stored diagnosis (``proposed_actions``); its
``proposal_key`` is the diagnosis' ``diagnosed_at``, so a newer diagnosis makes new options. Approval
rules, in order (each refusal is answered with its reason and recorded on the timeline, nothing runs):

1. the incident and its option ``number`` exist (else LookupError);
2. ``SAFETY_MODE=read-only``: refused (proposals only);
3. over WhatsApp the approver is an on-call number (``oncall.roster.chain.allowed_senders``: the roster's
   people and ``ONCALL_WHATSAPP_NUMBERS``); the console checks its responder role itself;
4. the incident is firing and the diagnosis is younger than ``APPROVAL_TTL_S``;
5. the option was not decided before (an approval received twice runs once: the decision row is unique);
6. the service has a control plane, and the guardrails' budget and circuit breaker allow one more action.

The decision row and its ``remediation_approved`` / ``remediation_rejected`` timeline event (approver,
time, action) commit in one transaction; the execution then runs in the background (``executor``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from oncall.catalog.models import Catalog
from oncall.diagnosis import ProposedAction
from oncall.remediation.catalogue import describe, normalise
from oncall.remediation.guardrails import HOUR_S, budget_check
from oncall.store import incidents, remediations, timeline
from oncall.store.database import Connection, Store
from oncall.store.remediations import proposal_key
from oncall.store.rows import Row

SafetyMode = str
"""``approve`` | ``auto-low-risk`` | ``read-only`` (``SAFETY_MODE``)."""


class Executes(Protocol):
    """What decisions need from ``executor.Executor``."""

    def start(self, remediation_id: int) -> None: ...


@dataclass(frozen=True)
class Policy:
    """The settings decisions follow (see ``oncall.settings``)."""

    safety_mode: SafetyMode = "approve"
    approval_ttl_s: float = 900.0
    max_per_incident: int = 3
    max_per_hour: int = 6


def proposals(incident: Row) -> list[ProposedAction]:
    """The stored diagnosis' proposed actions (the numbered options), [] without a diagnosis."""
    diagnosis = incident.get("diagnosis") or {}
    return [ProposedAction.model_validate(a) for a in diagnosis.get("proposed_actions") or []]


class Decisions:
    """Approves and rejects proposals (see module docstring).

    Args:
        store: the agent database.
        catalog: the service catalog (a service's ``control_plane``).
        executor: runs approved actions.
        policy: safety mode, approval TTL and budgets.
        allowed_senders: the WhatsApp numbers that may approve (read at each decision).
    """

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        executor: Executes,
        policy: Policy,
        allowed_senders: Callable[[], frozenset[str]],
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.executor = executor
        self.policy = policy
        self.allowed_senders = allowed_senders

    async def decide(self, incident_id: int, action_id: str, approve: bool, by: str) -> dict[str, Any]:
        """The console's hook (``oncall.console.actions.RemediationDecisions``): option ``action_id`` (its number).

        Raises:
            LookupError: unknown incident or option. ValueError: the option no longer waits for a decision
                (decided, stale, resolved, refused by the safety mode or a guardrail).
        """
        if not action_id.isdigit():
            raise LookupError(f"no proposed action {action_id!r}")
        outcome = await self.record(incident_id, int(action_id), approve, by, via="console")
        if not outcome["ok"]:
            raise ValueError(outcome["message"])
        return outcome

    async def record(self, incident_id: int, number: int, approve: bool, by: str, *, via: str) -> dict[str, Any]:
        """Approve (``approve``) or reject option ``number`` of the incident for ``by``.

        Args:
            via: ``whatsapp`` (``by`` is the sender's number, checked against the on-call numbers) or ``console``.
        Returns:
            ``{"ok": bool, "message": str, "remediation_id": int | None}``; a refusal has ``ok`` False.
        Raises:
            LookupError: unknown incident or option.
        """
        now = time.time()
        async with self.store.write() as conn:
            incident = await incidents.get(conn, incident_id)
            if incident is None:
                raise LookupError(f"incident {incident_id} not found")
            options = proposals(incident)
            if not 1 <= number <= len(options):
                raise LookupError(f"incident #{incident_id} has no proposed action {number} ({len(options)} proposed)")
            action = normalise(options[number - 1])
            refusal = await self._refusal(conn, incident, action, number, approve, by, via, now)
            if refusal is not None:
                await timeline.add(conn, incident_id, "remediation_refused", _event(action, number, by, via, refusal))
                return {"ok": False, "message": refusal, "remediation_id": None}
            remediation_id = await remediations.decide(
                conn,
                incident_id=incident_id,
                proposal_key=proposal_key(incident),
                number=number,
                service=str((incident.get("diagnosis") or {}).get("affected_service") or incident.get("service")),
                action=action.model_dump(mode="json"),
                status="approved" if approve else "rejected",
                decided_by=by,
                now=now,
            )
            if remediation_id is None:  # a concurrent approval of the same option won
                return {"ok": False, "message": await self._already(conn, incident, number), "remediation_id": None}
            kind = "remediation_approved" if approve else "remediation_rejected"
            await timeline.add(
                conn, incident_id, kind, {**_event(action, number, by, via), "remediation_id": remediation_id}
            )
        if approve:
            self.executor.start(remediation_id)
        return {"ok": True, "message": _answer(incident_id, number, action, approve), "remediation_id": remediation_id}

    async def _refusal(
        self,
        conn: Connection,
        incident: Row,
        action: ProposedAction,
        number: int,
        approve: bool,
        by: str,
        via: str,
        now: float,
    ) -> str | None:
        """Why this decision may not be recorded, or None (rules 2-6 of the module docstring)."""
        incident_id = int(incident["id"])
        if approve and self.policy.safety_mode == "read-only":
            return (
                f"Not run: SAFETY_MODE is read-only, so the agent only proposes. Carry out "
                f"'{describe(action)}' by hand if you want it (#{incident_id} option {number})."
            )
        if via == "whatsapp" and by not in self.allowed_senders():
            return "Not run: approvals are accepted only from an on-call number."
        if incident.get("status") != "firing":
            return f"Not run: #{incident_id} is {incident.get('status')}; its proposals no longer apply."
        age = now - float(incident.get("diagnosed_at") or 0.0)
        if age > self.policy.approval_ttl_s:
            return (
                f"Not run: option {number} of #{incident_id} was proposed {round(age / 60)} min ago, longer than "
                f"APPROVAL_TTL_S={self.policy.approval_ttl_s:g} s. Send check <service> for a fresh diagnosis."
            )
        if await remediations.decision(conn, incident_id, proposal_key(incident), number) is not None:
            return await self._already(conn, incident, number)
        return await self._budget_refusal(conn, incident, approve) if approve else None

    async def _budget_refusal(self, conn: Connection, incident: Row, approve: bool) -> str | None:
        service = str((incident.get("diagnosis") or {}).get("affected_service") or incident.get("service"))
        entry = self.catalog.get(service)
        if entry is None or entry.control_plane is None:
            return f"Not run: the service catalog gives {service} no control plane, so the agent cannot act on it."
        since = time.time() - HOUR_S
        reason = budget_check(
            service=service,
            incident_actions=await remediations.executed_count(conn, since=0.0, incident_id=int(incident["id"])),
            service_actions_last_hour=await remediations.executed_count(conn, since=since, service=service),
            last_outcomes=await remediations.last_outcomes(conn, service, since, 2),
            max_per_incident=self.policy.max_per_incident,
            max_per_hour=self.policy.max_per_hour,
        )
        return None if reason is None else f"Not run: {reason}."

    async def _already(self, conn: Connection, incident: Row, number: int) -> str:
        row = await remediations.decision(conn, int(incident["id"]), proposal_key(incident), number)
        if row is None:
            return f"Option {number} of #{incident['id']} is being decided right now; nothing more to do."
        when = time.strftime("%H:%M:%S UTC", time.gmtime(float(row["decided_at"])))
        decided = "rejected" if row["status"] == "rejected" else "approved"
        now = str(row["status"]).replace("_", " ")
        return (
            f"Option {number} of #{incident['id']} was already {decided} by {row['decided_by']} at {when} "
            f"(now {now}); it runs once, nothing more done."
        )


def _event(action: ProposedAction, number: int, by: str, via: str, reason: str | None = None) -> dict[str, Any]:
    event = {
        "number": number,
        "by": by,
        "via": via,
        **action.model_dump(mode="json", include={"action", "target", "params", "risk"}),
    }
    return {**event, "reason": reason} if reason else event


def _answer(incident_id: int, number: int, action: ProposedAction, approve: bool) -> str:
    if not approve:
        return f"OK, option {number} of #{incident_id} ({describe(action)}) rejected; nothing runs."
    return (
        f"Approved option {number} of #{incident_id}: {describe(action)} ({action.risk} risk). "
        "Running it through the process manager now; I will report the verified result."
    )
