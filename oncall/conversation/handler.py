"""The WhatsApp conversation: interpret an on-call engineer's reply in the context of an incident,
act on it (Jira ticket, acknowledge, resolve, status) and confirm on WhatsApp.

The incident is the one named (``#12``), else the sender's latest open incident, else the latest open
one, else the latest. The reply is interpreted by the model through the function-calling loop
(``oncall.conversation.model``) when a model is configured, otherwise (or when the model fails) by
the offline plain-language parser (``oncall.conversation.parser``).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from oncall.channels.jira.client import JiraClient
from oncall.conversation.model import ReplyActions, ReplyModel
from oncall.conversation.parser import INCIDENT_REF, ParsedReply, ReplyAction, help_text, parse_reply
from oncall.incidents import actions
from oncall.store import incidents, messages, timeline
from oncall.store.database import Store
from oncall.store.rows import Row

log = logging.getLogger("oncall.conversation")


class SendsMessages(Protocol):
    """What the handler needs from ``oncall.channels.whatsapp.sender.WhatsAppSender``."""

    async def send(self, body: str, *, incident_id: int | None, to: list[str] | None = None) -> list[int]: ...


class ConversationHandler:
    """Handles inbound WhatsApp replies (see module docstring).

    Args:
        store: the agent database.
        sender: sends the confirmations.
        jira: creates (or drafts) tickets.
        public_base_url: the agent's public URL, for incident links.
        model: interprets replies with the model, or None for the offline parser only.
    """

    def __init__(
        self, store: Store, sender: SendsMessages, jira: JiraClient, public_base_url: str, model: ReplyModel | None
    ) -> None:
        self.store = store
        self.sender = sender
        self.jira = jira
        self.public_base_url = public_base_url
        self.model = model

    async def handle_inbound(self, from_number: str, body: str, message_sid: str) -> None:
        """Interpret one stored inbound message, act on it and confirm to ``from_number`` on WhatsApp.

        Args:
            from_number: the sender, ``whatsapp:+E164`` (already checked against the on-call numbers).
            body: the message text.
            message_sid: Twilio's MessageSid of the stored inbound row.
        """
        ref = INCIDENT_REF.search(body)
        incident = await self._find_incident(from_number, int(ref[1]) if ref else None)
        if incident is None:
            missing = f"Incident #{ref[1]} not found." if ref else "There are no incidents yet."
            await self._confirm(f"{missing}\n\n{help_text()}", None, from_number)
            return
        incident_id = int(incident["id"])
        async with self.store.write() as conn:
            await messages.link_inbound(conn, message_sid, incident_id)

        event: dict[str, Any] = {"from": from_number, "body": body, "message_sid": message_sid, "engine": "offline"}
        text: str | None = None
        if self.model is not None:
            text, tools_called = await self.model.interpret(
                incident, from_number, body, self.tool_actions(incident_id, from_number)
            )
            event["tools"] = tools_called
            event["engine"] = self.model.engine if text is not None else "offline (model failed)"
        if text is None:
            parsed = parse_reply(body)
            text = await self._perform(parsed, incident_id, from_number, body)
            event.update(action=parsed.action.value, assignee=parsed.assignee)
        async with self.store.write() as conn:
            await timeline.add(conn, incident_id, "reply", event)
        await self._confirm(text, incident_id, from_number)

    async def _find_incident(self, from_number: str, ref: int | None) -> Row | None:
        """The incident named ``#ref``, else the sender's latest open one, else the latest open, else the latest."""
        async with self.store.read() as conn:
            if ref is not None:
                return await incidents.get(conn, ref)
            for firing_only, paged in ((True, from_number), (True, None), (False, None)):
                incident_id = await incidents.latest_id(conn, firing_only=firing_only, paged_number=paged)
                if incident_id is not None:
                    return await incidents.get(conn, incident_id)
        return None

    async def _perform(self, parsed: ParsedReply, incident_id: int, from_number: str, body: str) -> str:
        """Carry out a parsed reply and return the confirmation text."""
        if parsed.action is ReplyAction.create_ticket:
            result = await self.jira.create_ticket(
                incident_id, assignee=parsed.assignee, force_new=parsed.force_new, notify=[from_number]
            )
            return result.message
        if parsed.action is ReplyAction.acknowledge:
            return str((await actions.acknowledge(self.store, incident_id, from_number))["message"])
        if parsed.action is ReplyAction.resolve:
            return str((await actions.resolve(self.store, incident_id, from_number))["message"])
        if parsed.action is ReplyAction.status:
            return actions.status_text(await actions.status(self.store, incident_id, self.public_base_url))
        prefix = "" if parsed.understood else f'Sorry, I did not understand "{" ".join(body.split())[:80]}".\n\n'
        return prefix + help_text(incident_id)

    def tool_actions(self, incident_id: int, from_number: str) -> ReplyActions:
        """The actions the model's reply tools perform, bound to the incident and the sender."""

        async def create_ticket(assignee: str | None, summary: str | None, force_new: bool) -> dict[str, Any]:
            result = await self.jira.create_ticket(
                incident_id, assignee=assignee, summary=summary, force_new=force_new, notify=[from_number]
            )
            return result.model_dump(exclude_none=True)

        async def acknowledge(note: str | None) -> dict[str, Any]:
            return await actions.acknowledge(self.store, incident_id, from_number, note)

        async def resolve(note: str | None) -> dict[str, Any]:
            return await actions.resolve(self.store, incident_id, from_number, note)

        async def status() -> dict[str, Any]:
            return await actions.status(self.store, incident_id, self.public_base_url)

        return ReplyActions(create_ticket=create_ticket, acknowledge=acknowledge, resolve=resolve, status=status)

    async def _confirm(self, text: str, incident_id: int | None, to: str) -> None:
        """Send the confirmation to the engineer who wrote."""
        await self.sender.send(text, incident_id=incident_id, to=[to])
