"""Detector: replicas that crashed, are down, or stopped answering scrapes."""

from __future__ import annotations

import json
from typing import Any

from oncall.diagnosis import Evidence, FaultType
from oncall.investigate.engines.offline.observations import (
    CHANGES_WINDOW_S,
    CRASH_EVENT_S,
    CRASH_RECENT_S,
    UNRESPONSIVE_SCORE,
    Candidate,
    Observations,
)

CHANGES_QUERY = f"GET /changes?since=-{CHANGES_WINDOW_S}s"


def _down(obs: Observations) -> tuple[list[str], list[Evidence]]:
    """Replicas with ``up == 0``."""
    down = sorted(r for r, v in obs.metrics.get("up", {}).items() if v == 0)
    if not down:
        return [], []
    return down, [Evidence(tool="query_prometheus", query=obs.query("up"), finding=f"up == 0 for {', '.join(down)}")]


def _crashed_now(obs: Observations) -> tuple[list[str], list[Evidence]]:
    """Replicas the process manager reports ``crashed`` or ``restarting``."""
    names: list[str] = []
    evidence: list[Evidence] = []
    for inst in (obs.changes or {}).get("instances", []):
        if inst.get("state") in ("crashed", "restarting"):
            names.append(inst["name"])
            finding = (
                f"{inst['name']} state {inst['state']}, restarts {inst.get('restarts')}, "
                f"last exit code {inst.get('last_exit_code')}"
            )
            evidence.append(Evidence(tool="get_recent_changes", query="GET /instances", finding=finding))
    return names, evidence


def _recent_crashes(obs: Observations) -> tuple[dict[str, dict[str, Any]], list[Evidence]]:
    """The newest crash event (crashes within ``CRASH_EVENT_S`` of the newest one, in the last
    ``CRASH_RECENT_S`` seconds) by replica; earlier crash events are listed as context."""
    crashes = sorted(  # newest first (the change timeline is in time order)
        (
            c
            for c in (obs.changes or {}).get("changes", [])
            if c.get("kind") == "crash"
            and c.get("replica")
            and c.get("age_s") is not None
            and c["age_s"] <= CRASH_RECENT_S
        ),
        key=lambda c: c["age_s"],
    )
    newest = min((c["age_s"] for c in crashes), default=0.0)
    recent: dict[str, dict[str, Any]] = {}
    evidence: list[Evidence] = []
    for change in crashes:
        replica, age = change["replica"], change["age_s"]
        if replica in recent:
            continue
        if age > newest + CRASH_EVENT_S:  # an earlier, separate crash event: context, not this incident's cause
            finding = f"earlier crash of {replica} {age:.0f} s ago (separate event)"
            evidence.append(Evidence(tool="get_recent_changes", query=CHANGES_QUERY, finding=finding))
            continue
        recent[replica] = change
        finding = f"crash of {replica} {age:.0f} s ago: {json.dumps(change.get('detail'), sort_keys=True)}"
        evidence.append(Evidence(tool="get_recent_changes", query=CHANGES_QUERY, finding=finding))
    return recent, evidence


def _planned_restarts(obs: Observations) -> set[str]:
    """Replicas restarted on purpose in the last ``CRASH_RECENT_S`` seconds: a deploy, a requested restart or
    a start recorded in the change log (their new process is not a crash)."""
    planned = set()
    for change in (obs.changes or {}).get("changes", []):
        kind, detail = change.get("kind"), change.get("detail") or {}
        on_purpose = kind in ("deploy", "start") or (kind == "restart" and detail.get("reason") == "requested")
        if on_purpose and change.get("replica") and (change.get("age_s") or 0.0) <= CRASH_RECENT_S:
            planned.add(change["replica"])
    return planned


def _restarted(obs: Observations) -> tuple[list[str], list[Evidence]]:
    """Replicas whose process started again in the last 3 minutes (Prometheus' view), planned restarts excluded."""
    planned = _planned_restarts(obs)
    restarted = sorted(r for r, v in obs.metrics.get("restarts", {}).items() if v >= 1 and r not in planned)
    if not restarted:
        return [], []
    finding = f"process restarted in the last 3 min: {', '.join(restarted)}"
    return restarted, [Evidence(tool="query_prometheus", query=obs.query("restarts"), finding=finding)]


