"""Diagnosis accuracy benchmark: inject real faults into the running demo stack and grade the agent.

    python bench/accuracy.py [--scenario ID ...] [--repeat N (default 3)] [--resume run/accuracy-.../rows.jsonl]

Brings the stack up once (demo alert timing, console WhatsApp channel), then for each scenario in
``bench/scenarios/*.yaml`` (``accuracy_scenarios``) and each round: returns the stack to a healthy
state, starts the scenario's traffic, injects its faults (through the process manager, directly on a
replica so the change log has no entry, a rolling deploy, or a traffic surge), waits for the real
alerts and the agent's diagnoses (controls get an alert posted as Alertmanager would), cleans up, and
grades each alert's incident against the scenario's ground truth (``accuracy_report``): fault type,
the exact set of affected replicas, file:line for code bugs, priority where the truth names it,
false alarms on controls, the stated confidence (Brier score, reliability per bucket), time from
injection to diagnosis and model tokens.

Every graded row is appended to ``rows.jsonl`` in the run folder as soon as it is known, with the
incident's diagnosis and round-1 tool results under ``recordings/`` (for unit-test fixtures);
``--resume`` reads such a file and runs only the (scenario, round) pairs it lacks, so an interrupted
full run continues where it stopped.

With ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` set (environment or ``.env``) the agent uses the
model and the same scenarios grade it; otherwise the offline engine is graded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import accuracy_report as report  # noqa: E402  (bench/accuracy_report.py)
import actions  # noqa: E402  (bench/actions.py: action scoring)
from accuracy_scenarios import Fault, Scenario, load_scenarios, traffic_args  # noqa: E402
from common import markdown_table, update_readme, write_results  # noqa: E402  (bench/common.py)

from stackctl.config import load_timing  # noqa: E402
from stackctl.processes import wait_until  # noqa: E402
from stackctl.stack import Stack, free_stack_ports  # noqa: E402

ONCALL_NUMBER = "whatsapp:+15550100001"
SETTLE_TIMEOUT_S = 300.0
BASELINE_VERSION = "1.4.0"  # the inventory release every scenario starts from
# Every replica serves at most 200 req/s (4 backend connections held 20 ms each, inventory_service.BackendPool),
# so a surge means the same on any machine: 3 replicas serve 120 req/s within capacity and queue at 1,000.
REPLICA_CAPACITY_ENV = {"BACKEND_CONNECTIONS": "4", "BACKEND_TIME_MS": "20"}
RECORDED_OUTPUT_CHARS = "200000"  # the offline agent keeps whole tool results in its audit trail (recordings)
console = Console()


class Bench:
    """Runs scenarios against one stack and grades the agent's diagnoses."""

    def __init__(self, stack: Stack, run_dir: Path) -> None:
        self.stack = stack
        self.run_dir = run_dir
        self.http = httpx.Client(timeout=15.0)
        self.traffic: list[subprocess.Popen] = []

    def get(self, component: str, path: str, **params: str | int | float) -> Any:
        """GET JSON from a stack component."""
        headers = self.stack.api_headers() if component == "agent" else None
        response = self.http.get(f"{self.stack.url(component)}{path}", params=params or None, headers=headers)
        response.raise_for_status()
        return response.json()

    def replica_urls(self) -> dict[str, str]:
        """Replica name -> base URL, from the process manager."""
        return {i["name"]: i["url"] for i in self.get("pm", "/instances")["instances"]}

    def unhealthy(self) -> list[str]:
        """What keeps the stack from a clean start: pending/firing alerts in Prometheus, incidents the agent has
        not resolved, replicas neither running nor stopped on purpose (empty when healthy)."""
        alerts = self.get("prometheus", "/api/v1/alerts")["data"]["alerts"]
        incidents = [i for i in self.get("agent", "/incidents")["incidents"] if i["status"] != "resolved"]
        # a replica a scale-down stopped stays listed as "stopped": only crashed or restarting ones count
        stopped = [i for i in self.get("pm", "/instances")["instances"] if i["state"] not in ("running", "stopped")]
        return (
            [f"alert {a['labels'].get('alertname')} {a['state']}" for a in alerts]
            + [f"incident #{i['id']} {i['title'][:60]} {i['status']}" for i in incidents]
            + [f"replica {i['name']} {i['state']}" for i in stopped]
        )

    def healthy(self) -> bool:
        """No pending/firing alert in Prometheus, no firing incident at the agent, every replica running."""
        return not self.unhealthy()

    def firing(self, alertname: str) -> bool:
        """True when Prometheus shows ``alertname`` firing."""
        alerts = self.get("prometheus", "/api/v1/alerts")["data"]["alerts"]
        return any(a["labels"].get("alertname") == alertname and a["state"] == "firing" for a in alerts)

    def clear_faults(self) -> None:
        """Clear every fault: inventory (process manager and each replica) and payments."""
        self.http.post(f"{self.stack.url('pm')}/fault", json={"mode": "none"}).raise_for_status()
        for url in self.replica_urls().values():
            # a replica stopped by a scale-down between the listing and the post has no fault left
            with contextlib.suppress(httpx.TransportError):
                self.http.post(f"{url}/faults", json={"mode": "none"})
        for url in self.stack.payments_urls():
            self.http.post(f"{url}/admin/faults", json={"mode": "none"}).raise_for_status()

    def pm_operation(self, path: str, body: dict[str, Any], timeout_s: float) -> None:
        """POST a process-manager operation, again while it answers 409 (another operation, e.g. the restart of a
        crashed replica, is running) or fails, for up to ``SETTLE_TIMEOUT_S``.

        Raises:
            TimeoutError: still refused after the wait (the message carries the last error).
        """

        def attempt() -> bool:
            answer = self.http.post(f"{self.stack.url('pm')}{path}", json=body, timeout=timeout_s)
            if answer.status_code == 409:
                return False
            answer.raise_for_status()
            return True

        wait_until(attempt, SETTLE_TIMEOUT_S, interval=1.0, what=f"process manager free for {path}")

    def reset(self, scenario: Scenario) -> None:
        """Scale to the scenario's replica count, put the inventory back on the baseline release, clear every
        fault, and wait until the stack is healthy."""
        self.pm_operation("/scale", {"replicas": scenario.setup.replicas}, 60)
        if self.get("pm", "/deploys")["current_version"] != BASELINE_VERSION:
            self.pm_operation("/deploy", {"version": BASELINE_VERSION}, 120)
        self.clear_faults()
        try:
            wait_until(self.healthy, SETTLE_TIMEOUT_S, interval=2.0, what="a healthy stack")
        except TimeoutError:  # run the case anyway (graded as it comes out), saying what was left over
            console.print(f"  [yellow]not healthy after {SETTLE_TIMEOUT_S:g} s: {'; '.join(self.unhealthy())}[/yellow]")

    def start_traffic(self, scenario: Scenario, args: list[str], name: str) -> None:
        """Run traffic_gen.py with ``args`` towards the scenario's service (bounded by its ``--duration``)."""
        mix = scenario.setup.traffic.mix
        urls = [self.stack.url("lb")] if mix == "inventory" else self.stack.payments_urls()
        with open(self.stack.log_dir / f"traffic-{scenario.id}-{name}.log", "ab") as log:  # the child keeps it
            self.traffic.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "traffic_gen.py",
                        "--mix",
                        mix,
                        *[arg for url in urls for arg in ("--url", url)],
                        "--quiet",
                        *args,
                    ],
                    cwd=REPO_ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )

    def inject(self, scenario: Scenario, fault: Fault) -> None:
        """Apply one fault through the process manager, directly on the replica, or on a payments instance;
        or deploy a release; or start a traffic surge."""
        body = {"mode": fault.mode, **fault.params}
        if fault.mode == "surge":
            rps, duration = float(fault.params["rps"]), float(fault.params["duration_s"])
            self.start_traffic(
                scenario, ["--profile", "constant", "--rps", str(rps), "--duration", str(duration)], "surge"
            )
            return
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

    def diagnosed_since(self, since: float) -> list[dict[str, Any]]:
        """Incident details whose diagnosis was made after ``since`` (epoch s), oldest diagnosis first."""
        found = []
        for summary in self.get("agent", "/incidents")["incidents"]:
            if (summary.get("updated_at") or 0) < since or not summary.get("fault_type"):
                continue  # not touched since, or not diagnosed (the list shows the diagnosis' fault type)
            detail = self.get("agent", f"/incidents/{summary['id']}")
            if detail.get("diagnosis") and (detail.get("diagnosed_at") or 0) >= since:
                found.append(detail)
        return sorted(found, key=lambda d: d["diagnosed_at"])

    def graded(self, scenario: Scenario, since: float) -> dict[str, dict[str, Any]] | None:
        """The graded alerts' incident details once every awaited one is diagnosed (None until then): every
        alert of ``each``, else the first diagnosed of ``wait_for`` (or the synthetic alert)."""
        by_alert: dict[str, dict[str, Any]] = {}
        for detail in self.diagnosed_since(since):
            name = report.alertname_of(detail)
            if name in scenario.alert.graded() and name not in by_alert:
                by_alert[name] = detail
        if scenario.alert.each:
            return by_alert if set(scenario.alert.each) <= set(by_alert) else None
        first = next(iter(by_alert.items()), None)
        return dict([first]) if first else None

    def _wait_and_clear(self, scenario: Scenario, deadline: float) -> None:
        """Wait until ``clear_on`` fires, then clear the faults (a fault gone just before the investigation)."""
        name = scenario.alert.clear_on
        if name is None:
            return
        while time.time() < deadline and not self.firing(name):
            time.sleep(0.5)
        self.clear_faults()

    def run(self, scenario: Scenario, round_no: int) -> list[dict[str, Any]]:
        """Run one scenario from a healthy state and return its graded rows."""
        self.reset(scenario)
        setup = scenario.setup
        warmup = setup.traffic.normal_duration if setup.traffic.profile == "agentic" else setup.warmup_s
        self.start_traffic(scenario, traffic_args(setup.traffic, scenario.observe_s + warmup + 30), "base")
        synthetic_started = None
        try:
            time.sleep(warmup)
            injected_at = time.time()
            for fault in scenario.faults:
                self.inject(scenario, fault)
            if scenario.alert.synthetic:
                time.sleep(scenario.alert.after_s)
                synthetic_started = datetime.now(UTC).isoformat()
                self.post_alert(scenario.alert.synthetic, "firing", synthetic_started, scenario.truth.service)
            self._wait_and_clear(scenario, injected_at + scenario.observe_s)
            try:
                remaining = max(1.0, injected_at + scenario.observe_s - time.time())
                details = wait_until(
                    lambda: self.graded(scenario, injected_at), remaining, interval=1.0, what="diagnosis"
                )
            except TimeoutError:
                details = self.partial(scenario, injected_at)
            return self.rows(scenario, round_no, details, injected_at)
        finally:
            for process in self.traffic:
                process.terminate()
                process.wait(timeout=15)
            self.traffic.clear()
            self.clear_faults()
            if synthetic_started and scenario.alert.synthetic:
                self.post_alert(scenario.alert.synthetic, "resolved", synthetic_started, scenario.truth.service)

    def partial(self, scenario: Scenario, since: float) -> dict[str, dict[str, Any]]:
        """What was diagnosed by the deadline (awaited alerts without a diagnosis are graded as missing)."""
        found: dict[str, dict[str, Any]] = {}
        for detail in self.diagnosed_since(since):
            name = report.alertname_of(detail)
            if name in scenario.alert.graded() and name not in found:
                found[name] = detail
        return found if scenario.alert.each else dict(list(found.items())[:1])

    def rows(
        self, scenario: Scenario, round_no: int, details: dict[str, dict[str, Any]], injected_at: float
    ) -> list[dict[str, Any]]:
        """Grade each detail (and each awaited alert never diagnosed); record what the agent saw."""
        rows = [
            {
                **report.score(scenario, round_no, detail, injected_at),
                **actions.score_actions(self, scenario, alertname, detail, ONCALL_NUMBER),
            }
            for alertname, detail in details.items()
        ]
        awaited = list(scenario.alert.each) or ([] if details else scenario.alert.graded()[:1])
        rows += [report.missing_row(scenario, round_no, name) for name in awaited if name not in details]
        if scenario.truth.control:  # any incident naming a fault during a control is a false alarm
            others = [
                d for d in self.diagnosed_since(injected_at) if d["diagnosis"]["fault_type"] not in ("none", "unknown")
            ]
            for row in rows:
                row["false_alarm"] = row["false_alarm"] or bool(others)
                row["correct"] = row["correct"] and not others
        for name, detail in details.items():
            self.record(scenario, round_no, name, detail)
        return rows

    def record(self, scenario: Scenario, round_no: int, alertname: str, detail: dict[str, Any]) -> None:
        """Keep the diagnosis and its round-1 tool results (``recordings/<scenario>-r<round>-<alert>.json``)."""
        folder = self.run_dir / "recordings"
        folder.mkdir(parents=True, exist_ok=True)
        calls = [
            {k: c.get(k) for k in ("tool", "call_id", "arguments", "ok", "result", "error", "started_at")}
            for c in detail.get("tool_calls", [])
            if c.get("round") == 1
        ]
        keep = {k: detail.get(k) for k in ("id", "group_labels", "alerts", "diagnosis", "diagnosed_at")}
        (folder / f"{scenario.id}-r{round_no}-{alertname}.json").write_text(
            json.dumps({**keep, "tool_calls": calls}, indent=1)
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
    if not settings.llm_enabled:
        env["TOOL_OUTPUT_MAX_CHARS"] = RECORDED_OUTPUT_CHARS
    return env


def render(scenarios: list[Scenario], rows: list[dict[str, Any]]) -> Table:
    """Rich table of the per-scenario summary."""
    table = Table(title="Diagnosis accuracy")
    for column in report.SUMMARY_HEADERS:
        table.add_column(column)
    for entry in report.scenario_summary(scenarios, rows):
        table.add_row(*report.summary_cells(entry))
    return table


def markdown(scenarios: list[Scenario], rows: list[dict[str, Any]], engine: str, when: str, took_s: float) -> str:
    """The README section of a run: totals, the per-scenario table and the calibration table."""
    totals = report.headline(scenarios, rows)
    count, runs = totals["scenarios"], totals["runs"]
    line = (
        f"Engine `{engine}`, {when}: **{count} scenarios x {runs // max(1, count)} runs, "
        f"{totals['runs_passed']}/{runs} runs correct; {totals['scenarios_passing_2_of_3']}/{count} scenarios "
        f"correct in at least 2/3 of their runs; {totals['control_false_alarms']} false alarms on controls; "
        f"Brier score {totals['brier']}; median {totals['median_s']} s from injection to diagnosis** "
        f"(full run {took_s / 60:.0f} min)."
    )
    summary = markdown_table(
        report.SUMMARY_HEADERS, [report.summary_cells(e) for e in report.scenario_summary(scenarios, rows)]
    )
    calibration = markdown_table(
        report.CALIBRATION_HEADERS, [report.calibration_cells(e) for e in report.reliability(rows)]
    )
    acted = markdown_table(
        ("scenario", "round", "alert", *actions.HEADERS),
        [[r["id"], str(r["round"]), str(r.get("alertname")), *actions.cells(r)] for r in rows if "action_ok" in r],
    )
    return (
        f"{line}\n\n{summary}\n\nCalibration (stated confidence against the share correct):\n\n{calibration}"
        f"\n\nActions (the first proposed action, approved and verified):\n\n{acted}"
    )


def load_rows(path: Path | None) -> list[dict[str, Any]]:
    """Rows of an earlier (interrupted) run's ``rows.jsonl``, or none."""
    if path is None or not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    """Run the selected scenarios ``--repeat`` times; print the tables; write JSON and the README section."""
    parser = argparse.ArgumentParser(description="Diagnosis accuracy benchmark on the live demo stack")
    parser.add_argument("--scenario", action="append", help="scenario id (repeatable); default: all")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario (default 3)")
    parser.add_argument("--resume", type=Path, help="rows.jsonl of an interrupted run: run only what it lacks")
    args = parser.parse_args(argv)
    scenarios = load_scenarios(args.scenario)
    rows = load_rows(args.resume)
    done = {(r["id"], r["round"]) for r in rows}
    run_dir = args.resume.parent if args.resume else REPO_ROOT / "run" / f"accuracy-{datetime.now():%Y%m%d-%H%M%S}"
    stack = Stack(
        run_dir=run_dir / f"stack-{int(time.time())}",
        ports=free_stack_ports(),
        timing=load_timing(),
        isolated=True,
        replica_env=REPLICA_CAPACITY_ENV,
        agent_env={"ONCALL_WHATSAPP_NUMBERS": ONCALL_NUMBER, **actions.AGENT_ENV, **model_environment()},
    )
    console.print(f"starting the stack in {stack.run_dir} ...")
    started = time.time() - sum(r.get("_took_s", 0.0) for r in rows)
    stack.start(replicas=2, step=lambda message: console.print(f"  {message}"))
    try:
        bench = Bench(stack, run_dir)
        with open(run_dir / "rows.jsonl", "a") as out:
            for round_no in range(1, args.repeat + 1):
                for scenario in scenarios:
                    if (scenario.id, round_no) in done:
                        continue
                    console.print(
                        f"[bold]{scenario.id}[/bold] (round {round_no}/{args.repeat}): {scenario.description}"
                    )
                    t0 = time.time()
                    new = bench.run(scenario, round_no)
                    for row in new:
                        row["_took_s"] = round((time.time() - t0) / len(new), 1)
                        out.write(json.dumps(row) + "\n")
                        out.flush()
                        verdict = "correct" if row["correct"] else "WRONG"
                        console.print(
                            f"  -> {row['alertname']}: got {row['got']} {row['replicas']} at {row['confidence']} "
                            f"({row['priority']}) in {row['seconds_to_diagnosis']} s: {verdict}"
                        )
                    rows += new
    finally:
        stack.stop()
    took = time.time() - started
    engine = next((r["engine"] for r in rows if r["engine"]), "offline")
    engine_key = "offline" if engine == "offline" else "model"
    console.print(render(scenarios, rows))
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    partial = bool(args.scenario)  # a subset never replaces the full run
    name = f"accuracy-{engine_key}" + ("-partial" if partial else "")
    totals = report.headline(scenarios, rows)
    write_results(
        name,
        {
            "engine": engine,
            "date": when,
            "repeat": args.repeat,
            "took_s": round(took),
            "totals": totals,
            "scenarios": report.scenario_summary(scenarios, rows),
            "calibration": report.reliability(rows),
            "rows": rows,
        },
    )
    if not partial:
        update_readme(f"accuracy-{engine_key}", markdown(scenarios, rows, engine, when, took))
    return 0 if all(r["correct"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
