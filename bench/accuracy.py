"""Diagnosis accuracy benchmark: inject real faults into the running demo stack and grade the agent.

    python bench/accuracy.py [--scenario ID ...] [--repeat N]

Brings the stack up once (demo alert timing, console WhatsApp channel), then for each scenario in
``bench/scenarios/*.yaml``: returns the stack to a healthy state, starts the scenario's traffic,
injects its faults (through the process manager, or directly on a replica so the change log has no
entry), waits for the real alert and the agent's diagnosis (controls get an alert posted as
Alertmanager would), cleans up, and scores the diagnosis against the scenario's ground truth:
fault type, the exact set of affected replicas, file:line for code bugs, false alarms on controls,
time from injection to diagnosis, and model tokens.

With ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` set (environment or ``.env``) the agent uses the
model and the same scenarios grade it; otherwise the offline engine is graded.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import httpx
import yaml
from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from common import markdown_table, update_readme, write_results  # noqa: E402  (bench/common.py)

from stackctl.config import load_timing  # noqa: E402
from stackctl.processes import wait_until  # noqa: E402
from stackctl.stack import Stack, free_stack_ports  # noqa: E402
from tests.e2e_support import attribute_access_line, subscript_line  # noqa: E402

SCENARIO_DIR = REPO_ROOT / "bench" / "scenarios"
ONCALL_NUMBER = "whatsapp:+15550100001"
NO_CAUSE = {"none", "unknown"}
SETTLE_TIMEOUT_S = 300.0
BASELINE_VERSION = "1.4.0"  # the inventory release every scenario starts from
WARMUP_S = 8.0
console = Console()


class Traffic(BaseModel):
    """traffic_gen.py settings of a scenario (rates in requests/s, durations in seconds); ``mix`` picks the
    service the traffic goes to (inventory through the load balancer, payments over its instances)."""

    mix: Literal["inventory", "payments"] = "inventory"
    profile: Literal["constant", "spike", "ramp", "sine", "ramp-spike", "agentic"]
    rps: float = 30
    normal_rps: float = 20
    normal_duration: float = 5
    error_rps: float = 30


class Setup(BaseModel):
    """Replica count and traffic a scenario starts from."""

    replicas: int = Field(ge=1, le=10)
    traffic: Traffic


class Fault(BaseModel):
    """One fault: a /faults mode with its parameters, on ``all`` replicas or one named replica.

    ``via: pm`` goes through the process manager (recorded in its change log); ``via: direct`` posts
    to the replica's own ``/faults`` (no change-log entry); ``via: payments`` posts to the payments
    instance's ``/admin/faults`` (``target`` payments-N or all). ``mode: deploy`` rolls the inventory
    replicas onto ``params.version`` through the process manager (``POST /deploy``).
    """

    mode: Literal["latency", "errors", "cpu", "oom_safe", "crash", "deploy"]
    params: dict[str, float | int | str] = Field(default_factory=dict)
    target: str = "all"
    via: Literal["pm", "direct", "payments"] = "pm"


class AlertPlan(BaseModel):
    """Which real alerts the scenario waits for, or the alert name posted for a control after ``after_s`` seconds."""

    wait_for: list[str] = Field(default_factory=list)
    synthetic: str | None = None
    after_s: float = 20


class Truth(BaseModel):
    """Ground truth: accepted fault types, the exact replica set, and for code bugs the file and line.

    The line is the one in ``affected_function`` that accesses an attribute of ``dereferenced_name``
    (found with ast by ``tests.e2e_support.attribute_access_line``, so edits above it do not matter), or
    that subscripts ``subscripted_name`` (a failing dictionary lookup).
    """

    fault_type: list[str]
    affected_replicas: list[str]
    affected_file: str | None = None
    affected_function: str | None = None
    dereferenced_name: str | None = None
    subscripted_name: str | None = None
    service: str = "inventory"
    version: str | None = None
    rollback_to: str | None = None

    def line(self) -> int | None:
        """The failing line the diagnosis must name, or None when the truth names none."""
        if not (self.affected_file and self.affected_function):
            return None
        path = REPO_ROOT / self.affected_file
        if self.dereferenced_name:
            return attribute_access_line(path, self.affected_function, self.dereferenced_name)
        if self.subscripted_name:
            return subscript_line(path, self.affected_function, self.subscripted_name)
        return None


class Scenario(BaseModel):
    """One ``bench/scenarios/*.yaml`` case."""

    id: str
    description: str
    setup: Setup
    faults: list[Fault]
    alert: AlertPlan
    observe_s: float = Field(gt=0)
    truth: Truth


def load_scenarios(ids: list[str] | None) -> list[Scenario]:
    """Parse every scenario file (or only ``ids``); raise SystemExit naming unknown ids."""
    scenarios = [Scenario.model_validate(yaml.safe_load(p.read_text())) for p in sorted(SCENARIO_DIR.glob("*.yaml"))]
    if ids:
        unknown = set(ids) - {s.id for s in scenarios}
        if unknown:
            raise SystemExit(f"unknown scenario ids: {sorted(unknown)}")
        scenarios = [s for s in scenarios if s.id in ids]
    return scenarios


def traffic_args(traffic: Traffic, duration: float) -> list[str]:
    """Command-line arguments for traffic_gen.py."""
    if traffic.profile == "agentic":
        error_duration = max(duration - traffic.normal_duration, 1)
        return [
            "--profile",
            "agentic",
            "--normal-rps",
            str(traffic.normal_rps),
            "--normal-duration",
            str(traffic.normal_duration),
            "--error-rps",
            str(traffic.error_rps),
            "--error-duration",
            str(error_duration),
            "--duration",
            str(duration),
        ]
    return ["--profile", traffic.profile, "--rps", str(traffic.rps), "--duration", str(duration)]


class Bench:
    """Runs scenarios against one stack and scores the agent's diagnoses."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.http = httpx.Client(timeout=15.0)

    def get(self, component: str, path: str, **params: object) -> dict:
        """GET JSON from a stack component."""
        headers = self.stack.api_headers() if component == "agent" else None
        response = self.http.get(f"{self.stack.url(component)}{path}", params=params or None, headers=headers)
        response.raise_for_status()
        return response.json()

    def replica_urls(self) -> dict[str, str]:
        """Replica name -> base URL, from the process manager."""
        return {i["name"]: i["url"] for i in self.get("pm", "/instances")["instances"]}

    def healthy(self) -> bool:
        """No pending/firing inventory alert in Prometheus, no firing incident at the agent, every replica running."""
        alerts = self.get("prometheus", "/api/v1/alerts")["data"]["alerts"]
        firing_incidents = [i for i in self.get("agent", "/incidents")["incidents"] if i["status"] != "resolved"]
        running = all(i["state"] == "running" for i in self.get("pm", "/instances")["instances"])
        return not alerts and not firing_incidents and running

    def reset(self, scenario: Scenario) -> None:
        """Scale to the scenario's replica count, put the inventory back on the baseline release, clear every
        fault (inventory and payments), and wait until the stack is healthy."""
        pm = self.stack.url("pm")
        self.http.post(f"{pm}/scale", json={"replicas": scenario.setup.replicas}, timeout=60).raise_for_status()
        if self.get("pm", "/deploys")["current_version"] != BASELINE_VERSION:
            self.http.post(f"{pm}/deploy", json={"version": BASELINE_VERSION}, timeout=120).raise_for_status()
        self.http.post(f"{pm}/fault", json={"mode": "none"}).raise_for_status()
        for url in self.stack.payments_urls():
            self.http.post(f"{url}/admin/faults", json={"mode": "none"}).raise_for_status()
        wait_until(self.healthy, SETTLE_TIMEOUT_S, interval=2.0, what="a healthy stack (no alerts, no firing incident)")

    def inject(self, fault: Fault) -> None:
        """Apply one fault through the process manager, directly on the replica, or on a payments instance;
        or deploy a release."""
        body = {"mode": fault.mode, **fault.params}
        if fault.mode == "deploy":
            answer = self.http.post(f"{self.stack.url('pm')}/deploy", json=fault.params, timeout=120)
            answer.raise_for_status()
            return
        if fault.via == "pm":
            target = {} if fault.target == "all" else {"replica": fault.target}
            self.http.post(f"{self.stack.url('pm')}/fault", json={**body, **target}).raise_for_status()
            return
        if fault.via == "payments":
            urls = dict(zip((f"payments-{n}" for n in range(1, 10)), self.stack.payments_urls(), strict=False))
            for name in urls if fault.target == "all" else [fault.target]:
                self.http.post(f"{urls[name]}/admin/faults", json=body).raise_for_status()
            return
        urls = self.replica_urls()
        for name in urls if fault.target == "all" else [fault.target]:
            self.http.post(f"{urls[name]}/faults", json=body).raise_for_status()

    def post_alert(self, alertname: str, status: str, started: str, service: str = "inventory") -> None:
        """POST an Alertmanager webhook payload v4 for a control scenario's alert."""
        labels = {"alertname": alertname, "service": service, "severity": "critical"}
        alert = {
            "status": status,
            "labels": labels,
            "annotations": {"summary": f"{alertname} (accuracy control)"},
            "startsAt": started,
            "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else datetime.now(UTC).isoformat(),
            "generatorURL": f"{self.stack.url('prometheus')}/graph",
            "fingerprint": f"{abs(hash(alertname)) % 16**16:016x}",
        }
        body = {
            "receiver": "oncall-agent",
            "status": status,
            "alerts": [alert],
            "groupLabels": {"alertname": alertname, "service": service},
            "commonLabels": labels,
            "commonAnnotations": {},
            "externalURL": self.stack.url("alertmanager"),
            "version": "4",
            "groupKey": f'{{}}:{{alertname="{alertname}", service="{service}"}}',
            "truncatedAlerts": 0,
        }
        self.http.post(f"{self.stack.url('agent')}/alerts", json=body).raise_for_status()

    def diagnosis_after(self, since: float) -> dict | None:
        """The first incident detail whose diagnosis was made after ``since`` (epoch s), or None."""
        for summary in sorted(self.get("agent", "/incidents")["incidents"], key=lambda i: i["id"]):
            detail = self.get("agent", f"/incidents/{summary['id']}")
            if detail.get("diagnosis") and (detail.get("diagnosed_at") or 0) >= since:
                return detail
        return None

    def run(self, scenario: Scenario) -> dict:
        """Run one scenario from a healthy state and return its score row."""
        self.reset(scenario)
        duration = scenario.observe_s + WARMUP_S + 30
        mix = scenario.setup.traffic.mix
        urls = [self.stack.url("lb")] if mix == "inventory" else self.stack.payments_urls()
        with open(self.stack.log_dir / f"traffic-{scenario.id}.log", "ab") as log:  # the child keeps its own handle
            traffic = subprocess.Popen(
                [
                    sys.executable,
                    "traffic_gen.py",
                    "--mix",
                    mix,
                    *[arg for url in urls for arg in ("--url", url)],
                    "--quiet",
                    *traffic_args(scenario.setup.traffic, duration),
                ],
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        synthetic_started = None
        try:
            time.sleep(
                scenario.setup.traffic.normal_duration if scenario.setup.traffic.profile == "agentic" else WARMUP_S
            )
            injected_at = time.time()
            for fault in scenario.faults:
                self.inject(fault)
            if scenario.alert.synthetic:
                time.sleep(scenario.alert.after_s)
                synthetic_started = datetime.now(UTC).isoformat()
                self.post_alert(scenario.alert.synthetic, "firing", synthetic_started, scenario.truth.service)
            try:
                detail = wait_until(
                    lambda: self.diagnosis_after(injected_at), scenario.observe_s, interval=1.0, what="diagnosis"
                )
            except TimeoutError:
                detail = None
            return score(scenario, detail, injected_at)
        finally:
            traffic.terminate()
            traffic.wait(timeout=15)
            self.http.post(f"{self.stack.url('pm')}/fault", json={"mode": "none"})
            if synthetic_started:
                self.post_alert(scenario.alert.synthetic, "resolved", synthetic_started, scenario.truth.service)


def deploy_named(truth: Truth, diagnosis: dict) -> bool:
    """For a bad-deploy truth: the diagnosis names the deployed version and suggests the rollback; and
    it names the scenario's service. True when the truth names no deploy and the service matches."""
    if truth.service != diagnosis.get("affected_service") and not set(truth.fault_type) <= NO_CAUSE:
        return False
    if truth.version is None:
        return True
    rollback = any(
        a.get("action") == "rollback" and (a.get("params") or {}).get("version") == truth.rollback_to
        for a in diagnosis.get("proposed_actions") or []
    )
    return truth.version in diagnosis.get("summary", "") and rollback


def score(scenario: Scenario, detail: dict | None, injected_at: float) -> dict:
    """Grade one diagnosis against the scenario's truth.

    ``correct`` needs the fault type in the accepted set, the exact replica set, and file:line for
    code bugs. On a control (truth none/unknown), no diagnosis at all is also correct (no false alarm).
    """
    truth = scenario.truth
    control = set(truth.fault_type) <= NO_CAUSE
    row: dict = {
        "id": scenario.id,
        "expected": "/".join(truth.fault_type),
        "expected_replicas": truth.affected_replicas,
    }
    if detail is None:
        row.update(
            got=None,
            replicas=None,
            engine=None,
            type_ok=control,
            replicas_ok=control,
            line_ok=None,
            false_alarm=False,
            seconds_to_diagnosis=None,
            tokens=None,
            incident_id=None,
        )
    else:
        diagnosis = detail["diagnosis"]
        investigations = detail.get("investigations", [])
        tokens = sum((i.get("prompt_tokens") or 0) + (i.get("completion_tokens") or 0) for i in investigations)
        line = truth.line()
        line_ok = None
        if line is not None:
            line_ok = (diagnosis.get("affected_file"), diagnosis.get("affected_line")) == (truth.affected_file, line)
        row.update(
            got=diagnosis["fault_type"],
            replicas=sorted(diagnosis.get("affected_replicas", [])),
            engine=diagnosis.get("engine"),
            type_ok=diagnosis["fault_type"] in truth.fault_type and deploy_named(truth, diagnosis),
            replicas_ok=sorted(diagnosis.get("affected_replicas", [])) == sorted(truth.affected_replicas),
            line_ok=line_ok,
            false_alarm=control and diagnosis["fault_type"] not in NO_CAUSE,
            seconds_to_diagnosis=round(detail["diagnosed_at"] - injected_at, 1),
            tokens=tokens,
            incident_id=detail["id"],
        )
    row["correct"] = bool(row["type_ok"] and row["replicas_ok"] and row["line_ok"] is not False)
    return row


HEADERS = (
    "scenario",
    "expected",
    "got",
    "replicas",
    "type",
    "replicas ok",
    "file:line",
    "false alarm",
    "s to diagnosis",
    "tokens",
)


def table_cells(row: dict) -> list[str]:
    """One score row as the cells of ``HEADERS`` (terminal and README tables alike)."""
    return [
        row["id"],
        row["expected"],
        str(row["got"]),
        ",".join(row["replicas"] or []) or "-",
        mark(row["type_ok"]),
        mark(row["replicas_ok"]),
        "-" if row["line_ok"] is None else mark(row["line_ok"]),
        "yes" if row["false_alarm"] else "no",
        "-" if row["seconds_to_diagnosis"] is None else f"{row['seconds_to_diagnosis']:.1f}",
        str(row["tokens"] or "-"),
    ]


def render_table(rows: list[dict]) -> Table:
    """Rich table of score rows."""
    table = Table(title="Diagnosis accuracy")
    for column in HEADERS:
        table.add_column(column)
    for row in rows:
        table.add_row(*table_cells(row))
    return table


def mark(ok: bool | None) -> str:
    """✓ / ✗ for a score cell."""
    return "✓" if ok else "✗"


def markdown(rows: list[dict], engine: str, when: str) -> str:
    """The README section of a run: the score line and the table."""
    correct = sum(r["correct"] for r in rows)
    return f"Engine `{engine}`, {when}: **{correct}/{len(rows)} correct**.\n\n" + markdown_table(
        HEADERS, [table_cells(r) for r in rows]
    )


def model_environment() -> dict[str, str | None]:
    """OPENAI_* settings from the environment or .env, so the graded agent uses the model when one is configured."""
    from oncall.settings import Settings

    settings = Settings(_env_file=REPO_ROOT / ".env")
    env: dict[str, str | None] = {"OPENAI_MODEL": settings.openai_model}
    if settings.openai_api_key:
        env["OPENAI_API_KEY"] = settings.openai_api_key.get_secret_value()
    if settings.openai_base_url:
        env["OPENAI_BASE_URL"] = settings.openai_base_url
    return env


def main(argv: list[str] | None = None) -> int:
    """Run the selected scenarios ``--repeat`` times; print the table; write JSON and the README section."""
    parser = argparse.ArgumentParser(description="Diagnosis accuracy benchmark on the live demo stack")
    parser.add_argument("--scenario", action="append", help="scenario id (repeatable); default: all")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    scenarios = load_scenarios(args.scenario)
    run_dir = REPO_ROOT / "run" / f"accuracy-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    stack = Stack(
        run_dir=run_dir,
        ports=free_stack_ports(),
        timing=load_timing(),
        isolated=True,
        agent_env={"ONCALL_WHATSAPP_NUMBERS": ONCALL_NUMBER, **model_environment()},
    )
    console.print(f"starting the stack in {run_dir} ...")
    stack.start(replicas=2, step=lambda message: console.print(f"  {message}"))
    rows: list[dict] = []
    try:
        bench = Bench(stack)
        for round_index in range(args.repeat):
            for scenario in scenarios:
                console.print(
                    f"[bold]{scenario.id}[/bold] (round {round_index + 1}/{args.repeat}): {scenario.description}"
                )
                row = bench.run(scenario)
                console.print(
                    f"  -> got {row['got']} {row['replicas']} in {row['seconds_to_diagnosis']} s: "
                    f"{'correct' if row['correct'] else 'WRONG'}"
                )
                rows.append(row)
    finally:
        stack.stop()
    engine = next((r["engine"] for r in rows if r["engine"]), "offline")
    engine_key = "offline" if engine == "offline" else "model"
    console.print(render_table(rows))
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    name = (
        f"accuracy-{engine_key}" if not args.scenario else f"accuracy-{engine_key}-partial"
    )  # a subset never replaces the full run
    write_results(name, {"engine": engine, "date": when, "repeat": args.repeat, "rows": rows})
    if not args.scenario:
        update_readme(f"accuracy-{engine_key}", markdown(rows, engine, when))
    return 0 if all(r["correct"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
