"""Detector: requests failing with a code exception at a file:line of ours, or with an injected fault."""

from __future__ import annotations

import json
from typing import Any

from oncall.diagnosis import Evidence, FaultType
from oncall.investigate.engines.offline import clients, units
from oncall.investigate.engines.offline.observations import (
    CLIENT_ERRORS_ELEVATED,
    ERROR_RATIO_ELEVATED,
    INJECTED_EXCEPTION,
    LOG_WINDOW_S,
    MIN_ERROR_LOGS,
    PROGRAMMING_ERRORS,
    Candidate,
    Observations,
    deviating,
)


def is_our_code(path: str | None) -> bool:
    """True for a repository-relative path (not the standard library or an installed package)."""
    return (
        bool(path)
        and not str(path).startswith("/")
        and "site-packages" not in str(path)
        and "dist-packages" not in str(path)
    )


def logging_replicas(group: dict[str, Any]) -> list[str]:
    """Replicas still logging an exception group (last ``RECENT_LOG_S`` seconds), else every replica that logged it."""
    return sorted(group.get("recent_replicas") or group["replicas"])


def _code_group(obs: Observations) -> dict[str, Any] | None:
    """The largest current group of a programming error raised in our code."""
    return next(
        (
            g
            for g in obs.current_log_groups
            if g["exception_type"] in PROGRAMMING_ERRORS and is_our_code(g.get("file")) and g["count"] >= MIN_ERROR_LOGS
        ),
        None,
    )


def _injected_group(obs: Observations) -> dict[str, Any] | None:
    """The current InjectedFault group that failed requests: raised at a file:line, or logged with a 5xx status
    (a crash fault's exit notice has neither)."""
    return next(
        (
            g
            for g in obs.current_log_groups
            if g["exception_type"] == INJECTED_EXCEPTION and _failed_requests(g) and g["count"] >= MIN_ERROR_LOGS
        ),
        None,
    )


def _failed_requests(group: dict[str, Any]) -> bool:
    """True when a log group's entries failed requests: raised at a file:line, or logged with a 5xx status."""
    return bool(group.get("file")) or any(str(status).startswith("5") for status in group.get("statuses") or {})


def fix_for(group: dict[str, Any]) -> str:
    """A concrete fix suggestion for a code exception group from the logs."""
    where = f"{group['file']}:{group['line']}"
    message = str(group.get("message") or "")
    if group["exception_type"] == "AttributeError" and "NoneType" in message:
        return (
            f"{group.get('function')}() dereferences a value that can be None at {where}: check the result of the call "
            "that produced it (return 404 / a default when nothing is found) before using it, and add a test for the "
            "missing case."
        )
    if group["exception_type"] == "KeyError":
        return f"Guard the dictionary lookup at {where} (use .get() with a default or validate the key first)."
    if group["exception_type"] == "TypeError":
        return f"Fix the type mismatch at {where}: validate or convert the value before the operation."
    return (
        f"Fix the failing statement at {where} in {group.get('function')}() so it handles the input that raises "
        f"{group['exception_type']}."
    )


FRESH_LOG_S = 20.0
"""Seconds; an exception group last logged longer ago is fading: its log support counts less."""


class _ErrorContext:
    """What both error candidates share: the error ratios, the evidence they give and how strong they are."""

    def __init__(self, obs: Observations) -> None:
        self.obs = obs
        self.overall, self.per_replica = obs.error_ratios()
        elevated = deviating(self.per_replica, ERROR_RATIO_ELEVATED)
        self.elevated = elevated
        errors_high = bool(elevated) or (self.overall is not None and self.overall >= ERROR_RATIO_ELEVATED)
        self.errors_high = errors_high
        self.total_logs = max(1, (obs.logs or {}).get("count", 0))
        self.evidence: list[Evidence] = []
        if obs.errors is not None:
            overall = units.ratio(self.overall) if self.overall is not None else "n/a"
            self.evidence.append(
                Evidence(
                    tool="compute_error_rate",
                    query=obs.errors["queries"]["per_replica"],
                    finding=f"error ratio overall {overall}; "
                    f"per replica {units.fmt(self.per_replica, units.ratio) or 'n/a'}",
                )
            )
        # a metrics outage leaves the logs as the only evidence: weaker, not ignored
        self.level = 1.0 if errors_high else (0.85 if obs.errors is None else 0.65)
        self.subsided = (
            ""
            if errors_high or obs.errors is None
            else f" The error ratio is back at baseline now; the errors were logged in the last {LOG_WINDOW_S} s."
        )

    def back(self, candidate: Candidate, group: dict[str, Any]) -> Candidate:
        """Weigh the sources behind an error candidate: its log group, the error ratios, the clients' view."""
        share = group["count"] / self.total_logs
        age = group.get("last_seen_s_ago") or 0.0
        candidate.back("logs", (0.55 + 0.3 * share) * (0.8 if age > FRESH_LOG_S else 1.0))
        replicas = set(candidate.replicas)
        if replicas & set(self.elevated):
            candidate.back("metrics", 0.5)
        elif self.errors_high:
            candidate.back("metrics", 0.35)
        elif self.obs.errors is not None:
            candidate.oppose(
                Evidence(
                    tool="compute_error_rate",
                    query=self.obs.errors["queries"]["overall"],
                    finding=f"the error ratio is at baseline now ({units.ratio(self.overall or 0.0)} overall)",
                ),
                0.35,
            )
        failing = [
            r for r in candidate.replicas if (self.obs.client(r).get("error_ratio") or 0) >= CLIENT_ERRORS_ELEVATED
        ]
        seen = clients.evidence(self.obs, candidate.replicas)
        if failing and seen is not None:
            candidate.back("clients", 0.4)
            candidate.evidence.append(seen)
        return candidate


