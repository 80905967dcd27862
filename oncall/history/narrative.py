"""Sentences of a post-mortem: each timeline event as a line, and the rules that say what went well,
what went badly and what to do next (each rule reads facts the incident recorded, never guesses)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from oncall.history.document import Runs, code, strong, text
from oncall.history.phases import PhaseTimings
from oncall.history.similar import SimilarMatch
from oncall.store.rows import Row

REPLY_CHARS = 120
GOOD_CONFIDENCE = 0.7
WEAK_CONFIDENCE = 0.5


def duration(seconds: float | None) -> str:
    """``1h 02m``, ``7m 12s``, ``4.2 s`` (tenths under a minute), or ``n/a``."""
    if seconds is None:
        return "n/a"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def clock(epoch_s: float) -> str:
    """``2026-11-24 10:15:02 UTC``."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def who(value: str | None, names: Mapping[str, str]) -> str:
    """A person's name for a WhatsApp number (``names``: number -> name), else the value itself."""
    if not value:
        return "someone"
    return names.get(value, value)


@dataclass(frozen=True)
class Facts:
    """What the rules read: the incident detail, its phases, pages, similar incidents and names."""

    detail: Row
    phases: PhaseTimings
    pages: list[Row]
    similar: list[SimilarMatch]
    names: Mapping[str, str]

    @property
    def diagnosis(self) -> dict[str, Any]:
        """The stored diagnosis (empty without one)."""
        return self.detail.get("diagnosis") or {}

    def episode_pages(self) -> list[Row]:
        """The paged levels of the latest episode."""
        paged = [p for p in self.pages if p["status"] == "paged"]
        latest = max((int(p["episode"]) for p in paged), default=None)
        return [p for p in paged if int(p["episode"]) == latest]

    def failed_calls(self) -> list[Row]:
        """The episode's failed tool calls."""
        since = self.phases.episode_started_at
        return [c for c in self.detail.get("tool_calls", []) if not c["ok"] and float(c["started_at"]) >= since]

    def created_ticket(self) -> Row | None:
        """The newest created Jira ticket."""
        return next((t for t in reversed(self.detail.get("tickets", [])) if t["status"] == "created"), None)

    def recurring(self) -> list[SimilarMatch]:
        """Similar incidents with the same fault type and location: the same failure seen before."""
        return [s for s in self.similar if {"fault type", "file:line"} <= set(s.matched)]


def _ticket(d: dict[str, Any], _: Mapping[str, str]) -> Runs:
    if d.get("status") == "created":
        return [
            text("Jira "),
            code(str(d.get("key"))),
            text(" created" + (f" for {d['assignee']}" if d.get("assignee") else "")),
        ]
    if d.get("status") == "draft":
        return [text("Ticket draft kept (Jira is not configured)")]
    return [text(f"Ticket not created: {d.get('error') or d.get('status')}")]


def _resolved(d: dict[str, Any], names: Mapping[str, str]) -> Runs:
    if d.get("manual"):
        return [text(f"Resolved by {who(d.get('by'), names)}" + (f": {d['note']}" if d.get("note") else ""))]
    return [text("Resolved: every alert of the group cleared")]


def _paged(d: dict[str, Any], _: Mapping[str, str]) -> Runs:
    recipients = ", ".join(r.get("name") or r.get("whatsapp") or "?" for r in d.get("recipients") or []) or "console"
    verb = "Escalated to level" if d.get("escalated") else "Paged level"
    return [text(f"{verb} {d.get('level')}: {recipients}")]


def _diagnosis(d: dict[str, Any], _: Mapping[str, str]) -> Runs:
    replicas = ", ".join(d.get("affected_replicas") or []) or "no replica"
    return [
        text("Diagnosis "),
        code(str(d.get("fault_type"))),
        text(f" ({d.get('priority')}) on {replicas}: {d.get('summary') or ''}"),
    ]


