"""End to end on the highly available stack: PostgreSQL, two clustered Alertmanagers, two agent replicas.

A real fault fires InventoryHighErrorRate in Prometheus, which sends it to BOTH Alertmanager peers;
exactly one peer notifies, every agent replica receives the notification, a replica killed by PID
leaves the other serving, and stop() frees every port. One stack for the module (tests in file order).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg
import pytest
from rich.console import Console

from stackctl.config import PAYMENTS_INSTANCES, load_timing
from stackctl.demo_ha import handled_tables, peer_rows, replica_rows
from stackctl.ha_stack import HAStack, free_ha_stack
from stackctl.postgres import find_pg_bindir
from stackctl.processes import port_is_free
from tests.e2e_support import ONCALL_NUMBER, inject, needs_prometheus, start_traffic
from tests.support import wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(needs_prometheus, reason="prometheus / alertmanager binaries not installed (make deps)"),
    pytest.mark.skipif(find_pg_bindir() is None, reason="PostgreSQL binaries not installed (make deps)"),
]
ALERT = "InventoryHighErrorRate"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    ha = free_ha_stack(
        tmp_path_factory.mktemp("ha"),
        timing=load_timing(),
        isolated=True,
        agent_env={"ONCALL_WHATSAPP_NUMBERS": ONCALL_NUMBER, "TWILIO_AUTH_TOKEN": "e2e-webhook-token"},
    )
    traffic = None
    try:
        ha.start(replicas=2)
        traffic = start_traffic(ha, ["--profile", "constant", "--rps", "30", "--duration", "150"], ha.log_dir / "t.log")
        yield ha
    finally:
        if traffic is not None and traffic.poll() is None:
            traffic.terminate()
            traffic.wait(timeout=10)
        ha.stop()


def process_environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def replica_has_alert_incident(url: str, headers: dict[str, str]) -> bool:
    for summary in httpx.get(f"{url}/incidents", headers=headers, timeout=5).json()["incidents"]:
        detail = httpx.get(f"{url}/incidents/{summary['id']}", headers=headers, timeout=5).json()
        if any(alert["labels"]["alertname"] == ALERT for alert in detail["alerts"]):
            return True
    return False


def test_prometheus_sends_to_every_peer_and_scrapes_every_replica(stack: HAStack):
    expected = {f"{url}/api/v2/alerts" for url in stack.alertmanager.urls}

    def alertmanagers() -> set[str]:
        answer = httpx.get(f"{stack.url('prometheus')}/api/v1/alertmanagers", timeout=5).json()
        return {am["url"] for am in answer["data"]["activeAlertmanagers"]}

    wait_until(lambda: alertmanagers() == expected, timeout=30, what="Prometheus discovering both Alertmanager peers")

    def agent_targets() -> dict[str, str]:
        targets = httpx.get(f"{stack.url('prometheus')}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        return {t["labels"]["replica"]: t["health"] for t in targets if t["labels"]["job"] == "oncall_agent"}

    wait_until(lambda: agent_targets() == {"agent-1": "up", "agent-2": "up"}, timeout=30, what="agent replicas up")


def test_replicas_get_the_shared_database_url_and_their_replica_id(stack: HAStack):
    for replica in stack.agents.replicas:
        pid = stack.agents.pid(replica.replica_id)
        assert pid is not None
        env = process_environment(pid)
        assert env["DATABASE_URL"] == stack.postgres.url and env["AGENT_REPLICA_ID"] == replica.replica_id
        assert env["PUBLIC_BASE_URL"] == replica.url
    with psycopg.connect(stack.postgres.url, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("oncall",)


def test_alert_fired_by_prometheus_is_notified_by_one_peer_to_every_replica(stack: HAStack):
    inject(stack, {"mode": "errors", "p_error": 0.6})
    wait_until(
        lambda: all(replica_has_alert_incident(url, stack.api_headers()) for url in stack.agents.urls),
        timeout=120,
        interval=1,
        what=f"{ALERT} incident at every agent replica",
    )
    with httpx.Client(timeout=5) as client:
        # Let in-flight notifications land, then compare what the peers sent with what the replicas received.
        def settled() -> tuple[list[dict], list[dict]] | None:
            peers, replicas = peer_rows(client, stack), replica_rows(client, stack)
            received = sum(row["notifications"] for row in replicas)
            return (peers, replicas) if sum(row["sent"] for row in peers) == received else None

        peers, replicas = wait_until(settled, timeout=20, interval=0.5, what="notifications sent == received")
    senders = [row for row in peers if row["sent"] > 0]
    assert len(senders) == 1, peers  # Prometheus sent the alert to both peers; the cluster notified once
    assert all(row["status"] == "ready" and row["peers"] == 2 for row in peers)
    notifications = [row["notifications"] for row in replicas]
    assert all(n >= 1 for n in notifications) and len(set(notifications)) == 1, replicas  # one entry per replica
    assert all(row["incidents"] for row in replicas)
    console = Console(record=True, width=200)
    for table in handled_tables(stack):
        console.print(table)
    text = console.export_text()
    assert "agent-1" in text and "agent-2" in text and senders[0]["name"] in text


def test_killing_an_agent_replica_by_pid_leaves_the_other_serving(stack: HAStack):
    first, second = stack.agents.replicas
    stack.agents.kill(first.replica_id)
    assert port_is_free(first.port)
    assert httpx.get(f"{second.url}/healthz", timeout=5).status_code == 200
    rows = {row["replica_id"]: row for row in replica_rows(httpx.Client(timeout=5), stack)}
    assert rows[first.replica_id]["pid"] is None and rows[second.replica_id]["pid"] is not None


def test_stop_ends_every_process_and_frees_every_port(stack: HAStack):
    ports = stack.all_ports(inventory_replicas=2)  # the ports of processes we started
    started = [stack.ports.pm, stack.ports.lb, stack.ports.prometheus, stack.postgres.port]
    started += [stack.ports.replica_base + n for n in (1, 2)]
    started += [stack.ports.payments_port(n) for n in range(1, PAYMENTS_INSTANCES + 1)]
    started += [port for peer in stack.alertmanager_peers for port in (peer.web_port, peer.cluster_port)]
    started += [replica.port for replica in stack.agent_replicas]
    assert ports == sorted(started)
    stack.stop()
    assert stack.postgres.pid is None
    assert [port for port in ports if not port_is_free(port)] == []