def _code_bug(code: dict[str, Any], ctx: _ErrorContext) -> Candidate:
    replicas = logging_replicas(code)
    share = code["count"] / ctx.total_logs
    where = f"{code['file']}:{code['line']}"
    failing = f"; {ctx.overall:.0%} of requests fail" if ctx.overall is not None else ""
    return Candidate(
        fault_type=FaultType.code_bug,
        score=round((0.75 + 0.2 * share) * ctx.level, 3),
        replicas=replicas,
        summary=f"{code['exception_type']} at {where} in {code.get('function')}() on {', '.join(replicas)}{failing}",
        root_cause=f"A code bug: {code['function']}() raises {code['exception_type']}: {code['message']} at {where} "
        f"({code['count']} of {ctx.total_logs} ERROR logs in {LOG_WINDOW_S} s, "
        f"routes {', '.join(map(str, code['routes']))}).{ctx.subsided}",
        suggested_fix=fix_for(code),
        next_steps=[
            f"Open {where} and fix the failing statement in {code['function']}()",
            "Add a regression test that hits the failing route",
            "Deploy the fix and confirm the error ratio returns to baseline",
        ],
        evidence=[
            Evidence(
                tool="fetch_logs",
                query=code["example"],
                finding=f"{code['count']} x {code['exception_type']} at {where}; "
                f"by replica {json.dumps(code['replicas'], sort_keys=True)}",
            ),
            *ctx.evidence,
        ],
        affected_file=code["file"],
        affected_line=code["line"],
    )


def _injected(injected: dict[str, Any], ctx: _ErrorContext) -> Candidate:
    replicas = logging_replicas(injected)
    share = injected["count"] / ctx.total_logs
    ratios = f": error ratio {units.fmt(ctx.per_replica, units.ratio, replicas)}" if ctx.per_replica else ""
    return Candidate(
        fault_type=FaultType.injected_errors,
        score=round((0.7 + 0.2 * share) * ctx.level, 3),
        replicas=replicas,
        summary=f"Injected errors (InjectedFault) on {', '.join(replicas)}{ratios}",
        root_cause=f"Requests on {', '.join(replicas)} fail with an injected fault: {injected['message']} "
        f"({injected['count']} of {ctx.total_logs} ERROR logs in {LOG_WINDOW_S} s).{ctx.subsided}",
        suggested_fix='Clear the fault injection on the affected replica (POST /faults {"mode": "none"}) '
        "or take it out of rotation.",
        next_steps=[
            f"Reset the fault on {', '.join(replicas)} and confirm the error ratio drops",
            "Check who enabled the fault injection (recent changes)",
        ],
        evidence=[
            Evidence(
                tool="fetch_logs",
                query=injected["example"],
                finding=f"{injected['count']} x InjectedFault; "
                f"by replica {json.dumps(injected['replicas'], sort_keys=True)}",
            ),
            *ctx.evidence,
        ],
    )


def detect_errors(obs: Observations) -> list[Candidate]:
    """``code_bug`` and ``injected_errors`` candidates from the current ERROR log groups."""
    if not obs.logs:
        return []
    ctx = _ErrorContext(obs)
    code, injected = _code_group(obs), _injected_group(obs)
    found: list[Candidate] = []
    if code is not None:
        found.append(ctx.back(_code_bug(code, ctx), code))
    if injected is not None:
        candidate = ctx.back(_injected(injected, ctx), injected)
        if ctx.obs.fault_recorded("errors", candidate.replicas):
            candidate.back("changes", 0.4)
        found.append(candidate)
    return found
