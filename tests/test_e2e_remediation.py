"""Act with the engineer's approval, end to end on one real stack (process manager, replicas, load balancer,
Prometheus, Alertmanager, the agent with the offline engine and the console WhatsApp channel):

a crashed replica -> ``restart_replica`` proposed, approved and verified; then errors injected on inventory-2
-> the real alert -> the diagnosis proposes ``clear_fault`` on inventory-2 -> an approval from a number that is
not on call, a stale one and one to a read-only agent change nothing -> a signed "#N approve 1" -> the process
manager shows no fault -> the agent reports the recovery with the before/after figures -> a replayed approval
runs nothing -> the alert resolves. (The crash comes first: the errors' log lines would otherwise dominate
the crash's diagnosis within the offline engine's 5-minute log window.)
"""

from __future__ import annotations

import copy
import sqlite3
import sys
import time
from pathlib import Path

import httpx
import pytest

from stackctl.processes import free_port
from stackctl.reply import send_reply
from stackctl.stack import Stack
from tests.e2e_support import (
    ONCALL_NUMBER,
    incident_detail,
    incident_list,
    inject,
    needs_prometheus,
    start_traffic,
    wait_for_outbound,
)
from tests.support import json_body, load_json_fixture, post_alert_sync, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(needs_prometheus, reason="prometheus / alertmanager binaries not installed (make deps)"),
]

WEBHOOK_TOKEN = "e2e-webhook-token"
STRANGER = "whatsapp:+15550199999"
AGENT_ENV = {
    "ONCALL_WHATSAPP_NUMBERS": ONCALL_NUMBER,
    "TWILIO_AUTH_TOKEN": WEBHOOK_TOKEN,
    "VERIFY_S": "90",
    "VERIFY_POLL_S": "2",
}


def start(tmp_path: Path) -> Stack:
    from stackctl.config import load_timing
    from stackctl.stack import free_stack_ports

    stack = Stack(run_dir=tmp_path, ports=free_stack_ports(), timing=load_timing(), isolated=True, agent_env=AGENT_ENV)
    stack.start(replicas=2)
    return stack


