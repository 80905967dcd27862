"""stackctl.ha_stack and alertmanager_cluster config rendering: every peer gets the alerts, every replica
the notifications, each replica its own environment; the rendered copies pass promtool and amtool."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from stackctl.agent_replicas import AgentReplica
from stackctl.alertmanager_cluster import AlertmanagerPeer, fan_out_webhook
from stackctl.config import StackPorts, load_timing, render_alertmanager
from stackctl.ha_stack import DEMO_AGENT_REPLICAS, DEMO_ALERTMANAGER_PEERS, HAStack
from stackctl.processes import find_binary

PEERS = [AlertmanagerPeer("alertmanager-1", 19093, 19094), AlertmanagerPeer("alertmanager-2", 19095, 19096)]
AGENTS = [AgentReplica("agent-1", 18101), AgentReplica("agent-2", 18102)]
PORTS = StackPorts(pm=17070, lb=19000, prometheus=19090, alertmanager=1, agent=2, replica_base=18000)
needs_tools = pytest.mark.skipif(
    find_binary("promtool") is None or find_binary("amtool") is None, reason="promtool/amtool not installed (make deps)"
)


def make_stack(tmp_path, **kwargs) -> HAStack:
    return HAStack(run_dir=tmp_path, ports=PORTS, alertmanager_peers=PEERS, agent_replicas=AGENTS, **kwargs)


def check(args: list[str]) -> None:
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_first_peer_and_first_replica_are_the_stack_urls(tmp_path):
    stack = make_stack(tmp_path)
    assert stack.url("alertmanager") == "http://127.0.0.1:19093" and stack.url("agent") == "http://127.0.0.1:18101"
    assert {19093, 19094, 19095, 19096, 18101, 18102, 17070, 19000, 19090} <= set(stack.all_ports())


def test_demo_layout_keeps_the_documented_ports_and_no_port_twice(tmp_path):
    stack = HAStack(run_dir=tmp_path)
    assert (stack.url("alertmanager"), stack.url("agent")) == ("http://127.0.0.1:9093", "http://127.0.0.1:8088")
    ports = list(stack.ports.all_ports())
    ports += [p for peer in DEMO_ALERTMANAGER_PEERS for p in (peer.web_port, peer.cluster_port)]
    ports += [replica.port for replica in DEMO_AGENT_REPLICAS if replica.port != stack.ports.agent]
    ports.remove(stack.ports.alertmanager)  # peer 1 is the stack's Alertmanager
    assert len(ports) == len(set(ports))


@needs_tools
def test_prometheus_sends_to_every_peer_and_scrapes_every_replica(tmp_path):
    stack = make_stack(tmp_path, timing=load_timing())
    stack.targets_file.write_text("[]")
    config_file = stack.prometheus_config()
    config = yaml.safe_load(config_file.read_text())
    assert config["alerting"]["alertmanagers"] == [
        {"static_configs": [{"targets": ["127.0.0.1:19093", "127.0.0.1:19095"]}]}
    ]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["oncall_agent"]["static_configs"] == [
        {"targets": ["127.0.0.1:18101"], "labels": {"replica": "agent-1"}},
        {"targets": ["127.0.0.1:18102"], "labels": {"replica": "agent-2"}},
    ]
    assert jobs["prometheus"]["static_configs"] == [{"targets": ["127.0.0.1:19090"]}]
    check(["promtool", "check", "config", str(config_file)])


@needs_tools
def test_alertmanager_notifies_every_replica_with_the_shipped_settings(tmp_path):
    config_file = render_alertmanager(tmp_path, StackPorts(agent=18101), load_timing())
    fan_out_webhook(config_file, "http://127.0.0.1:18101", [replica.url for replica in AGENTS])
    webhooks = yaml.safe_load(config_file.read_text())["receivers"][0]["webhook_configs"]
    shipped = yaml.safe_load(render_alertmanager(tmp_path / "shipped", StackPorts(), None).read_text())
    shipped_webhook = shipped["receivers"][0]["webhook_configs"][0]
    assert webhooks == [
        {**shipped_webhook, "url": "http://127.0.0.1:18101/alerts"},
        {**shipped_webhook, "url": "http://127.0.0.1:18102/alerts"},
    ]
    check(["amtool", "check-config", str(config_file)])
    with pytest.raises(ValueError, match="no webhook_configs entry"):
        fan_out_webhook(config_file, "http://127.0.0.1:8088", [AGENTS[0].url])


def test_each_replica_gets_its_own_url_and_all_share_the_database(tmp_path):
    stack = make_stack(tmp_path, isolated=True)
    assert stack.replica_environment() == {
        "agent-1": {"PUBLIC_BASE_URL": "http://127.0.0.1:18101"},
        "agent-2": {"PUBLIC_BASE_URL": "http://127.0.0.1:18102"},
    }
    assert "DATABASE_PATH" not in str(stack.replica_environment())
