"""Phase timings of an incident episode, from its timeline, tool calls and alerts (epoch s, durations s).

Phases, in order, each from the end of the one before:

- ``ingest``: the alert fired (earliest ``startsAt``) -> the incident was stored (Alertmanager's
  group wait and the webhook).
- ``investigation``: ``investigation_started`` -> ``diagnosis`` (or ``investigation_failed``), with
  the time spent in each tool (calls, total and longest seconds).
- ``notification``: the diagnosis -> the first ``notified`` or ``paged`` event.
- ``acknowledgement``: notified -> ``acknowledged``.
- ``action``: acknowledged (or notified, when the action came first) -> the first action (``ticket``,
  remediation, ...).
- ``resolution``: the last of those -> ``resolved``.

Acknowledgement and resolution times are the incident's own columns (``acknowledged_at``,
``resolved_at``) when they fall in the episode. A phase whose end has not happened has ``ended_at``
None (and no duration). ``time_to_acknowledge_s``
and ``time_to_resolve_s`` count from detection (the alert firing), as incident metrics usually do.
The episode is the part of the timeline after the last ``reopened`` event (all of it otherwise).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from oncall.history.impact import onset
from oncall.metrics import INCIDENT_PHASE_SECONDS
from oncall.store.history import ACTION_KINDS
from oncall.store.rows import Row

PHASES = ("ingest", "investigation", "notification", "acknowledgement", "action", "resolution")


@dataclass(frozen=True)
class Phase:
    """One phase: ``name`` (see ``PHASES``), ``started_at``/``ended_at`` (epoch s, None when not reached)."""

    name: str
    started_at: float | None
    ended_at: float | None

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end, None while either is unknown."""
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0.0, self.ended_at - self.started_at)


@dataclass(frozen=True)
class ToolTiming:
    """Time the episode's investigation spent in ``tool``: ``calls``, ``failed`` calls, ``total_s``, ``max_s``."""

    tool: str
    calls: int
    failed: int
    total_s: float
    max_s: float


@dataclass(frozen=True)
class PhaseTimings:
    """Phases of one episode (``episode_started_at`` epoch s), its tools, and the two headline numbers."""

    episode_started_at: float
    detected_at: float
    phases: tuple[Phase, ...]
    tools: tuple[ToolTiming, ...]
    time_to_acknowledge_s: float | None
    time_to_resolve_s: float | None

    def phase(self, name: str) -> Phase:
        """The phase called ``name``. Raises StopIteration for an unknown name."""
        return next(phase for phase in self.phases if phase.name == name)


def episode_events(timeline: list[Row]) -> tuple[float | None, list[Row]]:
    """(start of the latest episode or None when it is the first, its events oldest first)."""
    starts = [index for index, event in enumerate(timeline) if event["kind"] == "reopened"]
    if not starts:
        return None, list(timeline)
    return float(timeline[starts[-1]]["at"]), list(timeline[starts[-1] :])


def _first(events: list[Row], kinds: tuple[str, ...], after: float | None = None) -> float | None:
    """``at`` of the first event of one of ``kinds`` (at or after ``after`` when given)."""
    return next(
        (float(e["at"]) for e in events if e["kind"] in kinds and (after is None or float(e["at"]) >= after)), None
    )


def _column(detail: Row, name: str, since: float) -> float | None:
    """The incident's ``name`` time (the authoritative one) when it belongs to the episode begun at ``since``."""
    value = detail.get(name)
    return float(value) if value is not None and float(value) >= since else None


def _is_action(event: Row) -> bool:
    if event["kind"] not in ACTION_KINDS:
        return False
    return event["kind"] != "ticket" or (event.get("detail") or {}).get("status") in ("created", "draft")


def tool_timings(tool_calls: list[Row], since: float) -> tuple[ToolTiming, ...]:
    """Per-tool totals of the calls started at or after ``since``, the slowest tool in total first."""
    totals: dict[str, list[float]] = {}
    failures: dict[str, int] = {}
    for call in tool_calls:
        if float(call["started_at"]) < since:
            continue
        totals.setdefault(call["tool"], []).append(float(call["duration_s"]))
        failures[call["tool"]] = failures.get(call["tool"], 0) + (0 if call["ok"] else 1)
    timings = [
        ToolTiming(tool, len(d), failures[tool], round(sum(d), 3), round(max(d), 3)) for tool, d in totals.items()
    ]
    return tuple(sorted(timings, key=lambda t: -t.total_s))


def phase_timings(detail: Row) -> PhaseTimings:
    """The phase timings of the latest episode of an incident detail (``oncall.store.views.incident_detail``)."""
    reopened_at, events = episode_events(detail.get("timeline", []))
    started = reopened_at if reopened_at is not None else float(detail["created_at"])
    detected = onset(detail, started)
    investigating = _first(events, ("investigation_started",))
    diagnosed = _first(events, ("diagnosis", "investigation_failed"), investigating)
    notified = _first(events, ("notified", "paged"), diagnosed)
    acknowledged = _column(detail, "acknowledged_at", started) or _first(events, ("acknowledged",))
    actions = [float(e["at"]) for e in events if _is_action(e)]
    acted = min(actions) if actions else None
    resolved = _column(detail, "resolved_at", started) if detail.get("status") == "resolved" else None
    # an action taken before the acknowledgement (a ticket first, "ack" later) counts from the notification
    before_action = max(
        (t for t in (notified, acknowledged) if t is not None and (acted is None or t <= acted)), default=None
    )
    before_resolution = max((t for t in (acted, acknowledged, notified) if t is not None), default=diagnosed)
    phases = (
        Phase("ingest", detected, started),
        Phase("investigation", investigating, diagnosed),
        Phase("notification", diagnosed, notified),
        Phase("acknowledgement", notified, acknowledged),
        Phase("action", before_action, acted),
        Phase("resolution", before_resolution, resolved),
    )
    return PhaseTimings(
        episode_started_at=started,
        detected_at=detected,
        phases=phases,
        tools=tool_timings(detail.get("tool_calls", []), started),
        time_to_acknowledge_s=acknowledged - detected if acknowledged is not None else None,
        time_to_resolve_s=resolved - detected if resolved is not None else None,
    )


def timings_json(timings: PhaseTimings) -> dict[str, Any]:
    """The timings as JSON types (``GET /incidents/{id}`` ``phase_timings``): ``episode_started_at``,
    ``detected_at``, ``time_to_acknowledge_s``, ``time_to_resolve_s``, ``phases`` (``name``, ``started_at``,
    ``ended_at``, ``duration_s``; epoch s and seconds, None while not reached) and ``tools`` (``tool``,
    ``calls``, ``failed``, ``total_s``, ``max_s``)."""
    return {
        "episode_started_at": timings.episode_started_at,
        "detected_at": timings.detected_at,
        "time_to_acknowledge_s": timings.time_to_acknowledge_s,
        "time_to_resolve_s": timings.time_to_resolve_s,
        "phases": [{**asdict(phase), "duration_s": phase.duration_s} for phase in timings.phases],
        "tools": [asdict(tool) for tool in timings.tools],
    }


def observe_phases(timings: PhaseTimings) -> None:
    """Observe every finished phase in ``oncall_incident_phase_seconds{phase}`` (call once per episode, when
    it resolves)."""
    for phase in timings.phases:
        if phase.duration_s is not None:
            INCIDENT_PHASE_SECONDS.labels(phase=phase.name).observe(phase.duration_s)