def _reply(d: dict[str, Any], names: Mapping[str, str]) -> Runs:
    body = " ".join(str(d.get("body") or "").split())
    body = body if len(body) <= REPLY_CHARS else body[: REPLY_CHARS - 1] + "…"
    return [text(f"Reply from {who(d.get('from'), names)}: “{body}”")]


EVENTS: dict[str, Callable[[dict[str, Any], Mapping[str, str]], Runs]] = {
    "detected": lambda d, _: [text("Alert fired in Prometheus (detection)")],
    "created": lambda d, _: [text("Incident opened from the Alertmanager notification")],
    "alert_firing": lambda d, _: [
        text("Alert "),
        code(str(d.get("alertname"))),
        text(" firing" + (f": {d['summary']}" if d.get("summary") else "")),
    ],
    "alert_resolved": lambda d, _: [text("Alert "), code(str(d.get("alertname"))), text(" resolved")],
    "reopened": lambda d, _: [text("The alert fired again: a new episode")],
    "investigation_started": lambda d, _: [
        text(f"Investigation started ({d.get('engine')} engine, {d.get('alerts')} alert(s))")
    ],
    "investigation_fallback": lambda d, _: [
        text(f"The {d.get('from')} engine failed ({d.get('reason')}); {d.get('to')} took over")
    ],
    "investigation_resumed": lambda d, _: [text("Investigation resumed after an agent restart")],
    "investigation_failed": lambda d, _: [text(f"Investigation failed: {d.get('error')}")],
    "diagnosis": _diagnosis,
    "notified": lambda d, _: [text(f"WhatsApp {d.get('what')} message sent ({d.get('channel')} channel)")],
    "paged": _paged,
    "escalation_stopped": lambda d, _: [text(f"Escalation stopped: {d.get('reason')}")],
    "reply": _reply,
    "ticket": _ticket,
    "acknowledged": lambda d, names: [
        text(f"Acknowledged by {who(d.get('by'), names)}" + (f": {d['note']}" if d.get("note") else ""))
    ],
    "resolved": _resolved,
}


def event_line(event: Row, detected_at: float, names: Mapping[str, str]) -> Runs:
    """``**10:15:02 UTC** (+1m 05s) Alert `X` firing: ...`` for one timeline event."""
    describe = EVENTS.get(event["kind"])
    runs = describe(event.get("detail") or {}, names) if describe else [text(event["kind"].replace("_", " "))]
    offset = float(event["at"]) - detected_at
    sign = "+" if offset >= 0 else "-"
    return [strong(clock(float(event["at"]))), text(f" ({sign}{duration(abs(offset))}) "), *runs]


def went_well(facts: Facts) -> list[Runs]:
    """What went well, from recorded facts (a diagnosis quickly, a confident one, an acknowledgement
    without escalation, a ticket, a recognised earlier incident)."""
    lines: list[Runs] = []
    investigation = facts.phases.phase("investigation")
    if facts.diagnosis and investigation.duration_s is not None:
        lines.append(
            [text(f"The {facts.diagnosis.get('engine')} engine diagnosed it in {duration(investigation.duration_s)}.")]
        )
    if facts.diagnosis.get("confidence", 0) >= GOOD_CONFIDENCE:
        lines.append([text(f"Diagnosis confidence {round(facts.diagnosis['confidence'] * 100)}%, with evidence.")])
    paged = facts.episode_pages()
    if facts.phases.time_to_acknowledge_s is not None and len(paged) <= 1:
        lines.append(
            [text(f"Acknowledged {duration(facts.phases.time_to_acknowledge_s)} after detection, without escalation.")]
        )
    ticket = facts.created_ticket()
    if ticket:
        lines.append([text("The fix is tracked in Jira "), code(str(ticket["jira_key"])), text(".")])
    if facts.similar:
        lines.append([text(f"An earlier similar incident (#{facts.similar[0].incident_id}) was recognised.")])
    return lines


