"""End to end through the service catalog, on one shared stack (real Prometheus and Alertmanager):

* a bad deploy: ``POST /deploy {"version": "1.4.1"}`` under inventory traffic -> InventoryHighErrorRate fires
  -> the diagnosis names the deploy (deploy_regression), the version, the failing line and the rollback;
* the second service: payments traffic charging in JPY hits its real KeyError -> PaymentsHighErrorRate
  fires -> a code_bug diagnosis of the payments service at payments_service.py and the line, read from its
  plain-text log files and instrumentator metrics through its catalog entry only;
* an alert of a service the catalog does not know -> an investigation that says what is missing.

Both faults run at once: the services share nothing but Prometheus, Alertmanager and the agent.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stackctl.stack import Stack
from tests.e2e_support import (
    bug_line,
    incident_list,
    needs_prometheus,
    start_stack,
    start_traffic,
    wait_for_diagnosis,
    wait_for_outbound,
)
from tests.payments_support import bug_line as payments_bug_line
from tests.support import REPO_ROOT, json_body, post_alert_sync, wait_until
from tests.test_e2e_faults import notification

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(needs_prometheus, reason="prometheus / alertmanager binaries not installed (make deps)"),
]

ALERT_TIMEOUT_S = 150.0


def incident_of(stack: Stack, alertname: str) -> dict | None:
    """The agent's incident for ``alertname`` (Alertmanager groups by alertname and service), or None."""
    return next((i for i in incident_list(stack) if f'alertname="{alertname}"' in (i.get("group_key") or "")), None)


def diagnosis_of(stack: Stack, alertname: str) -> dict:
    """Wait for the incident of ``alertname`` and its diagnosis; return the incident detail."""
    incident = wait_until(lambda: incident_of(stack, alertname), ALERT_TIMEOUT_S, interval=1.0, what=alertname)
    return wait_for_diagnosis(stack, incident["id"], timeout=60)


def payments_traffic(stack: Stack, log: Path) -> subprocess.Popen:
    """traffic_gen.py --mix payments, agentic: 5 s normal, then 80% JPY charges (bounded: 150 s)."""
    urls = [arg for url in stack.payments_urls() for arg in ("--url", url)]
    args = [sys.executable, "traffic_gen.py", "--mix", "payments", "--quiet", "--profile", "agentic"]
    args += ["--normal-rps", "10", "--normal-duration", "5", "--error-rps", "15", "--error-duration", "145"]
    args += ["--duration", "150", *urls]
    with open(log, "ab") as out:
        return subprocess.Popen(args, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for the module; a bad deploy and the payments bug run on it at once."""
    run_dir = tmp_path_factory.mktemp("catalog-e2e")
    started = start_stack(run_dir)
    traffic = [
        start_traffic(started, ["--profile", "constant", "--rps", "25", "--duration", "150"], run_dir / "inv.log"),
        payments_traffic(started, run_dir / "payments.log"),
    ]
    try:
        time.sleep(5)
        deploy = httpx.post(f"{started.url('pm')}/deploy", json={"version": "1.4.1"}, timeout=60)
        assert deploy.status_code == 200, deploy.text
        yield started
    finally:
        for proc in traffic:
            proc.terminate()
            proc.wait(timeout=10)
        started.stop()


def test_bad_deploy_is_named_with_its_version_and_the_rollback(stack: Stack) -> None:
    detail = diagnosis_of(stack, "InventoryHighErrorRate")
    diagnosis = detail["diagnosis"]
    assert diagnosis["fault_type"] == "deploy_regression", diagnosis
    assert diagnosis["affected_service"] == "inventory"
    assert sorted(diagnosis["affected_replicas"]) == ["inventory-1", "inventory-2"]
    assert (diagnosis["affected_file"], diagnosis["affected_line"]) == ("inventory_service.py", bug_line())
    assert "1.4.1" in diagnosis["summary"] and "1.4.0" in diagnosis["suggested_fix"]
    [action] = diagnosis["proposed_actions"]
    assert (action["action"], action["target"], action["params"]) == ("rollback", "all", {"version": "1.4.0"})
    deploys = [c for c in diagnosis["changes"] if c["kind"] == "deploy"]
    assert [c["replica"] for c in deploys] == ["inventory-1", "inventory-2"]  # time order
    assert all(c["offset_s"] is not None and c["offset_s"] < 60 for c in deploys)
    assert all("1.4.0 -> 1.4.1" in c["summary"] for c in deploys)
    assert diagnosis["catalog_gaps"] == []
    message = wait_for_outbound(stack, detail["id"])
    assert "deploy_regression" in message and "1.4.1" in message and "roll back to 1.4.0" in message


def test_payments_bug_is_diagnosed_through_its_catalog_entry(stack: Stack) -> None:
    detail = diagnosis_of(stack, "PaymentsHighErrorRate")
    diagnosis = detail["diagnosis"]
    assert diagnosis["fault_type"] == "code_bug", diagnosis
    assert diagnosis["affected_service"] == "payments"
    assert sorted(diagnosis["affected_replicas"]) == ["payments-1", "payments-2"]
    assert (diagnosis["affected_file"], diagnosis["affected_line"]) == ("payments_service.py", payments_bug_line())
    assert "KeyError" in diagnosis["summary"]
    tools = {c["tool"] for c in detail["tool_calls"]}
    assert {"fetch_logs", "compute_error_rate", "get_deployed_versions", "fetch_code_from_github"} <= tools
    assert "get_recent_changes" not in tools  # the payments entry names no change log
    assert diagnosis["catalog_gaps"] == ["no `changes` source"]
    queries = " ".join(e["query"] for e in diagnosis["evidence"])
    assert 'job="payments"' in queries and 'status="5xx"' in queries


def test_alert_outside_the_catalog_says_what_is_missing(stack: Stack) -> None:
    body = notification("CheckoutQueueBacklog", "unknown-service")
    for labels in (body["alerts"][0]["labels"], body["commonLabels"], body["groupLabels"]):
        labels.update(service="checkout", job="prometheus")
    body["groupKey"] = '{}:{alertname="CheckoutQueueBacklog", service="checkout"}'
    answer = post_alert_sync(stack.url("agent"), json_body(body), stack.api_headers())
    diagnosis = wait_for_diagnosis(stack, answer["incident_id"])["diagnosis"]
    assert diagnosis["affected_service"] == "checkout"
    assert diagnosis["summary"].startswith("checkout is not in the service catalog")
    assert diagnosis["catalog_gaps"][0].startswith("no service in the catalog")
    assert "services.yaml" in diagnosis["catalog_gaps"][0]
    assert any("Describe checkout in the service catalog" in step for step in diagnosis["next_steps"])
