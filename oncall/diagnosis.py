"""The structured root-cause diagnosis an investigation ends with."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class FaultType(StrEnum):
    """Closed set of root-cause categories. ``none``: nothing wrong found; ``unknown``: inconclusive."""

    code_bug = "code_bug"
    injected_errors = "injected_errors"
    latency = "latency"
    cpu_saturation = "cpu_saturation"
    memory_pressure = "memory_pressure"
    instance_crash = "instance_crash"
    deploy_regression = "deploy_regression"
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


RemediationAction = Literal["rollback", "clear_fault", "restart_replica", "scale"]


class Remediation(BaseModel):
    """A suggested remediation through the service's control plane (never run without a human's approval):
    ``rollback`` ``from_version`` -> ``to_version``, ``clear_fault``, ``restart_replica``, ``scale``."""

    model_config = ConfigDict(extra="ignore")

    action: RemediationAction
    service: str = Field(min_length=1)
    replicas: list[str] = Field(default_factory=list)
    from_version: str | None = None
    to_version: str | None = None
    reason: str = ""


class Diagnosis(BaseModel):
    """Root-cause diagnosis sent to the on-call engineer.

    ``affected_replicas`` holds replica names as the process manager gives them (``inventory-2``);
    ``confidence`` is a ratio 0-1; ``engine`` says which engine produced it (``offline`` or ``openai:<model>``).
    ``onset_at``: epoch seconds the symptoms began (the first alert's start); ``changes``: the change
    timeline around it, oldest first; ``remediation``: the suggested fix as an action (e.g. ``rollback``);
    ``catalog_gaps``: what the service catalog does not say about the service (empty when complete).
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
    onset_at: float | None = None
    changes: list[ChangeEvent] = Field(default_factory=list)
    remediation: Remediation | None = None
    catalog_gaps: list[str] = Field(default_factory=list)
    engine: str = "offline"
