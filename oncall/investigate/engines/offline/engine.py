"""Deterministic investigation engine used without a model (or when the model fails).

It drives the same tools through the same path as the model loop (``execute_tool_calls`` with
planned calls, every call recorded):

1. in parallel: ``fetch_logs``, ``compute_error_rate``, ``get_recent_changes`` and
   ``query_prometheus`` for per-replica p99 latency, CPU, RSS, RSS growth, ``up`` and restarts;
2. ``fetch_code_from_github`` for the file:line the dominant stack trace points at (code exceptions only);
3. ``send_diagnosis``.

The detectors (``crash``, ``errors``, ``saturation``, ``memory``) are pure functions of the
``Observations``; ``verdict`` turns the strongest candidate into the diagnosis.
"""

from __future__ import annotations

import json
from typing import Any

from oncall.diagnosis import Diagnosis, Evidence, FaultType
from oncall.investigate.engines.base import EngineResult, RecordSink
from oncall.investigate.engines.offline.crash import detect_crash
from oncall.investigate.engines.offline.errors import detect_errors
from oncall.investigate.engines.offline.memory import detect_memory
from oncall.investigate.engines.offline.observations import (
    CHANGES_WINDOW_S,
    CODE_CONTEXT_LINES,
    ERROR_RATE_WINDOW,
    LOG_LIMIT,
    LOG_WINDOW_S,
    QUERIES,
    Candidate,
    Observations,
    finite,
    split_log_groups,
)
from oncall.investigate.engines.offline.saturation import detect_saturation
from oncall.investigate.engines.offline.verdict import diagnosis_fields
from oncall.investigate.toolloop import ToolCallRecord, ToolSpec, execute_tool_calls

ENGINE_NAME = "offline"
DETECTORS = (detect_crash, detect_errors, detect_saturation, detect_memory)


def observe(records: dict[str, ToolCallRecord]) -> Observations:
    """Round-1 records by evidence key -> ``Observations`` (failed calls listed in ``failed``)."""
    obs = Observations()
    for key, record in records.items():
        if not record.ok:
            obs.failed.append(f"{record.tool}({record.arguments}): {record.error}")
            continue
        if key in QUERIES:
            obs.metrics[key] = finite(
                {
                    s["labels"].get("replica"): s.get("value")
                    for s in record.result.get("result", [])
                    if s["labels"].get("replica")
                }
            )
        else:
            setattr(obs, key, record.result)
    obs.current_log_groups, obs.context = split_log_groups(obs.logs)
    return obs


def candidates(obs: Observations) -> list[Candidate]:
    """Every detector's candidates, strongest first."""
    found = [candidate for detect in DETECTORS for candidate in detect(obs)]
    return sorted(found, key=lambda c: -c.score)


def add_code_evidence(candidate: Candidate, record: ToolCallRecord, obs: Observations) -> None:
    """Quote the failing source line in the code-bug candidate (or note that it could not be read)."""
    if not record.ok:
        obs.failed.append(f"fetch_code_from_github: {record.error}")
        return
    focus = record.result.get("focus_text", "")
    candidate.evidence.insert(
        1,
        Evidence(
            tool="fetch_code_from_github",
            query=f"{candidate.affected_file}:{candidate.affected_line}",
            finding=f"line {candidate.affected_line}: {focus or '(empty)'}",
        ),
    )
    candidate.root_cause += f" The failing line is `{focus}`."


class OfflineEngine:
    """Deterministic investigator over the investigation tools (see module docstring).

    Args:
        tools: the investigation tool specs by name (``InvestigationTools.specs("offline")``).
    """

    name = ENGINE_NAME

    def __init__(self, tools: dict[str, ToolSpec]) -> None:
        self.tools = tools

    async def _round(
        self, round_no: int, calls: list[tuple[str, str, dict[str, Any]]], on_record: RecordSink
    ) -> dict[str, ToolCallRecord]:
        planned = [(f"offline-{round_no}-{key}", tool, json.dumps(args)) for key, tool, args in calls]
        records = await execute_tool_calls(planned, self.tools, round_no)
        await on_record(records)
        return {key: record for (key, _, _), record in zip(calls, records, strict=True)}

    async def run(self, incident: dict[str, Any], alerts: list[dict[str, Any]], on_record: RecordSink) -> EngineResult:
        """Investigate ``incident`` with its ``alerts``; every tool call goes to ``on_record``.

        Raises:
            RuntimeError: ``send_diagnosis`` rejected the engine's own output (a bug).
        """
        round1: list[tuple[str, str, dict[str, Any]]] = [
            ("logs", "fetch_logs", {"seconds": LOG_WINDOW_S, "limit": LOG_LIMIT}),
            ("errors", "compute_error_rate", {"window": ERROR_RATE_WINDOW}),
            ("changes", "get_recent_changes", {"since_seconds": CHANGES_WINDOW_S}),
            *[(key, "query_prometheus", {"query": query}) for key, query in QUERIES.items()],
        ]
        obs = observe(await self._round(1, round1, on_record))
        found = candidates(obs)
        rounds = 1
        code_candidate = next((c for c in found if c.fault_type is FaultType.code_bug and c.affected_file), None)
        if code_candidate is not None:
            rounds += 1
            args = {
                "path": code_candidate.affected_file,
                "line": code_candidate.affected_line,
                "context_lines": CODE_CONTEXT_LINES,
            }
            code = (await self._round(rounds, [("code", "fetch_code_from_github", args)], on_record))["code"]
            add_code_evidence(code_candidate, code, obs)
        fields = diagnosis_fields(obs, found, alerts)
        rounds += 1
        final = (await self._round(rounds, [("diagnosis", "send_diagnosis", fields)], on_record))["diagnosis"]
        if not final.ok:
            raise RuntimeError(f"offline engine produced an invalid diagnosis: {final.error}")
        return EngineResult(Diagnosis.model_validate(final.result), rounds)
