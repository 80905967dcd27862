"""Calibrated confidence: how much independent, fresh evidence agrees with a hypothesis.

Each independent source (logs, the service's metrics, the load balancer's view, the alert's own
expression, the change log, the process manager, the code, the traffic, past incidents) backs a
hypothesis with a weight 0-1 (the detectors set them, ``Candidate.back``). Sources combine like
independent chances of being right, ``1 - prod(1 - w)``; evidence against it scales that down by
``1 - against`` (combined the same way); each failed tool call takes ``FAILED_TOOL_PENALTY`` off
(at most ``FAILED_TOOLS_MAX_PENALTY``); a rival hypothesis that explains the same alert on the same
replicas takes ``RIVAL_SHARE`` of its own confidence off. The result stays within ``FLOOR`` and
``CEILING``: one source alone never makes a certainty. The weights are checked on the accuracy
benchmark (``bench/accuracy.py``: Brier score and a reliability table per confidence bucket), so
that a stated 80 % is right about 80 % of the time.
"""

from __future__ import annotations

import math

FAILED_TOOL_PENALTY = 0.04
"""Confidence (0-1) taken off per failed tool call, at most ``FAILED_TOOLS_MAX_PENALTY`` in all."""
FAILED_TOOLS_MAX_PENALTY = 0.2
RIVAL_SHARE = 0.35
"""Share of a rival hypothesis' confidence taken off the headline's when both explain the alert."""
FLOOR = 0.05
CEILING = 0.97
INCONCLUSIVE = 0.35
"""Below this confidence no finding is named the cause: the diagnosis is ``unknown`` (inconclusive)."""


def combine(support: dict[str, float], against: float = 0.0, failed_tools: int = 0) -> float:
    """Confidence 0-1 from per-source ``support`` weights, the combined weight ``against`` and failed tool calls."""
    if not support:
        return FLOOR
    chance = 1 - math.prod(1 - min(1.0, max(0.0, w)) for w in support.values())
    penalty = min(FAILED_TOOLS_MAX_PENALTY, FAILED_TOOL_PENALTY * failed_tools)
    value = chance * (1 - min(1.0, max(0.0, against))) - penalty
    return round(min(CEILING, max(FLOOR, value)), 2)


def with_rival(confidence: float, rival: float | None) -> float:
    """``confidence`` reduced by a rival explanation of the same alert (``rival`` its confidence, or None)."""
    if rival is None:
        return confidence
    return round(min(CEILING, max(FLOOR, confidence - RIVAL_SHARE * rival)), 2)
