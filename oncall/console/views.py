"""What the console's pages show, built from the store's read models (``oncall.store.views``).

Pure functions over the incident rows and details: filtering, per-service overview, who is paged,
the investigation queue, and the incident page's sections. The slots for features still to come
(ranked hypotheses, impact, proposed remediation actions, post-mortem, pending approvals) are filled
only from data present in the incident detail; nothing is made up.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from oncall.console.evidence import EvidenceLink, link_evidence
from oncall.diagnosis import Hypothesis, Impact, SimilarIncident
from oncall.history.phases import phase_timings, timings_json
from oncall.roster.rotation import on_call
from oncall.settings import Settings
from oncall.tasks import BackgroundTasks

PENDING_ACTION_STATES = frozenset({"proposed", "pending", "awaiting_approval"})
"""States of a proposed remediation action that wait for a responder's approve or reject."""


def mask_number(number: str | None) -> str:
    """A phone number with all but its country code and last 4 digits hidden: ``whatsapp:+1•••••0001``.

    ``console`` and other non-numbers are returned as they are; None becomes ``""``.
    """
    if not number:
        return ""
    found = re.fullmatch(r"(whatsapp:)?\+?(\d+)", number)
    if not found:
        return number
    digits = found.group(2)
    if len(digits) <= 6:
        return f"{found.group(1) or ''}+{'•' * len(digits)}"
    return f"{found.group(1) or ''}+{digits[:1]}{'•' * (len(digits) - 5)}{digits[-4:]}"


def filter_by_service(rows: list[dict[str, Any]], service: str, limit: int) -> list[dict[str, Any]]:
    """Incident summaries of ``service`` (all when ``""``), at most ``limit`` of them, order kept."""
    return [row for row in rows if not service or row.get("service") == service][:limit]


def service_names(rows: list[dict[str, Any]]) -> list[str]:
    """The distinct services of the incident summaries, sorted."""
    return sorted({str(row["service"]) for row in rows if row.get("service")})


