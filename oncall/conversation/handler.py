"""The WhatsApp conversation: understand an on-call engineer's reply, act on it only when the engineer
commanded it or confirmed it, and always answer on WhatsApp.

The incident is the one named (``#12``), else the sender's latest open incident, else the latest open
one, else the latest. The reply is read by deterministic code (``oncall.conversation.intents``):

- a command ("ack", "#3 resolve", "create a Jira task and assign it to Ravi Kumar") is carried out;
- a suggestion ("the issue is resolved") becomes a proposal stored in ``confirmations`` and a question
  ("Mark #3 ... resolved? Reply YES ..."); the engineer's YES executes exactly the stored action (on
  any replica, after a restart too), NO cancels it;
- a negation ("don't create a ticket") does nothing and says so;
- anything unclear is answered with a question; with a model configured the model reads it first and
  may answer or *propose* an action, which again needs the engineer's YES.

Every failure while handling a reply is logged and answered ("Sorry, something went wrong ..."), so
the engineer always gets an answer. Actions: ``oncall.incidents.actions`` (acknowledge, resolve,
status) and ``oncall.channels.jira`` (tickets).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from oncall.channels.jira.client import JiraClient
from oncall.channels.whatsapp.format import alert_name
from oncall.conversation import wording
from oncall.conversation.intents import SIDE_EFFECTS, Intent, Understanding, help_text, understand
from oncall.conversation.model import ReplyModel
from oncall.incidents import actions
from oncall.store import confirmations, incidents, messages, timeline
from oncall.store.database import Store
from oncall.store.rows import MAX_ID, Row

log = logging.getLogger("oncall.conversation")

Executor = Callable[[int, str, dict[str, Any]], Awaitable[str]]
"""Carries out one side-effecting action: (incident id, engineer, arguments) -> the line to send back."""


class SendsMessages(Protocol):
    """What the handler needs from ``oncall.channels.whatsapp.sender.WhatsAppSender``."""

    async def send(self, body: str, *, incident_id: int | None, to: list[str] | None = None) -> list[int]: ...


class ConversationHandler:
    """Handles inbound WhatsApp replies (see module docstring).

    Args:
        store: the agent database.
        sender: sends the answers.
        jira: creates (or drafts) tickets.
        public_base_url: the agent's public URL, for incident links.
        model: reads unclear replies with the model, or None (deterministic reading only).
        confirmation_ttl_s: seconds a proposal waits for the engineer's YES (``CONFIRMATION_TTL_S``).
    """

    def __init__(
        self,
        store: Store,
        sender: SendsMessages,
        jira: JiraClient,
        public_base_url: str,
        model: ReplyModel | None,
        confirmation_ttl_s: float = 600.0,
    ) -> None:
        self.store = store
        self.sender = sender
        self.jira = jira
        self.public_base_url = public_base_url
        self.model = model
        self.confirmation_ttl_s = confirmation_ttl_s
        self.executors: dict[Intent, Executor] = {
            Intent.create_ticket: self._create_ticket,
            Intent.acknowledge: self._acknowledge,
            Intent.resolve: self._resolve,
        }

    async def handle_inbound(self, from_number: str, body: str, message_sid: str) -> None:
        """Understand one stored inbound message, act on it when allowed and answer ``from_number``.

        Never raises: a failure is logged and the engineer is told something went wrong.

        Args:
            from_number: the sender, ``whatsapp:+E164`` (already checked against the on-call numbers).
            body: the message text.
            message_sid: Twilio's MessageSid of the stored inbound row.
        """
        try:
            await self._handle(from_number, body, message_sid)
        except Exception:  # noqa: BLE001 - the engineer must get an answer whatever failed
            log.exception("handling WhatsApp message %s from %s failed", message_sid, from_number)
            try:
                await self._answer(wording.SORRY, None, from_number)
            except Exception:  # noqa: BLE001 - nothing more can be done than logging it
                log.exception("could not even tell %s that their message failed", from_number)

    async def _handle(self, from_number: str, body: str, message_sid: str) -> None:
        reading = understand(body)
        if reading.intent in (Intent.confirm, Intent.decline):
            await self._answer_proposal(reading, from_number, body, message_sid)
            return
        ref = reading.incident_ref
        incident = await self._find_incident(from_number, ref)
        if incident is None:
            missing = f"Incident #{ref} not found." if ref is not None else "There are no incidents yet."
            await self._answer(f"{missing}\n\n{help_text()}", None, from_number)
            return
        incident_id = int(incident["id"])
        async with self.store.write() as conn:
            await messages.link_inbound(conn, message_sid, incident_id)
        event: dict[str, Any] = {"from": from_number, "body": body, "message_sid": message_sid}
        event.update(intent=reading.intent.value, assignee=reading.assignee, engine="parser")
        text = await self._respond(reading, incident, from_number, body, event)
        async with self.store.write() as conn:
            await timeline.add(conn, incident_id, "reply", event)
        await self._answer(text, incident_id, from_number)

    async def _respond(
        self, reading: Understanding, incident: Row, from_number: str, body: str, event: dict[str, Any]
    ) -> str:
        """The answer to one reading (acting first when it is a command); ``event`` gets what was done."""
        incident_id = int(incident["id"])
        arguments = {"assignee": reading.assignee, "force_new": reading.force_new}
        if reading.executable:
            event["done"] = reading.intent.value
            return await self.executors[reading.intent](incident_id, from_number, arguments)
        if reading.intent in SIDE_EFFECTS and reading.negated:
            await self._decline_pending(from_number, incident_id, reading.intent)
            return wording.negation_answer(reading, incident_id)
        if reading.intent in SIDE_EFFECTS:
            event["proposed"] = reading.intent.value
            return await self._propose(reading.intent, arguments, incident, from_number, "parser")
        if reading.intent is Intent.status:
            return actions.status_text(await actions.status(self.store, incident_id, self.public_base_url))
        if reading.intent is Intent.help:
            return help_text(incident_id)
        return await self._unclear(reading, incident, from_number, body, event)

    async def _unclear(
        self, reading: Understanding, incident: Row, from_number: str, body: str, event: dict[str, Any]
    ) -> str:
        """Ask back; with a model, let it answer or propose (a proposal still needs the engineer's YES)."""
        incident_id = int(incident["id"])
        if self.model is None or reading.question is not None:
            return wording.unclear_answer(reading, body, incident_id)

        async def status() -> dict[str, Any]:
            return await actions.status(self.store, incident_id, self.public_base_url)

        model_reading = await self.model.interpret(incident, from_number, body, status)
        event.update(engine=self.model.engine, tools=model_reading.tools)
        if model_reading.proposal is not None:
            proposal = model_reading.proposal
            action = Intent(proposal["action"])
            event["proposed"] = action.value
            arguments = {"assignee": proposal.get("assignee"), "force_new": bool(proposal.get("force_new"))}
            return await self._propose(action, arguments, incident, from_number, self.model.engine)
        if model_reading.text:
            return model_reading.text
        event["engine"] = "parser (model failed)"
        return wording.unclear_answer(reading, body, incident_id)

    async def _propose(
        self, action: Intent, arguments: dict[str, Any], incident: Row, from_number: str, proposed_by: str
    ) -> str:
        """Store the proposal (pending the engineer's YES) and return the question to send."""
        incident_id = int(incident["id"])
        kept = arguments if action is Intent.create_ticket else {}
        question = wording.proposal_question(action, kept, incident_id, alert_name(incident), self.confirmation_ttl_s)
        async with self.store.write() as conn:
            await confirmations.propose(
                conn,
                sender=from_number,
                incident_id=incident_id,
                action=action.value,
                arguments=kept,
                question=question,
                proposed_by=proposed_by,
                now=time.time(),
                ttl_s=self.confirmation_ttl_s,
            )
        return question

    async def _answer_proposal(self, reading: Understanding, from_number: str, body: str, message_sid: str) -> None:
        """A YES executes exactly the stored proposal; a NO cancels it. Only the engineer asked may answer."""
        now = time.time()
        decision = "confirmed" if reading.intent is Intent.confirm else "declined"
        async with self.store.write() as conn:
            pending = await confirmations.latest_pending(conn, from_number, reading.incident_ref, now)
            won = pending is not None and await confirmations.decide(conn, int(pending["id"]), decision, now)
            expired = None if pending is not None else await confirmations.latest_expired(conn, from_number, now)
        if pending is None or not won:
            await self._answer(wording.nothing_pending(expired), None, from_number)
            return
        incident_id = int(pending["incident_id"])
        async with self.store.write() as conn:
            await messages.link_inbound(conn, message_sid, incident_id)
        if decision == "confirmed":
            text = await self.executors[Intent(pending["action"])](incident_id, from_number, pending["arguments"])
        else:
            text = f"OK, cancelled: {pending['question'].split('?')[0]}."
        event = {"from": from_number, "body": body, "message_sid": message_sid, "confirmation_id": pending["id"]}
        event.update(intent=reading.intent.value, action=pending["action"], decision=decision)
        async with self.store.write() as conn:
            await timeline.add(conn, incident_id, "reply", event)
        await self._answer(text, incident_id, from_number)

    async def _decline_pending(self, from_number: str, incident_id: int, action: Intent) -> None:
        """A "don't ..." also cancels a pending proposal of that very action."""
        now = time.time()
        async with self.store.write() as conn:
            pending = await confirmations.latest_pending(conn, from_number, incident_id, now)
            if pending is not None and pending["action"] == action.value:
                await confirmations.decide(conn, int(pending["id"]), "declined", now)

    async def _find_incident(self, from_number: str, ref: int | None) -> Row | None:
        """The incident named ``#ref``, else the sender's latest open one, else the latest open, else the latest."""
        async with self.store.read() as conn:
            if ref is not None:
                return await incidents.get(conn, ref) if 1 <= ref <= MAX_ID else None
            for firing_only, paged in ((True, from_number), (True, None), (False, None)):
                incident_id = await incidents.latest_id(conn, firing_only=firing_only, paged_number=paged)
                if incident_id is not None:
                    return await incidents.get(conn, incident_id)
        return None

    async def _create_ticket(self, incident_id: int, by: str, arguments: dict[str, Any]) -> str:
        result = await self.jira.create_ticket(
            incident_id,
            assignee=arguments.get("assignee"),
            force_new=bool(arguments.get("force_new")),
            notify=[by],  # the confirmation with the issue key follows once Jira has it (the outbox)
        )
        return result.message

    async def _acknowledge(self, incident_id: int, by: str, arguments: dict[str, Any]) -> str:
        return str((await actions.acknowledge(self.store, incident_id, by))["message"])

    async def _resolve(self, incident_id: int, by: str, arguments: dict[str, Any]) -> str:
        return str((await actions.resolve(self.store, incident_id, by))["message"])

    async def _answer(self, text: str, incident_id: int | None, to: str) -> None:
        """Send the answer to the engineer who wrote."""
        await self.sender.send(text, incident_id=incident_id, to=[to])
