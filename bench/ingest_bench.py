"""Benchmark 3: the agent's webhook ingest under an alert storm.

The agent runs alone (uvicorn on_call_agent:app on a free port, temporary database, no .env, no
integrations; the stack URLs point at a closed local port so investigations fail fast). 5,000
Alertmanager webhook posts (payload v4) over 200 group keys go out open loop at 500 posts/s; each group
replays the sequence a real Alertmanager sent (tests/fixtures/alertmanager/INDEX.txt): firing,
identical retry, a second alert joins, a truncated max_alerts=1 copy, repeat notifications (identical
bodies), one alert resolved, all resolved. Posts of one group are 200 posts (0.4 s) apart, so each
group's sequence arrives in order.

Ack latency is measured from each post's scheduled send time (coordinated omission corrected,
HdrHistogram). Afterwards every incident must exist once and have exactly one investigation.

Usage: ``python bench/ingest_bench.py [--posts 5000] [--groups 200] [--rate 500]``; writes
bench/results/ingest.json and the "ingest" table of bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import hashlib
import json
import secrets
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp  # noqa: E402
import httpx  # noqa: E402
import uvloop  # noqa: E402
from common import (
    REPO_ROOT,
    ProcessGroup,
    free_port,
    loadavg,
    markdown_table,
    measured_line,
    proc_cpu_seconds,
    start_py_spy,
    summarise_profile,
    temp_run_dir,
    update_readme,
    verdict,
    wait_http_ok,
    wait_until,
    write_results,
)
from hdrh.histogram import HdrHistogram  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from oncall.store.database import sync_url  # noqa: E402
from stackctl.processes import agent_command  # noqa: E402
from stackctl.stack import INTEGRATION_VARIABLES  # noqa: E402

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "alertmanager"
API_TOKEN = secrets.token_urlsafe(24)
"""ONCALL_API_TOKEN of the agent this benchmark starts."""
API_HEADERS = {"Authorization": f"Bearer {API_TOKEN}"}
TARGET_ACK_P99_MS = 20.0
# One group's posts, in order: which shape (see build_group) each post carries. 25 posts per group.
SEQUENCE = (
    ["firing1", "firing1", "firing2", "truncated"] + ["firing2"] * 8 + ["one_resolved"] * 8 + ["all_resolved"] * 5
)


def fixture_body(name: str) -> dict[str, Any]:
    """The ``body`` of a captured Alertmanager POST (``req_NNN.json``)."""
    return json.loads((FIXTURES / name).read_text())["body"]


def build_group(index: int) -> dict[str, bytes]:
    """The five bodies of group ``index`` (bytes, as posted), shaped like req_001/004/005/007/011 with
    this group's own alertname, service, instances and fingerprints."""
    service = f"bench-svc-{index:03d}"
    alertname = "TargetDown"
    group_key = f'{{}}/{{severity="critical"}}:{{alertname="{alertname}", service="{service}"}}'
    instances = [f"10.0.{index // 250}.{index % 250}:9100", f"10.1.{index // 250}.{index % 250}:9100"]

    def relabel(body: dict[str, Any], alert_states: list[tuple[int, str]], truncated: int = 0) -> bytes:
        out = copy.deepcopy(body)
        template = out["alerts"][0]
        alerts = []
        for which, status in alert_states:
            alert = copy.deepcopy(template)
            alert["status"] = status
            alert["labels"].update(service=service, instance=instances[which])
            alert["fingerprint"] = hashlib.sha256(f"{group_key}/{which}".encode()).hexdigest()[:16]
            alert["startsAt"] = f"2026-11-22T07:{which:02d}:50.568Z"
            alert["endsAt"] = "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-22T08:00:00.000Z"
            alerts.append(alert)
        out["alerts"] = alerts
        out["status"] = "firing" if any(s == "firing" for _, s in alert_states) else "resolved"
        out["groupLabels"] = {"alertname": alertname, "service": service}
        out["commonLabels"] = {
            k: v for k, v in alerts[0]["labels"].items() if all(a["labels"].get(k) == v for a in alerts)
        }
        out["groupKey"] = group_key
        out["truncatedAlerts"] = truncated
        return json.dumps(out).encode()

    return {
        "firing1": relabel(fixture_body("req_001.json"), [(0, "firing")]),
        "firing2": relabel(fixture_body("req_004.json"), [(0, "firing"), (1, "firing")]),
        "truncated": relabel(fixture_body("req_005.json"), [(0, "firing")], truncated=1),
        "one_resolved": relabel(fixture_body("req_007.json"), [(0, "resolved"), (1, "firing")]),
        "all_resolved": relabel(fixture_body("req_011.json"), [(0, "resolved"), (1, "resolved")]),
    }


