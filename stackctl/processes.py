"""Child processes started by PID, logged to files, always stopped by PID (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent


def agent_command(port: int, log_level: str = "info") -> list[str]:
    """The command line of one agent process: ``python -m uvicorn on_call_agent:app`` on 127.0.0.1:``port``
    with uvicorn's ``log_level`` (``info``, ``warning``, ...); run it with the repository as working directory."""
    return [sys.executable, "-m", "uvicorn", "on_call_agent:app", "--host", "127.0.0.1", "--port", str(port)] + [
        "--log-level",
        log_level,
    ]


class ProcessGroup:
    """Child processes started together and stopped together, newest first.

    Args:
        log_dir: folder for one ``<name>.log`` file per process (stdout and stderr).
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(
        self, name: str, args: list[str], env: dict[str, str | None] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen:
        """Start ``args`` with output in ``log_dir/<name>.log``.

        ``env`` is merged over ``os.environ``; a ``None`` value removes that variable for the child.
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        merged = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env = {key: value for key, value in merged.items() if value is not None}
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(  # noqa: S603 - argument lists built by the launcher, no shell
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=str(cwd or REPO_ROOT),
            )
        self.procs.append((name, proc))
        return proc

    def log_path(self, name: str) -> Path:
        """Path of the named process's log file."""
        return self.log_dir / f"{name}.log"

    def log_text(self, name: str) -> str:
        """What the named process wrote so far (for error messages and assertions)."""
        path = self.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""

    @staticmethod
    def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
        """SIGTERM ``proc`` by PID; SIGKILL it if it is still alive after ``grace`` seconds."""
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


def find_binary(*names: str) -> str | None:
    """Return the path of the first of ``names`` found on PATH (e.g. ``prometheus-alertmanager``, ``alertmanager``)."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


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


def wait_applied(agent_url: str, raw_id: int, api_headers: dict[str, str], timeout: float = 30.0) -> dict[str, Any]:
    """Wait until the agent at ``agent_url`` applied the webhook body ``raw_id`` (its ``POST /alerts`` answer):
    ``GET /alerts/{raw_id}`` (``api_headers`` carry ``ONCALL_API_TOKEN``) no longer says ``queued``; return
    that answer (``status`` accepted/duplicate/failed, ``incident_id``).

    Raises:
        TimeoutError: still queued (or unreadable) after ``timeout`` seconds.
    """
    url = f"{agent_url}/alerts/{raw_id}"

    def applied() -> dict[str, Any] | None:
        state: dict[str, Any] = httpx.get(url, headers=api_headers, timeout=10).raise_for_status().json()
        return state if state["status"] != "queued" else None

    result: dict[str, Any] = wait_until(applied, timeout, interval=0.05, what=f"{url} applied")
    return result


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


EPHEMERAL_PORTS_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL_LOW = 32768
"""Linux's default first ephemeral port, when ``EPHEMERAL_PORTS_FILE`` cannot be read."""


def ephemeral_port_low(path: Path = EPHEMERAL_PORTS_FILE) -> int:
    """The first port the kernel hands out to outgoing connections (``ip_local_port_range``, "low high";
    Linux ip-sysctl documentation), or DEFAULT_EPHEMERAL_LOW when the file is missing or unreadable."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_EPHEMERAL_LOW


def free_port_block(size: int, start: int = 20000, end: int | None = None) -> int:
    """Return a base port B such that B+1 .. B+size are all free on 127.0.0.1.

    The block lies in ``start`` .. ``end`` (default: below the ephemeral range, ``ephemeral_port_low``): a
    port bound later, when a replica is scaled up, is then never taken meanwhile by an outgoing connection
    (under a traffic surge the clients hold thousands of ephemeral ports).

    Raises:
        RuntimeError: when no free block is found in 200 tries.
    """
    if end is None:
        low = ephemeral_port_low()
        end = low if low > start + size + 1 else 60000  # an ephemeral range starting below ``start``: no way round
    rng = random.Random(os.getpid() ^ time.monotonic_ns())  # noqa: S311 - spreads port probes, not a secret
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
