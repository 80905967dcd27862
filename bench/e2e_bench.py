"""Benchmark 5: fault injected -> alert firing in Prometheus -> webhook received -> diagnosis sent.

The isolated demo stack (stackctl, demo timing: 2 s scrape/evaluation, ``for: 10s``, ``group_wait: 2s``)
with traffic_gen traffic. For each fault in turn (default: errors, then latency) the fault is injected
through the process manager and these epoch timestamps are taken:

- injected: just before ``POST /fault``;
- pending / firing: Prometheus ``GET /api/v1/alerts`` polled every 0.25 s (``activeAt`` is when the
  alert became pending; firing is the first poll that shows ``state: firing``);
- webhook received: the first timeline event of the agent's incident (written when the webhook was ingested);
- diagnosis sent: ``created_at`` of the first outbound message of the incident (``updated_at`` once sent).

Between faults the fault is cleared; each fault raises a different alert, so a different incident.

Usage: ``python bench/e2e_bench.py [--faults errors,latency]``; writes bench/results/e2e.json and the
"e2e" table of bench/README.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import httpx  # noqa: E402
from common import (
    REPO_ROOT,
    ProcessGroup,
    loadavg,
    markdown_table,
    measured_line,
    temp_run_dir,
    update_readme,
    verdict,
    write_results,
)

from stackctl.config import load_timing  # noqa: E402
from stackctl.stack import Stack, free_stack_ports  # noqa: E402

FAULTS: dict[str, tuple[dict[str, Any], str]] = {
    "errors": ({"mode": "errors", "p_error": 0.5}, "InventoryHighErrorRate"),
    "latency": ({"mode": "latency", "latency_ms": 800}, "InventoryHighLatencyP99"),
}
ONCALL_NUMBER = "whatsapp:+15550100001"
TARGET_FAULT_TO_DIAGNOSIS_S = 60.0
EPISODE_TIMEOUT_S = 120.0


def alert_state(prometheus: str, alertname: str) -> dict[str, Any] | None:
    """The alert's entry in Prometheus ``/api/v1/alerts`` (state, activeAt), or None when it is inactive."""
    alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return next((a for a in alerts if a["labels"].get("alertname") == alertname), None)


def epoch(rfc3339: str) -> float:
    """Prometheus ``activeAt`` (RFC 3339 UTC, up to nanoseconds, e.g. 2026-11-22T07:09:50.568123456Z) -> epoch
    seconds."""
    head, _, frac = rfc3339.rstrip("Z").partition(".")
    base = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return base + (float(f"0.{frac}") if frac else 0.0)


def episode(stack: Stack, fault: str) -> dict[str, Any]:
    """Inject ``fault`` and timestamp every step until the diagnosis message exists."""
    body, alertname = FAULTS[fault]
    prometheus, agent = stack.url("prometheus"), stack.url("agent")
    injected = time.time()
    httpx.post(f"{stack.url('pm')}/fault", json=body, timeout=15).raise_for_status()
    marks: dict[str, float] = {}
    deadline = time.monotonic() + EPISODE_TIMEOUT_S
    incident: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        now = time.time()
        state = alert_state(prometheus, alertname)
        if state and "pending_active_at" not in marks:
            marks["pending_active_at"] = epoch(state["activeAt"])
        if state and state["state"] == "firing" and "firing_seen" not in marks:
            marks["firing_seen"] = now
        if incident is None:
            listed = httpx.get(
                f"{agent}/incidents", params={"limit": 50}, headers=stack.api_headers(), timeout=5
            ).json()["incidents"]
            incident = next(
                (i for i in listed if f'alertname="{alertname}"' in i["group_key"] and i["created_at"] >= injected),
                None,
            )
        if incident is not None:
            detail = httpx.get(f"{agent}/incidents/{incident['id']}", headers=stack.api_headers(), timeout=5).json()
            outbound = [m for m in detail["messages"] if m["direction"] == "out"]
            if outbound:
                marks["webhook_received"] = detail["timeline"][0]["at"]
                marks["diagnosed"] = detail["diagnosed_at"] or 0.0
                marks["diagnosis_message_created"] = outbound[0]["created_at"]
                marks["diagnosis_message_sent"] = (
                    outbound[0]["updated_at"] if outbound[0]["status"] == "sent" else float("nan")
                )
                investigation = detail["investigations"][-1]
                return {
                    "fault": fault,
                    "alertname": alertname,
                    "incident_id": incident["id"],
                    "injected": injected,
                    "marks": marks,
                    "since_injection_s": {k: v - injected for k, v in marks.items()},
                    "investigation_s": investigation["finished_at"] - investigation["started_at"],
                    "fault_type": (detail.get("diagnosis") or {}).get("fault_type"),
                    "loadavg": loadavg(),
                }
        time.sleep(0.25)
    raise TimeoutError(f"{fault}: no diagnosis message within {EPISODE_TIMEOUT_S:.0f}s; marks so far {marks}")


