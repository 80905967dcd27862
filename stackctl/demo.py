"""``make demo``: start the stack, drive an incident, show the agent's WhatsApp diagnosis.

Environment:
    DEMO_EXIT=1        exit after the diagnosis instead of keeping the stack up until Ctrl-C.
    DEMO_FAULT=MODE    inject a fault through the process manager (errors, latency, cpu, stall,
                       oom_safe, crash) instead of the default agentic traffic that hits the null-dereference bug.
    DEMO_SCENARIO=bad-deploy  normal traffic, then a rolling deploy of the release with a regression
                       (POST /deploy {"version": "1.4.1"}): the diagnosis names the deploy and the rollback.
    DEMO_TIMEOUT_S     seconds to wait for the diagnosis (default 170).

After the diagnosis the demo prints who was paged and why (the roster ``oncall.yaml`` unless
``ONCALL_FILE`` is set) and the proposed action, makes ``make reply`` send as that person, waits
DEMO_APPROVAL_WAIT_S (default 120 s) for ``make reply MSG="#N approve 1"`` (the agent then acts and
verifies the recovery), else clears the fault itself, and prints the incident's post-mortem once it resolved.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from oncall.console.passwords import hash_password
from oncall.settings import Settings
from stackctl.config import StackPorts, load_timing
from stackctl.demo_paging import (
    RESOLVE_TIMEOUT_S,
    show_paging,
    show_postmortem,
    wait_for_approval,
    wait_for_resolution,
)
from stackctl.processes import REPO_ROOT
from stackctl.stack import Stack, StackError

ERROR_RATIO_QUERY = (
    'sum(rate(http_errors_total{job="inventory"}[1m])) / sum(rate(http_requests_total{job="inventory"}[1m]))'
)
DEMO_ENGINEER = "whatsapp:+15550100001"
DEMO_CONSOLE_USER = "oncall"
FAULTS = {
    "errors": {"mode": "errors", "p_error": 0.6},
    "latency": {"mode": "latency", "latency_ms": 1500},
    "cpu": {"mode": "cpu", "cpu_ms": 300},
    "stall": {"mode": "stall", "stall_ms": 300},
    "oom_safe": {"mode": "oom_safe", "step_mb": 8, "max_mb": 400},
    "crash": {"mode": "crash", "replica": "inventory-2"},
}
SCENARIOS = {"bad-deploy": "1.4.1"}
"""DEMO_SCENARIO -> the version deployed (1.4.1 ships the pricing regression)."""
GOOD_VERSION = "1.4.0"
"""The release a bad-deploy scenario rolls back to when the demo clears the fault."""
DEMO_ROSTER = REPO_ROOT / "oncall.yaml"
console = Console()


def new_run_dir() -> Path:
    """Create ``run/<timestamp>`` and point ``run/latest`` at it."""
    run_root = REPO_ROOT / "run"
    run_dir = run_root / datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    latest = run_root / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(run_dir.name)
    return run_dir


def traffic_command(stack: Stack, fault: str | None, json_out: Path) -> list[str]:
    """The traffic_gen invocation: agentic (normal, then 80% to the buggy endpoint), or constant load while a
    fault is injected or a bad release deployed."""
    base = [sys.executable, "traffic_gen.py", "--url", stack.url("lb"), "--quiet", "--json", str(json_out)]
    if fault:
        return base + ["--profile", "constant", "--rps", "30", "--duration", "170"]
    return base + [
        "--profile",
        "agentic",
        "--normal-rps",
        "20",
        "--normal-duration",
        "10",
        "--error-rps",
        "30",
        "--error-duration",
        "160",
        "--duration",
        "170",
    ]


def prometheus_state(client: httpx.Client, stack: Stack) -> tuple[float | None, str]:
    """Current error ratio (0-1, None before data) and the state of the inventory alerts (inactive/pending/firing)."""
    ratio = None
    answer = client.get(f"{stack.url('prometheus')}/api/v1/query", params={"query": ERROR_RATIO_QUERY}).json()
    if answer["data"]["result"]:
        ratio = float(answer["data"]["result"][0]["value"][1])
    alerts = client.get(f"{stack.url('prometheus')}/api/v1/alerts").json()["data"]["alerts"]
    states = sorted({f"{a['labels']['alertname']}={a['state']}" for a in alerts})
    return ratio, ", ".join(states) or "inactive"


def latest_diagnosed_incident(client: httpx.Client, stack: Stack) -> dict | None:
    """The newest incident whose diagnosis has been sent on WhatsApp, with its messages, or None."""
    incidents = client.get(f"{stack.url('agent')}/incidents").json()["incidents"]
    for summary in incidents:
        detail = client.get(f"{stack.url('agent')}/incidents/{summary['id']}").json()
        outbound = [m for m in detail.get("messages", []) if m["direction"] == "out"]
        if detail.get("diagnosis") and outbound:
            return detail
    return None


def progress_table(started: float, ratio: float | None, alerts: str, incident: str) -> Table:
    """One-row live status: elapsed seconds, error ratio, alert states, incident state."""
    table = Table(show_header=True, header_style="bold")
    for column in ("elapsed", "error ratio (1m)", "alerts", "incident"):
        table.add_column(column)
    table.add_row(f"{time.monotonic() - started:5.0f}s", "-" if ratio is None else f"{ratio:.1%}", alerts, incident)
    return table


def wait_for_diagnosis(stack: Stack, timeout: float) -> dict:
    """Show live progress until the agent has diagnosed an incident and messaged the engineer.

    Raises TimeoutError after ``timeout`` seconds.
    """
    started = time.monotonic()
    with (
        httpx.Client(timeout=5.0, headers=stack.api_headers()) as client,
        Live(console=console, refresh_per_second=2) as live,
    ):
        while time.monotonic() - started < timeout:
            ratio, alerts = prometheus_state(client, stack)
            incident = latest_diagnosed_incident(client, stack)
            live.update(progress_table(started, ratio, alerts, "diagnosed" if incident else "waiting for alert"))
            if incident:
                return incident
            time.sleep(1.0)
    raise TimeoutError(f"no diagnosis within {timeout:.0f}s")


def show_diagnosis(stack: Stack, incident: dict) -> None:
    """Print the WhatsApp messages as the engineer sees them, and the incident URL."""
    outbound = [m for m in incident["messages"] if m["direction"] == "out"]
    for message in outbound:
        console.print(
            Panel(
                message["body"],
                title=f"WhatsApp to {message.get('to_number') or 'on-call'} ({message['channel']})",
                border_style="green",
            )
        )
    console.print(f"[bold]Incident:[/bold] {stack.url('agent')}/ui/incidents/{incident['id']}")
    console.print(f"[bold]API token:[/bold] {stack.api_token}  (ONCALL_API_TOKEN; send it as a Bearer token)")
    proposed = (incident.get("diagnosis") or {}).get("proposed_actions") or []
    if proposed:
        first = proposed[0]
        what = f"{first['action']} {first.get('target') or ''} {first.get('params') or ''}".strip()
        console.print(
            Panel(
                f"1. {what} ({first.get('risk')} risk)\n\n"
                f'Approve it as the on-call engineer:  make reply MSG="#{incident["id"]} approve 1"',
                title="Proposed action (nothing runs without your approval)",
                border_style="yellow",
            )
        )


def stop_traffic(proc: subprocess.Popen, json_out: Path) -> None:
    """End the traffic generator (SIGINT: it prints its summary) and show the summary line."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    if json_out.exists():
        summary = json.loads(json_out.read_text())
        console.print()
        console.print(
            "[dim]traffic: "
            f"{json.dumps({k: summary.get(k) for k in ('sent', 'achieved_rps', 'error_ratio', 'outcomes')})}[/dim]"
        )


