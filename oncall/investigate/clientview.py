"""What clients saw and how much traffic there is: the handlers behind ``get_client_view`` and ``get_load``.

The client view reads the service's load balancer from Prometheus (``ClientQueries``): per backend the
requests answered per second, the share answered 5xx (its own 502 connection failures, 503 "no backend"
and 504 upstream timeouts included), failed upstream attempts by kind, the client-side p99 and the
requests in flight. A backend is named after the replica whose scrape target it is: the backend URL's
``host:port`` is the target's ``instance`` label (Prometheus sets ``instance`` to the target address,
Prometheus docs "Jobs and instances"). These series stay current when the replicas are too busy to be
scraped and their own series go stale.

The load view compares the request rate now with the rate at the onset and the service's own baseline
before it (``oncall.catalog.promql.rate_history``), from the load balancer when the service has one
(what clients sent; the replicas' counters stop when they stop answering) else the service's counter.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

from oncall.catalog.promql import ClientQueries, ServiceQueries
from oncall.sources.prometheus import PrometheusSource

NO_BACKEND = "none"
"""The backend label of requests the load balancer answered 503 because no backend was up."""
TIMEOUT_KINDS = frozenset({"timeout", "connect_timeout"})
"""Upstream error kinds that are timeouts (the request waited and got no answer)."""


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return round(value, digits) if value is not None else None


def instance_names(up: dict[str, Any], replica_label: str) -> dict[str, str]:
    """``host:port`` -> replica name from a compacted ``up`` answer of the service's targets."""
    names: dict[str, str] = {}
    for series in up.get("result", []):
        labels = series.get("labels") or {}
        if labels.get("instance") and labels.get(replica_label):
            names[str(labels["instance"])] = str(labels[replica_label])
    return names


def replica_of(backend: str, names: dict[str, str]) -> str:
    """The replica behind a backend URL (``http://127.0.0.1:8001`` -> ``inventory-1``), else the URL itself."""
    if backend == NO_BACKEND:
        return NO_BACKEND
    address = urlsplit(backend).netloc or backend
    return names.get(address, backend)


def _blank() -> dict[str, Any]:
    return {"rps": 0.0, "failed_rps": 0.0, "codes": {}, "upstream_errors": {}, "p99_s": None, "in_flight": None}


def _fold_codes(view: dict[str, dict[str, Any]], answer: dict[str, Any], q: ClientQueries, names: dict[str, str]):
    for series in answer.get("result", []):
        labels, value = series.get("labels") or {}, _number(series.get("value"))
        if value is None:
            continue
        entry = view.setdefault(replica_of(str(labels.get(q.backend, NO_BACKEND)), names), _blank())
        code = str(labels.get(q.code, ""))
        entry["rps"] += value
        if code.startswith("5"):
            entry["failed_rps"] += value
            entry["codes"][code] = round(entry["codes"].get(code, 0.0) + value, 4)


def _fold_by_backend(
    view: dict[str, dict[str, Any]], answer: dict[str, Any], q: ClientQueries, names: dict[str, str], key: str
) -> None:
    for series in answer.get("result", []):
        labels, value = series.get("labels") or {}, series.get("value")
        entry = view.setdefault(replica_of(str(labels.get(q.backend, NO_BACKEND)), names), _blank())
        if key == "upstream_errors":
            number = _number(value)
            if number is not None:
                entry[key][str(labels.get(q.kind, "other"))] = round(number, 4)
        else:
            entry[key] = value if isinstance(value, str) else _rounded(_number(value))


def _finish(entry: dict[str, Any]) -> dict[str, Any]:
    rps = entry["rps"]
    # a timed-out attempt is counted twice by the load balancer (its 504 answer and the failed attempt)
    upstream = sum(v for k, v in entry["upstream_errors"].items() if k in TIMEOUT_KINDS)
    timeouts = max(entry["codes"].get("504", 0.0), upstream)
    return {
        **entry,
        "rps": round(rps, 3),
        "failed_rps": round(entry["failed_rps"], 4),
        "error_ratio": round(entry["failed_rps"] / rps, 4) if rps > 0 else None,
        "timeouts_rps": round(timeouts, 4),
    }


