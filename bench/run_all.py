"""Run every benchmark (or a subset) one after another.

    python bench/run_all.py [--only lb,gen,ingest,investigation,e2e,ha]

Each benchmark runs as its own process (bench/<name>_bench.py) so one failing does not stop the
others; each writes bench/results/<name>.json and its table in bench/README.md. Exit status 1 when
any benchmark failed to run (a missed target is reported in the tables, not as a failure).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time

from common import BENCH_DIR, REPO_ROOT, loadavg

BENCHMARKS = {
    "lb": "lb_bench.py",
    "gen": "gen_bench.py",
    "ingest": "ingest_bench.py",
    "investigation": "investigation_bench.py",
    "e2e": "e2e_bench.py",
    "ha": "ha_bench.py",
}
TIME_LIMIT_S = 900  # per benchmark; each is bounded well below this


def run_one(script: str) -> int:
    """Run bench/<script>; past TIME_LIMIT_S it gets SIGINT (its cleanup stops what it started), then SIGKILL."""
    proc = subprocess.Popen([sys.executable, str(BENCH_DIR / script)], cwd=REPO_ROOT)
    try:
        return proc.wait(timeout=TIME_LIMIT_S)
    except subprocess.TimeoutExpired:
        print(f"{script} exceeded {TIME_LIMIT_S} s: interrupting it", flush=True)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return -1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {', '.join(BENCHMARKS)}"
    )
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; choose from {', '.join(BENCHMARKS)}")
    failed = []
    for name in chosen:
        print(f"=== {name} (load average {loadavg()})", flush=True)
        started = time.monotonic()
        code = run_one(BENCHMARKS[name])
        print(
            f"=== {name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {time.monotonic() - started:.0f} s",
            flush=True,
        )
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
