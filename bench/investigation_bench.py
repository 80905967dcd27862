"""Benchmark 4: how long one investigation takes, and how much the parallel tool calls save.

A. Offline engine on the live demo stack: an isolated ``stackctl`` stack with the demo timing,
   traffic_gen traffic, an injected ``errors`` fault (p_error 0.5), then webhooks posted straight to the
   agent one after another (no waiting for Alertmanager). The agent's own time per investigation is
   the ``investigations`` row's ``finished_at - started_at`` (GET /incidents/{id}).
B. Scripted model: the agent with OPENAI_BASE_URL pointing at tests/fake_openai.py (loopback Chat
   Completions) which asks for fetch_logs, query_prometheus and get_recent_changes in one round, then
   send_diagnosis. The tools' URLs point at bench/slow_stack.py (every answer after 0.3 s). Parallel
   speed-up = sum of the round's tool durations / the round's wall time (first start to last end),
   both from the ``tool_calls`` audit rows.

Usage: ``python bench/investigation_bench.py [--rounds 3] [--skip-live]``; writes
bench/results/investigation.json and the "investigation" table of bench/README.md.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx  # noqa: E402
from common import (
    REPO_ROOT,
    ProcessGroup,
    free_port,
    loadavg,
    markdown_table,
    measured_line,
    median,
    temp_run_dir,
    update_readme,
    verdict,
    wait_http_ok,
    wait_until,
    write_results,
)
from slow_stack import SlowStack

from stackctl.config import load_timing  # noqa: E402
from stackctl.processes import agent_command, wait_applied  # noqa: E402
from stackctl.stack import INTEGRATION_VARIABLES, Stack, free_stack_ports  # noqa: E402
from tests.fake_openai import FakeOpenAI, tool_calls_response  # noqa: E402

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "alertmanager" / "req_001.json"
TOOL_DELAY_S = 0.3
PARALLEL_TOOLS = [
    ("fetch_logs", {"seconds": 300, "limit": 200}),
    ("query_prometheus", {"query": 'up{job="inventory"}'}),
    ("get_recent_changes", {"since_seconds": 900}),
]
SCRIPTED_DIAGNOSIS = {
    "summary": "Benchmark diagnosis",
    "root_cause": "scripted by bench/investigation_bench.py",
    "fault_type": "unknown",
    "affected_service": "inventory",
    "priority": "P3",
    "confidence": 0.5,
    "evidence": [{"tool": "fetch_logs", "query": "seconds=300", "finding": "no entries"}],
}
ONCALL_NUMBER = "whatsapp:+15550100001"
TARGET_OWN_TIME_S = 1.0
TARGET_SPEEDUP = 2.7


def webhook(alertname: str, tag: str, severity: str = "critical") -> dict[str, Any]:
    """An Alertmanager webhook body (payload v4, shaped like the captured req_001) for ``alertname`` on the
    inventory service; ``tag`` makes the group key and fingerprint unique per call."""
    body = copy.deepcopy(json.loads(FIXTURE.read_text())["body"])
    labels = {"alertname": alertname, "service": "inventory", "severity": severity, "job": "inventory", "bench": tag}
    alert = body["alerts"][0]
    alert.update(
        labels=labels,
        fingerprint=hashlib.sha256(tag.encode()).hexdigest()[:16],
        startsAt=time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
    )
    alert["annotations"] = {
        "summary": f"{alertname} (benchmark {tag})",
        "description": "posted by bench/investigation_bench.py",
        "runbook_url": "https://example.com/runbooks/inventory",
    }
    body.update(
        status="firing",
        alerts=[alert],
        groupLabels={"alertname": alertname, "service": "inventory", "bench": tag},
        commonLabels=labels,
        commonAnnotations=alert["annotations"],
        groupKey=f'{{}}:{{alertname="{alertname}", bench="{tag}", service="inventory"}}',
    )
    return body


def investigate_once(
    agent: str, body: dict[str, Any], headers: dict[str, str], timeout_s: float = 60
) -> dict[str, Any]:
    """POST one webhook, wait until its investigation is finished, return the incident detail
    (``headers``: the agent's API token header)."""
    raw_id = httpx.post(f"{agent}/alerts", json=body, timeout=10).raise_for_status().json()["raw_id"]
    incident_id = wait_applied(agent, raw_id, headers, timeout_s)["incident_id"]

    def finished() -> dict[str, Any] | None:
        detail = httpx.get(f"{agent}/incidents/{incident_id}", headers=headers, timeout=10).json()
        return detail if detail["investigation_status"] in ("done", "failed") and detail["investigations"] else None

    return wait_until(finished, timeout_s, 0.1, f"investigation of incident {incident_id}")


def round_timing(detail: dict[str, Any], round_no: int) -> dict[str, Any]:
    """Tool calls of one round from the audit rows: their summed duration, the wall time and the speed-up."""
    calls = [c for c in detail["tool_calls"] if c["round"] == round_no]
    if not calls:
        return {"calls": 0}
    wall = max(c["started_at"] + c["duration_s"] for c in calls) - min(c["started_at"] for c in calls)
    total = sum(c["duration_s"] for c in calls)
    return {
        "calls": len(calls),
        "tools": [c["tool"] for c in calls],
        "ok": all(c["ok"] for c in calls),
        "sum_s": total,
        "wall_s": wall,
        "speedup": total / wall if wall > 0 else 0.0,
    }


def own_time(detail: dict[str, Any]) -> dict[str, Any]:
    """The last investigation row's duration and what it found."""
    row = detail["investigations"][-1]
    return {
        "incident_id": detail["id"],
        "engine": row["engine"],
        "status": row["status"],
        "own_time_s": row["finished_at"] - row["started_at"],
        "fault_type": (detail.get("diagnosis") or {}).get("fault_type"),
        "round1": round_timing(detail, 1),
        "tool_calls": len(detail["tool_calls"]),
    }


# ---------------------------------------------------------------- A: offline engine on the live stack


def live_offline(rounds: int, run_dir: Path) -> list[dict[str, Any]]:
    """Investigations by the offline engine on the live demo stack with an injected errors fault."""
    stack = Stack(
        run_dir=run_dir,
        ports=free_stack_ports(),
        timing=load_timing(),
        isolated=True,
        agent_env={"ONCALL_WHATSAPP_NUMBERS": ONCALL_NUMBER},
    )
    traffic: subprocess.Popen | None = None
    try:
        stack.start(replicas=2, step=lambda m: print(f"  {m}"))
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
                    "90",
                    "--quiet",
                    "--seed",
                    "1",
                ],
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        time.sleep(8)
        httpx.post(f"{stack.url('pm')}/fault", json={"mode": "errors", "p_error": 0.5}, timeout=15).raise_for_status()
        time.sleep(6)  # a few scrapes with the fault; before the real alert's for: 10s ends
        results = []
        for index in range(rounds):
            detail = investigate_once(
                stack.url("agent"), webhook("InventoryHighErrorRate", f"live-{index}"), stack.api_headers()
            )
            results.append(own_time(detail) | {"loadavg": loadavg()})
            print(
                f"  live round {index + 1}: {results[-1]['own_time_s']:.3f} s, {results[-1]['fault_type']}, "
                f"round 1 speed-up {results[-1]['round1'].get('speedup', 0):.2f}x"
            )
        return results
    finally:
        if traffic is not None and traffic.poll() is None:
            ProcessGroup.stop(traffic)
        stack.stop()


