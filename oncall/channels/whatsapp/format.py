"""WhatsApp text for the on-call engineer: the diagnosis, the resolved notice, and message splitting.

WhatsApp renders ``*bold*``; Twilio accepts at most 1600 characters in one WhatsApp message body
(Twilio docs, "Message body length": WhatsApp 1600), so long texts are split with ``split_message``.
"""

from __future__ import annotations

from typing import Any

from oncall.diagnosis import Diagnosis, Impact
from oncall.remediation.catalogue import describe

WHATSAPP_BODY_LIMIT = 1600
MAX_EVIDENCE_ITEMS = 3
MAX_FINDING_CHARS = 220
MAX_CHANGES = 6


def incident_url(public_base_url: str, incident_id: int) -> str:
    """Return the incident's page in the agent's console: ``{public_base_url}/ui/incidents/{id}``."""
    return f"{public_base_url}/ui/incidents/{incident_id}"


def postmortem_url(public_base_url: str, incident_id: int) -> str:
    """Return the incident's post-mortem draft (Markdown, read with the incident API token):
    ``{public_base_url}/incidents/{id}/postmortem``."""
    return f"{public_base_url}/incidents/{incident_id}/postmortem"


def alert_name(incident: dict[str, Any]) -> str:
    """Return the alert name of an incident row (common label ``alertname``, else its title)."""
    for key in ("common_labels", "group_labels"):
        labels = incident.get(key) or {}
        if labels.get("alertname"):
            return str(labels["alertname"])
    return str(incident.get("title") or "alert")


def reply_hint(incident_id: int) -> str:
    """Return the line telling the engineer what they can answer."""
    return f"Reply e.g.: #{incident_id} create a Jira task and assign it to Ravi (or: ack, resolve, status, help)"


