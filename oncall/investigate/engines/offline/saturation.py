"""Detector: replicas that are slow (waiting) or CPU-saturated (computing)."""

from __future__ import annotations

from oncall.diagnosis import Evidence, FaultType
from oncall.investigate.engines.offline import units
from oncall.investigate.engines.offline.observations import (
    CPU_BUSY_CORES,
    CPU_HIGH_CORES,
    CPU_OUTLIER_FACTOR,
    CPU_PER_REQUEST_HIGH_S,
    P99_HIGH_S,
    Candidate,
    Observations,
    deviating,
    outliers,
)


def _hot_replicas(obs: Observations, slow: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(hot, saturated, cpu_bound) replicas.

    Replicas behind one round-robin balancer burn about the same CPU; one burning several times its
    peers' is computing something they do not (its 1m rate still rising towards saturation). CPU
    seconds per request tells computing from waiting even while the 1m rate is diluted and every
    replica is affected alike.
    """
    cpu = obs.metrics.get("cpu", {})
    saturated = deviating(cpu, CPU_HIGH_CORES)
    per_request = obs.metrics.get("cpu_per_request", {})
    cpu_bound = [r for r in deviating(per_request, CPU_PER_REQUEST_HIGH_S) if r in slow or r in saturated]
    hot = sorted(set(saturated or outliers(cpu, CPU_BUSY_CORES, CPU_OUTLIER_FACTOR)) | set(cpu_bound))
    return hot, saturated, cpu_bound


def _cpu_candidate(
    obs: Observations, hot: list[str], saturated: list[str], slow: list[str], evidence: list[Evidence]
) -> Candidate:
    cpu, p99 = obs.metrics.get("cpu", {}), obs.metrics.get("p99", {})
    also_slow = sorted(set(hot) & set(slow))
    return Candidate(
        fault_type=FaultType.cpu_saturation,
        score=(0.85 if also_slow else 0.7) - (0 if saturated else 0.1),
        replicas=hot,
        summary=f"CPU saturation on {', '.join(hot)}: {units.fmt(cpu, units.cores, hot)}"
        + (f", p99 {units.fmt(p99, units.seconds, also_slow)}" if also_slow else ""),
        root_cause=f"CPU use {units.fmt(cpu, units.cores, hot)}{units.others(cpu, hot, units.cores)}; "
        "the single-threaded event loop is busy computing, so requests queue behind it"
        + (" and p99 latency rises." if also_slow else "."),
        suggested_fix="Find the CPU-heavy code path on the hot replica (profile it, e.g. py-spy) and move the work "
        "off the event loop or reduce it; scale out meanwhile.",
        next_steps=[
            f"Profile {hot[0]}",
            "Scale out or shed load until CPU drops below 0.6 cores per replica",
            "Confirm p99 latency recovers",
        ],
        evidence=evidence,
    )


def _latency_candidate(obs: Observations, slow_only: list[str], evidence: list[Evidence]) -> Candidate:
    cpu, p99 = obs.metrics.get("cpu", {}), obs.metrics.get("p99", {})
    joined = ", ".join(slow_only)
    return Candidate(
        fault_type=FaultType.latency,
        score=0.8,
        replicas=slow_only,
        summary=f"High p99 latency on {joined}: {units.fmt(p99, units.seconds, slow_only)}",
        root_cause=f"Requests on {joined} are slow (p99 {units.fmt(p99, units.seconds, slow_only)}"
        f"{units.others(p99, slow_only, units.seconds)}) while CPU stays low "
        f"({units.fmt(cpu, units.cores, slow_only) or 'n/a'}): time is spent waiting (a slow dependency, a sleep or "
        "lock), not computing.",
        suggested_fix="Find what the slow replica waits on (dependency latency, injected delay, locks) and remove it; "
        "take the replica out of rotation meanwhile.",
        next_steps=[
            f"Take {joined} out of the load balancer if users are affected",
            "Check dependency latency and recent changes on the slow replica",
            "Confirm p99 returns below 0.5 s",
        ],
        evidence=evidence,
    )


def detect_saturation(obs: Observations) -> list[Candidate]:
    """``cpu_saturation`` and ``latency`` candidates from p99 latency and CPU per replica."""
    p99, cpu = obs.metrics.get("p99", {}), obs.metrics.get("cpu", {})
    slow = deviating(p99, P99_HIGH_S)
    hot, saturated, cpu_bound = _hot_replicas(obs, slow)
    p99_ev = (
        Evidence(
            tool="query_prometheus", query=obs.query("p99"), finding=f"p99 latency {units.fmt(p99, units.seconds)}"
        )
        if p99
        else None
    )
    cpu_ev = (
        Evidence(tool="query_prometheus", query=obs.query("cpu"), finding=f"CPU {units.fmt(cpu, units.cores)}")
        if cpu
        else None
    )
    if cpu_bound:
        per_request = obs.metrics.get("cpu_per_request", {})
        cpu_ev = Evidence(
            tool="query_prometheus",
            query=obs.query("cpu_per_request"),
            finding=f"CPU per request {units.fmt(per_request, units.milliseconds)}; CPU {units.fmt(cpu, units.cores)}",
        )
    found: list[Candidate] = []
    if hot:
        found.append(_cpu_candidate(obs, hot, saturated, slow, [e for e in (cpu_ev, p99_ev) if e]))
    slow_only = [r for r in slow if r not in hot]
    if slow_only:
        found.append(_latency_candidate(obs, slow_only, [e for e in (p99_ev, cpu_ev) if e]))
    return found