def explore(stack: Stack, console_login: str) -> None:
    """Keep the stack up until Ctrl-C, showing where everything is."""
    console.print(
        Panel(
            "\n".join(
                [
                    f"console      {stack.url('agent')}/ui  ({console_login})",
                    f"agent        {stack.url('agent')}/incidents",
                    f"API token    curl -H 'Authorization: Bearer {stack.api_token}' {stack.url('agent')}/incidents",
                    f"Prometheus   {stack.url('prometheus')}/alerts",
                    f"Alertmanager {stack.url('alertmanager')}",
                    f"LB           {stack.url('lb')}/healthz",
                    f"process mgr  {stack.url('pm')}/instances",
                    f"logs         {stack.log_dir}",
                    "",
                    'Reply as the on-call engineer:  make reply MSG="create a jira task and assign it to Ravi"',
                    "Ctrl-C stops everything.",
                ]
            ),
            title="Stack is up",
            border_style="blue",
        )
    )
    signal.sigwait({signal.SIGINT, signal.SIGTERM})


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM handler: raise KeyboardInterrupt so the stack is stopped as on Ctrl-C."""
    raise KeyboardInterrupt


def demo_agent_env(settings: Settings) -> dict[str, str | None]:
    """Agent environment the demo adds to the user's settings (environment and .env win).

    Without a roster (``ONCALL_FILE``), the demo roster ``oncall.yaml`` decides who is paged. Without
    on-call numbers, a demo engineer's number is the fallback. Without a Twilio auth token, a per-run
    token lets ``make reply`` sign webhooks; replies then go to the console.
    """
    env: dict[str, str | None] = {}
    if settings.oncall_file is None:
        env["ONCALL_FILE"] = str(DEMO_ROSTER)
    if not settings.oncall_whatsapp_numbers:
        env["ONCALL_WHATSAPP_NUMBERS"] = DEMO_ENGINEER
    if not settings.twilio_auth_token:
        env["TWILIO_AUTH_TOKEN"] = secrets.token_hex(16)
    return env


def start_incident(stack: Stack, fault: str | None, scenario: str | None) -> None:
    """Inject ``fault``, deploy the ``scenario``'s bad release, or announce the agentic traffic's bug."""
    if scenario:
        time.sleep(10)
        version = SCENARIOS[scenario]
        console.print(f"[yellow]deploying[/yellow] inventory {version} (rolling, one replica at a time) ...")
        answer = httpx.post(f"{stack.url('pm')}/deploy", json={"version": version}, timeout=90)
        answer.raise_for_status()
        record = answer.json()
        moved = f"{record['from_version']} -> {record['to_version']} on {', '.join(record['replicas'])}"
        console.print(f"[yellow]deployed[/yellow] {moved}")
    elif fault:
        time.sleep(5)
        httpx.post(f"{stack.url('pm')}/fault", json=FAULTS[fault], timeout=10).raise_for_status()
        console.print(f"[yellow]injected fault[/yellow] {FAULTS[fault]}")
    else:
        console.print(
            "[yellow]traffic:[/yellow] agentic profile, 10 s normal, then 80% of requests hit /random-endpoint/error"
        )


def clear_incident(stack: Stack, fault: str | None, scenario: str | None) -> None:
    """End the incident's cause: the fault off, or the bad release rolled back (the buggy traffic has stopped)."""
    if scenario:
        console.print(f"[yellow]rolling back[/yellow] inventory to {GOOD_VERSION} ...")
        httpx.post(f"{stack.url('pm')}/deploy", json={"version": GOOD_VERSION}, timeout=90).raise_for_status()
    elif fault:
        httpx.post(f"{stack.url('pm')}/fault", json={"mode": "none"}, timeout=10).raise_for_status()
    console.print("[yellow]fault cleared[/yellow]: waiting for the alert to resolve and the post-mortem ...")


