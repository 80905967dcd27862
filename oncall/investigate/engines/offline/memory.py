"""Detector: replicas whose resident memory is high or growing."""

from __future__ import annotations

from oncall.diagnosis import Evidence, FaultType
from oncall.investigate.engines.offline import units
from oncall.investigate.engines.offline.observations import (
    RSS_GROWTH_BYTES,
    RSS_HIGH_BYTES,
    Candidate,
    Observations,
    deviating,
)


def detect_memory(obs: Observations) -> list[Candidate]:
    """A ``memory_pressure`` candidate for replicas with high RSS or RSS growth over 5 minutes."""
    rss = obs.metrics.get("rss", {})
    growth = obs.metrics.get("rss_growth", {})
    growing = deviating(growth, RSS_GROWTH_BYTES)
    replicas = sorted(set(growing) | set(deviating(rss, RSS_HIGH_BYTES)))
    if not replicas:
        return []
    evidence = [Evidence(tool="query_prometheus", query=obs.query("rss"), finding=f"RSS {units.fmt(rss, units.mib)}")]
    if growth:
        evidence.append(
            Evidence(
                tool="query_prometheus",
                query=obs.query("rss_growth"),
                finding=f"RSS change over 5 min {units.fmt(growth, units.mib)}",
            )
        )
    joined = ", ".join(replicas)
    candidate = Candidate(
        fault_type=FaultType.memory_pressure,
        score=0.85 if growing else 0.7,
        replicas=replicas,
        summary=f"Memory growth on {joined}: RSS {units.fmt(rss, units.mib, replicas)}"
        + (f" (grew {units.fmt(growth, units.mib, growing)} in 5 min)" if growing else ""),
        root_cause=f"Resident memory grew: {units.fmt(rss, units.mib, replicas)}"
        f"{units.others(rss, replicas, units.mib)}: memory is retained per request (a leak or unbounded cache).",
        suggested_fix="Find what keeps memory alive per request (heap snapshot, tracemalloc) and bound or release "
        "it; restart the replica to recover meanwhile.",
        next_steps=[
            f"Restart {joined}{' one at a time' if len(replicas) > 1 else ''} if RSS keeps climbing",
            "Take a tracemalloc/heap snapshot to find the retaining object",
            "Add a memory limit and alert on growth rate",
        ],
        evidence=evidence,
    )
    candidate.back("metrics", 0.6 if growing else 0.4)
    if growing and set(deviating(rss, RSS_HIGH_BYTES)) & set(growing):
        candidate.back("metrics", 0.7)
    if obs.fault_recorded("oom_safe", replicas):
        candidate.back("changes", 0.4)
    return [candidate]
