"""End to end with the second service: payments traffic + injected errors -> PaymentsHighErrorRate
fires in real Prometheus -> Alertmanager posts it to the agent -> the agent stores an incident and
the offline engine, reading the payments service through its catalog entry (instrumentator metrics by
``instance``, plain-text log files), diagnoses the injected errors on both instances.

The payments instances run without a supervisor: stackctl starts them directly and stops them by PID.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from stackctl.processes import port_is_free
from stackctl.stack import Stack
from tests.e2e_support import incident_list, needs_prometheus, start_stack, wait_for_diagnosis, wait_for_outbound
from tests.payments_support import read_records
from tests.support import REPO_ROOT, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(needs_prometheus, reason="prometheus / alertmanager binaries not installed (make deps)"),
]

ALERTNAME = "PaymentsHighErrorRate"


def alert_states(prometheus_url: str, alertname: str) -> set[str]:
    """States (pending, firing) of ``alertname`` in Prometheus' /api/v1/alerts; empty when inactive."""
    alerts = httpx.get(f"{prometheus_url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return {a["state"] for a in alerts if a["labels"]["alertname"] == alertname}


def payments_incident(stack: Stack) -> dict | None:
    """The agent's incident for ALERTNAME, or None."""
    return next((i for i in incident_list(stack) if i["title"].startswith(ALERTNAME)), None)


def start_payments_traffic(stack: Stack, log: Path) -> subprocess.Popen:
    """traffic_gen.py --mix payments at 20 req/s over both instances (bounded: 120 s)."""
    urls = [arg for url in stack.payments_urls() for arg in ("--url", url)]
    args = [sys.executable, "traffic_gen.py", "--mix", "payments", "--quiet", "--rps", "20", "--duration", "120"]
    with open(log, "ab") as out:
        return subprocess.Popen([*args, *urls], cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)


def scraped_payments_targets(prometheus_url: str) -> list[dict]:
    """``up{job="payments"}`` samples once both instances have been scraped (else [])."""
    answer = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": 'up{job="payments"}'}, timeout=5).json()
    result = answer["data"]["result"]
    return result if len(result) == 2 else []


def assert_incident_stored_and_investigated(stack: Stack) -> None:
    """The agent stored a payments incident for ALERTNAME, finished its investigation and messaged on-call."""
    incident = wait_until(lambda: payments_incident(stack), 30, interval=0.5, what="payments incident")
    assert incident["service"] == "payments" and incident["severity"] == "critical"
    detail = wait_for_diagnosis(stack, incident["id"])
    assert detail["investigation_status"] == "done"
    diagnosis = detail["diagnosis"]
    assert (diagnosis["fault_type"], diagnosis["affected_service"]) == ("injected_errors", "payments"), diagnosis
    assert sorted(diagnosis["affected_replicas"]) == ["payments-1", "payments-2"]
    labels = [a["labels"] for a in detail["alerts"]]
    assert {"alertname": ALERTNAME, "service": "payments", "severity": "critical"}.items() <= labels[0].items()
    assert wait_for_outbound(stack, incident["id"]), "the on-call engineer was messaged"
    assert httpx.get(f"{stack.url('agent')}/healthz", timeout=5).status_code == 200


def test_payments_errors_fire_the_alert_and_the_agent_stores_an_incident(tmp_path):
    stack = start_stack(tmp_path, replicas=1)
    traffic = None
    pids = []
    try:
        for url in stack.payments_urls():
            assert httpx.get(f"{url}/version", timeout=5).json()["service"] == "payments"
            pids.append(httpx.get(f"{url}/healthz", timeout=5).json()["pid"])
            httpx.post(f"{url}/admin/faults", json={"mode": "errors", "p_error": 0.6}, timeout=5).raise_for_status()
        traffic = start_payments_traffic(stack, tmp_path / "traffic.log")

        # both targets scraped with an `instance` label naming the instance, and no `replica` label
        up = wait_until(lambda: scraped_payments_targets(stack.url("prometheus")), 30, what="both payments targets")
        assert sorted(s["metric"]["instance"] for s in up) == ["payments-1", "payments-2"]
        assert all(set(s["metric"]) == {"__name__", "instance", "job"} and s["value"][1] == "1" for s in up)

        wait_until(
            lambda: "firing" in alert_states(stack.url("prometheus"), ALERTNAME), 90, interval=0.5, what="firing"
        )
        assert_incident_stored_and_investigated(stack)
        for number in (1, 2):  # the instances' own plain-text logs, under the run folder
            records = read_records(stack.payments_log_dir, f"payments-{number}")
            assert any(r.message.startswith("injected fault: errors (p_error=0.6)") for r in records)
    finally:
        if traffic is not None and traffic.poll() is None:
            traffic.terminate()
            traffic.wait(timeout=10)
        stack.stop()
    for pid in pids:  # stopped by PID: the processes are gone and their ports free
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert all(port_is_free(stack.ports.payments_port(number)) for number in (1, 2))
