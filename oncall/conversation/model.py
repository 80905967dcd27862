"""Engineer replies interpreted by the model: function calling over the reply tools.

Tools: ``create_jira_ticket``, ``acknowledge_incident``, ``resolve_incident`` and
``get_incident_status``, bound to one incident and the engineer who wrote. Every tool call goes to
the incident's audit trail (``tool_calls`` rows without an investigation).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import openai
from pydantic import BaseModel, ConfigDict, Field

from oncall.investigate.engines.model import engine_name
from oncall.investigate.toolloop import ToolCallRecord, ToolSpec, audit_values, run_model_loop
from oncall.store import investigations
from oncall.store.database import Store
from oncall.store.rows import Row

log = logging.getLogger("oncall.conversation")

ACTION_TOOLS = ("create_jira_ticket", "acknowledge_incident", "resolve_incident")
REPLY_TOOL_TIMEOUT_S = 30.0


class CreateTicketArgs(BaseModel):
    """Arguments of ``create_jira_ticket``."""

    model_config = ConfigDict(extra="forbid")

    assignee: str | None = Field(
        default=None,
        description="Person to assign, exactly as the engineer wrote it (e.g. 'Ravi'); null for unassigned. "
        "Never guess a full name.",
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


@dataclass(frozen=True)
class ReplyActions:
    """What the reply tools do, bound to one incident and one engineer."""

    create_ticket: Callable[[str | None, str | None, bool], Awaitable[dict[str, Any]]]
    acknowledge: Callable[[str | None], Awaitable[dict[str, Any]]]
    resolve: Callable[[str | None], Awaitable[dict[str, Any]]]
    status: Callable[[], Awaitable[dict[str, Any]]]


def reply_tools(act: ReplyActions) -> list[ToolSpec]:
    """The reply ToolSpecs performing ``act``."""

    async def create_jira_ticket(args: CreateTicketArgs) -> dict[str, Any]:
        return await act.create_ticket(args.assignee, args.summary, args.force_new)

    async def acknowledge_incident(args: NoteArgs) -> dict[str, Any]:
        return await act.acknowledge(args.note)

    async def resolve_incident(args: NoteArgs) -> dict[str, Any]:
        return await act.resolve(args.note)

    async def get_incident_status(args: NoArgs) -> dict[str, Any]:
        return await act.status()

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


def reply_messages(context: dict[str, Any], from_number: str, body: str) -> list[dict[str, Any]]:
    """System prompt with the incident context (``actions.status``, compact JSON), and the engineer's reply."""
    context_json = json.dumps(context, separators=(",", ":"), ensure_ascii=False, default=str)
    system = (
        "You are an on-call assistant answering an engineer on WhatsApp about one incident. "
        "Decide what the engineer wants and do it with the tools: create_jira_ticket only when they ask for a "
        "ticket/task/issue (pass the assignee name exactly as written, never invent one), acknowledge_incident for "
        "'ack'/'on it', resolve_incident only when they say it is resolved, get_incident_status for questions. "
        "Then answer with one or two short plain sentences for WhatsApp. If the request is unclear, say what you can "
        "do (create a Jira ticket and assign it, acknowledge, resolve, status).\n"
        f"Engineer: {from_number}\nIncident context (JSON): {context_json}"
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": body}]


class ReplyModel:
    """Interprets replies with the model.

    Args:
        client: the model client.
        store: the agent database (audit trail).
        model: model name; temperature 0-2; max_rounds: most rounds per reply; max_output_chars: tool output kept.
    """

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        store: Store,
        *,
        model: str,
        temperature: float,
        max_rounds: int,
        max_output_chars: int,
    ) -> None:
        self.client = client
        self.store = store
        self.model = model
        self.temperature = temperature
        self.max_rounds = max_rounds
        self.max_output_chars = max_output_chars
        self.engine = engine_name(model)

    async def interpret(
        self, incident: Row, from_number: str, body: str, act: ReplyActions
    ) -> tuple[str | None, list[str]]:
        """Run the reply through the model; returns (confirmation, or None to fall back to the offline
        parser, and the tools called)."""
        incident_id = int(incident["id"])
        records: list[ToolCallRecord] = []

        async def on_record(round_records: list[ToolCallRecord]) -> None:
            records.extend(round_records)
            async with self.store.write() as conn:
                for record in round_records:
                    await investigations.add_tool_call(
                        conn, audit_values(record, incident_id, None, self.max_output_chars)
                    )

        try:
            outcome = await run_model_loop(
                self.client,
                model=self.model,
                temperature=self.temperature,
                messages=reply_messages(await act.status(), from_number, body),
                tools=reply_tools(act),
                max_rounds=self.max_rounds,
                max_output_chars=self.max_output_chars,
                on_record=on_record,
            )
        except (openai.OpenAIError, TimeoutError) as exc:
            log.warning(
                "model failed on the reply for incident %s (%s); using the offline parser",
                incident_id,
                type(exc).__name__,
            )
            outcome = None
        done = [
            r.result["message"]
            for r in records
            if r.ok and r.tool in ACTION_TOOLS and isinstance(r.result, dict) and r.result.get("message")
        ]
        called = [r.tool for r in records]
        if done:  # facts from the tools, not the model's paraphrase of them
            return "\n".join(done), called
        if outcome is not None and outcome.final_text and outcome.final_text.strip():
            return outcome.final_text.strip(), called
        return None, called
