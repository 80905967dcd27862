"""What the agent says back: the questions of proposals, the answers to negations, unclear replies and failures."""

from __future__ import annotations

from typing import Any

from oncall.conversation.intents import Intent, Understanding, help_text
from oncall.store.rows import Row

SORRY = (
    "Sorry, something went wrong while I handled your message (the error is logged). "
    "Please check the incident page, or try again."
)


def proposal_question(action: Intent, arguments: dict[str, Any], incident_id: int, alert: str, ttl_s: float) -> str:
    """The question asked before a side-effecting action: exactly what YES will do, and for how long it stands."""
    if action is Intent.create_ticket:
        assignee = arguments.get("assignee")
        who = f" assigned to {assignee}" if assignee else " (unassigned)"
        again = " (a new one, even if the incident has a ticket)" if arguments.get("force_new") else ""
        what = f"Create a Jira task for #{incident_id} {alert}{who}{again}?"
    elif action is Intent.acknowledge:
        what = f"Acknowledge #{incident_id} {alert}?"
    elif action is Intent.resolve:
        what = f"Mark #{incident_id} {alert} resolved?"
    else:
        raise ValueError(f"{action} is not a side-effecting action")
    minutes = max(1, round(ttl_s / 60))
    return f"{what} Reply YES to confirm or NO to cancel (valid {minutes} min)."


def negation_answer(understanding: Understanding, incident_id: int) -> str:
    """The answer to "don't ..." / "not fixed yet": nothing was done."""
    return {
        Intent.create_ticket: f"OK, no ticket for #{incident_id}.",
        Intent.resolve: f"OK, #{incident_id} stays open.",
        Intent.acknowledge: f"OK, #{incident_id} is not acknowledged.",
    }.get(understanding.intent, "OK, nothing done.")


def unclear_answer(understanding: Understanding, body: str, incident_id: int) -> str:
    """A question back for a reply that asks for nothing clear (never an action)."""
    question = understanding.question or f'Sorry, I did not understand "{" ".join(body.split())[:80]}".'
    return f"{question}\n\n{help_text(incident_id)}"


def nothing_pending(expired: Row | None) -> str:
    """The answer to a YES or NO with no proposal waiting for it."""
    if expired is not None:
        return f'Your confirmation came too late: "{expired["question"]}" expired. Send the request again.'
    return f"There is nothing waiting for your YES or NO.\n\n{help_text()}"
