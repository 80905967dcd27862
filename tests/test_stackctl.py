"""stackctl: run-folder configs rendered from the shipped ones, with ports and the demo timing."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from stackctl.config import (
    MAX_PAYMENTS_INSTANCES,
    StackPorts,
    load_timing,
    render_alertmanager,
    render_prometheus,
    render_rules,
)
from stackctl.processes import REPO_ROOT, ephemeral_port_low, find_binary
from stackctl.reply import send_reply
from stackctl.stack import INTEGRATION_VARIABLES, free_stack_ports
from tests.support import free_port, wait_http_ok

PORTS = StackPorts(pm=17070, lb=19000, prometheus=19090, alertmanager=19093, agent=18088, replica_base=18000)


def render_all(tmp_path, timing):
    rules = render_rules(tmp_path, timing)
    targets = tmp_path / "inventory_targets.json"
    targets.write_text('[{"targets": ["127.0.0.1:18001"], "labels": {"replica": "inventory-1"}}]')
    return (
        rules,
        render_prometheus(tmp_path, PORTS, targets, rules, timing),
        render_alertmanager(tmp_path, PORTS, timing),
    )


def test_demo_timing_rewrites_copies_only(tmp_path):
    shipped = (REPO_ROOT / "alerts.yaml").read_text()
    rules_file, prometheus_file, alertmanager_file = render_all(tmp_path, load_timing())
    assert (REPO_ROOT / "alerts.yaml").read_text() == shipped
    rules = [r for g in yaml.safe_load(rules_file.read_text())["groups"] for r in g["rules"]]
    shipped_rules = [r for g in yaml.safe_load(shipped)["groups"] for r in g["rules"]]
    assert [r["alert"] for r in rules] == [r["alert"] for r in shipped_rules]
    assert {r["for"] for r in rules if "for" in r} == {"10s"}
    assert [r["expr"] for r in rules] == [r["expr"] for r in shipped_rules]
    prometheus = yaml.safe_load(prometheus_file.read_text())
    assert prometheus["global"]["scrape_interval"] == "2s" and prometheus["rule_files"] == [str(rules_file)]
    assert prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:19093"]
    jobs = {j["job_name"]: j for j in prometheus["scrape_configs"]}
    assert jobs["loadbalancer"]["static_configs"][0]["targets"] == ["127.0.0.1:19000"]
    assert jobs["oncall_agent"]["static_configs"][0]["targets"] == ["127.0.0.1:18088"]
    assert jobs["inventory"]["file_sd_configs"][0]["files"] == [str(tmp_path / "inventory_targets.json")]
    alertmanager = yaml.safe_load(alertmanager_file.read_text())
    assert alertmanager["route"]["group_wait"] == "2s"
    assert alertmanager["receivers"][0]["webhook_configs"][0]["url"] == "http://127.0.0.1:18088/alerts"


def test_without_timing_the_shipped_timing_is_kept(tmp_path):
    rules_file, _, alertmanager_file = render_all(tmp_path, None)
    shipped = yaml.safe_load((REPO_ROOT / "alerts.yaml").read_text())
    assert yaml.safe_load(rules_file.read_text()) == shipped
    assert (
        yaml.safe_load(alertmanager_file.read_text())["route"]["group_wait"]
        == yaml.safe_load((REPO_ROOT / "alertmanager.yaml").read_text())["route"]["group_wait"]
    )


@pytest.mark.skipif(
    find_binary("promtool") is None or find_binary("amtool") is None, reason="promtool/amtool not installed (make deps)"
)
def test_rendered_demo_configs_pass_promtool_and_amtool(tmp_path):
    _, prometheus_file, alertmanager_file = render_all(tmp_path, load_timing())
    for args in (
        ["promtool", "check", "config", str(prometheus_file)],
        ["amtool", "check-config", str(alertmanager_file)],
    ):
        result = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_make_reply_is_accepted_by_the_agent_webhook(procs, tmp_path):
    """stackctl.reply signs like Twilio: the real agent accepts it, and rejects a wrong token with 403."""
    port = free_port()
    agent_url = f"http://127.0.0.1:{port}"
    env = {name: None for name in INTEGRATION_VARIABLES}
    env.update(
        {
            "ONCALL_ENV_FILE": str(tmp_path / "none.env"),
            "DATABASE_PATH": str(tmp_path / "oncall.db"),
            "PUBLIC_BASE_URL": agent_url,
            "TWILIO_AUTH_TOKEN": "reply-token",
            "ONCALL_WHATSAPP_NUMBERS": "whatsapp:+15550100001",
        }
    )
    procs.start(
        "agent",
        [sys.executable, "-m", "uvicorn", "on_call_agent:app", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
    )
    wait_http_ok(f"{agent_url}/healthz")
    assert send_reply(agent_url, "reply-token", "whatsapp:+15550100001", "help").status_code == 200
    assert send_reply(agent_url, "wrong-token", "whatsapp:+15550100001", "help").status_code == 403


def test_replica_blocks_lie_below_the_ephemeral_ports(tmp_path) -> None:
    """Seen in ``make accuracy``: during a 1,000 req/s surge an outgoing connection held replica_base + 4, so
    the scale-out to 4 replicas answered 503. Blocks are now drawn below the kernel's ephemeral range."""
    low = ephemeral_port_low()
    for _ in range(20):
        ports = free_stack_ports()
        assert ports.replica_base + 10 < low and ports.payments_port(MAX_PAYMENTS_INSTANCES) < low
    custom = tmp_path / "ip_local_port_range"
    custom.write_text("40000\t60999\n")
    assert ephemeral_port_low(custom) == 40000
    assert ephemeral_port_low(tmp_path / "missing") == 32768


def test_isolated_stack_ports_leave_the_replica_and_payments_blocks_free() -> None:
    """A replica scaled up later binds replica_base + N: no other component of the stack may hold it (an
    Alertmanager on replica_base + 3 made the process manager's scale to 3 answer 503)."""
    for _ in range(20):
        ports = free_stack_ports()
        blocks = set(range(ports.replica_base + 1, ports.replica_base + 11))
        blocks |= {ports.payments_port(n) for n in range(1, MAX_PAYMENTS_INSTANCES + 1)}
        fixed = [ports.pm, ports.lb, ports.prometheus, ports.alertmanager, ports.agent]
        assert len(set(fixed)) == 5 and not blocks & set(fixed)