def storm_plan(posts: int, groups: int) -> list[bytes]:
    """Bodies in send order: round-robin over the groups, each group advancing through SEQUENCE."""
    bodies = [build_group(g) for g in range(groups)]
    return [bodies[i % groups][SEQUENCE[min(i // groups, len(SEQUENCE) - 1)]] for i in range(posts)]


async def storm(url: str, plan: list[bytes], rate: float, connections: int = 256) -> dict[str, Any]:
    """POST every body of ``plan`` to ``url`` open loop at ``rate`` posts/s; ack latency from the scheduled time."""
    hist = HdrHistogram(1, 60_000_000, 3)
    lag = HdrHistogram(1, 60_000_000, 3)
    per_second: dict[int, HdrHistogram] = {}
    outcomes: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(limit=connections)
    headers = {"Content-Type": "application/json", "User-Agent": "Alertmanager/0.25.0"}
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def post(body: bytes, due: float) -> None:
            lag.record_value(max(int((time.perf_counter() - due) * 1e6), 1))
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    answer = await response.json()
                    outcomes[str(response.status)] += 1
                    statuses[answer.get("status", "?")] += 1
            except (TimeoutError, aiohttp.ClientError) as exc:
                outcomes[type(exc).__name__] += 1
                return
            latency_us = max(int((time.perf_counter() - due) * 1e6), 1)
            hist.record_value(latency_us)
            per_second.setdefault(int(due - start), HdrHistogram(1, 60_000_000, 3)).record_value(latency_us)

        tasks = []
        start = time.perf_counter()
        for i, body in enumerate(plan):
            due = start + i / rate
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(body, due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start

    return {
        "posts": len(plan),
        "elapsed_s": elapsed,
        "posts_per_s": len(plan) / elapsed,
        "ack_ms": percentiles(hist),
        "schedule_lag_ms": percentiles(lag),
        "http": dict(outcomes),
        "answers": dict(statuses),
        "ack_p99_ms_by_second": [
            round(per_second[s].get_value_at_percentile(99) / 1000, 2) for s in sorted(per_second)
        ],
    }


def percentiles(h: HdrHistogram) -> dict[str, float]:
    """p50, p90, p99, p99.9 and max of a histogram of microseconds, in milliseconds."""
    return {f"p{p}": h.get_value_at_percentile(p) / 1000 for p in (50, 90, 99, 99.9)} | {
        "max": h.get_max_value() / 1000
    }


def applied(database_url: str, storm_ended_at: float, timeout_s: float = 300) -> dict[str, Any]:
    """Wait until the agents applied every stored webhook body, then its outcomes (accepted, duplicate,
    failed), the apply lag from receipt to applied (ms) and how long after the last post (epoch
    ``storm_ended_at``) the last body was applied (s): the acknowledgement comes first, this is when the
    incidents reflect the storm."""
    engine = create_engine(sync_url(database_url))

    def done() -> list[Any] | None:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT outcome, received_at, applied_at FROM raw_alerts")).all()
        return rows if rows and all(row.outcome for row in rows) else None

    try:
        rows = wait_until(done, timeout_s, 0.5, "every webhook body applied")
    finally:
        engine.dispose()
    lag = HdrHistogram(1, 600_000_000, 3)
    for row in rows:
        if row.applied_at is not None:
            lag.record_value(max(int((row.applied_at - row.received_at) * 1e6), 1))
    last = max(row.applied_at or 0.0 for row in rows)
    return {
        "outcomes": dict(Counter(row.outcome for row in rows)),
        "apply_lag_ms": percentiles(lag),
        "drained_after_storm_s": round(max(0.0, last - storm_ended_at), 2),
    }


def count_investigations(agent: str, groups: int, timeout_s: float = 120) -> dict[str, Any]:
    """Wait until every incident's investigation finished, then count incidents, investigations and
    ``investigation_started`` timeline events per incident."""

    def listed() -> list[dict[str, Any]]:
        return httpx.get(f"{agent}/incidents", params={"limit": 500}, headers=API_HEADERS, timeout=10).json()[
            "incidents"
        ]

    def settled() -> list[dict[str, Any]] | None:
        incidents = listed()
        return incidents if all(i["investigation_status"] not in ("pending", "running") for i in incidents) else None

    incidents = wait_until(settled, timeout_s, 0.5, "all investigations finished")
    per_incident = []
    for incident in incidents:
        detail = httpx.get(f"{agent}/incidents/{incident['id']}", headers=API_HEADERS, timeout=10).json()
        per_incident.append(
            {
                "id": incident["id"],
                "status": detail["status"],
                "investigations": len(detail["investigations"]),
                "started_events": sum(1 for e in detail["timeline"] if e["kind"] == "investigation_started"),
                "investigation_status": detail["investigation_status"],
            }
        )
    return {
        "incidents": len(incidents),
        "distinct_group_keys": len({i["group_key"] for i in incidents}),
        "investigations": sum(p["investigations"] for p in per_incident),
        "incidents_with_exactly_one_investigation": sum(1 for p in per_incident if p["investigations"] == 1),
        "investigation_started_events": sum(p["started_events"] for p in per_incident),
        "incident_status": dict(Counter(p["status"] for p in per_incident)),
        "investigation_status": dict(Counter(p["investigation_status"] for p in per_incident)),
    }


def start_agent(procs: ProcessGroup, run_dir: Path, port: int, code_dir: Path = REPO_ROOT) -> Any:
    """Start the agent alone: temporary database, no env file, no integrations, stack URLs on a closed port.

    ``code_dir`` is the checkout whose on_call_agent.py / oncall/ run (a patched copy for before/after figures)."""
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there: tool calls fail at connect
    env: dict[str, str | None] = {name: None for name in INTEGRATION_VARIABLES}
    env.update(
        ONCALL_ENV_FILE=str(run_dir / "missing.env"),
        DATABASE_PATH=str(run_dir / "oncall.db"),
        PROMETHEUS_URL=closed,
        LB_URL=closed,
        PM_URL=closed,
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        CODE_ROOT=str(REPO_ROOT),
        ONCALL_API_TOKEN=API_TOKEN,
    )
    args = agent_command(port, "warning")
    proc = procs.start("agent", args, env=env, cwd=code_dir)
    wait_http_ok(f"http://127.0.0.1:{port}/healthz", timeout=30)
    return proc


def report(result: dict[str, Any], started_load: list[float]) -> dict[str, Any]:
    """Target checks and the README table."""
    storm_figures, counts, groups = result["storm"], result["counts"], result["groups"]
    ack_ok = storm_figures["ack_ms"]["p99"] < TARGET_ACK_P99_MS
    one_each = (
        counts["incidents"] == groups
        and counts["investigations"] == groups
        and counts["incidents_with_exactly_one_investigation"] == groups
    )
    targets = {"ack_p99<20ms": ack_ok, "one_investigation_per_group": one_each}
    applied_outcomes, apply_lag = storm_figures["applied"]["outcomes"], storm_figures["applied"]["apply_lag_ms"]
    drained = storm_figures["applied"]["drained_after_storm_s"]
    rows = [
        [
            "posts sent / acknowledged (202, body committed)",
            f"{storm_figures['posts']:,} / {storm_figures['http'].get('202', 0):,}",
            "all",
            verdict(storm_figures["http"].get("202", 0) == storm_figures["posts"]),
        ],
        [
            "applied: accepted / duplicate / failed",
            " / ".join(f"{applied_outcomes.get(k, 0):,}" for k in ("accepted", "duplicate", "failed")),
            "- / - / 0",
            verdict(applied_outcomes.get("failed", 0) == 0),
        ],
        ["posts/s achieved (target rate)", f"{storm_figures['posts_per_s']:.0f} ({result['rate']:g})", "-", "-"],
        ["ack latency p50 (ms)", f"{storm_figures['ack_ms']['p50']:.2f}", "-", "-"],
        ["ack latency p99 (ms)", f"{storm_figures['ack_ms']['p99']:.2f}", "< 20 ms", verdict(ack_ok)],
        ["ack latency max (ms)", f"{storm_figures['ack_ms']['max']:.1f}", "-", "-"],
        [
            "apply lag, receipt to applied: p50 / p99 (ms)",
            f"{apply_lag['p50']:.0f} / {apply_lag['p99']:.0f}",
            "-",
            "-",
        ],
        [
            "last body applied after the last post (s)",
            f"{drained:.1f}",
            "-",
            "-",
        ],
        ["agent CPU during the storm (cores)", f"{result['agent_cpu_share']:.2f}", "-", "-"],
        [
            "incidents (group keys)",
            f"{counts['incidents']} ({groups})",
            f"{groups}",
            verdict(counts["incidents"] == groups),
        ],
        [
            "investigations started",
            f"{counts['investigations']} ({counts['investigation_started_events']} timeline events)",
            f"{groups}, one per group",
            verdict(one_each),
        ],
    ]
    table = markdown_table(["measure", "value", "target", "result"], rows)
    update_readme(
        "ingest",
        f"{table}\n\nOne storm of {storm_figures['posts']:,} posts over {groups} groups. {measured_line(started_load)}",
    )
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description="alert storm against the agent's POST /alerts")
    parser.add_argument("--posts", type=int, default=5000)
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--rate", type=float, default=500.0, help="posts per second, open loop (default 500)")
    parser.add_argument(
        "--code-dir",
        type=Path,
        default=REPO_ROOT,
        help="checkout to run the agent from (default: this repository; a patched copy for before/after)",
    )
    parser.add_argument("--profile", action="store_true", help="sample the agent with py-spy during the storm")
    parser.add_argument("--name", default="ingest", help="results name: bench/results/<name>.json (default ingest)")
    args = parser.parse_args()
    started_load = loadavg()
    run_dir = temp_run_dir("ingest")
    procs = ProcessGroup(run_dir / "logs")
    print(f"ingest bench in {run_dir}; load average {started_load}")
    plan = storm_plan(args.posts, args.groups)
    try:
        port = free_port()
        agent = start_agent(procs, run_dir, port, args.code_dir.resolve())
        spy = (
            start_py_spy(procs, agent.pid, args.posts / args.rate + 5, run_dir / "profile.txt")
            if args.profile
            else None
        )
        cpu0, wall0 = proc_cpu_seconds(agent.pid), time.perf_counter()
        storm_figures = uvloop.run(storm(f"http://127.0.0.1:{port}/alerts", plan, args.rate))
        agent_cpu_share = (proc_cpu_seconds(agent.pid) - cpu0) / (time.perf_counter() - wall0)
        print(f"  storm: {json.dumps({k: storm_figures[k] for k in ('posts_per_s', 'ack_ms', 'http', 'answers')})}")
        storm_figures["applied"] = applied(f"sqlite:///{run_dir / 'oncall.db'}", time.time())
        print(f"  applied: {storm_figures['applied']}")
        counts = count_investigations(f"http://127.0.0.1:{port}", args.groups)
        print(f"  counts: {counts}")
        if spy is not None:
            spy.wait(timeout=120)
    finally:
        procs.stop_all()
    result = {
        "storm": storm_figures,
        "counts": counts,
        "groups": args.groups,
        "rate": args.rate,
        "agent_cpu_share": agent_cpu_share,
        "code_dir": str(args.code_dir),
    }
    if spy is not None and (run_dir / "profile.txt").exists():
        result["profile"] = summarise_profile(run_dir / "profile.txt")
    targets = report(result, started_load) if args.name == "ingest" else {}
    path = write_results(
        args.name,
        {
            "loadavg_at_start": started_load,
            **result,
            "targets": targets,
            "settings": {"posts": args.posts, "groups": args.groups, "rate": args.rate, "sequence": SEQUENCE},
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
