"""Offline plain-language parser for the on-call engineer's WhatsApp replies.

Understood (case-insensitive, an optional ``#12`` or ``incident 12`` anywhere names the incident):
``create a jira task and assign it to Ravi`` / ``open a ticket for priya`` / ``ticket assign to Ravi Kumar``
(create_ticket; ``new``/``another ticket`` forces a second one), ``ack`` / ``acknowledge`` / ``on it``
(acknowledge), ``resolve`` / ``mark resolved`` (resolve), ``status`` / ``details`` (status), ``help``.
Anything else is answered with the help text.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel

INCIDENT_REF = re.compile(r"(?:#\s*|\bincident\s+#?)(\d+)\b", re.IGNORECASE)
HELP = re.compile(r"^\s*(help|\?|commands|menu)\s*[.!?]*\s*$", re.IGNORECASE)
TICKET = re.compile(r"\b(jira|ticket|task|issue)s?\b", re.IGNORECASE)
FORCE_NEW = re.compile(r"\b(new|another|second|extra|one more)\s+(jira\s+)?(ticket|task|issue)\b", re.IGNORECASE)
RESOLVE = re.compile(
    r"\b(resolve[ds]?|mark(ed)?\s+(it\s+)?(as\s+)?resolved|close\s+(it|the\s+incident)|it'?s\s+fixed)\b", re.IGNORECASE
)
ACK = re.compile(
    r"\b(ack|acked|acknowledged?|on\s+it|i'?m\s+on\s+it|looking(\s+into\s+it)?|taking\s+(it|this))\b", re.IGNORECASE
)
STATUS = re.compile(r"\b(status|details?|info|diagnosis|summary|what'?s\s+(up|going\s+on))\b", re.IGNORECASE)
# "assign it to Ravi", "assigned to Ravi Kumar", "assignee: priya", "for priya" / "to ravi" after a ticket word
ASSIGN = re.compile(
    r"\b(?:assign(?:ed)?(?:\s+(?:it|this|the\s+\w+))?\s+to|assignee\s*[:=]?|owner\s*[:=]?)\s+(?P<name>.+)",
    re.IGNORECASE,
)
FOR_NAME = re.compile(r"\b(?:ticket|task|issue|jira)\b.*?\b(?:for|to)\s+(?P<name>.+)", re.IGNORECASE)
NAME_WORD = re.compile(r"^[^\W\d_][\w.'-]*$")
NOT_NAMES = {
    "the",
    "this",
    "that",
    "it",
    "me",
    "us",
    "him",
    "her",
    "them",
    "a",
    "an",
    "incident",
    "alert",
    "jira",
    "ticket",
    "task",
    "issue",
    "please",
    "pls",
    "now",
    "asap",
    "and",
    "with",
    "priority",
    "fix",
    "investigate",
    "track",
    "tracking",
    "someone",
}
MAX_NAME_WORDS = 3


class ReplyAction(StrEnum):
    """What the engineer asked for."""

    create_ticket = "create_ticket"
    acknowledge = "acknowledge"
    resolve = "resolve"
    status = "status"
    help = "help"


class ParsedReply(BaseModel):
    """A parsed reply. ``incident_ref`` is the incident number written (``#12``), ``assignee`` a name as
    written (``"Ravi Kumar"``), ``force_new`` asks for another ticket, ``understood`` is False when the
    text matched nothing (the action is then ``help``)."""

    action: ReplyAction
    incident_ref: int | None = None
    assignee: str | None = None
    force_new: bool = False
    understood: bool = True


def _name_from(text: str) -> str | None:
    """The leading person name in ``text``: up to 3 name-like words, stopping at filler words or punctuation."""
    words: list[str] = []
    for raw in re.split(r"\s+", text.strip()):
        word = raw.strip(',.;:!?"()')
        if not word or word.casefold() in NOT_NAMES or not NAME_WORD.match(word) or len(words) == MAX_NAME_WORDS:
            break
        words.append(word)
        if raw != word:  # punctuation ends the name ("Ravi, please ...")
            break
    return " ".join(words) or None


def extract_assignee(text: str) -> str | None:
    """The assignee named in a ticket request (``assign it to Ravi``, ``ticket for priya``), or None."""
    for pattern in (ASSIGN, FOR_NAME):
        match = pattern.search(text)
        if match:
            name = _name_from(match["name"])
            if name:
                return name
    return None


def parse_reply(text: str) -> ParsedReply:
    """Parse a WhatsApp reply into an action.

    Args:
        text: the message body as received.
    Returns:
        The parsed reply; never raises (unknown text -> ``help`` with ``understood=False``).
    """
    match = INCIDENT_REF.search(text)
    incident_ref = int(match[1]) if match else None
    rest = INCIDENT_REF.sub(" ", text).strip()
    if HELP.match(rest) or not rest:
        return ParsedReply(action=ReplyAction.help, incident_ref=incident_ref, understood=bool(rest))
    if TICKET.search(rest) or ASSIGN.search(rest):
        return ParsedReply(
            action=ReplyAction.create_ticket,
            incident_ref=incident_ref,
            assignee=extract_assignee(rest),
            force_new=bool(FORCE_NEW.search(rest)),
        )
    for pattern, action in (
        (RESOLVE, ReplyAction.resolve),
        (ACK, ReplyAction.acknowledge),
        (STATUS, ReplyAction.status),
    ):
        if pattern.search(rest):
            return ParsedReply(action=action, incident_ref=incident_ref)
    return ParsedReply(action=ReplyAction.help, incident_ref=incident_ref, understood=False)


def help_text(incident_id: int | None = None) -> str:
    """What the engineer can reply (WhatsApp formatting)."""
    ref = f"#{incident_id}" if incident_id else "#12"
    return (
        "*What you can reply*\n"
        f"• {ref} create a Jira task and assign it to Ravi\n"
        f"• {ref} new ticket for Priya (a second ticket)\n"
        f"• {ref} ack (acknowledge)\n"
        f"• {ref} resolve\n"
        f"• {ref} status\n"
        "Without #N the reply applies to your latest open incident."
    )
