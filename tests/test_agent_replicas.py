"""stackctl.agent_replicas: two real agent processes on free ports, one killed by PID while the other serves."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from stackctl.agent_replicas import AgentReplicaError, AgentReplicas, free_agent_replicas
from stackctl.processes import port_is_free
from stackctl.stack import INTEGRATION_VARIABLES

pytestmark = pytest.mark.slow


def process_environment(pid: int) -> dict[str, str]:
    """Environment a process was started with, from /proc/<pid>/environ."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


@pytest.fixture
def agents(procs, tmp_path):
    env: dict[str, str | None] = {name: None for name in INTEGRATION_VARIABLES}
    env.update({"ONCALL_ENV_FILE": str(tmp_path / "none.env"), "LOG_LEVEL": "WARNING"})
    replicas = free_agent_replicas(2)
    per_replica = {r.replica_id: {"DATABASE_PATH": str(tmp_path / f"{r.replica_id}.db")} for r in replicas}
    group = AgentReplicas(procs, replicas, env=env, replica_env=per_replica)
    group.start(timeout=60)
    return group


def test_replicas_share_the_environment_and_each_has_its_replica_id(agents, tmp_path):
    assert [r.replica_id for r in agents.replicas] == ["agent-1", "agent-2"]
    for replica in agents.replicas:
        assert httpx.get(f"{replica.url}/healthz", timeout=5).json()["status"] == "ok"
        pid = agents.pid(replica.replica_id)
        assert pid is not None
        env = process_environment(pid)
        assert env["AGENT_REPLICA_ID"] == replica.replica_id
        assert env["LOG_LEVEL"] == "WARNING" and "OPENAI_API_KEY" not in env
        assert env["DATABASE_PATH"] == str(tmp_path / f"{replica.replica_id}.db")
        assert (tmp_path / f"{replica.replica_id}.db").exists()


def test_kill_one_replica_by_pid_the_other_keeps_serving_and_it_can_start_again(agents):
    pid = agents.kill("agent-1")
    first, second = agents.replicas
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert agents.pid("agent-1") is None and port_is_free(first.port)
    assert agents.running() == [second]
    assert httpx.get(f"{second.url}/healthz", timeout=5).status_code == 200
    with pytest.raises(KeyError):
        agents.kill("agent-1")  # not running any more
    agents.start_replica("agent-1", timeout=60)
    assert agents.pid("agent-1") not in (None, pid)
    assert httpx.get(f"{first.url}/healthz", timeout=5).status_code == 200
    with pytest.raises(AgentReplicaError, match="already running"):
        agents.start_replica("agent-1")
    assert agents.stop("agent-2") > 0 and port_is_free(second.port)
