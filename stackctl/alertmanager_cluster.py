"""A highly available Alertmanager: N peers on 127.0.0.1 joined in one gossip cluster.

Each peer has its own web port, cluster (gossip) port and storage folder, and lists every other
peer with ``--cluster.peer``. Prometheus must send every alert to EVERY peer (never through a load
balancer); the peers share silences and the notification log by gossip, and a peer at cluster
position i waits ``i * --cluster.peer-timeout`` before notifying, so a notification already sent by
another peer is not sent again (Alertmanager README, "High Availability"; prometheus.io docs,
"Alertmanager: High Availability"). Flags and their defaults: ``alertmanager --help`` (0.25).
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import yaml

from stackctl.processes import ProcessGroup, find_binary, free_port, wait_http_ok, wait_until


class AlertmanagerClusterError(RuntimeError):
    """The cluster cannot start: binary missing, a peer unhealthy, or the peers did not join each other."""


@dataclass(frozen=True)
class AlertmanagerPeer:
    """One Alertmanager peer: ``name`` (also its log file's name), web port and cluster (gossip) port on 127.0.0.1."""

    name: str
    web_port: int
    cluster_port: int

    @property
    def url(self) -> str:
        """Base URL of its API and UI, e.g. ``http://127.0.0.1:9093``."""
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def target(self) -> str:
        """``host:port`` as Prometheus' ``alerting.alertmanagers`` static target."""
        return f"127.0.0.1:{self.web_port}"

    @property
    def cluster_address(self) -> str:
        """``host:port`` of its gossip listener (TCP and UDP)."""
        return f"127.0.0.1:{self.cluster_port}"


def free_peers(count: int = 2, prefix: str = "alertmanager") -> list[AlertmanagerPeer]:
    """``count`` peers named ``<prefix>-1`` .. ``<prefix>-N`` on free web and cluster ports."""
    return [AlertmanagerPeer(f"{prefix}-{n}", free_port(), free_port()) for n in range(1, count + 1)]


@dataclass(frozen=True)
class ClusterTiming:
    """Gossip timing for peers on one host (Go durations, e.g. ``"200ms"``, ``"2s"``).

    The defaults of Alertmanager 0.25 are tuned for a data-centre network (peer timeout 15 s, push-pull
    1 m, settle up to 1 m); on loopback much shorter values form a cluster in ~3 s (settling). ``peer_timeout``
    must stay well above the gossip delay of a notification-log entry (a few ``gossip_interval``), or
    the second peer notifies again before it hears that the first one did.
    """

    gossip_interval: str = "100ms"
    pushpull_interval: str = "2s"
    peer_timeout: str = "2s"
    settle_timeout: str = "3s"
    probe_interval: str = "500ms"
    probe_timeout: str = "200ms"
    tcp_timeout: str = "2s"
    reconnect_interval: str = "1s"

    def flags(self) -> list[str]:
        """The ``--cluster.*`` flags for these values."""
        return [
            f"--cluster.gossip-interval={self.gossip_interval}",
            f"--cluster.pushpull-interval={self.pushpull_interval}",
            f"--cluster.peer-timeout={self.peer_timeout}",
            f"--cluster.settle-timeout={self.settle_timeout}",
            f"--cluster.probe-interval={self.probe_interval}",
            f"--cluster.probe-timeout={self.probe_timeout}",
            f"--cluster.tcp-timeout={self.tcp_timeout}",
            f"--cluster.reconnect-interval={self.reconnect_interval}",
        ]


def find_alertmanager() -> str:
    """Path of the Alertmanager binary (Debian: ``prometheus-alertmanager``). Raises AlertmanagerClusterError."""
    binary = find_binary("prometheus-alertmanager", "alertmanager")
    if binary is None:
        raise AlertmanagerClusterError(
            "Alertmanager not found on PATH (prometheus-alertmanager or alertmanager): run `make deps`"
        )
    return binary


@dataclass
class AlertmanagerCluster:
    """N Alertmanager peers started through ``procs`` (so a Stack's ``stop()`` also stops them).

    Args:
        procs: the process group that starts, logs and stops the peers.
        config_file: the Alertmanager configuration every peer loads.
        data_dir: parent of one ``<peer name>`` storage folder per peer (silences, notification log).
        peers: the peers (see ``free_peers``); at least one.
        timing: gossip timing (see ``ClusterTiming``).
        binary: the Alertmanager binary; found on PATH when None.
    """

    procs: ProcessGroup
    config_file: Path
    data_dir: Path
    peers: list[AlertmanagerPeer]
    timing: ClusterTiming = field(default_factory=ClusterTiming)
    binary: str | None = None

    def __post_init__(self) -> None:
        if not self.peers:
            raise ValueError("an Alertmanager cluster needs at least one peer")
        self._procs: dict[str, subprocess.Popen] = {}

    @property
    def urls(self) -> list[str]:
        """Base URLs of every peer, in ``peers`` order."""
        return [peer.url for peer in self.peers]

    @property
    def targets(self) -> list[str]:
        """``host:port`` of every peer, for Prometheus' ``alerting.alertmanagers``."""
        return [peer.target for peer in self.peers]

    def peer(self, name: str) -> AlertmanagerPeer:
        """The peer called ``name``. Raises KeyError."""
        for peer in self.peers:
            if peer.name == name:
                return peer
        raise KeyError(name)

    def peer_args(self, peer: AlertmanagerPeer) -> list[str]:
        """Command line of one peer: its ports and storage, every other peer as ``--cluster.peer``."""
        args = [
            self.binary or find_alertmanager(),
            f"--config.file={self.config_file}",
            f"--storage.path={self.data_dir / peer.name}",
            f"--web.listen-address={peer.target}",
            f"--web.external-url={peer.url}",  # webhook payloads carry it as externalURL: names the sending peer
            f"--cluster.listen-address={peer.cluster_address}",
            f"--cluster.advertise-address={peer.cluster_address}",
        ]
        args += [f"--cluster.peer={other.cluster_address}" for other in self.peers if other != peer]
        return args + self.timing.flags()

    def start(self, timeout: float = 30.0, step: Callable[[str], None] = lambda message: None) -> None:
        """Start every peer, wait until each is ready and sees all the others. Raises AlertmanagerClusterError.

        On failure the peers already started keep running: the caller stops ``procs`` (as ``Stack.start`` does).
        """
        for peer in self.peers:
            self.start_peer(peer.name)
        for peer in self.peers:
            try:
                wait_http_ok(f"{peer.url}/-/ready", timeout=timeout)
            except TimeoutError as exc:
                raise AlertmanagerClusterError(self._failure(peer, f"not ready within {timeout:.0f}s")) from exc
        self.wait_formed(timeout)
        ports = ", :".join(str(peer.web_port) for peer in self.peers)
        step(f"Alertmanager cluster of {len(self.peers)} peers ready on :{ports}")

    def start_peer(self, name: str) -> subprocess.Popen:
        """Start (or start again after ``kill``) the peer called ``name``; it rejoins through ``--cluster.peer``."""
        peer = self.peer(name)
        proc = self.procs.start(peer.name, self.peer_args(peer))
        self._procs[peer.name] = proc
        return proc

    def status(self, name: str) -> dict:
        """``GET /api/v2/status`` of one peer (keys cluster, config, uptime, versionInfo)."""
        response = httpx.get(f"{self.peer(name).url}/api/v2/status", timeout=5.0)
        response.raise_for_status()
        return response.json()

    def wait_formed(self, timeout: float = 30.0, names: Sequence[str] | None = None) -> dict[str, dict]:
        """Wait until each peer in ``names`` (default: all) reports ``cluster.status`` "ready" and exactly
        the peers in ``names`` as ``cluster.peers`` (matched by gossip address). Returns each one's cluster block.

        Raises:
            AlertmanagerClusterError: not formed within ``timeout`` seconds.
        """
        members = [self.peer(name) for name in (names or [peer.name for peer in self.peers])]
        expected = {peer.cluster_address for peer in members}

        def formed() -> dict[str, dict] | None:
            clusters = {peer.name: self.status(peer.name)["cluster"] for peer in members}
            for cluster in clusters.values():
                addresses = {member["address"] for member in cluster.get("peers") or []}
                if cluster.get("status") != "ready" or addresses != expected:
                    return None
            return clusters

        try:
            return wait_until(formed, timeout, interval=0.2, what=f"Alertmanager peers {sorted(expected)} joined")
        except TimeoutError as exc:
            raise AlertmanagerClusterError(self._failure(members[0], str(exc))) from exc

    def pid(self, name: str) -> int | None:
        """PID of the running peer called ``name``, or None."""
        proc = self._procs.get(name)
        return proc.pid if proc is not None and proc.poll() is None else None

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> int:
        """Send ``sig`` (default SIGKILL: a crash, no goodbye to the other peers) to the peer's PID and wait
        until it exited. Returns the PID. Raises KeyError when it is not running."""
        proc = self._procs.pop(name)
        proc.send_signal(sig)
        proc.wait(timeout=10)
        return proc.pid

    def _failure(self, peer: AlertmanagerPeer, reason: str) -> str:
        tail = "\n".join(self.procs.log_text(peer.name).splitlines()[-15:])
        return f"Alertmanager peer {peer.name} ({peer.url}): {reason}; see {self.procs.log_path(peer.name)}\n{tail}"


def fan_out_webhook(config_file: Path, agent_url: str, replica_urls: Sequence[str]) -> Path:
    """Rewrite an Alertmanager config in place: each ``webhook_configs`` entry aimed at ``agent_url``
    (same scheme and host:port) becomes one entry per URL in ``replica_urls`` (same path and settings).

    Every agent replica then receives every notification (each entry is its own integration, deduplicated
    across the cluster in the notification log per entry). Pass one load balancer URL to deliver each
    notification once instead. Returns ``config_file``. Raises ValueError when no entry matched.
    """
    config = yaml.safe_load(config_file.read_text())
    agent = urlsplit(agent_url)
    matched = 0
    for receiver in config.get("receivers", []):
        entries = []
        for webhook in receiver.get("webhook_configs", []):
            parts = urlsplit(webhook["url"])
            if (parts.scheme, parts.netloc) != (agent.scheme, agent.netloc):
                entries.append(webhook)
                continue
            matched += 1
            for replica_url in replica_urls:
                replica = urlsplit(replica_url)
                entries.append(
                    {**webhook, "url": urlunsplit(parts._replace(scheme=replica.scheme, netloc=replica.netloc))}
                )
        if "webhook_configs" in receiver:
            receiver["webhook_configs"] = entries
    if not matched:
        raise ValueError(f"no webhook_configs entry points at {agent_url} in {config_file}")
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    return config_file


def send_alerts_to_all(config_file: Path, targets: Sequence[str]) -> Path:
    """Rewrite a Prometheus config in place so that alerts go to every Alertmanager in ``targets`` (``host:port``).

    Prometheus sends each alert to every Alertmanager it lists, which is what an HA cluster needs
    (prometheus.io, "Alertmanager: High Availability"). Returns ``config_file``.
    """
    config = yaml.safe_load(config_file.read_text())
    config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": list(targets)}]}]}
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    return config_file
