"""Start and stop the whole demo stack as child processes on 127.0.0.1, one log file each.

Order: process manager -> replicas (``POST /scale``) -> load balancer -> Alertmanager ->
Prometheus -> agent; each is waited for until healthy. ``stop()`` stops them by PID, newest
first; the process manager stops its replicas itself on SIGTERM.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from stackctl.config import StackPorts, render_alertmanager, render_prometheus, render_rules
from stackctl.processes import (
    REPO_ROOT,
    ProcessGroup,
    find_binary,
    free_port,
    free_port_block,
    port_is_free,
    wait_http_ok,
)

# Variables that connect the agent to real accounts; an isolated stack (tests, benchmarks) removes them.
INTEGRATION_VARIABLES = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_WHATSAPP_FROM",
    "TWILIO_API_BASE_URL",
    "ONCALL_WHATSAPP_NUMBERS",
    "JIRA_BASE_URL",
    "JIRA_EMAIL",
    "JIRA_API_TOKEN",
    "JIRA_PROJECT_KEY",
    "GITHUB_TOKEN",
    "GITHUB_REPO",
    "ALERTS_BEARER_TOKEN",
    "PUBLIC_BASE_URL",
)


class StackError(RuntimeError):
    """The stack cannot start: a port is in use, a binary is missing, or a component is not healthy."""


@dataclass
class Stack:
    """One running demo stack.

    Args:
        run_dir: folder for rendered configs, data and one log file per process.
        ports: the ports to bind (defaults are the documented ones).
        timing: alert-timing override (see ``stackctl/demo_timing.yaml``) or None for the shipped timing.
        agent_env: extra environment for the agent (a ``None`` value removes a variable).
        isolated: when True the agent ignores ``.env`` and every integration variable (offline engine,
            console channel), so tests and benchmarks never reach real accounts.
    """

    run_dir: Path
    ports: StackPorts = field(default_factory=StackPorts)
    timing: dict | None = None
    agent_env: dict[str, str | None] = field(default_factory=dict)
    isolated: bool = False

    def __post_init__(self) -> None:
        self.run_dir = self.run_dir.resolve()
        self.log_dir = self.run_dir / "logs"
        self.procs = ProcessGroup(self.log_dir)
        self.targets_file = self.run_dir / "inventory_targets.json"

    def url(self, component: str) -> str:
        """Base URL of ``pm``, ``lb``, ``prometheus``, ``alertmanager`` or ``agent``."""
        return f"http://127.0.0.1:{getattr(self.ports, component)}"

    def preflight(self) -> dict[str, str]:
        """Find the Prometheus and Alertmanager binaries and check every port is free.

        Returns ``{"prometheus": path, "alertmanager": path}``. Raises StackError naming what is missing or busy.
        """
        binaries = {
            "prometheus": find_binary("prometheus"),
            "alertmanager": find_binary("prometheus-alertmanager", "alertmanager"),
        }
        missing = [name for name, path in binaries.items() if path is None]
        if missing:
            raise StackError(
                f"{' and '.join(missing)} not found on PATH. Install them with "
                "`sudo apt-get install prometheus prometheus-alertmanager` (Debian/Ubuntu) or from prometheus.io, "
                "or run `make deps`."
            )
        busy = [port for port in self.ports.all_ports() if not port_is_free(port)]
        if busy:
            raise StackError(
                f"ports already in use on 127.0.0.1: {busy}. Another stack (or an old demo) is running: "
                f"stop it (`make stop-demo`, or `ss -ltnp` to find the PID) and try again."
            )
        return binaries  # type: ignore[return-value]

    def start(self, replicas: int = 2, step: Callable[[str], None] = lambda message: None) -> None:
        """Start every component and wait until each is healthy; on failure stop what started and raise StackError."""
        binaries = self.preflight()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_pm(replicas, step)
            self._start_lb(step)
            self._start_alertmanager(binaries["alertmanager"], step)
            self._start_prometheus(binaries["prometheus"], step)
            self._start_agent(step)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every process by PID (SIGTERM, then SIGKILL after a grace period), newest first."""
        self.procs.stop_all()

    def _wait(self, name: str, url: str, timeout: float = 30.0) -> None:
        try:
            wait_http_ok(url, timeout=timeout)
        except TimeoutError as exc:
            tail = "\n".join(self.procs.log_text(name).splitlines()[-15:])
            raise StackError(
                f"{name} did not become healthy at {url} within {timeout:.0f}s; see {self.procs.log_path(name)}\n{tail}"
            ) from exc

    def _start_pm(self, replicas: int, step: Callable[[str], None]) -> None:
        env = {
            "PM_BASE_PORT": str(self.ports.replica_base),
            "TARGETS_FILE": str(self.targets_file),
            "INVENTORY_DB": str(self.run_dir / "inventory.db"),
            "LOG_DIR": str(self.log_dir),
        }
        self.procs.start(
            "process_manager", [sys.executable, "process_manager.py", "--port", str(self.ports.pm)], env=env
        )
        self._wait("process_manager", f"{self.url('pm')}/healthz")
        step(f"process manager up on :{self.ports.pm}")
        response = httpx.post(f"{self.url('pm')}/scale", json={"replicas": replicas}, timeout=60.0)
        if not response.is_success:
            raise StackError(f"scaling to {replicas} replicas failed: {response.status_code} {response.text}")
        step(
            f"{replicas} inventory replicas healthy on :{self.ports.replica_base + 1}-{self.ports.replica_base + replicas}"
        )

    def _start_lb(self, step: Callable[[str], None]) -> None:
        env = {
            "PM_URL": self.url("pm"),
            "LB_REFRESH_SEC": "1",
            "LB_ACCESS_LOG": str(self.log_dir / "loadbalancer_access.log"),
        }
        args = [
            sys.executable,
            "-m",
            "uvicorn",
            "loadbalancer:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.ports.lb),
            "--no-access-log",
            "--no-proxy-headers",
            "--log-level",
            "warning",
        ]
        self.procs.start("loadbalancer", args, env=env)
        self._wait("loadbalancer", f"{self.url('lb')}/items/1")
        step(f"load balancer up on :{self.ports.lb}")

    def _start_alertmanager(self, binary: str, step: Callable[[str], None]) -> None:
        config = render_alertmanager(self.run_dir, self.ports, self.timing)
        args = [
            binary,
            f"--config.file={config}",
            f"--storage.path={self.run_dir / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{self.ports.alertmanager}",
            "--cluster.listen-address=",
        ]
        self.procs.start("alertmanager", args)
        self._wait("alertmanager", f"{self.url('alertmanager')}/-/ready")
        step(f"Alertmanager up on :{self.ports.alertmanager}")

    def prometheus_config(self) -> Path:
        """Render this run's rules and Prometheus config into ``run_dir``; return the config's path.

        A hook: ``stackctl.ha_stack.HAStack`` adjusts the copy (every Alertmanager peer, every agent replica).
        """
        rules = render_rules(self.run_dir, self.timing)
        return render_prometheus(self.run_dir, self.ports, self.targets_file, rules, self.timing)

    def _start_prometheus(self, binary: str, step: Callable[[str], None]) -> None:
        config = self.prometheus_config()
        args = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.run_dir / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{self.ports.prometheus}",
            "--storage.tsdb.retention.time=1d",
        ]
        self.procs.start("prometheus", args)
        self._wait("prometheus", f"{self.url('prometheus')}/-/ready")
        step(f"Prometheus up on :{self.ports.prometheus}")

    def agent_environment(self) -> dict[str, str | None]:
        """Environment of the agent process: this stack's URLs, its own database, and ``agent_env``.

        ``PUBLIC_BASE_URL`` (the URL Twilio signs) is left to the user's settings unless isolated.
        """
        env: dict[str, str | None] = {}
        if self.isolated:
            env = {name: None for name in INTEGRATION_VARIABLES}
            env["ONCALL_ENV_FILE"] = str(self.run_dir / "no.env")
            env["PUBLIC_BASE_URL"] = self.url("agent")
        env.update(
            {
                "DATABASE_PATH": str(self.run_dir / "oncall.db"),
                "LB_URL": self.url("lb"),
                "PROMETHEUS_URL": self.url("prometheus"),
                "PM_URL": self.url("pm"),
                "CODE_ROOT": str(REPO_ROOT),
            }
        )
        env.update(self.agent_env)
        return env

    def _start_agent(self, step: Callable[[str], None]) -> None:
        args = [
            sys.executable,
            "-m",
            "uvicorn",
            "on_call_agent:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.ports.agent),
            "--log-level",
            "info",
        ]
        self.procs.start("agent", args, env=self.agent_environment())
        self._wait("agent", f"{self.url('agent')}/healthz")
        step(f"on-call agent up on :{self.ports.agent}")


def free_stack_ports() -> StackPorts:
    """Ports for an isolated stack (tests, benchmarks): random free ones, replicas in a free block."""
    return StackPorts(
        pm=free_port(),
        lb=free_port(),
        prometheus=free_port(),
        alertmanager=free_port(),
        agent=free_port(),
        replica_base=free_port_block(10),
    )