def start_read_only_agent(stack: Stack) -> str:
    """A second agent on the same stack with its own database and SAFETY_MODE=read-only; returns its URL."""
    port = free_port()
    env = {**stack.agent_environment(), "SAFETY_MODE": "read-only", "DATABASE_PATH": str(stack.run_dir / "ro.db")}
    env["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "uvicorn", "on_call_agent:app", "--host", "127.0.0.1", "--port", str(port)]
    stack.procs.start("agent-read-only", args, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, 30, interval=0.3, what="agent")
    return url


def notification(alertname: str, replica: str) -> dict:
    """An Alertmanager webhook payload v4 for one replica's alert (structure from the captured fixture)."""
    body = copy.deepcopy(load_json_fixture("alertmanager/req_003.json")["body"])
    labels = {"alertname": alertname, "service": "inventory", "severity": "critical", "replica": replica}
    body.update(receiver="oncall-agent", groupLabels={"alertname": alertname}, commonLabels=labels)
    body["alerts"] = [
        {
            **body["alerts"][0],
            "labels": labels,
            "annotations": {"summary": alertname},
            "startsAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "fingerprint": f"{abs(hash((alertname, replica))):016x}"[:16],
        }
    ]
    body.update(commonAnnotations={}, groupKey=f'{{}}:{{alertname="{alertname}", replica="{replica}"}}')
    return body


def reply(url: str, body: str, sender: str = ONCALL_NUMBER) -> None:
    assert send_reply(url, WEBHOOK_TOKEN, sender, body).status_code == 200


def answers(url: str, headers: dict, incident_id: int, since: float) -> list[str]:
    detail = httpx.get(f"{url}/incidents/{incident_id}", headers=headers, timeout=5).json()
    return [m["body"] for m in detail["messages"] if m["direction"] == "out" and m["created_at"] >= since]


def wait_answer(url: str, headers: dict, incident_id: int, since: float, needle: str, timeout: float = 20) -> str:
    return wait_until(
        lambda: next((a for a in answers(url, headers, incident_id, since) if needle in a), None),
        timeout,
        interval=0.5,
        what=f"an answer containing {needle!r}",
    )


def fault_of(stack: Stack, replica: str) -> str:
    instances = httpx.get(f"{stack.url('pm')}/instances", timeout=5).json()["instances"]
    return next(i for i in instances if i["name"] == replica)["fault"].get("mode", "none")


def proposed_incident(stack: Stack, action: str, target: str, timeout: float = 120) -> dict:
    """The first error-ratio incident whose diagnosis proposes ``action`` on ``target`` first."""

    def found() -> dict | None:
        for summary in incident_list(stack):
            if "error" not in summary["title"].lower():
                continue
            detail = incident_detail(stack, summary["id"])
            first = ((detail.get("diagnosis") or {}).get("proposed_actions") or [None])[0]
            if first and (first["action"], first["target"]) == (action, target):
                return detail
        return None

    return wait_until(found, timeout, interval=1.0, what=f"a diagnosis proposing {action} on {target}")


def set_diagnosed_at(stack: Stack, incident_id: int, value: float) -> None:
    with sqlite3.connect(stack.run_dir / "oncall.db", timeout=10) as db:
        db.execute("UPDATE incidents SET diagnosed_at = ? WHERE id = ?", (value, incident_id))


def test_approved_remediation_clears_the_fault_and_restarts_a_crashed_replica(tmp_path: Path) -> None:
    started = time.monotonic()
    stack = start(tmp_path)
    agent, headers = stack.url("agent"), stack.api_headers()
    traffic = start_traffic(stack, ["--profile", "constant", "--rps", "30", "--duration", "300"], tmp_path / "t.log")
    try:
        read_only = start_read_only_agent(stack)
        time.sleep(3)
        # a crashed replica: restart_replica proposed, approved and verified
        inject(stack, {"mode": "crash", "replica": "inventory-2"})
        time.sleep(10)
        crash = post_alert_sync(agent, json_body(notification("InventoryReplicaDown", "inventory-2")), headers)[
            "incident_id"
        ]
        crash_detail = wait_until(
            lambda: (d := incident_detail(stack, crash)).get("diagnosis") and d,
            60,
            interval=0.5,
            what="crash diagnosis",
        )
        first = crash_detail["diagnosis"]["proposed_actions"][0]
        assert (first["action"], first["target"]) == ("restart_replica", "inventory-2"), crash_detail["diagnosis"]
        since = time.time()
        reply(agent, f"#{crash} approve 1")
        restarted = wait_answer(agent, headers, crash, since, "recovered in", timeout=120)
        print(f"restart_replica: {restarted}")
        changes = httpx.get(f"{stack.url('pm')}/changes", timeout=5).json()["changes"]
        assert any(c["kind"] == "restart" and (c.get("detail") or {}).get("reason") == "requested" for c in changes)
        inject(stack, {"mode": "errors", "p_error": 0.7, "replica": "inventory-2"})
        detail = proposed_incident(stack, "clear_fault", "inventory-2")
        incident_id = detail["id"]
        message = wait_for_outbound(stack, incident_id)  # the first part (i/n) carries the options
        assert f"Reply `#{incident_id} approve 1` to clear the injected fault on inventory-2." in message

        # a read-only agent refuses, a stranger is ignored, a stale approval is refused: the fault stays
        ro_body = json_body(notification("InventoryReplicaHighErrorRate", "inventory-2"))
        ro_incident = post_alert_sync(read_only, ro_body, headers)["incident_id"]
        wait_until(
            lambda: incident_detail_at(read_only, headers, ro_incident).get("diagnosis"),
            60,
            interval=0.5,
            what="read-only diagnosis",
        )
        since = time.time()
        reply(read_only, f"#{ro_incident} approve 1")
        assert "SAFETY_MODE is read-only" in wait_answer(read_only, headers, ro_incident, since, "read-only")
        reply(agent, f"#{incident_id} approve 1", sender=STRANGER)
        diagnosed_at = float(detail["diagnosed_at"])
        set_diagnosed_at(stack, incident_id, diagnosed_at - 3600)
        since = time.time()
        reply(agent, f"#{incident_id} approve 1")
        assert "APPROVAL_TTL_S" in wait_answer(agent, headers, incident_id, since, "APPROVAL_TTL_S")
        set_diagnosed_at(stack, incident_id, diagnosed_at)
        assert fault_of(stack, "inventory-2") == "errors"
        recent = httpx.get(f"{agent}/status", headers=headers, timeout=5).json()["recent_actions"]
        assert [a for a in recent if a["incident_id"] == incident_id] == []

        # the on-call engineer approves: the fault is cleared and the recovery reported with figures
        since = time.time()
        reply(agent, f"#{incident_id} approve 1")
        wait_answer(agent, headers, incident_id, since, "Approved option 1")
        replayed = time.time()  # the same approval again while the action runs: it runs once
        reply(agent, f"#{incident_id} approve 1")
        assert "runs once" in wait_answer(agent, headers, incident_id, replayed, "already approved")
        recovered = wait_answer(agent, headers, incident_id, since, "recovered in", timeout=120)
        assert fault_of(stack, "inventory-2") == "none"
        assert "error ratio" in recovered and "->" in recovered, recovered
        status = httpx.get(f"{agent}/status", headers=headers, timeout=5).json()
        mine = [a for a in status["recent_actions"] if a["incident_id"] == incident_id]
        assert [(a["action"], a["target"], a["status"]) for a in mine] == [("clear_fault", "inventory-2", "recovered")]
        print(f"\nclear_fault recovered after {mine[0]['verification']['after_s']} s: {recovered}")
        kinds = [e["kind"] for e in incident_detail(stack, incident_id)["timeline"]]
        assert kinds.count("remediation_approved") == 1 and kinds.count("remediation_result") == 1
        assert kinds.count("remediation_refused") >= 2  # the stale approval and the replay
        wait_until(
            lambda: incident_detail(stack, incident_id)["status"] == "resolved", 120, interval=1, what="resolved"
        )

    finally:
        traffic.terminate()
        traffic.wait(10)
        stack.stop()
    print(f"e2e remediation took {time.monotonic() - started:.0f} s")


def incident_detail_at(url: str, headers: dict, incident_id: int) -> dict:
    return httpx.get(f"{url}/incidents/{incident_id}", headers=headers, timeout=5).json()
