"""Process manager (supervisor) for the inventory replicas of the demo stack.

Runs ``inventory_service.py`` replicas as child processes (replica ``inventory-N`` listens
on ``PM_BASE_PORT + N``, N = 1..10), keeps the desired count running, restarts crashed
replicas with exponential backoff, writes the Prometheus file-SD targets file after every
change and exposes a small HTTP API (documented in README.md):

    POST /scale {"replicas": n}       POST /start [{"replicas": n}]      POST /stop
    GET  /instances                   GET  /backends                     POST /fault
    GET  /changes?since=&limit=       GET  /healthz                      GET  /metrics

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
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import uvicorn
from fastapi import Body, FastAPI, HTTPException, Query
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

from inventory_service import FaultSpec
from stackctl.processes import port_is_free

REPO_ROOT = Path(__file__).resolve().parent
INVENTORY_SCRIPT = REPO_ROOT / "inventory_service.py"
SERVICE = "inventory"
MAX_REPLICAS = 10
HEALTH_TIMEOUT_S = 20.0
STOP_GRACE_S = 5.0
SUPERVISOR_INTERVAL_S = 0.5
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 30.0
BACKOFF_RESET_AFTER_S = 60.0
CHANGES_MAXLEN = 1000
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

log = logging.getLogger("process_manager")
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

ReplicaState = Literal["starting", "running", "crashed", "restarting", "stopped"]
ChangeKind = Literal["scale", "start", "stop", "fault", "crash", "restart"]


class PMSettings(BaseSettings):
    """Process-manager settings from the environment (no .env file).

    Relative paths are resolved against REPO_ROOT, never the working directory.
    ``inventory_db`` and ``random_failure_ratio`` are passed through to replicas when set.
    """

    model_config = SettingsConfigDict(extra="ignore")

    pm_base_port: int = Field(default=8000, ge=1, le=65535 - MAX_REPLICAS, alias="PM_BASE_PORT")
    targets_file: Path = Field(default=REPO_ROOT / "inventory_targets.json", alias="TARGETS_FILE")
    pm_initial_replicas: int = Field(default=0, ge=0, le=MAX_REPLICAS, alias="PM_INITIAL_REPLICAS")
    inventory_db: Path | None = Field(default=None, alias="INVENTORY_DB")
    log_dir: Path = Field(default=REPO_ROOT / "logs", alias="LOG_DIR")
    random_failure_ratio: float | None = Field(default=None, ge=0, le=1, alias="RANDOM_FAILURE_RATIO")

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


class FaultRequest(FaultSpec):
    """Body of POST /fault: the inventory ``POST /faults`` body plus an optional target replica.

    Without ``replica`` the fault goes to every running replica.
    """

    replica: str | None = Field(default=None, pattern=r"^inventory-\d{1,2}$")


@dataclass
class Replica:
    """One replica slot ``inventory-N``; ``proc`` is the live child process, if any.

    Times are epoch seconds; ``backoff_s`` is the delay used before the latest restart.
    """

    index: int
    port: int
    state: ReplicaState = "stopped"
    proc: subprocess.Popen | None = None
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

    def alive(self) -> bool:
        """True while the child process exists and has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def to_dict(self) -> dict[str, Any]:
        """The GET /instances representation."""
        return {
            "name": self.name,
            "port": self.port,
            "url": self.url,
            "pid": self.proc.pid if self.alive() else None,
            "state": self.state,
            "restarts": self.restarts,
            "fault": self.fault,
            "started_at": self.started_at,
            "last_exit_code": self.last_exit_code,
            "last_error": self.last_error,
        }


