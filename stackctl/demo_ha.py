"""``make demo-ha``: the demo on a highly available stack, showing which replica handled what.

PostgreSQL, two agent replicas (``agent-1`` on 8088, ``agent-2`` on 8089), two clustered
Alertmanagers (9093 and 9095, gossip on 9094 and 9096) and the rest of ``make demo``'s stack. The
incident is driven exactly as in ``stackctl.demo`` (same environment variables: DEMO_EXIT, DEMO_FAULT,
DEMO_TIMEOUT_S); then tables show, per Alertmanager peer, the cluster state and the webhook
notifications it sent; per agent replica the notifications it received, the investigations it ran (and
took over from a dead replica) and the WhatsApp messages it delivered; and for the incident, which
replica claimed its investigation, recorded the diagnosis and delivered each message (the replicas
share PostgreSQL: every replica sees every incident). Ctrl-C (or ``make stop-demo``) stops everything
and frees every port.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from oncall.settings import Settings
from stackctl.config import StackPorts, load_timing
from stackctl.demo import (
    DEMO_ENGINEER,
    FAULTS,
    console,
    demo_agent_env,
    interrupt,
    new_run_dir,
    progress_table,
    prometheus_state,
    stop_traffic,
    traffic_command,
)
from stackctl.ha_stack import HAStack
from stackctl.processes import REPO_ROOT, port_is_free
from stackctl.stack import StackError

DEMO_INVENTORY_REPLICAS = 2


def metric_total(metrics_text: str, sample_name: str, labels: Mapping[str, str] | None = None) -> float:
    """Sum of the samples called ``sample_name`` (e.g. ``oncall_investigations_total``) in Prometheus text
    exposition whose labels include ``labels``."""
    wanted = dict(labels or {})
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == sample_name and wanted.items() <= sample.labels.items()
    )


def replica_rows(client: httpx.Client, stack: HAStack) -> list[dict]:
    """Per agent replica: replica_id, url, pid (None when down), notifications (webhook POSTs received),
    investigations (finished by this replica), takeovers (investigations it took over after another
    replica's lease expired), delivered (WhatsApp messages it delivered), incidents (id -> fault_type or
    investigation status; the same for every replica, they share the database)."""
    rows = []
    for replica in stack.agents.replicas:
        row: dict = {"replica_id": replica.replica_id, "url": replica.url, "pid": stack.agents.pid(replica.replica_id)}
        if row["pid"] is not None:
            metrics = client.get(f"{replica.url}/metrics").text
            row["notifications"] = metric_total(metrics, "oncall_alert_notifications_total")
            row["investigations"] = metric_total(metrics, "oncall_investigations_total")
            row["takeovers"] = metric_total(metrics, "oncall_investigation_claims_total", {"kind": "takeover"})
            row["delivered"] = metric_total(
                metrics, "oncall_outbox_deliveries_total", {"operation": "message", "outcome": "delivered"}
            )
            incidents = client.get(f"{replica.url}/incidents", headers=stack.api_headers()).json()["incidents"]
            row["incidents"] = {i["id"]: i["fault_type"] or i["investigation_status"] for i in incidents}
        rows.append(row)
    return rows


def peer_rows(client: httpx.Client, stack: HAStack) -> list[dict]:
    """Per Alertmanager peer: name, url, pid, cluster status (ready/settling), peers it sees, webhook
    notifications it sent (``alertmanager_notifications_total{integration="webhook"}``)."""
    rows = []
    for peer in stack.alertmanager.peers:
        row: dict = {"name": peer.name, "url": peer.url, "pid": stack.alertmanager.pid(peer.name)}
        if row["pid"] is not None:
            cluster = client.get(f"{peer.url}/api/v2/status").json()["cluster"]
            row["status"] = cluster["status"]
            row["peers"] = len(cluster.get("peers") or [])
            metrics = client.get(f"{peer.url}/metrics").text
            row["sent"] = metric_total(metrics, "alertmanager_notifications_total", {"integration": "webhook"})
        rows.append(row)
    return rows


def diagnosed_incident(client: httpx.Client, replica_url: str) -> dict | None:
    """The newest incident of one replica with a diagnosis sent on WhatsApp, or None."""
    for summary in client.get(f"{replica_url}/incidents").json()["incidents"]:
        detail = client.get(f"{replica_url}/incidents/{summary['id']}").json()
        if detail.get("diagnosis") and any(m["direction"] == "out" for m in detail.get("messages", [])):
            return detail
    return None


def wait_for_diagnosis(stack: HAStack, timeout: float) -> tuple[str, dict]:
    """Live progress until a replica has diagnosed an incident; return (replica id, incident detail).

    Raises TimeoutError after ``timeout`` seconds.
    """
    started = time.monotonic()
    with (
        httpx.Client(timeout=5.0, headers=stack.api_headers()) as client,
        Live(console=console, refresh_per_second=2) as live,
    ):
        while time.monotonic() - started < timeout:
            ratio, alerts = prometheus_state(client, stack)
            found = {r.replica_id: diagnosed_incident(client, r.url) for r in stack.agents.running()}
            state = ", ".join(f"{rid}: {'diagnosed' if found[rid] else 'waiting'}" for rid in found)
            live.update(progress_table(started, ratio, alerts, state))
            for replica_id, incident in found.items():
                if incident:
                    return replica_id, incident
            time.sleep(1.0)
    raise TimeoutError(f"no diagnosis within {timeout:.0f}s")


def handled_tables(stack: HAStack) -> tuple[Table, Table]:
    """Who did what: one table for the Alertmanager peers, one for the agent replicas."""
    with httpx.Client(timeout=5.0, headers=stack.api_headers()) as client:
        peers, replicas = peer_rows(client, stack), replica_rows(client, stack)
    peer_table = Table(title="Alertmanager cluster (Prometheus sends every alert to every peer; one peer notifies)")
    for column in ("peer", "url", "pid", "cluster", "peers seen", "webhook notifications sent"):
        peer_table.add_column(column)
    for row in peers:
        alive = row["pid"] is not None
        cells = [str(row["pid"]), row["status"], str(row["peers"]), f"{row['sent']:.0f}"] if alive else ["down"] * 4
        peer_table.add_row(row["name"], row["url"], *cells)
    replica_table = Table(title="Agent replicas (each notification goes to every replica; the database decides)")
    columns = ("replica", "url", "pid", "notifications received", "investigations", "taken over", "messages sent")
    for column in (*columns, "incidents"):
        replica_table.add_column(column)
    for row in replicas:
        if row["pid"] is None:
            replica_table.add_row(row["replica_id"], row["url"], "down", "-", "-", "-", "-", "-")
            continue
        incidents = ", ".join(f"#{i} {state}" for i, state in row["incidents"].items()) or "-"
        replica_table.add_row(
            row["replica_id"],
            row["url"],
            str(row["pid"]),
            f"{row['notifications']:.0f}",
            f"{row['investigations']:.0f}",
            f"{row['takeovers']:.0f}",
            f"{row['delivered']:.0f}",
            incidents,
        )
    return peer_table, replica_table


def incident_handlers(incident: dict) -> Table:
    """Which replica did what for one incident: investigation claims, diagnosis, each outbox delivery."""
    table = Table(title=f"Incident #{incident['id']}: which replica handled what")
    for column in ("what", "replica", "detail"):
        table.add_column(column)
    for episode in incident.get("episodes", []):
        detail = f"episode {episode['number']}, {episode['investigation']}, attempt {episode['attempts']}"
        table.add_row("investigation claim", str(episode["claimed_by"]), detail)
    for event in incident["timeline"]:
        if event["kind"] in ("investigation_resumed", "investigation_started", "diagnosis"):
            table.add_row(event["kind"], str(event["detail"].get("replica")), str(event["detail"].get("engine", "")))
    for row in incident.get("outbox", []):
        detail = f"{row['event_key']} ({row['status']}, {row['attempts']} attempt(s))"
        table.add_row(f"{row['channel']} {row['operation']}", str(row["delivered_by"]), detail)
    return table


def database_note(stack: HAStack) -> str:
    """One line on the replicas' shared database."""
    return f"agent replicas share PostgreSQL {stack.postgres.display_url}"


