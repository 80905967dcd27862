"""Benchmark 1: loadbalancer.py against nginx over the same two inventory replicas.

Three parts, each interleaved (direct / nginx / ours in every round, median of the rounds):

1. throughput: ``wrk -t2 -c64 -d10s`` on ``GET /items/1`` against one replica directly, nginx
   (round-robin, upstream keep-alive) and loadbalancer.py; ratio ours / nginx per round.
2. latency: traffic_gen open loop at 300 req/s (its normal request mix) against the same three targets;
   added p50/p99 = target minus direct in the same round.
3. failover: traffic_gen at 300 req/s for 10 s through nginx and through ours; replica 2 is killed
   (SIGKILL) at t=3 s and restarted on the same port at t=6 s; every request of the mix is idempotent
   (GET, PUT), so every non-2xx answer or connection failure counts as a failed request.

Usage: ``python bench/lb_bench.py [--rounds 3] [--duration 10]``; writes bench/results/lb.json and the
"lb" table of bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx  # noqa: E402
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
    start_loadbalancer,
    start_replica,
    temp_run_dir,
    tree_cpu_seconds,
    update_readme,
    verdict,
    wait_until,
    write_results,
)

import traffic_gen  # noqa: E402 - importable once common put the repository on sys.path

WRK_THREADS = 2
WRK_CONNECTIONS = 64
OPEN_LOOP_RPS = 300.0
KILL_AT_S = 3.0
RESTART_AT_S = 6.0
TARGET_THROUGHPUT_RATIO = 0.6
TARGET_ADDED_P99_MS = 5.0


class Bench:
    """The processes of one LB benchmark: two replicas, nginx and loadbalancer.py on free ports."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.procs = ProcessGroup(run_dir / "logs")
        self.ports = [free_port(), free_port()]
        self.replicas: list[subprocess.Popen] = []
        self.nginx_port = free_port()
        self.lb_port = free_port()
        self.lb: subprocess.Popen | None = None
        self.nginx: subprocess.Popen | None = None

    @property
    def backends(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    def urls(self) -> dict[str, str]:
        """Base URL of each target: one replica directly, nginx, loadbalancer.py."""
        return {
            "direct": self.backends[0],
            "nginx": f"http://127.0.0.1:{self.nginx_port}",
            "ours": f"http://127.0.0.1:{self.lb_port}",
        }

    def pid(self, target: str) -> int | None:
        return {"nginx": self.nginx.pid if self.nginx else None, "ours": self.lb.pid if self.lb else None}.get(target)

    def start(self, stack: ExitStack) -> None:
        self.replicas = [
            start_replica(self.procs, self.run_dir, port, f"inventory-{i + 1}") for i, port in enumerate(self.ports)
        ]
        servers = "\n".join(f"        server 127.0.0.1:{p};" for p in self.ports)
        self.nginx = stack.enter_context(
            nginx(self.procs, "lb.conf", self.nginx_port, self.run_dir / "nginx", servers=servers)
        )
        self.lb = start_loadbalancer(self.procs, self.run_dir, self.lb_port, self.backends)

    def restart_replica(self, index: int) -> None:
        """Start replica ``index`` again on its port (after it was killed); do not wait for health."""
        self.replicas[index] = start_replica(
            self.procs, self.run_dir, self.ports[index], f"inventory-{index + 1}", wait=False
        )

    def all_healthy(self) -> None:
        """Wait until both replicas answer and loadbalancer.py reports every backend up."""
        for url in self.backends:
            wait_until(lambda u=url: httpx.get(f"{u}/healthz", timeout=1).is_success, 30, 0.1, f"{url} healthy")
        lb = self.urls()["ours"]
        wait_until(
            lambda: httpx.get(f"{lb}/healthz", timeout=1).json()["status"] == "ok", 30, 0.1, "LB backends all up"
        )


# ---------------------------------------------------------------- part 1: throughput


def throughput(bench: Bench, target: str, duration_s: float) -> dict[str, Any]:
    """One wrk run against ``target``; adds the target process's CPU seconds per 1,000 requests."""
    pid = bench.pid(target)
    cpu_before = tree_cpu_seconds(pid) if pid else 0.0
    result = run_wrk(f"{bench.urls()[target]}/items/1", WRK_THREADS, WRK_CONNECTIONS, duration_s)
    if pid:
        result["proxy_cpu_s_per_1k"] = 1000 * (tree_cpu_seconds(pid) - cpu_before) / max(result["requests"], 1)
    return result


# ---------------------------------------------------------------- part 2 and 3: open loop with traffic_gen


def open_loop(url: str, duration_s: float, seed: int, actions: list[tuple[float, Any]] | None = None) -> dict[str, Any]:
    """traffic_gen at 300 req/s for ``duration_s`` against ``url``; ``actions`` are ``(at_s, callable)`` run
    in a worker thread at those offsets from the start (kill / restart a replica). Returns the Summary dict."""
    config = traffic_gen.RunConfig(
        url=url, profile="constant", rps=OPEN_LOOP_RPS, duration=duration_s, seed=seed, timeout=10
    )

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()

        async def act(at_s: float, action: Any) -> None:
            await asyncio.sleep(max(start + at_s - time.perf_counter(), 0))
            await loop.run_in_executor(None, action)

        extra = [asyncio.create_task(act(at, action)) for at, action in actions or []]
        summary = await traffic_gen.run(config)
        await asyncio.gather(*extra)
        return summary.to_dict()

    return uvloop.run(main())


def failed_requests(summary: dict[str, Any]) -> int:
    """Requests without a 2xx answer (any other status, or no response at all)."""
    return sum(n for outcome, n in summary["outcomes"].items() if not (outcome.isdigit() and 200 <= int(outcome) < 300))


def failover_run(bench: Bench, target: str, duration_s: float, seed: int) -> dict[str, Any]:
    """Kill replica 2 at t=3 s and restart it at t=6 s during a 300 req/s run through ``target``."""
    bench.all_healthy()
    victim = 1

    def kill() -> None:
        bench.replicas[victim].send_signal(signal.SIGKILL)
        bench.replicas[victim].wait(timeout=5)

    summary = open_loop(
        bench.urls()[target],
        duration_s,
        seed,
        [(KILL_AT_S, kill), (RESTART_AT_S, lambda: bench.restart_replica(victim))],
    )
    return {
        "failed": failed_requests(summary),
        "sent": summary["sent"],
        "outcomes": summary["outcomes"],
        "latency_ms": summary["latency_ms"],
    }


# ---------------------------------------------------------------- report


def report(rounds: dict[str, dict[str, list[dict[str, Any]]]], started_load: list[float]) -> dict[str, Any]:
    """Medians, per-round ratios and target checks; updates the README table."""
    tp, lat, fo = rounds["throughput"], rounds["latency"], rounds["failover"]
    n = len(tp["nginx"])
    ratio = median([tp["ours"][i]["rps"] / tp["nginx"][i]["rps"] for i in range(n)])
    added = {
        t: {
            p: median([lat[t][i]["latency_ms"][p] - lat["direct"][i]["latency_ms"][p] for i in range(n)])
            for p in ("p50", "p99")
        }
        for t in ("nginx", "ours")
    }
    failed = {t: max(r["failed"] for r in fo[t]) for t in ("nginx", "ours")}
    summary = {
        "throughput_rps_median": {t: median_of(tp[t], "rps") for t in tp},
        "throughput_ratio_ours_to_nginx": ratio,
        "proxy_cpu_s_per_1k_median": {t: median_of(tp[t], "proxy_cpu_s_per_1k") for t in ("nginx", "ours")},
        "open_loop_latency_ms_median": {
            t: {p: median_of(lat[t], "latency_ms", p) for p in ("p50", "p99")} for t in lat
        },
        "added_latency_ms_median": added,
        "failover_failed_max": failed,
        "targets": {
            "throughput_ratio>=0.6": ratio >= TARGET_THROUGHPUT_RATIO,
            "added_p99<=5ms": added["ours"]["p99"] <= TARGET_ADDED_P99_MS,
            "failover_failed==0": failed["ours"] == 0,
        },
    }
    rows = [
        [
            "throughput, wrk -t2 -c64 GET /items/1 (req/s)",
            f"{summary['throughput_rps_median']['direct']:,.0f}",
            f"{summary['throughput_rps_median']['nginx']:,.0f}",
            f"{summary['throughput_rps_median']['ours']:,.0f}",
            f"ours/nginx {ratio:.2f}x (>= 0.6x)",
            verdict(summary["targets"]["throughput_ratio>=0.6"]),
        ],
        [
            "proxy CPU per 1,000 requests (CPU s)",
            "-",
            f"{summary['proxy_cpu_s_per_1k_median']['nginx']:.3f}",
            f"{summary['proxy_cpu_s_per_1k_median']['ours']:.3f}",
            "-",
            "-",
        ],
        [
            "p50 at 300 req/s open loop (ms)",
            f"{summary['open_loop_latency_ms_median']['direct']['p50']:.2f}",
            f"{summary['open_loop_latency_ms_median']['nginx']['p50']:.2f}",
            f"{summary['open_loop_latency_ms_median']['ours']['p50']:.2f}",
            f"added: nginx {added['nginx']['p50']:+.2f}, ours {added['ours']['p50']:+.2f}",
            "-",
        ],
        [
            "p99 at 300 req/s open loop (ms)",
            f"{summary['open_loop_latency_ms_median']['direct']['p99']:.2f}",
            f"{summary['open_loop_latency_ms_median']['nginx']['p99']:.2f}",
            f"{summary['open_loop_latency_ms_median']['ours']['p99']:.2f}",
            f"added: nginx {added['nginx']['p99']:+.2f}, ours {added['ours']['p99']:+.2f} (<= 5 ms)",
            verdict(summary["targets"]["added_p99<=5ms"]),
        ],
        [
            "failed requests, replica killed at 3 s, back at 6 s (worst round)",
            "-",
            str(failed["nginx"]),
            str(failed["ours"]),
            "ours 0",
            verdict(summary["targets"]["failover_failed==0"]),
        ],
    ]
    table = markdown_table(
        ["measure", "direct (1 replica)", "nginx", "loadbalancer.py", "comparison (target)", "target"], rows
    )
    update_readme("lb", f"{table}\n\nMedian of {n} interleaved rounds. {measured_line(started_load)}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description="loadbalancer.py vs nginx (throughput, added latency, failover)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk / traffic_gen run (default 10)")
    args = parser.parse_args()
    started_load = loadavg()
    run_dir = temp_run_dir("lb")
    bench = Bench(run_dir)
    print(f"lb bench in {run_dir}; load average {started_load}")
    with ExitStack() as stack:
        stack.callback(bench.procs.stop_all)
        bench.start(stack)
        targets = ("direct", "nginx", "ours")
        print("part 1: wrk throughput")
        tp = interleaved(args.rounds, [(t, lambda i, t=t: throughput(bench, t, args.duration)) for t in targets])
        print("part 2: open loop 300 req/s")
        lat = interleaved(
            args.rounds, [(t, lambda i, t=t: open_loop(bench.urls()[t], args.duration, seed=i)) for t in targets]
        )
        print("part 3: failover")
        fo = interleaved(
            args.rounds, [(t, lambda i, t=t: failover_run(bench, t, args.duration, seed=i)) for t in ("nginx", "ours")]
        )
    rounds = {"throughput": tp, "latency": lat, "failover": fo}
    summary = report(rounds, started_load)
    path = write_results(
        "lb",
        {
            "loadavg_at_start": started_load,
            "summary": summary,
            "rounds": rounds,
            "settings": {
                "rounds": args.rounds,
                "duration_s": args.duration,
                "wrk": f"-t{WRK_THREADS} -c{WRK_CONNECTIONS}",
                "open_loop_rps": OPEN_LOOP_RPS,
                "kill_at_s": KILL_AT_S,
                "restart_at_s": RESTART_AT_S,
            },
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
