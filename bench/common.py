"""Shared helpers of the benchmarks: interleaved rounds, medians, wrk and nginx runners, CPU accounting,
JSON results and the markdown tables in ``bench/README.md``.

Conventions: times in seconds unless a name says ``_ms`` / ``_us``; ratios are plain floats (1.0 = equal);
every process is started through ``stackctl.processes.ProcessGroup`` and stopped by PID; every load
goes to 127.0.0.1 and is bounded in time.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `python bench/x.py` puts bench/ first on sys.path, not the repository
    sys.path.insert(0, str(REPO_ROOT))

from stackctl.processes import ProcessGroup, find_binary, free_port, port_is_free, wait_http_ok, wait_until  # noqa: E402

BENCH_DIR = REPO_ROOT / "bench"
RESULTS_DIR = BENCH_DIR / "results"
README = BENCH_DIR / "README.md"
NGINX_DIR = BENCH_DIR / "nginx"
WRK_SCRIPT = BENCH_DIR / "wrk_json.lua"
WRK_MARKER = "WRKJSON "
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- machine state and CPU


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages from /proc/loadavg (the machine is shared: record it with each result)."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in CPU seconds, from /proc/<pid>/stat (fields 14 and 15, clock ticks; proc(5)).

    Raises:
        FileNotFoundError: the process no longer exists.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may contain spaces; fields start at 3
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def child_pids(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (e.g. nginx workers of the master), from /proc/*/stat field 4."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            children.append(int(entry.name))
    return children


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its direct children (nginx master + workers); vanished children count 0."""
    total = 0.0
    for one in [pid, *child_pids(pid)]:
        with contextlib.suppress(OSError):
            total += proc_cpu_seconds(one)
    return total


# ---------------------------------------------------------------- rounds and statistics


def interleaved(
    rounds: int, variants: Sequence[tuple[str, Callable[[int], dict[str, Any]]]], log: Callable[[str], None] = print
) -> dict[str, list[dict[str, Any]]]:
    """Run every variant once per round, in order (A B C A B C ...), so all share the same noise.

    Args:
        rounds: number of rounds (3 for a median of 3).
        variants: ``(name, run)`` pairs; ``run(round_index)`` returns a dict of figures.
    Returns:
        ``{name: [figures of round 0, round 1, ...]}``; each figures dict gets ``round`` and ``loadavg``.
    """
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    for index in range(rounds):
        for name, run in variants:
            figures = run(index)
            figures.update(round=index, loadavg=loadavg())
            results[name].append(figures)
            log(f"  round {index + 1}/{rounds} {name}: {summarise(figures)}")
    return results


