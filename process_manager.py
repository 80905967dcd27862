"""Process manager (supervisor) for the inventory replicas of the demo stack.

Runs ``inventory_service.py`` replicas as child processes (replica ``inventory-N`` listens
on ``PM_BASE_PORT + N``, N = 1..10), keeps the desired count running, restarts crashed
replicas with exponential backoff, rolls deploys of a shipped service version one replica at a
time, writes the Prometheus file-SD targets file after every change and exposes a small HTTP API
(documented in README.md):

    POST /scale {"replicas": n}       POST /start [{"replicas": n}]      POST /stop
    POST /deploy {"version": v}       GET  /deploys                      POST /instances/{name}/restart
    GET  /instances                   GET  /backends                     POST /fault
    GET  /changes?since=&limit=       GET  /healthz                      GET  /metrics

Scale, start, stop, deploy and restart are operations: one runs at a time, another one asked for
meanwhile is refused with 409 (``GET /instances`` shows the one in progress).

Run: ``python process_manager.py --port 7070 --host 127.0.0.1``. Uvicorn handles SIGINT and
SIGTERM; the lifespan shutdown stops every child (SIGTERM, SIGKILL after 5 s) and writes an
empty targets file. Children also get SIGTERM from the kernel if the manager dies without
cleaning up (``prctl(PR_SET_PDEATHSIG)``).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import uvicorn
from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from inventory_service import DEFAULT_VERSION, SHIPPED_VERSIONS, FaultSpec, ServiceVersion

REPO_ROOT = Path(__file__).resolve().parent
INVENTORY_SCRIPT = REPO_ROOT / "inventory_service.py"
SERVICE = "inventory"
MAX_REPLICAS = 10
HEALTH_TIMEOUT_S = 20.0
STOP_GRACE_S = 5.0
# Seconds a replica is out of GET /backends before it is stopped for a deploy or a requested restart,
# so the load balancer (which refreshes its list every LB_REFRESH_SEC) sends it fewer new requests.
DRAIN_S = 1.0
SUPERVISOR_INTERVAL_S = 0.5
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 30.0
BACKOFF_RESET_AFTER_S = 60.0
CHANGES_MAXLEN = 1000
DEPLOYS_MAXLEN = 100
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

log = logging.getLogger("process_manager")
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

ReplicaState = Literal["starting", "running", "draining", "crashed", "restarting", "stopped"]
ChangeKind = Literal["scale", "start", "stop", "fault", "crash", "restart", "deploy"]
OperationKind = Literal["scale", "stop", "deploy", "restart"]
DeployStatus = Literal["running", "succeeded", "failed"]


class PMSettings(BaseSettings):
    """Process-manager settings from the environment (no .env file).

    Relative paths are resolved against REPO_ROOT, never the working directory.
    ``inventory_db`` and ``random_failure_ratio`` are passed through to replicas when set;
    ``service_version`` (SERVICE_VERSION) is the version replicas run until the first deploy.
    """

    model_config = SettingsConfigDict(extra="ignore")

    pm_base_port: int = Field(default=8000, ge=1, le=65535 - MAX_REPLICAS, alias="PM_BASE_PORT")
    targets_file: Path = Field(default=REPO_ROOT / "inventory_targets.json", alias="TARGETS_FILE")
    pm_initial_replicas: int = Field(default=0, ge=0, le=MAX_REPLICAS, alias="PM_INITIAL_REPLICAS")
    inventory_db: Path | None = Field(default=None, alias="INVENTORY_DB")
    log_dir: Path = Field(default=REPO_ROOT / "logs", alias="LOG_DIR")
    random_failure_ratio: float | None = Field(default=None, ge=0, le=1, alias="RANDOM_FAILURE_RATIO")
    service_version: ServiceVersion = Field(default=DEFAULT_VERSION, alias="SERVICE_VERSION")

    @field_validator("targets_file", "inventory_db", "log_dir")
    @classmethod
    def _anchor_to_repo(cls, value: Path | None) -> Path | None:
        return value if value is None or value.is_absolute() else REPO_ROOT / value


class ScaleRequest(BaseModel):
    """Body of POST /scale: the desired replica count, 0..10."""

    model_config = ConfigDict(extra="forbid")
    replicas: int = Field(ge=0, le=MAX_REPLICAS, strict=True)


class StartRequest(BaseModel):
    """Optional body of POST /start: the replica count to start, 1..10."""

    model_config = ConfigDict(extra="forbid")
    replicas: int = Field(ge=1, le=MAX_REPLICAS, strict=True)


class DeployRequest(BaseModel):
    """Body of POST /deploy: a shipped ``version`` (inventory_service.SHIPPED_VERSIONS; others -> 422).

    ``wait`` (default true): answer when every replica runs the version; false: answer 202 at once
    and follow the deploy in GET /deploys.
    """

    model_config = ConfigDict(extra="forbid")
    version: ServiceVersion
    wait: bool = True


class FaultRequest(FaultSpec):
    """Body of POST /fault: the inventory ``POST /faults`` body plus an optional target replica.

    Without ``replica`` the fault goes to every running replica.
    """

    replica: str | None = Field(default=None, pattern=r"^inventory-\d{1,2}$")


@dataclass
class Replica:
    """One replica slot ``inventory-N``; ``proc`` is the live child process, if any.

    Times are epoch seconds; ``backoff_s`` is the delay used before the latest restart;
    ``version`` is the service version of the latest process started (None before the first).
    """

    index: int
    port: int
    state: ReplicaState = "stopped"
    proc: subprocess.Popen | None = None
    version: str | None = None
    restarts: int = 0
    fault: dict[str, Any] = field(default_factory=lambda: {"mode": "none"})
    started_at: float | None = None
    last_exit_code: int | None = None
    last_error: str | None = None
    backoff_s: float = 0.0
    next_restart_at: float = 0.0

    @property
    def name(self) -> str:
        return f"{SERVICE}-{self.index}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """PID of the live child process, or None."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def alive(self) -> bool:
        """True while the child process exists and has not exited."""
        return self.pid is not None

    def to_dict(self) -> dict[str, Any]:
        """The GET /instances representation (``restarts`` counts the supervisor's crash restarts only)."""
        return {
            "name": self.name,
            "port": self.port,
            "url": self.url,
            "pid": self.pid,
            "state": self.state,
            "version": self.version,
            "restarts": self.restarts,
            "fault": self.fault,
            "started_at": self.started_at,
            "last_exit_code": self.last_exit_code,
            "last_error": self.last_error,
        }


