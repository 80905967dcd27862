"""The impact of an incident episode: how long it lasted, how many requests failed and what share,
which routes and replicas were hit, and how much of the SLO error budget it burned.

Numbers come from the diagnosis' ``impact`` (``oncall.diagnosis.Impact``: ``requests``,
``failed_requests``, ``failed_ratio``, ``affected_routes``, ``error_budget_burned``, set by the agent
from what clients saw) when it has them; otherwise they are estimated from the investigation's
``compute_error_rate`` calls: the highest overall error ratio observed times the request rate at that
observation times the duration so far (an estimate, labelled as such: traffic and the ratio change
during an incident). ``EpisodeImpact.to_contract`` gives the estimate in the diagnosis' shape.

Error budget: with an SLO ``target`` (e.g. 0.999 of requests succeed) over ``period_s`` (e.g. 30
days), the budget is ``(1 - target) x requests in the period``; an episode failing a share ``f`` of
its requests for ``d`` seconds burns ``f x d / ((1 - target) x period_s)`` of it (traffic assumed
steady over the period).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from oncall.diagnosis import Impact
from oncall.store.rows import Row


@dataclass(frozen=True)
class Slo:
    """A service's availability SLO: ``target`` share of requests that succeed (0-1), over ``period_s``
    seconds (the service catalog supplies it)."""

    target: float
    period_s: float = 30 * 86400.0


@dataclass(frozen=True)
class EpisodeImpact:
    """The impact of one episode (times epoch s, ratios 0-1, counts of requests).

    ``source``: ``diagnosis`` (counted) or ``estimate`` (from ``compute_error_rate``) or ``none``.
    ``budget_burned``: share of the SLO error budget (may exceed 1), None without an SLO or numbers.
    """

    onset_at: float
    ended_at: float | None
    duration_s: float
    failed_requests: float | None
    total_requests: float | None
    failed_share: float | None
    routes: tuple[str, ...]
    replicas: tuple[str, ...]
    source: Literal["diagnosis", "estimate", "none"]
    budget_burned: float | None

    def to_contract(self) -> Impact:
        """The diagnosis' ``impact`` (``oncall.diagnosis.Impact``) with these numbers."""
        return Impact(
            onset_at=self.onset_at,
            duration_s=self.duration_s,
            requests=self.total_requests,
            failed_requests=self.failed_requests,
            failed_ratio=min(1.0, self.failed_share) if self.failed_share is not None else None,
            affected_routes=list(self.routes),
            affected_replicas=list(self.replicas),
            error_budget_burned=self.budget_burned,
        )


def parse_time(value: str | None) -> float | None:
    """An RFC 3339 timestamp (Alertmanager ``startsAt``) as epoch s; None when absent or unparsable.
    Alertmanager's zero time ``0001-01-01T00:00:00Z`` means unset and gives None."""
    if not value or value.startswith("0001-"):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def onset(detail: Row, episode_started_at: float) -> float:
    """When the episode's trouble began: the earliest ``startsAt`` of its alerts not older than the
    previous episode, else the episode start."""
    previous_end = max(
        (
            float(e["at"])
            for e in detail.get("timeline", [])
            if e["kind"] == "resolved" and e["at"] < episode_started_at
        ),
        default=None,
    )
    starts = [parse_time(alert.get("starts_at")) for alert in detail.get("alerts", [])]
    valid = [
        s for s in starts if s is not None and s <= episode_started_at and (previous_end is None or s >= previous_end)
    ]
    return min(valid, default=episode_started_at)


def _ok_results(detail: Row, tool: str, since: float) -> list[dict[str, Any]]:
    """Decoded results of the episode's successful calls of ``tool``."""
    return [
        call["result"]
        for call in detail.get("tool_calls", [])
        if call["tool"] == tool and call["ok"] and isinstance(call["result"], dict) and call["started_at"] >= since
    ]


def _positive_keys(mapping: Any) -> list[str]:
    if not isinstance(mapping, dict):
        return []
    ranked = sorted(
        ((str(k), v) for k, v in mapping.items() if isinstance(v, int | float) and v > 0), key=lambda kv: -kv[1]
    )
    return [key for key, _ in ranked]


def _union(groups: Iterable[Iterable[str]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item for group in groups for item in group if item and item != "None"))


Counts = tuple[float | None, float | None, float | None]
"""(failed requests, total requests, failed share 0-1)."""


def _estimate(rates: list[dict[str, Any]], duration_s: float) -> Counts:
    """(failed, total, share) from the highest overall error ratio seen and the request rate then."""
    observed = [r for r in rates if isinstance(r.get("overall_error_ratio"), int | float)]
    if not observed:
        return None, None, None
    worst = max(observed, key=lambda r: r["overall_error_ratio"])
    rps = sum(v for v in (worst.get("requests_per_second_by_replica") or {}).values() if isinstance(v, int | float))
    share = float(worst["overall_error_ratio"])
    total = rps * duration_s if rps else None
    return (share * total if total is not None else None), total, share


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _counted(counted: dict[str, Any]) -> Counts:
    """(failed, total, share) as the diagnosis' ``impact`` counted them."""
    failed, total = _number(counted.get("failed_requests")), _number(counted.get("requests"))
    share = _number(counted.get("failed_ratio"))
    if share is None and failed is not None and total:
        share = failed / total
    return failed, total, share


def budget_burned(share: float | None, duration_s: float, slo: Slo | None) -> float | None:
    """Share of the SLO error budget burned by failing ``share`` of requests for ``duration_s`` (module docstring)."""
    if slo is None or share is None or slo.target >= 1:
        return None
    return share * duration_s / ((1 - slo.target) * slo.period_s)


def _where(
    counted: dict[str, Any], diagnosis: dict[str, Any], rates: list[dict[str, Any]], logs: list[dict[str, Any]]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(affected routes, affected replicas): counted ones first, then those with errors in the tool results."""
    routes = _union(
        [counted.get("affected_routes") or []]
        + [_positive_keys(r.get("per_route_error_ratio")) for r in rates]
        + [list((log.get("by_route") or {}).keys()) for log in logs]
    )
    replicas = _union(
        [counted.get("affected_replicas") or [], diagnosis.get("affected_replicas") or []]
        + [_positive_keys(r.get("per_replica_error_ratio")) for r in rates]
    )
    return routes, replicas


def episode_impact(detail: Row, episode_started_at: float, now: float, slo: Slo | None = None) -> EpisodeImpact:
    """The impact of the episode that began at ``episode_started_at`` (epoch s) of the incident
    ``detail`` (``oncall.store.views.incident_detail``), measured until its resolution or ``now``."""
    start = onset(detail, episode_started_at)
    ended = detail.get("resolved_at") if detail.get("status") == "resolved" else None
    duration = max(0.0, float(ended or now) - start)
    rates = _ok_results(detail, "compute_error_rate", episode_started_at)
    logs = _ok_results(detail, "fetch_logs", episode_started_at)
    diagnosis = detail.get("diagnosis") or {}
    counted: dict[str, Any] = diagnosis["impact"] if isinstance(diagnosis.get("impact"), dict) else {}
    source: Literal["diagnosis", "estimate", "none"] = "diagnosis"
    failed, total, share = _counted(counted)
    if share is None:
        failed, total, share = _estimate(rates, duration)
        source = "estimate" if share is not None else "none"
    routes, replicas = _where(counted, diagnosis, rates, logs)
    burned = _number(counted.get("error_budget_burned")) if source == "diagnosis" else None
    if burned is None:
        burned = budget_burned(share, duration, slo)
    return EpisodeImpact(start, ended, duration, failed, total, share, routes, replicas, source, burned)
