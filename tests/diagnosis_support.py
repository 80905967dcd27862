"""Helpers for the diagnosis tests: Prometheus answers for the load balancer's view, the load and the alert
rules (in Prometheus' HTTP API format), and observations rebuilt from a recorded live investigation."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from oncall.investigate.engines.offline.engine import new_observations, observe
from oncall.investigate.engines.offline.observations import Observations
from oncall.investigate.toolloop import ToolCallRecord
from tests.catalog_support import SHIPPED_CATALOG
from tests.support import REPO_ROOT

Series = list[tuple[dict[str, str], float | str]]
LB_QUERIES = SHIPPED_CATALOG.get("inventory").load_balancer.queries()  # type: ignore[union-attr]
RECORDINGS = REPO_ROOT / "tests" / "fixtures" / "diagnosis"


def backend(replica: str) -> str:
    """The load balancer's backend URL of ``inventory-N`` in the mocked stacks (port 8000 + N)."""
    return f"http://127.0.0.1:{8000 + int(replica.rsplit('-', 1)[1])}"


def client_view_answers(
    rps: dict[str, float],
    error_ratio: dict[str, float],
    p99: dict[str, float],
    in_flight: dict[str, float] | None = None,
    timeouts: dict[str, float] | None = None,
) -> dict[str, Series]:
    """Answers to ``get_client_view``'s queries: per replica requests/s split into 200/500 (and 504 for
    ``timeouts`` requests/s), client p99 seconds and requests in flight."""
    view = LB_QUERIES.view()
    by_code: Series = []
    for replica, total in rps.items():
        failed = total * error_ratio.get(replica, 0.0)
        late = (timeouts or {}).get(replica, 0.0)
        by_code.append(({"backend": backend(replica), "code": "200"}, total - failed - late))
        if failed:
            by_code.append(({"backend": backend(replica), "code": "500"}, failed))
        if late:
            by_code.append(({"backend": backend(replica), "code": "504"}, late))
    upstream: Series = [({"backend": backend(r), "kind": "timeout"}, v) for r, v in (timeouts or {}).items() if v]
    return {
        view["by_code"]: by_code,
        view["upstream"]: upstream,
        view["p99"]: [({"backend": backend(r)}, v) for r, v in p99.items()],
        view["p99_overall"]: [({}, max(p99.values()) if p99 else "NaN")],
        view["in_flight"]: [({"backend": backend(r)}, (in_flight or {}).get(r, 0.0)) for r in rps],
    }


def load_answer(query: str, now: float, baseline: float | None, per_replica: dict[str, float]) -> Series | None:
    """The answer to one of ``get_load``'s queries (their offsets depend on the clock, so matched by shape)."""
    grouped = "by (replica)" in query
    if query.startswith("quantile_over_time"):
        if baseline is None:
            return []
        return [({"replica": r}, baseline / len(per_replica)) for r in per_replica] if grouped else [({}, baseline)]
    if query.startswith("max_over_time"):
        return [({}, baseline)] if baseline is not None else []
    if re.search(r"\[1m\] offset \d+s\)\)$", query):
        return [({}, now)]
    if query.startswith("sum(rate(lb_requests_total") or query.startswith("sum(rate(http_requests_total"):
        return [({}, now)]
    if grouped and query.startswith("sum by (replica)(rate(http_requests_total"):
        return [({"replica": r}, v) for r, v in per_replica.items()]
    return None


def impact_answer(query: str, rps: float, error_ratio: float) -> Series | None:
    """The answer to one of ``measure_impact``'s ``increase()`` queries (their window depends on the clock)."""
    window = re.search(r"\[(\d+)s\]\)\)", query)
    if not query.startswith(("sum(increase(", "sum by (route)(increase(")) or window is None:
        return None
    total = rps * int(window[1])
    if query.startswith("sum by (route)"):
        return [({"route": "/items/{item_id}"}, total * error_ratio)] if error_ratio else []
    if 'code="504"' in query:
        return []
    if 'code=~"5.."' in query or "http_errors_total" in query:
        return [({}, total * error_ratio)]
    return [({}, total)]


def rules_body(breaching: dict[str, Series] | None = None) -> dict[str, Any]:
    """``GET /api/v1/rules?type=alert`` for the shipped ``alerts.yaml`` (no active alerts)."""
    groups = []
    for group in yaml.safe_load((REPO_ROOT / "alerts.yaml").read_text())["groups"]:
        rules = [
            {
                "name": rule["alert"],
                "query": " ".join(str(rule["expr"]).split()),
                "duration": 60,
                "labels": rule.get("labels") or {},
                "annotations": rule.get("annotations") or {},
                "alerts": [],
                "type": "alerting",
            }
            for rule in group["rules"]
        ]
        groups.append({"name": group["name"], "file": "alerts.yaml", "rules": rules, "interval": 5})
    return {"status": "success", "data": {"groups": groups}}


def rule_query(alertname: str) -> str:
    """The expression of the shipped rule ``alertname`` as ``rules_body`` answers it."""
    for group in rules_body()["data"]["groups"]:
        for rule in group["rules"]:
            if rule["name"] == alertname:
                return str(rule["query"])
    raise KeyError(alertname)


def recorded(name: str) -> tuple[Observations, list[dict[str, Any]], dict[str, Any]]:
    """A live investigation recorded by ``bench/accuracy.py`` (``tests/fixtures/diagnosis/<name>.json``): its
    round-1 observations as the offline engine made them, the incident's alerts, and the diagnosis it got."""
    data = json.loads((RECORDINGS / f"{name}.json").read_text())
    service = data["diagnosis"]["affected_service"]
    context = _context(service, data["alerts"])
    records = {}
    for call in data["tool_calls"]:
        key = call["call_id"].split("-", 2)[2]
        result = call["result"]
        records[key] = ToolCallRecord(
            1,
            call["call_id"],
            call["tool"],
            call["arguments"],
            call["ok"],
            result,
            call.get("error"),
            call["started_at"],
            0.0,
        )
    obs = observe(records, new_observations(context), context.replica_label)
    return obs, data["alerts"], data["diagnosis"]


def _context(service: str, alerts: list[dict[str, Any]]):
    """The catalog context of ``service`` with the recorded alerts (its sources are never called)."""
    from oncall.investigate.context import Toolbox

    toolbox = Toolbox(SHIPPED_CATALOG, lambda entry: None)  # type: ignore[arg-type,return-value]
    return toolbox.service(service, alerts)
