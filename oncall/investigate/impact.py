"""What clients experienced since the onset, measured in Prometheus: the handler of ``measure_impact``.

Counts come from ``increase()`` over the window from the onset to now: the requests the load balancer
answered (what clients saw, its own 502/503/504 included, 504 = a client timeout) when the service has
one, else the service's own request and error counters; the routes with failed requests; and the
fleet (every replica Prometheus scrapes for the service), against which advice is checked.
"""

from __future__ import annotations

import asyncio
from typing import Any

from oncall.catalog.promql import ClientQueries, ServiceQueries
from oncall.sources.prometheus import PrometheusSource

MIN_WINDOW_S = 60
MAX_WINDOW_S = 86400
DEFAULT_WINDOW_S = 300
"""Seconds measured when the onset is unknown."""


def window_s(onset: float | None, now: float) -> int:
    """Seconds from the onset to ``now``, within ``MIN_WINDOW_S``..``MAX_WINDOW_S`` (``DEFAULT_WINDOW_S`` unknown)."""
    if onset is None:
        return DEFAULT_WINDOW_S
    return int(min(MAX_WINDOW_S, max(MIN_WINDOW_S, round(now - onset))))


def _scalar(answer: dict[str, Any]) -> float | None:
    result = answer.get("result") or []
    value = result[0].get("value") if result else None
    return round(float(value), 1) if isinstance(value, int | float) else None


def _labels(answer: dict[str, Any], label: str) -> list[str]:
    return sorted({str(s["labels"][label]) for s in answer.get("result", []) if label in (s.get("labels") or {})})


def impact_queries(service: ServiceQueries | None, clients: ClientQueries | None, window: str) -> dict[str, str]:
    """The queries of ``measure_impact`` over the PromQL range ``window``: totals (the load balancer's, else the
    service's), the routes with failed requests and the fleet (``up`` of the service's targets)."""
    queries: dict[str, str] = {}
    if clients is not None:
        queries.update(clients.totals(window))
    elif service is not None:
        queries.update(service.totals(window))
    if service is not None:
        if service.errors and service.route:
            queries["routes"] = f"sum by ({service.route})(increase({service.errors}[{window}])) > 0"
        queries["fleet"] = service.of("up")
    return queries


async def measure_impact(
    prometheus: PrometheusSource,
    service: ServiceQueries | None,
    clients: ClientQueries | None,
    onset: float | None,
    now: float,
) -> dict[str, Any]:
    """Requests, failed requests and client timeouts since the onset, the routes that failed and the fleet.

    Returns ``{"source", "onset_at", "window_s", "requests", "failed_requests", "failed_ratio",
    "client_timeouts", "affected_routes", "fleet", "queries"}`` (counts of requests, ratio 0-1, seconds).

    Raises:
        SourceError / httpx.HTTPError: Prometheus failed or could not be reached.
    """
    seconds = window_s(onset, now)
    queries = impact_queries(service, clients, f"{seconds}s")
    keys = list(queries)
    answers = dict(zip(keys, await asyncio.gather(*(prometheus.query(queries[k]) for k in keys)), strict=True))
    requests = _scalar(answers["requests"]) if "requests" in answers else None
    failed = _scalar(answers["failed"]) if "failed" in answers else None
    return {
        "source": "load balancer" if clients is not None else "service",
        "onset_at": onset,
        "window_s": seconds,
        "requests": requests,
        "failed_requests": failed if failed is not None or requests is None else 0.0,
        "failed_ratio": round(failed / requests, 4) if failed is not None and requests else None,
        "client_timeouts": _scalar(answers["timeouts"]) if "timeouts" in answers else None,
        "affected_routes": _labels(answers["routes"], service.route)
        if "routes" in answers and service and service.route
        else [],
        "fleet": _labels(answers["fleet"], service.replica) if "fleet" in answers and service else [],
        "queries": queries,
    }