def detect_crash(obs: Observations) -> list[Candidate]:
    """An ``instance_crash`` candidate for replicas that are down, crashed or restarted recently."""
    down, evidence = _down(obs)
    crashed_now, crashed_evidence = _crashed_now(obs)
    recent, recent_evidence = _recent_crashes(obs)
    restarted, restarted_evidence = _restarted(obs)
    evidence += crashed_evidence + recent_evidence + restarted_evidence
    replicas = set(down) | set(crashed_now) | set(recent)
    if obs.changes is None:  # without the process manager, a restart seen by Prometheus is the crash evidence
        replicas |= set(restarted)
    if not replicas:
        return []
    names = sorted(replicas)
    if obs.changes is not None and not (set(crashed_now) | set(recent) | set(restarted)):
        # up == 0 while the process manager reports the process running and no exit or restart was
        # recorded: the replica is alive but not answering scrapes (busy or hung), which is weaker
        # evidence of a crash than of whatever keeps it busy (CPU, latency evidence outranks it).
        return [_unresponsive(names, evidence)]
    candidate = _crashed(
        names, evidence, recent, down_now=bool(down or crashed_now), recorded=bool(recent or crashed_now)
    )
    candidate.next_steps[1] = f"Confirm it serves again: {obs.query('up')} == 1 and /healthz ok"
    if recent or crashed_now:
        candidate.back("process", 0.6)
    if down or restarted:
        candidate.back("metrics", 0.45)
    if any(obs.client(r).get("upstream_errors", {}).get(k) for r in names for k in ("connect", "disconnect", "reset")):
        candidate.back("clients", 0.3)
    if obs.fault_recorded("crash", names):
        candidate.back("changes", 0.3)
    return [candidate]


def _crashed(
    names: list[str], evidence: list[Evidence], recent: dict[str, dict[str, Any]], *, down_now: bool, recorded: bool
) -> Candidate:
    """Replicas whose process exited (down now, or restarted since); ``recorded``: the process manager saw it."""
    exit_codes = sorted(
        {str(c["detail"]["exit_code"]) for c in recent.values() if (c.get("detail") or {}).get("exit_code") is not None}
    )
    exit_text = f" with exit code {', '.join(exit_codes)}" if exit_codes else ""
    joined = ", ".join(names)
    return Candidate(
        fault_type=FaultType.instance_crash,
        score=0.9 if down_now else 0.8,
        replicas=names,
        summary=f"Replica {joined} crashed{exit_text} ({'down now' if down_now else 'restarted since'})",
        root_cause=f"The process of {joined} exited{exit_text}"
        + ("; the process manager recorded the crash" if recorded else "")
        + (" and the replica is not serving (up == 0 / not running)." if down_now else " and was restarted."),
        suggested_fix="Find why the process exited (exit code, last ERROR logs, stderr of the replica) and fix that "
        "path; keep the process manager's restart backoff so a crash loop does not take the fleet down.",
        next_steps=[
            f"Check the crashed replica's stderr and recent changes for {joined}",
            "Confirm it serves again: up == 1 and /healthz ok",
            "Watch for repeated crashes (restart count, crash loop)",
        ],
        evidence=evidence,
    )


def _unresponsive(names: list[str], evidence: list[Evidence]) -> Candidate:
    """Replicas down for Prometheus whose process still runs, with no crash or restart recorded."""
    joined = ", ".join(names)
    candidate = Candidate(
        fault_type=FaultType.instance_crash,
        score=UNRESPONSIVE_SCORE,
        replicas=names,
        summary=f"Replica {joined} not answering scrapes (process still running, no crash recorded)",
        root_cause=f"Prometheus cannot scrape {joined} (up == 0) although the process manager reports the process "
        "running with no exit or restart: the replica is alive but unresponsive (event loop blocked or hung).",
        suggested_fix="Find what blocks the replica (profile it, check its stderr); restart it if it does not recover.",
        next_steps=[
            f"Check /healthz and the stderr of {joined}",
            "Profile the replica (py-spy dump) to see where it is stuck",
            "Restart it if it stays unresponsive"
            if len(names) == 1
            else "Restart them one at a time if they stay unresponsive",
        ],
        evidence=[
            *evidence,
            Evidence(
                tool="get_recent_changes",
                query="GET /instances",
                finding=f"{joined} state running, no crash or restart recorded",
            ),
        ],
    )
    candidate.back("metrics", 0.3)
    return candidate