# ---------------------------------------------------------------- B: scripted model, slow tools


def scripted_model(rounds: int, run_dir: Path) -> list[dict[str, Any]]:
    """Investigations driven by the fake model; tools answer after TOOL_DELAY_S."""
    script = []
    for _ in range(rounds):
        script += [tool_calls_response(PARALLEL_TOOLS), tool_calls_response([("send_diagnosis", SCRIPTED_DIAGNOSIS)])]
    procs = ProcessGroup(run_dir / "logs")
    with SlowStack(TOOL_DELAY_S) as slow, FakeOpenAI(script) as model:
        port = free_port()
        api_token = secrets.token_urlsafe(24)
        env: dict[str, str | None] = {name: None for name in INTEGRATION_VARIABLES}
        env.update(
            ONCALL_ENV_FILE=str(run_dir / "missing.env"),
            DATABASE_PATH=str(run_dir / "oncall.db"),
            OPENAI_BASE_URL=model.base_url,
            OPENAI_API_KEY="bench-not-a-key",
            OPENAI_MODEL="bench-scripted",
            LB_URL=slow.base_url,
            PROMETHEUS_URL=slow.base_url,
            PM_URL=slow.base_url,
            ONCALL_WHATSAPP_NUMBERS=ONCALL_NUMBER,
            CODE_ROOT=str(REPO_ROOT),
            ONCALL_API_TOKEN=api_token,
        )
        try:
            procs.start(
                "agent",
                agent_command(port, "warning"),
                env=env,
            )
            wait_http_ok(f"http://127.0.0.1:{port}/healthz", timeout=30)
            results = []
            for index in range(rounds):
                detail = investigate_once(
                    f"http://127.0.0.1:{port}",
                    webhook("InventoryHighLatencyP99", f"scripted-{index}"),
                    {"Authorization": f"Bearer {api_token}"},
                )
                result = own_time(detail) | {"loadavg": loadavg()}
                result["model_wait_s"] = result["own_time_s"] - result["round1"].get("wall_s", 0.0)
                results.append(result)
                print(
                    f"  scripted round {index + 1}: speed-up {result['round1'].get('speedup', 0):.2f}x "
                    f"(sum {result['round1'].get('sum_s', 0):.3f} s / wall {result['round1'].get('wall_s', 0):.3f} s), "
                    f"investigation {result['own_time_s']:.3f} s, engine {result['engine']}"
                )
            return results
        finally:
            procs.stop_all()


