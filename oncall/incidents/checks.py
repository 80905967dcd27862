"""On-demand checks and the remediation desk: what the API, the console and the conversation call.

A check (``POST /investigations {"service"}``, WhatsApp "check inventory") is an investigation without an
alert: an incident with the group key ``check:<service>:<epoch ms>``, labels ``alertname="OnDemandCheck"``
and ``service``, its episode's investigation queued in the same transaction and claimed by any replica like
any other (its diagnosis, with proposals, goes to the on-call numbers).
It has no alerts, so it never resolves by itself: the engineer resolves it.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from oncall.catalog.models import Catalog
from oncall.incidents import lifecycle
from oncall.remediation.decisions import proposals
from oncall.remediation.setup import Remediation
from oncall.store import incidents, remediations
from oncall.store.database import Store
from oncall.store.remediations import proposal_key
from oncall.store.views import incident_list
from oncall.tasks import BackgroundTasks

CHECK_ALERT = "OnDemandCheck"
PENDING_SCAN = 50


class Schedules(Protocol):
    """What checks need from ``oncall.incidents.scheduler.InvestigationScheduler``."""

    def wake(self) -> None: ...


class RemediationDesk:
    """Decisions on proposed actions, on-demand checks and the remediation status.

    Args:
        store: the agent database.
        catalog: the service catalog (known services).
        scheduler: runs the investigations.
        remediation: the executor and decisions (``oncall.remediation.setup.build_remediation``).
    """

    def __init__(self, store: Store, catalog: Catalog, scheduler: Schedules, remediation: Remediation) -> None:
        self.store = store
        self.catalog = catalog
        self.scheduler = scheduler
        self.remediation = remediation

    async def decide(self, incident_id: int, action_id: str, approve: bool, by: str) -> dict[str, Any]:
        """The console's hook (see ``oncall.remediation.decisions.Decisions.decide``)."""
        return await self.remediation.decisions.decide(incident_id, action_id, approve, by)

    async def record(self, incident_id: int, number: int, approve: bool, by: str, *, via: str) -> dict[str, Any]:
        """Approve or reject an option (see ``oncall.remediation.decisions.Decisions.record``)."""
        return await self.remediation.decisions.record(incident_id, number, approve, by, via=via)

    async def start_check(self, service: str, by: str) -> int:
        """Open an on-demand check incident of ``service`` for ``by`` and schedule its investigation.

        Raises:
            LookupError: the catalog has no such service.
        """
        if self.catalog.get(service) is None:
            known = ", ".join(s.name for s in self.catalog.services)
            raise LookupError(f"unknown service {service!r} (the catalog has: {known})")
        now = time.time()
        labels = {"alertname": CHECK_ALERT, "service": service}
        values = {
            "group_key": f"check:{service}:{int(now * 1000)}",
            "title": f"On-demand check of {service}",
            "service": service,
            "severity": "info",
            "group_labels": labels,
            "common_labels": labels,
            "common_annotations": {"summary": f"{by} asked for a check of {service}"},
            "created_at": now,
            "updated_at": now,
        }
        async with self.store.write() as conn:
            incident, _ = await lifecycle.open_or_lock(conn, values, f"on-demand check by {by}", now)
            incident_id = int(incident["id"])
            await lifecycle.queue_investigation(conn, incident_id, int(incident["episode"]), now)
        self.scheduler.wake()  # any replica's scheduler may claim it; this one looks at once
        return incident_id

    async def resume(self, tasks: BackgroundTasks) -> list[int]:
        """At start: run the approved actions nobody executes (a dead replica's, or this one's before a restart),
        then keep taking over the ones whose replica dies (every half ``REMEDIATION_LEASE_S``)."""
        executor = self.remediation.executor
        tasks.spawn_daemon(executor.watch(executor.lease_s / 2), "remediation-takeover")
        return await executor.resume()

    async def check(self, service: str, by: str) -> str:
        """The WhatsApp answer to "check <service>": the check started, or why not."""
        try:
            incident_id = await self.start_check(service, by)
        except LookupError as exc:
            return f"Cannot check: {exc}."
        return f"Checking {service} now as #{incident_id}; the diagnosis follows in a moment."

    async def status(self) -> dict[str, Any]:
        """``GET /status``'s remediation part: safety mode, pending approvals, recent actions with results."""
        settings = self.remediation.settings
        now = time.time()
        async with self.store.read() as conn:
            firing = await incident_list(conn, status="firing", limit=PENDING_SCAN)
            pending = []
            for summary in firing:
                incident = await incidents.get(conn, int(summary["id"]))
                if incident is None or now - float(incident.get("diagnosed_at") or 0) > settings.approval_ttl_s:
                    continue
                for number, action in enumerate(proposals(incident), 1):
                    if await remediations.decision(conn, int(incident["id"]), proposal_key(incident), number) is None:
                        pending.append(
                            {
                                "incident_id": incident["id"],
                                "number": number,
                                **action.model_dump(mode="json"),
                                "expires_at": float(incident["diagnosed_at"]) + settings.approval_ttl_s,
                            }
                        )
            recent = await remediations.recent(conn, 20)
        return {
            "safety_mode": settings.safety_mode,
            "approval_ttl_s": settings.approval_ttl_s,
            "verify_s": settings.verify_s,
            "pending_approvals": pending,
            "recent_actions": [_action_view(row) for row in recent],
        }


def _action_view(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("id", "incident_id", "number", "service", "action", "target", "params", "risk", "status")
    view = {key: row[key] for key in keep}
    view.update(
        decided_by=row["decided_by"],
        decided_at=row["decided_at"],
        finished_at=row["finished_at"],
        result=row["result"],
        verification=row["verification"],
    )
    return view
