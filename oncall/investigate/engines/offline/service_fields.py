"""What the diagnosis says about the service beyond the fault: the change timeline around the onset,
what the catalog is missing, and, for a service outside the catalog, what its alert rule shows."""

from __future__ import annotations

import json
from typing import Any

from oncall.diagnosis import Evidence
from oncall.investigate.engines.offline.observations import Observations

TIMELINE_KEPT = 20
RULE_SERIES_SHOWN = 6


def timeline(obs: Observations) -> list[dict[str, Any]]:
    """The diagnosis' ``changes``: every change read, oldest first, with its offset from the onset."""
    events = [
        {k: c.get(k) for k in ("ts", "offset_s", "kind", "replica", "summary")}
        for c in (obs.changes or {}).get("changes", [])
        if c.get("kind") and c.get("summary")
    ]
    return events[-TIMELINE_KEPT:]


def rule_evidence(obs: Observations) -> list[Evidence]:
    """The alert rule's expression and the series breaching it now (a service outside the catalog)."""
    if not obs.rule:
        return []
    rule = obs.rule["rule"]
    series = obs.rule.get("breaching_now", {}).get("result", [])
    shown = "; ".join(f"{json.dumps(s.get('labels'), sort_keys=True)} = {s.get('value')}" for s in series[:6])
    finding = f"{len(series)} series breach {rule.get('name')} now" + (f": {shown}" if shown else "")
    return [Evidence(tool="evaluate_alert_rule", query=str(rule.get("query")), finding=finding)]


def rule_replicas(obs: Observations) -> list[str]:
    """Instances the alert rule's active alerts (or breaching series) name."""
    if not obs.rule:
        return []
    labels = [a.get("labels") or {} for a in obs.rule.get("active_alerts", [])]
    labels += [s.get("labels") or {} for s in obs.rule.get("breaching_now", {}).get("result", [])]
    return sorted({str(x["instance"]) for x in labels if x.get("instance")})


def add_service_fields(fields: dict[str, Any], obs: Observations) -> dict[str, Any]:
    """Add ``onset_at``, ``changes`` and ``catalog_gaps``; a service outside the catalog says so plainly."""
    fields["onset_at"] = obs.onset
    fields["changes"] = timeline(obs)
    fields["catalog_gaps"] = list(obs.gaps)
    if obs.in_catalog:
        return fields
    fields["evidence"] = [*[e.model_dump() for e in rule_evidence(obs)], *fields["evidence"]]
    if not fields.get("affected_replicas") and fields["fault_type"] in ("unknown", "none"):
        fields["affected_replicas"] = rule_replicas(obs)
    fields["summary"] = f"{obs.service} is not in the service catalog: {fields['summary']}"
    fields["root_cause"] += (
        f" The service catalog has no entry for {obs.service}, so only the alert rule's own expression and the "
        "generic Prometheus signals of its targets were read; missing: " + "; ".join(obs.gaps) + "."
    )
    fields["next_steps"].insert(
        0,
        f"Describe {obs.service} in the service catalog (SERVICES_FILE; README 'Describe your own service'): "
        "alert matchers, Prometheus selector and metrics, logs, changes, code and version",
    )
    return fields