class ReplicaStartError(RuntimeError):
    """A replica could not be started or did not become healthy (message says why)."""


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
    """Owns the replica processes, the change log, the targets file and the PM metrics.

    Operations that start or stop replicas are serialised by one asyncio lock; the
    supervisor task (``supervise``) checks children every SUPERVISOR_INTERVAL_S seconds.
    """

    def __init__(self, settings: PMSettings) -> None:
        self.settings = settings
        self.replicas: dict[int, Replica] = {}
        self.desired = 0
        self.remembered = 0  # last non-zero desired count, used by POST /start
        self.changes: deque[dict[str, Any]] = deque(maxlen=CHANGES_MAXLEN)
        self.changes_file = settings.log_dir / "process_manager_changes.log"
        self.lock = asyncio.Lock()
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

    # ----- child processes ---------------------------------------------------------

    def _child_env(self, replica: Replica) -> dict[str, str]:
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "SERVICE": SERVICE,
            "PORT": str(replica.port),
            "REPLICA": replica.name,
            "LOG_DIR": str(self.settings.log_dir),
        }
        if self.settings.inventory_db is not None:
            env["INVENTORY_DB"] = str(self.settings.inventory_db)
        if self.settings.random_failure_ratio is not None:
            env["RANDOM_FAILURE_RATIO"] = str(self.settings.random_failure_ratio)
        return env

    def _spawn(self, replica: Replica) -> subprocess.Popen:
        """Start the child for ``replica`` (stdout/stderr appended to LOG_DIR/inventory-N.log).

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
            proc = subprocess.Popen(
                [sys.executable, str(INVENTORY_SCRIPT), "--port", str(replica.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._child_env(replica),
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

    async def _launch(self, replica: Replica) -> dict[str, Any]:
        """Spawn ``replica`` and wait until healthy; on success state becomes "running".

        Returns the /healthz body. Raises ReplicaStartError (the child is stopped first).
        """
        proc = self._spawn(replica)
        try:
            health = await self._wait_healthy(replica, proc)
        except BaseException:
            replica.last_exit_code = await self._terminate(proc)
            replica.proc = None
            raise
        replica.state = "running"
        replica.fault = health.get("fault") or {"mode": "none"}
        replica.last_error = None
        return health

    async def _start_replica(self, replica: Replica) -> str | None:
        """Start a stopped replica; record a "start" change. Returns the error text or None."""
        replica.state = "starting"
        replica.backoff_s = 0.0
        try:
            await self._launch(replica)
        except ReplicaStartError as exc:
            replica.state = "stopped"
            replica.last_error = str(exc)
            log.error("start of %s failed: %s", replica.name, exc)
            self.record("start", replica.name, {"ok": False, "port": replica.port, "error": str(exc)})
            return str(exc)
        self.record("start", replica.name, {"ok": True, "port": replica.port, "pid": replica.proc.pid})
        return None

    async def _stop_replica(self, replica: Replica, reason: str) -> None:
        """Stop ``replica`` (if it has a child) and record a "stop" change."""
        pid = replica.proc.pid if replica.proc is not None else None
        exit_code = await self._terminate(replica.proc) if replica.proc is not None else None
        replica.proc = None
        replica.state = "stopped"
        replica.last_exit_code = exit_code
        replica.fault = {"mode": "none"}
        self.record("stop", replica.name, {"pid": pid, "exit_code": exit_code, "reason": reason})

    # ----- operations ----------------------------------------------------------------

    async def scale(self, replicas: int) -> list[dict[str, str]]:
        """Reconcile to ``replicas`` (0..10): stop the highest N first, start missing ones concurrently.

        Returns a list of {"replica", "error"} for replicas that failed to start (empty on success).
        """
        async with self.lock:
            previous = self.desired
            self.desired = replicas
            if replicas > 0:
                self.remembered = replicas
            self.record("scale", None, {"from": previous, "to": replicas})
            self.sync_targets()
            for index in sorted((i for i in self.replicas if i > replicas), reverse=True):
                replica = self.replicas[index]
                if replica.proc is not None or replica.state != "stopped":
                    await self._stop_replica(replica, reason="scale down")
            to_start = [self.slot(i) for i in range(1, replicas + 1)]
            to_start = [r for r in to_start if r.state == "stopped"]
            errors = await asyncio.gather(*(self._start_replica(r) for r in to_start))
            self.sync_targets()
        return [{"replica": r.name, "error": e} for r, e in zip(to_start, errors) if e]

    async def stop_all(self, reason: str) -> None:
        """Stop every replica (highest N first); desired count 0, the previous count is remembered."""
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

    async def shutdown(self) -> None:
        """Stop all children concurrently without waiting for the operation lock; empty targets file."""
        self.shutting_down = True
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

    def _note_crash(self, replica: Replica, now: float) -> None:
        """Record an unexpected exit of ``replica`` and schedule its restart with backoff."""
        proc = replica.proc
        assert proc is not None
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
        """Restart a crashed replica; on failure it stays "crashed" with a doubled backoff."""
        replica.state = "restarting"
        replica.restarts += 1
        self.restarts_total.labels(replica=replica.name).inc()
        try:
            await self._launch(replica)
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
            {"ok": True, "attempt": replica.restarts, "pid": replica.proc.pid, "after_backoff_s": replica.backoff_s},
        )

    async def supervise_once(self) -> None:
        """One supervisor pass: note dead children of desired replicas, restart those whose backoff elapsed."""
        async with self.lock:
            now = time.time()
            desired = [self.slot(i) for i in range(1, self.desired + 1)]
            for replica in desired:
                if replica.state == "running" and not replica.alive():
                    self._note_crash(replica, now)
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


def create_app(settings: PMSettings | None = None) -> FastAPI:
    """Build the process-manager FastAPI app; the lifespan owns the supervisor and the children."""
    settings = settings or PMSettings()
    manager = ReplicaManager(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        manager.sync_targets()
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=1.0), trust_env=False) as client:
            manager.http = client
            if settings.pm_initial_replicas:
                await manager.scale(settings.pm_initial_replicas)
            supervisor = asyncio.create_task(manager.supervise(), name="supervisor")
            try:
                yield
            finally:
                supervisor.cancel()
                await asyncio.gather(supervisor, return_exceptions=True)
                await manager.shutdown()

    app = FastAPI(title="inventory process manager", lifespan=lifespan)
    app.state.manager = manager

    def scale_response(replicas: int, errors: list[dict[str, str]]) -> JSONResponse:
        body: dict[str, Any] = {"replicas": replicas, "instances": manager.instances()}
        if errors:
            body["errors"] = errors
        return JSONResponse(body, status_code=503 if errors else 200)

    @app.post("/scale")
    async def scale(request: ScaleRequest) -> JSONResponse:
        """Set the desired replica count; 503 with "errors" when some replica failed to start."""
        errors = await manager.scale(request.replicas)
        return scale_response(request.replicas, errors)

    @app.post("/start")
    async def start(request: StartRequest | None = Body(default=None)) -> JSONResponse:
        """Start ``replicas`` (default: the previous desired count, or 1)."""
        replicas = request.replicas if request is not None else (manager.remembered or 1)
        manager.record("start", None, {"replicas": replicas})
        errors = await manager.scale(replicas)
        return scale_response(replicas, errors)

    @app.post("/stop")
    async def stop() -> dict[str, Any]:
        """Stop every replica; the desired count is kept for the next POST /start."""
        await manager.stop_all(reason="POST /stop")
        return {"replicas": 0, "remembered": manager.remembered, "instances": manager.instances()}

    @app.get("/instances")
    async def instances() -> dict[str, Any]:
        """Every replica slot used so far: name, port, url, pid, state, restarts, fault, started_at, last_exit_code."""
        return {"instances": manager.instances()}

    @app.get("/backends")
    async def backends() -> dict[str, Any]:
        """URLs of running, healthy replicas, for the load balancer."""
        return {"backends": manager.backends()}

    @app.post("/fault")
    async def fault(request: FaultRequest) -> dict[str, Any]:
        """Forward a fault to every running replica, or only to ``replica``; 404 for an unknown name."""
        spec = request.model_dump(mode="json", exclude={"replica"}, exclude_unset=True)
        try:
            results = await manager.send_fault(spec, request.replica)
        except KeyError:
            known = [r.name for r in manager.replicas.values()]
            raise HTTPException(
                status_code=404, detail=f"unknown replica {request.replica!r}; known: {known}"
            ) from None
        return {"results": results}

    @app.get("/changes")
    async def changes(
        since: float | None = Query(default=None, ge=0, description="epoch seconds, exclusive"),
        limit: int = Query(default=200, ge=1, le=CHANGES_MAXLEN),
    ) -> dict[str, Any]:
        """Change log (scale, start, stop, fault, crash, restart), newest first."""
        return {"changes": manager.get_changes(since, limit)}

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness of the manager itself with the desired and running replica counts."""
        return {"status": "ok", "desired": manager.desired, "running": len(manager.backends()), "pid": os.getpid()}

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text exposition of the manager's own registry (pm_* metrics, process collectors)."""
        return Response(generate_latest(manager.registry), media_type=CONTENT_TYPE_LATEST)

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
