"""The alert that paged: which signal its own expression measures, on which replicas, and whether it holds now.

The investigation starts from the paging alert's rule (``evaluate_alert_rule``: its PromQL and the
series breaching it now) and its labels. The signal is read from the expression's metrics, in this
order (the first that matches wins):

=========  =====================================================================
signal     the expression reads
=========  =====================================================================
client     the load balancer's answers (``lb_`` series): what clients saw
latency    a latency histogram (``histogram_quantile``, ``_bucket``, ``duration``)
cpu        CPU seconds (``cpu_seconds``)
memory     resident memory (``resident_memory``, ``memory``)
crash      crashes or process restarts (``crash``, ``start_time``, ``restart``)
down       ``up`` (the target does not answer scrapes)
errors     failed requests (``error``, ``5xx``, ``5..``)
=========  =====================================================================

A headline must explain the alert's signal (``EXPLAINS``); other findings become secondary hypotheses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from oncall.diagnosis import FaultType

SIGNAL_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("client", re.compile(r"\blb_\w+")),
    ("latency", re.compile(r"histogram_quantile|_bucket\b|duration|latency")),
    ("cpu", re.compile(r"cpu_seconds")),
    ("memory", re.compile(r"resident_memory|memory")),
    ("crash", re.compile(r"crash|start_time|restart")),
    ("down", re.compile(r"(?<![\w.])up\s*(\{|==|<|$)")),
    ("errors", re.compile(r"error|5xx|5\.\.|status=~?\"5")),
)
EXPLAINS: dict[FaultType, frozenset[str]] = {
    FaultType.code_bug: frozenset({"errors", "client"}),
    FaultType.injected_errors: frozenset({"errors", "client"}),
    FaultType.deploy_regression: frozenset({"errors", "latency", "client"}),
    FaultType.latency: frozenset({"latency", "client"}),
    FaultType.cpu_saturation: frozenset({"cpu", "latency", "down", "client"}),
    FaultType.overload: frozenset({"latency", "cpu", "down", "client", "errors"}),
    FaultType.memory_pressure: frozenset({"memory"}),
    FaultType.instance_crash: frozenset({"down", "crash", "client"}),
}
"""The alert signals each fault type can explain."""


def signal_of(expression: str | None) -> str | None:
    """The signal a rule expression measures (module table), or None when none matches."""
    if not expression:
        return None
    return next((signal for signal, pattern in SIGNAL_PATTERNS if pattern.search(expression)), None)


@dataclass
class Focus:
    """The paging alert: ``alertname``, the ``signal`` its expression measures (None: unknown), the
    ``replicas`` its firing alerts name (empty: service-wide), ``breaching`` (its expression returns series
    now; None when the rule could not be read), the ``expression`` and ``values`` breaching it now."""

    alertname: str | None = None
    signal: str | None = None
    replicas: list[str] = field(default_factory=list)
    breaching: bool | None = None
    breaching_replicas: list[str] = field(default_factory=list)
    expression: str | None = None
    values: list[str] = field(default_factory=list)

    def explained_by(self, fault_type: FaultType, signals: frozenset[str] | None, replicas: list[str]) -> bool:
        """True when a finding of ``fault_type`` on ``replicas`` accounts for this alert (unknown signal: any)."""
        can = signals if signals is not None else EXPLAINS.get(fault_type, frozenset())
        if self.signal is not None and self.signal not in can:
            return False
        named = set(self.replicas) | set(self.breaching_replicas)
        return not named or bool(named & set(replicas))


def _firing(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [a for a in alerts if a.get("status", "firing") == "firing"] or list(alerts)


def focus_of(alerts: list[dict[str, Any]], rule: dict[str, Any] | None, replica_label: str) -> Focus:
    """The focus of an incident from its alert rows and the paging alert's rule evaluation (``evaluate_rule``)."""
    labels = [a.get("labels") or {} for a in _firing(alerts)]
    alertname = next((str(lab["alertname"]) for lab in labels if lab.get("alertname")), None)
    replicas = sorted({str(lab[replica_label]) for lab in labels if lab.get(replica_label)})
    focus = Focus(alertname=alertname, replicas=replicas)
    return _with_rule(focus, rule, replica_label) if rule and rule.get("rule") else focus


def _with_rule(focus: Focus, rule: dict[str, Any], replica_label: str) -> Focus:
    """``focus`` with the rule's expression, its signal and the series breaching it now."""
    focus.expression = str(rule["rule"].get("query") or "")
    focus.signal = signal_of(focus.expression)
    series = [s for s in (rule.get("breaching_now") or {}).get("result") or [] if isinstance(s.get("labels"), dict)]
    focus.breaching = bool(series)
    focus.breaching_replicas = sorted({str(s["labels"][replica_label]) for s in series if replica_label in s["labels"]})
    focus.values = [f"{s['labels'].get(replica_label, 'service')} = {s.get('value')}" for s in series[:6]]
    return focus
