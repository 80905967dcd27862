"""The function-calling loop shared by the investigation and the WhatsApp reply conversation.

Protocol facts (OpenAI Chat Completions with tools): the request carries ``tools`` as
``[{"type": "function", "function": {"name", "description", "parameters": <JSON schema>}}]``;
an assistant message may hold several ``tool_calls`` (``id``, ``function.name``,
``function.arguments`` as JSON text); each call is answered by one ``{"role": "tool",
"tool_call_id": id, "content": text}`` message before the next request.

Every tool call of a round runs concurrently (``asyncio.gather``), each under its own timeout.
A call never raises: unknown tool, invalid JSON, schema violations, handler exceptions and
timeouts all become an error record whose message is fed back to the model.

A tool's result and error text pass its spec's redactor before anything else sees them (the audit
trail, the offline engine, the model), and the model gets each result fenced as untrusted data
(``oncall.investigate.fencing``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import openai
from pydantic import BaseModel, ValidationError

from oncall.investigate.fencing import fence
from oncall.metrics import LLM_TOKENS, TOOL_CALL_SECONDS
from oncall.redaction import Redactor

log = logging.getLogger("oncall.toolloop")


_SHAPES_ONLY = Redactor()


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call.

    ``args_model`` validates the arguments (its JSON schema is what the model sees);
    ``handler`` gets the validated model and returns a JSON-serialisable result or raises;
    ``timeout_s`` bounds one call (seconds); a successful call of a ``terminal`` tool ends the loop.
    ``redact`` cleans the result and the error text (default: secret-shaped strings only; the agent
    gives every tool a ``Redactor`` of its configured secrets, ``oncall.investigate.guard``).
    """

    name: str
    description: str
    args_model: type[BaseModel]
    handler: Callable[[Any], Awaitable[Any]]
    timeout_s: float
    terminal: bool = False
    redact: Redactor = _SHAPES_ONLY


@dataclass
class ToolCallRecord:
    """One executed tool call (the audit-trail row).

    ``arguments`` is the raw JSON text as sent; ``started_at`` is epoch seconds, ``duration_s``
    wall seconds; ``result`` is set when ``ok``, ``error`` (a message the model can act on) when not;
    ``parsed`` holds the validated arguments when they validated.
    """

    round: int
    call_id: str
    tool: str
    arguments: str
    ok: bool
    result: Any
    error: str | None
    started_at: float
    duration_s: float
    parsed: BaseModel | None = None


RecordSink = Callable[[list[ToolCallRecord]], Awaitable[None]]
"""Receives each round's tool call records as soon as the round finishes (the audit trail writer)."""


@dataclass
class LoopOutcome:
    """How a model loop ended: ``terminal`` is the successful terminal call (or None when the model
    answered in plain text, ``final_text``, or ``max_rounds`` ran out); tokens are summed over rounds."""

    terminal: ToolCallRecord | None
    rounds: int
    prompt_tokens: int
    completion_tokens: int
    final_text: str | None


def with_redactor(tools: Mapping[str, ToolSpec], redact: Redactor) -> dict[str, ToolSpec]:
    """The same tools, each cleaning its result and error text with ``redact``."""
    return {name: replace(spec, redact=redact) for name, spec in tools.items()}


def openai_tool_schemas(tools: Sequence[ToolSpec]) -> list[dict]:
    """Return the Chat Completions ``tools`` parameter for ``tools`` (function tools, pydantic JSON schemas)."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.args_model.model_json_schema()},
        }
        for t in tools
    ]


def cap_text(text: str, max_chars: int) -> str:
    """Cut ``text`` to ``max_chars`` characters, ending with a visible ``...[truncated N chars]`` marker."""
    if len(text) <= max_chars:
        return text
    return f"{text[:max_chars]}...[truncated {len(text) - max_chars} chars]"


def result_json(record: ToolCallRecord) -> str:
    """JSON text of a record's outcome: the result when ok, else ``{"error": message}``."""
    payload = record.result if record.ok else {"error": record.error}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str)


def tool_message(record: ToolCallRecord, max_output_chars: int) -> dict:
    """The ``role: tool`` message answering ``record``: its outcome capped at ``max_output_chars`` and
    fenced as untrusted data."""
    content = fence(cap_text(result_json(record), max_output_chars), f"{record.tool} output")
    return {"role": "tool", "tool_call_id": record.call_id, "content": content}


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(arguments)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def _parse_arguments(spec: ToolSpec, raw_args: str) -> tuple[BaseModel | None, str | None]:
    """``(validated arguments, None)`` or ``(None, an error message the model can act on)``."""
    name = spec.name
    try:
        data = json.loads(raw_args) if raw_args and raw_args.strip() else {}
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    except ValueError as exc:
        return (
            None,
            f"invalid JSON arguments for {name}: {exc}. Send a JSON object matching the tool's parameters schema.",
        )
    try:
        return spec.args_model.model_validate(data), None
    except ValidationError as exc:
        return (
            None,
            f"arguments for {name} do not match the schema: {_validation_message(exc)}. Fix them and call again.",
        )


async def _run_handler(spec: ToolSpec, parsed: BaseModel) -> tuple[Any, str | None]:
    """``(result, None)`` or ``(None, error)``; the result and the error are redacted with the spec's redactor."""
    try:
        async with asyncio.timeout(spec.timeout_s):
            return spec.redact.value(await spec.handler(parsed)), None
    except TimeoutError:
        return None, f"{spec.name} timed out after {spec.timeout_s:g} s"
    except Exception as exc:  # noqa: BLE001 - a failing tool becomes an error result, never an abort
        return None, spec.redact(f"{spec.name} failed: {type(exc).__name__}: {exc}")


