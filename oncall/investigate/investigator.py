"""The investigator: runs the model engine (when configured) then, if it fails, the offline engine,
completes the diagnosis with the agent's own measurements and history (``aftercare``: impact, similar
incidents, fleet-safe advice), and records every engine run and tool call.

Storage: one ``investigations`` row per engine run (status ``running`` -> ``done`` | ``failed`` |
``interrupted``, rounds, tokens, error), one ``tool_calls`` row per tool call (arguments, capped
result, timing) and an ``investigation_fallback`` timeline event when the model gives way. The
incident's own status is the caller's (``oncall.incidents.lifecycle``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from oncall.diagnosis import Diagnosis
from oncall.investigate.aftercare import Aftercare
from oncall.investigate.engines.base import Engine, RecordSink
from oncall.investigate.engines.model import InvalidModelOutput
from oncall.investigate.toolloop import ToolCallRecord, audit_values
from oncall.metrics import INVESTIGATION_SECONDS, INVESTIGATIONS
from oncall.store import investigations, timeline
from oncall.store.database import Store
from oncall.store.rows import Row

log = logging.getLogger("oncall.investigation")


class InvestigationFailed(Exception):
    """Every engine failed; the message says why the last one did (secrets removed)."""


def _metric_engine(engine: Engine) -> str:
    """Engine label of the investigation metrics: ``openai`` or ``offline``."""
    return engine.name.split(":", 1)[0]


class Investigator:
    """Investigates incidents with the given engines in order; every engine but the last may fail,
    time out or give invalid output and the next one answers.

    Args:
        store: the agent database.
        engines: e.g. ``[ModelEngine, OfflineEngine]`` or ``[OfflineEngine]``; the last is the fallback.
        timeout_s: most seconds a fallible engine may take in all (``INVESTIGATION_TIMEOUT_S``).
        tool_output_max_chars: characters of a tool result kept in the audit trail.
        redact: removes secrets from error texts before they are stored or logged.
        replica_id: the agent replica running the engines (stamped on each ``investigations`` row).
        aftercare: completes each engine's diagnosis (impact, similar incidents, fleet-safe advice); None: as is.
    """

    def __init__(
        self,
        store: Store,
        engines: Sequence[Engine],
        *,
        timeout_s: float,
        tool_output_max_chars: int,
        redact: Callable[[str], str],
        replica_id: str | None = None,
        aftercare: Aftercare | None = None,
    ) -> None:
        if not engines:
            raise ValueError("the investigator needs at least one engine")
        self.store = store
        self.engines = list(engines)
        self.timeout_s = timeout_s
        self.tool_output_max_chars = tool_output_max_chars
        self.redact = redact
        self.replica_id = replica_id
        self.aftercare = aftercare

    @property
    def first_engine(self) -> str:
        """Name of the engine that is tried first."""
        return self.engines[0].name

    async def investigate(self, incident: Row, alerts: list[Row], *, episode: int | None = None) -> Diagnosis:
        """Investigate ``incident`` (an ``incidents`` row) with its ``alerts`` (``incident_alerts`` rows; those
        ``prompts.shown_alerts`` picks carry ``annotations``) and return the diagnosis; ``episode`` (the incident's
        episode number) is recorded on each engine run.

        Raises:
            InvestigationFailed: the last engine failed too.
        """
        for engine in self.engines[:-1]:
            diagnosis = await self._attempt(engine, incident, alerts, fallible=True, episode=episode)
            if diagnosis is not None:
                return diagnosis
        diagnosis = await self._attempt(self.engines[-1], incident, alerts, fallible=False, episode=episode)
        assert diagnosis is not None  # the last engine either returns a diagnosis or raises
        return diagnosis

    async def _attempt(
        self, engine: Engine, incident: Row, alerts: list[Row], *, fallible: bool, episode: int | None
    ) -> Diagnosis | None:
        """Run one engine with its own ``investigations`` row. A fallible engine's error is recorded and
        None returned (the next engine runs); the last engine's error raises ``InvestigationFailed``."""
        incident_id = int(incident["id"])
        t0 = time.perf_counter()
        async with self.store.write() as conn:
            investigation_id = await investigations.start(
                conn, incident_id, engine.name, time.time(), episode=episode, replica_id=self.replica_id
            )

        async def on_record(records: list[ToolCallRecord]) -> None:
            async with self.store.write() as conn:
                for record in records:
                    values = audit_values(record, incident_id, investigation_id, self.tool_output_max_chars)
                    await investigations.add_tool_call(conn, values)

        label = _metric_engine(engine)
        # a model may loop slowly through its rounds; past the limit the next engine answers instead
        limit = self.timeout_s if fallible else None
        try:
            async with asyncio.timeout(limit):
                result = await engine.run(incident, alerts, on_record)
        except asyncio.CancelledError:
            await self._finish(
                investigation_id, "interrupted", error="cancelled (shutdown or claim lost); investigated again"
            )
            raise
        except Exception as exc:  # noqa: BLE001 - any engine failure falls back or is reported
            reason = self._reason(exc, limit)
            usage = (
                (exc.rounds, exc.prompt_tokens, exc.completion_tokens)
                if isinstance(exc, InvalidModelOutput)
                else (0, 0, 0)
            )
            await self._finish(investigation_id, "failed", error=reason, usage=usage)
            INVESTIGATIONS.labels(engine=label, outcome="error").inc()
            INVESTIGATION_SECONDS.labels(engine=label).observe(time.perf_counter() - t0)
            if not fallible:
                raise InvestigationFailed(f"{engine.name} engine: {reason}") from exc
            log.warning("incident %s: %s engine failed, falling back: %s", incident_id, engine.name, reason)
            async with self.store.write() as conn:
                await timeline.add(
                    conn,
                    incident_id,
                    "investigation_fallback",
                    {"from": engine.name, "to": self.engines[-1].name, "reason": reason},
                )
            return None
        diagnosis = await self._complete(incident, alerts, result.diagnosis, on_record, result.rounds + 1)
        await self._finish(
            investigation_id, "done", usage=(result.rounds, result.prompt_tokens, result.completion_tokens)
        )
        INVESTIGATIONS.labels(engine=label, outcome=diagnosis.fault_type.value).inc()
        INVESTIGATION_SECONDS.labels(engine=label).observe(time.perf_counter() - t0)
        return diagnosis

    async def _complete(
        self, incident: Row, alerts: list[Row], diagnosis: Diagnosis, on_record: RecordSink, round_no: int
    ) -> Diagnosis:
        """The engine's diagnosis completed by the aftercare; as it is when there is none or it fails."""
        if self.aftercare is None:
            return diagnosis
        try:
            return await self.aftercare.complete(incident, alerts, diagnosis, on_record, round_no)
        except Exception as exc:  # noqa: BLE001 - the diagnosis goes out without the agent's additions
            log.warning(
                "incident %s: aftercare failed: %s", incident["id"], self.redact(f"{type(exc).__name__}: {exc}")
            )
            return diagnosis

    def _reason(self, exc: Exception, limit: float | None) -> str:
        """A one-line, secret-free reason for an engine failure."""
        detail = str(exc)
        if not detail and isinstance(exc, TimeoutError) and limit is not None:
            detail = f"no diagnosis within INVESTIGATION_TIMEOUT_S={limit:g} s"
        return self.redact(f"{type(exc).__name__}: {detail or 'no detail'}")

    async def _finish(
        self, investigation_id: int, status: str, *, error: str | None = None, usage: tuple[int, int, int] = (0, 0, 0)
    ) -> None:
        rounds, prompt_tokens, completion_tokens = usage
        async with self.store.write() as conn:
            await investigations.finish(
                conn,
                investigation_id,
                status,
                time.time(),
                error=error,
                rounds=rounds,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
            )
