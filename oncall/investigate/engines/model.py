"""Model-driven investigation: OpenAI Chat Completions (any compatible endpoint) with the investigation tools."""

from __future__ import annotations

from typing import Any

import openai

from oncall.diagnosis import Diagnosis
from oncall.investigate.engines.base import EngineResult, RecordSink
from oncall.investigate.prompts import CORRECTIVE_MESSAGE, system_prompt, user_message
from oncall.investigate.toolloop import run_model_loop
from oncall.investigate.tools import ToolFactory
from oncall.settings import Settings

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


class ModelEngine:
    """Runs the model loop (at most ``max_rounds`` rounds) until ``send_diagnosis``.

    Args:
        client: the model client.
        model: model name (``OPENAI_MODEL``).
        temperature: sampling temperature 0-2.
        max_rounds: most tool-calling rounds before the corrective retry.
        max_output_chars: tool output kept in the conversation, characters.
        tools: builds the tools of an incident's service (their specs stamped with ``openai:<model>``).
    """

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        model: str,
        temperature: float,
        max_rounds: int,
        max_output_chars: int,
        tools: ToolFactory,
    ) -> None:
        self.client = client
        self.model = model
        self.temperature = temperature
        self.max_rounds = max_rounds
        self.max_output_chars = max_output_chars
        self.name = engine_name(model)
        self.factory = tools

    async def run(self, incident: dict[str, Any], alerts: list[dict[str, Any]], on_record: RecordSink) -> EngineResult:
        """Investigate ``incident`` with the model.

        Raises:
            openai.OpenAIError / TimeoutError: the model endpoint failed.
            InvalidModelOutput: no valid send_diagnosis after one corrective retry.
        """
        investigation = self.factory.for_incident(incident, alerts)
        tools = list(investigation.specs(self.name).values())
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": system_prompt(investigation.context)},
            {"role": "user", "content": user_message(incident, alerts)},
        ]

        async def loop(max_rounds: int, first_round: int) -> Any:
            return await run_model_loop(
                self.client,
                model=self.model,
                temperature=self.temperature,
                messages=messages,
                tools=tools,
                max_rounds=max_rounds,
                max_output_chars=self.max_output_chars,
                on_record=on_record,
                first_round=first_round,
            )

        outcome = await loop(self.max_rounds, 1)
        rounds, prompt_tokens, completion_tokens = outcome.rounds, outcome.prompt_tokens, outcome.completion_tokens
        if outcome.terminal is None:
            messages.append({"role": "user", "content": CORRECTIVE_MESSAGE})
            outcome = await loop(CORRECTIVE_MAX_ROUNDS, rounds + 1)
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


def engine_name(model: str) -> str:
    """The diagnosis stamp of the model engine: ``openai:<model>``."""
    return f"openai:{model}"
