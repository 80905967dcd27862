"""Detector: load. A traffic surge beyond what the replicas serve is a capacity incident (``overload``).

Every investigation compares the request rate now with the service's own baseline before the onset
(``get_load``). A surge (at least ``SURGE_FACTOR`` times the baseline and ``SURGE_MIN_RPS`` more) is
named the cause when it explains the symptom: latency, queueing or timeouts spread over most replicas
(not concentrated on one), CPU per request normal (not a CPU-heavy code path), already present at the
onset (the symptoms did not start before it) and no fault recorded on the replicas. Otherwise the surge
is context of the fault that is the headline. The figures (rate before and during, the capacity seen
within the latency objective and the headroom) go to the hypothesis' ``load`` for capacity decisions.
"""

from __future__ import annotations

import math
from typing import Any

from oncall.diagnosis import Evidence, FaultType
from oncall.investigate.engines.offline import clients, units
from oncall.investigate.engines.offline.observations import (
    CPU_PER_REQUEST_HIGH_S,
    P99_HIGH_S,
    RELATIVE_FACTOR,
    SURGE_FACTOR,
    SURGE_MIN_RPS,
    Candidate,
    Observations,
    deviating,
)

SPREAD_SHARE = 0.6
"""Share 0-1 of the replicas whose requests must suffer for the symptom to be spread, not concentrated."""
HEADROOM_TARGET = 0.3
"""Share of capacity kept free when suggesting a replica count (serve the rate at 70 % of capacity)."""
LOAD_QUERY = "get_load (request rate now, at the onset and its 10-minute baseline before the onset)"


def _rate(load: dict[str, Any], key: str) -> float | None:
    value = load.get(key)
    return float(value) if isinstance(value, int | float) else None


def surge(obs: Observations) -> dict[str, float] | None:
    """``{"baseline_rps", "current_rps", "surge_factor"}`` when the rate now is a surge over the baseline."""
    load = obs.load or {}
    now, base = _rate(load, "now_rps"), _rate(load, "baseline_rps")
    if now is None or not base or now < SURGE_FACTOR * base or now - base < SURGE_MIN_RPS:
        return None
    return {"baseline_rps": base, "current_rps": now, "surge_factor": round(now / base, 1)}


def figures(obs: Observations, rise: dict[str, float]) -> dict[str, Any]:
    """The ``oncall.diagnosis.Load`` fields of a surge: rates, capacity within the latency objective, headroom
    and a replica count that serves the rate with ``HEADROOM_TARGET`` free (within ``max_replicas``)."""
    load = obs.load or {}
    replicas = len(obs.replicas) or None
    capacity = _rate(load, "healthy_max_rps")
    capacity = max(capacity or 0.0, rise["baseline_rps"]) or None
    now = rise["current_rps"]
    found: dict[str, Any] = {
        **rise,
        "per_replica_rps": load.get("per_replica_rps") or {},
        "replicas": replicas,
        "capacity_rps": round(capacity, 1) if capacity else None,
        "headroom": round(1 - now / capacity, 2) if capacity else None,
        "max_replicas": obs.max_replicas,
    }
    if capacity and replicas:
        wanted = math.ceil(replicas * now / (capacity * (1 - HEADROOM_TARGET)))
        found["suggested_replicas"] = max(replicas + 1, min(wanted, obs.max_replicas or wanted))
    return found


def _suffering(obs: Observations) -> list[str]:
    """Replicas whose requests wait: high p99 (own or clients'), queued at the load balancer, or timing out."""
    slow = {r for r, v in obs.metrics.get("p99", {}).items() if v >= P99_HIGH_S}
    return sorted(slow | set(clients.slow(obs, P99_HIGH_S)) | set(clients.queued(obs)) | set(clients.timing_out(obs)))


def _concentrated(obs: Observations) -> list[str]:
    """Replicas whose p99 stands out from their peers' (``RELATIVE_FACTOR`` times the others' median); none
    when the clients wait on every replica (slow or queued at the load balancer): the symptom is spread, and a
    replica's own p99 just under the threshold is not a healthy peer."""
    p99 = obs.metrics.get("p99", {})
    outliers = deviating(p99, P99_HIGH_S)
    waiting = set(clients.slow(obs, P99_HIGH_S)) | set(clients.queued(obs))
    if obs.replicas and waiting >= set(obs.replicas):
        return []
    return outliers if outliers and len(outliers) < len(p99) else []


def _rate_text(rise: dict[str, float]) -> str:
    return (
        f"{rise['baseline_rps']:.0f} -> {rise['current_rps']:.0f} req/s "
        f"({rise['surge_factor']:.1f}x the baseline before the onset)"
    )


