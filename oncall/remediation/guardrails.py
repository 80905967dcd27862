"""Guardrails every remediation passes, as pure functions of what the store and the control plane say.

- ``fleet_check``: never remove, stop or restart every replica of a service at once (restarting a serving
  replica or a rolling rollback needs another replica serving; a scale never goes below one replica nor
  outside ``SCALE_MIN/MAX_REPLICAS``);
  during overload prefer scaling out: restarting a replica then moves its load onto the others.
- ``budget_check``: at most ``REMEDIATION_MAX_PER_INCIDENT`` actions per incident and
  ``REMEDIATION_MAX_PER_HOUR`` per service per hour; a circuit breaker stops automation for a service
  after ``BREAKER_UNVERIFIED`` actions in a row that did not verify (within the hour; it closes again
  once they are older than an hour, or after a verified one).

Each returns None when the action may run, else the reason (one sentence for the engineer).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from oncall.diagnosis import ProposedAction
from oncall.remediation.catalogue import ALL

BREAKER_UNVERIFIED = 2
"""Actions in a row on one service that did not verify before automation stops for it."""
UNVERIFIED = frozenset({"not_recovered", "failed"})
HOUR_S = 3600.0
MIN_SERVING_FOR_ROLLOUT = 2
"""A rolling deploy takes one replica out at a time: it needs another one serving meanwhile."""


def fleet_check(
    fleet: Sequence[str],
    action: ProposedAction,
    *,
    running: Collection[str] | None = None,
    in_service: int | None = None,
    overload: bool = False,
    bounds: tuple[int, int] = (1, 10),
) -> str | None:
    """Why ``action`` would take every replica out (or is otherwise unsafe on this fleet), or None.

    Args:
        fleet: every replica's name (``GET /instances``), running or not.
        action: a catalogued action (``catalogue.normalise``d).
        running: the replicas serving now (default: all of ``fleet``).
        in_service: how many replicas the service has now, stopped slots excluded (default: ``len(fleet)``);
            a scale is measured against it.
        overload: the service is overloaded (CPU saturation, capacity): restarts are refused.
        bounds: (min, max) replicas a scale may go to.
    """
    serving = set(fleet if running is None else running)
    target = action.target
    if action.action in ("clear_fault", "restart_replica") and target not in (None, ALL) and target not in fleet:
        return f"there is no replica {target} (replicas: {', '.join(fleet) or 'none'})"
    if action.action == "restart_replica":
        return _restart_check(target, serving, overload)
    if action.action == "scale":
        now = len(fleet) if in_service is None else in_service
        return _scale_check(int(action.params.get("replicas", 0)), now, overload, bounds)
    if action.action == "rollback" and len(serving) < MIN_SERVING_FOR_ROLLOUT:
        return "a rolling rollback of the only serving replica takes the service out; scale out first"
    return None


def _restart_check(target: str | None, serving: set[str], overload: bool) -> str | None:
    if target in (None, ALL):
        return "restarting every replica at once would take the service down"
    if target in serving and not serving - {target}:
        return f"restarting {target} would leave no replica serving"
    if overload:
        return f"during overload restarting {target} moves its load onto the others; scale out instead"
    return None


def _scale_check(replicas: int, now: int, overload: bool, bounds: tuple[int, int]) -> str | None:
    low, high = bounds
    if replicas < 1:
        return "scaling to 0 replicas would remove every replica"
    if not low <= replicas <= high:
        return f"{replicas} replicas is outside the configured bounds {low}-{high}"
    if replicas == now:
        return f"the service already has {replicas} replicas"
    if overload and replicas < now:
        return "scaling in during overload would make it worse"
    return None


def budget_check(
    *,
    service: str,
    incident_actions: int,
    service_actions_last_hour: int,
    last_outcomes: Sequence[str],
    max_per_incident: int,
    max_per_hour: int,
) -> str | None:
    """Why one more action may not run now, or None.

    Args:
        service: the service acted on.
        incident_actions: actions approved on this incident so far.
        service_actions_last_hour: actions approved on the service in the last hour.
        last_outcomes: statuses of the service's finished executions in the last hour, newest first.
        max_per_incident: ``REMEDIATION_MAX_PER_INCIDENT``; max_per_hour: ``REMEDIATION_MAX_PER_HOUR``.
    """
    recent = list(last_outcomes[:BREAKER_UNVERIFIED])
    if len(recent) == BREAKER_UNVERIFIED and all(status in UNVERIFIED for status in recent):
        return (
            f"automation is stopped for {service}: its last {BREAKER_UNVERIFIED} actions did not verify "
            "(circuit breaker); act by hand or escalate"
        )
    if incident_actions >= max_per_incident:
        return f"this incident had {incident_actions} actions already (REMEDIATION_MAX_PER_INCIDENT={max_per_incident})"
    if service_actions_last_hour >= max_per_hour:
        return (
            f"{service} had {service_actions_last_hour} actions in the last hour "
            f"(REMEDIATION_MAX_PER_HOUR={max_per_hour})"
        )
    return None
