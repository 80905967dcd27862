"""An alert's own Prometheus rule, re-evaluated now: what an investigation can read about any alert.

Protocol: ``GET /api/v1/rules?type=alert`` lists each alerting rule's ``name``, ``query``,
``duration`` (the ``for:``, seconds), ``labels``, ``annotations`` and active ``alerts`` (labels,
``state``, ``activeAt``, ``value``), Prometheus docs "HTTP API - Rules".
"""

from __future__ import annotations

from typing import Any

from oncall.sources.http import SourceError
from oncall.sources.prometheus import PrometheusSource

ALERTS_KEPT = 20


def pick_rule(rules: list[dict[str, Any]], alertname: str, labels: dict[str, str]) -> dict[str, Any] | None:
    """The rule called ``alertname`` whose own labels all agree with ``labels`` (the first such), or None."""
    named = [r for r in rules if r.get("name") == alertname]
    agreeing = [r for r in named if all(labels.get(k, v) == v for k, v in (r.get("labels") or {}).items())]
    chosen = agreeing or named
    return chosen[0] if chosen else None


async def evaluate_rule(prometheus: PrometheusSource, alertname: str, labels: dict[str, str]) -> dict[str, Any]:
    """The rule of ``alertname`` (picked by ``labels``) and its expression evaluated now.

    Returns ``{"rule": {name, group, query, for_s, labels, summary, description}, "breaching_now": compacted
    PromQL answer, "active_alerts": [{labels, state, active_at, value}]}``.

    Raises:
        SourceError: no such rule, or Prometheus failed.
    """
    rules = await prometheus.alerting_rules()
    rule = pick_rule(rules, alertname, labels)
    if rule is None:
        known = sorted({str(r.get("name")) for r in rules})[:30]
        raise SourceError(f"Prometheus has no alerting rule {alertname!r}; rules: {', '.join(known)}")
    annotations = rule.get("annotations") or {}
    active = [
        {
            "labels": {k: v for k, v in (a.get("labels") or {}).items() if k != "alertname"},
            "state": a.get("state"),
            "active_at": a.get("activeAt"),
            "value": a.get("value"),
        }
        for a in (rule.get("alerts") or [])[:ALERTS_KEPT]
    ]
    return {
        "rule": {
            "name": rule.get("name"),
            "group": rule.get("group"),
            "query": rule.get("query"),
            "for_s": rule.get("duration"),
            "labels": rule.get("labels") or {},
            "summary": annotations.get("summary"),
            "description": annotations.get("description"),
        },
        "breaching_now": await prometheus.query(str(rule.get("query"))),
        "active_alerts": active,
    }
