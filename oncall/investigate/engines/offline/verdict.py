"""The offline engine's verdict: the finding that explains the alert that paged becomes the headline.

Candidates are assessed against the paging alert (``focus``): those that explain its signal on its
replicas come first, by strength; the headline is the first of them whose calibrated confidence
reaches ``confidence.INCONCLUSIVE``. The other findings are secondary hypotheses with their own
evidence and confidence (and may start their own incident when their alert fires). Without a
headline the verdict is a healthy system or inconclusive (``healthy``). Priority follows what clients
experienced (``priority``); advice that would take every replica out is rewritten (``advice``).
"""

from __future__ import annotations

from typing import Any

from oncall.diagnosis import FaultType
from oncall.investigate.advice import make_safe
from oncall.investigate.engines.offline.confidence import INCONCLUSIVE
from oncall.investigate.engines.offline.focus import Focus, focus_of
from oncall.investigate.engines.offline.healthy import no_candidate
from oncall.investigate.engines.offline.hypotheses import (
    MAX_HYPOTHESES,
    Assessed,
    assess,
    hypothesis,
    secondary_lines,
)
from oncall.investigate.engines.offline.load import context_line, figures, surge
from oncall.investigate.engines.offline.observations import Candidate, Observations
from oncall.investigate.engines.offline.priority import priority

SUMMARY_MAX_CHARS = 500


def diagnosis_fields(obs: Observations, candidates: list[Candidate], alerts: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``send_diagnosis`` arguments for ``candidates`` and the incident's ``alerts`` (see the module docstring)."""
    focus = focus_of(alerts, obs.rule, obs.replica_label)
    assessed = assess(obs, focus, candidates)
    headline = next((a for a in assessed if a.explains and a.confidence >= INCONCLUSIVE), None)
    critical = any(
        a.get("labels", {}).get("severity") == "critical" for a in alerts if a.get("status", "firing") == "firing"
    )
    if headline is not None:
        others = [a for a in assessed if a is not headline][: MAX_HYPOTHESES - 1]
        fields = from_headline(headline, others, obs, focus)
        fields["priority"] = priority(obs, headline.candidate, critical)
    else:
        others = assessed[: MAX_HYPOTHESES - 1]
        fields = no_candidate(obs, focus, others)
        fields["hypotheses"] += [hypothesis(a) for a in others]
        text, _ = secondary_lines(others)
        fields["root_cause"] += text
    fields["next_steps"].extend(obs.context)
    if obs.failed:
        fields["next_steps"].append("Some evidence was unavailable: " + "; ".join(f[:160] for f in obs.failed))
    fields["summary"] = fields["summary"][:SUMMARY_MAX_CHARS]
    return make_safe(fields, obs.replicas, overload=fields["fault_type"] == FaultType.overload.value)


def _under_load(headline: Assessed, obs: Observations) -> str:
    """A fault under a surge stays the headline; the surge is its context (and its ``load`` figures)."""
    candidate = headline.candidate
    if candidate.fault_type is FaultType.overload:
        return ""
    rise = surge(obs)
    if rise is None:
        return ""
    candidate.load = figures(obs, rise)
    return " " + (context_line(obs) or "")


def from_headline(headline: Assessed, others: list[Assessed], obs: Observations, focus: Focus) -> dict[str, Any]:
    """Diagnosis fields of the headline finding; the others are listed as secondary hypotheses."""
    chosen = headline.candidate
    context = _under_load(headline, obs)
    text, steps = secondary_lines(others)
    strong = [s for s, a in zip(steps, others, strict=True) if a.confidence >= INCONCLUSIVE]
    alert = f" It explains {focus.alertname}." if focus.alertname and focus.signal else ""
    return {
        "summary": chosen.summary,
        "root_cause": chosen.root_cause + context + alert + text,
        "fault_type": chosen.fault_type.value,
        "affected_service": obs.service,
        "affected_replicas": sorted(chosen.replicas),
        "affected_file": chosen.affected_file,
        "affected_line": chosen.affected_line,
        "confidence": headline.confidence,
        "evidence": [e.model_dump() for e in chosen.evidence]
        + [a.candidate.evidence[0].model_dump() for a in others if a.candidate.evidence],
        "suggested_fix": chosen.suggested_fix,
        "next_steps": list(chosen.next_steps) + strong,
        "proposed_actions": list(chosen.actions),
        "hypotheses": [hypothesis(headline)] + [hypothesis(a) for a in others],
    }
