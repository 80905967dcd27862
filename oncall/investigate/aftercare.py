"""What the agent adds to every engine's diagnosis from its own measurements and history (``AGENT_FIELDS``).

After an engine's ``send_diagnosis`` the agent:

1. measures what clients experienced since the onset (``measure_impact``, recorded in the audit trail
   like any tool call) and fills ``impact``: requests, failed requests and their share, client
   timeouts, the failed routes, the affected replicas and the SLO error budget burned
   (``oncall.history.impact.budget_burned`` over a 30-day window); a priority below what clients
   experienced is raised (half the requests failed or more: P1; a tenth: P2);
2. fills ``similar_incidents`` with the three resolved incidents most like this one, compared with the
   diagnosis (``oncall.history.similar``);
3. checks the advice against the fleet: no step, fix or proposed action may take every replica out
   (``oncall.investigate.advice``).
"""

from __future__ import annotations

import logging
from typing import Any

from oncall.diagnosis import Diagnosis, FaultType, Impact
from oncall.history.impact import Slo, budget_burned
from oncall.investigate.advice import make_safe, unsafe_action
from oncall.investigate.engines.base import RecordSink
from oncall.investigate.history import IncidentHistory
from oncall.investigate.toolloop import execute_tool_calls
from oncall.investigate.tools import ToolFactory

log = logging.getLogger("oncall.investigation")

P1_FAILED_SHARE = 0.5
"""Share 0-1 of client requests failed since the onset that makes an incident at least P1."""
P2_FAILED_SHARE = 0.1
"""Share 0-1 that makes it at least P2."""


def priority_floor(priority: str, impact: Impact) -> str:
    """``priority`` raised to what clients experienced (never lowered)."""
    share = impact.failed_ratio or 0.0
    floor = 1 if share >= P1_FAILED_SHARE else 2 if share >= P2_FAILED_SHARE else 4
    return f"P{min(int(priority[1]), floor)}"


def impact_of(measured: dict[str, Any], diagnosis: Diagnosis, availability: float | None) -> Impact:
    """The diagnosis' ``impact`` from a ``measure_impact`` result and the service's availability SLO."""
    duration = float(measured.get("window_s") or 0.0)
    share = measured.get("failed_ratio")
    burned = budget_burned(share, duration, Slo(availability)) if availability else None
    return Impact(
        onset_at=measured.get("onset_at"),
        duration_s=duration,
        requests=measured.get("requests"),
        failed_requests=measured.get("failed_requests"),
        failed_ratio=min(1.0, share) if share is not None else None,
        client_timeouts=measured.get("client_timeouts"),
        affected_routes=list(measured.get("affected_routes") or []),
        affected_replicas=list(diagnosis.affected_replicas),
        error_budget_burned=round(burned, 6) if burned is not None else None,
    )


class Aftercare:
    """Completes every engine's diagnosis (see the module docstring).

    Args:
        factory: the investigation tools (``measure_impact`` of the incident's service).
        history: resolved incidents (None: no ``similar_incidents``).
    """

    def __init__(self, factory: ToolFactory, history: IncidentHistory | None = None) -> None:
        self.factory = factory
        self.history = history

    async def complete(
        self,
        incident: dict[str, Any],
        alerts: list[dict[str, Any]],
        diagnosis: Diagnosis,
        on_record: RecordSink,
        round_no: int,
    ) -> Diagnosis:
        """``diagnosis`` with ``impact``, ``similar_incidents`` and fleet-safe advice (round ``round_no``)."""
        tools = self.factory.for_incident(incident, alerts)
        [record] = await execute_tool_calls([("agent-impact", "measure_impact", "{}")], tools.agent_specs(), round_no)
        await on_record([record])
        update: dict[str, Any] = {}
        fleet = list(diagnosis.affected_replicas)
        if record.ok:
            slo = tools.context.entry.slo
            impact = impact_of(record.result, diagnosis, slo.availability if slo else None)
            update["impact"] = impact
            if diagnosis.fault_type not in (FaultType.none, FaultType.unknown):
                update["priority"] = priority_floor(diagnosis.priority, impact)
            fleet = list(record.result.get("fleet") or fleet)
        if self.history is not None:
            update["similar_incidents"] = await self._similar(int(incident["id"]), diagnosis)
        fields = make_safe(
            diagnosis.model_dump(mode="json"), fleet, overload=diagnosis.fault_type is FaultType.overload
        )
        update.update({k: fields[k] for k in ("next_steps", "suggested_fix")})
        update["proposed_actions"] = [a for a in diagnosis.proposed_actions if not unsafe_action(a.model_dump(), fleet)]
        return diagnosis.model_copy(update=update)

    async def _similar(self, incident_id: int, diagnosis: Diagnosis) -> list[Any]:
        assert self.history is not None
        try:
            matches = await self.history.similar(incident_id, diagnosis.model_dump(mode="json"))
        except LookupError:
            return []
        return [m.to_contract() for m in matches]
