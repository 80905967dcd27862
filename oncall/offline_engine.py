"""Deterministic investigation engine used without a model (or when the model fails).

It drives the same tools through the same path as the model loop (``execute_tool_calls`` with
planned calls, every call recorded):

1. in parallel: ``fetch_logs``, ``compute_error_rate``, ``get_recent_changes`` and
   ``query_prometheus`` for per-replica p99 latency, CPU, RSS, RSS growth, ``up`` and restarts;
2. ``fetch_code_from_github`` for the file:line the dominant stack trace points at (code exceptions only);
3. ``send_diagnosis``.

Classification rests only on the collected evidence (metric values, log exception types and
locations, process-manager crash records), never on alert or scenario names. Every threshold is a
named constant below with its unit.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from oncall.diagnosis import Diagnosis, Evidence, FaultType
from oncall.runtime import AgentRuntime
from oncall.toolloop import ToolCallRecord, ToolSpec, execute_tool_calls
from oncall.tools import build_tools

ENGINE_NAME = "offline"
SERVICE = "inventory"

# ---- evidence windows
LOG_WINDOW_S = 300  # seconds of ERROR logs read
LOG_LIMIT = 1000  # log entries read at most
CHANGES_WINDOW_S = 900  # seconds of process-manager changes read
CODE_CONTEXT_LINES = 8  # source lines shown around the failing line
ERROR_RATE_WINDOW = "1m"  # PromQL rate window

# ---- thresholds
ERROR_RATIO_ELEVATED = 0.05  # ratio 0-1; the healthy baseline is ~0.01 (5 % flaky /random-endpoint, 20 % of traffic)
ERROR_RATIO_P1 = 0.5  # ratio 0-1 of all requests failing that makes an error incident P1
ERROR_RATIO_P2 = 0.2  # ratio 0-1 for P2
MIN_ERROR_LOGS = 3  # log entries of one exception group needed to name it the cause
LOG_CURRENT_S = 60  # seconds; an exception group last logged longer ago has stopped: context, not the cause
SECONDARY_MIN_SCORE = 0.7  # 0-1; a second, independent finding this strong adds its replicas to affected_replicas
P99_HIGH_S = 0.5  # seconds; healthy p99 is tens of milliseconds
CPU_HIGH_CORES = 0.6  # CPU seconds per second; the event loop saturates at 1 core, "near 0.8" and above
CPU_BUSY_CORES = 0.1  # CPU seconds per second; above it, with CPU_OUTLIER_FACTOR, a replica is a CPU outlier
CPU_OUTLIER_FACTOR = 4.0  # times the other replicas' median CPU that makes a busy replica an outlier
RSS_HIGH_BYTES = 200e6  # bytes (the InventoryMemoryGrowth alert's threshold); a healthy replica uses well under 100 MB
RSS_GROWTH_BYTES = 64 * 2**20  # bytes of RSS growth over the 5 min delta window
CRASH_RECENT_S = (
    180  # seconds; a crash the replica recovered from counts as the cause this long (a down replica always counts)
)
CRASH_EVENT_S = 60  # seconds; crashes this close to the newest one are the same event, older ones are context
CPU_PER_REQUEST_HIGH_S = 0.02  # CPU seconds per request; a healthy request costs 1-3 ms, a CPU-bound one tens of ms
RELATIVE_FACTOR = 2.0  # a replica deviates when its value is at least this times the others' median
UNRESPONSIVE_SCORE = 0.6  # 0-1 strength of "up == 0 but the process runs": below CPU, latency and memory evidence

PROGRAMMING_ERRORS = frozenset(
    {
        "AttributeError",
        "TypeError",
        "KeyError",
        "IndexError",
        "NameError",
        "UnboundLocalError",
        "ZeroDivisionError",
        "ValueError",
        "AssertionError",
        "RecursionError",
    }
)
INJECTED_EXCEPTION = "InjectedFault"

QUERIES = {
    "p99": f'histogram_quantile(0.99, sum by (replica, le)(rate(http_request_duration_seconds_bucket{{job="{SERVICE}"}}[1m])))',
    "cpu": f'rate(process_cpu_seconds_total{{job="{SERVICE}"}}[1m])',
    "rss": f'process_resident_memory_bytes{{job="{SERVICE}"}}',
    "rss_growth": f'delta(process_resident_memory_bytes{{job="{SERVICE}"}}[5m])',
    "cpu_per_request": f'sum by (replica)(rate(process_cpu_seconds_total{{job="{SERVICE}"}}[1m])) / sum by (replica)(rate(http_requests_total{{job="{SERVICE}"}}[1m]))',
    "up": f'up{{job="{SERVICE}"}}',
    "restarts": f'changes(process_start_time_seconds{{job="{SERVICE}"}}[3m])',
}
"""PromQL instant queries of round 1, by evidence key."""


@dataclass
class EngineResult:
    """What an engine produced: the diagnosis, model rounds (or planned rounds) and tokens used."""

    diagnosis: Diagnosis
    rounds: int
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Observations:
    """Round-1 evidence: tool results by key (None when the call failed) and per-replica metric values."""

    logs: dict[str, Any] | None = None
    errors: dict[str, Any] | None = None
    changes: dict[str, Any] | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    context: list[str] = field(default_factory=list)

    @property
    def replicas(self) -> list[str]:
        """Every replica any evidence names, sorted."""
        names: set[str] = set()
        for values in self.metrics.values():
            names.update(values)
        if self.changes:
            names.update(
                i["name"] for i in self.changes.get("instances", []) if i.get("name") and i.get("state") != "stopped"
            )
        return sorted(names)


@dataclass
class Candidate:
    """A possible root cause with its strength ``score`` (0-1) and supporting evidence."""

    fault_type: FaultType
    score: float
    replicas: list[str]
    summary: str
    root_cause: str
    suggested_fix: str
    next_steps: list[str]
    evidence: list[Evidence]
    affected_file: str | None = None
    affected_line: int | None = None


def deviating(values: dict[str, float], threshold: float) -> list[str]:
    """Replicas whose value is at or above ``threshold`` and at least ``RELATIVE_FACTOR`` times the
    median of the replicas below it; all of them when every replica is above the threshold."""
    high = sorted(r for r, v in values.items() if v >= threshold)
    if len(high) in (0, len(values)):
        return high
    baseline = statistics.median(v for r, v in values.items() if r not in high)
    return [r for r in high if values[r] >= RELATIVE_FACTOR * baseline] or high


def outliers(values: dict[str, float], floor: float, factor: float) -> list[str]:
    """Replicas at or above ``floor`` and at least ``factor`` times the median of the other replicas."""
    found = []
    for replica, value in values.items():
        others = [v for r, v in values.items() if r != replica]
        if others and value >= floor and value >= factor * statistics.median(others):
            found.append(replica)
    return sorted(found)


def _finite(values: dict[str, Any]) -> dict[str, float]:
    """Keep numeric values (``+Inf`` becomes inf, ``NaN`` and missing values are dropped)."""
    out = {}
    for key, value in values.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if not math.isnan(number):
            out[key] = number
    return out


def _fmt(values: dict[str, float], unit: Callable[[float], str], keys: list[str] | None = None) -> str:
    return ", ".join(f"{r} {unit(values[r])}" for r in (keys or sorted(values)) if r in values)


def _seconds(v: float) -> str:
    return "+Inf s" if math.isinf(v) else f"{v:.3f} s"


def _mib(v: float) -> str:
    return f"{v / 2**20:+.0f} MiB" if v < 0 else f"{v / 2**20:.0f} MiB"


def _ratio(v: float) -> str:
    return f"{v:.1%}"


def _milliseconds(v: float) -> str:
    return f"{v * 1000:.1f} ms"


def _cores(v: float) -> str:
    return f"{v:.2f} cores"


def _others(values: dict[str, float], chosen: list[str], unit: Callable[[float], str]) -> str:
    rest = {r: v for r, v in values.items() if r not in chosen}
    return f" (others: {_fmt(rest, unit)})" if rest else ""


def _logging_replicas(group: dict[str, Any]) -> list[str]:
    """Replicas still logging an exception group (last ``RECENT_LOG_S`` seconds), else every replica that logged it."""
    return sorted(group.get("recent_replicas") or group["replicas"])


def _is_our_code(path: str | None) -> bool:
    return bool(path) and not path.startswith("/") and "site-packages" not in path and "dist-packages" not in path


class OfflineEngine:
    """Deterministic investigator over the investigation tools (see module docstring)."""

    name = ENGINE_NAME

    def __init__(self, runtime: AgentRuntime) -> None:
        self.runtime = runtime
        self.tools: dict[str, ToolSpec] = build_tools(runtime, ENGINE_NAME)
        self.max_output_chars = runtime.settings.tool_output_max_chars

    async def _round(
        self, round_no: int, calls: list[tuple[str, str, dict]], on_record: Callable[[ToolCallRecord], None]
    ) -> dict[str, ToolCallRecord]:
        planned = [(f"offline-{round_no}-{key}", tool, json.dumps(args)) for key, tool, args in calls]
        records = await execute_tool_calls(planned, self.tools, round_no, self.max_output_chars)
        for record in records:
            on_record(record)
        return {key: record for (key, _, _), record in zip(calls, records)}

    async def run(
        self, incident: dict[str, Any], alerts: list[dict[str, Any]], on_record: Callable[[ToolCallRecord], None]
    ) -> EngineResult:
        """Investigate ``incident`` (a ``db.get_incident`` row) with its ``alerts``; every tool call
        goes to ``on_record``. Returns the validated diagnosis; raises RuntimeError only if
        ``send_diagnosis`` rejects the engine's own output (a bug)."""
        round1 = [
            ("logs", "fetch_logs", {"seconds": LOG_WINDOW_S, "limit": LOG_LIMIT}),
            ("errors", "compute_error_rate", {"window": ERROR_RATE_WINDOW}),
            ("changes", "get_recent_changes", {"since_seconds": CHANGES_WINDOW_S}),
            *[(key, "query_prometheus", {"query": query}) for key, query in QUERIES.items()],
        ]
        records = await self._round(1, round1, on_record)
        obs = self._observe(records)
        candidates = self._candidates(obs)
        rounds = 1
        code_candidate = next((c for c in candidates if c.fault_type is FaultType.code_bug and c.affected_file), None)
        if code_candidate is not None:
            rounds += 1
            args = {
                "path": code_candidate.affected_file,
                "line": code_candidate.affected_line,
                "context_lines": CODE_CONTEXT_LINES,
            }
            code = (await self._round(rounds, [("code", "fetch_code_from_github", args)], on_record))["code"]
            self._add_code_evidence(code_candidate, code, obs)
        fields = self._diagnosis_fields(obs, candidates, alerts)
        rounds += 1
        final = (await self._round(rounds, [("diagnosis", "send_diagnosis", fields)], on_record))["diagnosis"]
        if not final.ok:
            raise RuntimeError(f"offline engine produced an invalid diagnosis: {final.error}")
        return EngineResult(Diagnosis.model_validate(final.result), rounds)

    # ------------------------------------------------------------ evidence

    def _observe(self, records: dict[str, ToolCallRecord]) -> Observations:
        obs = Observations()
        for key, record in records.items():
            if not record.ok:
                obs.failed.append(f"{record.tool}({record.arguments}): {record.error}")
                continue
            if key in QUERIES:
                obs.metrics[key] = _finite(
                    {
                        s["labels"].get("replica"): s.get("value")
                        for s in record.result.get("result", [])
                        if s["labels"].get("replica")
                    }
                )
            else:
                setattr(obs, key, record.result)
        return obs

    def _candidates(self, obs: Observations) -> list[Candidate]:
        found = [
            *self._crash(obs),
            *self._log_errors(obs),
            *self._latency_and_cpu(obs),
            *self._memory(obs),
        ]
        return sorted(found, key=lambda c: -c.score)

    def _crash(self, obs: Observations) -> list[Candidate]:
        up = obs.metrics.get("up", {})
        down = sorted(r for r, v in up.items() if v == 0)
        evidence: list[Evidence] = []
        if down:
            evidence.append(
                Evidence(tool="query_prometheus", query=QUERIES["up"], finding=f"up == 0 for {', '.join(down)}")
            )
        crashed_now: list[str] = []
        recent: dict[str, dict] = {}
        if obs.changes:
            for inst in obs.changes.get("instances", []):
                if inst.get("state") in ("crashed", "restarting"):
                    crashed_now.append(inst["name"])
                    evidence.append(
                        Evidence(
                            tool="get_recent_changes",
                            query="GET /instances",
                            finding=f"{inst['name']} state {inst['state']}, restarts {inst.get('restarts')}, last exit code {inst.get('last_exit_code')}",
                        )
                    )
            crashes = [
                c
                for c in obs.changes.get("changes", [])
                if c.get("kind") == "crash"
                and c.get("replica")
                and c.get("age_s") is not None
                and c["age_s"] <= CRASH_RECENT_S
            ]
            newest = min((c["age_s"] for c in crashes), default=None)
            for change in crashes:
                replica, age = change["replica"], change["age_s"]
                if replica in recent:
                    continue
                if age > newest + CRASH_EVENT_S:  # an earlier, separate crash event: context, not this incident's cause
                    evidence.append(
                        Evidence(
                            tool="get_recent_changes",
                            query=f"GET /changes?since=-{CHANGES_WINDOW_S}s",
                            finding=f"earlier crash of {replica} {age:.0f} s ago (separate event)",
                        )
                    )
                    continue
                recent[replica] = change
                evidence.append(
                    Evidence(
                        tool="get_recent_changes",
                        query=f"GET /changes?since=-{CHANGES_WINDOW_S}s",
                        finding=f"crash of {replica} {age:.0f} s ago: {json.dumps(change.get('detail'), sort_keys=True)}",
                    )
                )
        restarted = sorted(r for r, v in obs.metrics.get("restarts", {}).items() if v >= 1)
        if restarted:
            evidence.append(
                Evidence(
                    tool="query_prometheus",
                    query=QUERIES["restarts"],
                    finding=f"process restarted in the last 3 min: {', '.join(restarted)}",
                )
            )
        replicas = set(down) | set(crashed_now) | set(recent)
        if obs.changes is None:  # without the process manager, a restart seen by Prometheus is the crash evidence
            replicas |= set(restarted)
        if not replicas:
            return []
        names = sorted(replicas)
        exit_codes = sorted(
            {
                str(c["detail"]["exit_code"])
                for c in recent.values()
                if (c.get("detail") or {}).get("exit_code") is not None
            }
        )
        state = "down now" if (down or crashed_now) else "restarted since"
        exit_text = f" with exit code {', '.join(exit_codes)}" if exit_codes else ""
        if obs.changes is not None and not (set(crashed_now) | set(recent) | set(restarted)):
            # up == 0 while the process manager reports the process running and no exit or restart was
            # recorded: the replica is alive but not answering scrapes (busy or hung), which is weaker
            # evidence of a crash than of whatever keeps it busy (CPU, latency evidence outranks it).
            return [self._unresponsive(names, evidence)]
        return [
            Candidate(
                fault_type=FaultType.instance_crash,
                score=0.9 if (down or crashed_now) else 0.8,
                replicas=names,
                summary=f"Replica {', '.join(names)} crashed{exit_text} ({state})",
                root_cause=f"The process of {', '.join(names)} exited{exit_text}"
                + ("; the process manager recorded the crash" if recent or crashed_now else "")
                + (
                    " and the replica is not serving (up == 0 / not running)."
                    if state == "down now"
                    else " and was restarted."
                ),
                suggested_fix="Find why the process exited (exit code, last ERROR logs, stderr of the replica) and fix that path; "
                "keep the process manager's restart backoff so a crash loop does not take the fleet down.",
                next_steps=[
                    f"Check the crashed replica's stderr and recent changes for {', '.join(names)}",
                    'Confirm it serves again: up{job="inventory"} == 1 and /healthz ok',
                    "Watch for repeated crashes (restart count, crash loop)",
                ],
                evidence=evidence,
            )
        ]

    @staticmethod
    def _unresponsive(names: list[str], evidence: list[Evidence]) -> Candidate:
        """Replicas down for Prometheus whose process still runs, with no crash or restart recorded."""
        return Candidate(
            fault_type=FaultType.instance_crash,
            score=UNRESPONSIVE_SCORE,
            replicas=names,
            summary=f"Replica {', '.join(names)} not answering scrapes (process still running, no crash recorded)",
            root_cause=f"Prometheus cannot scrape {', '.join(names)} (up == 0) although the process manager reports the process "
            "running with no exit or restart: the replica is alive but unresponsive (event loop blocked or hung).",
            suggested_fix="Find what blocks the replica (profile it, check its stderr); restart it if it does not recover.",
            next_steps=[
                f"Check /healthz and the stderr of {', '.join(names)}",
                "Profile the replica (py-spy dump) to see where it is stuck",
                "Restart it if it stays unresponsive",
            ],
            evidence=[
                *evidence,
                Evidence(
                    tool="get_recent_changes",
                    query="GET /instances",
                    finding=f"{', '.join(names)} state running, no crash or restart recorded",
                ),
            ],
        )

    def _error_ratios(self, obs: Observations) -> tuple[float | None, dict[str, float]]:
        if obs.errors is None:
            return None, {}
        overall = obs.errors.get("overall_error_ratio")
        return (float(overall) if isinstance(overall, (int, float)) else None), _finite(
            obs.errors.get("per_replica_error_ratio", {})
        )

    def _log_errors(self, obs: Observations) -> list[Candidate]:
        if not obs.logs:
            return []
        overall, per_replica = self._error_ratios(obs)
        elevated = deviating(per_replica, ERROR_RATIO_ELEVATED)
        errors_high = bool(elevated) or (overall is not None and overall >= ERROR_RATIO_ELEVATED)
        total_logs = max(1, obs.logs.get("count", 0))
        found: list[Candidate] = []
        current = self._current_log_groups(obs)
        code = next(
            (
                g
                for g in current
                if g["exception_type"] in PROGRAMMING_ERRORS
                and _is_our_code(g.get("file"))
                and g["count"] >= MIN_ERROR_LOGS
            ),
            None,
        )
        # a raised InjectedFault has a file:line; the crash fault's exit notice is logged without one
        injected = next(
            (
                g
                for g in current
                if g["exception_type"] == INJECTED_EXCEPTION and g.get("file") and g["count"] >= MIN_ERROR_LOGS
            ),
            None,
        )
        error_evidence = []
        if obs.errors is not None:
            error_evidence.append(
                Evidence(
                    tool="compute_error_rate",
                    query=obs.errors["queries"]["per_replica"],
                    finding=f"error ratio overall {_ratio(overall) if overall is not None else 'n/a'}; per replica {_fmt(per_replica, _ratio) or 'n/a'}",
                )
            )
        # a metrics outage leaves the logs as the only evidence: weaker, not ignored
        level = 1.0 if errors_high else (0.85 if obs.errors is None else 0.65)
        subsided = (
            ""
            if errors_high or obs.errors is None
            else f" The error ratio is back at baseline now; the errors were logged in the last {LOG_WINDOW_S} s."
        )
        if code is not None:
            replicas = _logging_replicas(code)
            share = code["count"] / total_logs
            where = f"{code['file']}:{code['line']}"
            found.append(
                Candidate(
                    fault_type=FaultType.code_bug,
                    score=round((0.75 + 0.2 * share) * level, 3),
                    replicas=replicas,
                    summary=f"{code['exception_type']} at {where} in {code.get('function')}() on {', '.join(replicas)}"
                    + (f"; {overall:.0%} of requests fail" if overall is not None else ""),
                    root_cause=f"A code bug: {code['function']}() raises {code['exception_type']}: {code['message']} at {where} "
                    f"({code['count']} of {total_logs} ERROR logs in {LOG_WINDOW_S} s, routes {', '.join(map(str, code['routes']))}).{subsided}",
                    suggested_fix=_fix_for(code),
                    next_steps=[
                        f"Open {where} and fix the failing statement in {code['function']}()",
                        "Add a regression test that hits the failing route",
                        "Deploy the fix and confirm the error ratio returns to baseline",
                    ],
                    evidence=[
                        Evidence(
                            tool="fetch_logs",
                            query=code["example"],
                            finding=f"{code['count']} x {code['exception_type']} at {where}; by replica {json.dumps(code['replicas'], sort_keys=True)}",
                        ),
                        *error_evidence,
                    ],
                    affected_file=code["file"],
                    affected_line=code["line"],
                )
            )
        if injected is not None:
            replicas = _logging_replicas(injected)
            share = injected["count"] / total_logs
            found.append(
                Candidate(
                    fault_type=FaultType.injected_errors,
                    score=round((0.7 + 0.2 * share) * level, 3),
                    replicas=replicas,
                    summary=f"Injected errors (InjectedFault) on {', '.join(replicas)}"
                    + (f": error ratio {_fmt(per_replica, _ratio, replicas)}" if per_replica else ""),
                    root_cause=f"Requests on {', '.join(replicas)} fail with an injected fault: {injected['message']} "
                    f"({injected['count']} of {total_logs} ERROR logs in {LOG_WINDOW_S} s).{subsided}",
                    suggested_fix='Clear the fault injection on the affected replica (POST /faults {"mode": "none"}) or take it out of rotation.',
                    next_steps=[
                        f"Reset the fault on {', '.join(replicas)} and confirm the error ratio drops",
                        "Check who enabled the fault injection (recent changes)",
                    ],
                    evidence=[
                        Evidence(
                            tool="fetch_logs",
                            query=injected["example"],
                            finding=f"{injected['count']} x InjectedFault; by replica {json.dumps(injected['replicas'], sort_keys=True)}",
                        ),
                        *error_evidence,
                    ],
                )
            )
        return found

    @staticmethod
    def _current_log_groups(obs: Observations) -> list[dict[str, Any]]:
        """Log groups still being logged (last seen within ``LOG_CURRENT_S``); older ones go to ``obs.context``."""
        current = []
        for group in obs.logs.get("groups", []) if obs.logs else []:
            age = group.get("last_seen_s_ago")
            if age is not None and age > LOG_CURRENT_S and group["count"] >= MIN_ERROR_LOGS:
                obs.context.append(
                    f"Earlier errors, stopped {age:.0f} s ago (not the current cause): {group['count']} x "
                    f"{group['exception_type']} at {group.get('file')}:{group.get('line')}"
                )
                continue
            current.append(group)
        return current

    def _latency_and_cpu(self, obs: Observations) -> list[Candidate]:
        p99 = obs.metrics.get("p99", {})
        cpu = obs.metrics.get("cpu", {})
        per_request = obs.metrics.get("cpu_per_request", {})
        slow = deviating(p99, P99_HIGH_S)
        saturated = deviating(cpu, CPU_HIGH_CORES)
        # replicas behind one round-robin balancer burn about the same CPU; one burning several times
        # its peers' is computing something they do not (its 1m rate still rising towards saturation).
        # CPU seconds per request tells computing from waiting even while the 1m rate is diluted and
        # every replica is affected alike.
        cpu_bound = [r for r in deviating(per_request, CPU_PER_REQUEST_HIGH_S) if r in slow or r in saturated]
        hot = sorted(set(saturated or outliers(cpu, CPU_BUSY_CORES, CPU_OUTLIER_FACTOR)) | set(cpu_bound))
        found: list[Candidate] = []
        p99_ev = (
            Evidence(tool="query_prometheus", query=QUERIES["p99"], finding=f"p99 latency {_fmt(p99, _seconds)}")
            if p99
            else None
        )
        cpu_ev = (
            Evidence(tool="query_prometheus", query=QUERIES["cpu"], finding=f"CPU {_fmt(cpu, _cores)}") if cpu else None
        )
        if cpu_bound:
            cpu_ev = Evidence(
                tool="query_prometheus",
                query=QUERIES["cpu_per_request"],
                finding=f"CPU per request {_fmt(per_request, _milliseconds)}; CPU {_fmt(cpu, _cores)}",
            )
        if hot:
            also_slow = sorted(set(hot) & set(slow))
            found.append(
                Candidate(
                    fault_type=FaultType.cpu_saturation,
                    score=(0.85 if also_slow else 0.7) - (0 if saturated else 0.1),
                    replicas=hot,
                    summary=f"CPU saturation on {', '.join(hot)}: {_fmt(cpu, _cores, hot)}"
                    + (f", p99 {_fmt(p99, _seconds, also_slow)}" if also_slow else ""),
                    root_cause=f"CPU use {_fmt(cpu, _cores, hot)}{_others(cpu, hot, _cores)}; "
                    "the single-threaded event loop is busy computing, so requests queue behind it"
                    + (" and p99 latency rises." if also_slow else "."),
                    suggested_fix="Find the CPU-heavy code path on the hot replica (profile it, e.g. py-spy) and move the work off the event loop or reduce it; scale out meanwhile.",
                    next_steps=[
                        f"Profile {hot[0]}",
                        "Scale out or shed load until CPU drops below 0.6 cores per replica",
                        "Confirm p99 latency recovers",
                    ],
                    evidence=[e for e in (cpu_ev, p99_ev) if e],
                )
            )
        slow_only = [r for r in slow if r not in hot]
        if slow_only:
            found.append(
                Candidate(
                    fault_type=FaultType.latency,
                    score=0.8,
                    replicas=slow_only,
                    summary=f"High p99 latency on {', '.join(slow_only)}: {_fmt(p99, _seconds, slow_only)}",
                    root_cause=f"Requests on {', '.join(slow_only)} are slow (p99 {_fmt(p99, _seconds, slow_only)}{_others(p99, slow_only, _seconds)}) "
                    f"while CPU stays low ({_fmt(cpu, _cores, slow_only) or 'n/a'}): time is spent waiting (a slow dependency, a sleep or lock), not computing.",
                    suggested_fix="Find what the slow replica waits on (dependency latency, injected delay, locks) and remove it; take the replica out of rotation meanwhile.",
                    next_steps=[
                        f"Take {', '.join(slow_only)} out of the load balancer if users are affected",
                        "Check dependency latency and recent changes on the slow replica",
                        "Confirm p99 returns below 0.5 s",
                    ],
                    evidence=[e for e in (p99_ev, cpu_ev) if e],
                )
            )
        return found

    def _memory(self, obs: Observations) -> list[Candidate]:
        rss = obs.metrics.get("rss", {})
        growth = obs.metrics.get("rss_growth", {})
        growing = deviating(growth, RSS_GROWTH_BYTES)
        big = deviating(rss, RSS_HIGH_BYTES)
        replicas = sorted(set(growing) | set(big))
        if not replicas:
            return []
        evidence = [Evidence(tool="query_prometheus", query=QUERIES["rss"], finding=f"RSS {_fmt(rss, _mib)}")]
        if growth:
            evidence.append(
                Evidence(
                    tool="query_prometheus",
                    query=QUERIES["rss_growth"],
                    finding=f"RSS change over 5 min {_fmt(growth, _mib)}",
                )
            )
        return [
            Candidate(
                fault_type=FaultType.memory_pressure,
                score=0.85 if growing else 0.7,
                replicas=replicas,
                summary=f"Memory growth on {', '.join(replicas)}: RSS {_fmt(rss, _mib, replicas)}"
                + (f" (grew {_fmt(growth, _mib, growing)} in 5 min)" if growing else ""),
                root_cause=f"Resident memory grew: {_fmt(rss, _mib, replicas)}{_others(rss, replicas, _mib)}: "
                "memory is retained per request (a leak or unbounded cache).",
                suggested_fix="Find what keeps memory alive per request (heap snapshot, tracemalloc) and bound or release it; restart the replica to recover meanwhile.",
                next_steps=[
                    f"Restart {', '.join(replicas)} if RSS keeps climbing",
                    "Take a tracemalloc/heap snapshot to find the retaining object",
                    "Add a memory limit and alert on growth rate",
                ],
                evidence=evidence,
            )
        ]

    def _add_code_evidence(self, candidate: Candidate, record: ToolCallRecord, obs: Observations) -> None:
        if record.ok:
            focus = record.result.get("focus_text", "")
            candidate.evidence.insert(
                1,
                Evidence(
                    tool="fetch_code_from_github",
                    query=f"{candidate.affected_file}:{candidate.affected_line}",
                    finding=f"line {candidate.affected_line}: {focus or '(empty)'}",
                ),
            )
            candidate.root_cause += f" The failing line is `{focus}`."
        else:
            obs.failed.append(f"fetch_code_from_github: {record.error}")

    # ------------------------------------------------------------ verdict

    def _diagnosis_fields(
        self, obs: Observations, candidates: list[Candidate], alerts: list[dict[str, Any]]
    ) -> dict[str, Any]:
        overall, per_replica = self._error_ratios(obs)
        critical = any(
            a.get("labels", {}).get("severity") == "critical" for a in alerts if a.get("status", "firing") == "firing"
        )
        penalty = 0.1 * len(obs.failed)
        if candidates:
            chosen, others = candidates[0], candidates[1:]
            fields = self._from_candidate(chosen, others)
            fields["priority"] = _priority(chosen, obs, overall, critical)
            fields["confidence"] = round(max(0.2, min(0.95, chosen.score - penalty)), 2)
        else:
            fields = self._no_candidate(obs, overall, per_replica)
            fields["confidence"] = round(max(0.1, fields["confidence"] - penalty), 2)
        fields["next_steps"].extend(obs.context)
        if obs.failed:
            fields["next_steps"].append("Some evidence was unavailable: " + "; ".join(f[:160] for f in obs.failed))
        fields["summary"] = fields["summary"][:500]
        return fields

    def _from_candidate(self, chosen: Candidate, others: list[Candidate]) -> dict[str, Any]:
        root_cause = chosen.root_cause
        next_steps = list(chosen.next_steps)
        evidence = list(chosen.evidence)
        replicas = set(chosen.replicas)
        for other in others:
            if other.score >= SECONDARY_MIN_SCORE and not set(other.replicas) & replicas:
                replicas |= set(other.replicas)  # an independent fault on other replicas: they are affected too
            root_cause += f" Also observed (weaker evidence): {other.fault_type.value} on {', '.join(other.replicas)} - {other.summary}."
            next_steps.append(
                f"Also investigate {other.fault_type.value} on {', '.join(other.replicas)}: {other.summary}"
            )
            evidence.extend(other.evidence[:1])
        return {
            "summary": chosen.summary,
            "root_cause": root_cause,
            "fault_type": chosen.fault_type.value,
            "affected_service": SERVICE,
            "affected_replicas": sorted(replicas),
            "affected_file": chosen.affected_file,
            "affected_line": chosen.affected_line,
            "evidence": [e.model_dump() for e in evidence],
            "suggested_fix": chosen.suggested_fix,
            "next_steps": next_steps,
        }

    def _no_candidate(self, obs: Observations, overall: float | None, per_replica: dict[str, float]) -> dict[str, Any]:
        metrics_missing = obs.errors is None or not obs.metrics.get("up")
        elevated = deviating(per_replica, ERROR_RATIO_ELEVATED)
        errors_high = bool(elevated) or (overall is not None and overall >= ERROR_RATIO_ELEVATED)
        evidence = []
        if obs.errors is not None:
            evidence.append(
                Evidence(
                    tool="compute_error_rate",
                    query=obs.errors["queries"]["overall"],
                    finding=f"overall error ratio {_ratio(overall) if overall is not None else 'n/a'}; per replica {_fmt(per_replica, _ratio) or 'n/a'}",
                )
            )
        for key in ("up", "p99", "cpu", "rss"):
            if obs.metrics.get(key):
                unit = {"up": lambda v: f"{v:.0f}", "p99": _seconds, "cpu": _cores, "rss": _mib}[key]
                evidence.append(
                    Evidence(tool="query_prometheus", query=QUERIES[key], finding=_fmt(obs.metrics[key], unit))
                )
        if obs.logs:
            top = obs.logs.get("by_exception_type", {})
            evidence.append(
                Evidence(
                    tool="fetch_logs",
                    query=f"GET /logs/tail?seconds={LOG_WINDOW_S}&limit={LOG_LIMIT}",
                    finding=f"{obs.logs.get('count', 0)} ERROR entries; by exception type {json.dumps(top)}",
                )
            )
        base = {
            "affected_service": SERVICE,
            "affected_file": None,
            "affected_line": None,
            "evidence": [e.model_dump() for e in evidence],
        }
        if errors_high:
            dominant = next(iter(obs.logs.get("by_exception_type", {})), None) if obs.logs else None
            return {
                **base,
                "summary": f"Error ratio elevated on {', '.join(elevated) or 'the service'} with no identified cause",
                "root_cause": f"Errors are above baseline (overall {_ratio(overall) if overall is not None else 'n/a'}) but the logs do not point at a "
                f"code location or injected fault (dominant exception: {dominant or 'none logged'}). Inconclusive.",
                "fault_type": FaultType.unknown.value,
                "affected_replicas": elevated,
                "priority": "P2",
                "confidence": 0.4,
                "suggested_fix": "",
                "next_steps": ["Inspect the failing requests' logs and dependencies by hand"],
            }
        if metrics_missing or obs.logs is None:
            return {
                **base,
                "summary": "Inconclusive: evidence tools failed",
                "root_cause": "The investigation could not read enough evidence (metrics or logs unavailable) to confirm a fault or a healthy system.",
                "fault_type": FaultType.unknown.value,
                "affected_replicas": [],
                "priority": "P3",
                "confidence": 0.4,
                "suggested_fix": "",
                "next_steps": ["Check that Prometheus, the load balancer and the process manager are reachable"],
            }
        p99 = obs.metrics.get("p99", {})
        worst = max(p99.values()) if p99 else None
        return {
            **base,
            "summary": f"No fault found: error ratio {_ratio(overall) if overall is not None else 'n/a'}, "
            f"p99 max {_seconds(worst) if worst is not None else 'n/a'}, all {len(obs.metrics['up'])} replicas up",
            "root_cause": "The system looks healthy now: error ratio at baseline, latency normal, CPU and memory normal, every replica up and no recent crash.",
            "fault_type": FaultType.none.value,
            "affected_replicas": [],
            "priority": "P4",
            "confidence": 0.8,
            "suggested_fix": "",
            "next_steps": ["Check whether the alert threshold is too sensitive or the condition was transient"],
        }