def services_overview(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per service: ``name``, ``open`` (firing incidents), ``total``, ``last`` (the newest incident summary)."""
    overview: dict[str, dict[str, Any]] = {}
    for row in rows:  # newest first
        name = str(row.get("service") or "(no service label)")
        entry = overview.setdefault(name, {"name": name, "open": 0, "total": 0, "last": row})
        entry["total"] += 1
        entry["open"] += row.get("status") == "firing"
    return sorted(overview.values(), key=lambda entry: (-entry["open"], entry["name"]))


def oncall_now(settings: Settings, at: datetime | None = None) -> list[dict[str, Any]]:
    """Who is paged now: per team of the roster (``ONCALL_FILE``) the person on call at ``at`` (default
    now) with ``name``, ``number`` (masked), ``role`` (the team), ``until`` (epoch s, None when unbounded),
    ``channel`` and ``source`` (the rotation or override); a team with nobody on call, or no roster at all,
    lists the ``ONCALL_WHATSAPP_NUMBERS`` fallback numbers."""
    channel = "WhatsApp (Twilio)" if settings.twilio_enabled else "console WhatsApp channel"
    fallback = [
        {"number": mask_number(number), "channel": channel, "source": "ONCALL_WHATSAPP_NUMBERS"}
        for number in settings.oncall_whatsapp_numbers
    ]
    roster = settings.roster
    if roster is None:
        return fallback
    moment = at or datetime.now(UTC)
    shown: list[dict[str, Any]] = []
    for team_id in roster.teams:
        current = on_call(roster, team_id, moment)
        if current is None:
            shown += [{**entry, "role": f"team {team_id}, nobody on call"} for entry in fallback]
            continue
        until = current.until.timestamp() if current.until is not None else None
        number = mask_number(current.person.whatsapp)
        entry = {"name": current.person.name, "number": number, "role": f"team {team_id}", "until": until}
        shown.append({**entry, "channel": channel, "source": current.reason})
    return shown


def investigation_queue(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Firing incidents whose investigation is ``running`` or ``pending`` (queued), from the database, so
    every agent replica's work shows."""
    queue: dict[str, list[dict[str, Any]]] = {"running": [], "pending": []}
    for row in rows:
        if row.get("status") == "firing" and row.get("investigation_status") in queue:
            queue[row["investigation_status"]].append(row)
    return queue


def background_tasks(tasks: BackgroundTasks) -> list[dict[str, Any]]:
    """This process' background tasks by kind (the task name without its incident id): ``kind``, ``count``."""
    kinds = Counter(re.sub(r"-\d+$", "", task.get_name()) for task in tasks.tasks)
    return [{"kind": kind, "count": count} for kind, count in sorted(kinds.items())]


def paged(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Who was messaged about the incident: per recipient (masked), the channel, first time, message count."""
    seen: dict[str, dict[str, Any]] = {}
    for message in messages:
        if message.get("direction") != "out":
            continue
        key = str(message.get("to_number") or message.get("channel"))
        entry = seen.setdefault(
            key,
            {"to": mask_number(key), "channel": message.get("channel"), "first_at": message["created_at"], "count": 0},
        )
        entry["count"] += 1
    return list(seen.values())


def escalation(pages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The escalation levels (``pages`` rows, by episode then level) with ``names``: who was (or will be) paged."""
    return [
        {**page, "names": ", ".join(str(r.get("name") or r.get("whatsapp")) for r in page.get("recipients") or [])}
        for page in pages
    ]


def proposed_actions(detail: dict[str, Any]) -> list[dict[str, Any]]:
    """The incident's proposed remediation actions (``oncall.diagnosis.ProposedAction``: action, target,
    params, risk, rationale, expected_effect): ``detail["proposed_actions"]`` when the incident detail
    carries them (the remediation feature's records, with ``id``, ``status``, ``verification``,
    ``decided_by``), else ``diagnosis["proposed_actions"]``; [] when neither does.

    Each copy gets ``ref``: its ``id``, else its 1-based number in the list (the numbered choice the
    engineer is offered), and ``awaits_decision``: True while its ``status`` is missing or in
    ``PENDING_ACTION_STATES``.
    """
    diagnosis = detail.get("diagnosis") or {}
    actions = detail.get("proposed_actions") or diagnosis.get("proposed_actions") or []
    shown = []
    for number, action in enumerate(actions, 1):
        if isinstance(action, dict):
            ref = str(action.get("id") or number)
            shown.append({**action, "ref": ref, "awaits_decision": awaits_decision(action)})
    return shown


def awaits_decision(action: dict[str, Any]) -> bool:
    """True when a responder can still approve or reject the action."""
    return (action.get("status") or "proposed") in PENDING_ACTION_STATES


def hypotheses(detail: dict[str, Any]) -> list[dict[str, Any]]:
    """The diagnosis' ranked hypotheses (``oncall.diagnosis.Hypothesis``, best first) with ``links_for`` and
    ``links_against``: their ``evidence_for`` and ``evidence_against`` linked to tool calls; [] without any.
    Hypotheses that do not fit the contract are left out."""
    diagnosis = detail.get("diagnosis") or {}
    ranked = [item for item in (conform(Hypothesis, value) for value in diagnosis.get("hypotheses") or []) if item]
    calls = detail.get("tool_calls") or []
    return [
        {
            **item,
            "links_for": link_evidence(item.get("evidence_for") or [], calls, diagnosis),
            "links_against": link_evidence(item.get("evidence_against") or [], calls, diagnosis),
        }
        for item in ranked
    ]


def evidence_links(detail: dict[str, Any]) -> list[EvidenceLink]:
    """The diagnosis' evidence, each item linked to the tool call that produced it."""
    diagnosis = detail.get("diagnosis") or {}
    return link_evidence(diagnosis.get("evidence") or [], detail.get("tool_calls") or [], diagnosis)


def conform(model: type[BaseModel], value: Any) -> dict[str, Any] | None:
    """``value`` validated by ``model`` and dumped with every field present (JSON types), or None when invalid."""
    try:
        return model.model_validate(value).model_dump(mode="json")
    except ValidationError:
        return None


def impact(detail: dict[str, Any]) -> dict[str, Any] | str | None:
    """The impact (``oncall.diagnosis.Impact``) of the detail or its diagnosis: every field present, or a text
    impact as it is; None when there is none or it does not fit the contract."""
    diagnosis = detail.get("diagnosis") or {}
    value = detail.get("impact") or diagnosis.get("impact")
    return value if value is None or isinstance(value, str) else conform(Impact, value)


def similar_incidents(detail: dict[str, Any]) -> list[dict[str, Any]]:
    """The diagnosis' similar incidents (``oncall.diagnosis.SimilarIncident``) that fit the contract."""
    found = ((detail.get("diagnosis") or {}).get("similar_incidents")) or []
    return [item for item in (conform(SimilarIncident, value) for value in found) if item]


def all_evidence_links(detail: dict[str, Any]) -> list[EvidenceLink]:
    """The diagnosis' evidence and every hypothesis' evidence for and against, linked to tool calls."""
    links = evidence_links(detail)
    for hypothesis in hypotheses(detail):
        links += hypothesis["links_for"] + hypothesis["links_against"]
    return links


def incident_context(detail: dict[str, Any], remediation_enabled: bool) -> dict[str, Any]:
    """Everything the incident page renders besides the session: the detail and its derived sections.

    ``impact`` (``oncall.diagnosis.Impact``) and ``postmortem`` come from the detail or the diagnosis when
    present (None otherwise); ``similar`` is the diagnosis' ``similar_incidents``; ``escalation`` the levels
    paged (``pages``) and ``phases`` the latest episode's phase timings.
    """
    diagnosis = detail.get("diagnosis") or {}
    return {
        "incident": detail,
        "diagnosis": diagnosis or None,
        "evidence": evidence_links(detail),
        "hypotheses": hypotheses(detail),
        "impact": impact(detail),
        "similar": similar_incidents(detail),
        "actions": proposed_actions(detail),
        "remediation_enabled": remediation_enabled,
        "postmortem": detail.get("postmortem") or diagnosis.get("postmortem"),
        "paged": paged(detail.get("messages") or []),
        "escalation": escalation(detail.get("pages") or []),
        "phases": timings_json(phase_timings(detail)) if detail.get("created_at") is not None else None,
    }


def pending_approvals(incidents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Proposed actions waiting for a decision across ``incidents`` (incident rows or details, with their
    ``diagnosis``): each ``{"incident": row, "action": action}``. Extension point: the remediation
    feature may answer this from its own table instead."""
    waiting = []
    for incident in incidents:
        for action in proposed_actions(incident):
            if action["awaits_decision"]:
                waiting.append({"incident": incident, "action": action})
    return waiting
