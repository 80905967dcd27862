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


class Diagnosis(BaseModel):
    """Root-cause diagnosis sent to the on-call engineer.

    ``affected_replicas`` holds replica names as the process manager gives them (``inventory-2``);
    ``confidence`` is a ratio 0-1; ``engine`` says which engine produced it (``offline`` or ``openai:<model>``).
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
    engine: str = "offline"
