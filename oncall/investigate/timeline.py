"""Recent changes in time order relative to the onset: the change timeline of a diagnosis.

A change (process manager, git or GitHub) is ``{"ts", "kind", "replica", "detail"}``; kinds include
``deploy`` (``from_version``, ``to_version``), ``config``, ``scale``, ``fault``, ``restart``, ``crash``,
``start``, ``stop`` and ``commit``. Offsets are seconds relative to the onset (negative: before it).
"""

from __future__ import annotations

import json
from typing import Any

DETAIL_KEYS = {
    "deploy": ("from_version", "to_version", "ok"),
    "scale": ("from", "to"),
    "fault": ("mode", "p_error", "latency_ms", "cpu_ms", "stall_ms", "step_mb"),
    "restart": ("reason", "attempt", "version", "ok"),
    "crash": ("exit_code",),
    "start": ("version", "ok", "replicas"),
    "stop": ("reason", "exit_code"),
    "commit": ("sha", "author", "subject"),
}


def describe(change: dict[str, Any]) -> str:
    """One line naming what changed: ``deploy inventory-1 1.4.0 -> 1.4.1``, ``fault inventory-2 errors`` ..."""
    kind = str(change.get("kind") or "change")
    detail = change.get("detail") or {}
    where = f" {change['replica']}" if change.get("replica") else ""
    if kind == "deploy":
        text = f"deploy{where} {detail.get('from_version') or '?'} -> {detail.get('to_version') or '?'}"
        return text + (" (failed)" if detail.get("ok") is False else "")
    if kind == "commit":
        return f"commit {str(detail.get('sha') or '')[:10]} by {detail.get('author')}: {detail.get('subject')}"
    keys = DETAIL_KEYS.get(kind)
    shown = {k: detail[k] for k in keys if k in detail} if keys else detail
    return f"{kind}{where} {json.dumps(shown, sort_keys=True)}" if shown else f"{kind}{where}"


def offset(ts: float | None, onset: float | None) -> float | None:
    """Seconds from ``onset`` to ``ts`` (negative before it), or None when either is unknown."""
    return round(ts - onset, 1) if ts is not None and onset is not None else None


def change_timeline(changes: list[dict[str, Any]], onset: float | None) -> list[dict[str, Any]]:
    """The changes oldest first, each ``{"ts", "offset_s", "kind", "replica", "summary", "detail"}``."""
    ordered = sorted((c for c in changes if isinstance(c.get("ts"), (int, float))), key=lambda c: c["ts"])
    return [
        {
            "ts": round(float(c["ts"]), 3),
            "offset_s": offset(float(c["ts"]), onset),
            "kind": c.get("kind"),
            "replica": c.get("replica"),
            "summary": describe(c),
            "detail": c.get("detail"),
        }
        for c in ordered
    ]
