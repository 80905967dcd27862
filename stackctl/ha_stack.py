"""The highly available demo stack: the ``Stack`` with one PostgreSQL, an Alertmanager cluster and K agent replicas.

Order: PostgreSQL -> process manager -> inventory replicas -> load balancer -> Alertmanager peers
(joined) -> Prometheus (alerts to every peer, scrapes every agent replica) -> agent replicas. Every
Alertmanager peer notifies every agent replica (one ``webhook_configs`` entry per replica). ``stop()``
stops everything by PID, newest first, then PostgreSQL.

Database of the replicas: every replica gets ``DATABASE_URL`` of the shared PostgreSQL and its own
``AGENT_REPLICA_ID``; the database decides who handles what (one incident per group key, one
investigation per episode claimed with a lease, one delivery per outbox row).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from stackctl.agent_replicas import AgentReplica, AgentReplicaError, AgentReplicas, free_agent_replicas
from stackctl.alertmanager_cluster import (
    AlertmanagerCluster,
    AlertmanagerClusterError,
    AlertmanagerPeer,
    ClusterTiming,
    fan_out_webhook,
    free_peers,
    send_alerts_to_all,
)
from stackctl.config import render_alertmanager
from stackctl.postgres import PostgresError, PostgresServer, find_pg_bindir
from stackctl.processes import port_is_free
from stackctl.stack import Stack, StackError, free_stack_ports

# `make demo-ha` layout: Alertmanager peers on 9093 (gossip 9094, its default) and 9095 (9096);
# agent replicas on 8088 (as in `make demo`, so `make reply` reaches agent-1) and 8089.
DEMO_ALERTMANAGER_PEERS = (
    AlertmanagerPeer("alertmanager-1", 9093, 9094),
    AlertmanagerPeer("alertmanager-2", 9095, 9096),
)
DEMO_AGENT_REPLICAS = (AgentReplica("agent-1", 8088), AgentReplica("agent-2", 8089))


def scrape_agent_replicas(config_file: Path, replicas: list[AgentReplica]) -> Path:
    """Rewrite a Prometheus config in place: job ``oncall_agent`` scrapes every replica, labelled ``replica``."""
    config = yaml.safe_load(config_file.read_text())
    for job in config["scrape_configs"]:
        if job["job_name"] == "oncall_agent":
            job["static_configs"] = [
                {"targets": [f"127.0.0.1:{replica.port}"], "labels": {"replica": replica.replica_id}}
                for replica in replicas
            ]
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    return config_file


@dataclass
class HAStack(Stack):
    """The demo stack with PostgreSQL, clustered Alertmanagers and several agent replicas.

    Args (besides ``Stack``'s; ``ports.alertmanager`` and ``ports.agent`` are set to the first peer and replica):
        alertmanager_peers: the Alertmanager peers (default: the demo layout, ``DEMO_ALERTMANAGER_PEERS``).
        agent_replicas: the agent replicas (default: ``DEMO_AGENT_REPLICAS``).
        cluster_timing: gossip timing of the Alertmanager cluster.

    After ``start()``: ``postgres`` (``.url``), ``alertmanager`` (``.kill(name)``), ``agents`` (``.kill(id)``).
    """

    alertmanager_peers: list[AlertmanagerPeer] = field(default_factory=lambda: list(DEMO_ALERTMANAGER_PEERS))
    agent_replicas: list[AgentReplica] = field(default_factory=lambda: list(DEMO_AGENT_REPLICAS))
    cluster_timing: ClusterTiming = field(default_factory=ClusterTiming)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.ports = replace(
            self.ports, alertmanager=self.alertmanager_peers[0].web_port, agent=self.agent_replicas[0].port
        )
        self.postgres = PostgresServer(self.run_dir)
        self.alertmanager = AlertmanagerCluster(
            self.procs,
            self.run_dir / "alertmanager.yaml",
            self.run_dir / "alertmanager-data",
            self.alertmanager_peers,
            timing=self.cluster_timing,
        )
        self.agents = AgentReplicas(self.procs, self.agent_replicas)

    def all_ports(self, inventory_replicas: int = 10) -> list[int]:
        """Every port on 127.0.0.1 the stack binds: ``StackPorts.all_ports(inventory_replicas)``, every peer's web
        and cluster port, every agent replica's port, and PostgreSQL's once it was chosen (at start)."""
        ports = self.ports.all_ports(inventory_replicas)
        ports += [port for peer in self.alertmanager_peers for port in (peer.web_port, peer.cluster_port)]
        ports += [replica.port for replica in self.agent_replicas]
        if self.postgres.port:
            ports.append(self.postgres.port)
        return sorted(set(ports))

    def preflight(self) -> dict[str, str]:
        """``Stack.preflight`` plus the PostgreSQL binaries and every peer's and replica's port."""
        binaries = super().preflight()
        if find_pg_bindir() is None:
            raise StackError(
                "PostgreSQL binaries (initdb, postgres) not found: run `make deps` (Debian package postgresql)"
            )
        busy = [port for port in self.all_ports() if port != self.postgres.port and not port_is_free(port)]
        if busy:
            raise StackError(
                f"ports already in use on 127.0.0.1: {busy}. Stop what holds them (`make stop-demo`, `ss -ltnp`)."
            )
        return binaries

    def start(self, replicas: int = 2, step: Callable[[str], None] = lambda message: None) -> None:
        """Start PostgreSQL, then everything ``Stack.start`` starts (``replicas`` inventory replicas), with the
        Alertmanager cluster and the agent replicas. On failure stop what started and raise StackError."""
        self.preflight()
        try:
            self.postgres.start(step=step)
            super().start(replicas, step)
        except (PostgresError, AlertmanagerClusterError, AgentReplicaError) as exc:
            self.stop()
            raise StackError(str(exc)) from exc
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every process by PID, newest first (agents ... process manager), then PostgreSQL."""
        super().stop()
        self.postgres.stop()

    def prometheus_config(self) -> Path:
        """``Stack``'s Prometheus config, sending alerts to every Alertmanager peer and scraping every agent replica."""
        config = super().prometheus_config()
        send_alerts_to_all(config, self.alertmanager.targets)
        return scrape_agent_replicas(config, self.agent_replicas)

    def _start_alertmanager(self, binary: str, step: Callable[[str], None]) -> None:
        config = render_alertmanager(self.run_dir, self.ports, self.timing)
        fan_out_webhook(config, self.url("agent"), self.agents.urls)
        self.alertmanager.config_file = config
        self.alertmanager.binary = binary
        self.alertmanager.start(step=step)

    def replica_environment(self) -> dict[str, dict[str, str | None]]:
        """Variables each agent replica gets on top of the shared ``agent_environment()`` (which carries
        ``DATABASE_URL``): isolated, ``PUBLIC_BASE_URL`` is the replica's own URL."""
        return {
            replica.replica_id: {"PUBLIC_BASE_URL": replica.url} if self.isolated else {}
            for replica in self.agent_replicas
        }

    def _start_agent(self, step: Callable[[str], None]) -> None:
        self.agents.env = {"DATABASE_URL": self.postgres.url, **self.agent_environment()}
        self.agents.replica_env = self.replica_environment()
        self.agents.start(step=step)


def free_ha_stack(run_dir: Path, agent_replicas: int = 2, alertmanager_peers: int = 2, **stack_args: object) -> HAStack:
    """An ``HAStack`` on free ports (tests, benchmarks); ``stack_args`` go to ``HAStack`` (timing, isolated, ...)."""
    return HAStack(
        run_dir=run_dir,
        ports=free_stack_ports(),
        alertmanager_peers=free_peers(alertmanager_peers),
        agent_replicas=free_agent_replicas(agent_replicas),
        **stack_args,  # type: ignore[arg-type]
    )
