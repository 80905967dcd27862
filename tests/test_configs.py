"""Checks of prometheus.yaml, alerts.yaml and alertmanager.yaml.

The real validators (promtool 2.42, amtool 0.25) run when installed; a test that needs a
missing binary is skipped with the reason. The pure-Python tests pin what the
rest of the stack relies on, which the validators cannot know about.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import REPO_ROOT

PROMETHEUS_YAML = REPO_ROOT / "prometheus.yaml"
ALERTS_YAML = REPO_ROOT / "alerts.yaml"
ALERTMANAGER_YAML = REPO_ROOT / "alertmanager.yaml"
RULE_TESTS = REPO_ROOT / "tests" / "rules" / "alerts_test.yaml"
RULE_TEST_FILES = sorted((REPO_ROOT / "tests" / "rules").glob("*_test.yaml"))  # one per rule group

ALERT_NAMES = {
    "InventoryHighErrorRate",
    "InventoryHighLatencyP99",
    "InventoryReplicaDown",
    "InventoryReplicaCrashed",
    "InventoryMemoryGrowth",
    "InventoryHighCPU",
    "InventoryReplicaHighErrorRate",
    "InventoryReplicaHighLatencyP99",
    "InventoryClientErrors",
}
# Scrape job each rule reads when it is not the inventory replicas' own metrics.
RULE_JOBS = {"InventoryClientErrors": "loadbalancer"}
ERROR_RATE_EXPR = (
    'sum(rate(http_errors_total{job="inventory"}[1m])) / sum(rate(http_requests_total{job="inventory"}[1m])) > 0.2'
)
# file-SD content in the format process_manager.py writes (stack contract)
TARGETS = [
    {"targets": ["127.0.0.1:8001"], "labels": {"replica": "inventory-1"}},
    {"targets": ["127.0.0.1:8002"], "labels": {"replica": "inventory-2"}},
]


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(
            f"{name} is not installed "
            f"(Debian package: {'prometheus' if name == 'promtool' else 'prometheus-alertmanager'})"
        )
    return path


def _run(args: list[str], cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=cwd)


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _rules(group_name: str = "inventory") -> dict[str, dict[str, Any]]:
    groups = _load(ALERTS_YAML)["groups"]
    return {rule["alert"]: rule for group in groups if group["name"] == group_name for rule in group["rules"]}


def _rule_count() -> int:
    return sum(len(group["rules"]) for group in _load(ALERTS_YAML)["groups"])


# ---------------------------------------------------------------- real validators


def _copy_prometheus_config(tmp_path: Path, alerts_text: str | None = None) -> Path:
    shutil.copy(PROMETHEUS_YAML, tmp_path / "prometheus.yaml")
    (tmp_path / "alerts.yaml").write_text(alerts_text if alerts_text is not None else ALERTS_YAML.read_text())
    (tmp_path / "inventory_targets.json").write_text(json.dumps(TARGETS))
    return tmp_path / "prometheus.yaml"


def test_promtool_check_config(tmp_path: Path) -> None:
    """Validated in a temp copy with a contract-shaped inventory_targets.json, which promtool
    also parses (the real file is written at run time by process_manager.py)."""
    promtool = _binary("promtool")
    result = _run([promtool, "check", "config", str(_copy_prometheus_config(tmp_path))])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "is valid prometheus config file syntax" in output
    assert "SUCCESS: 1 rule files found" in output and f"SUCCESS: {_rule_count()} rules found" in output
    assert "WARNING" not in output


def test_promtool_check_rules() -> None:
    result = _run([_binary("promtool"), "check", "rules", str(ALERTS_YAML)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {_rule_count()} rules found" in result.stdout


@pytest.mark.parametrize("rule_tests", RULE_TEST_FILES, ids=lambda path: path.name)
def test_promtool_rule_unit_tests_pass(rule_tests: Path) -> None:
    result = _run([_binary("promtool"), "test", "rules", str(rule_tests)])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "SUCCESS" in output and "FAILED" not in output


def test_promtool_rule_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """The unit tests have teeth: with the error-ratio threshold raised to 0.6 they fail."""
    promtool = _binary("promtool")
    broken = ALERTS_YAML.read_text().replace("[1m])) > 0.2", "[1m])) > 0.6")
    assert broken != ALERTS_YAML.read_text()
    (tmp_path / "alerts.yaml").write_text(broken)
    rules_dir = tmp_path / "tests" / "rules"
    rules_dir.mkdir(parents=True)
    shutil.copy(RULE_TESTS, rules_dir / "alerts_test.yaml")
    result = _run([promtool, "test", "rules", str(rules_dir / "alerts_test.yaml")])
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr and "InventoryHighErrorRate" in result.stdout + result.stderr


def test_amtool_check_config() -> None:
    result = _run([_binary("amtool"), "check-config", str(ALERTMANAGER_YAML)])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "SUCCESS" in output
    assert "1 receivers" in output and "1 inhibit rules" in output


# ---------------------------------------------------------------- contract, pure Python


def test_alertmanager_routes_everything_to_the_agent_webhook() -> None:
    config = _load(ALERTMANAGER_YAML)
    route = config["route"]
    assert route["receiver"] == "oncall-agent"
    assert route["group_by"] == ["alertname", "service"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == ("10s", "1m", "4h")
    (receiver,) = [r for r in config["receivers"] if r["name"] == "oncall-agent"]
    (webhook,) = receiver["webhook_configs"]
    assert webhook["url"] == "http://127.0.0.1:8088/alerts"
    assert webhook["send_resolved"] is True
    assert webhook["max_alerts"] == 0
    assert "http_config" not in webhook  # the bearer token is documented, never committed
    (inhibit,) = config["inhibit_rules"]
    assert inhibit["source_matchers"] == ['alertname="InventoryReplicaDown"']
    assert inhibit["target_matchers"] == ['severity="warning"']
    assert set(inhibit["equal"]) == {"service", "replica"}


def test_prometheus_scrape_jobs_follow_the_contract() -> None:
    config = _load(PROMETHEUS_YAML)
    assert config["global"]["scrape_interval"] == "5s" and config["global"]["evaluation_interval"] == "5s"
    assert config["rule_files"] == ["alerts.yaml"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9093"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"inventory", "loadbalancer", "process_manager", "oncall_agent", "prometheus", "payments"}
    assert jobs["inventory"]["file_sd_configs"] == [{"files": ["inventory_targets.json"], "refresh_interval": "5s"}]
    assert jobs["loadbalancer"]["metrics_path"] == "/lb/metrics"
    static = {
        name: job["static_configs"][0]["targets"] for name, job in jobs.items() if name not in {"inventory", "payments"}
    }
    assert static == {
        "loadbalancer": ["127.0.0.1:9000"],
        "process_manager": ["127.0.0.1:7070"],
        "oncall_agent": ["127.0.0.1:8088"],
        "prometheus": ["127.0.0.1:9090"],
    }


def test_alert_rules_carry_contract_labels_and_annotations() -> None:
    rules = _rules()
    assert set(rules) == ALERT_NAMES
    assert rules["InventoryHighErrorRate"]["expr"] == ERROR_RATE_EXPR
    for name, rule in rules.items():
        assert rule["labels"]["service"] == "inventory", name
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, name
        assert rule["annotations"]["runbook_url"] == f"https://runbooks.example.com/inventory/{name}"
        # every description shows the measured value, except ReplicaDown whose value is always 0
        assert ("$value" in rule["annotations"]["description"]) != (name == "InventoryReplicaDown"), name
        if name == "InventoryReplicaCrashed":  # an event, from the supervisor's crash counter: no `for:`
            assert "for" not in rule and 'job="process_manager"' in rule["expr"]
            continue
        assert isinstance(rule["for"], str) and rule["for"].endswith("m"), name  # plain key for the demo override
        assert f'job="{RULE_JOBS.get(name, "inventory")}"' in rule["expr"], name
    assert {name: rules[name]["for"] for name in rules if "for" in rules[name]} == {
        "InventoryHighErrorRate": "1m",
        "InventoryHighLatencyP99": "2m",
        "InventoryReplicaDown": "1m",
        "InventoryMemoryGrowth": "2m",
        "InventoryHighCPU": "2m",
        "InventoryReplicaHighErrorRate": "1m",
        "InventoryReplicaHighLatencyP99": "2m",
        "InventoryClientErrors": "1m",
    }