def summarise(figures: dict[str, Any]) -> str:
    """Short one-line view of a figures dict (top-level numbers only) for progress output."""
    parts = [
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in figures.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("round",)
    ]
    return " ".join(parts[:8])


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence of numbers."""
    return float(statistics.median(values))


def median_of(runs: Sequence[dict[str, Any]], *path: str) -> float:
    """Median over ``runs`` of the number at key ``path`` (e.g. ``median_of(runs, "latency_ms", "p99")``)."""
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value[key]
        values.append(float(value))
    return median(values)


# ---------------------------------------------------------------- results and README tables


def write_results(name: str, data: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` with ``data`` plus machine metadata; return the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "loadavg_at_end": loadavg(),
        },
        **data,
    }
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats are shown with up to 3 significant decimals."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.2f}" if abs(value) >= 100 else f"{value:.3g}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    """Table cell for a target check."""
    return "met" if ok else "**missed**"


def update_readme(section: str, text: str) -> None:
    """Replace the text between ``<!-- bench:<section>:begin -->`` and ``<!-- bench:<section>:end -->``
    in bench/README.md.

    Raises:
        ValueError: the markers are missing (the README is hand-written around them).
    """
    begin, end = f"<!-- bench:{section}:begin -->", f"<!-- bench:{section}:end -->"
    content = README.read_text()
    if begin not in content or end not in content:
        raise ValueError(f"bench/README.md has no {begin} ... {end} markers")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    README.write_text(f"{head}{begin}\n{text.strip()}\n{end}{tail}")


def measured_line(started_load: list[float]) -> str:
    """The "measured on" line under a table: date, CPUs and the load average before and after."""
    return (
        f"_Measured {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} CPUs; load average "
        f"{started_load[0]:.2f} before, {loadavg()[0]:.2f} after (1 min)._"
    )


# ---------------------------------------------------------------- wrk


def run_wrk(url: str, threads: int, connections: int, duration_s: float, timeout_s: float = 5.0) -> dict[str, Any]:
    """Run ``wrk -t<threads> -c<connections> -d<duration>s --latency`` with bench/wrk_json.lua and return its figures.

    Returns:
        {"requests", "rps", "duration_s", "latency_ms": {"p50","p90","p99","max","mean"},
         "errors": {"connect","read","write","status","timeout"}} (``status``: non-2xx/3xx responses).
    Raises:
        RuntimeError: wrk is missing or printed no JSON line.
    """
    binary = find_binary("wrk")
    if binary is None:
        raise RuntimeError("wrk not found: `sudo apt-get install wrk` (or `make bench`, which installs it)")
    args = [
        binary,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        f"--timeout={timeout_s:g}s",
        "--latency",
        "-s",
        str(WRK_SCRIPT),
        url,
    ]
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration_s + 30)
    line = next((text for text in out.stdout.splitlines() if text.startswith(WRK_MARKER)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result (exit {out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    raw = json.loads(line[len(WRK_MARKER) :])
    duration = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "rps": raw["requests"] / duration if duration else 0.0,
        "duration_s": duration,
        "latency_ms": {k: v / 1000 for k, v in raw["latency_us"].items()},
        "errors": raw["errors"],
    }


# ---------------------------------------------------------------- nginx


def render_nginx(template: str, run_dir: Path, **values: Any) -> Path:
    """Write bench/nginx/<template> to ``run_dir/nginx.conf`` with ``{{name}}`` tokens replaced by ``values``.

    ``run_dir`` and, for root, the ``user`` directive are filled in automatically.
    """
    text = (NGINX_DIR / template).read_text()
    values = {"run_dir": str(run_dir), "user_directive": "user root;" if os.geteuid() == 0 else "", **values}
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", str(value))
    if "{{" in text:
        raise ValueError(f"unfilled token in {template}: {text[text.index('{{') :][:40]}")
    path = run_dir / "nginx.conf"
    path.write_text(text)
    return path


@contextmanager
def nginx(procs: ProcessGroup, template: str, port: int, run_dir: Path, **values: Any) -> Iterator[subprocess.Popen]:
    """Run nginx (non-daemon child, pid and logs in ``run_dir``) with a bench/nginx template listening on ``port``.

    Stopped by PID (SIGQUIT graceful, then SIGTERM/SIGKILL through ProcessGroup) when the block ends.
    Raises:
        RuntimeError: nginx is missing or does not answer on ``port`` within 10 s.
    """
    binary = find_binary("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        raise RuntimeError("nginx not found: `sudo apt-get install nginx-light` (or `make bench`)")
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o755)
    conf = render_nginx(template, run_dir, port=port, **values)
    proc = procs.start(
        f"nginx-{port}",
        [
            binary,
            "-p",
            str(run_dir),
            "-c",
            str(conf),
            "-e",
            str(run_dir / "error.log"),
            "-g",
            f"daemon off; pid {run_dir / 'nginx.pid'};",
        ],
    )
    try:
        wait_until(lambda: proc.poll() is None and not port_is_free(port), 10, 0.05, f"nginx on :{port}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                procs.stop(proc)


# ---------------------------------------------------------------- inventory replicas


def start_replica(procs: ProcessGroup, run_dir: Path, port: int, name: str, wait: bool = True) -> subprocess.Popen:
    """Start one inventory_service.py replica on ``port`` (SQLite file in ``run_dir``, no random failures,
    so every non-2xx in a benchmark is the component's fault); with ``wait``, until /healthz answers."""
    env = {
        "INVENTORY_DB": str(run_dir / "inventory.db"),
        "LOG_DIR": str(run_dir / "logs"),
        "RANDOM_FAILURE_RATIO": "0",
        "REPLICA": name,
    }
    proc = procs.start(name, [sys.executable, "inventory_service.py", "--port", str(port)], env=env)
    if wait:
        wait_http_ok(f"http://127.0.0.1:{port}/healthz", timeout=30)
    return proc


def start_loadbalancer(procs: ProcessGroup, run_dir: Path, port: int, backends: Sequence[str]) -> subprocess.Popen:
    """Start loadbalancer.py (uvicorn via ``python loadbalancer.py``) over static ``backends``; wait until it
    proxies."""
    env = {"LB_BACKENDS": ",".join(backends), "LB_ACCESS_LOG": str(run_dir / "loadbalancer_access.log"), "PM_URL": None}
    proc = procs.start(f"loadbalancer-{port}", [sys.executable, "loadbalancer.py", "--port", str(port)], env=env)
    wait_http_ok(f"http://127.0.0.1:{port}/items/1", timeout=30)
    return proc


# ---------------------------------------------------------------- profiling


def start_py_spy(
    procs: ProcessGroup, pid: int, duration_s: float, out: Path, rate_hz: int = 200
) -> subprocess.Popen | None:
    """Sample ``pid`` with py-spy (``pip install py-spy``) for ``duration_s`` into a raw (collapsed stacks)
    file ``out``; returns the py-spy process, or None when py-spy is not installed."""
    binary = find_binary("py-spy") or (
        str(Path(sys.executable).parent / "py-spy") if (Path(sys.executable).parent / "py-spy").exists() else None
    )
    if binary is None:
        print("py-spy not installed (`.venv/bin/pip install py-spy`): no profile")
        return None
    return procs.start(
        "py-spy",
        [
            binary,
            "record",
            "-p",
            str(pid),
            "-o",
            str(out),
            "-f",
            "raw",
            "-d",
            str(int(duration_s)),
            "-r",
            str(rate_hz),
            "--nonblocking",
        ],
    )


OUR_CODE = (
    "(oncall/",
    "(on_call_agent.py",
    "(loadbalancer.py",
    "(traffic_gen.py",
    "(inventory_service.py",
    "(process_manager.py",
)


def summarise_profile(raw: Path, top: int = 12) -> dict[str, Any]:
    """Top frames of a py-spy raw profile (samples of a busy process; idle time is not sampled).

    Returns {"samples", "own": [[frame, share 0-1], ...] (leaf frames, any code), "ours_inclusive":
    [[frame, share], ...] (frames of this repository's files, with everything they call),
    "ours_own_share": share of samples whose leaf frame is this repository's code}.
    """
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n

    def ours(frame: str) -> bool:
        return any(marker in frame for marker in OUR_CODE)

    def ranked(counts: dict[str, int], keep: Callable[[str], bool]) -> list[list[Any]]:
        rows = sorted(((f, c / total) for f, c in counts.items() if keep(f)), key=lambda r: -r[1])
        return [[frame, round(share, 4)] for frame, share in rows[:top]]

    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "own": ranked(own, lambda f: True),
        "ours_inclusive": ranked(inclusive, ours),
        "ours_own_share": round(sum(c for f, c in own.items() if ours(f)) / total, 4),
    }


def temp_run_dir(prefix: str) -> Path:
    """A fresh temporary folder for one benchmark's configs, databases and logs."""
    return Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))


__all__ = [
    "REPO_ROOT",
    "RESULTS_DIR",
    "ProcessGroup",
    "free_port",
    "wait_http_ok",
    "wait_until",
    "loadavg",
    "proc_cpu_seconds",
    "tree_cpu_seconds",
    "interleaved",
    "median",
    "median_of",
    "write_results",
    "markdown_table",
    "verdict",
    "update_readme",
    "measured_line",
    "run_wrk",
    "nginx",
    "start_replica",
    "start_loadbalancer",
    "temp_run_dir",
    "start_py_spy",
    "summarise_profile",
]
