"""What the offline engine reads (round-1 tool results) and the thresholds it judges them by.

Every threshold is a named constant with its unit. Classification rests only on the collected
evidence (metric values, log exception types and locations, process-manager crash records), never on
alert or scenario names.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from oncall.diagnosis import Evidence, FaultType

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
CRASH_RECENT_S = 180  # seconds; a recovered crash counts as the cause this long (a down replica always counts)
CRASH_EVENT_S = 60  # seconds; crashes this close to the newest one are the same event, older ones are context
CPU_PER_REQUEST_HIGH_S = 0.02  # CPU seconds per request; a healthy request costs 1-3 ms, a CPU-bound one tens of ms
RELATIVE_FACTOR = 2.0  # a replica deviates when its value is at least this times the others' median
UNRESPONSIVE_SCORE = 0.45  # 0-1 strength of "up == 0 but the process runs": below CPU, latency and memory evidence
SCRAPE_OK_LOW = 0.9  # share 0-1 of successful scrapes in the last minute below which a target is failing scrapes
SURGE_FACTOR = 2.0  # times the baseline request rate that makes the current rate a surge
SURGE_MIN_RPS = 5.0  # requests/s a surge must add to the baseline (a few requests more is not load)
CLIENT_ERRORS_ELEVATED = 0.05  # ratio 0-1 of client requests answered 5xx by the load balancer
IN_FLIGHT_QUEUED = 20  # requests in flight to one backend that mean requests queue (healthy: a handful)
CLIENT_TIMEOUT_P99_S = 5.0  # seconds of client p99 at which most clients wait into their timeouts

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


@dataclass
class Observations:
    """Round-1 evidence: tool results by key (None when the call failed) and per-replica metric values.

    ``current_log_groups``: log groups still being logged (last seen within ``LOG_CURRENT_S``);
    ``context``: lines for the diagnosis about evidence that is not the current cause;
    ``failed``: tool calls that failed, with their error.
    The service context: ``service`` (its name), ``queries`` (its round-1 PromQL by evidence key, from the
    catalog), ``in_catalog``, ``gaps`` (what the catalog lacks), ``onset`` (epoch s), ``alerts`` (the
    incident's alert rows), ``replica_label``, ``latency_objective_s`` (its SLO's p99 threshold, seconds),
    ``max_replicas`` (its control plane's scale bound), ``rule`` (the paging alert's rule evaluated now),
    ``clients`` (the load balancer's view), ``load`` (request rates against the baseline), ``similar``
    (resolved incidents like this one) and ``versions`` (replica -> version).
    """

    service: str = "unknown"
    queries: dict[str, str] = field(default_factory=dict)
    in_catalog: bool = True
    gaps: list[str] = field(default_factory=list)
    onset: float | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)
    replica_label: str = "replica"
    latency_objective_s: float = 0.5
    max_replicas: int | None = None
    rule: dict[str, Any] | None = None
    clients: dict[str, Any] | None = None
    load: dict[str, Any] | None = None
    similar: dict[str, Any] | None = None
    versions: dict[str, Any] | None = None
    logs: dict[str, Any] | None = None
    errors: dict[str, Any] | None = None
    changes: dict[str, Any] | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    current_log_groups: list[dict[str, Any]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    context: list[str] = field(default_factory=list)

    def query(self, key: str) -> str:
        """The PromQL behind evidence ``key`` (``p99``, ``cpu``, ``up`` ...)."""
        return self.queries.get(key, key)

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

    @property
    def stale(self) -> list[str]:
        """Replicas Prometheus cannot scrape now (``up == 0``): their rate figures come from samples taken
        before they stopped answering, so they are never quoted as current values."""
        return sorted(r for r, v in self.metrics.get("up", {}).items() if v == 0)

    @property
    def scrapes_failing(self) -> list[str]:
        """Replicas with fewer than ``SCRAPE_OK_LOW`` of their scrapes in the last minute successful."""
        return sorted(r for r, v in self.metrics.get("scrape_ok", {}).items() if v < SCRAPE_OK_LOW)

    def client(self, replica: str) -> dict[str, Any]:
        """The load balancer's view of one replica (empty without one)."""
        return ((self.clients or {}).get("replicas") or {}).get(replica) or {}

    def fault_recorded(self, mode: str, replicas: list[str]) -> bool:
        """True when the change log records a ``mode`` fault injected on one of ``replicas`` (or on all) and not
        cleared since."""
        active: dict[str | None, str] = {}
        for change in (self.changes or {}).get("changes", []):  # oldest first
            if change.get("kind") == "fault":
                active[change.get("replica")] = str((change.get("detail") or {}).get("mode"))
                if change.get("replica") is None:
                    active = {None: active[None]}
        return any(m == mode and (r is None or r in replicas) for r, m in active.items())

    def error_ratios(self) -> tuple[float | None, dict[str, float]]:
        """The overall error ratio (0-1, None when unknown) and the per-replica ratios."""
        if self.errors is None:
            return None, {}
        overall = self.errors.get("overall_error_ratio")
        per_replica = finite(self.errors.get("per_replica_error_ratio", {}))
        return (float(overall) if isinstance(overall, (int, float)) else None), per_replica


@dataclass
class Candidate:
    """A possible root cause with its strength ``score`` (0-1, ranks candidates) and its evidence.

    ``support``: how strongly each independent source backs it (source -> 0-1: ``logs``, ``metrics``,
    ``clients``, ``alert``, ``changes``, ``process``, ``code``, ``load``, ``history``), from which its
    calibrated confidence is computed (``confidence``); ``against``: evidence that speaks against it with
    its total weight ``against_weight`` (0-1); ``signals``: the alert signals it can explain (``focus``);
    ``load``: traffic figures (``oncall.diagnosis.Load`` fields) of an overload, or the context of a fault
    under load.
    """

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
    actions: list[dict[str, Any]] = field(default_factory=list)
    support: dict[str, float] = field(default_factory=dict)
    against: list[Evidence] = field(default_factory=list)
    against_weight: float = 0.0
    signals: frozenset[str] | None = None
    load: dict[str, Any] | None = None

    def back(self, source: str, weight: float) -> None:
        """Record that ``source`` supports this candidate with ``weight`` 0-1 (the strongest per source counts)."""
        self.support[source] = round(max(self.support.get(source, 0.0), min(1.0, max(0.0, weight))), 3)

    def oppose(self, evidence: Evidence, weight: float) -> None:
        """Record ``evidence`` against this candidate; weights combine like independent chances (0-1)."""
        self.against.append(evidence)
        self.against_weight = round(1 - (1 - self.against_weight) * (1 - min(1.0, max(0.0, weight))), 3)


def split_log_groups(logs: dict[str, Any] | None) -> tuple[list[dict[str, Any]], list[str]]:
    """Log groups still being logged, and a context line for each large group that stopped
    (last seen more than ``LOG_CURRENT_S`` seconds ago: context, not the cause)."""
    current: list[dict[str, Any]] = []
    context: list[str] = []
    for group in logs.get("groups", []) if logs else []:
        age = group.get("last_seen_s_ago")
        if age is not None and age > LOG_CURRENT_S and group["count"] >= MIN_ERROR_LOGS:
            context.append(
                f"Earlier errors, stopped {age:.0f} s ago (not the current cause): {group['count']} x "
                f"{group['exception_type']} at {group.get('file')}:{group.get('line')}"
            )
            continue
        current.append(group)
    return current, context


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


def finite(values: dict[str, Any]) -> dict[str, float]:
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