def _fix_for(group: dict[str, Any]) -> str:
    """A concrete fix suggestion for a code exception group from the logs."""
    where = f"{group['file']}:{group['line']}"
    message = str(group.get("message") or "")
    if group["exception_type"] == "AttributeError" and "NoneType" in message:
        return (
            f"{group.get('function')}() dereferences a value that can be None at {where}: check the result of the call "
            "that produced it (return 404 / a default when nothing is found) before using it, and add a test for the missing case."
        )
    if group["exception_type"] == "KeyError":
        return f"Guard the dictionary lookup at {where} (use .get() with a default or validate the key first)."
    if group["exception_type"] == "TypeError":
        return f"Fix the type mismatch at {where}: validate or convert the value before the operation."
    return f"Fix the failing statement at {where} in {group.get('function')}() so it handles the input that raises {group['exception_type']}."


def _priority(chosen: Candidate, obs: Observations, overall: float | None, critical_alert: bool) -> str:
    """P1-P4 from impact (how many replicas, how many requests fail) and the alert severity."""
    fleet = max(1, len(obs.replicas))
    share = len(chosen.replicas) / fleet
    if chosen.fault_type is FaultType.instance_crash:
        up = obs.metrics.get("up", {})
        level = 1 if up and all(v == 0 for v in up.values()) else 2
    elif chosen.fault_type in (FaultType.code_bug, FaultType.injected_errors):
        ratio = overall or 0.0
        level = 1 if ratio >= ERROR_RATIO_P1 else 2 if ratio >= ERROR_RATIO_P2 else 3
    else:
        level = 2 if share >= 0.5 else 3
    if critical_alert:
        level = min(level, 2)
    return f"P{level}"
