"""Detector: a deploy shortly before the onset, on the replicas that then fail or slow down.

A deploy is named the likely cause when (1) it finished at most ``DEPLOY_SUSPECT_S`` before the onset
(or up to ``DEPLOY_AFTER_ONSET_S`` after it: a rolling deploy's later replicas), (2) the symptomatic
replicas (a code exception's, else those with a deviating error ratio or p99) all run what it deployed,
(3) the exception's log entries, where they carry a version, name the deployed version, and (4) no
injected fault or crash explains the symptoms instead. It then takes over the code-bug or latency
finding it explains (keeping its file and line) and proposes a ``rollback`` action to the version before.
"""

from __future__ import annotations

from typing import Any

from oncall.diagnosis import Evidence, FaultType
from oncall.investigate.engines.offline.observations import (
    ERROR_RATIO_ELEVATED,
    P99_HIGH_S,
    Candidate,
    Observations,
    deviating,
)

DEPLOY_SUSPECT_S = 900  # seconds; a deploy this long before the onset may be its cause
DEPLOY_AFTER_ONSET_S = 60  # seconds; a rolling deploy may reach the last replicas after the onset
DEPLOY_SCORE_BONUS = 0.05  # 0-1; a deploy that explains a finding outranks it
EXPLAINED_ELSEWHERE = frozenset({FaultType.injected_errors, FaultType.instance_crash})
ABSORBED = frozenset({FaultType.code_bug, FaultType.latency})


def _in_window(change: dict[str, Any]) -> bool:
    offset = change.get("offset_s")
    if offset is None:
        offset = -(change.get("age_s") or 0.0)
    return -DEPLOY_SUSPECT_S <= offset <= DEPLOY_AFTER_ONSET_S


def suspect_deploys(obs: Observations) -> dict[str | None, dict[str, Any]]:
    """The newest successful deploy in the window per replica (``None``: a service-wide deploy)."""
    newest: dict[str | None, dict[str, Any]] = {}
    for change in (obs.changes or {}).get("changes", []):
        detail = change.get("detail") or {}
        if change.get("kind") == "deploy" and detail.get("ok") is not False and _in_window(change):
            newest[change.get("replica")] = change  # changes are oldest first: the last one wins
    return newest


def _faults_after(obs: Observations, since: float, replicas: set[str]) -> bool:
    """True when a fault was injected on one of ``replicas`` (or all) after ``since`` (epoch s)."""
    for change in (obs.changes or {}).get("changes", []):
        mode = (change.get("detail") or {}).get("mode")
        touched = change.get("replica") is None or change.get("replica") in replicas
        if change.get("kind") == "fault" and mode not in (None, "none") and change["ts"] > since and touched:
            return True
    return False


def _symptoms(obs: Observations, found: list[Candidate]) -> tuple[Candidate | None, list[str]]:
    """The finding a deploy would explain (code bug or latency) and the symptomatic replicas."""
    finding = next((c for c in found if c.fault_type in ABSORBED), None)
    if finding is not None:
        return finding, sorted(finding.replicas)
    _, per_replica = obs.error_ratios()
    sick = set(deviating(per_replica, ERROR_RATIO_ELEVATED)) | set(deviating(obs.metrics.get("p99", {}), P99_HIGH_S))
    return None, sorted(sick)


def _log_versions(obs: Observations, finding: Candidate | None) -> set[str]:
    """Versions the finding's log group names (empty when the entries carry none)."""
    if finding is None or finding.affected_file is None:
        return set()
    for group in obs.current_log_groups:
        if group.get("file") == finding.affected_file and group.get("line") == finding.affected_line:
            return set(group.get("versions") or {})
    return set()


def _when(change: dict[str, Any]) -> str:
    offset = change.get("offset_s")
    if offset is None:
        return "recently"
    return f"{-offset:.0f} s before the onset" if offset <= 0 else f"{offset:.0f} s after the onset"


def _explained_finding(finding: Candidate | None, where: str) -> tuple[str, str, list[str], str]:
    """(symptom, `` at file:line``, next steps, root cause) of the finding a deploy explains."""
    if finding is None:
        return f"errors or latency on {where}", "", ["Compare the deployed change set with the previous version"], ""
    at = f" at {finding.affected_file}:{finding.affected_line}" if finding.affected_file else ""
    return finding.summary, at, finding.next_steps, finding.root_cause