def show_diagnosis(stack: HAStack, replica_id: str, incident: dict) -> None:
    """The WhatsApp messages of the diagnosed incident and who did what (seen from ``replica_id``)."""
    url = stack.agents.replica(replica_id).url
    for message in (m for m in incident["messages"] if m["direction"] == "out"):
        title = f"WhatsApp to {message.get('to_number') or 'on-call'} ({message['channel']}, {message['status']})"
        console.print(Panel(message["body"], title=title, border_style="green"))
    console.print(f"[bold]Incident:[/bold] {url}/incidents/{incident['id']}")
    console.print(f"[bold]API token:[/bold] {stack.api_token}  (ONCALL_API_TOKEN; send it as a Bearer token)")
    for table in (*handled_tables(stack), incident_handlers(incident)):
        console.print(table)


def explore(stack: HAStack) -> None:
    """Keep the stack up until Ctrl-C, showing every URL and the PIDs to kill."""
    lines = [f"{'Prometheus':<16} {stack.url('prometheus')}/alerts", f"{'LB':<16} {stack.url('lb')}/healthz"]
    lines += [
        f"{peer.name:<16} {peer.url} (pid {stack.alertmanager.pid(peer.name)})" for peer in stack.alertmanager.peers
    ]
    lines += [
        f"{r.replica_id:<16} {r.url}/incidents (pid {stack.agents.pid(r.replica_id)})" for r in stack.agents.replicas
    ]
    lines += [
        f"{'PostgreSQL':<16} {stack.postgres.display_url} (pid {stack.postgres.pid})",
        f"{'logs':<16} {stack.log_dir}",
    ]
    lines += [
        "",
        "Kill a replica or a peer with `kill -9 <pid>`: the others carry on.",
        'Reply as the on-call engineer (to agent-1):  make reply MSG="#1 ack"',
        "Ctrl-C stops everything.",
    ]
    console.print(Panel("\n".join(lines), title="HA stack is up", border_style="blue"))
    signal.sigwait({signal.SIGINT, signal.SIGTERM})


