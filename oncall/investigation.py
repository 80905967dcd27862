"""The investigator: runs the model engine (when configured) or the offline engine for an incident,
records everything in SQLite and stores the diagnosis on the incident.

Storage (see ``oncall.db``): one ``investigations`` row per engine attempt (status ``running`` ->
``done`` | ``failed`` | ``interrupted``, rounds, tokens, error), one ``tool_calls`` row per tool call
(arguments, capped result, timing), timeline events ``investigation_started``,
``investigation_fallback``, ``diagnosis`` / ``investigation_failed``, and on the incident
``diagnosis`` (JSON), ``diagnosed_at`` and ``investigation_status`` (``running`` -> ``done`` |
``failed``; a cancelled investigation stays ``running`` so it is resumed after a restart).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

import openai

from oncall.db import add_timeline, get_incident, get_incident_alerts
from oncall.diagnosis import Diagnosis
from oncall.llm_engine import InvalidModelOutput, LLMEngine, build_client
from oncall.metrics import INVESTIGATION_SECONDS, INVESTIGATIONS
from oncall.offline_engine import EngineResult, OfflineEngine
from oncall.runtime import AgentRuntime
from oncall.toolloop import ToolCallRecord, store_tool_call

log = logging.getLogger("oncall.investigation")


class Engine(Protocol):
    """What the investigator needs from an engine (``LLMEngine``, ``OfflineEngine``)."""

    name: str

    async def run(self, incident: dict[str, Any], alerts: list[dict[str, Any]], on_record: Any) -> EngineResult: ...


def _metric_engine(engine: Engine) -> str:
    """Engine label of the investigation metrics: ``openai`` or ``offline``."""
    return engine.name.split(":", 1)[0]


class Investigator:
    """Investigates incidents; the model engine first when ``settings.llm_enabled`` (or a client is
    given), the offline engine when there is no model or the model fails, times out or gives invalid output.

    Args:
        runtime: the agent runtime (settings, db, shared HTTP client).
        llm_client: an ``openai.AsyncOpenAI``; built from settings when None and the model is configured.
    """

    def __init__(self, runtime: AgentRuntime, llm_client: openai.AsyncOpenAI | None = None) -> None:
        self.runtime = runtime
        self.db = runtime.db
        if llm_client is None and runtime.settings.llm_enabled:
            llm_client = build_client(runtime.settings)
        self.llm: LLMEngine | None = LLMEngine(runtime, llm_client) if llm_client is not None else None
        self.offline = OfflineEngine(runtime)

    async def investigate(self, incident_id: int) -> Diagnosis:
        """Investigate incident ``incident_id`` and return (and store) its diagnosis.

        Raises:
            LookupError: no such incident.
            RuntimeError: the offline engine failed too (the incident is marked ``failed``).
        """
        incident = get_incident(self.db, incident_id)
        if incident is None:
            raise LookupError(f"incident {incident_id} not found")
        alerts = get_incident_alerts(self.db, incident_id)
        self._set_status(incident_id, "running")
        engines: list[Engine] = [e for e in (self.llm, self.offline) if e is not None]
        add_timeline(self.db, incident_id, "investigation_started", {"engine": engines[0].name, "alerts": len(alerts)})
        diagnosis: Diagnosis | None = None
        try:
            for engine in engines:
                diagnosis = await self._attempt(engine, incident, alerts, fallback=engine is not self.offline)
                if diagnosis is not None:
                    break
        except Exception as exc:
            self._set_status(incident_id, "failed")
            add_timeline(
                self.db, incident_id, "investigation_failed", {"error": self._redact(f"{type(exc).__name__}: {exc}")}
            )
            raise RuntimeError(f"investigation of incident {incident_id} failed") from exc
        assert diagnosis is not None  # the offline engine either returns a diagnosis or raises
        now = time.time()
        self.db.execute(
            "UPDATE incidents SET diagnosis = ?, diagnosed_at = ?, investigation_status = 'done', updated_at = ? WHERE id = ?",
            (diagnosis.model_dump_json(), now, now, incident_id),
        )
        add_timeline(
            self.db,
            incident_id,
            "diagnosis",
            {
                "engine": diagnosis.engine,
                "fault_type": diagnosis.fault_type.value,
                "priority": diagnosis.priority,
                "affected_replicas": diagnosis.affected_replicas,
                "summary": diagnosis.summary,
            },
        )
        return diagnosis

    async def _attempt(
        self, engine: Engine, incident: dict[str, Any], alerts: list[dict[str, Any]], *, fallback: bool
    ) -> Diagnosis | None:
        """Run one engine with its own ``investigations`` row. With ``fallback`` an engine error is
        recorded and None returned (the next engine runs); otherwise it is re-raised."""
        incident_id = incident["id"]
        started = time.time()
        t0 = time.perf_counter()
        investigation_id = self.db.execute(
            "INSERT INTO investigations (incident_id, started_at, status, engine) VALUES (?, ?, 'running', ?)",
            (incident_id, started, engine.name),
        ).lastrowid

        def on_record(record: ToolCallRecord) -> None:
            store_tool_call(self.db, incident_id, investigation_id, record, self.runtime.settings.tool_output_max_chars)

        label = _metric_engine(engine)
        # a model may loop slowly through its rounds; past the limit the offline engine answers instead
        limit = self.runtime.settings.investigation_timeout_s if fallback else None
        try:
            async with asyncio.timeout(limit):
                result = await engine.run(incident, alerts, on_record)
        except asyncio.CancelledError:
            self._finish(
                investigation_id, "interrupted", error="cancelled (agent shutting down); resumed at next start"
            )
            raise
        except Exception as exc:  # noqa: BLE001 - any engine failure falls back or is reported
            detail = str(exc) or (
                f"no diagnosis within INVESTIGATION_TIMEOUT_S={limit:g} s"
                if isinstance(exc, TimeoutError)
                else "no detail"
            )
            reason = self._redact(f"{type(exc).__name__}: {detail}")
            usage = (
                (exc.rounds, exc.prompt_tokens, exc.completion_tokens)
                if isinstance(exc, InvalidModelOutput)
                else (0, 0, 0)
            )
            self._finish(
                investigation_id,
                "failed",
                error=reason,
                rounds=usage[0],
                prompt_tokens=usage[1],
                completion_tokens=usage[2],
            )
            INVESTIGATIONS.labels(engine=label, outcome="error").inc()
            INVESTIGATION_SECONDS.labels(engine=label).observe(time.perf_counter() - t0)
            if not fallback:
                raise
            log.warning(
                "incident %s: %s engine failed, falling back to the offline engine: %s",
                incident_id,
                engine.name,
                reason,
            )
            add_timeline(
                self.db,
                incident_id,
                "investigation_fallback",
                {"from": engine.name, "to": self.offline.name, "reason": reason},
            )
            return None
        self._finish(
            investigation_id,
            "done",
            rounds=result.rounds,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
        )
        INVESTIGATIONS.labels(engine=label, outcome=result.diagnosis.fault_type.value).inc()
        INVESTIGATION_SECONDS.labels(engine=label).observe(time.perf_counter() - t0)
        return result.diagnosis

    def _finish(
        self,
        investigation_id: int,
        status: str,
        *,
        error: str | None = None,
        rounds: int = 0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        self.db.execute(
            "UPDATE investigations SET finished_at = ?, status = ?, error = ?, rounds = ?, prompt_tokens = ?, completion_tokens = ? WHERE id = ?",
            (time.time(), status, error, rounds, prompt_tokens, completion_tokens, investigation_id),
        )

    def _set_status(self, incident_id: int, status: str) -> None:
        self.db.execute(
            "UPDATE incidents SET investigation_status = ?, updated_at = ? WHERE id = ?",
            (status, time.time(), incident_id),
        )

    def _redact(self, text: str) -> str:
        """Remove configured secrets from an error text before it is stored or logged."""
        settings = self.runtime.settings
        for secret in (settings.openai_api_key, settings.github_token):
            if secret and secret.get_secret_value():
                text = text.replace(secret.get_secret_value(), "***")
        return text
