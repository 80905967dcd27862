"""Benchmark 2: the traffic generator (traffic_gen.py) against nginx serving a static 200.

1. rate accuracy at 500, 1,000, 2,000 and 3,000 req/s (10 s each): sent rate / target, schedule lag
   p99, CPU share of the generator (its process's user+system CPU seconds / wall seconds);
2. at 1,000 req/s: the generator's p50/p99 vs ``wrk -t1 -c1`` on the same target, same round;
3. coordinated omission: one inventory replica is SIGSTOPped for 1 s during a 5 s run at 200 req/s;
   the generator's corrected p99 must show the stall. Beside it, with the same stall: ``wrk -t1 -c1``
   (closed loop; wrk 4 back-fills samples for responses slower than its mean interval, see
   ``stats_correct`` in wrk.c) and a naive closed-loop client that records each request's service time.

The generator runs in this process (``traffic_gen.run`` under uvloop), which does nothing else while
it runs, so ``resource.getrusage(RUSAGE_SELF)`` is the generator's CPU.

Usage: ``python bench/gen_bench.py [--rounds 3] [--duration 10]``; writes bench/results/gen.json and the
"gen" table of bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import aiohttp  # noqa: E402
import uvloop  # noqa: E402
from common import (
    ProcessGroup,
    free_port,
    interleaved,
    loadavg,
    markdown_table,
    measured_line,
    median,
    median_of,
    nginx,
    run_wrk,
    start_replica,
    temp_run_dir,
    update_readme,
    verdict,
    write_results,
)
from hdrh.histogram import HdrHistogram  # noqa: E402

import traffic_gen  # noqa: E402 - importable once common put the repository on sys.path

RATES = (500.0, 1000.0, 2000.0, 3000.0)
WRK_COMPARE_RATE = 1000.0
RATE_TOLERANCE = 0.01
RATE_TARGET_UP_TO = 2000.0
P99_TOLERANCE_MS = 3.0
STALL_RPS = 200.0
STALL_RUN_S = 5.0
STALL_AT_S = 2.0
STALL_FOR_S = 1.0
STALL_VISIBLE_MS = 500.0


def cpu_self_s() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def generate(url: str, rps: float, duration_s: float, seed: int) -> dict[str, Any]:
    """One constant-rate traffic_gen run; returns its Summary dict plus sent/target ratio and CPU share."""
    config = traffic_gen.RunConfig(url=url, profile="constant", rps=rps, duration=duration_s, seed=seed, timeout=10)
    cpu0, wall0 = cpu_self_s(), time.perf_counter()
    summary = uvloop.run(traffic_gen.run(config)).to_dict()
    cpu, wall = cpu_self_s() - cpu0, time.perf_counter() - wall0
    summary.update(target_rps=rps, sent_ratio=summary["sent"] / (rps * duration_s), cpu_share=cpu / wall, cpu_s=cpu)
    return summary


def closed_loop(url: str, duration_s: float) -> dict[str, Any]:
    """A naive closed-loop client: one connection, the next GET only after the previous answer, each
    request's own service time recorded (no correction). Returns {"requests", "latency_ms": {p50, p99, max}}."""

    async def main() -> dict[str, Any]:
        hist = HdrHistogram(1, 60_000_000, 3)
        deadline = time.perf_counter() + duration_s
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
            while (start := time.perf_counter()) < deadline:
                async with session.get(url) as response:
                    await response.read()
                hist.record_value(max(int((time.perf_counter() - start) * 1e6), 1))
        return {
            "requests": hist.get_total_count(),
            "latency_ms": {
                "p50": hist.get_value_at_percentile(50) / 1000,
                "p99": hist.get_value_at_percentile(99) / 1000,
                "max": hist.get_max_value() / 1000,
            },
        }

    return uvloop.run(main())


def stalled(pid: int, at_s: float, for_s: float) -> threading.Thread:
    """Start a thread that SIGSTOPs ``pid`` after ``at_s`` seconds and SIGCONTs it ``for_s`` seconds later."""

    def run() -> None:
        time.sleep(at_s)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(for_s)
        os.kill(pid, signal.SIGCONT)

    thread = threading.Thread(target=run, name="stall", daemon=True)
    thread.start()
    return thread


