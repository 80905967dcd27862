"""The WhatsApp conversation: interpret an on-call engineer's reply in the context of an incident,
act on it (Jira ticket, acknowledge, resolve, status) and confirm on WhatsApp.

The incident is the one named (``#12``), else the sender's latest open incident, else the latest open
one, else the latest. The reply is interpreted by the model through the function-calling loop
(``oncall.toolloop.run_model_loop``, at most ``REPLY_MAX_ROUNDS`` rounds) when a model is configured,
otherwise (or when the model fails) by the offline plain-language parser (``oncall.reply_parser``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import openai
from pydantic import BaseModel, ConfigDict, Field

from oncall.db import add_timeline, dumps, get_incident
from oncall.ingest import count_open_incidents
from oncall.llm_engine import build_client
from oncall.metrics import INCIDENTS_OPEN
from oncall.reply_parser import INCIDENT_REF, ParsedReply, ReplyAction, help_text, parse_reply
from oncall.toolloop import ToolCallRecord, ToolSpec, run_model_loop, store_tool_call
from oncall.whatsapp_format import alert_name, format_duration, incident_url

if TYPE_CHECKING:
    from oncall.runtime import AgentRuntime

log = logging.getLogger("oncall.conversation")

ACTION_TOOLS = ("create_jira_ticket", "acknowledge_incident", "resolve_incident")
REPLY_TOOL_TIMEOUT_S = 30.0


class CreateTicketArgs(BaseModel):
    """Arguments of ``create_jira_ticket``."""

    model_config = ConfigDict(extra="forbid")

    assignee: str | None = Field(
        default=None,
        description="Person to assign, exactly as the engineer wrote it (e.g. 'Ravi'); null for unassigned. Never guess a full name.",
    )
    summary: str | None = Field(
        default=None, max_length=255, description="Issue summary; null to use the diagnosis summary."
    )
    force_new: bool = Field(
        default=False,
        description="True only when the engineer explicitly asks for another/new ticket although one exists.",
    )


class NoteArgs(BaseModel):
    """Arguments of ``acknowledge_incident`` and ``resolve_incident``."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=500, description="Optional note from the engineer.")


class NoArgs(BaseModel):
    """``get_incident_status`` takes no arguments."""

    model_config = ConfigDict(extra="forbid")


