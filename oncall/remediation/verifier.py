"""Verification of an action: the alert's own condition and the service's error ratio, p99 and ``up``,
watched for up to ``VERIFY_S`` seconds.

Figures are instant PromQL queries over ``FIGURE_WINDOW`` (error ratio 0-1 of the whole service, p99 in
seconds, replicas up / scraped). The alert's own condition is its Prometheus rule's expression
(``GET /api/v1/rules``) evaluated now, restricted to the series whose labels agree with the alert's
(``replica="inventory-2"``): breaching while any such series remains. Recovered when the condition no
longer breaches, the error ratio is at most ``RECOVERED_ERROR_RATIO``, every target is up and, when the
service has a latency SLO and p99 was above its threshold before, p99 is back under it; an unknown figure
(no such metric) does not block recovery, a failed query does (it is retried at the next poll).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from oncall.catalog.models import ServiceEntry
from oncall.sources.prometheus import PrometheusSource

FIGURE_WINDOW = "30s"
RECOVERED_ERROR_RATIO = 0.05
"""Error ratio (0-1) at or under which the service counts as recovered."""


@dataclass
class Figures:
    """One measurement: ``error_ratio`` (0-1), ``p99_s`` (seconds), ``up`` / ``targets`` (counts),
    ``alert_breaching`` (None: the alert's rule is unknown), ``at`` (epoch s), ``errors``: failed queries."""

    at: float
    error_ratio: float | None = None
    p99_s: float | None = None
    up: int | None = None
    targets: int | None = None
    alert_breaching: bool | None = None
    errors: list[str] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def _scalar(answer: dict[str, Any]) -> float | None:
    values = [s.get("value") for s in answer.get("result") or []]
    numbers = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(float(v))]
    return numbers[0] if numbers else None


def _agrees(series: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key, value) == value for key, value in series.items())


class Verifier:
    """Measures a service and watches it recover.

    Args:
        prometheus: the Prometheus the service's metrics are in.
        verify_s: how long to watch at most, seconds (``VERIFY_S``).
        poll_s: seconds between two measurements (``VERIFY_POLL_S``).
    """

    def __init__(self, prometheus: PrometheusSource, verify_s: float, poll_s: float) -> None:
        self.prometheus = prometheus
        self.verify_s = verify_s
        self.poll_s = poll_s

    def queries(self, entry: ServiceEntry) -> dict[str, str]:
        """The PromQL of the figures: ``error_ratio``, ``p99``, ``up``, ``targets`` (those the entry allows)."""
        if entry.prometheus is None:
            return {}
        service = entry.prometheus.queries()
        out = {"up": f"sum({service.of('up')})", "targets": f"count({service.of('up')})"}
        if service.requests and service.errors:
            out["error_ratio"] = service.error_rate(FIGURE_WINDOW)["overall"]
        if service.buckets:
            out["p99"] = f"histogram_quantile(0.99, sum by (le)(rate({service.buckets}[{FIGURE_WINDOW}])))"
        return out

    async def measure(self, entry: ServiceEntry, alert: tuple[str, dict[str, str]] | None) -> Figures:
        """The service's figures now, and whether the alert (``(alertname, labels)``) still breaches."""
        figures = Figures(at=time.time(), errors=[])
        for key, promql in self.queries(entry).items():
            try:
                value = _scalar(await self.prometheus.query(promql))
            except Exception as exc:  # noqa: BLE001 - a failed figure is reported, and blocks recovery
                figures.errors = [*(figures.errors or []), f"{key}: {type(exc).__name__}: {exc}"[:200]]
                continue
            if key == "p99":
                figures.p99_s = value
            elif key in ("up", "targets"):
                setattr(figures, key, None if value is None else int(value))
            else:
                figures.error_ratio = value
        if alert is not None:
            figures.alert_breaching = await self._breaching(*alert, figures)
        return figures

    async def _breaching(self, alertname: str, labels: dict[str, str], figures: Figures) -> bool | None:
        try:
            rules = [r for r in await self.prometheus.alerting_rules() if r.get("name") == alertname]
            if not rules:
                return None
            answer = await self.prometheus.query(str(rules[0].get("query")))
        except Exception as exc:  # noqa: BLE001 - reported, and blocks recovery
            figures.errors = [*(figures.errors or []), f"alert rule: {type(exc).__name__}: {exc}"[:200]]
            return True
        return any(_agrees(s.get("labels") or {}, labels) for s in answer.get("result") or [])

    def recovered(self, entry: ServiceEntry, before: Figures, now: Figures) -> bool:
        """True when ``now`` shows the service recovered (see module docstring)."""
        if now.errors or now.alert_breaching:
            return False
        if now.error_ratio is not None and now.error_ratio > RECOVERED_ERROR_RATIO:
            return False
        if now.up is not None and now.targets is not None and now.up < now.targets:
            return False
        latency = entry.slo.latency if entry.slo else None
        if latency and before.p99_s is not None and before.p99_s > latency.threshold_s:
            return now.p99_s is not None and now.p99_s <= latency.threshold_s
        return True

    async def watch(
        self,
        entry: ServiceEntry,
        alert: tuple[str, dict[str, str]] | None,
        before: Figures,
        started_at: float,
        heartbeat: Callable[[], Awaitable[bool]],
    ) -> dict[str, Any]:
        """Measure every ``poll_s`` until recovered or ``verify_s`` after ``started_at`` (epoch s).

        ``heartbeat`` runs after each measurement (renews the execution's lease); when it answers False the
        watch stops (the claim was lost). Returns ``{"recovered", "after_s", "before", "after", "polls",
        "claim_lost"}`` (``after_s``: seconds from ``started_at`` to the recovered measurement).
        """
        polls, now = 0, before
        while True:
            now = await self.measure(entry, alert)
            polls += 1
            recovered = self.recovered(entry, before, now)
            alive = await heartbeat()
            if recovered or not alive or now.at - started_at >= self.verify_s:
                break
            await asyncio.sleep(self.poll_s)
        return {
            "recovered": recovered,
            "after_s": round(now.at - started_at, 1),
            "before": before.as_dict(),
            "after": now.as_dict(),
            "polls": polls,
            "claim_lost": not alive,
        }


def figures_text(verification: dict[str, Any]) -> str:
    """``error ratio 58% -> 0.4%, p99 1.20 s -> 0.03 s, up 3/3`` from a verification."""
    before, after = verification.get("before") or {}, verification.get("after") or {}
    parts = []
    if before.get("error_ratio") is not None or after.get("error_ratio") is not None:
        parts.append(f"error ratio {_pct(before.get('error_ratio'))} -> {_pct(after.get('error_ratio'))}")
    if before.get("p99_s") is not None or after.get("p99_s") is not None:
        parts.append(f"p99 {_sec(before.get('p99_s'))} -> {_sec(after.get('p99_s'))}")
    if after.get("up") is not None and after.get("targets") is not None:
        parts.append(f"up {after['up']}/{after['targets']}")
    if after.get("alert_breaching") is not None:
        parts.append("alert condition " + ("still breaching" if after["alert_breaching"] else "clear"))
    return ", ".join(parts) or "no figures available"


def _pct(value: float | None) -> str:
    if value is None:
        return "n/a"
    percent = value * 100
    return f"{percent:.1f} %" if percent < 10 else f"{percent:.0f} %"


def _sec(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"
