"""End to end on the highly available stack: PostgreSQL, two clustered Alertmanagers, two agent replicas.

A real fault fires InventoryHighErrorRate in Prometheus, which sends it to BOTH Alertmanager peers;
exactly one peer notifies, every agent replica receives the notification, and the shared database
decides: one incident, one investigation, one diagnosis message (through the fake Twilio API). The
replica holding the investigation is killed with SIGKILL while its model call is in flight (a loopback
fake of the OpenAI API answers after ``MODEL_DELAY_S``); the other replica takes the investigation over
once the lease (``LEASE_S``) expired and finishes it, still one diagnosis message. The killed replica
restarts and serves again; stop() frees every port. One stack for the module (tests in file order).
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
from tests.fake_openai import FakeOpenAI, Scripted, tool_calls_response
from tests.fake_twilio import FakeTwilio
from tests.support import wait_until
from tests.test_investigation import diagnosis_args

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(needs_prometheus, reason="prometheus / alertmanager binaries not installed (make deps)"),
    pytest.mark.skipif(find_pg_bindir() is None, reason="PostgreSQL binaries not installed (make deps)"),
]
ALERT = "InventoryHighErrorRate"
TWILIO_SID = "AC" + "e2e0" * 8
TWILIO_TOKEN = "e2e-webhook-token"
LEASE_S = 4
MODEL_DELAY_S = 8.0


def slow_diagnosis(_body: dict) -> Scripted:
    """Every investigation's model call answers ``send_diagnosis`` after ``MODEL_DELAY_S`` seconds."""
    return Scripted(tool_calls_response([("send_diagnosis", diagnosis_args())]), delay_s=MODEL_DELAY_S)


@pytest.fixture(scope="module")
def twilio():
    fake = FakeTwilio(account_sid=TWILIO_SID, auth_token=TWILIO_TOKEN).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def model():
    with FakeOpenAI(responder=slow_diagnosis) as fake:
        yield fake


@pytest.fixture(scope="module")
def stack(tmp_path_factory, twilio: FakeTwilio, model: FakeOpenAI):
    env = {
        "ONCALL_WHATSAPP_NUMBERS": ONCALL_NUMBER,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "TWILIO_ACCOUNT_SID": TWILIO_SID,
        "TWILIO_WHATSAPP_FROM": "whatsapp:+14155238886",
        "TWILIO_API_BASE_URL": twilio.base_url,
        "OPENAI_BASE_URL": model.base_url,
        "OPENAI_API_KEY": "sk-e2e",
        "LEASE_S": str(LEASE_S),
        "WORK_POLL_S": "0.5",
    }
    ha = free_ha_stack(tmp_path_factory.mktemp("ha"), timing=load_timing(), isolated=True, agent_env=env)
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


def query(stack: HAStack, statement: str, *params: object) -> list[tuple]:
    """Rows of a query on the replicas' shared PostgreSQL."""
    with psycopg.connect(stack.postgres.url, connect_timeout=5) as conn:
        return conn.execute(statement, params).fetchall()  # type: ignore[arg-type]


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


def alert_incident(stack: HAStack) -> int:
    [(incident_id,)] = query(stack, "SELECT id FROM incidents WHERE common_labels->>'alertname' = %s", ALERT)
    return int(incident_id)


def test_one_investigation_survives_kill_9_of_its_replica_and_pages_once(stack: HAStack, twilio: FakeTwilio):
    incident_id = alert_incident(stack)  # exactly one incident for the group, seen by both replicas
    holder = wait_until(
        lambda: (
            (
                rows := query(
                    stack,
                    "SELECT claimed_by FROM episodes WHERE incident_id = %s AND investigation = 'running'",
                    incident_id,
                )
            )
            and rows[0][0]
        ),
        timeout=30,
        interval=0.1,
        what="the investigation claimed by a replica",
    )
    survivor = next(r.replica_id for r in stack.agents.replicas if r.replica_id != holder)
    stack.agents.kill(holder)  # SIGKILL while its model call is in flight
    done = wait_until(
        lambda: (
            (
                rows := query(
                    stack,
                    "SELECT investigation, claimed_by, attempts FROM episodes WHERE incident_id = %s",
                    incident_id,
                )
            )
            and rows[0][0] == "done"
            and rows
        ),
        timeout=LEASE_S + MODEL_DELAY_S + 30,
        interval=0.5,
        what="the investigation finished by the surviving replica",
    )
    assert done == [("done", survivor, 2)]
    runs = query(stack, "SELECT status, replica_id FROM investigations WHERE incident_id = %s ORDER BY id", incident_id)
    assert runs == [("interrupted", holder), ("done", survivor)]
    parts = wait_until(
        lambda: (
            (
                rows := query(
                    stack,
                    "SELECT status, delivered_by FROM outbox WHERE event_key LIKE %s ORDER BY id",
                    f"incident:{incident_id}:episode:1:diagnosis:%",
                )
            )
            and all(status == "delivered" for status, _ in rows)
            and rows
        ),
        timeout=30,
        interval=0.5,
        what="the diagnosis delivered",
    )
    assert {replica for _, replica in parts} == {survivor}
    diagnoses = [m for m in twilio.messages if f"#{incident_id} " in m["body"] and "🚨" in m["body"]]
    assert len(diagnoses) == len(parts) >= 1 and diagnoses[0]["to"] == ONCALL_NUMBER
    assert query(stack, "SELECT count(*) FROM episodes WHERE incident_id = %s", incident_id) == [(1,)]
    resumed = query(
        stack, "SELECT detail FROM timeline WHERE incident_id = %s AND kind = 'investigation_resumed'", incident_id
    )
    assert [row[0]["previous_replica"] for row in resumed] == [holder]


def test_the_killed_replica_restarts_and_serves_again(stack: HAStack):
    dead = next(r for r in stack.agents.replicas if stack.agents.pid(r.replica_id) is None)
    alive = next(r for r in stack.agents.replicas if r is not dead)
    assert port_is_free(dead.port)
    assert (
        httpx.get(f"{alive.url}/healthz", headers=stack.api_headers(), timeout=5).json()["replica_id"]
        == alive.replica_id
    )
    rows = {row["replica_id"]: row for row in replica_rows(httpx.Client(timeout=5), stack)}
    assert rows[dead.replica_id]["pid"] is None and rows[alive.replica_id]["pid"] is not None
    stack.agents.start_replica(dead.replica_id)
    health = httpx.get(f"{dead.url}/healthz", headers=stack.api_headers(), timeout=5).json()
    assert health["replica_id"] == dead.replica_id and health["outbox"]["pending"] == 0


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