class ConversationHandler:
    """Handles inbound WhatsApp replies (see module docstring).

    Args:
        runtime: the agent runtime; uses ``db``, ``settings``, ``notifier`` and ``jira``.
        llm_client: an ``openai.AsyncOpenAI``; built from settings when None and a model is configured.
    """

    def __init__(self, runtime: AgentRuntime, llm_client: openai.AsyncOpenAI | None = None) -> None:
        self.runtime = runtime
        settings = runtime.settings
        if llm_client is None and settings.llm_enabled:
            llm_client = build_client(settings)
        self.llm = llm_client

    async def handle_inbound(self, from_number: str, body: str, message_sid: str) -> None:
        """Interpret one stored inbound message, act on it and confirm to ``from_number`` on WhatsApp.

        Args:
            from_number: the sender, ``whatsapp:+E164`` (already checked against the on-call numbers).
            body: the message text.
            message_sid: Twilio's MessageSid of the stored inbound row.
        """
        db = self.runtime.db
        ref = INCIDENT_REF.search(body)
        incident = self._find_incident(from_number, int(ref[1]) if ref else None)
        if incident is None:
            missing = f"Incident #{ref[1]} not found." if ref else "There are no incidents yet."
            await self._confirm(f"{missing}\n\n{help_text()}", None, from_number)
            return
        incident_id = int(incident["id"])
        db.execute("UPDATE messages SET incident_id = ? WHERE message_sid = ?", (incident_id, message_sid))

        event: dict[str, Any] = {"from": from_number, "body": body, "message_sid": message_sid, "engine": "offline"}
        text: str | None = None
        if self.llm is not None:
            text, tools_called = await self._interpret_with_model(incident, from_number, body)
            event["tools"] = tools_called
            event["engine"] = (
                f"openai:{self.runtime.settings.openai_model}" if text is not None else "offline (model failed)"
            )
        if text is None:
            parsed = parse_reply(body)
            text = await self._perform(parsed, incident_id, from_number, body)
            event.update(action=parsed.action.value, assignee=parsed.assignee)
        add_timeline(db, incident_id, "reply", event)
        await self._confirm(text, incident_id, from_number)

    # --- incident lookup -------------------------------------------------------------------------

    def _find_incident(self, from_number: str, ref: int | None) -> dict[str, Any] | None:
        """The incident named ``#ref``, else the sender's latest open one, else the latest open, else the latest."""
        db = self.runtime.db
        if ref is not None:
            return get_incident(db, ref)
        for sql, params in (
            (
                "SELECT i.id FROM incidents i WHERE i.status = 'firing' AND EXISTS (SELECT 1 FROM messages m WHERE m.incident_id = i.id"
                " AND m.direction = 'out' AND m.to_number IN (?, 'console')) ORDER BY i.id DESC LIMIT 1",
                (from_number,),
            ),
            ("SELECT id FROM incidents WHERE status = 'firing' ORDER BY id DESC LIMIT 1", ()),
            ("SELECT id FROM incidents ORDER BY id DESC LIMIT 1", ()),
        ):
            row = db.query_one(sql, params)
            if row is not None:
                return get_incident(db, int(row["id"]))
        return None

    # --- actions (shared by the offline parser and the model's tools) ----------------------------

    async def _perform(self, parsed: ParsedReply, incident_id: int, from_number: str, body: str) -> str:
        """Carry out a parsed reply and return the confirmation text."""
        if parsed.action is ReplyAction.create_ticket:
            return await self._ticket(incident_id, parsed.assignee, None, parsed.force_new)
        if parsed.action is ReplyAction.acknowledge:
            return self.acknowledge(incident_id, from_number)["message"]
        if parsed.action is ReplyAction.resolve:
            return self.resolve(incident_id, from_number)["message"]
        if parsed.action is ReplyAction.status:
            return self.status_text(incident_id)
        prefix = "" if parsed.understood else f'Sorry, I did not understand "{" ".join(body.split())[:80]}".\n\n'
        return prefix + help_text(incident_id)

    async def _ticket(self, incident_id: int, assignee: str | None, summary: str | None, force_new: bool) -> str:
        if self.runtime.jira is None:
            return "Jira tickets are not available (no Jira client configured in the agent)."
        result = await self.runtime.jira.create_ticket(
            incident_id, assignee=assignee, summary=summary, force_new=force_new
        )
        return result.message

    def acknowledge(self, incident_id: int, by: str, note: str | None = None) -> dict[str, Any]:
        """Set ``incidents.acknowledged_at/by`` (first acknowledgement wins); returns ``{"acknowledged", "message"}``."""
        db = self.runtime.db
        incident = get_incident(db, incident_id)
        assert incident is not None
        if incident["acknowledged_at"]:
            ago = format_duration(time.time() - incident["acknowledged_at"])
            return {
                "acknowledged": True,
                "already": True,
                "message": f"#{incident_id} was already acknowledged by {incident['acknowledged_by']} {ago} ago.",
            }
        now = time.time()
        db.execute(
            "UPDATE incidents SET acknowledged_at = ?, acknowledged_by = ?, updated_at = ? WHERE id = ?",
            (now, by, now, incident_id),
        )
        add_timeline(db, incident_id, "acknowledged", {"by": by, "note": note})
        return {
            "acknowledged": True,
            "already": False,
            "message": f"👍 #{incident_id} {alert_name(incident)} acknowledged by {by}.",
        }

    def resolve(self, incident_id: int, by: str, note: str | None = None) -> dict[str, Any]:
        """Mark the incident resolved by hand (``status``, ``resolved_at``); returns ``{"resolved", "message"}``."""
        db = self.runtime.db
        incident = get_incident(db, incident_id)
        assert incident is not None
        if incident["status"] == "resolved":
            return {"resolved": True, "already": True, "message": f"#{incident_id} is already resolved."}
        now = time.time()
        db.execute(
            "UPDATE incidents SET status = 'resolved', resolved_at = ?, updated_at = ? WHERE id = ?",
            (now, now, incident_id),
        )
        add_timeline(db, incident_id, "resolved", {"by": by, "manual": True, "note": note})
        INCIDENTS_OPEN.set(count_open_incidents(db))
        duration = format_duration(now - incident["created_at"])
        return {
            "resolved": True,
            "already": False,
            "message": f"✅ #{incident_id} {alert_name(incident)} marked resolved by {by} after {duration}.",
        }

    def status(self, incident_id: int) -> dict[str, Any]:
        """The incident's state for the model: status, acknowledgement, diagnosis essentials, latest ticket."""
        db = self.runtime.db
        incident = get_incident(db, incident_id)
        assert incident is not None
        ticket = db.query_one(
            "SELECT status, jira_key, url, error FROM tickets WHERE incident_id = ? ORDER BY id DESC LIMIT 1",
            (incident_id,),
        )
        diagnosis = incident["diagnosis"] or {}
        return {
            "incident_id": incident_id,
            "alert": alert_name(incident),
            "status": incident["status"],
            "open_for": format_duration((incident["resolved_at"] or time.time()) - incident["created_at"]),
            "acknowledged_by": incident["acknowledged_by"],
            "investigation_status": incident["investigation_status"],
            "diagnosis": {
                key: diagnosis.get(key)
                for key in (
                    "summary",
                    "fault_type",
                    "affected_replicas",
                    "affected_file",
                    "affected_line",
                    "priority",
                    "confidence",
                    "suggested_fix",
                )
            }
            if diagnosis
            else None,
            "ticket": ticket,
            "url": incident_url(self.runtime.settings.public_base_url, incident_id),
        }

    def status_text(self, incident_id: int) -> str:
        """The status as a short WhatsApp message."""
        state = self.status(incident_id)
        lines = [f"*#{incident_id} {state['alert']}*: {state['status']} ({state['open_for']})"]
        lines.append(
            f"Acknowledged by {state['acknowledged_by']}" if state["acknowledged_by"] else "Not acknowledged yet"
        )
        diagnosis = state["diagnosis"]
        if diagnosis:
            where = (
                f" at {diagnosis['affected_file']}:{diagnosis['affected_line']}"
                if diagnosis.get("affected_file")
                else ""
            )
            replicas = ", ".join(diagnosis.get("affected_replicas") or []) or "no replica identified"
            lines.append(f"Diagnosis: {diagnosis['fault_type']} ({diagnosis['priority']}) on {replicas}{where}")
            lines.append(str(diagnosis["summary"]))
        else:
            lines.append(f"Investigation: {state['investigation_status']}")
        ticket = state["ticket"]
        if ticket:
            lines.append(
                f"Ticket: {ticket['jira_key']} {ticket['url']}"
                if ticket["status"] == "created"
                else f"Ticket: {ticket['status']}"
            )
        lines.append(state["url"])
        return "\n".join(lines)

    # --- model path ------------------------------------------------------------------------------

    def _tools(self, incident_id: int, from_number: str) -> list[ToolSpec]:
        """The reply tools, bound to the incident and the sender."""

        async def create_jira_ticket(args: CreateTicketArgs) -> dict[str, Any]:
            if self.runtime.jira is None:
                return {
                    "status": "unavailable",
                    "message": "Jira tickets are not available (no Jira client configured in the agent).",
                }
            result = await self.runtime.jira.create_ticket(
                incident_id, assignee=args.assignee, summary=args.summary, force_new=args.force_new
            )
            return result.model_dump(exclude_none=True)

        async def acknowledge_incident(args: NoteArgs) -> dict[str, Any]:
            return self.acknowledge(incident_id, from_number, args.note)

        async def resolve_incident(args: NoteArgs) -> dict[str, Any]:
            return self.resolve(incident_id, from_number, args.note)

        async def get_incident_status(args: NoArgs) -> dict[str, Any]:
            return self.status(incident_id)

        return [
            ToolSpec(
                "create_jira_ticket",
                "Create a Jira issue for this incident (only when the engineer asks for a ticket/task/issue). "
                "The assignee name is resolved in Jira; ambiguous or unknown names are reported back, not guessed.",
                CreateTicketArgs,
                create_jira_ticket,
                REPLY_TOOL_TIMEOUT_S,
            ),
            ToolSpec(
                "acknowledge_incident",
                "Acknowledge the incident on behalf of the engineer who replied ('ack', 'on it').",
                NoteArgs,
                acknowledge_incident,
                REPLY_TOOL_TIMEOUT_S,
            ),
            ToolSpec(
                "resolve_incident",
                "Mark the incident resolved (only when the engineer says it is resolved/fixed).",
                NoteArgs,
                resolve_incident,
                REPLY_TOOL_TIMEOUT_S,
            ),
            ToolSpec(
                "get_incident_status",
                "Current state of the incident: status, acknowledgement, diagnosis, ticket.",
                NoArgs,
                get_incident_status,
                REPLY_TOOL_TIMEOUT_S,
            ),
        ]

    def _messages(self, incident: dict[str, Any], from_number: str, body: str) -> list[dict]:
        """System prompt with the incident context, and the engineer's reply."""
        context = self.status(int(incident["id"]))
        system = (
            "You are an on-call assistant answering an engineer on WhatsApp about one incident. "
            "Decide what the engineer wants and do it with the tools: create_jira_ticket only when they ask for a ticket/task/issue "
            "(pass the assignee name exactly as written, never invent one), acknowledge_incident for 'ack'/'on it', "
            "resolve_incident only when they say it is resolved, get_incident_status for questions. "
            "Then answer with one or two short plain sentences for WhatsApp. If the request is unclear, say what you can do "
            "(create a Jira ticket and assign it, acknowledge, resolve, status).\n"
            f"Engineer: {from_number}\nIncident context (JSON): {dumps(context)}"
        )
        return [{"role": "system", "content": system}, {"role": "user", "content": body}]

    async def _interpret_with_model(
        self, incident: dict[str, Any], from_number: str, body: str
    ) -> tuple[str | None, list[str]]:
        """Run the reply through the model; returns (confirmation or None to fall back to the offline parser, tools called)."""
        assert self.llm is not None
        settings = self.runtime.settings
        incident_id = int(incident["id"])
        records: list[ToolCallRecord] = []

        def on_record(record: ToolCallRecord) -> None:
            records.append(record)
            store_tool_call(self.runtime.db, incident_id, None, record, settings.tool_output_max_chars)

        try:
            outcome = await run_model_loop(
                self.llm,
                model=settings.openai_model,
                temperature=settings.llm_temperature,
                messages=self._messages(incident, from_number, body),
                tools=self._tools(incident_id, from_number),
                max_rounds=settings.reply_max_rounds,
                max_output_chars=settings.tool_output_max_chars,
                on_record=on_record,
            )
        except (openai.OpenAIError, TimeoutError) as exc:
            log.warning(
                "model failed on the reply for incident %s (%s); using the offline parser",
                incident_id,
                type(exc).__name__,
            )
            outcome = None
        actions = [
            r.result["message"]
            for r in records
            if r.ok and r.tool in ACTION_TOOLS and isinstance(r.result, dict) and r.result.get("message")
        ]
        called = [r.tool for r in records]
        if actions:  # facts from the tools, not the model's paraphrase of them
            return "\n".join(actions), called
        if outcome is not None and outcome.final_text and outcome.final_text.strip():
            return outcome.final_text.strip(), called
        return None, called

    async def _confirm(self, text: str, incident_id: int | None, to: str) -> None:
        """Send the confirmation to the engineer who wrote."""
        if self.runtime.notifier is None:
            log.error("no notifier configured; reply to %s not sent: %s", to, text)
            return
        await self.runtime.notifier.send(text, incident_id=incident_id, to=[to])
