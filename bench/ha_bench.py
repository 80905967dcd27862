"""Benchmark: the alert storm against one agent on SQLite and against two agent replicas on PostgreSQL, side
by side in one run.

The storm is the one of ``bench/ingest_bench.py``: 5,000 Alertmanager webhook (payload v4) notifications
over 200 group keys, sent open loop at 500 notifications/s with aiohttp, each group following the
sequence a real Alertmanager sent (firing, identical retry, a second alert, a truncated copy, repeats,
one resolved, all resolved). Ack latency is measured from each post's scheduled send time
(coordinated omission corrected, HdrHistogram). Setups:

- ``sqlite-1``: one replica, ``DATABASE_PATH`` (the embedded default);
- ``postgresql-1``: one replica on a throw-away PostgreSQL (``stackctl.postgres``): the store's own cost;
- ``postgresql-2-lb``: two replicas on one throw-away PostgreSQL, each
  notification posted to one of them in turn (a load balancer in front): 500 posts/s;
- ``postgresql-2-fanout``: the same two replicas, each notification posted to BOTH (Alertmanager with
  one ``webhook_configs`` entry per replica): 1,000 posts/s, the database decides.

Agents run with no integrations (console WhatsApp channel) and the stack URLs on a closed port, so
their offline investigations end fast. Afterwards the database is counted: incidents, episodes,
investigations (one per group key, 0 lost, 0 duplicated), diagnosis and resolved notices, messages.

Usage: ``python bench/ha_bench.py [--posts 5000] [--groups 200] [--rate 500] [--only sqlite-1,...]``;
writes bench/results/ha.json and the "ha" table of bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp  # noqa: E402
import uvloop  # noqa: E402
from common import (
    REPO_ROOT,
    ProcessGroup,
    free_port,
    loadavg,
    markdown_table,
    measured_line,
    proc_cpu_seconds,
    temp_run_dir,
    update_readme,
    verdict,
    wait_http_ok,
    wait_until,
    write_results,
)
from hdrh.histogram import HdrHistogram  # noqa: E402
from ingest_bench import applied, percentiles, storm_plan  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from oncall.store.database import sync_url  # noqa: E402
from stackctl.postgres import PostgresServer  # noqa: E402
from stackctl.processes import agent_command  # noqa: E402
from stackctl.stack import INTEGRATION_VARIABLES  # noqa: E402

TARGET_ACK_P99_MS = 50.0


class Setup(NamedTuple):
    """One setup: the store (``sqlite`` or a throw-away ``postgresql``), its number of agent replicas, and
    whether each notification is posted to every replica (``fanout``) or to one in turn."""

    store: str
    replicas: int
    fanout: bool = False


SETUPS = {
    "sqlite-1": Setup("sqlite", 1),
    "postgresql-1": Setup("postgresql", 1),
    "postgresql-2-lb": Setup("postgresql", 2),
    "postgresql-2-fanout": Setup("postgresql", 2, fanout=True),
}
"""The setups, in run order."""


def agent_env(run_dir: Path, port: int, database_url: str, replica_id: str) -> dict[str, str | None]:
    """An agent alone: no env file, no integrations, the stack URLs on a closed port, ``database_url``."""
    closed = f"http://127.0.0.1:{free_port()}"
    env: dict[str, str | None] = {name: None for name in INTEGRATION_VARIABLES}
    env.update(
        ONCALL_ENV_FILE=str(run_dir / "missing.env"),
        DATABASE_URL=database_url,
        AGENT_REPLICA_ID=replica_id,
        PROMETHEUS_URL=closed,
        LB_URL=closed,
        PM_URL=closed,
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        CODE_ROOT=str(REPO_ROOT),
        LOG_LEVEL="WARNING",
    )
    return env


def start_agents(procs: ProcessGroup, run_dir: Path, database_url: str, count: int) -> list[tuple[int, int]]:
    """Start ``count`` replicas (``agent-N``) on ``database_url``; returns ``(port, pid)`` of each once healthy."""
    agents = []
    for n in range(1, count + 1):
        port = free_port()
        args = agent_command(port, "warning")
        env = agent_env(run_dir, port, database_url, f"agent-{n}")
        proc = procs.start(f"agent-{n}", args, env=env, cwd=REPO_ROOT)
        agents.append((port, proc.pid))
    for port, _ in agents:
        wait_http_ok(f"http://127.0.0.1:{port}/healthz", timeout=60)
    return agents


async def storm(urls: list[str], plan: list[bytes], rate: float, fanout: bool) -> dict[str, Any]:
    """Send every notification of ``plan`` at ``rate`` per second, open loop: to every URL (``fanout``) or to
    one URL in turn. Ack latency of each post from the notification's scheduled time."""
    hist = HdrHistogram(1, 60_000_000, 3)
    outcomes: Counter[str] = Counter()
    answers: Counter[str] = Counter()
    headers = {"Content-Type": "application/json", "User-Agent": "Alertmanager/0.25.0"}
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def post(url: str, body: bytes, due: float) -> None:
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    answer = await response.json()
            except (TimeoutError, aiohttp.ClientError) as exc:
                outcomes[type(exc).__name__] += 1
                return
            outcomes[str(response.status)] += 1
            answers[answer.get("status", "?")] += 1
            hist.record_value(max(int((time.perf_counter() - due) * 1e6), 1))

        tasks = []
        start = time.perf_counter()
        for i, body in enumerate(plan):
            due = start + i / rate
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            targets = urls if fanout else [urls[i % len(urls)]]
            tasks += [asyncio.create_task(post(url, body, due)) for url in targets]
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {
        "notifications": len(plan),
        "posts": len(tasks),
        "elapsed_s": elapsed,
        "posts_per_s": len(tasks) / elapsed,
        "ack_ms": percentiles(hist),
        "http": dict(outcomes),
        "answers": dict(answers),
    }


