"""Proposals: 0 to 3 ranked, catalogued actions for a diagnosis, checked against the live fleet.

``propose`` is pure: clearing a fault the control plane shows on an affected replica comes first (a fact, and
the lowest-risk action), then the diagnosis' own ``proposed_actions`` (from the engine or the model, validated
by the catalogue, which also sets their risk), then the actions its fault type calls for; each passes
``guardrails.fleet_check``; duplicates and unsafe ones are dropped. What the fault calls for:

- an injected fault (shown by the process manager on affected replicas; or, for ``injected_errors``,
  ``latency``, ``cpu_saturation``, ``memory_pressure``, on any replica): ``clear_fault`` on those replicas
  (``all`` when every replica in service has it: the stopped slots a scale-in leaves do not count);
- ``instance_crash``: ``restart_replica`` of the crashed replicas; ``memory_pressure``: also a restart;
- ``deploy_regression``: ``rollback`` to the process manager's ``previous_version``;
- overload (``cpu_saturation``, ``latency``, ``capacity``, ``overload`` on every replica, no injected fault):
  ``scale`` out by one replica within ``SCALE_MIN/MAX_REPLICAS`` (never a restart); the same fault on some
  replicas only is replica-local: ``clear_fault`` on them (a fault set on a replica directly is not in the
  control plane's view; clearing is harmless when there is none, and the verification tells).

``ProposingInvestigator`` wraps the investigator: after an engine answers, the service's control plane
(catalog ``control_plane``) is read and the diagnosis' ``proposed_actions`` replaced by ``propose``'s.
A service without a control plane gets no executable actions, and the diagnosis says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from oncall.catalog.models import Catalog, ServiceEntry
from oncall.diagnosis import Diagnosis, ProposedAction
from oncall.remediation.catalogue import ALL, InvalidAction, normalise
from oncall.remediation.controlplane import ControlPlaneError, Fleet, ProcessManager
from oncall.remediation.guardrails import fleet_check

log = logging.getLogger("oncall.remediation")

MAX_PROPOSALS = 3
FAULT_TYPES_OF_INJECTION = frozenset({"injected_errors", "latency", "cpu_saturation", "memory_pressure"})
OVERLOAD_TYPES = frozenset({"cpu_saturation", "latency", "capacity", "overload"})


def _fault_actions(diagnosis: Diagnosis, fleet: Fleet) -> list[ProposedAction]:
    """``clear_fault`` where the control plane shows an injected fault: on the affected replicas that have one
    (whatever fault type the diagnosis names: the fault is a fact, clearing it the lowest-risk action), else on
    every faulty replica when the diagnosis names an injectable fault type."""
    faulty = fleet.faulty()
    affected = [r for r in diagnosis.affected_replicas if r in faulty]
    injectable = diagnosis.fault_type.value in FAULT_TYPES_OF_INJECTION
    if not affected and injectable:
        affected = faulty or _local(diagnosis, fleet)
    if not affected:
        return []
    targets = [ALL] if set(faulty) >= set(fleet.in_service) and len(affected) > 1 else affected
    return [
        ProposedAction(
            action="clear_fault",
            target=target,
            rationale=f"{target if target != ALL else 'every replica'}: {_fault_text(fleet, target)}",
        )
        for target in targets
    ]


def _local(diagnosis: Diagnosis, fleet: Fleet) -> list[str]:
    """The affected replicas when the diagnosis localises the fault to some of the fleet (a replica-local
    fault: one set on the replica directly is not in the control plane's view, and clearing it is harmless
    when there is none), else [] (every replica affected: rather overload)."""
    affected = [r for r in diagnosis.affected_replicas if r in fleet.names]
    return affected if affected and not set(affected) >= set(fleet.in_service) else []


def overloaded(diagnosis: Diagnosis, fleet: Fleet) -> bool:
    """An overload: a saturation or latency fault on every replica (or none named) with no injected fault."""
    return diagnosis.fault_type.value in OVERLOAD_TYPES and not fleet.faulty() and not _local(diagnosis, fleet)


def _fault_text(fleet: Fleet, target: str) -> str:
    name = fleet.names[0] if target == ALL and fleet.names else target
    fault = (fleet.instance(name) or {}).get("fault") or {}
    if not fault or fault.get("mode", "none") == "none":
        return "the diagnosis points at it alone; a fault set on the replica directly is cleared too"
    return ", ".join(f"{k}={v}" for k, v in sorted(fault.items()))


def _restart_actions(diagnosis: Diagnosis, fleet: Fleet) -> list[ProposedAction]:
    if diagnosis.fault_type.value not in ("instance_crash", "memory_pressure"):
        return []
    actions = []
    for name in diagnosis.affected_replicas:
        instance = fleet.instance(name)
        if instance is None:
            continue
        state = instance.get("state")
        actions.append(
            ProposedAction(
                action="restart_replica",
                target=name,
                rationale=f"{name} is {state} after {instance.get('restarts', 0)} crash restart(s)"
                if diagnosis.fault_type.value == "instance_crash"
                else f"{name} holds growing memory; a restart releases it",
            )
        )
    return actions


def _rollback_actions(diagnosis: Diagnosis, fleet: Fleet) -> list[ProposedAction]:
    previous = fleet.previous_version
    if diagnosis.fault_type.value != "deploy_regression" or not previous or previous == fleet.current_version:
        return []
    return [
        ProposedAction(
            action="rollback",
            target=ALL,
            params={"version": previous},
            rationale=f"{fleet.current_version} was deployed last; {previous} ran before it",
        )
    ]


def _scale_actions(diagnosis: Diagnosis, fleet: Fleet, bounds: tuple[int, int]) -> list[ProposedAction]:
    if not overloaded(diagnosis, fleet):
        return []
    replicas = min(bounds[1], len(fleet.in_service) + 1)
    return [
        ProposedAction(
            action="scale",
            params={"replicas": replicas},
            rationale=f"no fault is injected: {len(fleet.in_service)} replica(s) cannot carry the load",
        )
    ]


def propose(diagnosis: Diagnosis, fleet: Fleet, bounds: tuple[int, int] = (1, 10)) -> list[ProposedAction]:
    """At most 3 catalogued actions for ``diagnosis`` on ``fleet``, best first (see module docstring).

    Args:
        diagnosis: an engine's diagnosis (its ``proposed_actions`` are kept first when valid).
        fleet: the service's replicas and versions from its control plane.
        bounds: (min, max) replicas a scale may go to (``SCALE_MIN_REPLICAS``, ``SCALE_MAX_REPLICAS``).
    """
    candidates = [
        *_fault_actions(diagnosis, fleet),
        *diagnosis.proposed_actions,
        *_rollback_actions(diagnosis, fleet),
        *_restart_actions(diagnosis, fleet),
        *_scale_actions(diagnosis, fleet, bounds),
    ]
    overload = overloaded(diagnosis, fleet)
    in_service = len(fleet.in_service)
    chosen: list[ProposedAction] = []
    seen: set[tuple[str, str | None, tuple[Any, ...]]] = set()
    for candidate in candidates:
        try:
            action = normalise(candidate, replicas_now=in_service)
        except InvalidAction as exc:
            log.info("proposal dropped: %s", exc)
            continue
        key = (action.action, action.target, tuple(sorted(action.params.items())))
        refusal = fleet_check(
            fleet.names, action, running=fleet.running, in_service=in_service, overload=overload, bounds=bounds
        )
        if key in seen or refusal is not None:
            continue
        seen.add(key)
        chosen.append(action)
    return chosen[:MAX_PROPOSALS]


def without_control_plane(diagnosis: Diagnosis) -> Diagnosis:
    """The diagnosis of a service the agent cannot act on: no proposals, and a next step saying why."""
    note = (
        f"No executable actions: the service catalog gives {diagnosis.affected_service} no control plane "
        "(`control_plane` section), so the agent only advises."
    )
    return diagnosis.model_copy(update={"proposed_actions": [], "next_steps": [*diagnosis.next_steps, note]})


class Investigates(Protocol):
    """The investigator the proposer wraps (``oncall.investigate.investigator.Investigator``)."""

    @property
    def first_engine(self) -> str: ...

    async def investigate(
        self, incident: dict[str, Any], alerts: list[dict[str, Any]], *, episode: int | None = None
    ) -> Diagnosis: ...


def service_entry(catalog: Catalog, incident: dict[str, Any], alerts: list[dict[str, Any]]) -> ServiceEntry | None:
    """The catalog entry of an incident: the first whose alert routes match one of its label sets."""
    labels = [dict(a.get("labels") or {}) for a in alerts]
    labels += [dict(incident.get(key) or {}) for key in ("common_labels", "group_labels")]
    return catalog.match(labels)


class ProposingInvestigator:
    """An investigator whose diagnoses carry ``propose``'s actions (see module docstring).

    Args:
        inner: the investigator that runs the engines.
        catalog: the service catalog (``control_plane`` per service).
        control_plane: builds the client of a control plane URL.
        bounds: (min, max) replicas of a scale.
        on_proposed: called with (incident id, epoch s) when a diagnosis with proposals is returned
            (``SAFETY_MODE=auto-low-risk``: ``auto.AutoApprover.proposed``).
    """

    def __init__(
        self,
        inner: Investigates,
        catalog: Catalog,
        control_plane: Callable[[str], ProcessManager],
        bounds: tuple[int, int],
        on_proposed: Callable[[int, float], None] | None = None,
    ) -> None:
        self.inner = inner
        self.on_proposed = on_proposed
        self.catalog = catalog
        self.control_plane = control_plane
        self.bounds = bounds

    @property
    def first_engine(self) -> str:
        """The first engine of the wrapped investigator."""
        return self.inner.first_engine

    async def investigate(
        self, incident: dict[str, Any], alerts: list[dict[str, Any]], *, episode: int | None = None
    ) -> Diagnosis:
        """Investigate (episode ``episode``), then replace the diagnosis' proposals by the checked ones."""
        diagnosis = await self.inner.investigate(incident, alerts, episode=episode)
        entry = service_entry(self.catalog, incident, alerts) or self.catalog.get(diagnosis.affected_service)
        if entry is None or entry.control_plane is None:
            return without_control_plane(diagnosis)
        try:
            fleet = await self.control_plane(entry.control_plane.url).fleet()
        except ControlPlaneError as exc:
            log.warning("no proposals for incident %s: %s", incident.get("id"), exc)
            note = f"No actions proposed: the control plane could not be read ({exc})."
            return diagnosis.model_copy(update={"proposed_actions": [], "next_steps": [*diagnosis.next_steps, note]})
        actions = propose(diagnosis, fleet, self.bounds)
        if actions and self.on_proposed is not None and incident.get("id") is not None:
            self.on_proposed(int(incident["id"]), time.time())
        return diagnosis.model_copy(update={"proposed_actions": actions})
