"""Deterministic investigation engine used without a model (or when the model fails).

It drives the same tools through the same path as the model loop (``execute_tool_calls`` with
planned calls, every call recorded), those of the incident's service (``ServiceContext``):

1. in parallel, as far as the service's catalog entry has the sources: ``evaluate_alert_rule`` (the
   paging alert's own expression and the series breaching it now), ``fetch_logs``, ``compute_error_rate``,
   ``get_recent_changes``, ``get_deployed_versions``, ``get_client_view`` (the load balancer's view),
   ``get_load`` (request rate against its baseline), ``find_similar_incidents`` and ``query_prometheus``
   for the service's per-replica p99 latency, CPU, CPU per request, RSS, RSS growth, ``up``, scrape
   success and restarts;
2. ``fetch_code_from_github`` for the file:line the dominant stack trace points at (code exceptions only);
3. ``send_diagnosis``.

The detectors (``crash``, ``errors``, ``saturation``, ``memory``, ``load``) are pure functions of the
``Observations``; ``verdict`` makes the finding that explains the paging alert the headline.
"""

from __future__ import annotations

import json
from typing import Any

from oncall.diagnosis import Diagnosis, Evidence, FaultType
from oncall.investigate.context import ServiceContext
from oncall.investigate.engines.base import EngineResult, RecordSink
from oncall.investigate.engines.offline.crash import detect_crash
from oncall.investigate.engines.offline.deploys import correlate_deploys
from oncall.investigate.engines.offline.errors import detect_errors
from oncall.investigate.engines.offline.load import detect_overload
from oncall.investigate.engines.offline.memory import detect_memory
from oncall.investigate.engines.offline.observations import (
    CHANGES_WINDOW_S,
    CODE_CONTEXT_LINES,
    ERROR_RATE_WINDOW,
    LOG_LIMIT,
    LOG_WINDOW_S,
    Candidate,
    Observations,
    finite,
    split_log_groups,
)
from oncall.investigate.engines.offline.saturation import detect_saturation
from oncall.investigate.engines.offline.service_fields import add_service_fields
from oncall.investigate.engines.offline.verdict import diagnosis_fields
from oncall.investigate.toolloop import ToolCallRecord, ToolSpec, execute_tool_calls
from oncall.investigate.tools import ToolFactory

ENGINE_NAME = "offline"
DETECTORS = (detect_crash, detect_errors, detect_saturation, detect_memory, detect_overload)
CODE_SUPPORT = 0.15
"""Weight 0-1 the failing source line adds to a code finding (the line read at the deployed version)."""
CODE_FAULTS = (FaultType.code_bug, FaultType.deploy_regression)


def new_observations(context: ServiceContext) -> Observations:
    """Empty observations of ``context``'s service: its name, round-1 queries, catalog standing and onset."""
    control = context.entry.control_plane
    return Observations(
        service=context.name,
        queries=context.queries.evidence() if context.queries else {},
        in_catalog=context.in_catalog,
        gaps=list(context.gaps),
        onset=context.onset,
        alerts=list(context.alerts),
        replica_label=context.replica_label,
        latency_objective_s=context.latency_objective_s,
        max_replicas=control.max_replicas if control is not None else None,
    )


def observe(records: dict[str, ToolCallRecord], obs: Observations, replica_label: str = "replica") -> Observations:
    """Round-1 records by evidence key -> ``obs`` (failed calls listed in ``failed``); metric series are
    keyed by their ``replica_label`` label."""
    for key, record in records.items():
        if not record.ok:
            if key != "rule":  # an alert without a rule here (another Prometheus's) only loses the focus
                obs.failed.append(f"{record.tool}({record.arguments}): {record.error}")
            continue
        if key in obs.queries:
            obs.metrics[key] = finite(
                {
                    s["labels"].get(replica_label): s.get("value")
                    for s in record.result.get("result", [])
                    if s["labels"].get(replica_label)
                }
            )
        else:
            setattr(obs, key, record.result)
    obs.current_log_groups, obs.context = split_log_groups(obs.logs)
    return obs


def candidates(obs: Observations) -> list[Candidate]:
    """Every detector's candidates, strongest first, with a recent deploy correlated to what it explains."""
    found = sorted((candidate for detect in DETECTORS for candidate in detect(obs)), key=lambda c: -c.score)
    return correlate_deploys(obs, found)


