"""Engineer replies the deterministic reading found unclear, interpreted by the model: it may explain,
and it may **propose** an action, never carry one out.

Tools: ``get_incident_status`` (read-only) and the terminal ``propose_action``
(``create_ticket`` / ``acknowledge`` / ``resolve`` with its arguments). A proposal becomes a pending
confirmation that the engineer must answer YES to (``oncall.conversation.handler``), so neither the
model nor text injected into what it reads can trigger a side effect. The incident context is fenced
as untrusted data in the system prompt. Every tool call goes to the incident's audit trail
(``tool_calls`` rows without an investigation).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import openai
from pydantic import BaseModel, ConfigDict, Field

from oncall.investigate.engines.model import build_client, engine_name
from oncall.investigate.fencing import FENCE_RULES, fence
from oncall.investigate.toolloop import ToolCallRecord, ToolSpec, audit_values, run_model_loop
from oncall.redaction import Redactor
from oncall.settings import Settings
from oncall.store import investigations
from oncall.store.database import Store
from oncall.store.rows import Row

log = logging.getLogger("oncall.conversation")

REPLY_TOOL_TIMEOUT_S = 30.0


class ProposeArgs(BaseModel):
    """Arguments of ``propose_action``: what the agent should offer the engineer to do (they confirm with YES)."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["create_ticket", "acknowledge", "resolve"] = Field(description="The action to propose.")
    assignee: str | None = Field(
        default=None,
        max_length=80,
        description="create_ticket only: the person to assign, exactly as the engineer wrote it; null for unassigned.",
    )
    force_new: bool = Field(default=False, description="create_ticket only: another ticket although one exists.")


class NoArgs(BaseModel):
    """``get_incident_status`` takes no arguments."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ModelReading:
    """What the model made of a reply: a ``text`` answer, a ``proposal`` (``ProposeArgs`` as a dict) or
    neither (None when the model failed), and the tools it called."""

    text: str | None
    proposal: dict[str, Any] | None = None
    tools: list[str] = field(default_factory=list)


def reply_tools(status: Callable[[], Awaitable[dict[str, Any]]], redact: Redactor) -> list[ToolSpec]:
    """The reply ToolSpecs: the read-only status and the terminal proposal (which changes nothing)."""

    async def get_incident_status(args: NoArgs) -> dict[str, Any]:
        return await status()

    async def propose_action(args: ProposeArgs) -> dict[str, Any]:
        return {"proposed": args.model_dump(), "note": "the engineer is asked to confirm; nothing was done"}

    return [
        ToolSpec(
            "get_incident_status",
            "Current state of the incident: status, acknowledgement, diagnosis, ticket.",
            NoArgs,
            get_incident_status,
            REPLY_TOOL_TIMEOUT_S,
            redact=redact,
        ),
        ToolSpec(
            "propose_action",
            "Propose ONE action the engineer seems to want (create_ticket, acknowledge, resolve). It does not act: "
            "the engineer is asked to reply YES first. Ends the conversation turn.",
            ProposeArgs,
            propose_action,
            REPLY_TOOL_TIMEOUT_S,
            terminal=True,
            redact=redact,
        ),
    ]


def reply_messages(context: dict[str, Any], from_number: str, body: str) -> list[dict[str, Any]]:
    """System prompt with the incident context (``actions.status``, compact JSON, fenced), and the reply."""
    context_json = json.dumps(context, separators=(",", ":"), ensure_ascii=False, default=str)
    system = (
        "You are an on-call assistant answering an engineer on WhatsApp about one incident. Their message was not "
        "understood as a plain command. You cannot change anything yourself. If they seem to want a Jira ticket, an "
        "acknowledgement or the incident resolved, call propose_action once (pass an assignee name exactly as they "
        "wrote it, never invent one); they will be asked to confirm. For questions, use get_incident_status and "
        "answer in one or two short plain sentences for WhatsApp. If it is unclear, ask what they want (I can "
        "create a Jira ticket and assign it, acknowledge, resolve, or give the status).\n"
        f"{FENCE_RULES}\n"
        f"Engineer: {from_number}\nIncident context:\n{fence(context_json, 'incident record')}"
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": body}]


class ReplyModel:
    """Interprets unclear replies with the model (see the module docstring).

    Args:
        client: the model client.
        store: the agent database (audit trail).
        model: model name; temperature 0-2; max_rounds: most rounds per reply; max_output_chars: tool output kept.
        redact: cleans tool output (default: secret-shaped strings only).
    """

    @classmethod
    def from_settings(cls, settings: Settings, store: Store, redact: Redactor) -> ReplyModel | None:
        """The reply model configured by the settings (``OPENAI_*``, ``LLM_TEMPERATURE``, ``REPLY_MAX_ROUNDS``,
        ``TOOL_OUTPUT_MAX_CHARS``), or None when no model is configured (deterministic reading only)."""
        if not settings.llm_enabled:
            return None
        return cls(
            build_client(settings),
            store,
            model=settings.openai_model,
            temperature=settings.llm_temperature,
            max_rounds=settings.reply_max_rounds,
            max_output_chars=settings.tool_output_max_chars,
            redact=redact,
        )

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        store: Store,
        *,
        model: str,
        temperature: float,
        max_rounds: int,
        max_output_chars: int,
        redact: Redactor | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.model = model
        self.temperature = temperature
        self.max_rounds = max_rounds
        self.max_output_chars = max_output_chars
        self.redact = redact or Redactor()
        self.engine = engine_name(model)

    async def interpret(
        self, incident: Row, from_number: str, body: str, status: Callable[[], Awaitable[dict[str, Any]]]
    ) -> ModelReading:
        """Run the reply through the model; ``ModelReading(None)`` when the model failed."""
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
                messages=reply_messages(await status(), from_number, body),
                tools=reply_tools(status, self.redact),
                max_rounds=self.max_rounds,
                max_output_chars=self.max_output_chars,
                on_record=on_record,
            )
        except (openai.OpenAIError, TimeoutError) as exc:
            log.warning("model failed on the reply for incident %s (%s)", incident_id, type(exc).__name__)
            return ModelReading(None, tools=[r.tool for r in records])
        called = [r.tool for r in records]
        if outcome.terminal is not None:
            return ModelReading(outcome.final_text, outcome.terminal.result["proposed"], called)
        text = outcome.final_text.strip() if outcome.final_text and outcome.final_text.strip() else None
        return ModelReading(text, None, called)
