"""The verdict when no finding explains the alert that paged: a healthy system (``none``), unexplained
errors or an alert that holds without a cause (``unknown``), or too little evidence (``unknown``).

A healthy verdict's confidence is computed like a finding's (``confidence.combine``): the paging
alert's own expression not holding now, the service's metrics and the clients' view at baseline, no
current error group in the logs and every target answering scrapes each back it; targets that stopped
answering and other findings speak against it.
"""

from __future__ import annotations

import json
from typing import Any

from oncall.diagnosis import Evidence, FaultType
from oncall.investigate.engines.offline import clients, units
from oncall.investigate.engines.offline.confidence import combine
from oncall.investigate.engines.offline.focus import Focus
from oncall.investigate.engines.offline.hypotheses import Assessed, plain
from oncall.investigate.engines.offline.load import context_line, surge
from oncall.investigate.engines.offline.observations import (
    CLIENT_ERRORS_ELEVATED,
    ERROR_RATIO_ELEVATED,
    LOG_LIMIT,
    LOG_WINDOW_S,
    MIN_ERROR_LOGS,
    P99_HIGH_S,
    Observations,
    deviating,
)

UNKNOWN_CONFIDENCE = 0.3
"""Confidence stated with an inconclusive (``unknown``) verdict."""


def overview_evidence(obs: Observations, overall: float | None, per_replica: dict[str, float]) -> list[Evidence]:
    """What was looked at: error ratios, up, p99, CPU, RSS, the clients' view, the load and the log counts."""
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
                Evidence(tool="query_prometheus", query=obs.query(key), finding=units.shown(obs, key, unit))
            )
    seen = clients.evidence(obs, obs.replicas)
    if seen is not None:
        evidence.append(seen)
    line = context_line(obs)
    if line:
        evidence.append(Evidence(tool="get_load", query="get_load", finding=line))
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


def _metrics_healthy(obs: Observations, per_replica: dict[str, float]) -> bool:
    p99 = obs.metrics.get("p99", {})
    return (
        obs.errors is not None
        and not deviating(per_replica, ERROR_RATIO_ELEVATED)
        and all(v < P99_HIGH_S for v in p99.values())
    )


def _clients_healthy(obs: Observations) -> bool:
    seen = clients.overall(obs)
    return (
        bool(seen)
        and seen.get("error_ratio", 0.0) < CLIENT_ERRORS_ELEVATED
        and seen.get("p99_s", 0.0) < obs.latency_objective_s
    )


def _healthy_support(obs: Observations, focus: Focus, per_replica: dict[str, float]) -> dict[str, float]:
    support: dict[str, float] = {}
    if focus.breaching is False:
        support["alert"] = 0.5
    if _metrics_healthy(obs, per_replica):
        support["metrics"] = 0.45
    if _clients_healthy(obs):
        support["clients"] = 0.35
    busy = [g for g in obs.current_log_groups if g["count"] >= MIN_ERROR_LOGS and (g.get("recent_count") or 0) > 0]
    if obs.logs is not None and len(busy) <= 1:
        support["logs"] = 0.2
    if obs.metrics.get("up") and not obs.stale:
        support["process"] = 0.15
    return support


def _healthy(obs: Observations, focus: Focus, others: list[Assessed], base: dict[str, Any]) -> dict[str, Any]:
    _, per_replica = obs.error_ratios()
    support = _healthy_support(obs, focus, per_replica)
    against = 0.15 * len(others)
    confidence = combine(support, min(0.5, against), len(obs.failed))
    p99 = obs.metrics.get("p99", {})
    worst = units.seconds(max(p99.values())) if p99 else "n/a"
    overall, _ = obs.error_ratios()
    ratio = units.ratio(overall) if overall is not None else "n/a"
    cleared = f"; {focus.alertname}'s condition does not hold now" if focus.breaching is False else ""
    rise = surge(obs)
    load = f" Traffic is {rise['surge_factor']:.1f}x its baseline but served within the objective." if rise else ""
    summary = f"No fault found: error ratio {ratio}, p99 max {worst}, all {len(obs.metrics['up'])} replicas up{cleared}"
    return {
        **base,
        "summary": summary,
        "root_cause": "The system looks healthy now: error ratio at baseline, latency normal, CPU and memory normal, "
        f"every replica up and no recent crash.{load}",
        "fault_type": FaultType.none.value,
        "affected_replicas": [],
        "priority": "P4",
        "confidence": confidence,
        "next_steps": ["Check whether the alert threshold is too sensitive or the condition was transient"],
        "hypotheses": [plain(FaultType.none, summary, confidence, base["evidence"])],
    }


def _unexplained(
    obs: Observations, focus: Focus, base: dict[str, Any], elevated: list[str], errors_high: bool
) -> dict[str, Any]:
    """Errors above baseline, or the paging alert's condition holding, with no finding that explains them."""
    overall, _ = obs.error_ratios()
    ratio = units.ratio(overall) if overall is not None else "n/a"
    dominant = next(iter(obs.logs.get("by_exception_type", {})), None) if obs.logs else None
    holds = f" {focus.alertname}'s condition holds now ({'; '.join(focus.values)})." if focus.breaching else ""
    summary = (
        f"Error ratio elevated on {', '.join(elevated) or 'the service'} with no identified cause"
        if errors_high
        else f"{focus.alertname} holds with no identified cause"
    )
    return {
        **base,
        "summary": summary,
        "root_cause": f"Errors are at {ratio} overall but the logs do not point at a code location or injected "
        f"fault (dominant exception: {dominant or 'none logged'}).{holds} Inconclusive.",
        "fault_type": FaultType.unknown.value,
        "affected_replicas": elevated,
        "priority": "P2" if errors_high else "P3",
        "confidence": UNKNOWN_CONFIDENCE,
        "next_steps": ["Inspect the failing requests' logs and dependencies by hand"],
        "hypotheses": [plain(FaultType.unknown, summary, UNKNOWN_CONFIDENCE, base["evidence"])],
    }


def no_candidate(obs: Observations, focus: Focus, others: list[Assessed]) -> dict[str, Any]:
    """Diagnosis fields when no finding explains the alert: unexplained errors, an alert that holds without a
    cause, missing evidence, or a healthy system."""
    overall, per_replica = obs.error_ratios()
    elevated = deviating(per_replica, ERROR_RATIO_ELEVATED)
    errors_high = bool(elevated) or (overall is not None and overall >= ERROR_RATIO_ELEVATED)
    evidence = [e.model_dump() for e in overview_evidence(obs, overall, per_replica)]
    base: dict[str, Any] = {
        "affected_service": obs.service,
        "affected_file": None,
        "affected_line": None,
        "evidence": evidence,
        "suggested_fix": "",
    }
    if errors_high or focus.breaching:
        return _unexplained(obs, focus, base, elevated, errors_high)
    if obs.errors is None or not obs.metrics.get("up") or obs.logs is None:
        summary = "Inconclusive: evidence tools failed"
        return {
            **base,
            "summary": summary,
            "root_cause": "The investigation could not read enough evidence (metrics or logs unavailable) to confirm "
            "a fault or a healthy system.",
            "fault_type": FaultType.unknown.value,
            "affected_replicas": [],
            "priority": "P3",
            "confidence": max(0.1, UNKNOWN_CONFIDENCE - 0.06 * len(obs.failed)),
            "next_steps": ["Check that Prometheus, the load balancer and the process manager are reachable"],
            "hypotheses": [plain(FaultType.unknown, summary, 0.2, evidence)],
        }
    return _healthy(obs, focus, others, base)
