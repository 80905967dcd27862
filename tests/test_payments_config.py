"""The payments service in the stack's configuration: its scrape job, its alert rules, the rendered
run-folder copies and the stack's ports. promtool runs when installed (skipped with the reason otherwise)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stackctl.config import StackPorts, payments_static_configs, render_prometheus, render_rules
from stackctl.stack import Stack, free_stack_ports
from tests.support import REPO_ROOT

ALERTS_YAML = REPO_ROOT / "alerts.yaml"
RULE_TESTS = REPO_ROOT / "tests" / "rules" / "payments_test.yaml"
ERROR_RATE_EXPR = (
    'sum(rate(http_requests_total{job="payments",handler!="/metrics",status="5xx"}[1m])) '
    '/ sum(rate(http_requests_total{job="payments",handler!="/metrics"}[1m])) > 0.05'
)


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package: prometheus)")
    return path


def _payments_group() -> dict[str, Any]:
    groups = yaml.safe_load(ALERTS_YAML.read_text())["groups"]
    assert groups[-1]["name"] == "payments", "the payments group is the last group of alerts.yaml"
    return groups[-1]


def _jobs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_shipped_payments_job_scrapes_both_instances_with_an_instance_label_only() -> None:
    job = _jobs(yaml.safe_load((REPO_ROOT / "prometheus.yaml").read_text()))["payments"]
    assert set(job) == {"job_name", "static_configs"}  # default /metrics path, no relabelling
    assert job["static_configs"] == [
        {"targets": ["127.0.0.1:8201"], "labels": {"instance": "payments-1"}},
        {"targets": ["127.0.0.1:8202"], "labels": {"instance": "payments-2"}},
    ]
    assert job["static_configs"] == payments_static_configs(StackPorts(), 2)


def test_payments_rules_follow_the_conventions() -> None:
    rules = {rule["alert"]: rule for rule in _payments_group()["rules"]}
    assert set(rules) == {"PaymentsHighErrorRate", "PaymentsHighLatencyP99"}
    assert " ".join(rules["PaymentsHighErrorRate"]["expr"].split()) == ERROR_RATE_EXPR
    assert "http_request_duration_highr_seconds_bucket" in rules["PaymentsHighLatencyP99"]["expr"]
    assert {name: (rule["for"], rule["labels"]["severity"]) for name, rule in rules.items()} == {
        "PaymentsHighErrorRate": ("1m", "critical"),
        "PaymentsHighLatencyP99": ("2m", "warning"),
    }
    for name, rule in rules.items():
        assert rule["labels"] == {"severity": rule["labels"]["severity"], "service": "payments"}, name
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, name
        assert rule["annotations"]["runbook_url"] == f"https://runbooks.example.com/payments/{name}"
        assert "$value" in rule["annotations"]["description"], name
        assert 'job="payments"' in rule["expr"] and "replica" not in rule["expr"], name


def test_demo_timing_rewrites_the_payments_for_too(tmp_path: Path) -> None:
    rendered = yaml.safe_load(render_rules(tmp_path, {"rules": {"for": "10s"}}).read_text())
    (group,) = [g for g in rendered["groups"] if g["name"] == "payments"]
    assert {rule["for"] for rule in group["rules"]} == {"10s"}


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("[1m])) > 0.05", "[1m])) > 0.2"),  # threshold raised
        ('job="payments",handler!="/metrics"}', 'job="payments"}'),  # scrapes counted as traffic
        ('status="5xx"', 'status="500"'),  # ungrouped status: never matches the instrumentator's labels
        ("[1m]))) > 1", "[1m]))) > 2"),  # latency threshold raised
    ],
)
def test_payments_rule_tests_catch_a_broken_rule(tmp_path: Path, old: str, new: str) -> None:
    promtool = _promtool()
    shipped = ALERTS_YAML.read_text()
    broken = shipped.replace(old, new)
    assert broken != shipped
    (tmp_path / "alerts.yaml").write_text(broken)
    rules_dir = tmp_path / "tests" / "rules"
    rules_dir.mkdir(parents=True)
    shutil.copy(RULE_TESTS, rules_dir / RULE_TESTS.name)
    result = subprocess.run(
        [promtool, "test", "rules", str(rules_dir / RULE_TESTS.name)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr


def test_rendered_payments_job_follows_the_stack_ports(tmp_path: Path) -> None:
    ports = StackPorts(payments_base=28200, alertmanager=29093)
    targets = tmp_path / "inventory_targets.json"
    targets.write_text(json.dumps([{"targets": ["127.0.0.1:18001"], "labels": {"replica": "inventory-1"}}]))
    rules = render_rules(tmp_path, None)
    config_file = render_prometheus(tmp_path, ports, targets, rules, None, payments_instances=3)
    job = _jobs(yaml.safe_load(config_file.read_text()))["payments"]
    assert job["static_configs"] == [
        {"targets": [f"127.0.0.1:{28200 + n}"], "labels": {"instance": f"payments-{n}"}} for n in (1, 2, 3)
    ]
    if shutil.which("promtool"):
        result = subprocess.run(
            ["promtool", "check", "config", str(config_file)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr
    without = render_prometheus(tmp_path / "none", ports, targets, rules, None, payments_instances=0)
    assert "payments" not in _jobs(yaml.safe_load(without.read_text()))


def test_stack_ports_cover_the_payments_instances() -> None:
    ports = StackPorts()
    assert ports.all_ports()[-2:] == [8201, 8202]
    assert 8203 not in ports.all_ports() and ports.all_ports(payments_instances=3)[-1] == 8203
    assert ports.all_ports(payments_instances=0) == ports.all_ports()[:-2]
    for _ in range(20):
        free = free_stack_ports()
        replicas = set(range(free.replica_base + 1, free.replica_base + 11))
        payments = set(range(free.payments_base + 1, free.payments_base + 10))
        fixed = {free.pm, free.lb, free.prometheus, free.alertmanager, free.agent}
        assert not replicas & payments and not fixed & payments


def test_stack_payments_instances_option(tmp_path: Path) -> None:
    stack = Stack(run_dir=tmp_path, ports=StackPorts(payments_base=28200), payments_instances=3)
    assert stack.payments_urls() == [f"http://127.0.0.1:{28200 + n}" for n in (1, 2, 3)]
    assert stack.payments_log_file(2) == tmp_path.resolve() / "logs" / "payments" / "payments-2.log"
    assert Stack(run_dir=tmp_path).payments_instances == 2
    assert Stack(run_dir=tmp_path, payments_instances=0).payments_urls() == []
    for invalid in (-1, 10):
        with pytest.raises(ValueError, match="payments_instances"):
            Stack(run_dir=tmp_path, payments_instances=invalid)