COUNTS = {
    "incidents": "SELECT count(*) FROM incidents",
    "distinct_group_keys": "SELECT count(DISTINCT group_key) FROM incidents",
    "episodes": "SELECT count(*) FROM episodes",
    "investigations_finished": "SELECT count(*) FROM episodes WHERE investigation IN ('done', 'failed')",
    "investigations_pending": "SELECT count(*) FROM episodes WHERE investigation IN ('queued', 'running')",
    "engine_runs": "SELECT count(*) FROM investigations",
    "diagnosis_notices": "SELECT count(*) FROM outbox WHERE operation = 'notice' AND event_key LIKE '%' || :diagnosis",
    "resolved_notices": "SELECT count(*) FROM outbox WHERE operation = 'notice' AND event_key LIKE '%' || :resolved",
    "messages_sent": "SELECT count(*) FROM messages WHERE direction = 'out' AND status = 'sent'",
    "outbox_pending": "SELECT count(*) FROM outbox WHERE status = 'pending'",
    "raw_unapplied": "SELECT count(*) FROM raw_alerts WHERE valid = 0",
}
NOTICE_SUFFIXES = {"diagnosis": ":diagnosis", "resolved": ":resolved"}
HANDLED_BY = "SELECT claimed_by, count(*) FROM episodes GROUP BY claimed_by ORDER BY claimed_by"


def count(database_url: str, timeout_s: float = 180) -> dict[str, Any]:
    """Wait until no investigation or delivery is pending, then count what the storm left in the database."""
    engine = create_engine(sync_url(database_url))

    def snapshot() -> dict[str, Any]:
        with engine.connect() as conn:
            figures: dict[str, Any] = {
                name: conn.execute(text(sql), NOTICE_SUFFIXES if ":" in sql else {}).scalar_one()
                for name, sql in COUNTS.items()
            }
            figures["investigations_by_replica"] = dict(conn.execute(text(HANDLED_BY)).all())  # type: ignore[arg-type]
        return figures

    try:
        return wait_until(
            lambda: (f := snapshot())["investigations_pending"] == 0 and f["outbox_pending"] == 0 and f,
            timeout_s,
            1.0,
            "investigations and deliveries finished",
        )
    finally:
        engine.dispose()


def run_setup(name: str, run_dir: Path, plan: list[bytes], rate: float, pg_url: str | None) -> dict[str, Any]:
    """One setup: its agents, the storm, the counts."""
    database_url = f"sqlite:///{run_dir / 'oncall.db'}" if pg_url is None else pg_url
    procs = ProcessGroup(run_dir / "logs")
    try:
        agents = start_agents(procs, run_dir, database_url, SETUPS[name].replicas)
        urls = [f"http://127.0.0.1:{port}/alerts" for port, _ in agents]
        cpu0, wall0 = sum(proc_cpu_seconds(pid) for _, pid in agents), time.perf_counter()
        figures = uvloop.run(storm(urls, plan, rate, fanout=SETUPS[name].fanout))
        cpu = (sum(proc_cpu_seconds(pid) for _, pid in agents) - cpu0) / (time.perf_counter() - wall0)
        figures["applied"] = applied(database_url, time.time())
        counts = count(database_url)
    finally:
        procs.stop_all()
    print(f"  {name}: {json.dumps({k: figures[k] for k in ('posts_per_s', 'ack_ms', 'http')})}\n    {counts}")
    return {"storm": figures, "counts": counts, "agents_cpu_cores": cpu}


def exact(counts: dict[str, Any], groups: int) -> bool:
    """One incident, one investigation, one diagnosis and one resolved notice per group key; nothing left."""
    keys = ("incidents", "distinct_group_keys", "episodes", "investigations_finished", "engine_runs")
    keys += ("diagnosis_notices", "resolved_notices")
    return all(counts[key] == groups for key in keys) and counts["raw_unapplied"] == 0


