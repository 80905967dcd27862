"""The most similar earlier incidents, with how each was resolved, how long it took, the action taken
and its ticket.

Score (0-1): a weighted sum over six features, divided by the weights of the features the current
incident has (before its diagnosis, only the alert-side features count):

================  ======  ==============================================================
feature           weight  match
================  ======  ==============================================================
fault type        0.25    equal diagnosis ``fault_type`` (``none``/``unknown`` never match)
service           0.20    equal ``incidents.service`` (else the diagnosis' service)
file:line         0.20    same ``affected_file`` and ``affected_line``: 1; same file: 0.5
error signature   0.15    equal dominant log error (exception type + message, numbers masked)
alert name        0.10    Jaccard overlap of the alert names
replica           0.10    Jaccard overlap of the replicas (alert ``replica`` labels + diagnosis)
================  ======  ==============================================================

Only resolved incidents are candidates (the newest ``CANDIDATES``); a candidate needs ``MIN_SCORE``;
ties go to the most recently resolved.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from oncall.diagnosis import Evidence, FaultType, SimilarIncident
from oncall.store import history
from oncall.store.database import Connection
from oncall.store.rows import Row

WEIGHTS = {
    "fault type": 0.25,
    "service": 0.20,
    "file:line": 0.20,
    "error signature": 0.15,
    "alert name": 0.10,
    "replica": 0.10,
}
MIN_SCORE = 0.3
TOP = 3
CANDIDATES = 200
"""Newest resolved incidents compared (bounds the work per diagnosis)."""
UNINFORMATIVE_FAULTS = {"none", "unknown"}
MASK = re.compile(r"0x[0-9a-fA-F]+|\b[0-9a-fA-F]{8,}\b|\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Features:
    """What is compared (None / empty = unknown for this incident)."""

    service: str | None
    fault_type: str | None
    file: str | None
    line: int | None
    error_signature: str | None
    alertnames: frozenset[str]
    replicas: frozenset[str]


@dataclass(frozen=True)
class SimilarMatch:
    """An earlier incident like the current one (``to_contract`` gives the diagnosis' ``SimilarIncident``).

    ``score`` 0-1 and ``matched`` (the features that matched); ``duration_s`` from its last episode's
    start to its resolution; ``resolution`` how it ended (``alerts cleared`` or ``resolved by NAME: note``);
    ``action`` the last action taken (``Jira OPS-41 created``), ``ticket_key``/``ticket_url`` its ticket.
    """

    incident_id: int
    title: str
    score: float
    matched: tuple[str, ...]
    fault_type: str | None
    location: str | None
    resolved_at: float | None
    duration_s: float | None
    resolution: str
    action: str | None
    ticket_key: str | None
    ticket_url: str | None

    def summary(self) -> str:
        """One line: ``#7 InventoryHighErrorRate (score 0.85: fault type, service, file:line): code_bug at
        inventory_service.py:212; resolved by Ravi: rolled back after 14m; Jira OPS-41``."""
        cause = " ".join(part for part in (self.fault_type, f"at {self.location}" if self.location else "") if part)
        took = f" after {_duration(self.duration_s)}" if self.duration_s is not None else ""
        ticket = f"; Jira {self.ticket_key}" if self.ticket_key else ""
        action = f"; {self.action}" if self.action and not self.ticket_key else ""
        return (
            f"#{self.incident_id} {self.title} (score {self.score:.2f}: {', '.join(self.matched)}): "
            f"{cause or 'no diagnosis'}; {self.resolution}{took}{action}{ticket}"
        )

    def evidence(self) -> Evidence:
        """The incident as diagnosis evidence (tool ``similar_incidents``)."""
        return Evidence(tool="similar_incidents", query=f"incident #{self.incident_id}", finding=self.summary())

    def to_contract(self) -> SimilarIncident:
        """The entry of ``Diagnosis.similar_incidents`` (``oncall.diagnosis.SimilarIncident``)."""
        fault = self.fault_type if self.fault_type in FaultType.__members__ else None
        return SimilarIncident(
            incident_id=self.incident_id,
            title=self.title,
            score=min(1.0, self.score),
            fault_type=FaultType(fault) if fault else None,
            resolution=self.resolution,
            duration_s=max(0.0, self.duration_s) if self.duration_s is not None else None,
            action=self.action,
            ticket=self.ticket_key,
        )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def error_signature(log_summary: Any) -> str | None:
    """``ExceptionType: message`` of the dominant error group of a ``fetch_logs`` result (dict or its
    JSON text, possibly cut by the audit-trail cap), numbers and hex ids masked as ``#``."""
    if isinstance(log_summary, str):
        try:
            log_summary = json.loads(log_summary)
        except ValueError:
            found = re.search(r'"exception_type":\s*"([^"]+)".*?"message":\s*"((?:[^"\\]|\\.)*)"', log_summary, re.S)
            log_summary = {"groups": [{"exception_type": found[1], "message": found[2]}]} if found else None
    if not isinstance(log_summary, dict) or not log_summary.get("groups"):
        return None
    group = log_summary["groups"][0]
    if not isinstance(group, dict) or not group.get("exception_type"):
        return None
    message = MASK.sub("#", " ".join(str(group.get("message") or "").split()))[:200]
    return f"{group['exception_type']}: {message}".strip()


def features(row: Row, diagnosis: dict[str, Any] | None = None) -> Features:
    """The features of a history row (``oncall.store.history``); ``diagnosis`` replaces the stored one."""
    found = diagnosis if diagnosis is not None else (row.get("diagnosis") or {})
    fault = found.get("fault_type")
    replicas = set(row.get("replicas", [])) | set(found.get("affected_replicas") or [])
    return Features(
        service=row.get("service") or found.get("affected_service"),
        fault_type=None if fault in UNINFORMATIVE_FAULTS else fault,
        file=found.get("affected_file"),
        line=found.get("affected_line"),
        error_signature=error_signature(row.get("log_summary")),
        alertnames=frozenset(row.get("alertnames", [])),
        replicas=frozenset(replicas),
    )


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def _location_match(current: Features, past: Features) -> float:
    if current.file is None or current.file != past.file:
        return 0.0
    return 1.0 if current.line is not None and current.line == past.line else 0.5


def feature_matches(current: Features, past: Features) -> dict[str, float]:
    """Each feature the current incident has, with its match 0-1 against ``past``."""
    matches: dict[str, float] = {}
    if current.fault_type:
        matches["fault type"] = float(current.fault_type == past.fault_type)
    if current.service:
        matches["service"] = float(current.service == past.service)
    if current.file:
        matches["file:line"] = _location_match(current, past)
    if current.error_signature:
        matches["error signature"] = float(current.error_signature == past.error_signature)
    if current.alertnames:
        matches["alert name"] = _jaccard(current.alertnames, past.alertnames)
    if current.replicas:
        matches["replica"] = _jaccard(current.replicas, past.replicas)
    return matches


def score(current: Features, past: Features) -> tuple[float, tuple[str, ...]]:
    """(score 0-1, matched feature names) of ``past`` against ``current`` (see the module table)."""
    matches = feature_matches(current, past)
    known = sum(WEIGHTS[name] for name in matches)
    if not known:
        return 0.0, ()
    total = sum(WEIGHTS[name] * match for name, match in matches.items())
    return round(total / known, 4), tuple(name for name, match in matches.items() if match > 0)


def resolution_text(row: Row) -> str:
    """How a resolved incident ended: ``resolved by NAME (note)`` or ``alerts cleared``."""
    detail = (row.get("resolution") or {}).get("detail") or {}
    if detail.get("manual"):
        note = f": {detail['note']}" if detail.get("note") else ""
        return f"resolved by {detail.get('by') or 'hand'}{note}"
    return "alerts cleared"


def action_text(row: Row) -> str | None:
    """The last action taken (``Jira OPS-41 created``, a remediation's kind and summary), or None."""
    ticket = row.get("ticket")
    if ticket and ticket.get("status") == "created" and ticket.get("jira_key"):
        return f"Jira {ticket['jira_key']} created"
    others = [a for a in row.get("actions", []) if a["kind"] != "ticket"]
    if others:
        detail = others[-1].get("detail") or {}
        return " ".join(
            str(part) for part in (others[-1]["kind"], detail.get("summary") or detail.get("action") or "") if part
        )
    if ticket and ticket.get("status") == "draft":
        return "ticket draft kept (Jira not configured)"
    return None


def similar_incident(row: Row, value: float, matched: tuple[str, ...]) -> SimilarMatch:
    """A candidate row as a ``SimilarMatch``."""
    diagnosis = row.get("diagnosis") or {}
    location = diagnosis.get("affected_file")
    if location and diagnosis.get("affected_line"):
        location = f"{location}:{diagnosis['affected_line']}"
    resolved_at = (row.get("resolution") or {}).get("at") or row.get("resolved_at")
    started = row.get("episode_started_at") or row.get("created_at")
    ticket = row.get("ticket") or {}
    created = ticket.get("status") == "created"
    return SimilarMatch(
        incident_id=int(row["id"]),
        title=str(row.get("title") or "incident"),
        score=value,
        matched=matched,
        fault_type=diagnosis.get("fault_type"),
        location=location,
        resolved_at=resolved_at,
        duration_s=float(resolved_at) - float(started) if resolved_at and started else None,
        resolution=resolution_text(row),
        action=action_text(row),
        ticket_key=ticket.get("jira_key") if created else None,
        ticket_url=ticket.get("url") if created else None,
    )


def rank(
    current: Features, candidates: Iterable[Row], top: int = TOP, min_score: float = MIN_SCORE
) -> list[SimilarMatch]:
    """The ``top`` candidates scoring at least ``min_score``, best first (ties: most recently resolved)."""
    scored = []
    for row in candidates:
        value, matched = score(current, features(row))
        if value >= min_score:
            scored.append(similar_incident(row, value, matched))
    scored.sort(key=lambda s: (-s.score, -(s.resolved_at or 0.0), -s.incident_id))
    return scored[:top]


async def find_similar(
    conn: Connection, incident_id: int, *, diagnosis: dict[str, Any] | None = None, top: int = TOP
) -> list[SimilarMatch]:
    """The ``top`` resolved incidents most similar to ``incident_id``.

    Args:
        diagnosis: the diagnosis to compare with (JSON dict) when it is not stored yet (an engine
            deciding); default the stored one, or none (alert-side features only).
    Raises:
        LookupError: no such incident.
    """
    current = await history.one(conn, incident_id)
    if current is None:
        raise LookupError(f"incident {incident_id} not found")
    candidates = await history.resolved_candidates(conn, exclude_id=incident_id, limit=CANDIDATES)
    return rank(features(current, diagnosis), candidates, top)
