"""The structured root-cause diagnosis an investigation ends with: the contract every engine fills.

The headline (``fault_type``, ``affected_replicas``, ``confidence``, ``summary``) explains the alert that
paged; ``hypotheses`` ranks it with up to two alternatives, each with evidence for and against;
``proposed_actions`` are remediation options an engineer may approve (executed only by deterministic
code after approval); ``impact`` and ``similar_incidents`` are filled by the agent from measurements
and history, never by a model (see ``AGENT_FIELDS``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class FaultType(StrEnum):
    """Closed set of root-cause categories. ``none``: nothing wrong found; ``unknown``: inconclusive;
    ``overload``: more traffic than the replicas can serve (a surge beyond capacity, no fault on them)."""

    code_bug = "code_bug"
    injected_errors = "injected_errors"
    latency = "latency"
    cpu_saturation = "cpu_saturation"
    memory_pressure = "memory_pressure"
    instance_crash = "instance_crash"
    deploy_regression = "deploy_regression"
    overload = "overload"
    none = "none"
    unknown = "unknown"


Priority = Literal["P1", "P2", "P3", "P4"]


class Evidence(BaseModel):
    """One fact the diagnosis rests on.

    ``tool`` is the tool call that produced it (e.g. ``compute_error_rate``), ``query`` the PromQL,
    log line or arguments it came from, ``finding`` what it showed.
    """

    model_config = ConfigDict(extra="ignore")

    tool: str = Field(min_length=1)
    query: str = Field(min_length=1)
    finding: str = Field(min_length=1)


class Load(BaseModel):
    """The traffic behind a hypothesis (requests/s; ratios 0-1; counts of replicas), for capacity decisions.

    ``baseline_rps``: the service's usual rate before the onset (median of the 1-minute rate over the
    10 minutes before it); ``current_rps`` the rate now; ``surge_factor`` = current / baseline;
    ``capacity_rps`` the estimated rate the ``replicas`` serve within the latency objective;
    ``headroom`` = 1 - current / capacity (negative: over capacity); ``suggested_replicas`` the replica
    count that serves the current rate with headroom, within ``max_replicas``.
    """

    model_config = ConfigDict(extra="ignore")

    baseline_rps: float | None = Field(default=None, ge=0)
    current_rps: float | None = Field(default=None, ge=0)
    surge_factor: float | None = Field(default=None, ge=0)
    per_replica_rps: dict[str, float] = Field(default_factory=dict)
    replicas: int | None = Field(default=None, ge=0)
    capacity_rps: float | None = Field(default=None, ge=0)
    headroom: float | None = None
    suggested_replicas: int | None = Field(default=None, ge=1)
    max_replicas: int | None = Field(default=None, ge=1)


class Hypothesis(BaseModel):
    """One candidate explanation, ranked by ``confidence`` (0-1, calibrated: how much independent, fresh
    evidence agrees). ``explains_alert`` says whether it accounts for the signal of the alert that paged;
    ``load`` carries the traffic figures of an ``overload`` hypothesis (and the context of a fault under load)."""

    model_config = ConfigDict(extra="ignore")

    fault_type: FaultType
    summary: str = Field(min_length=1, max_length=300)
    affected_replicas: list[str] = Field(default_factory=list)
    confidence: float = Field(ge=0.0, le=1.0)
    explains_alert: bool = True
    evidence_for: list[Evidence] = Field(default_factory=list)
    evidence_against: list[Evidence] = Field(default_factory=list)
    load: Load | None = None


ActionKind = Literal["clear_fault", "restart_replica", "scale", "rollback"]
"""The closed catalogue of remediation actions."""
Risk = Literal["low", "medium", "high"]


class ProposedAction(BaseModel):
    """A remediation option shown to the engineer as a numbered choice.

    ``target`` names a replica (``inventory-2``) or ``all``; ``params`` carries the action's arguments
    (``{"replicas": 3}`` for scale, ``{"version": "1.4.0"}`` for rollback). ``risk`` is assigned by the
    agent's action catalogue, not by whoever proposed it.
    """

    model_config = ConfigDict(extra="ignore")

    action: ActionKind
    target: str | None = None
    params: dict[str, str | int | float] = Field(default_factory=dict)
    risk: Risk = "medium"
    rationale: str = Field(default="", max_length=500)
    expected_effect: str = Field(default="", max_length=300)


class Impact(BaseModel):
    """What clients experienced since the onset (epoch seconds; counts of requests; ratios 0-1).

    ``error_budget_burned`` is the share of the service's SLO error budget (over the SLO window) these
    failures used, when the service has an availability SLO.
    """

    model_config = ConfigDict(extra="ignore")

    onset_at: float | None = None
    duration_s: float | None = Field(default=None, ge=0)
    requests: float | None = Field(default=None, ge=0)
    failed_requests: float | None = Field(default=None, ge=0)
    failed_ratio: float | None = Field(default=None, ge=0, le=1)
    client_timeouts: float | None = Field(default=None, ge=0)
    affected_routes: list[str] = Field(default_factory=list)
    affected_replicas: list[str] = Field(default_factory=list)
    error_budget_burned: float | None = Field(default=None, ge=0)


class SimilarIncident(BaseModel):
    """An earlier incident like this one (``score`` 0-1), with how it ended."""

    model_config = ConfigDict(extra="ignore")

    incident_id: int
    title: str
    score: float = Field(ge=0.0, le=1.0)
    fault_type: FaultType | None = None
    resolution: str = ""
    duration_s: float | None = Field(default=None, ge=0)
    action: str | None = None
    ticket: str | None = None


class ChangeEvent(BaseModel):
    """One change in the window around the onset: ``ts`` epoch seconds, ``offset_s`` seconds from the onset
    (negative before it, None when the onset is unknown), ``kind`` (deploy, config, scale, fault, restart,
    crash, start, stop, commit), the ``replica`` it touched and a one-line ``summary``."""

    model_config = ConfigDict(extra="ignore")

    ts: float
    offset_s: float | None = None
    kind: str = Field(min_length=1)
    replica: str | None = None
    summary: str = Field(min_length=1)


class Diagnosis(BaseModel):
    """Root-cause diagnosis sent to the on-call engineer.

    ``affected_replicas`` holds replica names as the process manager gives them (``inventory-2``);
    ``confidence`` is a ratio 0-1; ``engine`` says which engine produced it (``offline`` or ``openai:<model>``).
    ``onset_at``: epoch seconds the symptoms began (the first alert's start), which ``changes`` (the change
    timeline around it, oldest first) are relative to; ``catalog_gaps``: what the service catalog does not
    say about the service (empty when its entry is complete).
    """

    model_config = ConfigDict(extra="ignore")

    summary: str = Field(min_length=1, max_length=500)
    root_cause: str = Field(min_length=1)
    fault_type: FaultType
    affected_service: str = Field(min_length=1)
    affected_replicas: list[str] = Field(default_factory=list)
    affected_file: str | None = None
    affected_line: int | None = Field(default=None, ge=1)
    priority: Priority
    confidence: float = Field(ge=0.0, le=1.0)
    evidence: list[Evidence] = Field(default_factory=list)
    suggested_fix: str = ""
    next_steps: list[str] = Field(default_factory=list)
    hypotheses: list[Hypothesis] = Field(default_factory=list, max_length=3)
    proposed_actions: list[ProposedAction] = Field(default_factory=list, max_length=3)
    impact: Impact | None = None
    similar_incidents: list[SimilarIncident] = Field(default_factory=list, max_length=3)
    onset_at: float | None = None
    changes: list[ChangeEvent] = Field(default_factory=list)
    catalog_gaps: list[str] = Field(default_factory=list)
    engine: str = "offline"


AGENT_FIELDS = frozenset({"engine", "impact", "similar_incidents"})
"""Diagnosis fields the agent sets from its own measurements and history; a model never fills them."""
