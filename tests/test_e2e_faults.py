"""Against the running demo stack with no API key (offline engine): every fault mode the stack can
inject, and the null-dereference bug, produce a diagnosis naming the right fault type and replica
(and file:line for the bug).

Each case gets a fresh stack, so one case's metrics never leak into the next one's 1m windows.
The alert reaches the agent as an Alertmanager webhook (payload v4, shaped like the captured
fixture) instead of waiting for the rule's `for:`; test_e2e_pipeline.py covers the real alert path.
"""

from __future__ import annotations

import copy
import time

import pytest

from tests.e2e_support import bug_line, inject, needs_prometheus, start_stack, start_traffic, wait_for_diagnosis
from tests.support import json_body, load_json_fixture, post_alert_sync

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(needs_prometheus, reason="prometheus / alertmanager binaries not installed (make deps)"),
]

OBSERVE_S = 15.0
CASES = {
    # id: (fault body or None, alertname, traffic args, expected fault_type, expected replicas)
    "errors-one-replica": (
        {"mode": "errors", "p_error": 0.7, "replica": "inventory-2"},
        "InventoryHighErrorRate",
        ["--profile", "constant", "--rps", "30"],
        "injected_errors",
        ["inventory-2"],
    ),
    "latency-one-replica": (
        {"mode": "latency", "latency_ms": 1200, "replica": "inventory-1"},
        "InventoryHighLatencyP99",
        ["--profile", "constant", "--rps", "30"],
        "latency",
        ["inventory-1"],
    ),
    "cpu-one-replica": (
        {"mode": "cpu", "cpu_ms": 80, "replica": "inventory-2"},
        "InventoryHighCPU",
        ["--profile", "constant", "--rps", "20"],
        "cpu_saturation",
        ["inventory-2"],
    ),
    "memory-one-replica": (
        {"mode": "oom_safe", "step_mb": 16, "max_mb": 400, "replica": "inventory-1"},
        "InventoryMemoryGrowth",
        ["--profile", "constant", "--rps", "30"],
        "memory_pressure",
        ["inventory-1"],
    ),
    "crash-one-replica": (
        {"mode": "crash", "replica": "inventory-2"},
        "InventoryReplicaDown",
        ["--profile", "constant", "--rps", "30"],
        "instance_crash",
        ["inventory-2"],
    ),
    "null-dereference-bug": (
        None,
        "InventoryHighErrorRate",
        [
            "--profile",
            "agentic",
            "--normal-rps",
            "20",
            "--normal-duration",
            "2",
            "--error-rps",
            "30",
            "--error-duration",
            "60",
        ],
        "code_bug",
        ["inventory-1", "inventory-2"],
    ),
}


def notification(alertname: str, case_id: str) -> dict:
    """An Alertmanager webhook payload v4 for ``alertname`` (structure from the captured fixture)."""
    body = copy.deepcopy(load_json_fixture("alertmanager/req_003.json")["body"])
    labels = {"alertname": alertname, "service": "inventory", "severity": "critical", "job": "inventory"}
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    body["receiver"] = "oncall-agent"
    body["alerts"] = [
        {
            **body["alerts"][0],
            "labels": labels,
            "annotations": {"summary": f"{alertname} ({case_id})"},
            "startsAt": now,
            "fingerprint": f"{abs(hash(case_id)):016x}"[:16],
        }
    ]
    body["groupLabels"] = {"alertname": alertname, "service": "inventory"}
    body["commonLabels"] = labels
    body["commonAnnotations"] = {}
    body["groupKey"] = f'{{}}:{{alertname="{alertname}", service="inventory"}}'
    return body


@pytest.mark.parametrize("case_id", list(CASES))
def test_offline_engine_names_fault_and_replica(case_id, tmp_path):
    fault, alertname, traffic_args, expected_type, expected_replicas = CASES[case_id]
    stack = start_stack(tmp_path)
    traffic = start_traffic(stack, [*traffic_args, "--duration", "60"], tmp_path / "traffic.log")
    try:
        time.sleep(3)
        if fault:
            inject(stack, fault)
        time.sleep(OBSERVE_S)
        answer = post_alert_sync(stack.url("agent"), json_body(notification(alertname, case_id)), stack.api_headers())
        detail = wait_for_diagnosis(stack, answer["incident_id"])
        diagnosis = detail["diagnosis"]
        assert diagnosis["engine"] == "offline"
        assert diagnosis["fault_type"] == expected_type, diagnosis
        assert sorted(diagnosis["affected_replicas"]) == expected_replicas, diagnosis
        if expected_type == "code_bug":
            assert diagnosis["affected_file"] == "inventory_service.py"
            assert diagnosis["affected_line"] == bug_line()
        assert detail["tool_calls"], "the investigation must leave an audit trail of tool calls"
    finally:
        traffic.terminate()
        traffic.wait(timeout=10)
        stack.stop()


def test_two_faults_each_alert_gets_its_own_headline(tmp_path):
    """Injected errors on inventory-1 and added latency on inventory-2 at once (issue 13's two-fault run):
    the error alert's incident names injected errors on inventory-1 and the latency alert's incident names
    latency on inventory-2, each listing the other fault only as a secondary hypothesis."""
    stack = start_stack(tmp_path)
    traffic = start_traffic(stack, ["--profile", "constant", "--rps", "30", "--duration", "60"], tmp_path / "t.log")
    try:
        time.sleep(3)
        inject(stack, {"mode": "errors", "p_error": 0.8, "replica": "inventory-1"})
        inject(stack, {"mode": "latency", "latency_ms": 1200, "replica": "inventory-2"})
        time.sleep(OBSERVE_S)
        expected = {"InventoryHighErrorRate": ("injected_errors", "inventory-1", "latency")}
        expected["InventoryHighLatencyP99"] = ("latency", "inventory-2", "injected_errors")
        ids = {}
        for alertname in expected:
            body = json_body(notification(alertname, alertname))
            ids[alertname] = post_alert_sync(stack.url("agent"), body, stack.api_headers())["incident_id"]
        assert len(set(ids.values())) == 2
        for alertname, (fault_type, replica, other) in expected.items():
            diagnosis = wait_for_diagnosis(stack, ids[alertname])["diagnosis"]
            assert (diagnosis["fault_type"], diagnosis["affected_replicas"]) == (fault_type, [replica]), diagnosis
            head, *rest = diagnosis["hypotheses"]
            assert head["fault_type"] == fault_type and head["explains_alert"]
            assert any(h["fault_type"] == other and not h["explains_alert"] for h in rest), diagnosis["hypotheses"]
    finally:
        traffic.terminate()
        traffic.wait(timeout=10)
        stack.stop()
