"""Helpers shared by the test suite: free loopback ports, child processes, HTTP polling.

Every process a test starts is registered here and stopped by its PID (SIGTERM, then
SIGKILL after a grace period) so no test leaves an orphan or a busy port behind.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"
LOCAL_FIXTURES = REPO_ROOT / "tests" / "fixtures"
PYTHON = sys.executable


def fixture_path(relative: str) -> Path:
    """Return the path of a third-party fixture, preferring the copy kept in tests/fixtures/.

    Args:
        relative: path below ``fixtures/``, e.g. ``"alertmanager/req_001.json"``.
    Raises:
        FileNotFoundError: when neither tests/fixtures nor ../shared/fixtures has it.
    """
    for base in (LOCAL_FIXTURES, SHARED_FIXTURES):
        candidate = base / relative
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"fixture {relative!r} not found in {LOCAL_FIXTURES} or {SHARED_FIXTURES}")


def load_json_fixture(relative: str) -> Any:
    """Parse a JSON fixture (see ``fixture_path``)."""
    return json.loads(fixture_path(relative).read_text())


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_block(size: int, start: int = 20000, end: int = 60000) -> int:
    """Return a base port B such that B+1 .. B+size are all free on 127.0.0.1."""
    import random

    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        base = rng.randrange(start, end - size - 1)
        if all(port_is_free(base + i) for i in range(1, size + 1)):
            return base
    raise RuntimeError(f"no block of {size} free ports found")


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port and it can be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value; return that value.

    Raises:
        TimeoutError: when ``timeout`` seconds pass first (the message names ``what``).
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - polling tolerates transient errors
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last error: {last_error!r}")


def wait_http_ok(url: str, timeout: float = 20.0) -> httpx.Response:
    """Wait until GET ``url`` answers 2xx; return the response."""

    def probe() -> httpx.Response | None:
        response = httpx.get(url, timeout=2.0)
        return response if response.is_success else None

    return wait_until(probe, timeout, what=f"GET {url} -> 2xx")


class ProcessGroup:
    """Child processes started by one test, each stopped by PID at ``stop_all``."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
        """Start ``args`` with stdout/stderr in ``log_dir/<name>.log``; extra ``env`` is merged into os.environ."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=str(cwd or REPO_ROOT))
        log.close()
        self.procs.append((name, proc))
        return proc

    def log_text(self, name: str) -> str:
        """Return what the named process wrote so far (for assertion messages)."""
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, proc: subprocess.Popen, grace: float = 10.0) -> None:
        """SIGTERM ``proc`` by PID, SIGKILL it if it is still alive after ``grace`` seconds."""
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def stop_all(self) -> None:
        """Stop every process started through this group, newest first."""
        for _, proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()