def summarise_view(
    answers: dict[str, dict[str, Any]], q: ClientQueries, names: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Per replica (and ``none``) the client view from the answers of ``ClientQueries.view``'s queries."""
    view: dict[str, dict[str, Any]] = {}
    _fold_codes(view, answers["by_code"], q, names)
    _fold_by_backend(view, answers["upstream"], q, names, "upstream_errors")
    _fold_by_backend(view, answers["p99"], q, names, "p99_s")
    _fold_by_backend(view, answers["in_flight"], q, names, "in_flight")
    return {name: _finish(entry) for name, entry in sorted(view.items())}


def overall(replicas: dict[str, dict[str, Any]], p99: dict[str, Any]) -> dict[str, Any]:
    """Every backend together: requests/s, failed share, timeout share, client p99 and requests in flight."""
    rps = sum(e["rps"] for e in replicas.values())
    failed = sum(e["failed_rps"] for e in replicas.values())
    timeouts = sum(e["timeouts_rps"] for e in replicas.values())
    result = p99.get("result") or []
    value = result[0].get("value") if result else None
    return {
        "rps": round(rps, 3),
        "error_ratio": round(failed / rps, 4) if rps > 0 else None,
        "timeout_ratio": round(timeouts / rps, 4) if rps > 0 else None,
        "p99_s": value if isinstance(value, str) else _rounded(_number(value)),
        "in_flight": sum(e["in_flight"] or 0 for e in replicas.values()),
        "no_backend_rps": replicas.get(NO_BACKEND, {}).get("rps", 0.0),
    }


async def client_view(prometheus: PrometheusSource, clients: ClientQueries, service: ServiceQueries) -> dict[str, Any]:
    """The load balancer's view of the service's replicas (see the module docstring).

    Returns ``{"replicas": {name: {rps, failed_rps, error_ratio, codes {code: rps}, timeouts_rps,
    upstream_errors {kind: attempts/s}, p99_s, in_flight}}, "overall": {...}, "queries": {...}}``
    (requests/s, ratios 0-1, seconds).

    Raises:
        SourceError / httpx.HTTPError: Prometheus failed or could not be reached.
    """
    queries = clients.view()
    keys = list(queries)
    answers = await asyncio.gather(*(prometheus.query(queries[k]) for k in keys), prometheus.query(service.of("up")))
    by_key = dict(zip(keys, answers, strict=False))
    names = instance_names(answers[-1], service.replica)
    replicas = summarise_view(by_key, clients, names)
    return {"replicas": replicas, "overall": overall(replicas, by_key["p99_overall"]), "queries": queries}


def _scalar(answer: dict[str, Any]) -> float | None:
    result = answer.get("result") or []
    return _rounded(_number(result[0].get("value")), 3) if result else None


def _per_label(answer: dict[str, Any], label: str) -> dict[str, float]:
    found = {}
    for series in answer.get("result", []):
        value = _number(series.get("value"))
        if value is not None and label in (series.get("labels") or {}):
            found[str(series["labels"][label])] = round(value, 3)
    return dict(sorted(found.items()))


async def load_view(
    prometheus: PrometheusSource,
    service: ServiceQueries,
    clients: ClientQueries | None,
    onset_age_s: float | None,
    objective_s: float,
) -> dict[str, Any]:
    """Request rates now, at the onset and before it (see the module docstring), requests/s.

    Returns ``{"source": "load balancer" | "service", "now_rps", "at_onset_rps", "baseline_rps",
    "healthy_max_rps", "surge_factor", "per_replica_rps", "baseline_per_replica_rps", "latency_objective_s",
    "queries"}``; a figure Prometheus has no data for is None.

    Raises:
        ValueError: the service has no request metrics.
        SourceError / httpx.HTTPError: Prometheus failed or could not be reached.
    """
    own = service.load(onset_age_s, objective_s)
    if not own:
        raise ValueError("the service's catalog entry has no request metrics")
    totals = clients.load(onset_age_s, objective_s) if clients else {k: v for k, v in own.items() if "replica" not in k}
    queries = {**totals, "per_replica": own["per_replica"], "baseline_per_replica": own["baseline_per_replica"]}
    keys = list(queries)
    answers = dict(zip(keys, await asyncio.gather(*(prometheus.query(queries[k]) for k in keys)), strict=True))
    now, baseline = _scalar(answers["now"]), _scalar(answers["baseline"])
    return {
        "source": "load balancer" if clients else "service",
        "now_rps": now,
        "at_onset_rps": _scalar(answers["at_onset"]) if "at_onset" in answers else None,
        "baseline_rps": baseline,
        "healthy_max_rps": _scalar(answers["healthy_max"]) if "healthy_max" in answers else None,
        "surge_factor": round(now / baseline, 2) if now is not None and baseline else None,
        "per_replica_rps": _per_label(answers["per_replica"], service.replica),
        "baseline_per_replica_rps": _per_label(answers["baseline_per_replica"], service.replica),
        "latency_objective_s": objective_s,
        "queries": queries,
    }
