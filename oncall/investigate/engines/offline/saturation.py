"""Detector: replicas that are slow (waiting) or CPU-saturated (computing).

A replica that waits (a sleep, a slow dependency, a lock) still answers Prometheus' scrapes: its event
loop is free. One that stops answering scrapes (``up == 0``) while its process runs and its requests
are slow has a blocked event loop, which in a single-threaded service means it is computing: CPU
saturation, even when its CPU figures are stale (taken before it stopped answering) and low.
"""

from __future__ import annotations

from oncall.diagnosis import Evidence, FaultType
from oncall.investigate.engines.offline import clients, units
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
from oncall.investigate.engines.offline.units import shown


def _unresponsive(obs: Observations, slow: list[str]) -> list[str]:
    """Replicas that stopped answering scrapes while their process runs (no crash) and requests wait on them."""
    running = {
        i["name"] for i in (obs.changes or {}).get("instances", []) if i.get("state") in ("running", None)
    } or set(obs.replicas)
    waiting = set(slow) | set(clients.queued(obs)) | set(clients.timing_out(obs))
    return sorted(r for r in obs.stale if r in running and r in waiting)


def _hot_replicas(obs: Observations, slow: list[str]) -> tuple[list[str], list[str], list[str], list[str]]:
    """(hot, saturated, cpu_bound, unresponsive) replicas.

    Replicas behind one round-robin balancer burn about the same CPU; one burning several times its
    peers' is computing something they do not (its 1m rate still rising towards saturation). CPU
    seconds per request tells computing from waiting even while the 1m rate is diluted and every
    replica is affected alike.
    """
    cpu = obs.metrics.get("cpu", {})
    saturated = deviating(cpu, CPU_HIGH_CORES)
    per_request = obs.metrics.get("cpu_per_request", {})
    cpu_bound = [r for r in deviating(per_request, CPU_PER_REQUEST_HIGH_S) if r in slow or r in saturated]
    blocked = _unresponsive(obs, slow)
    hot = sorted(set(saturated or outliers(cpu, CPU_BUSY_CORES, CPU_OUTLIER_FACTOR)) | set(cpu_bound) | set(blocked))
    return hot, saturated, cpu_bound, blocked


def _back_cpu(candidate: Candidate, obs: Observations, saturated: list[str], cpu_bound: list[str], blocked: list[str]):
    fresh = [r for r in candidate.replicas if r not in obs.stale]
    measured = 0.5 if (saturated or cpu_bound) else 0.4
    candidate.back("metrics", measured if fresh else measured * 0.6)
    if blocked:
        candidate.back("process", 0.3)
    waiting = set(clients.queued(obs)) | set(clients.timing_out(obs))
    seen = clients.evidence(obs, candidate.replicas)
    if waiting & set(candidate.replicas) and seen is not None:
        candidate.back("clients", 0.3)
        candidate.evidence.append(seen)
    if obs.fault_recorded("cpu", candidate.replicas) or obs.fault_recorded("stall", candidate.replicas):
        candidate.back("changes", 0.4)
    if obs.stale:
        candidate.oppose(
            Evidence(
                tool="query_prometheus",
                query=obs.query("up"),
                finding=f"{', '.join(obs.stale)} stopped answering scrapes: their CPU figures are stale",
            ),
            0.1,
        )
    return candidate


def _cpu_candidate(
    obs: Observations, hot: list[str], saturated: list[str], slow: list[str], evidence: list[Evidence]
) -> Candidate:
    cpu = obs.metrics.get("cpu", {})
    also_slow = sorted(set(hot) & set(slow))
    blocked = sorted(set(hot) & set(obs.stale))
    why = (
        f"{', '.join(blocked)} stopped answering scrapes while their processes run and requests wait on them: "
        "the single-threaded event loop is blocked computing"
        if blocked
        else "the single-threaded event loop is busy computing"
    )
    return Candidate(
        fault_type=FaultType.cpu_saturation,
        score=(0.85 if also_slow else 0.7) - (0 if saturated or blocked else 0.1),
        replicas=hot,
        summary=f"CPU saturation on {', '.join(hot)}: {shown(obs, 'cpu', units.cores, hot)}"
        + (f", p99 {shown(obs, 'p99', units.seconds, also_slow)}" if also_slow else ""),
        root_cause=f"CPU use {shown(obs, 'cpu', units.cores, hot)}{units.others(cpu, hot, units.cores)}; {why}, "
        "so requests queue behind it" + (" and p99 latency rises." if also_slow else "."),
        suggested_fix="Find the CPU-heavy code path on the hot replica (profile it, e.g. py-spy) and move the work "
        "off the event loop or reduce it; scale out meanwhile.",
        next_steps=[
            f"Profile {hot[0]} (py-spy dump) to find the CPU-heavy code path",
            "Scale out or shed load until CPU drops below 0.6 cores per replica; do not restart every replica at once",
            "Confirm p99 latency recovers",
        ],
        evidence=evidence,
    )


