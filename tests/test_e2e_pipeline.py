"""End to end with real processes: fault -> Prometheus alert (pending, then firing) -> Alertmanager
webhook -> agent diagnosis on the (console) WhatsApp channel -> fault cleared -> resolved notification;
and the agentic traffic profile driving InventoryHighErrorRate to a code-bug diagnosis with file:line.

Runs the whole stack on free ports with the demo alert timing (stackctl/demo_timing.yaml).
"""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from oncall.history.narrative import duration
from oncall.roster.rotation import on_call
from oncall.settings import Settings
from tests.e2e_support import (
    bug_line,
    incident_detail,
    incident_list,
    inject,
    needs_prometheus,
    start_stack,
    start_traffic,
    wait_for_diagnosis,
)
from tests.support import REPO_ROOT, wait_until
from tests.test_postmortem import SECTIONS

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(needs_prometheus, reason="prometheus / alertmanager binaries not installed (make deps)"),
]

ROSTER = REPO_ROOT / "oncall.yaml"
ERROR_RATIO = 'sum(rate(http_errors_total{job="inventory"}[1m])) / sum(rate(http_requests_total{job="inventory"}[1m]))'


def alert_state(prometheus_url: str, alertname: str) -> str:
    """State of ``alertname`` in Prometheus' /api/v1/alerts: inactive, pending or firing."""
    alerts = httpx.get(f"{prometheus_url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    states = {a["state"] for a in alerts if a["labels"]["alertname"] == alertname}
    return "firing" if "firing" in states else "pending" if "pending" in states else "inactive"


def wait_pending_then_firing(prometheus_url: str, alertname: str, timeout: float) -> list[str]:
    """Poll the alert's state until it fires; return the states seen in order (inactive, pending, firing)."""
    seen: list[str] = []

    def firing() -> bool:
        state = alert_state(prometheus_url, alertname)
        if not seen or seen[-1] != state:
            seen.append(state)
        return state == "firing"

    wait_until(firing, timeout=timeout, interval=0.5, what=f"{alertname} firing")
    return seen


def incident_for(stack, alertname: str) -> dict:
    """The agent's incident summary for ``alertname``: Alertmanager groups by alertname and service, so
    other alerts the same fault fires (per-replica, client-side) are incidents of their own."""
    key = f'alertname="{alertname}"'
    return wait_until(
        lambda: next(
            (i for i in incident_list(stack) if key in i["group_key"]),
            None,
        ),
        30,
        interval=0.5,
        what=f"an incident for {alertname}",
    )


def test_agentic_traffic_fires_error_rate_alert_and_agent_finds_the_bug(tmp_path):
    stack = start_stack(tmp_path)
    traffic = None
    try:
        traffic = start_traffic(
            stack,
            [
                "--profile",
                "agentic",
                "--normal-rps",
                "20",
                "--normal-duration",
                "5",
                "--error-rps",
                "30",
                "--error-duration",
                "120",
                "--duration",
                "125",
            ],
            tmp_path / "traffic.log",
        )
        seen = wait_pending_then_firing(stack.url("prometheus"), "InventoryHighErrorRate", timeout=90)
        assert "pending" in seen and seen.index("pending") < seen.index("firing"), seen
        ratio = httpx.get(f"{stack.url('prometheus')}/api/v1/query", params={"query": ERROR_RATIO}, timeout=5).json()
        assert float(ratio["data"]["result"][0]["value"][1]) > 0.2

        diagnosis = wait_for_diagnosis(stack, incident_for(stack, "InventoryHighErrorRate")["id"])["diagnosis"]
        assert diagnosis["fault_type"] == "code_bug"
        assert (diagnosis["affected_file"], diagnosis["affected_line"]) == ("inventory_service.py", bug_line())
        assert sorted(diagnosis["affected_replicas"]) == ["inventory-1", "inventory-2"]
    finally:
        if traffic is not None and traffic.poll() is None:
            traffic.terminate()
            traffic.wait(timeout=10)
        stack.stop()


def postmortem_of(stack, incident_id: int) -> str:
    """``GET /incidents/{id}/postmortem`` (Markdown), read with the stack's API token."""
    response = httpx.get(
        f"{stack.url('agent')}/incidents/{incident_id}/postmortem", headers=stack.api_headers(), timeout=10
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/markdown")
    return response.text


def assert_postmortem_of_the_injected_errors(markdown: str, resolved: dict) -> None:
    """The post-mortem of the real incident: every section, its facts and the headline times."""
    incident_id, timings = resolved["id"], resolved["phase_timings"]
    assert markdown.startswith(f"# Post-mortem: #{incident_id} InventoryHighErrorRate\n")
    sections = [line[3:] for line in markdown.splitlines() if line.startswith("## ")]
    assert sections == SECTIONS
    assert f"\\#{incident_id} InventoryHighErrorRate (service inventory, severity critical) is resolved." in markdown
    assert f"Time to resolve: {duration(timings['time_to_resolve_s'])}." in markdown
    assert "Fault type `injected_errors`" in markdown and "offline engine" in markdown
    assert "Affected replicas: `inventory-1, inventory-2`" in markdown
    assert "- investigation: " in markdown and "tool `query_prometheus`" in markdown
    body = markdown.split("## Timeline", 1)[1].split("## Phase timings", 1)[0]
    events = (
        "Alert fired in Prometheus (detection)",
        "Diagnosis `injected_errors`",
        "Paged level 1: ",
        "Resolved: every",
    )
    for event in events:
        assert event in body, markdown


def test_injected_errors_fire_alert_reach_agent_and_resolve(tmp_path):
    stack = start_stack(tmp_path, ONCALL_FILE=str(ROSTER))
    traffic = None
    try:
        traffic = start_traffic(
            stack, ["--profile", "constant", "--rps", "40", "--duration", "170"], tmp_path / "traffic.log"
        )
        inject(stack, {"mode": "errors", "p_error": 0.6})
        seen = wait_pending_then_firing(stack.url("prometheus"), "InventoryHighErrorRate", timeout=90)
        assert "pending" in seen and seen.index("pending") < seen.index("firing"), seen
        ratio = httpx.get(f"{stack.url('prometheus')}/api/v1/query", params={"query": ERROR_RATIO}, timeout=5).json()
        assert float(ratio["data"]["result"][0]["value"][1]) > 0.2

        detail = wait_for_diagnosis(stack, incident_for(stack, "InventoryHighErrorRate")["id"])
        diagnosis = detail["diagnosis"]
        assert (diagnosis["fault_type"], sorted(diagnosis["affected_replicas"])) == (
            "injected_errors",
            ["inventory-1", "inventory-2"],
        )
        assert any(a["labels"]["alertname"] == "InventoryHighErrorRate" for a in detail["alerts"])
        sent = wait_until(
            lambda: [m for m in incident_detail(stack, detail["id"])["messages"] if m["direction"] == "out"],
            20,
            what="WhatsApp diagnosis",
        )
        paged = on_call(Settings(_env_file=None, ONCALL_FILE=str(ROSTER)).roster, "inventory", datetime.now(UTC))
        assert paged is not None  # the roster's inventory rotation has someone on call at every instant
        assert sent[0]["to_number"] == paged.person.whatsapp and f"#{detail['id']}" in sent[0]["body"]
        diagnosis_text = "".join(message["body"] for message in sent)  # one or two parts of at most 1600 chars
        assert "📟 Paged: service inventory is owned by team inventory (service catalog)" in diagnosis_text
        assert f"{paged.person.name}: on call for team inventory" in diagnosis_text

        inject(stack, {"mode": "none"})
        resolved = wait_until(
            lambda: (d := incident_detail(stack, detail["id"]))["status"] == "resolved" and d,
            timeout=150,
            interval=1.0,
            what="incident resolved after the fault is cleared",
        )
        assert resolved["resolved_at"] is not None
        outbound = wait_until(  # the resolved notice is delivered from the outbox just after the resolution
            lambda: (
                (out := [m for m in incident_detail(stack, detail["id"])["messages"] if m["direction"] == "out"])
                and "resolved" in out[-1]["body"].lower()
                and out
            ),
            20,
            what="the resolved notice",
        )
        assert len(outbound) >= 2
        assert f"Post-mortem: {stack.url('agent')}/incidents/{detail['id']}/postmortem" in outbound[-1]["body"]
        assert outbound[-1]["to_number"] == paged.person.whatsapp  # the resolved notice goes to who was paged
        assert_postmortem_of_the_injected_errors(postmortem_of(stack, detail["id"]), resolved)
    finally:
        if traffic is not None and traffic.poll() is None:
            traffic.terminate()
            traffic.wait(timeout=10)
        stack.stop()
