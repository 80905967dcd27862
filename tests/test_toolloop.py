"""The function-calling loop: concurrency, per-call timeouts, argument validation, output capping,
terminal tools and the round limit, against the real openai SDK talking to a loopback fake server."""

from __future__ import annotations

import asyncio
import json
import re
import time

import openai
import pytest
from pydantic import BaseModel, Field

from oncall.investigate.toolloop import (
    ToolCallRecord,
    ToolSpec,
    execute_tool_calls,
    openai_tool_schemas,
    run_model_loop,
    tool_message,
)
from tests.fake_openai import FakeOpenAI, text_response, tool_calls_response


class SleepArgs(BaseModel):
    seconds: float = Field(ge=0, le=5)


class EchoArgs(BaseModel):
    text: str


class DoneArgs(BaseModel):
    verdict: str


intervals: list[tuple[float, float]] = []


async def sleep_handler(args: SleepArgs) -> dict:
    start = time.perf_counter()
    await asyncio.sleep(args.seconds)
    intervals.append((start, time.perf_counter()))
    return {"slept": args.seconds}


async def echo_handler(args: EchoArgs) -> dict:
    return {"text": args.text}


async def boom_handler(args: EchoArgs) -> dict:
    raise RuntimeError(f"backend refused {args.text}")


async def done_handler(args: DoneArgs) -> dict:
    return {"verdict": args.verdict}


TOOLS = {
    t.name: t
    for t in (
        ToolSpec("sleep", "Sleep for some seconds.", SleepArgs, sleep_handler, timeout_s=2.0),
        ToolSpec("slow", "Sleep, with a short timeout.", SleepArgs, sleep_handler, timeout_s=0.1),
        ToolSpec("echo", "Echo text back.", EchoArgs, echo_handler, timeout_s=1.0),
        ToolSpec("boom", "Always fails.", EchoArgs, boom_handler, timeout_s=1.0),
        ToolSpec("done", "Finish.", DoneArgs, done_handler, timeout_s=1.0, terminal=True),
    )
}


async def test_round_calls_overlap_in_time() -> None:
    intervals.clear()
    calls = [(f"c{i}", "sleep", '{"seconds": 0.3}') for i in range(3)]
    records = await execute_tool_calls(calls, TOOLS, 1)
    assert [r.ok for r in records] == [True, True, True]
    assert [r.call_id for r in records] == ["c0", "c1", "c2"]
    # every call starts before any call finishes: they ran concurrently, not one after another
    assert max(start for start, _ in intervals) < min(end for _, end in intervals)
    starts = [r.started_at for r in records]
    ends = [r.started_at + r.duration_s for r in records]
    assert max(starts) < min(ends)


async def test_timeout_and_failures_become_error_records() -> None:
    calls = [
        ("a", "slow", '{"seconds": 1.0}'),
        ("b", "echo", "{not json"),
        ("c", "echo", '{"txt": "x"}'),
        ("d", "nope", "{}"),
        ("e", "boom", '{"text": "q"}'),
        ("f", "echo", '["a list"]'),
        ("g", "echo", '{"text": "fine"}'),
    ]
    records = await execute_tool_calls(calls, TOOLS, 2)
    by_id = {r.call_id: r for r in records}
    assert "timed out after 0.1 s" in by_id["a"].error
    assert "invalid JSON" in by_id["b"].error
    assert "do not match the schema" in by_id["c"].error and "text" in by_id["c"].error
    assert "unknown tool 'nope'" in by_id["d"].error and "echo" in by_id["d"].error
    assert "RuntimeError: backend refused q" in by_id["e"].error
    assert "expected a JSON object" in by_id["f"].error
    assert by_id["g"].ok and by_id["g"].result == {"text": "fine"} and by_id["g"].parsed == EchoArgs(text="fine")
    assert all(not r.ok and r.result is None for k, r in by_id.items() if k != "g")
    assert {r.round for r in records} == {2}


def test_tool_message_caps_output_with_visible_marker() -> None:
    record = ToolCallRecord(1, "c1", "echo", "{}", True, {"text": "x" * 5000}, None, 0.0, 0.01)
    message = tool_message(record, max_output_chars=600)
    assert message["role"] == "tool" and message["tool_call_id"] == "c1"
    full = json.dumps(record.result, separators=(",", ":"))
    content = unfenced(message["content"], "echo output")
    assert content.startswith(full[:600])
    assert content.endswith(f"...[truncated {len(full) - 600} chars]")
    small = tool_message(ToolCallRecord(1, "c2", "echo", "{}", False, None, "boom", 0.0, 0.0), 600)
    assert json.loads(unfenced(small["content"], "echo output")) == {"error": "boom"}