def _truncate(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters, ending with an ellipsis when cut."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def format_diagnosis(diagnosis: Diagnosis, incident: dict[str, Any], public_base_url: str) -> str:
    """Format a diagnosis for WhatsApp.

    Args:
        diagnosis: the validated diagnosis.
        incident: the incident row (``oncall.db.get_incident``): ``id``, ``title``, ``status``, labels.
        public_base_url: the agent's public URL (no trailing slash) for the incident link.
    Returns:
        The message text; it may exceed 1600 characters (``Notifier`` splits it).
    """
    incident_id = int(incident["id"])
    where = ""
    if diagnosis.affected_file:
        where = diagnosis.affected_file + (f":{diagnosis.affected_line}" if diagnosis.affected_line else "")
    replicas = ", ".join(diagnosis.affected_replicas) or "none identified"

    head = [
        f"🚨 *#{incident_id} {alert_name(incident)}* ({diagnosis.priority}, {incident.get('status', 'firing')})",
        f"*Fault:* {diagnosis.fault_type.value} · confidence {round(diagnosis.confidence * 100)}%",
        f"*Service:* {diagnosis.affected_service} · replicas: {replicas}",
    ]
    if where:
        head.append(f"*Where:* {where}")
    sections = ["\n".join(head), f"*Summary*\n{diagnosis.summary}", f"*Root cause*\n{diagnosis.root_cause}"]
    if diagnosis.proposed_actions:  # what the engineer can approve comes before the evidence: the first part keeps it
        sections.append(format_options(diagnosis, incident_id))
    if diagnosis.evidence:
        lines = [
            f"• {item.tool}: {_truncate(item.finding, MAX_FINDING_CHARS)} ({_truncate(item.query, 120)})"
            for item in diagnosis.evidence[:MAX_EVIDENCE_ITEMS]
        ]
        sections.append("*Evidence*\n" + "\n".join(lines))
    sections += _service_sections(diagnosis)
    if diagnosis.suggested_fix:
        sections.append(f"*Suggested fix*\n{diagnosis.suggested_fix}")
    if diagnosis.next_steps:
        sections.append("*Next steps*\n" + "\n".join(f"{n}. {step}" for n, step in enumerate(diagnosis.next_steps, 1)))
    sections += diagnosis_context_sections(diagnosis)  # after the actionable part: the first message keeps it
    sections.append(
        f"Details: {incident_url(public_base_url, incident_id)}\nEngine: {diagnosis.engine}\n{reply_hint(incident_id)}"
    )
    return "\n\n".join(sections)


def format_options(diagnosis: Diagnosis, incident_id: int) -> str:
    """The proposed actions as numbered options, each with its risk and the exact reply that approves it:
    ``1. clear the injected fault on inventory-2 (low risk): reply #3 approve 1``."""
    lines = [
        f"{number}. {describe(action)} ({action.risk} risk): reply *#{incident_id} approve {number}*"
        for number, action in enumerate(diagnosis.proposed_actions, 1)
    ]
    first = describe(diagnosis.proposed_actions[0])
    head = f"*Proposed actions* (nothing runs without your approval)\nReply `#{incident_id} approve 1` to {first}."
    return head + "\n" + "\n".join(lines) + f"\n(or #{incident_id} reject N)"


def _service_sections(diagnosis: Diagnosis) -> list[str]:
    """The change timeline around the onset and what the catalog is missing."""
    sections = []
    if diagnosis.changes:
        lines = [
            f"• {'?' if c.offset_s is None else f'{c.offset_s:+.0f}s'} {_truncate(c.summary, 120)}"
            for c in diagnosis.changes[-MAX_CHANGES:]
        ]
        sections.append("*Changes* (seconds from onset)\n" + "\n".join(lines))
    if diagnosis.catalog_gaps:
        gaps = "\n".join(f"• {_truncate(gap, 200)}" for gap in diagnosis.catalog_gaps)
        sections.append("*Missing from the service catalog*\n" + gaps)
    return sections


def _impact_line(impact: Impact) -> str | None:
    """``*Clients:* 1,234 of 5,678 requests failed (21.7%) in 3m 10s, 56 timed out; routes ...; 0.4% of the
    error budget`` from the diagnosis' impact, or None when it has no numbers."""
    parts = []
    if impact.requests is not None and impact.failed_requests is not None:
        share = f" ({impact.failed_ratio:.1%})" if impact.failed_ratio is not None else ""
        took = f" in {format_duration(impact.duration_s)}" if impact.duration_s else ""
        parts.append(f"{impact.failed_requests:,.0f} of {impact.requests:,.0f} requests failed{share}{took}")
    if impact.client_timeouts:
        parts.append(f"{impact.client_timeouts:,.0f} timed out")
    if impact.affected_routes:
        parts.append("routes " + ", ".join(impact.affected_routes[:4]))
    if impact.error_budget_burned is not None:
        parts.append(f"{impact.error_budget_burned:.1%} of the SLO error budget")
    return f"*Clients:* {'; '.join(parts)}" if parts else None


def diagnosis_context_sections(diagnosis: Diagnosis) -> list[str]:
    """What clients saw (the impact) and the other hypotheses, ranked, with their confidence."""
    sections = []
    line = _impact_line(diagnosis.impact) if diagnosis.impact is not None else None
    if line:
        sections.append(line)
    others = diagnosis.hypotheses[1:]
    if others:
        lines = [
            f"• {h.fault_type.value} on {', '.join(h.affected_replicas) or 'the service'} "
            f"({round(h.confidence * 100)}%{'' if h.explains_alert else ', not this alert'}): "
            f"{_truncate(h.summary, 160)}"
            for h in others
        ]
        sections.append("*Other hypotheses*\n" + "\n".join(lines))
    return sections


def format_duration(seconds: float) -> str:
    """Render a duration in seconds as ``1h 02m``, ``7m 12s`` or ``45s``."""
    total = max(0, int(round(seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def format_resolved(incident: dict[str, Any]) -> str:
    """One line telling the engineer the incident resolved, with its duration (created_at to resolved_at, seconds)."""
    started = float(incident["created_at"])
    ended = float(incident.get("resolved_at") or started)
    return f"✅ *#{incident['id']} {alert_name(incident)}* resolved after {format_duration(ended - started)}."


def _cut_position(text: str, budget: int) -> int:
    """Index at which to cut ``text`` so the first part has at most ``budget`` characters.

    Prefers a paragraph break, then a line break, then a space, each only when it keeps at least
    half the budget in the part; otherwise the latest boundary of any kind; a hard cut only when
    there is no boundary at all (a single word longer than the budget).
    """
    window = text[: budget + 1]
    latest = -1
    for separator in ("\n\n", "\n", " "):
        position = window.rfind(separator, 0, budget + 1)
        if position >= budget // 2:
            return position
        latest = max(latest, position)
    return latest if latest > 0 else budget


def _split_plain(text: str, budget: int) -> list[str]:
    """Split ``text`` into parts of at most ``budget`` characters at the best boundaries."""
    parts: list[str] = []
    rest = text.strip()
    while len(rest) > budget:
        cut = _cut_position(rest, budget)
        part = rest[:cut].rstrip()
        if part:
            parts.append(part)
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return parts


def split_message(text: str, limit: int = WHATSAPP_BODY_LIMIT) -> list[str]:
    """Split ``text`` into WhatsApp messages of at most ``limit`` characters each.

    Splits on paragraph, then line, then word boundaries (never inside a word unless one word
    alone is longer than a part). When more than one part results, each starts with ``(i/n)``.

    Args:
        text: the message body.
        limit: maximum characters per part (Twilio's WhatsApp body cap, 1600, by default).
    Raises:
        ValueError: when ``limit`` is too small to hold the ``(i/n)`` marker and some text.
    """
    if len(text) <= limit:
        return [text]
    count = 2
    while True:
        marker_len = len(f"({count}/{count})\n")
        if limit <= marker_len + 1:
            raise ValueError(f"limit {limit} is too small to split a message")
        parts = _split_plain(text, limit - marker_len)
        if len(str(len(parts))) <= len(str(count)):
            break
        count = len(parts)
    total = len(parts)
    return [f"({index}/{total})\n{part}" for index, part in enumerate(parts, 1)]


def format_investigation_failed(incident: dict[str, Any], error: str, public_base_url: str) -> str:
    """Page for an alert whose automatic investigation failed: the alert, the reason (cut) and the incident link."""
    incident_id = int(incident["id"])
    return (
        f"🚨 *#{incident_id} {alert_name(incident)}* is firing; the automatic investigation failed "
        f"({_truncate(error, MAX_FINDING_CHARS)}). Please investigate by hand.\n"
        f"Details: {incident_url(public_base_url, incident_id)}\n{reply_hint(incident_id)}"
    )
