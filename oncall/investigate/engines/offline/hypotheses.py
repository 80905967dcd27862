"""Candidates assessed against the alert that paged: which explain it, how confident each is, and the
ranked ``hypotheses`` of the diagnosis (the headline first, at most two alternatives)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oncall.diagnosis import Evidence, FaultType
from oncall.investigate.engines.offline.confidence import combine, with_rival
from oncall.investigate.engines.offline.focus import Focus
from oncall.investigate.engines.offline.observations import Candidate, Observations

ALERT_SUPPORT = 0.3
"""Weight 0-1 of the paging alert's own expression breaching now on the finding's replicas."""
ALERT_CLEARED_AGAINST = 0.25
"""Weight 0-1 against a fault finding when the paging alert's expression no longer holds."""
HISTORY_SUPPORT = 0.15
"""Weight 0-1 of a resolved past incident like this one with the same fault type."""
MAX_HYPOTHESES = 3
EVIDENCE_SHOWN = 4


@dataclass
class Assessed:
    """A candidate with whether it explains the paging alert and its calibrated confidence (0-1)."""

    candidate: Candidate
    explains: bool
    confidence: float


def _alert_backing(candidate: Candidate, focus: Focus) -> None:
    if focus.breaching is None or focus.expression is None:
        return
    query = focus.expression
    if focus.breaching:
        on = set(focus.breaching_replicas)
        if not on or on & set(candidate.replicas):
            candidate.back("alert", ALERT_SUPPORT)
        return
    finding = f"{focus.alertname}'s expression does not hold now (no series breach it)"
    candidate.oppose(Evidence(tool="evaluate_alert_rule", query=query, finding=finding), ALERT_CLEARED_AGAINST)


def _history_backing(candidate: Candidate, obs: Observations) -> None:
    for past in (obs.similar or {}).get("similar_incidents", []):
        if past.get("fault_type") == candidate.fault_type.value:
            candidate.back("history", HISTORY_SUPPORT * min(1.0, float(past.get("score") or 0.0)))
            candidate.evidence.append(
                Evidence(
                    tool="find_similar_incidents", query=f"incident #{past.get('incident_id')}", finding=past["summary"]
                )
            )
            return


def assess(obs: Observations, focus: Focus, found: list[Candidate]) -> list[Assessed]:
    """Every candidate, those that explain the paging alert first (then by strength), with its confidence
    reduced by the strongest rival explanation of the same alert on the same replicas."""
    assessed = []
    for candidate in found:
        explains = focus.explained_by(candidate.fault_type, candidate.signals, candidate.replicas)
        if explains:
            _alert_backing(candidate, focus)
        _history_backing(candidate, obs)
        confidence = combine(candidate.support, candidate.against_weight, len(obs.failed))
        assessed.append(Assessed(candidate, explains, confidence))
    assessed.sort(key=lambda a: (not a.explains, -a.candidate.score, -a.confidence))
    if assessed and assessed[0].explains:
        head = assessed[0]
        rivals = [
            a.confidence
            for a in assessed[1:]
            if a.explains and set(a.candidate.replicas) & set(head.candidate.replicas)
        ]
        head.confidence = with_rival(head.confidence, max(rivals, default=None))
    return assessed


def hypothesis(item: Assessed) -> dict[str, Any]:
    """One ``oncall.diagnosis.Hypothesis`` (as JSON fields) from an assessed candidate."""
    c = item.candidate
    out: dict[str, Any] = {
        "fault_type": c.fault_type.value,
        "summary": c.summary[:300],
        "affected_replicas": sorted(c.replicas),
        "confidence": item.confidence,
        "explains_alert": item.explains,
        "evidence_for": [e.model_dump() for e in c.evidence[:EVIDENCE_SHOWN]],
        "evidence_against": [e.model_dump() for e in c.against[:EVIDENCE_SHOWN]],
    }
    if c.load:
        out["load"] = c.load
    return out


def plain(
    fault_type: FaultType,
    summary: str,
    confidence: float,
    evidence: list[dict[str, Any]],
    against: list[Evidence] | None = None,
) -> dict[str, Any]:
    """The headline hypothesis of a diagnosis without a finding (``none`` or ``unknown``)."""
    return {
        "fault_type": fault_type.value,
        "summary": summary[:300],
        "affected_replicas": [],
        "confidence": confidence,
        "explains_alert": True,
        "evidence_for": evidence[:EVIDENCE_SHOWN],
        "evidence_against": [e.model_dump() for e in (against or [])[:EVIDENCE_SHOWN]],
    }


def secondary_lines(others: list[Assessed]) -> tuple[str, list[str]]:
    """Root-cause text and next steps about findings that are not the headline (secondary hypotheses)."""
    if not others:
        return "", []
    described = [
        f"{a.candidate.fault_type.value} on {', '.join(a.candidate.replicas) or 'the service'} "
        f"({a.confidence:.0%}{'' if a.explains else ', does not explain this alert'}): {a.candidate.summary}"
        for a in others
    ]
    steps = [
        f"Also investigate {a.candidate.fault_type.value} on {', '.join(a.candidate.replicas)}: {a.candidate.summary}"
        for a in others
    ]
    return " Secondary hypotheses: " + "; ".join(described) + ".", steps