def unfenced(content: str, source: str) -> str:
    """The text inside the one untrusted-data fence that ``content`` must consist of."""
    match = re.fullmatch(
        r'<<<UNTRUSTED DATA id=(\w{12}) source="([^"]*)">>>\n(.*)\n<<<END UNTRUSTED DATA id=\1>>>', content, re.S
    )
    assert match is not None and match[2] == source, content[:200]
    return match[3]


def test_schemas_are_chat_completions_function_tools() -> None:
    schemas = openai_tool_schemas([TOOLS["sleep"], TOOLS["done"]])
    assert schemas[0]["type"] == "function"
    assert schemas[0]["function"]["name"] == "sleep"
    assert schemas[0]["function"]["parameters"]["properties"]["seconds"]["maximum"] == 5
    assert schemas[1]["function"]["parameters"]["required"] == ["verdict"]


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


def client_for(fake: FakeOpenAI) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="sk-test", base_url=fake.base_url, max_retries=0, timeout=10)


async def test_loop_feeds_errors_back_and_stops_at_terminal_tool(fake: FakeOpenAI) -> None:
    fake.add(
        tool_calls_response(
            [("echo", {"text": "hi"}), ("done", '{"verdict": ')], prompt_tokens=100, completion_tokens=20
        ),
        tool_calls_response([("done", {"verdict": "ok"})], prompt_tokens=200, completion_tokens=10),
        text_response("never requested"),
    )
    seen: list[ToolCallRecord] = []
    messages = [{"role": "user", "content": "investigate"}]
    outcome = await run_model_loop(
        client_for(fake),
        model="gpt-4o",
        temperature=0.1,
        messages=messages,
        tools=list(TOOLS.values()),
        max_rounds=5,
        max_output_chars=1000,
        on_record=collect(seen),
    )
    assert outcome.terminal is not None and outcome.terminal.result == {"verdict": "ok"}
    assert outcome.rounds == 2 and len(fake.requests) == 2
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (300, 30)
    assert [(r.tool, r.ok, r.round) for r in seen] == [("echo", True, 1), ("done", False, 1), ("done", True, 2)]
    first = fake.requests[0]
    assert first["tool_choice"] == "auto" and first["parallel_tool_calls"] is True and first["temperature"] == 0.1
    assert {t["function"]["name"] for t in first["tools"]} == set(TOOLS)
    # the second request carries the assistant tool calls and one tool message per call, errors included
    second = fake.requests[1]["messages"]
    assistant = second[1]
    assert assistant["role"] == "assistant" and len(assistant["tool_calls"]) == 2
    tool_msgs = second[2:]
    assert [m["tool_call_id"] for m in tool_msgs] == [c["id"] for c in assistant["tool_calls"]]
    assert "invalid JSON" in json.loads(unfenced(tool_msgs[1]["content"], "done output"))["error"]


def collect(into: list[ToolCallRecord]):
    """An ``on_record`` sink that appends each round's records to ``into``."""

    async def sink(records: list[ToolCallRecord]) -> None:
        into.extend(records)

    return sink


async def test_loop_stops_at_text_answer_and_at_max_rounds(fake: FakeOpenAI) -> None:
    fake.add(text_response("all quiet"))
    outcome = await run_model_loop(
        client_for(fake),
        model="m",
        temperature=0.1,
        messages=[{"role": "user", "content": "q"}],
        tools=list(TOOLS.values()),
        max_rounds=3,
        max_output_chars=1000,
        on_record=collect([]),
    )
    assert outcome.terminal is None and outcome.final_text == "all quiet" and outcome.rounds == 1

    fake.add(*[tool_calls_response([("echo", {"text": str(i)})]) for i in range(5)])
    records: list[ToolCallRecord] = []
    outcome = await run_model_loop(
        client_for(fake),
        model="m",
        temperature=0.1,
        messages=[{"role": "user", "content": "q"}],
        tools=list(TOOLS.values()),
        max_rounds=3,
        max_output_chars=1000,
        on_record=collect(records),
        first_round=4,
    )
    assert outcome.terminal is None and outcome.final_text is None and outcome.rounds == 3
    assert [r.round for r in records] == [4, 5, 6]
    assert len(fake.requests) == 4


async def test_loop_raises_when_model_is_unreachable() -> None:
    from tests.support import free_port

    client = openai.AsyncOpenAI(
        api_key="sk-test", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0, timeout=2
    )
    with pytest.raises(openai.APIConnectionError):
        await run_model_loop(
            client,
            model="m",
            temperature=0.1,
            messages=[{"role": "user", "content": "q"}],
            tools=list(TOOLS.values()),
            max_rounds=2,
            max_output_chars=1000,
            on_record=collect([]),
        )