async def _execute_one(
    call_id: str, name: str, raw_args: str, tools: Mapping[str, ToolSpec], round_no: int
) -> ToolCallRecord:
    started_at = time.time()
    t0 = time.perf_counter()
    parsed: BaseModel | None = None
    result: Any = None
    spec = tools.get(name)
    if spec is None:
        error: str | None = f"unknown tool {name!r}; available tools: {', '.join(sorted(tools))}"
    else:
        parsed, error = _parse_arguments(spec, raw_args)
        if parsed is not None:
            result, error = await _run_handler(spec, parsed)
    duration = time.perf_counter() - t0
    ok = error is None
    TOOL_CALL_SECONDS.labels(tool=name if spec else "unknown", result="ok" if ok else "error").observe(duration)
    if not ok:
        log.warning("tool call %s (%s) failed: %s", name, call_id, error)
    return ToolCallRecord(
        round_no, call_id, name, raw_args, ok, result if ok else None, error, started_at, duration, parsed
    )


async def execute_tool_calls(
    calls: Sequence[tuple[str, str, str]], tools: Mapping[str, ToolSpec], round_no: int
) -> list[ToolCallRecord]:
    """Run one round of tool calls concurrently and return their records in call order; never raises.

    Args:
        calls: ``(call_id, tool_name, raw_json_arguments)`` per call.
        tools: tool specs by name.
        round_no: round number stored on each record (1-based).
    Results are kept whole; ``tool_message`` and ``audit_values`` cap them where they are used.
    """
    return list(await asyncio.gather(*(_execute_one(cid, name, raw, tools, round_no) for cid, name, raw in calls)))


def _assistant_message(message: Any) -> dict:
    """Serialise the model's assistant message (with its tool calls) for the next request."""
    out: dict[str, Any] = {"role": "assistant", "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": tc.id,
                "type": "function",
                "function": {"name": tc.function.name, "arguments": tc.function.arguments},
            }
            for tc in message.tool_calls
        ]
    return out


def _call_tuple(tool_call: Any) -> tuple[str, str, str]:
    function = getattr(tool_call, "function", None)
    if function is None:  # a non-function (custom) tool call: answer it with an unknown-tool error
        return tool_call.id, getattr(tool_call, "type", "custom"), ""
    return tool_call.id, function.name, function.arguments or ""


async def run_model_loop(
    client: openai.AsyncOpenAI,
    *,
    model: str,
    temperature: float,
    messages: list[dict],
    tools: Sequence[ToolSpec],
    max_rounds: int,
    max_output_chars: int,
    on_record: RecordSink,
    first_round: int = 1,
) -> LoopOutcome:
    """Drive Chat Completions with tools until a terminal tool succeeds, the model answers in text,
    or ``max_rounds`` requests were made.

    ``messages`` is extended in place (assistant messages with their tool calls, one tool message
    per call), so a caller can append a corrective message and call again with ``first_round`` set
    to continue the round numbering. ``on_record`` gets each round's tool call records as soon as the round
    finishes. Token usage is added to ``oncall_llm_tokens_total``.

    Raises:
        openai.OpenAIError (connection, status, timeout errors) and TimeoutError to the caller.
    """
    by_name = {t.name: t for t in tools}
    schemas = openai_tool_schemas(tools)
    prompt_tokens = completion_tokens = 0
    rounds = 0
    while rounds < max_rounds:
        rounds += 1
        response = await client.chat.completions.create(
            model=model,
            messages=cast(Any, messages),  # OpenAI message dicts, typed by the SDK as TypedDicts
            tools=cast(Any, schemas),
            tool_choice="auto",
            parallel_tool_calls=True,
            temperature=temperature,
        )
        if response.usage is not None:
            prompt_tokens += response.usage.prompt_tokens
            completion_tokens += response.usage.completion_tokens
            LLM_TOKENS.labels(kind="prompt").inc(response.usage.prompt_tokens)
            LLM_TOKENS.labels(kind="completion").inc(response.usage.completion_tokens)
        message = response.choices[0].message
        messages.append(_assistant_message(message))
        if not message.tool_calls:
            return LoopOutcome(None, rounds, prompt_tokens, completion_tokens, message.content)
        round_no = first_round + rounds - 1
        records = await execute_tool_calls([_call_tuple(tc) for tc in message.tool_calls], by_name, round_no)
        await on_record(records)
        messages.extend(tool_message(record, max_output_chars) for record in records)
        terminal = next((r for r in records if r.ok and by_name[r.tool].terminal), None)
        if terminal is not None:
            return LoopOutcome(terminal, rounds, prompt_tokens, completion_tokens, None)
    return LoopOutcome(None, rounds, prompt_tokens, completion_tokens, None)


def audit_values(
    record: ToolCallRecord, incident_id: int, investigation_id: int | None, max_output_chars: int
) -> dict[str, Any]:
    """The ``tool_calls`` audit-trail row of ``record`` (result capped at ``max_output_chars``);
    ``investigation_id`` is None for the tools of a WhatsApp reply."""
    return {
        "incident_id": incident_id,
        "investigation_id": investigation_id,
        "round": record.round,
        "call_id": record.call_id,
        "tool": record.tool,
        "arguments": record.arguments,
        "ok": int(record.ok),
        "result": cap_text(result_json(record), max_output_chars) if record.ok else None,
        "error": record.error,
        "started_at": record.started_at,
        "duration_s": record.duration_s,
    }
