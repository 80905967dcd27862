"""What every investigation engine provides, and what it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from oncall.diagnosis import Diagnosis
from oncall.investigate.toolloop import RecordSink

__all__ = ["Engine", "EngineResult", "RecordSink"]


@dataclass
class EngineResult:
    """What an engine produced: the diagnosis, model rounds (or planned rounds) and tokens used."""

    diagnosis: Diagnosis
    rounds: int
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Engine(Protocol):
    """An investigation engine (``model.ModelEngine``, ``offline.OfflineEngine``).

    ``name`` stamps the diagnosis (``offline`` or ``openai:<model>``).
    """

    name: str

    async def run(self, incident: dict[str, Any], alerts: list[dict[str, Any]], on_record: RecordSink) -> EngineResult:
        """Investigate ``incident`` (an ``incidents`` row) with its ``alerts``; tool calls go to ``on_record``."""
        ...