def report(results: dict[str, dict[str, Any]], groups: int, rate: float, started_load: list[float]) -> dict:
    """The side-by-side README table and the target verdicts."""
    names = list(results)
    targets = {}
    rows: list[list[Any]] = []

    def row(label: str, cell: Any, target: str = "-", ok: bool | None = None) -> None:
        rows.append([label, *[cell(results[n]) for n in names], target, "-" if ok is None else verdict(ok)])

    for name in names:
        storm_figures = results[name]["storm"]
        targets[f"{name}:ack_p99<{TARGET_ACK_P99_MS:g}ms"] = storm_figures["ack_ms"]["p99"] < TARGET_ACK_P99_MS
        targets[f"{name}:exactly_one_per_group"] = exact(results[name]["counts"], groups)
    row("notifications / posts", lambda r: f"{r['storm']['notifications']:,} / {r['storm']['posts']:,}")
    row("posts acknowledged (202, body committed)", lambda r: f"{r['storm']['http'].get('202', 0):,}", "all")
    row("posts/s achieved", lambda r: f"{r['storm']['posts_per_s']:.0f}", f"{rate:g} notifications/s")
    row("ack p50 (ms)", lambda r: f"{r['storm']['ack_ms']['p50']:.2f}")
    row(
        "ack p99 (ms)",
        lambda r: f"{r['storm']['ack_ms']['p99']:.2f}",
        f"< {TARGET_ACK_P99_MS:g} ms",
        all(v for k, v in targets.items() if "ack_p99" in k),
    )
    row("ack max (ms)", lambda r: f"{r['storm']['ack_ms']['max']:.1f}")
    row(
        "applied: accepted / duplicate / failed",
        lambda r: " / ".join(
            f"{r['storm']['applied']['outcomes'].get(k, 0):,}" for k in ("accepted", "duplicate", "failed")
        ),
        "- / - / 0",
    )
    row(
        "apply lag, receipt to applied: p50 / p99 (ms)",
        lambda r: (
            f"{r['storm']['applied']['apply_lag_ms']['p50']:.0f} / {r['storm']['applied']['apply_lag_ms']['p99']:.0f}"
        ),
    )
    row("last body applied after the last post (s)", lambda r: f"{r['storm']['applied']['drained_after_storm_s']:.1f}")
    row("agent CPU (cores, all replicas)", lambda r: f"{r['agents_cpu_cores']:.2f}")
    row("incidents (group keys)", lambda r: f"{r['counts']['incidents']} ({r['counts']['distinct_group_keys']})")
    row(
        "investigations (engine runs)",
        lambda r: f"{r['counts']['investigations_finished']} ({r['counts']['engine_runs']})",
        f"{groups} each, 0 lost, 0 duplicated",
        all(v for k, v in targets.items() if "exactly_one" in k),
    )
    row(
        "investigations by replica",
        lambda r: ", ".join(f"{k}: {v}" for k, v in r["counts"]["investigations_by_replica"].items()),
    )
    row(
        "diagnosis / resolved notices",
        lambda r: f"{r['counts']['diagnosis_notices']} / {r['counts']['resolved_notices']}",
        f"{groups} / {groups}",
    )
    row("WhatsApp messages sent (console)", lambda r: f"{r['counts']['messages_sent']:,}")
    table = markdown_table(["measure", *names, "target", "result"], rows)
    update_readme("ha", f"{table}\n\nOne storm per setup, {groups} group keys. {measured_line(started_load)}")
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description="alert storm: 1 agent on SQLite vs 2 replicas on PostgreSQL")
    parser.add_argument("--posts", type=int, default=5000, help="notifications (default 5000)")
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--rate", type=float, default=500.0, help="notifications per second (default 500)")
    parser.add_argument("--only", default=",".join(SETUPS), help=f"setups to run, comma separated: {list(SETUPS)}")
    args = parser.parse_args()
    started_load = loadavg()
    run_dir = temp_run_dir("ha")
    print(f"ha bench in {run_dir}; load average {started_load}")
    plan = storm_plan(args.posts, args.groups)
    results: dict[str, dict[str, Any]] = {}
    for name in [n for n in SETUPS if n in args.only.split(",")]:
        setup_dir = run_dir / name
        setup_dir.mkdir()
        if SETUPS[name].store == "sqlite":
            results[name] = run_setup(name, setup_dir, plan, args.rate, None)
            continue
        with PostgresServer(setup_dir) as postgres:
            results[name] = run_setup(name, setup_dir, plan, args.rate, postgres.url)
    targets = report(results, args.groups, args.rate, started_load) if len(results) == len(SETUPS) else {}
    settings = {"posts": args.posts, "groups": args.groups, "rate": args.rate}
    path = write_results(
        "ha", {"loadavg_at_start": started_load, "setups": results, "targets": targets, "settings": settings}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
