"""Large alert groups summarised for prompts and pages: counts plus the most telling alerts.

A group of 10,000 alerts copied whole makes a prompt of a million characters and a page of
megabytes while saying little more than its counts. ``summarise_alerts`` keeps what an engineer (or
the model) reads: how many alerts by status and alert name, which labels vary and their most
frequent values, the labels all alerts share, and a few alerts chosen to cover every (status,
alert name) group, firing ones and the newest first.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from typing import Any

from oncall.store.rows import Row

TOP_LABEL_VALUES = 5
"""Most frequent values listed per varying label."""
MAX_VARYING_LABELS = 20
"""Varying labels listed (those with the fewest distinct values first: the most telling)."""


def telling_alerts(alerts: list[Row], keep: int) -> list[Row]:
    """At most ``keep`` alerts covering the (status, alert name) groups round-robin: firing groups and
    larger groups first, each group's newest ``starts_at`` first. Order is deterministic."""
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for alert in alerts:
        groups[(str(alert.get("status")), str(alert.get("alertname")))].append(alert)
    ordered = sorted(groups.items(), key=lambda item: (item[0][0] != "firing", -len(item[1]), item[0][1]))
    queues = [  # a group's newest first; no more than ``keep`` of one group can be chosen
        heapq.nlargest(keep, rows, key=lambda a: (str(a.get("starts_at") or ""), str(a.get("fingerprint"))))
        for _, rows in ordered
    ]
    chosen: list[Row] = []
    depth = 0
    while len(chosen) < keep and any(depth < len(queue) for queue in queues):
        chosen.extend(queue[depth] for queue in queues if depth < len(queue))
        depth += 1
    return chosen[:keep]


def label_statistics(alerts: list[Row]) -> tuple[dict[str, str], dict[str, Any]]:
    """``(common, varying)``: labels with one value across all alerts, and for the others the number
    of distinct values and the ``TOP_LABEL_VALUES`` most frequent ones with their counts."""
    values: dict[str, Counter[str]] = defaultdict(Counter)
    for alert in alerts:
        for name, value in (alert.get("labels") or {}).items():
            values[name][str(value)] += 1
    total = len(alerts)
    common = {
        name: next(iter(counts)) for name, counts in values.items() if len(counts) == 1 and counts.total() == total
    }
    varying_names = sorted((name for name in values if name not in common), key=lambda n: (len(values[n]), n))
    varying = {
        name: {"distinct": len(values[name]), "top": dict(values[name].most_common(TOP_LABEL_VALUES))}
        for name in varying_names[:MAX_VARYING_LABELS]
    }
    return common, varying


def summarise_alerts(alerts: list[Row], keep: int) -> dict[str, Any]:
    """The summary of an incident's alert rows (``incident_alerts`` rows with decoded labels).

    Returns ``{"total", "by_status", "by_alertname", "common_labels", "varying_labels", "shown",
    "omitted", "alerts"}`` where ``alerts`` are the ``telling_alerts`` (at most ``keep``).
    """
    common, varying = label_statistics(alerts)
    shown = telling_alerts(alerts, keep)
    return {
        "total": len(alerts),
        "by_status": dict(Counter(str(a.get("status")) for a in alerts).most_common()),
        "by_alertname": dict(Counter(str(a.get("alertname")) for a in alerts).most_common(TOP_LABEL_VALUES * 4)),
        "common_labels": common,
        "varying_labels": varying,
        "shown": len(shown),
        "omitted": len(alerts) - len(shown),
        "alerts": shown,
    }
