"""Model-driven investigation: OpenAI Chat Completions with the investigation tools."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai

from oncall.diagnosis import Diagnosis
from oncall.offline_engine import EngineResult
from oncall.prompts import CORRECTIVE_MESSAGE, SYSTEM_PROMPT, user_message
from oncall.runtime import AgentRuntime
from oncall.settings import Settings
from oncall.toolloop import ToolCallRecord, run_model_loop
from oncall.tools import build_tools

CORRECTIVE_MAX_ROUNDS = 2
"""Model rounds allowed after the one corrective message."""


class InvalidModelOutput(Exception):
    """The model ended without a valid ``send_diagnosis`` call, even after the corrective retry.

    ``rounds``, ``prompt_tokens`` and ``completion_tokens`` say what the failed attempt used.
    """

    def __init__(self, message: str, rounds: int, prompt_tokens: int, completion_tokens: int) -> None:
        super().__init__(message)
        self.rounds = rounds
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens


def build_client(settings: Settings) -> openai.AsyncOpenAI:
    """AsyncOpenAI for ``settings`` (base URL, request timeout in seconds, one SDK retry).

    A local OpenAI-compatible server configured by ``OPENAI_BASE_URL`` alone gets a placeholder key.
    """
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "no-key"
    return openai.AsyncOpenAI(
        api_key=key, base_url=settings.openai_base_url, timeout=settings.openai_timeout_s, max_retries=1
    )


class LLMEngine:
    """Runs the model loop (at most ``settings.llm_max_rounds`` rounds) until ``send_diagnosis``."""

    def __init__(self, runtime: AgentRuntime, client: openai.AsyncOpenAI) -> None:
        self.runtime = runtime
        self.client = client
        self.settings = runtime.settings
        self.name = f"openai:{self.settings.openai_model}"
        self.tools = list(build_tools(runtime, self.name).values())

    async def run(
        self, incident: dict[str, Any], alerts: list[dict[str, Any]], on_record: Callable[[ToolCallRecord], None]
    ) -> EngineResult:
        """Investigate ``incident`` with the model.

        Raises:
            openai.OpenAIError / TimeoutError: the model endpoint failed.
            InvalidModelOutput: no valid send_diagnosis after one corrective retry.
        """
        messages: list[dict] = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user_message(incident, alerts)},
        ]
        common = dict(
            model=self.settings.openai_model,
            temperature=self.settings.llm_temperature,
            messages=messages,
            tools=self.tools,
            max_output_chars=self.settings.tool_output_max_chars,
            on_record=on_record,
        )
        outcome = await run_model_loop(self.client, max_rounds=self.settings.llm_max_rounds, **common)
        rounds, prompt_tokens, completion_tokens = outcome.rounds, outcome.prompt_tokens, outcome.completion_tokens
        if outcome.terminal is None:
            messages.append({"role": "user", "content": CORRECTIVE_MESSAGE})
            outcome = await run_model_loop(
                self.client, max_rounds=CORRECTIVE_MAX_ROUNDS, first_round=rounds + 1, **common
            )
            rounds += outcome.rounds
            prompt_tokens += outcome.prompt_tokens
            completion_tokens += outcome.completion_tokens
        if outcome.terminal is None:
            said = f"; last text: {outcome.final_text[:200]!r}" if outcome.final_text else ""
            raise InvalidModelOutput(
                f"model ended without a valid send_diagnosis after {rounds} rounds and one corrective retry{said}",
                rounds,
                prompt_tokens,
                completion_tokens,
            )
        return EngineResult(Diagnosis.model_validate(outcome.terminal.result), rounds, prompt_tokens, completion_tokens)