def _removal(obs: Observations, slow_only: list[str]) -> tuple[str, str]:
    """(next step, fix suffix): take the slow replicas out only while most of the fleet keeps serving."""
    joined = ", ".join(slow_only)
    rest = [r for r in obs.replicas if r not in slow_only]
    if rest and len(slow_only) < len(rest):
        step = f"Take {joined} out of the load balancer if users are affected ({', '.join(rest)} keep serving)"
        return step, "; take the replica out of rotation meanwhile."
    return f"Keep {joined} serving (most replicas are slow: too few are left to fail over to); find the wait", "."


def _back_latency(candidate: Candidate, obs: Observations) -> Candidate:
    slow_only, cpu = candidate.replicas, obs.metrics.get("cpu", {})
    waiting = bool(cpu) and all(cpu.get(r, 0.0) < CPU_HIGH_CORES for r in slow_only)  # not computing
    candidate.back("metrics", (0.5 if any(r not in obs.stale for r in slow_only) else 0.3) + (0.1 if waiting else 0))
    seen = clients.evidence(obs, slow_only)
    if set(clients.slow(obs, P99_HIGH_S)) & set(slow_only) and seen is not None:
        candidate.back("clients", 0.4 if set(clients.timing_out(obs)) & set(slow_only) else 0.35)
        candidate.evidence.append(seen)
    if obs.fault_recorded("latency", slow_only):
        candidate.back("changes", 0.4)
    return candidate


def _latency_candidate(obs: Observations, slow_only: list[str], evidence: list[Evidence]) -> Candidate:
    joined = ", ".join(slow_only)
    p99 = shown(obs, "p99", units.seconds, slow_only)
    removal, meanwhile = _removal(obs, slow_only)
    candidate = Candidate(
        fault_type=FaultType.latency,
        score=0.8,
        replicas=slow_only,
        summary=f"High p99 latency on {joined}: {p99}",
        root_cause=f"Requests on {joined} are slow (p99 {p99}"
        f"{units.others(obs.metrics.get('p99', {}), slow_only, units.seconds)}) while CPU stays low "
        f"({shown(obs, 'cpu', units.cores, slow_only) or 'n/a'}) and the replicas answer scrapes: time is spent "
        "waiting (a slow dependency, a sleep or lock), not computing.",
        suggested_fix="Find what the slow replica waits on (dependency latency, injected delay, locks) and remove it"
        + meanwhile,
        next_steps=[
            removal,
            "Check dependency latency and recent changes on the slow replica",
            f"Confirm p99 returns below {obs.latency_objective_s:g} s",
        ],
        evidence=evidence,
    )
    return _back_latency(candidate, obs)


def detect_saturation(obs: Observations) -> list[Candidate]:
    """``cpu_saturation`` and ``latency`` candidates from p99 latency, CPU and scrape health per replica."""
    p99, cpu = obs.metrics.get("p99", {}), obs.metrics.get("cpu", {})
    slow = sorted(set(deviating(p99, P99_HIGH_S)) | set(clients.timing_out(obs)))
    hot, saturated, cpu_bound, blocked = _hot_replicas(obs, slow)
    p99_ev = (
        Evidence(
            tool="query_prometheus", query=obs.query("p99"), finding=f"p99 latency {shown(obs, 'p99', units.seconds)}"
        )
        if p99
        else None
    )
    cpu_ev = (
        Evidence(tool="query_prometheus", query=obs.query("cpu"), finding=f"CPU {shown(obs, 'cpu', units.cores)}")
        if cpu
        else None
    )
    if cpu_bound:
        cpu_ev = Evidence(
            tool="query_prometheus",
            query=obs.query("cpu_per_request"),
            finding=f"CPU per request {shown(obs, 'cpu_per_request', units.milliseconds)}; "
            f"CPU {shown(obs, 'cpu', units.cores)}",
        )
    found: list[Candidate] = []
    if hot:
        candidate = _cpu_candidate(obs, hot, saturated, slow, [e for e in (cpu_ev, p99_ev) if e])
        found.append(_back_cpu(candidate, obs, saturated, cpu_bound, blocked))
    slow_only = [r for r in slow if r not in hot]
    if slow_only:
        found.append(_latency_candidate(obs, slow_only, [e for e in (p99_ev, cpu_ev) if e]))
    return found