def stop_and_check_ports(stack: HAStack, started: bool) -> None:
    """Stop the stack by PID; once it had ``started``, report whether every port it used is free again.

    Only the ports of processes the demo started are checked: a port in the ephemeral range that nobody
    listens on can still be held for a moment by some client's outgoing connection.
    """
    console.print("stopping the stack ...")
    ports = stack.all_ports(inventory_replicas=DEMO_INVENTORY_REPLICAS)
    stack.stop()
    if not started:  # nothing of ours is left; busy ports (preflight) belong to someone else
        console.print("stopped")
        return
    busy = [port for port in ports if not port_is_free(port)]
    if busy:
        console.print(f"[red]stopped, but ports still in use: {busy}[/red]")
    else:
        console.print(f"stopped: every process ended, {len(ports)} ports freed")


def start_traffic(stack: HAStack, fault: str | None) -> subprocess.Popen:
    """Start traffic_gen like ``make demo`` (agentic profile, or constant load with a fault injected after 5 s)."""
    json_out = stack.run_dir / "traffic.json"
    traffic = subprocess.Popen(  # noqa: S603 - our own traffic_gen.py with arguments we build
        traffic_command(stack, fault, json_out),
        cwd=REPO_ROOT,
        stdout=open(stack.log_dir / "traffic_gen.log", "ab"),  # noqa: SIM115 - the child owns the file
        stderr=subprocess.STDOUT,
    )
    if fault:
        time.sleep(5)
        httpx.post(f"{stack.url('pm')}/fault", json=FAULTS[fault], timeout=10).raise_for_status()
        console.print(f"[yellow]injected fault[/yellow] {FAULTS[fault]}")
    else:
        console.print(
            "[yellow]traffic:[/yellow] agentic profile, 10 s normal, then 80% of requests hit /random-endpoint/error"
        )
    return traffic


def main() -> int:
    """Run the HA demo; exit code 0 when a diagnosis was shown, 1 otherwise, 2 for bad settings."""
    fault = os.environ.get("DEMO_FAULT") or None
    if fault and fault not in FAULTS:
        console.print(f"[red]DEMO_FAULT must be one of {sorted(FAULTS)}[/red]")
        return 2
    try:
        settings = Settings(_env_file=REPO_ROOT / ".env")
    except ValidationError as exc:
        console.print(f"[red]invalid settings in the environment or .env:[/red]\n{exc}")
        return 2
    run_dir = new_run_dir()
    (run_dir / "demo.pid").write_text(str(os.getpid()))  # `make stop-demo` stops the demo by this PID
    signal.signal(signal.SIGTERM, interrupt)
    agent_env = demo_agent_env(settings)
    stack = HAStack(run_dir=run_dir, ports=StackPorts(), timing=load_timing(), agent_env=agent_env)
    reply = {
        "agent_url": stack.url("agent"),
        "public_base_url": settings.public_base_url,
        "from": (settings.oncall_whatsapp_numbers or [DEMO_ENGINEER])[0],
        "token": agent_env.get("TWILIO_AUTH_TOKEN"),
    }
    (run_dir / "reply.json").write_text(json.dumps(reply))
    traffic = None
    started = False
    try:
        console.rule("[bold]On-call agent demo: highly available")
        console.print(f"run folder: {run_dir}")
        stack.start(replicas=DEMO_INVENTORY_REPLICAS, step=lambda message: console.print(f"[green]✓[/green] {message}"))
        started = True
        console.print(database_note(stack))
        traffic = start_traffic(stack, fault)
        replica_id, incident = wait_for_diagnosis(stack, float(os.environ.get("DEMO_TIMEOUT_S", "170")))
        stop_traffic(traffic, run_dir / "traffic.json")
        show_diagnosis(stack, replica_id, incident)
        if os.environ.get("DEMO_EXIT", "").lower() in {"1", "true", "yes"}:
            return 0
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        explore(stack)
        return 0
    except (StackError, TimeoutError) as exc:
        console.print(f"[red]demo failed:[/red] {exc}\nlogs: {run_dir / 'logs'}")
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        if traffic is not None and traffic.poll() is None:
            traffic.kill()
        stop_and_check_ports(stack, started)


if __name__ == "__main__":
    sys.exit(main())
