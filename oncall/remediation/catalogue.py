"""The closed catalogue of remediation actions: what each does, its risk, its precondition and how success
is verified. Whoever proposes an action (the offline engine, the model), the catalogue decides its risk
and whether it is well-formed; only the actions here can ever run.

| action | target | params | risk | runs (process manager HTTP API) |
|---|---|---|---|---|
| ``clear_fault`` | a replica or ``all`` | none | low | ``POST /fault {"mode": "none"[, "replica"]}`` |
| ``restart_replica`` | a replica | none | medium | ``POST /instances/{name}/restart`` |
| ``scale`` | ``all`` | ``replicas`` (within ``SCALE_MIN/MAX_REPLICAS``) | low up, medium down | ``POST /scale`` |
| ``rollback`` | ``all`` | ``version`` (the previous deployed version) | medium | ``POST /deploy`` (rolling) |

Preconditions (checked on the live fleet right before running): the target replica exists, no operation
(scale, deploy, restart) is in progress, the fleet check passes (``guardrails.fleet_check``), a rollback
goes to the process manager's ``previous_version``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from oncall.diagnosis import ActionKind, ProposedAction, Risk

ALL = "all"
REPLICA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class ActionSpec:
    """One catalogued action: its ``risk``, what it is expected to do, how success is verified, and
    whether it can be undone (``undo``: the action that reverses it, or None)."""

    kind: ActionKind
    risk: Risk
    expected_effect: str
    verified_by: str
    undo: str | None


CATALOGUE: dict[str, ActionSpec] = {
    "clear_fault": ActionSpec(
        "clear_fault",
        "low",
        "the injected fault stops; the replica's error ratio and p99 return to normal",
        "the alert's own condition, the service's error ratio, p99 and up",
        None,
    ),
    "restart_replica": ActionSpec(
        "restart_replica",
        "medium",
        "the replica is drained, restarted on its version and serves again",
        "the replica's up, the service's error ratio and the alert's own condition",
        None,
    ),
    "scale": ActionSpec(
        "scale",
        "low",
        "more replicas share the load; p99 and the error ratio drop",
        "the service's p99, error ratio and up",
        "scale back to the previous replica count",
    ),
    "rollback": ActionSpec(
        "rollback",
        "medium",
        "every replica runs the previous version again; the regression's errors stop",
        "the service's error ratio, p99, up and the alert's own condition",
        "deploy the rolled-back version again",
    ),
}


class InvalidAction(ValueError):
    """An action that is not in the catalogue or is malformed (the message says why)."""


def normalise(action: ProposedAction, *, replicas_now: int | None = None) -> ProposedAction:
    """``action`` validated against the catalogue, with the catalogue's risk and expected effect.

    Args:
        action: a proposal from any engine.
        replicas_now: the running replica count, to rate a scale-down ``medium`` (None: unknown).
    Raises:
        InvalidAction: unknown action, missing or malformed target or params.
    """
    spec = CATALOGUE.get(action.action)
    if spec is None:
        raise InvalidAction(f"{action.action!r} is not a catalogued action")
    if action.target and action.target != ALL and not REPLICA_NAME.match(action.target):
        raise InvalidAction(f"{action.target!r} is not a replica name")
    target, params = _target_and_params(action)
    risk = spec.risk
    if action.action == "scale" and replicas_now is not None and int(params["replicas"]) < replicas_now:
        risk = "medium"
    return action.model_copy(
        update={
            "target": target,
            "params": params,
            "risk": risk,
            "expected_effect": action.expected_effect or spec.expected_effect,
        }
    )


def _target_and_params(action: ProposedAction) -> tuple[str, dict[str, str | int | float]]:
    """The action's target and params in their catalogued form. Raises InvalidAction."""
    if action.action == "clear_fault":
        return action.target or ALL, {}
    if action.action == "restart_replica":
        if not action.target or action.target == ALL:
            raise InvalidAction("restart_replica needs one replica as its target")
        return action.target, {}
    if action.action == "scale":
        return ALL, {"replicas": _replicas(dict(action.params))}
    version = str(action.params.get("version") or "").strip()
    if not version:
        raise InvalidAction("rollback needs params.version (the version to go back to)")
    return ALL, {"version": version}


def _replicas(params: dict[str, str | int | float]) -> int:
    value = params.get("replicas")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidAction("scale needs params.replicas (an integer)")
    try:
        replicas = int(value)
    except ValueError:
        raise InvalidAction("scale needs params.replicas (an integer)") from None
    if replicas != float(value):
        raise InvalidAction("scale needs params.replicas (an integer)")
    return replicas


def describe(action: ProposedAction) -> str:
    """A short phrase for the engineer: ``clear the injected fault on inventory-2``, ``roll back to 1.4.0``."""
    if action.action == "clear_fault":
        where = "every replica" if action.target in (None, ALL) else action.target
        return f"clear the injected fault on {where}"
    if action.action == "restart_replica":
        return f"restart {action.target}"
    if action.action == "scale":
        return f"scale to {action.params.get('replicas')} replicas"
    return f"roll back to {action.params.get('version')}"
