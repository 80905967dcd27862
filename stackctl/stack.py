"""Start and stop the whole demo stack as child processes on 127.0.0.1, one log file each.

Order: process manager -> replicas (``POST /scale``) -> load balancer -> payments instances ->
Alertmanager -> Prometheus -> agent; each is waited for until healthy. ``stop()`` stops them by
PID, newest first; the process manager stops its replicas itself on SIGTERM. The payments
instances have no supervisor: they are started directly and stopped by their own PIDs.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from stackctl.config import (
    MAX_PAYMENTS_INSTANCES,
    PAYMENTS_INSTANCES,
    StackPorts,
    payments_instance_name,
    render_alertmanager,
    render_prometheus,
    render_rules,
)
from stackctl.processes import (
    REPO_ROOT,
    ProcessGroup,
    agent_command,
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
        replica_env: extra environment for the process manager, which passes it to every inventory replica
            (e.g. ``BACKEND_TIME_MS`` for a fixed replica capacity, see ``inventory_service.ServiceSettings``).
        isolated: when True the agent ignores ``.env`` and every integration variable (offline engine,
            console channel), so tests and benchmarks never reach real accounts.
        payments_instances: payments_service.py instances to start, 0..9 (0: none, and no ``payments``
            scrape job). Instance N is named ``payments-N``, listens on ``ports.payments_base + N`` and
            writes its plain-text log to ``run_dir/logs/payments/payments-N.log``.
        api_token: the agent's ``ONCALL_API_TOKEN`` (default: a new random one per stack); callers of
            ``/incidents`` send ``api_headers()``.

    Raises:
        ValueError: for ``payments_instances`` outside 0..9.
    """

    run_dir: Path
    ports: StackPorts = field(default_factory=StackPorts)
    timing: dict | None = None
    agent_env: dict[str, str | None] = field(default_factory=dict)
    replica_env: dict[str, str] = field(default_factory=dict)
    isolated: bool = False
    payments_instances: int = PAYMENTS_INSTANCES
    api_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def __post_init__(self) -> None:
        if not 0 <= self.payments_instances <= MAX_PAYMENTS_INSTANCES:
            raise ValueError(f"payments_instances must be 0..{MAX_PAYMENTS_INSTANCES}, got {self.payments_instances}")
        self.run_dir = self.run_dir.resolve()
        self.log_dir = self.run_dir / "logs"
        self.payments_log_dir = self.log_dir / "payments"
        self.procs = ProcessGroup(self.log_dir)
        self.targets_file = self.run_dir / "inventory_targets.json"

    def url(self, component: str) -> str:
        """Base URL of ``pm``, ``lb``, ``prometheus``, ``alertmanager`` or ``agent``."""
        return f"http://127.0.0.1:{getattr(self.ports, component)}"

    def api_headers(self) -> dict[str, str]:
        """The ``Authorization`` header the agent's incident API requires (``ONCALL_API_TOKEN``)."""
        return {"Authorization": f"Bearer {self.api_token}"}

    def payments_urls(self) -> list[str]:
        """Base URLs of the payments instances, instance 1 first (empty without payments)."""
        return [f"http://127.0.0.1:{self.ports.payments_port(n)}" for n in range(1, self.payments_instances + 1)]

    def payments_log_file(self, number: int) -> Path:
        """Current plain-text log of payments instance ``number`` (rotated copies: ``.1``, ``.2`` ...)."""
        return self.payments_log_dir / f"{payments_instance_name(number)}.log"

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
        busy = [
            port for port in self.ports.all_ports(payments_instances=self.payments_instances) if not port_is_free(port)
        ]
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
            self._start_payments(step)
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
        env: dict[str, str | None] = {
            "PM_BASE_PORT": str(self.ports.replica_base),
            "TARGETS_FILE": str(self.targets_file),
            "INVENTORY_DB": str(self.run_dir / "inventory.db"),
            "LOG_DIR": str(self.log_dir),
            **self.replica_env,
        }
        self.procs.start(
            "process_manager", [sys.executable, "process_manager.py", "--port", str(self.ports.pm)], env=env
        )
        self._wait("process_manager", f"{self.url('pm')}/healthz")
        step(f"process manager up on :{self.ports.pm}")
        response = httpx.post(f"{self.url('pm')}/scale", json={"replicas": replicas}, timeout=60.0)
        if not response.is_success:
            raise StackError(f"scaling to {replicas} replicas failed: {response.status_code} {response.text}")
        first, last = self.ports.replica_base + 1, self.ports.replica_base + replicas
        step(f"{replicas} inventory replicas healthy on :{first}-{last}")

    def _start_lb(self, step: Callable[[str], None]) -> None:
        env: dict[str, str | None] = {
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

    def _start_payments(self, step: Callable[[str], None]) -> None:
        """Start every payments instance directly (no supervisor), then wait until each is healthy.

        The service's own log goes to ``payments_log_dir``; its console output (uvicorn) to
        ``logs/payments-N.out.log``.
        """
        numbers = range(1, self.payments_instances + 1)
        for number in numbers:
            env: dict[str, str | None] = {
                "PORT": str(self.ports.payments_port(number)),
                "INSTANCE": payments_instance_name(number),
                "LOG_DIR": str(self.payments_log_dir),
                "PAYMENTS_DB": str(self.run_dir / "payments.db"),
            }
            args = [sys.executable, "payments_service.py", "--port", str(self.ports.payments_port(number))]
            self.procs.start(f"{payments_instance_name(number)}.out", args, env=env)
        for number, url in zip(numbers, self.payments_urls(), strict=True):
            self._wait(f"{payments_instance_name(number)}.out", f"{url}/healthz")
        if self.payments_instances:
            ports = ", ".join(f":{self.ports.payments_port(number)}" for number in numbers)
            step(f"{self.payments_instances} payments instances healthy on {ports}")

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
        return render_prometheus(
            self.run_dir, self.ports, self.targets_file, rules, self.timing, payments_instances=self.payments_instances
        )

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
                "PAYMENTS_LOG_DIR": str(self.payments_log_dir),
                "ONCALL_API_TOKEN": self.api_token,
            }
        )
        env.update(self.agent_env)
        return env

    def _start_agent(self, step: Callable[[str], None]) -> None:
        args = agent_command(self.ports.agent, "info")
        self.procs.start("agent", args, env=self.agent_environment())
        self._wait("agent", f"{self.url('agent')}/healthz")
        step(f"on-call agent up on :{self.ports.agent}")