def resolve_and_show_postmortem(stack: Stack, incident: dict, fault: str | None, scenario: str | None) -> None:
    """Wait up to DEMO_APPROVAL_WAIT_S (default 120 s; 0 with DEMO_EXIT=1) for the engineer to approve a
    proposed action with ``make reply``; without an approval clear the fault the demo caused. Then wait for the
    incident to resolve and print its post-mortem (read with the API token)."""
    incident_id, proposed = int(incident["id"]), (incident.get("diagnosis") or {}).get("proposed_actions")
    wait_s = 0.0 if exit_after_diagnosis() else float(os.environ.get("DEMO_APPROVAL_WAIT_S", "120"))
    with httpx.Client(timeout=10.0, headers=stack.api_headers()) as client:
        approved = None
        if proposed and wait_s > 0:
            console.print(
                f'waiting up to {wait_s:.0f} s for your approval (make reply MSG="#{incident_id} approve 1") ...'
            )
            approved = wait_for_approval(client, stack.url("agent"), incident_id, wait_s)
        if approved is None:
            clear_incident(stack, fault, scenario)
        else:
            console.print(f"[green]approved[/green] {approved['action']}: the agent acts and verifies the recovery ...")
        wait_for_resolution(client, stack.url("agent"), incident_id, RESOLVE_TIMEOUT_S)
        show_postmortem(console, client, stack.url("agent"), incident_id)


def exit_after_diagnosis() -> bool:
    """DEMO_EXIT=1: run unattended and exit once the incident is resolved, instead of staying up."""
    return os.environ.get("DEMO_EXIT", "").lower() in {"1", "true", "yes"}


def demo_api_token(settings: Settings) -> str:
    """The agent's ONCALL_API_TOKEN for this run: the user's own, else a new random one (printed by the demo)."""
    if settings.oncall_api_token is not None:
        return settings.oncall_api_token.get_secret_value()
    return secrets.token_urlsafe(24)


