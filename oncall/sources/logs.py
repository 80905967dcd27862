"""ERROR logs of the demo service through the load balancer's ``GET /logs/tail``, and their summary.

Wire format (the stack contract): ``{"entries": [...]}`` newest first, each a JSON log record with
``ts`` (epoch s), ``timestamp``, ``level``, ``replica``, ``method``, ``route``, ``status``,
``exception_type``, ``message``, ``file``, ``line``, ``function`` and ``traceback``.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx

from oncall.sources.http import get_json

LOG_GROUPS_KEPT = 6
"""Distinct (exception type, file:line) groups listed in a summary."""
NEWEST_ENTRIES_KEPT = 3
"""Newest raw log entries listed in a summary."""
RECENT_LOG_S = 60
"""Seconds counted as "recent" in a log group's ``recent_count``."""
TRACEBACK_TAIL_LINES = 8
"""Last traceback lines kept for the dominant error group."""


class DemoLogTail:
    """The demo's shared ERROR log, read through the load balancer.

    Args:
        http: the shared client.
        base_url: the load balancer, e.g. ``http://127.0.0.1:9000``.
        timeout_s: timeout of one request, seconds.
    """

    name = "http_tail"

    def __init__(self, http: httpx.AsyncClient, base_url: str, timeout_s: float, path: str = "/logs/tail") -> None:
        self.http = http
        self.base_url = base_url
        self.path = path
        self.timeout_s = timeout_s

    @property
    def where(self) -> str:
        """The tail's URL, for tool descriptions and evidence."""
        return f"GET {self.base_url}{self.path}"

    async def errors(self, seconds: int, limit: int, replica: str | None = None) -> list[dict[str, Any]]:
        """ERROR entries of the last ``seconds``, at most ``limit``, newest first (one replica's when given).

        Raises:
            SourceError / httpx.HTTPError: the load balancer failed or could not be reached.
        """
        params: dict[str, Any] = {"seconds": seconds, "limit": limit}
        if replica:
            params["replica"] = replica
        body = await get_json(self.http, f"{self.base_url}{self.path}", self.timeout_s, params)
        return list(body.get("entries", []))


def log_line(entry: dict[str, Any]) -> str:
    """One-line rendering of an ERROR log entry."""
    where = f"{entry.get('file')}:{entry.get('line')}" if entry.get("file") else "?"
    return (
        f"{entry.get('timestamp', '')} {entry.get('level', 'ERROR')} {entry.get('replica')} "
        f"{entry.get('method', '')} {entry.get('route', '')} {entry.get('status', '')} "
        f"{entry.get('exception_type')}: {entry.get('message', '')} ({where} in {entry.get('function')})"
    )


def _new_group(key: tuple[Any, ...], entry: dict[str, Any], now: float, ts: float | None) -> dict[str, Any]:
    return {
        "exception_type": key[0],
        "file": key[1],
        "line": key[2],
        "function": entry.get("function"),
        "message": entry.get("message"),
        "count": 0,
        "recent_count": 0,
        "last_seen_s_ago": round(now - ts, 1) if ts is not None else None,
        "replicas": Counter(),
        "recent_replicas": Counter(),
        "routes": Counter(),
        "versions": Counter(),
        "statuses": Counter(),
        "example": log_line(entry),
        "traceback": entry.get("traceback") or "",
    }


def _group_entries(entries: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """Group entries by (exception type, file, line), largest group first."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for entry in entries:
        key = (entry.get("exception_type"), entry.get("file"), entry.get("line"))
        ts = entry.get("ts") if isinstance(entry.get("ts"), (int, float)) else None
        if key not in groups:  # entries are newest first: the first one of a group is its newest
            groups[key] = _new_group(key, entry, now, ts)
        group = groups[key]
        group["count"] += 1
        if ts is not None and now - ts <= RECENT_LOG_S:
            group["recent_count"] += 1
            group["recent_replicas"][entry.get("replica")] += 1
        group["replicas"][entry.get("replica")] += 1
        group["routes"][entry.get("route")] += 1
        if entry.get("version"):
            group["versions"][str(entry["version"])] += 1
        if isinstance(entry.get("status"), int):
            group["statuses"][str(entry["status"])] += 1
    ranked = sorted(groups.values(), key=lambda g: -g["count"])
    for group in ranked:
        group["replicas"] = dict(sorted(group["replicas"].items(), key=lambda kv: str(kv[0])))
        group["recent_replicas"] = dict(sorted(group["recent_replicas"].items(), key=lambda kv: str(kv[0])))
        group["routes"] = dict(group["routes"].most_common())
        group["versions"] = dict(group["versions"].most_common())
        group["statuses"] = dict(group["statuses"].most_common())
    return ranked


def summarise_logs(entries: list[dict[str, Any]], now: float | None = None) -> dict[str, Any]:
    """Summarise ERROR log entries (newest first): counts by exception type, replica, route and
    file:line, the largest (exception type, file:line) groups with how long ago each was last seen
    (seconds before ``now``, epoch s) and how many entries (by replica) fell in the last ``RECENT_LOG_S``
    seconds, the newest entries and the dominant group's traceback tail."""
    now = time.time() if now is None else now
    ranked = _group_entries(entries, now)
    summary: dict[str, Any] = {
        "count": len(entries),
        "by_exception_type": dict(Counter(e.get("exception_type") for e in entries).most_common()),
        "by_replica": dict(sorted(Counter(e.get("replica") for e in entries).items(), key=lambda kv: str(kv[0]))),
        "by_route": dict(Counter(e.get("route") for e in entries).most_common()),
        "by_location": dict(Counter(f"{e.get('file')}:{e.get('line')}" for e in entries).most_common(LOG_GROUPS_KEPT)),
        "groups": [{k: v for k, v in g.items() if k != "traceback"} for g in ranked[:LOG_GROUPS_KEPT]],
        "newest": [log_line(e) for e in entries[:NEWEST_ENTRIES_KEPT]],
    }
    if ranked and ranked[0]["traceback"]:
        summary["dominant_traceback_tail"] = "\n".join(
            ranked[0]["traceback"].rstrip().splitlines()[-TRACEBACK_TAIL_LINES:]
        )
    return summary
