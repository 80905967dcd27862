"""Renders run-folder copies of the shipped Prometheus and Alertmanager configs.

The copies point at the ports a run uses and, optionally, carry the demo alert timing from
``stackctl/demo_timing.yaml``. The shipped files at the repository root are only read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from stackctl.processes import REPO_ROOT

DEMO_TIMING_FILE = REPO_ROOT / "stackctl" / "demo_timing.yaml"
PAYMENTS_JOB = "payments"
# Instance N of payments_service.py listens on payments_base + N and is named payments-N.
MAX_PAYMENTS_INSTANCES = 9
PAYMENTS_INSTANCES = 2  # started by default (demo, end-to-end tests)


@dataclass(frozen=True)
class StackPorts:
    """TCP ports on 127.0.0.1 of one stack; inventory replica N listens on ``replica_base + N``,
    payments instance N on ``payments_base + N``."""

    pm: int = 7070
    lb: int = 9000
    prometheus: int = 9090
    alertmanager: int = 9093
    agent: int = 8088
    replica_base: int = 8000
    payments_base: int = 8200

    def all_ports(self, max_replicas: int = 10, payments_instances: int = PAYMENTS_INSTANCES) -> list[int]:
        """Every port the stack binds: inventory replicas (up to ``max_replicas``) and payments instances included."""
        fixed = [self.pm, self.lb, self.prometheus, self.alertmanager, self.agent]
        replicas = [self.replica_base + n for n in range(1, max_replicas + 1)]
        return fixed + replicas + [self.payments_port(n) for n in range(1, payments_instances + 1)]

    def payments_port(self, number: int) -> int:
        """Port of payments instance ``number`` (1-based)."""
        return self.payments_base + number


def payments_instance_name(number: int) -> str:
    """Name of payments instance ``number`` (1-based): ``payments-N``; also its Prometheus ``instance`` label."""
    return f"{PAYMENTS_JOB}-{number}"


def payments_static_configs(ports: StackPorts, instances: int) -> list[dict[str, Any]]:
    """Prometheus static_configs of the payments job: one target per instance, labelled ``instance: payments-N``."""
    return [
        {"targets": [f"127.0.0.1:{ports.payments_port(n)}"], "labels": {"instance": payments_instance_name(n)}}
        for n in range(1, instances + 1)
    ]


def load_timing(path: Path = DEMO_TIMING_FILE) -> dict[str, Any]:
    """Read an alert-timing override file (sections ``prometheus``, ``rules``, ``alertmanager``)."""
    return yaml.safe_load(path.read_text()) or {}


def _write_yaml(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def render_rules(run_dir: Path, timing: dict[str, Any] | None) -> Path:
    """Copy ``alerts.yaml`` to ``run_dir``; with a timing override, every rule's ``for:`` is replaced."""
    rules = yaml.safe_load((REPO_ROOT / "alerts.yaml").read_text())
    rule_for = (timing or {}).get("rules", {}).get("for")
    if rule_for:
        for group in rules["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = rule_for
    return _write_yaml(run_dir / "alerts.yaml", rules)


def render_prometheus(
    run_dir: Path,
    ports: StackPorts,
    targets_file: Path,
    rules_file: Path,
    timing: dict[str, Any] | None,
    payments_instances: int = PAYMENTS_INSTANCES,
) -> Path:
    """Copy ``prometheus.yaml`` to ``run_dir`` with this run's ports, targets file and rules file.

    The ``payments`` job lists ``payments_instances`` instances (0 drops the job).
    """
    config = yaml.safe_load((REPO_ROOT / "prometheus.yaml").read_text())
    config.setdefault("global", {}).update((timing or {}).get("prometheus", {}))
    config["rule_files"] = [str(rules_file)]
    config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{ports.alertmanager}"]}]}]}
    job_ports = {
        "loadbalancer": ports.lb,
        "process_manager": ports.pm,
        "oncall_agent": ports.agent,
        "prometheus": ports.prometheus,
    }
    if payments_instances == 0:
        config["scrape_configs"] = [job for job in config["scrape_configs"] if job["job_name"] != PAYMENTS_JOB]
    for job in config["scrape_configs"]:
        name = job["job_name"]
        if name == PAYMENTS_JOB:
            job["static_configs"] = payments_static_configs(ports, payments_instances)
        if name in job_ports:
            job["static_configs"] = [{"targets": [f"127.0.0.1:{job_ports[name]}"]}]
        for sd in job.get("file_sd_configs", []):
            sd["files"] = [str(targets_file)]
    return _write_yaml(run_dir / "prometheus.yaml", config)


def render_alertmanager(run_dir: Path, ports: StackPorts, timing: dict[str, Any] | None) -> Path:
    """Copy ``alertmanager.yaml`` to ``run_dir``; webhooks to the agent go to this run's agent port."""
    config = yaml.safe_load((REPO_ROOT / "alertmanager.yaml").read_text())
    config["route"].update((timing or {}).get("alertmanager", {}))
    for receiver in config.get("receivers", []):
        for webhook in receiver.get("webhook_configs", []):
            parts = urlsplit(webhook["url"])
            if parts.port == 8088:
                webhook["url"] = urlunsplit(parts._replace(netloc=f"127.0.0.1:{ports.agent}"))
    return _write_yaml(run_dir / "alertmanager.yaml", config)
