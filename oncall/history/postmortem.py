"""The post-mortem draft of an incident episode, built from what the agent recorded (the incident
detail read model, the escalation pages, similar past incidents) and rendered as Markdown.

Sections: Summary, Impact, Timeline (detection to resolution, with time to acknowledge and time to
resolve), Phase timings, Root cause, Contributing factors, What went well, What went badly, Action
items. It is a draft for a human to finish: every sentence comes from a recorded fact.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from oncall.history.document import Document, Runs, Section, code, link, text, to_markdown
from oncall.history.impact import EpisodeImpact, Slo, episode_impact
from oncall.history.narrative import Facts, action_items, clock, duration, event_line, went_badly, went_well
from oncall.history.phases import PhaseTimings, episode_events, phase_timings
from oncall.history.similar import SimilarMatch, find_similar
from oncall.store import pages, postmortems, views
from oncall.store.database import Connection
from oncall.store.rows import Row

CHANGE_KINDS = ("deploy", "fault", "scale", "crash", "restart", "start", "stop")
"""Process-manager change kinds that can contribute to an incident."""
MAX_EVIDENCE = 6
MAX_CHANGES = 5


def alert_label(detail: Row) -> str:
    """The incident's alert name (common label ``alertname``, else its title)."""
    return str((detail.get("common_labels") or {}).get("alertname") or detail.get("title") or "incident")


def summary_section(detail: Row, phases: PhaseTimings, incident_url: str | None, names: Mapping[str, str]) -> Section:
    """What happened in three sentences, with the headline times."""
    d = detail.get("diagnosis") or {}
    head = f"#{detail['id']} {alert_label(detail)} (service {detail.get('service') or 'unknown'}"
    head += f", severity {detail['severity']})" if detail.get("severity") else ")"
    section = Section("Summary", [[text(f"{head} is {detail['status']}.")]])
    if d.get("summary"):
        section.paragraphs.append([text(str(d["summary"]))])
    times = f"Detected {clock(phases.detected_at)}"
    ack = phases.phase("acknowledgement").ended_at
    if ack is not None:
        by = names.get(detail.get("acknowledged_by") or "", detail.get("acknowledged_by") or "someone")
        times += f"; acknowledged by {by} after {duration(phases.time_to_acknowledge_s)} (time to acknowledge)"
    resolved = phases.phase("resolution").ended_at
    if resolved is not None:
        times += f"; resolved {clock(resolved)}, {duration(phases.time_to_resolve_s)} after detection (time to resolve)"
    section.paragraphs.append([text(times + ".")])
    note: Runs = [text("Draft written by the on-call agent from the incident's timeline, tool calls and diagnosis.")]
    if incident_url:
        note += [text(" Incident: "), link(incident_url)]
    section.paragraphs.append(note)
    return section


def impact_section(impact: EpisodeImpact, service: str | None, slo: Slo | None) -> Section:
    """Duration, failed requests and share, routes, replicas and error budget."""
    ongoing = "" if impact.ended_at else " so far"
    bullets: list[Runs] = [[text(f"Duration{ongoing}: {duration(impact.duration_s)} (from the alert firing)")]]
    if impact.failed_share is not None:
        how = (
            "counted by the investigation"
            if impact.source == "diagnosis"
            else "estimate: peak error ratio × request rate × duration"
        )
        counts = (
            f"≈ {impact.failed_requests:,.0f} of ≈ {impact.total_requests:,.0f} requests failed, "
            if impact.failed_requests is not None and impact.total_requests
            else ""
        )
        bullets.append([text(f"{counts}{impact.failed_share:.1%} of requests ({how})")])
    else:
        bullets.append([text("Failed requests: not measured by the investigation")])
    if impact.routes:
        bullets.append([text("Affected routes: "), code(", ".join(impact.routes))])
    bullets.append(
        [text("Affected replicas: "), code(", ".join(impact.replicas))]
        if impact.replicas
        else [text("Affected replicas: none identified")]
    )
    if slo is None:
        bullets.append([text(f"Error budget: no SLO defined for service {service or 'unknown'}")])
    elif impact.budget_burned is not None:
        period = f"{slo.period_s / 86400:g}-day"
        bullets.append(
            [
                text(
                    f"Error budget: {impact.budget_burned:.1%} of the {period} budget "
                    f"of the {slo.target:.3%} SLO burned"
                )
            ]
        )
    return Section("Impact", bullets=bullets)