def free_stack_ports() -> StackPorts:
    """Ports for an isolated stack (tests, benchmarks): random free ones; inventory replicas and
    payments instances each in their own free block (the two blocks never overlap), and no other port
    inside either block (a replica scaled up later binds its port in the block)."""
    replica_base = free_port_block(10)
    payments_base = _free_block_beside(replica_base, 10, MAX_PAYMENTS_INSTANCES)
    taken = set(range(replica_base + 1, replica_base + 11))
    taken |= set(range(payments_base + 1, payments_base + MAX_PAYMENTS_INSTANCES + 1))
    fixed = [_free_port_outside(taken) for _ in range(5)]
    pm, lb, prometheus, alertmanager, agent = fixed
    return StackPorts(
        pm=pm,
        lb=lb,
        prometheus=prometheus,
        alertmanager=alertmanager,
        agent=agent,
        replica_base=replica_base,
        payments_base=payments_base,
    )


def _free_port_outside(taken: set[int], attempts: int = 100) -> int:
    """A free port not in ``taken``, which it joins.

    Raises:
        RuntimeError: when none is found in ``attempts`` tries.
    """
    for _ in range(attempts):
        port = free_port()
        if port not in taken:
            taken.add(port)
            return port
    raise RuntimeError(f"no free port found outside {len(taken)} reserved ones")


def _free_block_beside(other_base: int, other_size: int, size: int, attempts: int = 50) -> int:
    """Base B of a free block B+1..B+size that does not overlap the block ``other_base``+1..+``other_size``.

    Raises:
        RuntimeError: when no such block is found in ``attempts`` tries.
    """
    for _ in range(attempts):
        base = free_port_block(size)
        if base + size <= other_base or base >= other_base + other_size:
            return base
    raise RuntimeError(f"no block of {size} free ports found beside {other_base + 1}-{other_base + other_size}")