def round_one(context: ServiceContext, tools: dict[str, ToolSpec]) -> list[tuple[str, str, dict[str, Any]]]:
    """The first round's calls (evidence key, tool, arguments): every tool the service's catalog entry allows."""
    planned: list[tuple[str, str, dict[str, Any]]] = [
        ("logs", "fetch_logs", {"seconds": LOG_WINDOW_S, "limit": LOG_LIMIT}),
        ("errors", "compute_error_rate", {"window": ERROR_RATE_WINDOW}),
        ("changes", "get_recent_changes", {"since_seconds": CHANGES_WINDOW_S}),
        ("versions", "get_deployed_versions", {}),
        ("clients", "get_client_view", {}),
        ("load", "get_load", {}),
        ("similar", "find_similar_incidents", {}),
    ]
    calls = [call for call in planned if call[1] in tools]
    firing = [a for a in context.alerts if a.get("status", "firing") == "firing"] or list(context.alerts)
    labels = next((dict(a["labels"]) for a in firing if (a.get("labels") or {}).get("alertname")), None)
    if labels:  # the paging alert's own expression: the focus of the investigation
        labels = {k: str(v) for k, v in labels.items()}
        calls.append(("rule", "evaluate_alert_rule", {"alertname": labels["alertname"], "labels": labels}))
    queries = context.queries.evidence() if context.queries else {}
    return calls + [(key, "query_prometheus", {"query": query}) for key, query in queries.items()]


def code_version(candidate: Candidate, obs: Observations) -> str | None:
    """The version the failing code ran (the most logged version of its exception group), if known."""
    for group in obs.current_log_groups:
        if group.get("file") == candidate.affected_file and group.get("versions"):
            return str(next(iter(group["versions"])))
    return None


def add_code_evidence(candidate: Candidate, record: ToolCallRecord, obs: Observations) -> None:
    """Quote the failing source line in the code-bug candidate (or note that it could not be read)."""
    if not record.ok:
        obs.failed.append(f"fetch_code_from_github: {record.error}")
        return
    focus = record.result.get("focus_text", "")
    at = f" at {record.result['version']}" if record.result.get("version") else ""
    candidate.evidence.insert(
        1,
        Evidence(
            tool="fetch_code_from_github",
            query=f"{candidate.affected_file}:{candidate.affected_line}{at} ({record.result.get('source')})",
            finding=f"line {candidate.affected_line}: {focus or '(empty)'}",
        ),
    )
    candidate.root_cause += f" The failing line is `{focus}`."
    candidate.back("code", CODE_SUPPORT)


class OfflineEngine:
    """Deterministic investigator over the investigation tools (see module docstring).

    Args:
        factory: builds the tools of an incident's service (``ToolFactory``).
    """

    name = ENGINE_NAME

    def __init__(self, factory: ToolFactory) -> None:
        self.factory = factory

    async def _round(
        self,
        tools: dict[str, ToolSpec],
        round_no: int,
        calls: list[tuple[str, str, dict[str, Any]]],
        on_record: RecordSink,
    ) -> dict[str, ToolCallRecord]:
        planned = [(f"offline-{round_no}-{key}", tool, json.dumps(args)) for key, tool, args in calls]
        records = await execute_tool_calls(planned, tools, round_no)
        await on_record(records)
        return {key: record for (key, _, _), record in zip(calls, records, strict=True)}

    async def run(self, incident: dict[str, Any], alerts: list[dict[str, Any]], on_record: RecordSink) -> EngineResult:
        """Investigate ``incident`` with its ``alerts``; every tool call goes to ``on_record``.

        Raises:
            RuntimeError: ``send_diagnosis`` rejected the engine's own output (a bug).
        """
        investigation = self.factory.for_incident(incident, alerts)
        context, tools = investigation.context, investigation.specs(self.name)
        records = await self._round(tools, 1, round_one(context, tools), on_record)
        obs = observe(records, new_observations(context), context.replica_label)
        found = candidates(obs)
        rounds = 1
        code_candidate = next((c for c in found if c.fault_type in CODE_FAULTS and c.affected_file), None)
        if code_candidate is not None and "fetch_code_from_github" in tools:
            rounds += 1
            args = {
                "path": code_candidate.affected_file,
                "line": code_candidate.affected_line,
                "context_lines": CODE_CONTEXT_LINES,
                "version": code_version(code_candidate, obs),
            }
            code = (await self._round(tools, rounds, [("code", "fetch_code_from_github", args)], on_record))["code"]
            add_code_evidence(code_candidate, code, obs)
        fields = add_service_fields(diagnosis_fields(obs, found, alerts), obs)
        rounds += 1
        final = (await self._round(tools, rounds, [("diagnosis", "send_diagnosis", fields)], on_record))["diagnosis"]
        if not final.ok:
            raise RuntimeError(f"offline engine produced an invalid diagnosis: {final.error}")
        return EngineResult(Diagnosis.model_validate(final.result), rounds)