def timeline_section(detail: Row, phases: PhaseTimings, names: Mapping[str, str]) -> Section:
    """Every event of the episode, from detection (the alert firing) to resolution."""
    _, events = episode_events(detail.get("timeline", []))
    bullets: list[Runs] = [
        event_line({"at": phases.detected_at, "kind": "detected", "detail": {}}, phases.detected_at, names)
    ]
    bullets += [event_line(event, phases.detected_at, names) for event in events]
    summary = [
        text(
            f"Time to acknowledge: {duration(phases.time_to_acknowledge_s)}. "
            f"Time to resolve: {duration(phases.time_to_resolve_s)}."
        )
    ]
    return Section("Timeline", [summary], bullets)


def phases_section(phases: PhaseTimings) -> Section:
    """Each phase's duration, and the investigation's time per tool."""
    bullets: list[Runs] = []
    for phase in phases.phases:
        value = duration(phase.duration_s) if phase.duration_s is not None else "not reached"
        bullets.append([text(f"{phase.name}: {value}")])
    for tool in phases.tools:
        failed = f", {tool.failed} failed" if tool.failed else ""
        bullets.append(
            [
                text("tool "),
                code(tool.tool),
                text(f": {tool.calls} call(s){failed}, {tool.total_s:.2f} s in all, longest {tool.max_s:.2f} s"),
            ]
        )
    return Section("Phase timings", bullets=bullets)


def root_cause_section(detail: Row) -> Section:
    """The diagnosis' root cause, fault type, location and confidence."""
    d = detail.get("diagnosis") or {}
    if not d:
        return Section("Root cause", [[text("No diagnosis was recorded for this incident.")]])
    facts: Runs = [
        text("Fault type "),
        code(str(d.get("fault_type"))),
        text(f", confidence {round(float(d.get('confidence', 0)) * 100)}%, {d.get('engine')} engine"),
    ]
    if d.get("affected_file"):
        where = f"{d['affected_file']}:{d['affected_line']}" if d.get("affected_line") else str(d["affected_file"])
        facts += [text(", at "), code(where)]
    return Section("Root cause", [[text(str(d.get("root_cause") or ""))], [*facts, text(".")]])


def _changes(detail: Row, phases: PhaseTimings) -> list[Runs]:
    """Process-manager changes the investigation saw shortly before detection."""
    seen: dict[tuple[object, ...], Runs] = {}
    for call in detail.get("tool_calls", []):
        result = call.get("result")
        if call["tool"] != "get_recent_changes" or not call["ok"] or not isinstance(result, dict):
            continue
        for change in result.get("changes") or []:
            ts = change.get("ts")
            if change.get("kind") not in CHANGE_KINDS or not isinstance(ts, int | float) or ts > phases.detected_at:
                continue
            key = (change.get("kind"), change.get("replica"), round(ts))
            before = duration(phases.detected_at - ts)
            seen[key] = [
                text(
                    f"Change before detection ({before} earlier): "
                    f"{change.get('kind')} of {change.get('replica') or 'the service'} "
                )
            ]
            seen[key].append(code(str(change.get("detail") or {})))
    return list(seen.values())[:MAX_CHANGES]


def _alternatives(d: dict[str, Any]) -> list[Runs]:
    """The diagnosis' other ranked hypotheses (``Diagnosis.hypotheses`` after the first)."""
    lines: list[Runs] = []
    for hypothesis in (d.get("hypotheses") or [])[1:]:
        explains = "explains the alert" if hypothesis.get("explains_alert", True) else "does not explain the alert"
        confidence = round(float(hypothesis.get("confidence") or 0) * 100)
        lines.append(
            [
                text("Alternative considered: "),
                code(str(hypothesis.get("fault_type"))),
                text(f" {hypothesis.get('summary') or ''} (confidence {confidence}%, {explains})"),
            ]
        )
    return lines