def went_badly(facts: Facts) -> list[Runs]:
    """What went badly, from recorded facts (no acknowledgement, escalation, fallback paging, tool
    failures, engine fallback, a weak diagnosis, a recurring failure)."""
    lines: list[Runs] = []
    if facts.phases.time_to_acknowledge_s is None:
        lines.append([text("Nobody acknowledged the incident.")])
    paged = facts.episode_pages()
    if len(paged) > 1:
        lines.append(
            [
                text(
                    f"The page escalated to level {max(int(p['level']) for p in paged)}: "
                    "earlier levels did not acknowledge in time."
                )
            ]
        )
    if any("fallback" in (p.get("reason") or "") for p in paged):
        lines.append([text("Nobody was on call for a level: the ONCALL_WHATSAPP_NUMBERS fallback was paged.")])
    failed = facts.failed_calls()
    if failed:
        tools = sorted({c["tool"] for c in failed})
        lines.append([text(f"{len(failed)} tool call(s) failed: "), code(", ".join(tools))])
    if any(e["kind"] == "investigation_fallback" for e in facts.detail.get("timeline", [])):
        lines.append([text("The model engine failed and the offline engine answered instead.")])
    fault = facts.diagnosis.get("fault_type")
    if fault in (None, "unknown") or facts.diagnosis.get("confidence", 1) < WEAK_CONFIDENCE:
        lines.append([text("The investigation did not reach a confident root cause.")])
    for earlier in facts.recurring()[:1]:
        lines.append(
            [text(f"The same failure happened before (#{earlier.incident_id}); its fix did not prevent this one.")]
        )
    return lines


def _regression_test(d: dict[str, Any]) -> list[Runs]:
    """A regression test for a code bug's location, unless the diagnosis' next steps already ask for one."""
    if d.get("fault_type") != "code_bug" or not d.get("affected_file"):
        return []
    if any("test" in str(step).lower() for step in d.get("next_steps") or []):
        return []
    where = f"{d['affected_file']}:{d['affected_line']}" if d.get("affected_line") else str(d["affected_file"])
    return [[text("Add a regression test covering "), code(where), text(".")]]


def _proposed(action: dict[str, Any]) -> Runs:
    """A remediation the diagnosis proposed (``Diagnosis.proposed_actions``), with its risk."""
    params = ", ".join(f"{key} {value}" for key, value in (action.get("params") or {}).items())
    what = " ".join(part for part in (str(action.get("action")), action.get("target") or "", params) if part)
    why = f": {action['rationale']}" if action.get("rationale") else ""
    return [text("Proposed remediation "), code(what), text(f" (risk {action.get('risk', 'medium')}){why}")]


def action_items(facts: Facts) -> list[Runs]:
    """Follow-ups: the diagnosis' fix and next steps, a regression test for a code bug, the ticket,
    and fixes for what went badly (escalation, failing tools, recurrence)."""
    d = facts.diagnosis
    items: list[Runs] = []
    if d.get("suggested_fix"):
        items.append([text(str(d["suggested_fix"]))])
    items += [[text(str(step))] for step in d.get("next_steps") or []]
    items += _regression_test(d)
    items += [_proposed(action) for action in d.get("proposed_actions") or []]
    ticket = facts.created_ticket()
    items.append(
        [text("Track the fix in Jira "), code(str(ticket["jira_key"]))]
        if ticket
        else [text("File a ticket to track the fix.")]
    )
    if len(facts.episode_pages()) > 1:
        items.append([text("Review why the first page was not acknowledged before the escalation delay.")])
    failed = sorted({c["tool"] for c in facts.failed_calls()})
    if failed:
        items.append([text("Fix the failing investigation tool(s): "), code(", ".join(failed)), text(".")])
    for earlier in facts.recurring()[:1]:
        items.append([text(f"Find out why the fix of #{earlier.incident_id} did not prevent the recurrence.")])
    return items
