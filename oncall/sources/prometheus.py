"""Prometheus HTTP API: instant queries (``GET /api/v1/query``), answered compactly.

Protocol: Prometheus docs, "HTTP API" - ``{"status": "success"|"error", "data": {"resultType", "result"}}``
with ``errorType``/``error`` on failure; sample values are strings (``"NaN"``, ``"+Inf"`` included).
"""

from __future__ import annotations

import math
from typing import Any

import httpx

from oncall.sources import http as source_http
from oncall.sources.http import SourceError, get_json

MAX_SERIES = 40
"""Series kept from one PromQL answer (the rest are counted, not listed)."""


def prom_value(raw: str) -> float | str:
    """Prometheus sample value text -> float, keeping non-finite values (``NaN``, ``+Inf``) as their text."""
    value = float(raw)
    return value if math.isfinite(value) else raw


def compact_prom_data(data: dict[str, Any]) -> dict[str, Any]:
    """Shrink a Prometheus ``data`` object (``resultType`` vector/scalar/matrix/string) to
    ``{"resultType", "result": [{"labels": {...}, "value": v}]}`` with at most ``MAX_SERIES`` series."""
    kind = data.get("resultType")
    result = data.get("result") or []
    if kind in ("scalar", "string"):
        scalar: dict[str, Any] = {"resultType": kind, "value": prom_value(result[1]) if kind == "scalar" else result[1]}
        return scalar
    series: list[dict[str, Any]] = []
    for item in result[:MAX_SERIES]:
        labels = {k: v for k, v in item.get("metric", {}).items() if k != "__name__"}
        if kind == "matrix":
            series.append({"labels": labels, "values": [[t, prom_value(v)] for t, v in item["values"][-5:]]})
        else:
            series.append({"labels": labels, "value": prom_value(item["value"][1])})
    out: dict[str, Any] = {"resultType": kind, "result": series}
    if len(result) > MAX_SERIES:
        out["omitted_series"] = len(result) - MAX_SERIES
    return out


def by_label(compact: dict[str, Any], label: str) -> dict[str, float | str]:
    """Map ``label`` value -> sample value for a compacted vector (series without the label are skipped)."""
    return {s["labels"][label]: s["value"] for s in compact.get("result", []) if label in s["labels"]}


class PrometheusSource:
    """Instant PromQL queries against one Prometheus.

    Args:
        http: the shared client.
        base_url: e.g. ``http://127.0.0.1:9090`` (no trailing slash).
        timeout_s: timeout of one query, seconds.
    """

    def __init__(self, http: httpx.AsyncClient, base_url: str, timeout_s: float) -> None:
        self.http = http
        self.base_url = base_url
        self.timeout_s = timeout_s

    async def query(self, promql: str) -> dict[str, Any]:
        """Evaluate ``promql`` now; returns the compacted data (see ``compact_prom_data``).

        Raises:
            SourceError: Prometheus rejected the query (its own ``errorType``/``error``) or answered non-JSON.
            httpx.HTTPError: Prometheus could not be reached.
        """
        response = await source_http.get(self.http, f"{self.base_url}/api/v1/query", self.timeout_s, {"query": promql})
        try:
            body = response.json()
        except ValueError:
            raise SourceError(
                f"Prometheus answered HTTP {response.status_code} without JSON: {response.text[:200]}"
            ) from None
        if body.get("status") != "success":
            raise SourceError(f"Prometheus rejected the query ({body.get('errorType')}): {body.get('error')}")
        return compact_prom_data(body["data"])

    async def _api(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        body = await get_json(self.http, f"{self.base_url}{path}", self.timeout_s, params)
        if body.get("status") != "success":
            raise SourceError(f"Prometheus {path} failed ({body.get('errorType')}): {body.get('error')}")
        return dict(body.get("data") or {})

    async def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets (``GET /api/v1/targets?state=active``): ``labels``, ``scrapeUrl``, ``health``.

        Raises:
            SourceError / httpx.HTTPError: Prometheus failed or could not be reached.
        """
        return list((await self._api("/api/v1/targets", {"state": "active"})).get("activeTargets") or [])

    async def alerting_rules(self) -> list[dict[str, Any]]:
        """Every alerting rule (``GET /api/v1/rules?type=alert``): ``name``, ``query``, ``duration`` (s),
        ``labels``, ``annotations``, ``alerts`` (active ones with their labels), each with its ``group``.

        Raises:
            SourceError / httpx.HTTPError: Prometheus failed or could not be reached.
        """
        groups = (await self._api("/api/v1/rules", {"type": "alert"})).get("groups") or []
        return [{**rule, "group": group.get("name")} for group in groups for rule in group.get("rules") or []]
