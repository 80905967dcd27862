"""Two real Alertmanager peers in one gossip cluster: an alert posted to BOTH peers notifies once
(the notification log is shared), and the notification still arrives when a peer is killed.

One cluster for the module (tests run in file order; the kill test comes after the dedup test).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stackctl.alertmanager_cluster import AlertmanagerCluster, ClusterTiming, free_peers
from stackctl.config import StackPorts, render_alertmanager
from stackctl.processes import ProcessGroup, find_binary, port_is_free, wait_until
from tests.webhook_receiver import WebhookReceiver

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(
        find_binary("prometheus-alertmanager", "alertmanager") is None, reason="Alertmanager not installed (make deps)"
    ),
]

PEER_TIMEOUT_S = 2
TIMING = ClusterTiming(peer_timeout=f"{PEER_TIMEOUT_S}s")
# group_wait 1s: the first notification leaves ~1 s after the alert; group_interval/repeat_interval long
# enough that no second notification of the same group is due during the test.
ROUTE_TIMING = {"alertmanager": {"group_wait": "1s", "group_interval": "5m", "repeat_interval": "1h"}}


@pytest.fixture(scope="module")
def receiver():
    with WebhookReceiver() as server:
        yield server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, receiver):
    run_dir = tmp_path_factory.mktemp("am-cluster")
    # The shipped alertmanager.yaml, its agent webhook aimed at the local receiver.
    config = render_alertmanager(run_dir, StackPorts(agent=receiver.port), ROUTE_TIMING)
    procs = ProcessGroup(run_dir / "logs")
    am = AlertmanagerCluster(procs, config, run_dir / "alertmanager-data", free_peers(2), timing=TIMING)
    try:
        am.start(timeout=30)
        yield am
    finally:
        procs.stop_all()


def post_alert(url: str, alertname: str) -> None:
    """POST one firing alert to ``url``'s /api/v2/alerts the way Prometheus does (startsAt, endsAt in the future)."""
    now = datetime.now(UTC)
    alert = {
        "labels": {"alertname": alertname, "service": "inventory", "severity": "critical"},
        "annotations": {"summary": f"{alertname} from the HA test"},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(minutes=5)).isoformat(),
        "generatorURL": "http://127.0.0.1:9/graph",
    }
    httpx.post(f"{url}/api/v2/alerts", json=[alert], timeout=5).raise_for_status()


def webhook_notifications_sent(peer_url: str) -> float:
    """``alertmanager_notifications_total{integration="webhook"}`` of one peer."""
    text = httpx.get(f"{peer_url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "alertmanager_notifications_total" and sample.labels.get("integration") == "webhook":
                return sample.value
    raise AssertionError(f"no alertmanager_notifications_total{{integration='webhook'}} at {peer_url}/metrics")


def alertnames(peer_url: str) -> set[str]:
    alerts = httpx.get(f"{peer_url}/api/v2/alerts", timeout=5).json()
    return {alert["labels"]["alertname"] for alert in alerts}


def test_peers_see_each_other(cluster):
    addresses = {peer.cluster_address for peer in cluster.peers}
    for peer in cluster.peers:
        status = cluster.status(peer.name)["cluster"]
        assert status["status"] == "ready"
        assert {member["address"] for member in status["peers"]} == addresses


def test_alert_posted_to_both_peers_notifies_exactly_once(cluster, receiver):
    for url in cluster.urls:
        post_alert(url, "HADedupTest")
    # Both peers hold the alert, so a single notification is the cluster's deduplication, not a lost alert.
    assert all("HADedupTest" in alertnames(url) for url in cluster.urls)
    first = wait_until(lambda: receiver.matching("HADedupTest"), timeout=20, what="first notification")
    # The second peer notifies (if at all) peer_timeout after its own group_wait: wait well past that.
    time.sleep(2 * PEER_TIMEOUT_S + 1)
    notifications = receiver.matching("HADedupTest")
    assert len(notifications) == 1, [n.body["externalURL"] for n in notifications]
    body = first[0].body
    assert body["status"] == "firing" and body["receiver"] == "oncall-agent" and first[0].path == "/alerts"
    assert [a["labels"]["alertname"] for a in body["alerts"]] == ["HADedupTest"]
    sender = body["externalURL"]
    assert sender in cluster.urls
    sent = {url: webhook_notifications_sent(url) for url in cluster.urls}
    assert sent == {url: 1.0 if url == sender else 0.0 for url in cluster.urls}


def test_notification_still_arrives_when_the_first_peer_is_killed(cluster, receiver):
    # The peer at cluster position 0 (smallest member name) notifies first; kill it like a crash.
    names = {peer.name: cluster.status(peer.name)["cluster"]["name"] for peer in cluster.peers}
    first, survivor = sorted(cluster.peers, key=lambda peer: names[peer.name])
    pid = cluster.kill(first.name)
    assert cluster.pid(first.name) is None and pid > 0
    assert port_is_free(first.web_port)
    for url in cluster.urls:
        try:
            post_alert(url, "HAPeerKilledTest")
        except httpx.ConnectError:
            assert url == first.url  # Prometheus, too, fails to reach the dead peer and carries on
    received = wait_until(lambda: receiver.matching("HAPeerKilledTest"), timeout=30, what="notification from survivor")
    time.sleep(2 * PEER_TIMEOUT_S + 1)
    assert len(receiver.matching("HAPeerKilledTest")) == 1
    assert received[0].body["externalURL"] == survivor.url


def test_killed_peer_rejoins_the_cluster(cluster):
    dead = [peer for peer in cluster.peers if cluster.pid(peer.name) is None]
    assert len(dead) == 1, "runs after the kill test"
    cluster.start_peer(dead[0].name)
    formed = cluster.wait_formed(timeout=30)
    assert all(len(status["peers"]) == 2 for status in formed.values())
