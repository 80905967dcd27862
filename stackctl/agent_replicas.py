"""Several replicas of the on-call agent (``uvicorn on_call_agent:app``) sharing one environment.

Each replica listens on its own port on 127.0.0.1, gets ``AGENT_REPLICA_ID`` (``agent-1``, ``agent-2`` ...)
and any per-replica variables on top of the shared environment (e.g. ``DATABASE_URL`` of one
PostgreSQL), logs to ``<replica id>.log`` and can be stopped or killed alone by its PID.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from stackctl.processes import ProcessGroup, agent_command, free_port, wait_http_ok

REPLICA_ID_VARIABLE = "AGENT_REPLICA_ID"


class AgentReplicaError(RuntimeError):
    """A replica did not become healthy (the message carries its log's tail)."""


@dataclass(frozen=True)
class AgentReplica:
    """One agent replica: its id (``AGENT_REPLICA_ID``, also its log's name) and port on 127.0.0.1."""

    replica_id: str
    port: int

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8088``."""
        return f"http://127.0.0.1:{self.port}"


def free_agent_replicas(count: int = 2, prefix: str = "agent") -> list[AgentReplica]:
    """``count`` replicas ``<prefix>-1`` .. ``<prefix>-N`` on free ports."""
    return [AgentReplica(f"{prefix}-{n}", free_port()) for n in range(1, count + 1)]


@dataclass
class AgentReplicas:
    """Start, stop and kill agent replicas through ``procs`` (so a Stack's ``stop()`` stops them too).

    Args:
        procs: the process group that starts, logs and stops the replicas.
        replicas: the replicas (see ``free_agent_replicas``).
        env: environment shared by every replica, merged over ``os.environ`` (a None value removes a variable).
        replica_env: extra variables per replica id, applied after ``env``; ``AGENT_REPLICA_ID`` is always set.
    """

    procs: ProcessGroup
    replicas: list[AgentReplica]
    env: Mapping[str, str | None] = field(default_factory=dict)
    replica_env: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._procs: dict[str, subprocess.Popen] = {}

    @property
    def urls(self) -> list[str]:
        """Base URLs of every replica, in ``replicas`` order."""
        return [replica.url for replica in self.replicas]

    def replica(self, replica_id: str) -> AgentReplica:
        """The replica with this id. Raises KeyError."""
        for replica in self.replicas:
            if replica.replica_id == replica_id:
                return replica
        raise KeyError(replica_id)

    def environment(self, replica_id: str) -> dict[str, str | None]:
        """The environment one replica is started with (shared, then its own, then ``AGENT_REPLICA_ID``)."""
        return {**self.env, **self.replica_env.get(replica_id, {}), REPLICA_ID_VARIABLE: replica_id}

    def start(self, timeout: float = 30.0, step: Callable[[str], None] = lambda message: None) -> None:
        """Start every replica, then wait until each answers ``GET /healthz``. Raises AgentReplicaError."""
        for replica in self.replicas:
            self._spawn(replica)
        for replica in self.replicas:
            self.wait_healthy(replica.replica_id, timeout)
        step(f"{len(self.replicas)} agent replicas up on :{', :'.join(str(r.port) for r in self.replicas)}")

    def start_replica(self, replica_id: str, timeout: float = 30.0) -> subprocess.Popen:
        """Start (or start again after ``kill``/``stop``) one replica and wait until it is healthy."""
        proc = self._spawn(self.replica(replica_id))
        self.wait_healthy(replica_id, timeout)
        return proc

    def wait_healthy(self, replica_id: str, timeout: float = 30.0) -> None:
        """Wait until the replica answers ``GET /healthz`` with 2xx. Raises AgentReplicaError."""
        replica = self.replica(replica_id)
        try:
            wait_http_ok(f"{replica.url}/healthz", timeout=timeout)
        except TimeoutError as exc:
            tail = "\n".join(self.procs.log_text(replica_id).splitlines()[-15:])
            raise AgentReplicaError(
                f"agent replica {replica_id} not healthy at {replica.url} within {timeout:.0f}s; "
                f"see {self.procs.log_path(replica_id)}\n{tail}"
            ) from exc

    def pid(self, replica_id: str) -> int | None:
        """PID of the running replica, or None."""
        proc = self._procs.get(replica_id)
        return proc.pid if proc is not None and proc.poll() is None else None

    def running(self) -> list[AgentReplica]:
        """The replicas whose process is alive."""
        return [replica for replica in self.replicas if self.pid(replica.replica_id) is not None]

    def kill(self, replica_id: str, sig: signal.Signals = signal.SIGKILL) -> int:
        """Send ``sig`` (default SIGKILL, like ``kill -9``) to the replica's PID and wait until it exited.

        Returns the PID. Raises KeyError when that replica is not running.
        """
        proc = self._procs.pop(replica_id)
        proc.send_signal(sig)
        proc.wait(timeout=10)
        return proc.pid

    def stop(self, replica_id: str, grace: float = 10.0) -> int:
        """Stop one replica cleanly (SIGTERM, SIGKILL after ``grace`` s). Returns its PID. Raises KeyError."""
        proc = self._procs.pop(replica_id)
        ProcessGroup.stop(proc, grace)
        return proc.pid

    def _spawn(self, replica: AgentReplica) -> subprocess.Popen:
        if self.pid(replica.replica_id) is not None:
            raise AgentReplicaError(f"agent replica {replica.replica_id} is already running")
        args = agent_command(replica.port, "info")
        proc = self.procs.start(replica.replica_id, args, env=self.environment(replica.replica_id))
        self._procs[replica.replica_id] = proc
        return proc
