"""The offline engine's verdict: the strongest candidate (or none) becomes the diagnosis fields."""

from __future__ import annotations

import json
from typing import Any

from oncall.diagnosis import Evidence, FaultType
from oncall.investigate.engines.offline import units
from oncall.investigate.engines.offline.observations import (
    ERROR_RATIO_ELEVATED,
    ERROR_RATIO_P1,
    ERROR_RATIO_P2,
    LOG_LIMIT,
    LOG_WINDOW_S,
    SECONDARY_MIN_SCORE,
    Candidate,
    Observations,
    deviating,
)

FAILED_TOOL_PENALTY = 0.1
"""Confidence (0-1) taken off per failed tool call."""
SUMMARY_MAX_CHARS = 500


def diagnosis_fields(obs: Observations, candidates: list[Candidate], alerts: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``send_diagnosis`` arguments for ``candidates`` (strongest first) and the incident's ``alerts``."""
    overall, per_replica = obs.error_ratios()
    critical = any(
        a.get("labels", {}).get("severity") == "critical" for a in alerts if a.get("status", "firing") == "firing"
    )
    penalty = FAILED_TOOL_PENALTY * len(obs.failed)
    if candidates:
        chosen, others = candidates[0], candidates[1:]
        fields = from_candidate(chosen, others, obs)
        fields["priority"] = priority(chosen, obs, overall, critical)
        fields["confidence"] = round(max(0.2, min(0.95, chosen.score - penalty)), 2)
    else:
        fields = no_candidate(obs, overall, per_replica)
        fields["confidence"] = round(max(0.1, fields["confidence"] - penalty), 2)
    fields["next_steps"].extend(obs.context)
    if obs.failed:
        fields["next_steps"].append("Some evidence was unavailable: " + "; ".join(f[:160] for f in obs.failed))
    fields["summary"] = fields["summary"][:SUMMARY_MAX_CHARS]
    return fields


def from_candidate(chosen: Candidate, others: list[Candidate], obs: Observations) -> dict[str, Any]:
    """Diagnosis fields of the chosen candidate; weaker ones are mentioned, independent strong ones add replicas."""
    root_cause = chosen.root_cause
    next_steps = list(chosen.next_steps)
    evidence = list(chosen.evidence)
    replicas = set(chosen.replicas)
    for other in others:
        where = ", ".join(other.replicas)
        if other.score >= SECONDARY_MIN_SCORE and not set(other.replicas) & replicas:
            replicas |= set(other.replicas)  # an independent fault on other replicas: they are affected too
        root_cause += f" Also observed (weaker evidence): {other.fault_type.value} on {where} - {other.summary}."
        next_steps.append(f"Also investigate {other.fault_type.value} on {where}: {other.summary}")
        evidence.extend(other.evidence[:1])
    return {
        "summary": chosen.summary,
        "root_cause": root_cause,
        "fault_type": chosen.fault_type.value,
        "affected_service": obs.service,
        "affected_replicas": sorted(replicas),
        "affected_file": chosen.affected_file,
        "affected_line": chosen.affected_line,
        "evidence": [e.model_dump() for e in evidence],
        "suggested_fix": chosen.suggested_fix,
        "next_steps": next_steps,
        "proposed_actions": list(chosen.actions),
    }


def _overview_evidence(obs: Observations, overall: float | None, per_replica: dict[str, float]) -> list[Evidence]:
    """What was looked at, when nothing stood out: error ratios, up, p99, CPU, RSS and the log counts."""
    evidence = []
    if obs.errors is not None:
        ratio = units.ratio(overall) if overall is not None else "n/a"
        evidence.append(
            Evidence(
                tool="compute_error_rate",
                query=obs.errors["queries"]["overall"],
                finding=f"overall error ratio {ratio}; per replica {units.fmt(per_replica, units.ratio) or 'n/a'}",
            )
        )
    formats = {"up": units.count, "p99": units.seconds, "cpu": units.cores, "rss": units.mib}
    for key, unit in formats.items():
        if obs.metrics.get(key):
            evidence.append(
                Evidence(tool="query_prometheus", query=obs.query(key), finding=units.fmt(obs.metrics[key], unit))
            )
    if obs.logs:
        top = obs.logs.get("by_exception_type", {})
        evidence.append(
            Evidence(
                tool="fetch_logs",
                query=f"GET /logs/tail?seconds={LOG_WINDOW_S}&limit={LOG_LIMIT}",
                finding=f"{obs.logs.get('count', 0)} ERROR entries; by exception type {json.dumps(top)}",
            )
        )
    return evidence


def no_candidate(obs: Observations, overall: float | None, per_replica: dict[str, float]) -> dict[str, Any]:
    """Diagnosis fields when no candidate stood out: unexplained errors, missing evidence, or a healthy system."""
    elevated = deviating(per_replica, ERROR_RATIO_ELEVATED)
    errors_high = bool(elevated) or (overall is not None and overall >= ERROR_RATIO_ELEVATED)
    ratio = units.ratio(overall) if overall is not None else "n/a"
    base = {
        "affected_service": obs.service,
        "affected_file": None,
        "affected_line": None,
        "evidence": [e.model_dump() for e in _overview_evidence(obs, overall, per_replica)],
        "suggested_fix": "",
    }
    if errors_high:
        dominant = next(iter(obs.logs.get("by_exception_type", {})), None) if obs.logs else None
        return {
            **base,
            "summary": f"Error ratio elevated on {', '.join(elevated) or 'the service'} with no identified cause",
            "root_cause": f"Errors are above baseline (overall {ratio}) but the logs do not point at a code location "
            f"or injected fault (dominant exception: {dominant or 'none logged'}). Inconclusive.",
            "fault_type": FaultType.unknown.value,
            "affected_replicas": elevated,
            "priority": "P2",
            "confidence": 0.4,
            "next_steps": ["Inspect the failing requests' logs and dependencies by hand"],
        }
    if obs.errors is None or not obs.metrics.get("up") or obs.logs is None:
        return {
            **base,
            "summary": "Inconclusive: evidence tools failed",
            "root_cause": "The investigation could not read enough evidence (metrics or logs unavailable) to confirm "
            "a fault or a healthy system.",
            "fault_type": FaultType.unknown.value,
            "affected_replicas": [],
            "priority": "P3",
            "confidence": 0.4,
            "next_steps": ["Check that Prometheus, the load balancer and the process manager are reachable"],
        }
    p99 = obs.metrics.get("p99", {})
    worst = units.seconds(max(p99.values())) if p99 else "n/a"
    return {
        **base,
        "summary": f"No fault found: error ratio {ratio}, p99 max {worst}, all {len(obs.metrics['up'])} replicas up",
        "root_cause": "The system looks healthy now: error ratio at baseline, latency normal, CPU and memory normal, "
        "every replica up and no recent crash.",
        "fault_type": FaultType.none.value,
        "affected_replicas": [],
        "priority": "P4",
        "confidence": 0.8,
        "next_steps": ["Check whether the alert threshold is too sensitive or the condition was transient"],
    }


def priority(chosen: Candidate, obs: Observations, overall: float | None, critical_alert: bool) -> str:
    """P1-P4 from impact (how many replicas, how many requests fail) and the alert severity."""
    fleet = max(1, len(obs.replicas))
    share = len(chosen.replicas) / fleet
    if chosen.fault_type is FaultType.instance_crash:
        up = obs.metrics.get("up", {})
        level = 1 if up and all(v == 0 for v in up.values()) else 2
    elif chosen.fault_type in (FaultType.code_bug, FaultType.injected_errors):
        ratio = overall or 0.0
        level = 1 if ratio >= ERROR_RATIO_P1 else 2 if ratio >= ERROR_RATIO_P2 else 3
    else:
        level = 2 if share >= 0.5 else 3
    if critical_alert:
        level = min(level, 2)
    return f"P{level}"