def demo_console_login(settings: Settings) -> tuple[dict[str, str | None], str]:
    """Agent environment for the incident console, and the login line to print.

    Without console accounts in the user's settings, a responder ``oncall`` with a fresh random password
    (Argon2-hashed into ``CONSOLE_USERS``) is made for this run; without ``CONSOLE_SESSION_SECRET``, a
    per-run key signs the session cookies. The password is printed, never written to a file.
    """
    env: dict[str, str | None] = {}
    if not settings.console_session_secret:
        env["CONSOLE_SESSION_SECRET"] = secrets.token_urlsafe(32)
    if settings.console_enabled:
        return env, "log in with your CONSOLE_USERS account or CONSOLE_TOKEN"
    password = secrets.token_urlsafe(12)
    env["CONSOLE_USERS"] = f"{DEMO_CONSOLE_USER}:responder:{hash_password(password)}"
    return env, f"user {DEMO_CONSOLE_USER}, password {password}, responder"


def demo_settings() -> Settings | None:
    """The agent settings from the environment and ``.env``; None (the reason printed) when they are invalid."""
    try:
        return Settings(_env_file=REPO_ROOT / ".env")
    except ValidationError as exc:
        console.print(f"[red]invalid settings in the environment or .env:[/red]\n{exc}")
        return None


def start_run() -> Path:
    """A new run folder with this demo's PID in ``demo.pid`` (``make stop-demo`` stops it by that PID), and
    SIGTERM shutting the demo down as cleanly as Ctrl-C."""
    run_dir = new_run_dir()
    (run_dir / "demo.pid").write_text(str(os.getpid()))
    signal.signal(signal.SIGTERM, interrupt)
    return run_dir


def write_reply_file(run_dir: Path, stack: Stack, settings: Settings, agent_env: dict[str, str | None]) -> None:
    """``reply.json`` for ``make reply``: the agent's URL, who the reply is from (the first on-call number, or
    the demo engineer until paging names the person paged), the Twilio token it is signed with, the API token."""
    reply = {
        "agent_url": stack.url("agent"),
        "public_base_url": settings.public_base_url,
        "from": (settings.oncall_whatsapp_numbers or [DEMO_ENGINEER])[0],
        "token": agent_env.get("TWILIO_AUTH_TOKEN"),
        "api_token": stack.api_token,
    }
    (run_dir / "reply.json").write_text(json.dumps(reply))


def main() -> int:
    """Run the demo; exit code 0 when a diagnosis was shown, 1 otherwise."""
    fault = os.environ.get("DEMO_FAULT") or None
    scenario = os.environ.get("DEMO_SCENARIO") or None
    if fault and fault not in FAULTS:
        console.print(f"[red]DEMO_FAULT must be one of {sorted(FAULTS)}[/red]")
        return 2
    if scenario and scenario not in SCENARIOS:
        console.print(f"[red]DEMO_SCENARIO must be one of {sorted(SCENARIOS)}[/red]")
        return 2
    settings = demo_settings()
    if settings is None:
        return 2
    run_dir = start_run()
    console_env, console_login = demo_console_login(settings)
    agent_env = {**demo_agent_env(settings), **console_env}
    stack = Stack(
        run_dir=run_dir,
        ports=StackPorts(),
        timing=load_timing(),
        agent_env=agent_env,
        api_token=demo_api_token(settings),
    )
    write_reply_file(run_dir, stack, settings, agent_env)
    traffic = None
    try:
        console.rule("[bold]On-call agent demo")
        console.print(f"run folder: {run_dir}")
        for name, state in settings.integration_report().items():
            console.print(f"  {name}: {state}")
        console.print(f"  incident API token (ONCALL_API_TOKEN): {stack.api_token}")
        stack.start(replicas=2, step=lambda message: console.print(f"[green]✓[/green] {message}"))
        console.print(f"[bold]Incident console:[/bold] {stack.url('agent')}/ui  ({console_login})")
        json_out = run_dir / "traffic.json"
        with open(stack.log_dir / "traffic_gen.log", "ab") as log:  # the child keeps its own handle
            traffic = subprocess.Popen(  # noqa: S603 - our own traffic generator
                traffic_command(stack, fault or scenario, json_out), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        start_incident(stack, fault, scenario)
        incident = wait_for_diagnosis(stack, float(os.environ.get("DEMO_TIMEOUT_S", "170")))
        stop_traffic(traffic, json_out)
        show_diagnosis(stack, incident)
        show_paging(console, incident, run_dir)
        resolve_and_show_postmortem(stack, incident, fault, scenario)
        if exit_after_diagnosis():
            return 0
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        explore(stack, console_login)
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
        console.print("stopping the stack ...")
        stack.stop()
        console.print("stopped: every process ended, ports freed")


if __name__ == "__main__":
    sys.exit(main())
