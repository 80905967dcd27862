"""Benchmark: large Alertmanager groups against the agent's POST /alerts, and the event-loop stall they cause.

The agent runs alone (as in ingest_bench: uvicorn on a free port, temporary SQLite database, no
integrations, demo-stack URLs on a closed port). For each body a loop-lag probe GETs ``/metrics``
(no database, a few hundred microseconds of work) every 5 ms while the body is posted; a probe
answer that takes long means the agent's event loop was held. Reported per body: the POST's answer
time, the probe's median and worst latency during the POST (the worst minus the median bounds the
longest stall), the size of the incident page and the incident page's alert count.

Bodies: a 2.2 MB group (the finding's 676 ms stall), a 10,000-alert 6 MB group (refused with 413
before), and a 50 MB body (a small group with a 50 MB annotation: the documented limit's scale).
Target: no probe answer slower than the median by more than 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import httpx  # noqa: E402
from common import (
    ProcessGroup,
    free_port,
    loadavg,
    markdown_table,
    measured_line,
    temp_run_dir,
    update_readme,
    verdict,
    write_results,
)
from ingest_bench import API_HEADERS, FIXTURES, start_agent

PROBE_INTERVAL_S = 0.005
CAPTURE = FIXTURES / "req_001.json"
TARGET_STALL_MS = 50.0


def group(alerts: int, description_chars: int, key: str) -> bytes:
    """A group of ``alerts`` firing alerts of one rule over many instances (captured webhook as template)."""
    body = json.loads(CAPTURE.read_text())["body"]
    template = body["alerts"][0]
    body["groupKey"] = f'{{}}:{{alertname="{key}"}}'
    body["alerts"] = [
        {
            **template,
            "labels": {**template["labels"], "instance": f"10.1.{n // 250}.{n % 250}:9100", "pod": f"web-{n:05d}"},
            "annotations": {**template["annotations"], "description": f"instance {n} down " + "x" * description_chars},
            "fingerprint": f"{n:016x}",
        }
        for n in range(alerts)
    ]
    return json.dumps(body).encode()


def padded(megabytes: int) -> bytes:
    """A one-alert group whose common annotation is ``megabytes`` MB long."""
    body = json.loads(CAPTURE.read_text())["body"]
    body["groupKey"] = '{}:{alertname="Padded"}'
    body["commonAnnotations"]["description"] = "y" * (megabytes * 1024 * 1024)
    return json.dumps(body).encode()


async def post_with_probe(base: str, body: bytes) -> dict[str, Any]:
    """POST ``body`` while probing ``/metrics`` every 5 ms; the answer time and the probe latencies (ms)."""
    latencies: list[float] = []
    done = asyncio.Event()
    async with httpx.AsyncClient(timeout=600) as probe_client, httpx.AsyncClient(timeout=600) as poster:

        async def probe() -> None:
            while not done.is_set():
                t0 = time.perf_counter()
                await probe_client.get(f"{base}/metrics")
                latencies.append((time.perf_counter() - t0) * 1000)
                await asyncio.sleep(PROBE_INTERVAL_S)

        for _ in range(20):  # warm the probe's connection and take a baseline
            t0 = time.perf_counter()
            await probe_client.get(f"{base}/metrics")
        baseline = (time.perf_counter() - t0) * 1000
        task = asyncio.create_task(probe())
        t0 = time.perf_counter()
        answer = await poster.post(f"{base}/alerts", content=body, headers={"Content-Type": "application/json"})
        answer_ms = (time.perf_counter() - t0) * 1000
        done.set()
        await task
        incident = answer.json().get("incident_id")
        page = await poster.get(f"{base}/incidents/{incident}", headers=API_HEADERS) if incident else None
    median = statistics.median(latencies) if latencies else baseline
    return {
        "bytes": len(body),
        "status": answer.status_code,
        "outcome": answer.json().get("status"),
        "answer_ms": round(answer_ms, 1),
        "probes": len(latencies),
        "probe_median_ms": round(median, 2),
        "probe_max_ms": round(max(latencies, default=baseline), 2),
        "stall_ms": round(max(latencies, default=baseline) - median, 2),
        "page_bytes": len(page.content) if page is not None else None,
        "page_alerts": len(page.json()["alerts"]) if page is not None else None,
    }


def report(results: dict[str, dict[str, Any]], started_load: list[float]) -> bool:
    rows = [
        [
            name,
            f"{r['bytes'] / 1e6:.1f} MB",
            f"{r['status']} {r['outcome']}",
            f"{r['answer_ms'] / 1000:.2f} s",
            r["probes"],
            r["probe_median_ms"],
            r["probe_max_ms"],
            f"{r['page_bytes'] / 1000:.0f} kB ({r['page_alerts']} alerts)" if r["page_bytes"] else "-",
            verdict(r["status"] == 200 and r["stall_ms"] <= TARGET_STALL_MS),
        ]
        for name, r in results.items()
    ]
    headers = ["body", "size", "answer", "answer time", "probes", "probe p50 (ms)", "probe max (ms)", "page", "target"]
    table = markdown_table(headers, rows)
    print(table)
    update_readme(
        "large-body",
        f"{table}\n\nTarget: accepted, and no `/metrics` probe slower than its median by more than "
        f"{TARGET_STALL_MS:.0f} ms while the body is ingested. {measured_line(started_load)}",
    )
    return all(row[-1] == "met" for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description="large Alertmanager groups and the agent's event-loop stall")
    parser.add_argument("--padded-mb", type=int, default=50, help="size of the padded body, MB (default 50)")
    args = parser.parse_args()
    started_load = loadavg()
    run_dir = temp_run_dir("large-body")
    procs = ProcessGroup(run_dir / "logs")
    bodies = {
        "2.2 MB group (3,600 alerts)": group(3_600, 400, "Group2MB"),
        "6 MB group (10,000 alerts)": group(10_000, 350, "Group10k"),
        f"{args.padded_mb} MB body (1 alert, long annotation)": padded(args.padded_mb),
    }
    results: dict[str, dict[str, Any]] = {}
    try:
        port = free_port()
        start_agent(procs, run_dir, port)
        for name, body in bodies.items():
            results[name] = asyncio.run(post_with_probe(f"http://127.0.0.1:{port}", body))
            print(f"  {name}: {results[name]}")
    finally:
        procs.stop_all()
    write_results("large_body", {"results": results, "target_stall_ms": TARGET_STALL_MS})
    ok = report(results, started_load)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
