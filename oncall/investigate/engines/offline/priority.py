"""Priority P1-P4 from what clients experienced: the share of their requests that failed or timed out
(the load balancer's view when the service has one, else its own error ratio), how slow they were,
and how much of the fleet the finding covers; a critical alert is at least P2."""

from __future__ import annotations

from oncall.diagnosis import FaultType
from oncall.investigate.engines.offline import clients
from oncall.investigate.engines.offline.observations import (
    CLIENT_ERRORS_ELEVATED,
    CLIENT_TIMEOUT_P99_S,
    ERROR_RATIO_P1,
    ERROR_RATIO_P2,
    Candidate,
    Observations,
)

FLEET_P2_SHARE = 0.5
"""Share 0-1 of the replicas a slow or failing finding must cover to be P2 (else P3)."""


def failed_share(obs: Observations) -> float | None:
    """Share 0-1 of client requests failing now: the load balancer's 5xx share (timeouts and its own 502/503
    included) when it has a view, else the service's overall error ratio."""
    seen = clients.overall(obs)
    if "error_ratio" in seen:
        return seen["error_ratio"]
    overall, _ = obs.error_ratios()
    return overall


def clients_waiting(obs: Observations) -> bool:
    """True when clients wait into their timeouts: a client p99 of ``CLIENT_TIMEOUT_P99_S`` or more, or every
    replica unresponsive to scrapes."""
    p99 = clients.overall(obs).get("p99_s")
    fleet = obs.replicas
    return (p99 is not None and p99 >= CLIENT_TIMEOUT_P99_S) or (bool(fleet) and set(obs.stale) >= set(fleet))


def level_from_clients(obs: Observations, candidate: Candidate) -> int:
    """1-4 from the failed share, client waits and the share of the fleet the finding covers."""
    share = failed_share(obs) or 0.0
    fleet = max(1, len(obs.replicas))
    covered = len(set(candidate.replicas) & set(obs.replicas)) / fleet if obs.replicas else 1.0
    if share >= ERROR_RATIO_P1 or clients_waiting(obs):
        return 1
    if share >= ERROR_RATIO_P2 or covered >= FLEET_P2_SHARE:
        return 2
    if share >= CLIENT_ERRORS_ELEVATED or candidate.fault_type is not FaultType.memory_pressure:
        return 3
    return 4 if covered == 0 else 3


def priority(obs: Observations, candidate: Candidate, critical_alert: bool) -> str:
    """``P1``-``P4`` of a fault finding (see the module docstring)."""
    level = level_from_clients(obs, candidate)
    if candidate.fault_type is FaultType.instance_crash:
        up = obs.metrics.get("up", {})
        level = min(level, 1 if up and all(v == 0 for v in up.values()) else 2)
    if critical_alert:
        level = min(level, 2)
    return f"P{level}"