def contributing_section(detail: Row, phases: PhaseTimings, similar: Sequence[SimilarMatch]) -> Section:
    """The evidence the diagnosis rests on, recent changes, the group's other alerts and past incidents."""
    d = detail.get("diagnosis") or {}
    bullets: list[Runs] = [
        [code(str(e.get("tool"))), text(f": {e.get('finding')}")] for e in (d.get("evidence") or [])[:MAX_EVIDENCE]
    ]
    bullets += _alternatives(d)
    bullets += _changes(detail, phases)
    names = sorted({str(a.get("alertname")) for a in detail.get("alerts", [])})
    if len(detail.get("alerts", [])) > 1:
        bullets.append([text(f"{len(detail['alerts'])} alerts fired in this group: "), code(", ".join(names))])
    bullets += [[text("Similar earlier incident: " + s.summary())] for s in similar]
    if not bullets:
        bullets.append([text("None recorded.")])
    return Section("Contributing factors", bullets=bullets)


def build_postmortem(
    detail: Row,
    *,
    pages: Sequence[Row] = (),
    similar: Sequence[SimilarMatch] = (),
    slo: Slo | None = None,
    incident_url: str | None = None,
    names: Mapping[str, str] | None = None,
    now: float | None = None,
) -> Document:
    """The post-mortem of the latest episode of ``detail`` (``oncall.store.views.incident_detail``).

    Args:
        pages: the incident's ``pages`` rows (``oncall.store.pages.for_incident``).
        similar: earlier similar incidents (``oncall.history.similar.find_similar``).
        slo: the service's SLO (from the service catalog), for the error budget.
        incident_url: the agent's page of the incident, linked from the summary.
        names: WhatsApp number -> person name (from the roster), to name who acknowledged or replied.
        now: epoch s for the impact of an incident still firing (default: the current time).
    """
    names = names or {}
    phases = phase_timings(detail)
    impact = episode_impact(detail, phases.episode_started_at, now or time.time(), slo)
    facts = Facts(detail, phases, list(pages), list(similar), names)
    status = "" if detail["status"] == "resolved" else " (draft: the incident is still firing)"
    return Document(
        f"Post-mortem: #{detail['id']} {alert_label(detail)}{status}",
        [
            summary_section(detail, phases, incident_url, names),
            impact_section(impact, detail.get("service"), slo),
            timeline_section(detail, phases, names),
            phases_section(phases),
            root_cause_section(detail),
            contributing_section(detail, phases, similar),
            Section("What went well", bullets=went_well(facts) or [[text("Nothing recorded.")]]),
            Section("What went badly", bullets=went_badly(facts) or [[text("Nothing recorded.")]]),
            Section("Action items", bullets=action_items(facts)),
        ],
    )


async def draft_postmortem(
    conn: Connection,
    incident_id: int,
    *,
    slo: Slo | None = None,
    incident_url: str | None = None,
    names: Mapping[str, str] | None = None,
    now: float | None = None,
) -> Document | None:
    """Read the incident, its pages and its similar past incidents and build the post-mortem; None
    when the incident does not exist."""
    detail = await views.incident_detail(conn, incident_id)
    if detail is None:
        return None
    rows = await pages.for_incident(conn, incident_id)
    similar = await find_similar(conn, incident_id)
    return build_postmortem(
        detail, pages=rows, similar=similar, slo=slo, incident_url=incident_url, names=names, now=now
    )


async def write_postmortem(
    conn: Connection,
    incident_id: int,
    episode: int,
    *,
    slo: Slo | None = None,
    incident_url: str | None = None,
    names: Mapping[str, str] | None = None,
    now: float | None = None,
) -> str | None:
    """Draft the post-mortem and store its Markdown for ``(incident_id, episode)`` (replacing an earlier
    draft); returns the Markdown, or None when the incident does not exist. Call it in the resolving
    transaction (or right after it)."""
    document = await draft_postmortem(conn, incident_id, slo=slo, incident_url=incident_url, names=names, now=now)
    if document is None:
        return None
    markdown = to_markdown(document)
    await postmortems.save(conn, incident_id, episode, markdown, now or time.time())
    return markdown


async def postmortem_markdown(conn: Connection, incident_id: int, *, incident_url: str | None = None) -> str | None:
    """The stored draft of the incident's latest episode, else one drafted now (not stored); None when
    the incident does not exist (``GET /incidents/{id}/postmortem``)."""
    stored = await postmortems.latest(conn, incident_id)
    if stored is not None:
        return str(stored["markdown"])
    document = await draft_postmortem(conn, incident_id, incident_url=incident_url)
    return to_markdown(document) if document is not None else None
