"""What clients saw, per replica, from the load balancer's view (``get_client_view``): the evidence the
detectors add to a finding, and the client-side figures priority follows."""

from __future__ import annotations

from typing import Any

from oncall.diagnosis import Evidence
from oncall.investigate.engines.offline import units
from oncall.investigate.engines.offline.observations import (
    CLIENT_ERRORS_ELEVATED,
    CLIENT_TIMEOUT_P99_S,
    IN_FLIGHT_QUEUED,
    Observations,
    finite,
)

VIEW_QUERY = "get_client_view (load balancer: requests by backend and code, upstream errors, p99, in flight)"


def _number(value: Any) -> float | None:
    found = finite({"v": value})
    return found.get("v")


def figures(obs: Observations, key: str) -> dict[str, float]:
    """One figure (``error_ratio``, ``timeouts_rps``, ``p99_s``, ``in_flight``, ``rps``) per replica."""
    replicas = ((obs.clients or {}).get("replicas") or {}).items()
    found = {name: _number(entry.get(key)) for name, entry in replicas if name != "none"}
    return {name: value for name, value in found.items() if value is not None}


def describe(obs: Observations, replicas: list[str]) -> str:
    """``inventory-2: 10.1 req/s, 5xx 38.0% (504 1.2/s), p99 0.040 s, 3 in flight`` for each replica."""
    parts = []
    for name in replicas:
        entry = obs.client(name)
        if not entry:
            continue
        codes = ", ".join(f"{code} {rate:.2f}/s" for code, rate in sorted((entry.get("codes") or {}).items()))
        ratio = entry.get("error_ratio")
        p99 = _number(entry.get("p99_s"))
        parts.append(
            f"{name}: {entry.get('rps', 0):.1f} req/s, 5xx {units.ratio(ratio) if ratio is not None else 'n/a'}"
            + (f" ({codes})" if codes else "")
            + (f", p99 {units.seconds(p99)}" if p99 is not None else "")
            + f", {entry.get('in_flight') or 0:.0f} in flight"
        )
    return "; ".join(parts)


def evidence(obs: Observations, replicas: list[str]) -> Evidence | None:
    """The load balancer's view of ``replicas`` as one evidence item (None without a client view)."""
    text = describe(obs, replicas)
    if not text:
        return None
    total = (obs.clients or {}).get("overall") or {}
    ratio = total.get("error_ratio")
    overall = f"; all clients: 5xx {units.ratio(ratio)}" if isinstance(ratio, float) else ""
    return Evidence(tool="get_client_view", query=VIEW_QUERY, finding=text + overall)


def failing(obs: Observations) -> list[str]:
    """Replicas whose clients get 5xx answers above ``CLIENT_ERRORS_ELEVATED``."""
    return sorted(r for r, v in figures(obs, "error_ratio").items() if v >= CLIENT_ERRORS_ELEVATED)


def slow(obs: Observations, threshold_s: float) -> list[str]:
    """Replicas whose clients see a p99 at or above ``threshold_s`` seconds."""
    return sorted(r for r, v in figures(obs, "p99_s").items() if v >= threshold_s)


def queued(obs: Observations) -> list[str]:
    """Replicas with at least ``IN_FLIGHT_QUEUED`` requests in flight from the load balancer (requests queue)."""
    return sorted(r for r, v in figures(obs, "in_flight").items() if v >= IN_FLIGHT_QUEUED)


def timing_out(obs: Observations) -> list[str]:
    """Replicas the load balancer gives up on: upstream timeouts, or a client p99 near the clients' timeout."""
    timeouts = {r for r, v in figures(obs, "timeouts_rps").items() if v > 0}
    return sorted(timeouts | set(slow(obs, CLIENT_TIMEOUT_P99_S)))


def overall(obs: Observations) -> dict[str, float]:
    """Every client together: ``rps``, ``error_ratio``, ``timeout_ratio``, ``p99_s`` (numbers only)."""
    total = (obs.clients or {}).get("overall") or {}
    return finite({k: total.get(k) for k in ("rps", "error_ratio", "timeout_ratio", "p99_s", "in_flight")})
