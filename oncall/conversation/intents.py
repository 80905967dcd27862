"""What an on-call engineer's WhatsApp reply asks for, decided by deterministic code alone.

The set of intents is closed (``Intent``); each is recognised by one ``IntentRule`` in ``RULES``
(a later intent, such as ``approve <n>`` or ``who is on call``, adds its enum member and its rule).
``understand(text)`` returns an ``Understanding``:

- a **command** ("ack", "#3 resolve", "create a Jira task and assign it to Ravi Kumar", "can you
  resolve #2?"): a side-effecting intent the handler may carry out at once;
- a **suggestion** ("the issue is resolved", "should we open a ticket?", "assign it to Priya",
  "maybe a ticket"): a side-effecting intent implied, not commanded; the handler asks back
  ("... Reply YES") and acts only on the confirmation;
- a **negation** ("don't create a ticket", "it's not fixed yet", "no ticket needed"): nothing is done;
- ``confirm`` / ``decline``: a bare "yes" / "no" answering the agent's question;
- ``status`` for questions about the incident ("is it resolved?", "any news?"), ``help``;
- ``who_is_on_call`` ("who is on call?", "who's paged?", "on-call roster"): read-only, answered at once;
- ``unclear`` for everything else, including hedges ("I'm not sure this is a task for me") and
  several side-effecting requests in one message: the handler answers with a question, never an action.

Typos in the command words ("resovle", "acknowlege", "tikcet", "staus") are corrected against the
vocabulary (``difflib``, similarity >= 0.8, words of 5+ letters); names are kept as written.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

INCIDENT_REF = re.compile(r"(?:#\s*|\bincident\s+#?)(\d+)\b", re.IGNORECASE)
VOCABULARY = (
    "acknowledge",
    "acknowledged",
    "another",
    "approve",
    "assign",
    "assigned",
    "assignee",
    "cancel",
    "confirm",
    "create",
    "details",
    "incident",
    "please",
    "reject",
    "resolve",
    "resolved",
    "status",
    "ticket",
    "tickets",
)
TYPO_CUTOFF = 0.8
TYPO_MIN_LETTERS = 5
POLITE = (
    r"(?:(?:please|pls|plz|kindly|ok|okay|yes|yeah|yep|sure|now|then|so|(?:can|could|would|will)\s+(?:you|u))"
    r"\s*,?\s+)*"
)
YES = re.compile(r"^(?:y|yes|yep|yeah|yup|ok|okay|sure|confirm(?:ed)?|do it|go ahead|yes,? please|please do)\W*$")
NO = re.compile(r"^(?:n|no|nope|nah|cancel|don'?t|do not|stop|abort|never ?mind|no,? thanks?)\W*$")
HELP = re.compile(r"^(?:help|\?|commands|menu|what can you do)\W*$")
QUESTION_START = re.compile(r"^(?:is|are|was|were|did|does|do|has|have|had|what|why|when|who|which|how|any)\b")
SUGGEST = re.compile(
    r"\b(?:should|shall|need|needs|want|wanna|worth|maybe|perhaps|let'?s|lets|probably|might|i think|i guess)\b"
)
HEDGE = re.compile(r"\b(?:not sure|unsure|no idea|idk|wondering|i doubt)\b")
NEGATION = re.compile(
    r"\b(?:don'?t|do not|dont|doesn'?t|no need|not|never|no|without|stop|skip|cancel|isn'?t|nothing)\b"
)
NEGATED_AFTER = re.compile(r"^\W*(?:is\s+|are\s+)?(?:not needed|not necessary|no longer needed|unnecessary|not yet)\b")
CLAUSE_BREAK = re.compile(r"[.,;!?]|\bbut\b|\band\b")


class Intent(StrEnum):
    """What the engineer wants (a closed set; see the module docstring)."""

    acknowledge = "acknowledge"
    resolve = "resolve"
    create_ticket = "create_ticket"
    status = "status"
    who_is_on_call = "who_is_on_call"
    help = "help"
    confirm = "confirm"
    decline = "decline"
    approve = "approve"
    reject = "reject"
    check = "check"
    unclear = "unclear"


SIDE_EFFECTS = frozenset({Intent.acknowledge, Intent.resolve, Intent.create_ticket, Intent.approve, Intent.reject})
"""Intents that change something (an incident, Jira, a replica): executed only on a command or a confirmation.
``approve <n>`` / ``reject <n>`` are commands only (``DECISION``): never read from a suggestion."""

DECISION = re.compile(
    rf"^{POLITE}(?P<verb>approve|reject|deny)(?:\s+(?:option|action|no\.?|number))?\s*#?\s*(?P<option>\d{{1,2}})?\W*$"
)
"""``approve 1``, ``please approve option 2``, ``reject 1``: the whole message (after ``#N``) is the decision."""
CHECK = re.compile(rf"^{POLITE}(?:check|investigate|look at)\s+(?:on\s+)?(?P<service>[a-z][a-z0-9_.-]{{0,62}})\W*$")
"""``check inventory``: an investigation of a service without an alert."""


@dataclass(frozen=True)
class Understanding:
    """The reading of one reply.

    ``intent``: what is asked. ``incident_ref``: the ``#N`` written, if any. ``assignee``: a name as
    written ("Ravi Kumar"). ``force_new``: another ticket although one exists. ``needs_confirmation``:
    a side-effecting intent that was suggested, not commanded. ``negated``: the engineer said not to
    do it. ``question``: for ``unclear``, what to ask back.
    """

    intent: Intent
    incident_ref: int | None = None
    assignee: str | None = None
    force_new: bool = False
    needs_confirmation: bool = False
    negated: bool = False
    question: str | None = None
    option: int | None = None
    service: str | None = None

    @property
    def executable(self) -> bool:
        """True for a side-effecting command the handler may carry out without asking."""
        return self.intent in SIDE_EFFECTS and not self.needs_confirmation and not self.negated


@dataclass(frozen=True)
class IntentRule:
    """How one intent is recognised in the normalised text.

    ``command`` matches the imperative or conventional forms at the start of the message (after a
    polite prefix); ``mention`` matches it anywhere, and for a side-effecting intent a mention alone
    is a suggestion (``command_anywhere``: a mention counts as a command, as "ack" does).
    """

    intent: Intent
    command: re.Pattern[str]
    mention: re.Pattern[str]
    command_anywhere: bool = False


TICKET_CREATE = (
    r"(?:create|open|file|raise|make|log|cut|add|start)\b[\w\s'-]{0,40}?\b(?:ticket|task|issue|jira|bug)s?\b"
)
TICKET_TERSE = r"(?:(?:a|an|one|new|another|second|extra)\s+)*(?:jira\b|tickets?\b|task\s+(?:for|assign)\b)"
ON_CALL = r"(?:on[\s-]?call|oncall)"
WHO_ON_CALL = rf"who(?:'?s|\s+is|\s+are)?\s+(?:{ON_CALL}|(?:being\s+|getting\s+|gets\s+)?paged)"
RULES = (
    IntentRule(
        Intent.create_ticket,
        re.compile(rf"^{POLITE}(?:{TICKET_CREATE}|{TICKET_TERSE})"),
        re.compile(rf"\b(?:{TICKET_CREATE}|jira|tickets?)\b|\bassign(?:ed)?\s+(?:it|this|the\s+\w+\s+)?\s*to\b"),
    ),
    IntentRule(
        Intent.resolve,
        re.compile(
            rf"^{POLITE}(?:resolve[ds]?|mark(?:ed)?\s+(?:it\s+|this\s+|the\s+incident\s+)?(?:as\s+)?resolved"
            r"|close\s+(?:it|this|the\s+(?:incident|alert))|close)\b"
        ),
        re.compile(r"\b(?:resolved?|fixed|all good|back to normal|recovered|mitigated|closed?)\b"),
    ),
    IntentRule(
        Intent.acknowledge,
        re.compile(
            rf"^{POLITE}(?:ack\w*|acknowledged?|on it|i'?m on it|i am on it|looking into it|taking (?:it|this))\b"
        ),
        re.compile(
            r"\b(?:ack|acked|acking|acknowledged?|on it|looking into it|taking (?:it|this)|i'?ll take (?:it|this))\b"
        ),
        command_anywhere=True,
    ),
    IntentRule(
        Intent.who_is_on_call,
        re.compile(rf"^{POLITE}(?:{WHO_ON_CALL}|{ON_CALL}(?:\s+(?:now|today|roster|schedule|rota))?\W*$|roster\W*$)"),
        re.compile(
            rf"\b(?:{WHO_ON_CALL}|{ON_CALL}\s+(?:roster|schedule|rota))\b|\b{ON_CALL}(?:\s+(?:now|today|tonight))?\W*$"
        ),
        command_anywhere=True,
    ),
    IntentRule(
        Intent.status,
        re.compile(rf"^{POLITE}(?:status|details?|info|update|summary|diagnosis)\b"),
        re.compile(
            r"\b(?:status|details?|info|diagnosis|summary|update|news|progress|what'?s (?:up|going on|happening)"
            r"|how (?:is|are) (?:it|things))\b"
        ),
        command_anywhere=True,
    ),
)
# "assign it to Ravi", "assigned to Ravi Kumar", "assignee: priya", "for priya" / "to ravi" after a ticket word
ASSIGN = re.compile(
    r"\b(?:assign(?:ed)?(?:\s+(?:it|this|the\s+\w+))?\s+to|assignee\s*[:=]?|owner\s*[:=]?)\s+(?P<name>.+)"
)
FOR_NAME = re.compile(r"\b(?:ticket|task|issue|jira)s?\b.*?\b(?:for|to)\s+(?P<name>.+)")
FORCE_NEW = re.compile(r"\b(?:new|another|second|extra|one more)\s+(?:jira\s+)?(?:ticket|task|issue)\b")
NAME_WORD = re.compile(r"^[^\W\d_][\w.'-]*$")
_NOT_NAME_WORDS = (
    "the this that it me us him her them a an incident alert jira ticket task issue please pls now asap and "
    "with priority fix investigate track tracking someone anyone team on for to thanks thank"
)
NOT_NAMES = frozenset(_NOT_NAME_WORDS.split())
MAX_NAME_WORDS = 3


def normalise(text: str) -> str:
    """Lowercase NFKC text with typographic quotes made plain, spaces collapsed and command-word typos fixed."""
    plain = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'").lower()
    return re.sub(r"[a-z']+", _fix_typo, " ".join(plain.split()))


def _fix_typo(match: re.Match[str]) -> str:
    word = match.group()
    if len(word) < TYPO_MIN_LETTERS or word in VOCABULARY:
        return word
    close = difflib.get_close_matches(word, VOCABULARY, n=1, cutoff=TYPO_CUTOFF)
    return close[0] if close else word


def _name_from(text: str, original: str) -> str | None:
    """The leading person name in ``text`` (up to 3 name-like words), spelt as in ``original``."""
    words: list[str] = []
    for raw in text.split():
        word = raw.strip(',.;:!?"()')
        if not word or word in NOT_NAMES or not NAME_WORD.match(word) or len(words) == MAX_NAME_WORDS:
            break
        words.append(word)
        if raw != word:  # punctuation ends the name ("Ravi, please ...")
            break
    if not words:
        return None
    found = re.search(r"\s+".join(re.escape(word) for word in words), original, re.IGNORECASE)
    return found.group() if found else " ".join(words)


def extract_assignee(text: str, original: str) -> str | None:
    """The assignee named in a ticket request (``assign it to Ravi``, ``ticket for priya``), or None."""
    for pattern in (ASSIGN, FOR_NAME):
        match = pattern.search(text)
        if match and (name := _name_from(match["name"], original)):
            return name
    return None


def _negated(text: str, start: int, end: int) -> bool:
    """True when the clause holding ``text[start:end]`` negates it ("don't create a ticket", "ticket not needed")."""
    clause_start = max((m.end() for m in CLAUSE_BREAK.finditer(text, 0, start)), default=0)
    return bool(NEGATION.search(text, clause_start, start)) or bool(NEGATED_AFTER.match(text[end:]))


@dataclass(frozen=True)
class _Found:
    rule: IntentRule
    command: bool
    negated: bool


def _find(text: str) -> list[_Found]:
    """Every rule that matches, with whether as a command and whether negated."""
    found = []
    for rule in RULES:
        command = rule.command.search(text)
        mention = command or rule.mention.search(text)
        if mention is None:
            continue
        is_command = command is not None or rule.command_anywhere
        found.append(_Found(rule, is_command, _negated(text, mention.start(), mention.end())))
    return found


def _is_question(text: str) -> bool:
    polite = re.match(r"^(?:please|pls|(?:can|could|would|will)\s+(?:you|u))\b", text)
    return not polite and (text.endswith("?") or bool(QUESTION_START.match(text)))


def _ticket(found: _Found, text: str, original: str, ref: int | None, confirm: bool) -> Understanding:
    return Understanding(
        Intent.create_ticket,
        ref,
        assignee=extract_assignee(text, original),
        force_new=bool(FORCE_NEW.search(text)),
        needs_confirmation=confirm and not found.negated,
        negated=found.negated,
    )


def _side_effect(found: _Found, text: str, original: str, ref: int | None) -> Understanding:
    """The understanding of one side-effecting intent found in ``text``."""
    suggested = not found.command or bool(SUGGEST.search(text)) or _is_question(text)
    if found.rule.intent is Intent.create_ticket:
        return _ticket(found, text, original, ref, suggested)
    if _is_question(text) and not SUGGEST.search(text):  # "is it resolved?", "did anyone ack?"
        return Understanding(Intent.status, ref)
    return Understanding(
        found.rule.intent, ref, needs_confirmation=suggested and not found.negated, negated=found.negated
    )


def _answer_or_help(rest: str, ref: int | None) -> Understanding | None:
    """``confirm``, ``decline`` or ``help`` when the whole message is one of them, else None."""
    for pattern, intent in ((YES, Intent.confirm), (NO, Intent.decline), (HELP, Intent.help)):
        if pattern.match(rest):
            return Understanding(intent, ref)
    return Understanding(Intent.help, ref) if not rest else None


def _decision_or_check(rest: str, ref: int | None) -> Understanding | None:
    """``approve <n>`` / ``reject <n>`` (a question back without the number) or ``check <service>``, else None."""
    decision = DECISION.match(rest)
    if decision is not None:
        intent = Intent.approve if decision["verb"] == "approve" else Intent.reject
        if decision["option"] is None:
            example = f"#{ref or 12} {intent.value} 1"
            return Understanding(Intent.unclear, ref, question=f"Which proposed action? Reply e.g. {example}.")
        return Understanding(intent, ref, option=int(decision["option"]))
    check = CHECK.match(rest)
    if check is not None:
        return Understanding(Intent.check, ref, service=check["service"])
    return None


def _from_rules(rest: str, original: str, ref: int | None) -> Understanding:
    """The understanding from the intent rules: one side effect, or status, or unclear."""
    found = _find(rest)
    effects = [f for f in found if f.rule.intent in SIDE_EFFECTS]
    if len([f for f in effects if not f.negated]) > 1:
        names = " or ".join(f.rule.intent.value.replace("_", " ") for f in effects)
        return Understanding(Intent.unclear, ref, question=f"Do you want me to {names}? One request per message.")
    if effects:
        chosen = next((f for f in effects if not f.negated), effects[0])
        return _side_effect(chosen, rest, original, ref)
    return Understanding(found[0].rule.intent if found else Intent.unclear, ref)  # who_is_on_call, else status


def understand(text: str) -> Understanding:
    """Read one WhatsApp reply (see the module docstring); never raises.

    Args:
        text: the message body as received.
    """
    refs = {int(m[1]) for m in INCIDENT_REF.finditer(text)}
    if len(refs) > 1:
        return Understanding(Intent.unclear, question="Which incident do you mean? Name one, e.g. #12.")
    ref = next(iter(refs), None)
    original = INCIDENT_REF.sub(" ", text)
    rest = normalise(original).strip(" ,.:;-")
    answer = _answer_or_help(rest, ref) or _decision_or_check(rest, ref)
    if answer is not None:
        return answer
    if HEDGE.search(rest):
        return Understanding(Intent.unclear, ref, question="What would you like me to do?")
    return _from_rules(rest, original, ref)


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
        f"• {ref} approve 1 / {ref} reject 1 (a proposed action)\n"
        "• check inventory (investigate a service now)\n"
        "• who is on call?\n"
        "• YES / NO to confirm or cancel what I proposed\n"
        "Without #N the reply applies to your latest open incident."
    )
