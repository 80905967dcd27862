"""The AI on-call agent: Alertmanager webhook -> background investigation -> WhatsApp diagnosis.

Run: ``uvicorn on_call_agent:app --port 8088`` (settings from the environment and ``.env``, see
``.env.example``). Endpoints:

- ``POST /alerts``: Alertmanager webhook (payload v4); optional ``Authorization: Bearer`` check.
- ``POST /webhook/twilio``: incoming WhatsApp replies (``oncall.twilio_webhook``).
- ``GET /healthz``, ``GET /incidents``, ``GET /incidents/{id}``, ``POST /incidents/{id}/acknowledge``,
  ``POST /incidents/{id}/resolve``, ``GET /metrics`` (Prometheus text format).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

import httpx
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, ValidationError

from oncall.conversation import ConversationHandler
from oncall.db import Database, add_timeline
from oncall.incidents import incident_detail, list_incidents
from oncall.ingest import count_open_incidents, ingest_notification
from oncall.investigation import Investigator
from oncall.jira import JiraClient
from oncall.metrics import ALERT_NOTIFICATIONS, INCIDENTS_OPEN
from oncall.notify import Notifier
from oncall.runtime import AgentRuntime
from oncall.settings import Settings, get_settings
from oncall.twilio_webhook import router as twilio_router

log = logging.getLogger("oncall.agent")

MAX_ALERT_BODY_BYTES = 5 * 1024 * 1024  # an Alertmanager group of thousands of alerts stays far below this
HTTP_TIMEOUT_S = 10.0  # default for the shared outbound client; each tool call passes its own
DRAIN_TIMEOUT_S = 10.0

ServicesFactory = Callable[[AgentRuntime], None]


def build_services(runtime: AgentRuntime) -> None:
    """Attach the notifier, Jira client, investigator and conversation handler to ``runtime``."""
    runtime.notifier = Notifier(runtime)
    runtime.jira = JiraClient(runtime)
    runtime.investigator = Investigator(runtime)
    runtime.conversation = ConversationHandler(runtime)


class InvestigationScheduler:
    """Runs investigations and resolved notices in the background, never two at once for one incident,
    and at most ``MAX_CONCURRENT_INVESTIGATIONS`` at once overall (the rest wait their turn).

    Work for one incident is serialised by a per-incident lock, so a resolved notice is sent after the
    diagnosis of the same episode. An investigation already waiting for its turn is not queued twice.
    """

    def __init__(self, runtime: AgentRuntime) -> None:
        self.runtime = runtime
        self._locks: dict[int, asyncio.Lock] = {}
        self._waiting: set[int] = set()
        # An alert storm must not start hundreds of investigations at once: their parallel tool calls
        # would starve the event loop that acknowledges webhooks (measured in bench/README.md, ingest).
        self._slots = asyncio.Semaphore(runtime.settings.max_concurrent_investigations)

    def investigate(self, incident_id: int) -> bool:
        """Schedule ``investigate`` then ``send_diagnosis``; False when one is already waiting to run."""
        if incident_id in self._waiting:
            return False
        self._waiting.add(incident_id)
        self.runtime.spawn(self._investigate(incident_id), name=f"investigate-{incident_id}")
        return True

    def notify_resolved(self, incident_id: int) -> None:
        """Schedule the one short "resolved" WhatsApp message of this episode."""
        self.runtime.spawn(self._notify_resolved(incident_id), name=f"resolved-{incident_id}")

    def _lock(self, incident_id: int) -> asyncio.Lock:
        return self._locks.setdefault(incident_id, asyncio.Lock())

    async def _investigate(self, incident_id: int) -> None:
        async with self._slots, self._lock(incident_id):
            self._waiting.discard(incident_id)
            runtime = self.runtime
            assert runtime.investigator is not None and runtime.notifier is not None
            try:
                await runtime.investigator.investigate(incident_id)
            except Exception as exc:  # noqa: BLE001 - recorded on the incident; must not stay 'running' forever
                log.exception("investigation of incident %d failed", incident_id)
                error = f"{type(exc).__name__}: {exc}"
                mark_investigation_failed(runtime.db, incident_id, error)
                await runtime.notifier.send_investigation_failed(incident_id, error)  # the engineer is paged regardless
                return
            await runtime.notifier.send_diagnosis(incident_id)

    async def _notify_resolved(self, incident_id: int) -> None:
        async with self._lock(incident_id):
            assert self.runtime.notifier is not None
            await self.runtime.notifier.send_resolved(incident_id)


def mark_investigation_failed(db: Database, incident_id: int, error: str) -> None:
    """Set ``investigation_status='failed'`` when the investigator raised before finishing the incident."""
    cursor = db.execute(
        "UPDATE incidents SET investigation_status = 'failed' WHERE id = ? AND investigation_status IN ('pending', 'running')",
        (incident_id,),
    )
    if cursor.rowcount:
        add_timeline(db, incident_id, "investigation_failed", {"error": error})


def resume_interrupted(runtime: AgentRuntime, scheduler: InvestigationScheduler) -> list[int]:
    """Restart investigations a previous process left unfinished; return the incident ids.

    ``investigations`` rows still ``running`` are closed as ``interrupted`` (nothing runs yet at start);
    firing incidents whose ``investigation_status`` is ``pending`` or ``running`` are investigated again;
    a resolved incident's cut-off investigation is marked ``interrupted`` (its alerts no longer fire).
    """
    db = runtime.db
    db.execute(
        "UPDATE investigations SET status = 'interrupted', finished_at = ?, error = 'agent restarted' WHERE status = 'running'",
        (time.time(),),
    )
    db.execute(
        "UPDATE incidents SET investigation_status = 'interrupted' WHERE status = 'resolved' AND investigation_status = 'running'"
    )
    rows = db.query(
        "SELECT id FROM incidents WHERE status = 'firing' AND investigation_status IN ('pending', 'running') ORDER BY id"
    )
    for row in rows:
        add_timeline(db, row["id"], "investigation_resumed", {"reason": "agent restarted"})
        scheduler.investigate(row["id"])
    if rows:
        log.info("resuming %d interrupted investigation(s): incidents %s", len(rows), [row["id"] for row in rows])
    return [row["id"] for row in rows]


def load_settings() -> Settings:
    """Read settings; on invalid values log which variables are wrong (never their values) and exit 2."""
    try:
        settings = get_settings()
        logging.getLogger("oncall").setLevel(settings.log_level.upper())
    except ValidationError as exc:
        problems = "\n".join(
            f"  {'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False, include_context=False)
        )
        log.critical("invalid agent settings (see .env.example):\n%s", problems)
        raise SystemExit(2) from None
    except ValueError as exc:
        log.critical("invalid agent settings: LOG_LEVEL: %s", exc)
        raise SystemExit(2) from None
    return settings


def configure_logging() -> None:
    """Send the agent's ``oncall.*`` logs to stderr when nothing else configured a handler."""
    logger = logging.getLogger("oncall")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def create_app(settings: Settings | None = None, services: ServicesFactory = build_services) -> FastAPI:
    """Build the FastAPI app.

    Args:
        settings: fixed settings (tests); None reads them at start-up with ``get_settings()``.
        services: attaches notifier/jira/investigator/conversation to the runtime (tests inject fakes).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging()
        active = settings or load_settings()
        for integration, state in active.integration_report().items():
            log.info("integration %-19s %s", integration, state)
        db = Database(active.database_path)
        log.info("database %s", active.database_path)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as http:
            runtime = AgentRuntime(settings=active, db=db, http=http)
            services(runtime)
            scheduler = InvestigationScheduler(runtime)
            app.state.runtime = runtime
            app.state.scheduler = scheduler
            resume_interrupted(runtime, scheduler)
            runtime.spawn(runtime.notifier.resend_queued(), name="resend-queued-messages")
            INCIDENTS_OPEN.set(count_open_incidents(db))
            gc.collect()
            gc.freeze()  # start-up objects leave the collector's generations: shorter full-collection pauses
            try:
                yield
            finally:
                await runtime.drain(DRAIN_TIMEOUT_S)
                db.close()

    app = FastAPI(title="AI on-call agent", lifespan=lifespan)
    app.include_router(twilio_router)
    register_routes(app)
    return app


class ActorBody(BaseModel):
    """Who acknowledges or resolves an incident by API (a name, a number or a tool name)."""

    by: str = Field(default="api", min_length=1, max_length=200)


def bearer_ok(settings: Settings, authorization: str | None) -> bool:
    """True when no ALERTS_BEARER_TOKEN is set, or ``authorization`` is ``Bearer <that token>`` (constant time)."""
    if settings.alerts_bearer_token is None:
        return True
    scheme, _, token = (authorization or "").partition(" ")
    expected = settings.alerts_bearer_token.get_secret_value().encode()
    return scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(), expected)


async def read_limited_body(request: Request, limit: int) -> bytes:
    """Read the request body; raises HTTPException 413 once it exceeds ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(status_code=413, detail=f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def incident_runtime(request: Request, incident_id: int) -> AgentRuntime:
    """The runtime, after checking the incident exists (404) and a conversation handler is configured (503)."""
    runtime: AgentRuntime = request.app.state.runtime
    if runtime.db.query_one("SELECT id FROM incidents WHERE id = ?", (incident_id,)) is None:
        raise HTTPException(status_code=404, detail=f"incident {incident_id} not found")
    if runtime.conversation is None:
        raise HTTPException(status_code=503, detail="no conversation handler configured")
    return runtime


def register_routes(app: FastAPI) -> None:
    """Add the agent's own HTTP endpoints to ``app``."""

    @app.post("/alerts")
    async def receive_alerts(request: Request) -> Response:
        """Alertmanager webhook (payload v4). 200 {"status": "accepted"|"duplicate", "incident_id",
        "investigation_started"}; 401 bad/missing bearer token; 413 too large; 422 {"detail": reason,
        "errors": [...], "raw_id"} for malformed bodies (the raw body is stored anyway)."""
        runtime: AgentRuntime = request.app.state.runtime
        scheduler: InvestigationScheduler = request.app.state.scheduler
        if not bearer_ok(runtime.settings, request.headers.get("authorization")):
            ALERT_NOTIFICATIONS.labels(outcome="unauthorized").inc()
            log.warning(
                "rejected POST /alerts from %s: missing or wrong bearer token",
                request.client.host if request.client else "?",
            )
            return JSONResponse(
                {"detail": "missing or invalid bearer token"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        result = ingest_notification(runtime.db, await read_limited_body(request, MAX_ALERT_BODY_BYTES))
        if result.outcome == "invalid":
            return JSONResponse(
                {"detail": result.error, "errors": result.errors, "raw_id": result.raw_id}, status_code=422
            )
        started = False
        if result.start_investigation and result.incident_id is not None:
            started = scheduler.investigate(result.incident_id)
        if result.resolved_now and result.incident_id is not None:
            scheduler.notify_resolved(result.incident_id)
        log.info(
            "notification raw#%d %s: incident %s, new firing %s, newly resolved %s, investigation %s%s",
            result.raw_id,
            result.outcome,
            result.incident_id,
            list(result.new_firing),
            list(result.newly_resolved),
            "started" if started else "not started",
            ", incident resolved" if result.resolved_now else "",
        )
        return JSONResponse(
            {"status": result.outcome, "incident_id": result.incident_id, "investigation_started": started}
        )

    @app.get("/healthz")
    async def healthz(request: Request) -> Response:
        """200 {"status": "ok", "db": "ok", "integrations", "incidents_open", "background_tasks"}; 503 when the database fails."""
        runtime: AgentRuntime = request.app.state.runtime
        try:
            runtime.db.query_one("SELECT 1 AS ok")
            open_incidents = count_open_incidents(runtime.db)
        except Exception as exc:  # noqa: BLE001 - reported as unhealthy
            return JSONResponse({"status": "error", "db": f"{type(exc).__name__}: {exc}"}, status_code=503)
        return JSONResponse(
            {
                "status": "ok",
                "db": "ok",
                "integrations": runtime.settings.integration_report(),
                "incidents_open": open_incidents,
                "background_tasks": len(runtime.tasks),
            }
        )

    @app.get("/incidents")
    async def get_incidents(
        request: Request,
        status: Literal["firing", "resolved"] | None = None,
        limit: int = Query(default=50, ge=1, le=500),
    ) -> dict[str, Any]:
        """Incident summaries, newest first: {"incidents": [...], "count": n}."""
        incidents = list_incidents(request.app.state.runtime.db, status=status, limit=limit)
        return {"incidents": incidents, "count": len(incidents)}

    @app.get("/incidents/{incident_id}")
    async def get_incident_detail(request: Request, incident_id: int) -> dict[str, Any]:
        """The incident with its alerts, diagnosis, timeline, investigations, tool calls, messages, tickets; 404 unknown."""
        detail = incident_detail(request.app.state.runtime.db, incident_id)
        if detail is None:
            raise HTTPException(status_code=404, detail=f"incident {incident_id} not found")
        return detail

    @app.post("/incidents/{incident_id}/acknowledge")
    async def post_acknowledge(request: Request, incident_id: int, body: ActorBody | None = None) -> dict[str, Any]:
        """Acknowledge the incident (body {"by": name}, optional) as a WhatsApp "ack" would; 404 unknown.
        Answers {"incident_id", "acknowledged", "already", "message"}."""
        runtime = incident_runtime(request, incident_id)
        return {"incident_id": incident_id, **runtime.conversation.acknowledge(incident_id, (body or ActorBody()).by)}

    @app.post("/incidents/{incident_id}/resolve")
    async def post_resolve(request: Request, incident_id: int, body: ActorBody | None = None) -> dict[str, Any]:
        """Resolve the incident by hand (body {"by": name}, optional) as a WhatsApp "resolve" would; 404 unknown.
        Answers {"incident_id", "resolved", "already", "message"}."""
        runtime = incident_runtime(request, incident_id)
        return {"incident_id": incident_id, **runtime.conversation.resolve(incident_id, (body or ActorBody()).by)}

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text exposition of the agent's metrics (``oncall.metrics``) and process metrics."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


app = create_app()