def context_line(obs: Observations) -> str | None:
    """A sentence about a surge that is not the cause (context of the headline), or None without a surge."""
    rise = surge(obs)
    return f"Traffic surge as context (not the cause): {_rate_text(rise)}." if rise else None


def _opposition(candidate: Candidate, obs: Observations, rise: dict[str, float]) -> None:
    load = obs.load or {}
    at_onset = _rate(load, "at_onset_rps")
    if at_onset is not None and at_onset < SURGE_FACTOR * rise["baseline_rps"]:
        finding = f"at the onset the rate was still {at_onset:.0f} req/s: the symptom started before the surge"
        candidate.oppose(Evidence(tool="get_load", query=LOAD_QUERY, finding=finding), 0.6)
    costly = deviating(obs.metrics.get("cpu_per_request", {}), CPU_PER_REQUEST_HIGH_S)
    if costly:
        finding = f"CPU per request {units.fmt(obs.metrics['cpu_per_request'], units.milliseconds, costly)}: "
        candidate.oppose(
            Evidence(tool="query_prometheus", query=obs.query("cpu_per_request"), finding=finding + "a costly path"),
            0.5,
        )
    concentrated = _concentrated(obs)
    if concentrated:
        finding = f"p99 stands out on {', '.join(concentrated)} only (at least {RELATIVE_FACTOR:g}x its peers)"
        candidate.oppose(Evidence(tool="query_prometheus", query=obs.query("p99"), finding=finding), 0.6)


def detect_overload(obs: Observations) -> list[Candidate]:
    """An ``overload`` candidate when a surge explains latency, queueing or timeouts on most replicas."""
    rise = surge(obs)
    fleet = obs.replicas
    suffering = _suffering(obs)
    if rise is None or not fleet or len(suffering) < max(1, math.ceil(SPREAD_SHARE * len(fleet))):
        return []
    load = figures(obs, rise)
    headroom = load.get("headroom")
    capacity = (
        f"; about {load['capacity_rps']:.0f} req/s were served within the {obs.latency_objective_s:g} s p99 "
        "objective recently"
        if load.get("capacity_rps")
        else ""
    )
    scale = load.get("suggested_replicas")
    candidate = Candidate(
        fault_type=FaultType.overload,
        score=0.88,
        replicas=fleet,
        summary=f"Overload: traffic surge {_rate_text(rise)} beyond what {len(fleet)} replicas serve; "
        f"p99 {units.fmt(obs.metrics.get('p99', {}), units.seconds)}",
        root_cause=f"The request rate rose {_rate_text(rise)}{capacity}. Requests queue on every replica "
        f"({clients.describe(obs, fleet) or units.fmt(obs.metrics.get('p99', {}), units.seconds)}) while CPU per "
        "request stays normal: the replicas are not faulty, there is more traffic than they serve"
        + (f" (headroom {headroom:.0%})." if isinstance(headroom, float) else "."),
        suggested_fix="Add capacity or shed load: scale out"
        + (f" to {scale} replicas" if scale else "")
        + (f" (at most {obs.max_replicas})" if obs.max_replicas else "")
        + ", rate-limit or shed the surging traffic at the load balancer, and find where the surge comes from. "
        "Never take replicas out or restart them all during overload: that removes the capacity left.",
        next_steps=[
            f"Scale out {obs.service}" + (f" to {scale} replicas" if scale else "") + " or shed load at the balancer",
            "Find the source of the surge (a client retry storm, a batch job, a campaign) and rate-limit it",
            f"Confirm p99 returns below {obs.latency_objective_s:g} s as the rate falls or capacity grows",
        ],
        evidence=[
            Evidence(tool="get_load", query=LOAD_QUERY, finding=f"request rate {_rate_text(rise)}"),
            *[e for e in (clients.evidence(obs, fleet),) if e is not None],
            Evidence(
                tool="query_prometheus",
                query=obs.query("p99"),
                finding=f"p99 latency {units.fmt(obs.metrics.get('p99', {}), units.seconds)}",
            ),
        ],
        load=load,
    )
    candidate.back("load", min(0.65, 0.35 + 0.05 * rise["surge_factor"]))
    candidate.back("metrics", 0.4 if len(suffering) == len(fleet) else 0.3)
    if set(clients.queued(obs)) | set(clients.slow(obs, P99_HIGH_S)):
        candidate.back("clients", 0.35)
    _opposition(candidate, obs, rise)
    candidate.score = round(candidate.score * (1 - candidate.against_weight), 3)
    return [candidate]