def report(live: list[dict[str, Any]], scripted: list[dict[str, Any]], started_load: list[float]) -> dict[str, Any]:
    """Medians, target checks and the README table."""
    summary: dict[str, Any] = {"targets": {}}
    rows = []
    if live:
        own = median([r["own_time_s"] for r in live])
        wall = median([r["round1"]["wall_s"] for r in live])
        summary |= {
            "live_own_time_s_median": own,
            "live_round1_wall_s_median": wall,
            "live_round1_speedup_median": median([r["round1"]["speedup"] for r in live]),
        }
        summary["targets"]["own_time<1s"] = own < TARGET_OWN_TIME_S
        rows += [
            [
                "offline engine, live stack: agent's own time per investigation (s)",
                f"{own:.3f}",
                "< 1 s",
                verdict(own < TARGET_OWN_TIME_S),
            ],
            [
                "  of which the parallel evidence round (s); its speed-up",
                f"{wall:.3f}; {summary['live_round1_speedup_median']:.2f}x over {live[0]['round1']['calls']} calls",
                "-",
                "-",
            ],
            [
                "  diagnosed fault types",
                ", ".join(sorted({str(r["fault_type"]) for r in live})),
                "injected_errors",
                "-",
            ],
        ]
    if scripted:
        speedup = median([r["round1"]["speedup"] for r in scripted])
        summary |= {
            "scripted_speedup_median": speedup,
            "scripted_round_wall_s_median": median([r["round1"]["wall_s"] for r in scripted]),
            "scripted_round_sum_s_median": median([r["round1"]["sum_s"] for r in scripted]),
            "scripted_own_time_s_median": median([r["own_time_s"] for r in scripted]),
        }
        summary["targets"]["speedup>=2.7"] = speedup >= TARGET_SPEEDUP
        rows += [
            [
                "scripted model, 3 tools x 0.3 s in one round: sum of tool times / round wall time",
                f"{summary['scripted_round_sum_s_median']:.3f} s / "
                f"{summary['scripted_round_wall_s_median']:.3f} s = {speedup:.2f}x",
                ">= 2.7x",
                verdict(speedup >= TARGET_SPEEDUP),
            ],
            ["  whole investigation, 2 model rounds (s)", f"{summary['scripted_own_time_s_median']:.3f}", "-", "-"],
        ]
    n = max(len(live), len(scripted))
    update_readme(
        "investigation",
        f"{markdown_table(['measure', 'median', 'target', 'result'], rows)}\n\n"
        f"Median of {n} investigations each. {measured_line(started_load)}",
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description="investigation wall time (offline engine, live stack) and tool-call parallelism"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-live", action="store_true", help="only the scripted-model part (no Prometheus needed)")
    args = parser.parse_args()
    started_load = loadavg()
    run_dir = temp_run_dir("investigation")
    print(f"investigation bench in {run_dir}; load average {started_load}")
    print("B: scripted model, 0.3 s tools")
    scripted = scripted_model(args.rounds, run_dir / "scripted")
    live: list[dict[str, Any]] = []
    if not args.skip_live:
        print("A: offline engine on the live demo stack")
        live = live_offline(args.rounds, run_dir / "live")
    summary = report(live, scripted, started_load)
    path = write_results(
        "investigation",
        {
            "loadavg_at_start": started_load,
            "summary": summary,
            "live": live,
            "scripted": scripted,
            "settings": {"rounds": args.rounds, "tool_delay_s": TOOL_DELAY_S},
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
