"""The accuracy benchmark's scenarios (``bench/scenarios/*.yaml``): setup, faults, alerts and ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field

REPO_ROOT = Path(__file__).resolve().parent.parent
SCENARIO_DIR = REPO_ROOT / "bench" / "scenarios"
NO_CAUSE = {"none", "unknown"}


class Traffic(BaseModel):
    """traffic_gen.py settings of a scenario (rates in requests/s, durations in seconds); ``mix`` picks the
    service the traffic goes to (inventory through the load balancer, payments over its instances)."""

    mix: Literal["inventory", "payments"] = "inventory"
    profile: Literal["constant", "spike", "ramp", "sine", "ramp-spike", "agentic"]
    rps: float = 30
    normal_rps: float = 20
    normal_duration: float = 5
    error_rps: float = 30


class Setup(BaseModel):
    """Replica count and traffic a scenario starts from; ``warmup_s`` seconds of that traffic run before the
    faults (a surge needs a baseline before it)."""

    replicas: int = Field(ge=1, le=10)
    traffic: Traffic
    warmup_s: float = Field(default=8.0, ge=0)


class Fault(BaseModel):
    """One fault: a /faults mode with its parameters, on ``all`` replicas or one named replica.

    ``via: pm`` goes through the process manager (recorded in its change log); ``via: direct`` posts
    to the replica's own ``/faults`` (no change-log entry); ``via: payments`` posts to the payments
    instance's ``/admin/faults`` (``target`` payments-N or all). ``mode: deploy`` rolls the inventory
    replicas onto ``params.version`` through the process manager (``POST /deploy``). ``mode: surge``
    sends ``params.rps`` more requests/s through the load balancer for ``params.duration_s`` seconds
    (a second traffic generator: no fault on any replica).
    """

    mode: Literal["latency", "errors", "cpu", "stall", "oom_safe", "crash", "deploy", "surge"]
    params: dict[str, float | int | str] = Field(default_factory=dict)
    target: str = "all"
    via: Literal["pm", "direct", "payments"] = "pm"


class AlertPlan(BaseModel):
    """Which real alerts the scenario waits for, or the alert posted for a control.

    ``wait_for``: the first of these alerts' incidents to be diagnosed is graded; ``each``: every one of
    these alerts' incidents is graded (a two-fault run); ``synthetic``: the alert name posted as
    Alertmanager would after ``after_s`` seconds (nothing would fire); ``clear_on``: the faults are
    cleared as soon as this alert fires in Prometheus (a fault gone just before the investigation).
    """

    wait_for: list[str] = Field(default_factory=list)
    each: list[str] = Field(default_factory=list)
    synthetic: str | None = None
    after_s: float = 20
    clear_on: str | None = None

    def graded(self) -> list[str]:
        """The alert names whose incidents are graded."""
        return self.each or self.wait_for or ([self.synthetic] if self.synthetic else [])


class Expected(BaseModel):
    """What one alert's incident must say: accepted fault types and the exact replica set."""

    fault_type: list[str]
    affected_replicas: list[str]


class Truth(BaseModel):
    """Ground truth: accepted fault types, the exact replica set, for code bugs the file and line, and where
    set the accepted priorities; ``per_alert`` overrides type and replicas for one alert's incident.

    The line is the one in ``affected_function`` that accesses an attribute of ``dereferenced_name``
    (found with ast by ``tests.e2e_support.attribute_access_line``, so edits above it do not matter), or
    that subscripts ``subscripted_name`` (a failing dictionary lookup).
    """

    fault_type: list[str]
    affected_replicas: list[str]
    affected_file: str | None = None
    affected_function: str | None = None
    dereferenced_name: str | None = None
    subscripted_name: str | None = None
    service: str = "inventory"
    version: str | None = None
    rollback_to: str | None = None
    priority: list[str] | None = None
    per_alert: dict[str, Expected] = Field(default_factory=dict)

    def for_alert(self, alertname: str | None) -> Expected:
        """The expected fault types and replicas of ``alertname``'s incident."""
        if alertname in self.per_alert:
            return self.per_alert[alertname]
        return Expected(fault_type=self.fault_type, affected_replicas=self.affected_replicas)

    @property
    def control(self) -> bool:
        """True when no fault is expected (a control: none or unknown)."""
        return set(self.fault_type) <= NO_CAUSE and not self.per_alert

    def line(self) -> int | None:
        """The failing line the diagnosis must name, or None when the truth names none."""
        from tests.e2e_support import attribute_access_line, subscript_line

        if not (self.affected_file and self.affected_function):
            return None
        path = REPO_ROOT / self.affected_file
        if self.dereferenced_name:
            return attribute_access_line(path, self.affected_function, self.dereferenced_name)
        if self.subscripted_name:
            return subscript_line(path, self.affected_function, self.subscripted_name)
        return None


class Scenario(BaseModel):
    """One ``bench/scenarios/*.yaml`` case."""

    id: str
    description: str
    setup: Setup
    faults: list[Fault]
    alert: AlertPlan
    observe_s: float = Field(gt=0)
    truth: Truth


def load_scenarios(ids: list[str] | None) -> list[Scenario]:
    """Parse every scenario file (or only ``ids``); raise SystemExit naming unknown ids."""
    scenarios = [Scenario.model_validate(yaml.safe_load(p.read_text())) for p in sorted(SCENARIO_DIR.glob("*.yaml"))]
    if ids:
        unknown = set(ids) - {s.id for s in scenarios}
        if unknown:
            raise SystemExit(f"unknown scenario ids: {sorted(unknown)}")
        scenarios = [s for s in scenarios if s.id in ids]
    return scenarios


def traffic_args(traffic: Traffic, duration: float) -> list[str]:
    """Command-line arguments for traffic_gen.py."""
    if traffic.profile == "agentic":
        error_duration = max(duration - traffic.normal_duration, 1)
        return [
            "--profile",
            "agentic",
            "--normal-rps",
            str(traffic.normal_rps),
            "--normal-duration",
            str(traffic.normal_duration),
            "--error-rps",
            str(traffic.error_rps),
            "--error-duration",
            str(error_duration),
            "--duration",
            str(duration),
        ]
    return ["--profile", traffic.profile, "--rps", str(traffic.rps), "--duration", str(duration)]