@dataclass
class Operation:
    """The operation in progress: its kind, start time (epoch s) and kind-specific fields."""

    kind: OperationKind
    started_at: float
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """``{"kind", "started_at", ...detail}`` as in GET /instances ``operation``."""
        return {"kind": self.kind, "started_at": self.started_at, **self.detail}


@dataclass
class Deploy:
    """One rolling deploy. ``replicas`` lists the replicas moved to ``to_version`` so far, in order.

    ``status``: running, succeeded, or failed (``error`` says why; the replicas not yet moved keep
    their version). Times are epoch seconds.
    """

    id: int
    started_at: float
    from_version: str
    to_version: str
    finished_at: float | None = None
    replicas: list[str] = field(default_factory=list)
    status: DeployStatus = "running"
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The GET /deploys and POST /deploy representation."""
        return {
            "id": self.id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "replicas": list(self.replicas),
            "status": self.status,
            "error": self.error,
        }


class ReplicaStartError(RuntimeError):
    """A replica could not be started or did not become healthy (message says why)."""


class OperationInProgress(RuntimeError):
    """Another operation (scale, stop, deploy, restart) is running; answered 409 with it."""

    def __init__(self, operation: Operation) -> None:
        super().__init__(f"another operation is in progress: {operation.kind} since {operation.started_at:.3f}")
        self.operation = operation


class UnknownReplica(KeyError):
    """``name`` is not one of the desired replicas; answered 404 with the known names."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.detail = f"unknown replica {name!r}; known: {known}"


def port_is_free(port: int) -> bool:
    """True when 127.0.0.1:``port`` can be bound now (what the replica is about to do)."""
    try:
        socket.create_server(("127.0.0.1", port)).close()
    except OSError:
        return False
    return True


def write_targets_file(path: Path, replicas: list[Replica]) -> None:
    """Atomically write Prometheus file-SD JSON for ``replicas`` (temp file + os.replace).

    Format (Prometheus ``file_sd_config``): ``[{"targets": ["127.0.0.1:8001"], "labels": {"replica": "inventory-1"}}]``.
    """
    groups = [{"targets": [f"127.0.0.1:{r.port}"], "labels": {"replica": r.name}} for r in replicas]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as tmp:
            json.dump(groups, tmp, indent=2)
            tmp.write("\n")
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _child_preexec(parent_pid: int) -> None:
    """Runs in the forked child before exec: die with SIGTERM when the manager dies.

    PR_SET_PDEATHSIG fires when the *thread* that forked exits, so children must be spawned
    from the event-loop thread (never from an executor thread).
    """
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # the manager died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


