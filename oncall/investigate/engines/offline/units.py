"""How the offline engine writes numbers in findings: seconds, MiB, ratios, milliseconds, cores."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oncall.investigate.engines.offline.observations import Observations

Unit = Callable[[float], str]
STALE = " (stale: last scraped before it stopped answering)"


def fmt(values: dict[str, float], unit: Unit, keys: list[str] | None = None) -> str:
    """``replica value`` pairs joined with commas (only ``keys`` when given, in that order)."""
    return ", ".join(f"{r} {unit(values[r])}" for r in (keys or sorted(values)) if r in values)


def shown(obs: Observations, key: str, unit: Unit, keys: list[str] | None = None) -> str:
    """Like ``fmt`` over the metric ``key`` of ``obs``, each value of a replica that stopped answering scrapes
    marked stale (its figure comes from samples taken before, never a current value)."""
    values = obs.metrics.get(key, {})
    stale = set(obs.stale)
    return ", ".join(
        f"{r} {unit(values[r])}{STALE if r in stale else ''}" for r in (keys or sorted(values)) if r in values
    )


def others(values: dict[str, float], chosen: list[str], unit: Unit) -> str:
    """`` (others: ...)`` listing the replicas not in ``chosen``, or an empty string."""
    rest = {r: v for r, v in values.items() if r not in chosen}
    return f" (others: {fmt(rest, unit)})" if rest else ""


def seconds(v: float) -> str:
    """Seconds with millisecond precision (``+Inf s`` for an infinite quantile)."""
    return "+Inf s" if math.isinf(v) else f"{v:.3f} s"


def mib(v: float) -> str:
    """Bytes as MiB (a sign for negative changes)."""
    return f"{v / 2**20:+.0f} MiB" if v < 0 else f"{v / 2**20:.0f} MiB"


def ratio(v: float) -> str:
    """A ratio 0-1 as a percentage."""
    return f"{v:.1%}"


def milliseconds(v: float) -> str:
    """Seconds as milliseconds."""
    return f"{v * 1000:.1f} ms"


def cores(v: float) -> str:
    """CPU seconds per second as cores."""
    return f"{v:.2f} cores"


def count(v: float) -> str:
    """A gauge value such as ``up`` as an integer."""
    return f"{v:.0f}"