def _candidate(
    deploys: list[dict[str, Any]], sick: list[str], finding: Candidate | None, obs: Observations
) -> Candidate:
    newest = max(deploys, key=lambda c: c["ts"])
    detail = newest.get("detail") or {}
    to_version, from_version = detail.get("to_version"), detail.get("from_version")
    when, where = _when(min(deploys, key=lambda c: c["ts"])), ", ".join(sick)
    rollback = f"Roll back to {from_version}" if from_version else "Roll back"
    symptom, at, steps, explained = _explained_finding(finding, where)
    evidence = [
        Evidence(tool="get_recent_changes", query="deploys in the window", finding=c["summary"]) for c in deploys
    ]
    candidate = Candidate(
        fault_type=FaultType.deploy_regression,
        score=round(min(0.95, (finding.score if finding else 0.7) + DEPLOY_SCORE_BONUS), 3),
        replicas=sick,
        summary=f"Deploy of {obs.service} {to_version} (from {from_version}) {when} is the likely cause: {symptom}",
        root_cause=f"{obs.service} {to_version} was deployed to {where} {when} (from {from_version}); the failing "
        f"replicas all run it. {explained}".strip(),
        suggested_fix=f"{rollback} ({obs.service} {to_version} -> {from_version}) through the control plane, then "
        f"fix the regression{at} before deploying {to_version} again.",
        next_steps=[
            f"Roll back {obs.service} to {from_version} and confirm the error ratio and p99 recover",
            *steps,
        ],
        evidence=[*evidence, *(finding.evidence if finding else [])],
        affected_file=finding.affected_file if finding else None,
        affected_line=finding.affected_line if finding else None,
        actions=[
            {
                "action": "rollback",
                "target": "all",
                "params": {"version": from_version},
                "risk": "medium",
                "rationale": f"{obs.service} {to_version} was deployed {when} to the replicas that fail ({where})",
                "expected_effect": f"the replicas run {from_version} again and the error ratio and p99 recover",
            }
        ]
        if from_version
        else [],
    )
    if finding is not None:
        candidate.support = dict(finding.support)
        candidate.against, candidate.against_weight = list(finding.against), finding.against_weight
        candidate.signals = (
            frozenset({"latency", "client"})
            if finding.fault_type is FaultType.latency
            else frozenset({"errors", "client"})
        )
    return _backed(candidate, finding, obs, str(to_version))


def _backed(candidate: Candidate, finding: Candidate | None, obs: Observations, to_version: str) -> Candidate:
    """The deploy candidate backed by the change log and by what backs the finding it explains."""
    if finding is not None:
        candidate.support = dict(finding.support)
        candidate.against, candidate.against_weight = list(finding.against), finding.against_weight
        latency = finding.fault_type is FaultType.latency
        candidate.signals = frozenset({"latency" if latency else "errors", "client"})
    candidate.back("changes", 0.5)
    if to_version in _log_versions(obs, finding):
        candidate.back("logs", min(1.0, candidate.support.get("logs", 0.0) + 0.1))
    return candidate


def _explained(obs: Observations, deploys: list[dict[str, Any]], finding: Candidate | None, sick: list[str]) -> bool:
    """True when the symptoms do not follow from ``deploys``: the logged exception names another version, or
    a fault was injected on the symptomatic replicas after the deploy."""
    versions = {(c.get("detail") or {}).get("to_version") for c in deploys}
    logged = _log_versions(obs, finding)
    return bool(logged and not logged & versions) or _faults_after(obs, min(c["ts"] for c in deploys), set(sick))


def correlate_deploys(obs: Observations, found: list[Candidate]) -> list[Candidate]:
    """``found`` with a ``deploy_regression`` candidate replacing the finding a recent deploy explains."""
    deploys = suspect_deploys(obs)
    if not deploys or any(c.fault_type in EXPLAINED_ELSEWHERE and c.score >= 0.5 for c in found):
        return found
    finding, sick = _symptoms(obs, found)
    everywhere = None in deploys
    if not sick or not (everywhere or set(sick) <= set(deploys)):
        return found
    involved = [c for r, c in deploys.items() if r is None or r in sick]
    if _explained(obs, involved, finding, sick):
        return found
    rest = [c for c in found if c is not finding]
    return sorted([_candidate(involved, sick, finding, obs), *rest], key=lambda c: -c.score)