def with_stall(replica: subprocess.Popen, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``measure`` while the replica is stopped for STALL_FOR_S seconds from STALL_AT_S."""
    thread = stalled(replica.pid, STALL_AT_S, STALL_FOR_S)
    try:
        return measure()
    finally:
        thread.join(STALL_AT_S + STALL_FOR_S + 5)
        os.kill(replica.pid, signal.SIGCONT)  # never leave it stopped, whatever happened


def report(rates: dict[str, list[dict[str, Any]]], co: dict[str, Any], started_load: list[float]) -> dict[str, Any]:
    """Medians and target checks; updates the README table."""
    rows = []
    summary: dict[str, Any] = {"rates": {}}
    for rps in RATES:
        runs = rates[f"gen@{rps:g}"]
        figures = {
            "sent_ratio": median_of(runs, "sent_ratio"),
            "schedule_lag_p99_ms": median_of(runs, "schedule_lag_ms", "p99"),
            "cpu_share": median_of(runs, "cpu_share"),
            "p50_ms": median_of(runs, "latency_ms", "p50"),
            "p99_ms": median_of(runs, "latency_ms", "p99"),
            "errors": max(r["errors"] for r in runs),
        }
        summary["rates"][f"{rps:g}"] = figures
        in_scope = rps <= RATE_TARGET_UP_TO
        ok = abs(figures["sent_ratio"] - 1) <= RATE_TOLERANCE
        rows.append(
            [
                f"{rps:,.0f}",
                f"{figures['sent_ratio']:.4f}",
                f"{figures['schedule_lag_p99_ms']:.2f}",
                f"{figures['cpu_share']:.2f}",
                f"{figures['p50_ms']:.2f}",
                f"{figures['p99_ms']:.2f}",
                str(figures["errors"]),
                verdict(ok) if in_scope else ("within 1%" if ok else f"{(figures['sent_ratio'] - 1):+.1%} (no target)"),
            ]
        )
    wrk_runs, gen_runs = rates["wrk -t1 -c1"], rates[f"gen@{WRK_COMPARE_RATE:g}"]
    n = len(wrk_runs)
    p99_gap = median([gen_runs[i]["latency_ms"]["p99"] - wrk_runs[i]["latency_ms"]["p99"] for i in range(n)])
    summary["wrk_c1"] = {
        "rps": median_of(wrk_runs, "rps"),
        "p50_ms": median_of(wrk_runs, "latency_ms", "p50"),
        "p99_ms": median_of(wrk_runs, "latency_ms", "p99"),
    }
    summary["p99_gap_vs_wrk_ms"] = p99_gap
    summary["coordinated_omission"] = co
    rate_ok = all(
        abs(summary["rates"][f"{r:g}"]["sent_ratio"] - 1) <= RATE_TOLERANCE for r in RATES if r <= RATE_TARGET_UP_TO
    )
    summary["targets"] = {
        "rate_within_1pct_up_to_2000": rate_ok,
        "p99_within_3ms_of_wrk_c1": p99_gap <= P99_TOLERANCE_MS,
        "stall_visible_in_p99": co["generator_p99_ms"] >= STALL_VISIBLE_MS,
    }
    table = markdown_table(
        [
            "target req/s",
            "sent / target",
            "schedule lag p99 (ms)",
            "CPU share (cores)",
            "p50 (ms)",
            "p99 (ms)",
            "errors",
            "within 1% (target up to 2,000)",
        ],
        rows,
    )
    wrk = summary["wrk_c1"]
    compare = markdown_table(
        ["at 1,000 req/s, static nginx", "p50 (ms)", "p99 (ms)", "generator p99 - wrk p99 (target <= 3 ms)"],
        [
            [
                "traffic_gen (open loop)",
                f"{summary['rates']['1000']['p50_ms']:.2f}",
                f"{summary['rates']['1000']['p99_ms']:.2f}",
                f"{p99_gap:+.2f} ms: {verdict(summary['targets']['p99_within_3ms_of_wrk_c1'])}",
            ],
            [
                f"wrk -t1 -c1 (closed loop, {wrk['rps']:,.0f} req/s)",
                f"{wrk['p50_ms']:.2f}",
                f"{wrk['p99_ms']:.2f}",
                "-",
            ],
        ],
    )
    stall = markdown_table(
        ["1 s SIGSTOP of the replica", "p50 (ms)", "p99 (ms)", "max (ms)", "stall visible in p99 (>= 500 ms)"],
        [
            [
                f"traffic_gen, {STALL_RPS:g} req/s open loop (corrected)",
                f"{co['generator']['latency_ms']['p50']:.2f}",
                f"{co['generator_p99_ms']:.1f}",
                f"{co['generator']['latency_ms']['max']:.1f}",
                verdict(summary["targets"]["stall_visible_in_p99"]),
            ],
            [
                f"wrk -t1 -c1, closed loop with wrk's back-fill correction ({co['wrk']['requests']:,} requests)",
                f"{co['wrk']['latency_ms']['p50']:.2f}",
                f"{co['wrk']['latency_ms']['p99']:.1f}",
                f"{co['wrk']['latency_ms']['max']:.1f}",
                "no" if co["wrk"]["latency_ms"]["p99"] < STALL_VISIBLE_MS else "yes",
            ],
            [
                f"naive closed loop, 1 connection, service time only ({co['closed_loop']['requests']:,} requests)",
                f"{co['closed_loop']['latency_ms']['p50']:.2f}",
                f"{co['closed_loop']['latency_ms']['p99']:.1f}",
                f"{co['closed_loop']['latency_ms']['max']:.1f}",
                "no (coordinated omission)" if co["closed_loop"]["latency_ms"]["p99"] < STALL_VISIBLE_MS else "yes",
            ],
        ],
    )
    update_readme(
        "gen",
        f"{table}\n\n{compare}\n\n{stall}\n\nMedian of {n} interleaved rounds (the stall: one run each). "
        f"{measured_line(started_load)}",
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description="traffic_gen.py accuracy, latency floor and coordinated-omission check"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    args = parser.parse_args()
    started_load = loadavg()
    run_dir = temp_run_dir("gen")
    procs = ProcessGroup(run_dir / "logs")
    print(f"gen bench in {run_dir}; load average {started_load}")
    with ExitStack() as stack:
        stack.callback(procs.stop_all)
        port = free_port()
        stack.enter_context(nginx(procs, "static.conf", port, run_dir / "nginx"))
        url = f"http://127.0.0.1:{port}"
        variants: list[tuple[str, Callable[[int], dict[str, Any]]]] = []
        for rps in RATES:
            variants.append((f"gen@{rps:g}", lambda i, rps=rps: generate(url, rps, args.duration, seed=i)))
            if rps == WRK_COMPARE_RATE:
                variants.append(("wrk -t1 -c1", lambda i: run_wrk(f"{url}/", 1, 1, args.duration)))
        print("rates and wrk -c1 on static nginx")
        rates = interleaved(args.rounds, variants)
        print("coordinated-omission check")
        replica_port = free_port()
        replica = start_replica(procs, run_dir, replica_port, "inventory-stall")
        replica_url = f"http://127.0.0.1:{replica_port}"
        gen = with_stall(replica, lambda: generate(replica_url, STALL_RPS, STALL_RUN_S, seed=0))
        wrk = with_stall(replica, lambda: run_wrk(f"{replica_url}/items/1", 1, 1, STALL_RUN_S))
        naive = with_stall(replica, lambda: closed_loop(f"{replica_url}/items/1", STALL_RUN_S))
        co = {
            "generator": gen,
            "generator_p99_ms": gen["latency_ms"]["p99"],
            "wrk": wrk,
            "closed_loop": naive,
            "loadavg": loadavg(),
            "stall": {"at_s": STALL_AT_S, "for_s": STALL_FOR_S, "rps": STALL_RPS, "run_s": STALL_RUN_S},
        }
        print(
            f"  stall: generator p99 {gen['latency_ms']['p99']:.1f} ms, wrk -c1 p99 {wrk['latency_ms']['p99']:.1f} ms, "
            f"naive closed loop p99 {naive['latency_ms']['p99']:.1f} ms (max {naive['latency_ms']['max']:.1f} ms)"
        )
    summary = report(rates, co, started_load)
    path = write_results(
        "gen",
        {
            "loadavg_at_start": started_load,
            "summary": summary,
            "rounds": rates,
            "settings": {"rounds": args.rounds, "duration_s": args.duration, "rates": RATES},
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