def clear_fault(stack: Stack) -> None:
    """Set every replica's fault back to none."""
    httpx.post(f"{stack.url('pm')}/fault", json={"mode": "none"}, timeout=15).raise_for_status()


def report(episodes: list[dict[str, Any]], started_load: list[float]) -> dict[str, Any]:
    """Target checks and the README table."""
    rows = []
    targets = {}
    for ep in episodes:
        s = ep["since_injection_s"]
        total = s["diagnosis_message_created"]
        targets[f"{ep['fault']}_fault_to_diagnosis<60s"] = total < TARGET_FAULT_TO_DIAGNOSIS_S
        rows.append(
            [
                f"{ep['fault']} ({ep['alertname']})",
                f"{s.get('pending_active_at', float('nan')):.1f}",
                f"{s.get('firing_seen', float('nan')):.1f}",
                f"{s['webhook_received']:.1f}",
                f"{s['diagnosed']:.1f}",
                f"{total:.1f}",
                f"{ep['investigation_s']:.2f} s -> {ep['fault_type']}",
                verdict(total < TARGET_FAULT_TO_DIAGNOSIS_S),
            ]
        )
    table = markdown_table(
        [
            "fault (alert)",
            "pending (s)",
            "firing (s)",
            "webhook received (s)",
            "diagnosed (s)",
            "diagnosis message (s)",
            "investigation",
            "< 60 s",
        ],
        rows,
    )
    update_readme(
        "e2e",
        f"Seconds after the fault was injected.\n\n{table}\n\nOne episode per fault. {measured_line(started_load)}",
    )
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description="fault -> alert -> webhook -> diagnosis timing on the demo stack")
    parser.add_argument("--faults", default="errors,latency", help=f"comma-separated, from {', '.join(FAULTS)}")
    args = parser.parse_args()
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = set(faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}")
    started_load = loadavg()
    run_dir = temp_run_dir("e2e")
    print(f"e2e bench in {run_dir}; load average {started_load}")
    stack = Stack(
        run_dir=run_dir,
        ports=free_stack_ports(),
        timing=load_timing(),
        isolated=True,
        agent_env={"ONCALL_WHATSAPP_NUMBERS": ONCALL_NUMBER},
    )
    traffic: subprocess.Popen | None = None
    episodes = []
    try:
        stack.start(replicas=2, step=lambda m: print(f"  {m}"))
        duration = 20 + len(faults) * EPISODE_TIMEOUT_S
        with open(run_dir / "traffic.log", "ab") as log:
            traffic = subprocess.Popen(
                [
                    sys.executable,
                    "traffic_gen.py",
                    "--url",
                    stack.url("lb"),
                    "--rps",
                    "30",
                    "--duration",
                    str(duration),
                    "--quiet",
                    "--seed",
                    "1",
                ],
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        time.sleep(10)  # a healthy baseline in Prometheus first
        for fault in faults:
            ep = episode(stack, fault)
            episodes.append(ep)
            print(f"  {fault}: " + ", ".join(f"{k} +{v:.1f}s" for k, v in ep["since_injection_s"].items()))
            clear_fault(stack)
    finally:
        if traffic is not None and traffic.poll() is None:
            ProcessGroup.stop(traffic)
        stack.stop()
    targets = report(episodes, started_load)
    path = write_results(
        "e2e",
        {
            "loadavg_at_start": started_load,
            "episodes": episodes,
            "targets": targets,
            "settings": {"faults": faults, "timing": load_timing()},
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
