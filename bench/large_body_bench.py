"""Benchmark: large Alertmanager groups against the agent's POST /alerts, and the event-loop stall they cause.

The agent runs alone (as in ingest_bench: uvicorn on a free port, temporary SQLite database, no
integrations, demo-stack URLs on a closed port). The agent measures its own event-loop lag: a 10 ms
timer records how late it fired (``oncall_event_loop_lag_seconds``, a histogram on ``/metrics``); the
benchmark reads the histogram before and after each POST. Reported per body: the POST's answer
time and the time until it was applied, the lag samples taken meanwhile, how many were later than
50 ms, the histogram bucket that holds the worst one, and the size, alert count and answer time of the incident
page (`GET /incidents/{id}` right after the body is applied).

Bodies: a 2.2 MB group (the finding's 676 ms stall), a 10,000-alert 6 MB group (refused with 413
before), and a 52 MB group (2,000 alerts with 26 KB of annotations each: the documented limit's scale).
Target: no lag sample above 50 ms.
"""

from __future__ import annotations

import argparse
import json
import re
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

from stackctl.processes import wait_applied  # noqa: E402

BUCKET = re.compile(r'^oncall_event_loop_lag_seconds_bucket\{le="(?P<le>[^"]+)"\} (?P<count>\S+)$')
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
            "annotations": {
                **template["annotations"],
                "description": f"instance {n} down " + "x" * description_chars,
                "details": "y" * (description_chars if description_chars > 1000 else 0),
            },
            "fingerprint": f"{n:016x}",
        }
        for n in range(alerts)
    ]
    return json.dumps(body).encode()


def lag_buckets(client: httpx.Client, base: str) -> dict[float, float]:
    """``{le: cumulative count}`` of the agent's ``oncall_event_loop_lag_seconds`` histogram."""
    buckets: dict[float, float] = {}
    for line in client.get(f"{base}/metrics").text.splitlines():
        match = BUCKET.match(line)
        if match:
            buckets[float(match["le"])] = float(match["count"])
    return buckets


def post_and_measure(base: str, body: bytes) -> dict[str, Any]:
    """POST ``body`` and wait until the agent applied it; the answer time, the time until applied, and the
    agent's loop-lag samples taken meanwhile (one per 10 ms timer)."""
    with httpx.Client(timeout=600) as client:
        before = lag_buckets(client, base)
        t0 = time.perf_counter()
        answer = client.post(f"{base}/alerts", content=body, headers={"Content-Type": "application/json"})
        answer_ms = (time.perf_counter() - t0) * 1000
        state = wait_applied(base, answer.json()["raw_id"], API_HEADERS, 600)
        applied_ms = (time.perf_counter() - t0) * 1000
        after = lag_buckets(client, base)
        incident = state.get("incident_id")
        t1 = time.perf_counter()
        page = client.get(f"{base}/incidents/{incident}", headers=API_HEADERS) if incident else None
        page_ms = (time.perf_counter() - t1) * 1000
    delta = {le: after[le] - before.get(le, 0.0) for le in after}
    samples = delta[float("inf")]
    worst = min(le for le, count in delta.items() if count == samples)  # every sample was at most this late
    return {
        "bytes": len(body),
        "status": answer.status_code,
        "outcome": state["status"],
        "answer_ms": round(answer_ms, 1),
        "applied_ms": round(applied_ms, 1),
        "lag_samples": int(samples),
        "lag_over_50ms": int(samples - delta[TARGET_STALL_MS / 1000]),
        "lag_max_bucket_ms": worst * 1000,
        "page_bytes": len(page.content) if page is not None else None,
        "page_alerts": len(page.json()["alerts"]) if page is not None else None,
        "page_ms": round(page_ms, 1),
    }


def report(results: dict[str, dict[str, Any]], started_load: list[float]) -> bool:
    rows = [
        [
            name,
            f"{r['bytes'] / 1e6:.1f} MB",
            f"{r['status']} {r['outcome']}",
            f"{r['answer_ms'] / 1000:.2f} s / {r['applied_ms'] / 1000:.2f} s",
            r["lag_samples"],
            r["lag_over_50ms"],
            f"<= {r['lag_max_bucket_ms']:g} ms",
            f"{r['page_bytes'] / 1000:.0f} kB ({r['page_alerts']} alerts) in {r['page_ms']:.0f} ms"
            if r["page_bytes"]
            else "-",
            verdict(r["status"] == 202 and r["outcome"] == "accepted" and r["lag_over_50ms"] == 0),
        ]
        for name, r in results.items()
    ]
    headers = ["body", "size", "answer", "answered / applied after", "lag samples", "> 50 ms", "worst lag", "page"]
    headers.append("target")
    table = markdown_table(headers, rows)
    print(table)
    update_readme(
        "large-body",
        f"{table}\n\nTarget: accepted, and no loop-lag sample above {TARGET_STALL_MS:.0f} ms while the body "
        f"is ingested. {measured_line(started_load)}",
    )
    return all(row[-1] == "met" for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description="large Alertmanager groups and the agent's event-loop stall")
    parser.parse_args()
    started_load = loadavg()
    run_dir = temp_run_dir("large-body")
    procs = ProcessGroup(run_dir / "logs")
    bodies = {
        "2.2 MB group (3,600 alerts)": group(3_600, 30, "Group2MB"),
        "6 MB group (10,000 alerts)": group(10_000, 20, "Group10k"),
        "52 MB group (2,000 alerts, 26 KB annotations)": group(2_000, 13_000, "Group50MB"),
    }
    results: dict[str, dict[str, Any]] = {}
    try:
        port = free_port()
        start_agent(procs, run_dir, port)
        for name, body in bodies.items():
            results[name] = post_and_measure(f"http://127.0.0.1:{port}", body)
            print(f"  {name}: {results[name]}")
    finally:
        procs.stop_all()
    write_results("large_body", {"results": results, "target_stall_ms": TARGET_STALL_MS})
    ok = report(results, started_load)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