class ReplicaManager:
    """Owns the replica processes, the change log, the deploy history, the targets file and the PM metrics.

    Every start or stop of a child happens under one asyncio lock (the supervisor task,
    ``supervise``, takes it every SUPERVISOR_INTERVAL_S seconds). On top of it, at most one
    operation (scale, stop, deploy, restart) runs at a time: ``operation()`` refuses a second.
    """

    def __init__(self, settings: PMSettings) -> None:
        self.settings = settings
        self.replicas: dict[int, Replica] = {}
        self.desired = 0
        self.remembered = 0  # last non-zero desired count, used by POST /start
        self.current_version: str = settings.service_version
        self.previous_version: str | None = None
        self.changes: deque[dict[str, Any]] = deque(maxlen=CHANGES_MAXLEN)
        self.changes_file = settings.log_dir / "process_manager_changes.log"
        self.deploys: deque[Deploy] = deque(maxlen=DEPLOYS_MAXLEN)
        self.deploy_count = 0
        self.lock = asyncio.Lock()
        self.current_operation: Operation | None = None
        self.background: set[asyncio.Task[Any]] = set()
        self.shutting_down = False
        self.http: httpx.AsyncClient | None = None
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.desired_gauge = Gauge(
            "pm_replicas_desired", "Replica count the manager keeps running.", registry=self.registry
        )
        self.running_gauge = Gauge("pm_replicas_running", "Replicas running and healthy.", registry=self.registry)
        self.running_gauge.set_function(lambda: len(self.backends()))
        self.restarts_total = Counter(
            "pm_replica_restarts_total",
            "Supervisor restarts of a crashed replica.",
            ["replica"],
            registry=self.registry,
        )
        self.crashes_total = Counter(
            "pm_replica_crashes_total",
            "Replica processes that exited without being asked to.",
            ["replica"],
            registry=self.registry,
        )

    # ----- bookkeeping -------------------------------------------------------------

    def record(self, kind: ChangeKind, replica: str | None, detail: dict[str, Any]) -> dict[str, Any]:
        """Append a change to the in-memory log and, as one JSON line, to the changes file."""
        now = time.time()
        entry = {
            "ts": now,
            "timestamp": datetime.fromtimestamp(now, UTC).isoformat(),
            "kind": kind,
            "replica": replica,
            "detail": detail,
        }
        self.changes.append(entry)
        try:
            with open(self.changes_file, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")
        except OSError as exc:
            log.error("cannot append to %s: %s", self.changes_file, exc)
        log.info("change %s %s %s", kind, replica or "-", detail)
        return entry

    def slot(self, index: int) -> Replica:
        """Return replica slot ``index`` (1..10), creating it on first use."""
        if index not in self.replicas:
            self.replicas[index] = Replica(index=index, port=self.settings.pm_base_port + index)
        return self.replicas[index]

    def by_name(self, name: str) -> Replica | None:
        """The known replica called ``name``, or None."""
        return next((r for r in self.replicas.values() if r.name == name), None)

    def desired_replica(self, name: str) -> Replica:
        """The desired replica (one of inventory-1..inventory-<desired>) called ``name``. Raises UnknownReplica."""
        desired = [self.slot(i) for i in range(1, self.desired + 1)]
        replica = next((r for r in desired if r.name == name), None)
        if replica is None:
            raise UnknownReplica(name, [r.name for r in desired])
        return replica

    def instances(self) -> list[dict[str, Any]]:
        """Every replica slot used so far, ordered by N."""
        return [self.replicas[i].to_dict() for i in sorted(self.replicas)]

    def backends(self) -> list[str]:
        """URLs of replicas that are running (passed their health check) and still alive."""
        return [r.url for i, r in sorted(self.replicas.items()) if r.state == "running" and r.alive()]

    def sync_targets(self) -> None:
        """Rewrite the file-SD targets file with every desired replica; update the desired gauge."""
        self.desired_gauge.set(self.desired)
        write_targets_file(self.settings.targets_file, [self.slot(i) for i in range(1, self.desired + 1)])

    def get_changes(self, since: float | None, limit: int) -> list[dict[str, Any]]:
        """Changes newer than ``since`` (epoch s), newest first, at most ``limit``."""
        selected = [c for c in reversed(self.changes) if since is None or c["ts"] > since]
        return selected[:limit]

    def deploy_history(self) -> dict[str, Any]:
        """GET /deploys: current and previous version, the shipped versions and the deploys newest first."""
        return {
            "current_version": self.current_version,
            "previous_version": self.previous_version,
            "versions": list(SHIPPED_VERSIONS),
            "deploys": [d.to_dict() for d in self.deploys],
        }

    def claim(self, kind: OperationKind, **detail: Any) -> Operation:
        """Take the single operation slot; give it back with ``release``.

        Raises:
            OperationInProgress: another operation holds it (checked and taken without awaiting,
                so two requests can never both get it).
        """
        if self.current_operation is not None:
            raise OperationInProgress(self.current_operation)
        self.current_operation = Operation(kind, time.time(), detail)
        return self.current_operation

    def release(self, operation: Operation) -> None:
        """Give back the slot taken by ``claim`` (a no-op when ``operation`` no longer holds it)."""
        if self.current_operation is operation:
            self.current_operation = None

    @contextmanager
    def operation(self, kind: OperationKind, **detail: Any) -> Iterator[Operation]:
        """Hold the operation slot for the ``with`` body (``claim`` then ``release``). Raises OperationInProgress."""
        operation = self.claim(kind, **detail)
        try:
            yield operation
        finally:
            self.release(operation)

    def set_version(self, version: str) -> None:
        """Make ``version`` the one new replicas start on; the one it replaces becomes ``previous_version``."""
        if version != self.current_version:
            self.previous_version = self.current_version
            self.current_version = version

    def run_in_background(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run ``coroutine`` as a task the manager cancels at shutdown."""
        task = asyncio.create_task(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # ----- child processes ---------------------------------------------------------

    def _child_env(self, replica: Replica, version: str) -> dict[str, str]:
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "SERVICE": SERVICE,
            "SERVICE_VERSION": version,
            "PORT": str(replica.port),
            "REPLICA": replica.name,
            "LOG_DIR": str(self.settings.log_dir),
        }
        if self.settings.inventory_db is not None:
            env["INVENTORY_DB"] = str(self.settings.inventory_db)
        if self.settings.random_failure_ratio is not None:
            env["RANDOM_FAILURE_RATIO"] = str(self.settings.random_failure_ratio)
        return env

    def _spawn(self, replica: Replica, version: str) -> subprocess.Popen:
        """Start the child for ``replica`` on ``version`` (stdout/stderr appended to LOG_DIR/inventory-N.log).

        Raises:
            ReplicaStartError: when the manager is shutting down or the port is taken.
        """
        if self.shutting_down:
            raise ReplicaStartError("process manager is shutting down")
        # Export the per-replica counters at 0 before any crash, so increase()/rate() see the first one.
        self.crashes_total.labels(replica=replica.name)
        self.restarts_total.labels(replica=replica.name)
        if not port_is_free(replica.port):
            raise ReplicaStartError(
                f"port {replica.port} is already in use by another process; {replica.name} not started"
            )
        parent_pid = os.getpid()
        with open(self.settings.log_dir / f"{replica.name}.log", "ab") as out:
            proc = subprocess.Popen(  # noqa: S603 - fixed argv: this interpreter, the service script, an int port
                [sys.executable, str(INVENTORY_SCRIPT), "--port", str(replica.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._child_env(replica, version),
                cwd=str(REPO_ROOT),
                start_new_session=True,  # a terminal Ctrl-C reaches only the manager, which stops children itself
                preexec_fn=lambda: _child_preexec(parent_pid),
            )
        replica.proc = proc
        replica.started_at = time.time()
        replica.last_exit_code = None
        return proc

    async def _wait_healthy(self, replica: Replica, proc: subprocess.Popen) -> dict[str, Any]:
        """Poll ``GET /healthz`` of ``replica`` until our child ``proc`` answers; return the body.

        Raises:
            ReplicaStartError: the child exited, or HEALTH_TIMEOUT_S seconds passed.
        """
        assert self.http is not None
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ReplicaStartError(
                    f"{replica.name} exited with code {proc.returncode} during start-up; "
                    f"see {self.settings.log_dir / (replica.name + '.log')}"
                )
            try:
                response = await self.http.get(f"{replica.url}/healthz")
                body = response.json()
                if response.status_code == 200 and body.get("pid") == proc.pid:
                    return body
                last_error = f"HTTP {response.status_code} pid={body.get('pid')}"
            except (httpx.HTTPError, ValueError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.1)
        raise ReplicaStartError(f"{replica.name} not healthy after {HEALTH_TIMEOUT_S:.0f} s ({last_error})")

    async def _terminate(self, proc: subprocess.Popen) -> int:
        """SIGTERM ``proc``, SIGKILL it after STOP_GRACE_S seconds; return its exit code."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                log.warning("pid %s ignored SIGTERM for %.0f s; sending SIGKILL", proc.pid, STOP_GRACE_S)
                proc.kill()
                while proc.poll() is None:
                    await asyncio.sleep(0.05)
        return proc.returncode

    async def _launch(self, replica: Replica, version: str) -> int:
        """Spawn ``replica`` on ``version`` and wait until healthy; on success state becomes "running".

        Returns the new PID. Raises ReplicaStartError (the child is stopped first).
        """
        proc = self._spawn(replica, version)
        try:
            health = await self._wait_healthy(replica, proc)
        except BaseException:
            replica.last_exit_code = await self._terminate(proc)
            replica.proc = None
            raise
        replica.state = "running"
        replica.version = health.get("version") or version
        replica.fault = health.get("fault") or {"mode": "none"}
        replica.last_error = None
        return proc.pid

    async def _start_replica(self, replica: Replica) -> str | None:
        """Start a stopped replica on the current version; record a "start" change. Returns the error text or None."""
        replica.state = "starting"
        replica.backoff_s = 0.0
        try:
            pid = await self._launch(replica, self.current_version)
        except ReplicaStartError as exc:
            replica.state = "stopped"
            replica.last_error = str(exc)
            log.error("start of %s failed: %s", replica.name, exc)
            self.record("start", replica.name, {"ok": False, "port": replica.port, "error": str(exc)})
            return str(exc)
        self.record("start", replica.name, {"ok": True, "port": replica.port, "pid": pid, "version": replica.version})
        return None

    async def _stop_replica(self, replica: Replica, reason: str) -> None:
        """Stop ``replica`` (if it has a child) and record a "stop" change."""
        proc = replica.proc
        exit_code = await self._terminate(proc) if proc is not None else None
        replica.proc = None
        replica.state = "stopped"
        replica.last_exit_code = exit_code
        replica.fault = {"mode": "none"}
        self.record("stop", replica.name, {"pid": proc.pid if proc else None, "exit_code": exit_code, "reason": reason})

    async def _replace(self, replica: Replica, version: str) -> tuple[int | None, int]:
        """Take ``replica`` out of /backends for DRAIN_S, stop it gracefully, start it on ``version``, wait healthy.

        Call with the lock held. Returns (old PID or None, new PID). Raises ReplicaStartError; the
        replica is then left "crashed" so the supervisor retries it on the current version with backoff.
        """
        old_pid = replica.pid
        if replica.proc is not None:
            replica.state = "draining"
            await asyncio.sleep(DRAIN_S)
            replica.last_exit_code = await self._terminate(replica.proc)
            replica.proc = None
        replica.state = "starting"
        try:
            return old_pid, await self._launch(replica, version)
        except ReplicaStartError as exc:
            replica.state = "crashed"
            replica.last_error = str(exc)
            replica.backoff_s = BACKOFF_INITIAL_S
            replica.next_restart_at = time.time() + BACKOFF_INITIAL_S
            log.error("replacement of %s failed: %s", replica.name, exc)
            raise

    # ----- operations ----------------------------------------------------------------

    async def _reconcile(self, replicas: int) -> list[dict[str, str]]:
        """Under the lock: run ``replicas`` (0..10), stopping the highest N first, starting missing ones concurrently.

        Returns a list of {"replica", "error"} for replicas that failed to start (empty on success).
        """
        async with self.lock:
            self.desired = replicas
            if replicas > 0:
                self.remembered = replicas
            self.sync_targets()
            for index in sorted((i for i in self.replicas if i > replicas), reverse=True):
                replica = self.replicas[index]
                if replica.proc is not None or replica.state != "stopped":
                    await self._stop_replica(replica, reason="scale down")
            to_start = [r for r in (self.slot(i) for i in range(1, replicas + 1)) if r.state == "stopped"]
            errors = await asyncio.gather(*(self._start_replica(r) for r in to_start))
            self.sync_targets()
        return [{"replica": r.name, "error": e} for r, e in zip(to_start, errors, strict=True) if e]

    async def scale(self, replicas: int) -> list[dict[str, str]]:
        """Operation "scale": set the desired count to ``replicas`` (0..10) and reconcile (see ``_reconcile``).

        Raises OperationInProgress.
        """
        with self.operation("scale", from_replicas=self.desired, to_replicas=replicas):
            self.record("scale", None, {"from": self.desired, "to": replicas})
            return await self._reconcile(replicas)

    async def start(self, replicas: int | None) -> tuple[int, list[dict[str, str]]]:
        """Operation "scale" for POST /start: ``replicas`` or the remembered count (or 1).

        Returns (replica count, start errors). Raises OperationInProgress.
        """
        count = replicas or self.remembered or 1
        with self.operation("scale", from_replicas=self.desired, to_replicas=count):
            self.record("start", None, {"replicas": count})
            self.record("scale", None, {"from": self.desired, "to": count})
            return count, await self._reconcile(count)

    async def stop_all(self, reason: str) -> None:
        """Operation "stop": stop every replica (highest N first); desired count 0, the previous count is remembered.

        Raises OperationInProgress.
        """
        with self.operation("stop", reason=reason):
            async with self.lock:
                self.record(
                    "stop", None, {"replicas_before": self.desired, "remembered": self.remembered, "reason": reason}
                )
                self.desired = 0
                self.sync_targets()
                for index in sorted(self.replicas, reverse=True):
                    replica = self.replicas[index]
                    if replica.proc is not None or replica.state != "stopped":
                        await self._stop_replica(replica, reason=reason)

    def begin_deploy(self, version: str) -> tuple[Deploy, Operation]:
        """Start operation "deploy" to ``version``: create the record and make ``version`` current.

        Replicas started from now on (scale, crash restart) run ``version``, also when the deploy
        fails later (as a stuck Kubernetes rollout keeps its new template: deploy the previous
        version to roll back). Finish with ``run_deploy``. Raises OperationInProgress.
        """
        operation = self.claim("deploy")
        self.deploy_count += 1
        deploy = Deploy(self.deploy_count, operation.started_at, self.current_version, version)
        operation.detail.update(deploy_id=deploy.id, from_version=deploy.from_version, to_version=version)
        self.deploys.appendleft(deploy)
        self.set_version(version)
        return deploy, operation

    async def run_deploy(self, deploy: Deploy, operation: Operation) -> Deploy:
        """Roll every running desired replica onto ``deploy.to_version``, one at a time, then release ``operation``.

        Each replica is drained, stopped, started and waited healthy before the next (``_replace``)
        and recorded as a "deploy" change. The first failure stops the deploy with ``status``
        "failed" and ``error``. Returns ``deploy``, finished.
        """
        try:
            for index in range(1, self.desired + 1):
                await self._deploy_replica(deploy, self.slot(index))
            deploy.status = "succeeded"
        except asyncio.CancelledError:
            deploy.status, deploy.error = "failed", "cancelled: process manager shutdown"
            raise
        except Exception as exc:  # noqa: BLE001 - a deploy in the background must still end as failed
            log.exception("deploy %s to %s failed", deploy.id, deploy.to_version)
            deploy.status, deploy.error = "failed", str(exc) or type(exc).__name__
        finally:
            deploy.finished_at = time.time()
            self.release(operation)
        return deploy

    async def _deploy_replica(self, deploy: Deploy, replica: Replica) -> None:
        """Move one replica onto ``deploy.to_version`` (skipped unless running) and record the "deploy" change."""
        async with self.lock:
            if replica.state != "running":
                return
            detail: dict[str, Any] = {
                "from_version": replica.version,
                "to_version": deploy.to_version,
                "deploy_id": deploy.id,
            }
            try:
                old_pid, new_pid = await self._replace(replica, deploy.to_version)
            except ReplicaStartError as exc:
                self.record("deploy", replica.name, {**detail, "ok": False, "error": str(exc)})
                raise
            deploy.replicas.append(replica.name)
            self.record("deploy", replica.name, {**detail, "ok": True, "old_pid": old_pid, "pid": new_pid})

    async def restart_replica(self, name: str) -> dict[str, Any]:
        """Operation "restart": drain, stop, start ``name`` again on its version and wait until healthy.

        Recorded as a "restart" change with reason "requested" (the supervisor's crash restarts
        have an "attempt" instead). Returns the instance (GET /instances shape).

        Raises:
            UnknownReplica: ``name`` is not a desired replica.
            OperationInProgress: another operation is running.
            ReplicaStartError: the replica did not come back (the supervisor keeps retrying it).
        """
        replica = self.desired_replica(name)
        with self.operation("restart", replica=name):
            async with self.lock:
                version = replica.version or self.current_version
                detail: dict[str, Any] = {"reason": "requested", "version": version}
                try:
                    old_pid, new_pid = await self._replace(replica, version)
                except ReplicaStartError as exc:
                    self.record("restart", name, {**detail, "ok": False, "error": str(exc)})
                    raise
                self.record("restart", name, {**detail, "ok": True, "old_pid": old_pid, "pid": new_pid})
        return replica.to_dict()

    async def shutdown(self) -> None:
        """Cancel background deploys, stop all children concurrently (no lock, no operation); empty targets file."""
        self.shutting_down = True
        for task in list(self.background):
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        running = [r for r in self.replicas.values() if r.proc is not None]
        await asyncio.gather(*(self._stop_replica(r, reason="process manager shutdown") for r in running))
        self.desired = 0
        self.sync_targets()

    async def send_fault(self, spec: dict[str, Any], replica_name: str | None) -> list[dict[str, Any]]:
        """POST ``spec`` to /faults of the named replica or of every running one, concurrently.

        Returns one {"replica","ok","status","fault"|"error"} per target. Raises KeyError for an unknown name.
        """
        if replica_name is not None:
            replica = self.by_name(replica_name)
            if replica is None:
                raise KeyError(replica_name)
            targets = [replica]
        else:
            targets = [self.replicas[i] for i in sorted(self.replicas) if self.replicas[i].state == "running"]
        results = await asyncio.gather(*(self._post_fault(r, spec) for r in targets))
        return list(results)

    async def _post_fault(self, replica: Replica, spec: dict[str, Any]) -> dict[str, Any]:
        assert self.http is not None
        result: dict[str, Any] = {"replica": replica.name, "ok": False, "status": None}
        if replica.state != "running" or not replica.alive():
            result["error"] = f"{replica.name} is {replica.state}, not running"
        else:
            try:
                response = await self.http.post(f"{replica.url}/faults", json=spec)
                result["status"] = response.status_code
                body = response.json()
                if response.is_success:
                    result.update(ok=True, fault=body)
                    replica.fault = body
                else:
                    result["error"] = body.get("detail", body) if isinstance(body, dict) else body
            except (httpx.HTTPError, ValueError) as exc:
                result["error"] = f"{type(exc).__name__}: {exc}"
        detail = {**spec, "ok": result["ok"], "status": result["status"]}
        if not result["ok"]:
            detail["error"] = result["error"]
            log.error("fault injection into %s failed: %s", replica.name, result["error"])
        self.record("fault", replica.name, detail)
        return result

    # ----- supervisor ----------------------------------------------------------------

    def _note_crash(self, replica: Replica, proc: subprocess.Popen, now: float) -> None:
        """Record the unexpected exit of ``replica``'s ``proc`` and schedule its restart with backoff."""
        uptime = now - (replica.started_at or now)
        if replica.backoff_s == 0.0 or uptime >= BACKOFF_RESET_AFTER_S:
            replica.backoff_s = BACKOFF_INITIAL_S
        else:
            replica.backoff_s = min(replica.backoff_s * 2, BACKOFF_MAX_S)
        replica.state = "crashed"
        replica.last_exit_code = proc.returncode  # negative: killed by that signal number
        replica.proc = None
        replica.next_restart_at = now + replica.backoff_s
        self.crashes_total.labels(replica=replica.name).inc()
        detail = {
            "pid": proc.pid,
            "exit_code": proc.returncode,
            "uptime_s": round(uptime, 3),
            "fault": replica.fault.get("mode"),
            "restart_in_s": replica.backoff_s,
        }
        log.error("%s (pid %s) exited with code %s", replica.name, proc.pid, proc.returncode)
        self.record("crash", replica.name, detail)

    async def _restart(self, replica: Replica) -> None:
        """Restart a crashed replica on the current version; on failure it stays "crashed" with a doubled backoff."""
        replica.state = "restarting"
        replica.restarts += 1
        self.restarts_total.labels(replica=replica.name).inc()
        try:
            pid = await self._launch(replica, self.current_version)
        except ReplicaStartError as exc:
            replica.state = "crashed"
            replica.last_error = str(exc)
            replica.backoff_s = min(replica.backoff_s * 2, BACKOFF_MAX_S)
            replica.next_restart_at = time.time() + replica.backoff_s
            log.error("restart of %s failed: %s", replica.name, exc)
            self.record(
                "restart",
                replica.name,
                {"ok": False, "attempt": replica.restarts, "error": str(exc), "retry_in_s": replica.backoff_s},
            )
            return
        self.record(
            "restart",
            replica.name,
            {
                "ok": True,
                "attempt": replica.restarts,
                "pid": pid,
                "version": replica.version,
                "after_backoff_s": replica.backoff_s,
            },
        )

    async def supervise_once(self) -> None:
        """One supervisor pass: note dead children of desired replicas, restart those whose backoff elapsed."""
        async with self.lock:
            now = time.time()
            desired = [self.slot(i) for i in range(1, self.desired + 1)]
            for replica in desired:
                if replica.state == "running" and replica.proc is not None and not replica.alive():
                    self._note_crash(replica, replica.proc, now)
            due = [r for r in desired if r.state == "crashed" and now >= r.next_restart_at]
            if due:
                await asyncio.gather(*(self._restart(r) for r in due))

    async def supervise(self) -> None:
        """Run ``supervise_once`` every SUPERVISOR_INTERVAL_S seconds until cancelled."""
        while True:
            try:
                await self.supervise_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep supervising; the traceback is logged
                log.exception("supervisor pass failed")
            await asyncio.sleep(SUPERVISOR_INTERVAL_S)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Lifespan of the manager: HTTP client, initial replicas, supervisor; on exit stop everything."""
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        self.sync_targets()
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=1.0), trust_env=False) as client:
            self.http = client
            if self.settings.pm_initial_replicas:
                await self.scale(self.settings.pm_initial_replicas)
            supervisor = asyncio.create_task(self.supervise(), name="supervisor")
            try:
                yield
            finally:
                supervisor.cancel()
                await asyncio.gather(supervisor, return_exceptions=True)
                await self.shutdown()


# ----- HTTP API ----------------------------------------------------------------------


def get_manager(request: Request) -> ReplicaManager:
    """FastAPI dependency: the app's ReplicaManager (``app.state.manager``, set by ``create_app``)."""
    manager: ReplicaManager = request.app.state.manager
    return manager


Manager = Annotated[ReplicaManager, Depends(get_manager)]
router = APIRouter()


def scale_response(manager: ReplicaManager, replicas: int, errors: list[dict[str, str]]) -> JSONResponse:
    """200 {"replicas", "instances"}, or 503 with "errors" [{"replica", "error"}] when a replica failed to start."""
    body: dict[str, Any] = {"replicas": replicas, "instances": manager.instances()}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=503 if errors else 200)


@router.post("/scale")
async def scale(request: ScaleRequest, manager: Manager) -> JSONResponse:
    """Set the desired replica count (0..10). 503 with "errors" when a replica failed to start; 409 mid-operation."""
    errors = await manager.scale(request.replicas)
    return scale_response(manager, request.replicas, errors)


@router.post("/start")
async def start(manager: Manager, request: Annotated[StartRequest | None, Body()] = None) -> JSONResponse:
    """Start ``replicas`` (default: the previous desired count, or 1); 409 during another operation."""
    replicas, errors = await manager.start(request.replicas if request is not None else None)
    return scale_response(manager, replicas, errors)


@router.post("/stop")
async def stop(manager: Manager) -> dict[str, Any]:
    """Stop every replica; the desired count is kept for the next POST /start. 409 during another operation."""
    await manager.stop_all(reason="POST /stop")
    return {"replicas": 0, "remembered": manager.remembered, "instances": manager.instances()}


@router.post("/deploy")
async def deploy(request: DeployRequest, manager: Manager) -> JSONResponse:
    """Rolling deploy of ``version`` over the running replicas, one at a time, each waited healthy.

    200 with the deploy record (GET /deploys shape) when it succeeded, 503 with it when a replica
    failed to start on the version (the deploy stops there), 202 at once with ``"wait": false``;
    422 for a version that was never shipped, 409 while another operation runs.
    """
    record, operation = manager.begin_deploy(request.version)
    if not request.wait:
        manager.run_in_background(manager.run_deploy(record, operation))
        return JSONResponse(record.to_dict(), status_code=202)
    await manager.run_deploy(record, operation)
    return JSONResponse(record.to_dict(), status_code=200 if record.status == "succeeded" else 503)


@router.get("/deploys")
async def deploys(manager: Manager) -> dict[str, Any]:
    """{"current_version", "previous_version" (the rollback target, or null), "versions", "deploys" newest first}."""
    return manager.deploy_history()


@router.post("/instances/{name}/restart")
async def restart_instance(name: str, manager: Manager) -> JSONResponse:
    """Restart one replica (drain, graceful stop, start on its version, wait healthy): 200 with the instance.

    404 for a name that is not a desired replica, 409 while another operation runs, 503 with
    "error" and "instance" when it did not come back.
    """
    try:
        instance = await manager.restart_replica(name)
    except ReplicaStartError as exc:
        replica = manager.desired_replica(name)
        return JSONResponse({"error": str(exc), "instance": replica.to_dict()}, status_code=503)
    return JSONResponse(instance)


@router.get("/instances")
async def instances(manager: Manager) -> dict[str, Any]:
    """Every replica slot used so far (name, port, url, pid, state, version, restarts, fault, started_at,
    last_exit_code, last_error) and the operation in progress (null or {"kind", "started_at", ...})."""
    operation = manager.current_operation
    return {"instances": manager.instances(), "operation": operation.to_dict() if operation else None}


@router.get("/backends")
async def backends(manager: Manager) -> dict[str, Any]:
    """URLs of running, healthy replicas, for the load balancer."""
    return {"backends": manager.backends()}


@router.post("/fault")
async def fault(request: FaultRequest, manager: Manager) -> dict[str, Any]:
    """Forward a fault to every running replica, or only to ``replica``; 404 for an unknown name."""
    spec = request.model_dump(mode="json", exclude={"replica"}, exclude_unset=True)
    try:
        results = await manager.send_fault(spec, request.replica)
    except KeyError:
        known = [r.name for r in manager.replicas.values()]
        raise HTTPException(status_code=404, detail=f"unknown replica {request.replica!r}; known: {known}") from None
    return {"results": results}


@router.get("/changes")
async def changes(
    manager: Manager,
    since: Annotated[float | None, Query(ge=0, description="epoch seconds, exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=CHANGES_MAXLEN)] = 200,
) -> dict[str, Any]:
    """Change log (scale, start, stop, fault, crash, restart, deploy), newest first."""
    return {"changes": manager.get_changes(since, limit)}


@router.get("/healthz")
async def healthz(manager: Manager) -> dict[str, Any]:
    """Liveness of the manager itself with the desired and running replica counts and the current version."""
    return {
        "status": "ok",
        "desired": manager.desired,
        "running": len(manager.backends()),
        "version": manager.current_version,
        "pid": os.getpid(),
    }


@router.get("/metrics")
async def metrics(manager: Manager) -> Response:
    """Prometheus text exposition of the manager's own registry (pm_* metrics, process collectors)."""
    return Response(generate_latest(manager.registry), media_type=CONTENT_TYPE_LATEST)


async def operation_conflict(_: Request, exc: Exception) -> JSONResponse:
    """409 {"detail", "operation": the one in progress} for OperationInProgress."""
    assert isinstance(exc, OperationInProgress)
    return JSONResponse({"detail": str(exc), "operation": exc.operation.to_dict()}, status_code=409)


async def unknown_replica(_: Request, exc: Exception) -> JSONResponse:
    """404 {"detail": "unknown replica ...; known: [...]"} for UnknownReplica."""
    assert isinstance(exc, UnknownReplica)
    return JSONResponse({"detail": exc.detail}, status_code=404)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The app's lifespan is the manager's (``ReplicaManager.running``)."""
    async with get_manager_of(app).running():
        yield


def get_manager_of(app: FastAPI) -> ReplicaManager:
    """The ReplicaManager ``create_app`` attached to ``app``."""
    manager: ReplicaManager = app.state.manager
    return manager


def create_app(settings: PMSettings | None = None) -> FastAPI:
    """Build the process-manager FastAPI app around a new ReplicaManager (settings from the environment by default)."""
    app = FastAPI(title="inventory process manager", lifespan=lifespan)
    app.state.manager = ReplicaManager(settings or PMSettings())
    app.add_exception_handler(OperationInProgress, operation_conflict)
    app.add_exception_handler(UnknownReplica, unknown_replica)
    app.include_router(router)
    return app


def main() -> None:
    """CLI entry point: ``python process_manager.py [--port 7070] [--host 127.0.0.1]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7070)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per health probe is noise
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
