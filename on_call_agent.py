"""The AI on-call agent: Alertmanager webhook -> background investigation -> WhatsApp diagnosis.

Run: ``uvicorn on_call_agent:app --port 8088`` (settings from the environment and ``.env``, see
``.env.example``). This module is the composition root: it reads the settings, migrates and opens
the store, builds the services with what each one uses, and mounts the routers of ``oncall.api``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import openai
from fastapi import FastAPI
from pydantic import ValidationError

from oncall.api import alerts, health, incidents, twilio
from oncall.api.deps import Services
from oncall.api.schemas import install_components
from oncall.catalog.loader import CatalogError
from oncall.channels.jira.client import JiraClient
from oncall.channels.jira.models import JiraConfig
from oncall.channels.whatsapp.sender import WhatsAppSender, build_twilio_client
from oncall.console.routes import router as console_router
from oncall.conversation.handler import ConversationHandler
from oncall.conversation.model import ReplyModel
from oncall.incidents.retention import RawAlertRetention
from oncall.incidents.scheduler import InvestigationScheduler
from oncall.investigate.aftercare import Aftercare
from oncall.investigate.engines.base import Engine
from oncall.investigate.engines.model import ModelEngine, build_client
from oncall.investigate.engines.offline.engine import OfflineEngine
from oncall.investigate.history import IncidentHistory
from oncall.investigate.investigator import Investigator
from oncall.investigate.setup import build_tool_factory, load_service_catalog
from oncall.investigate.tools import ToolFactory
from oncall.metrics import INCIDENTS_OPEN
from oncall.redaction import Redactor, install_log_redaction
from oncall.settings import Settings, get_settings
from oncall.store import incidents as incident_rows
from oncall.store.database import Store
from oncall.store.migrate import migrate
from oncall.tasks import BackgroundTasks, watch_loop_lag

log = logging.getLogger("oncall.agent")

HTTP_TIMEOUT_S = 10.0  # default for the shared outbound client; each call passes its own
DRAIN_TIMEOUT_S = 10.0

ServicesFactory = Callable[[Settings, Store, httpx.AsyncClient, BackgroundTasks], Services]


def investigation_tools(settings: Settings, http: httpx.AsyncClient, store: Store | None = None) -> ToolFactory:
    """The investigation tools of the catalog's services (``SERVICES_FILE``) over the configured sources:
    code reads limited by ``CODE_READ_GLOBS``, every tool's output redacted with the configured secrets, and
    with ``store`` the resolved incidents like the one investigated (``find_similar_incidents``)."""
    return build_tool_factory(settings, http, history=IncidentHistory(store) if store is not None else None)


def build_engines(settings: Settings, tools: ToolFactory, client: openai.AsyncOpenAI | None = None) -> list[Engine]:
    """The model engine first when a model is configured (or ``client`` is given), then the offline engine."""
    engines: list[Engine] = []
    if client is not None or settings.llm_enabled:
        model = ModelEngine(
            client or build_client(settings),
            model=settings.openai_model,
            temperature=settings.llm_temperature,
            max_rounds=settings.llm_max_rounds,
            max_output_chars=settings.tool_output_max_chars,
            tools=tools,
        )
        engines.append(model)
    engines.append(OfflineEngine(tools))
    return engines


def build_sender(settings: Settings, store: Store) -> WhatsAppSender:
    """The WhatsApp sender: Twilio when configured, else the console channel."""
    twilio = None
    if settings.twilio_enabled and settings.twilio_auth_token is not None:
        twilio = build_twilio_client(
            settings.twilio_account_sid or "",
            settings.twilio_auth_token.get_secret_value(),
            settings.twilio_api_base_url,
        )
    return WhatsAppSender(
        store,
        twilio=twilio,
        from_number=settings.twilio_whatsapp_from,
        recipients=settings.oncall_whatsapp_numbers,
        public_base_url=settings.public_base_url,
    )


def build_services(settings: Settings, store: Store, http: httpx.AsyncClient, tasks: BackgroundTasks) -> Services:
    """Every service of the agent, each given what it uses."""
    redact = Redactor(settings.secret_values())
    tools = investigation_tools(settings, http, store)
    investigator = Investigator(
        store,
        build_engines(settings, tools),
        timeout_s=settings.investigation_timeout_s,
        tool_output_max_chars=settings.tool_output_max_chars,
        redact=redact,
        aftercare=Aftercare(tools, IncidentHistory(store)),
    )
    sender, url = build_sender(settings, store), settings.public_base_url
    jira = JiraClient(store, http, JiraConfig.from_settings(settings), url)
    reply_model = None
    if settings.llm_enabled:
        reply_model = ReplyModel(
            build_client(settings),
            store,
            model=settings.openai_model,
            temperature=settings.llm_temperature,
            max_rounds=settings.reply_max_rounds,
            max_output_chars=settings.tool_output_max_chars,
            redact=redact,
        )
    return Services(
        settings=settings,
        store=store,
        http=http,
        tasks=tasks,
        scheduler=InvestigationScheduler(store, investigator, sender, tasks, settings.max_concurrent_investigations),
        conversation=ConversationHandler(store, sender, jira, url, reply_model, settings.confirmation_ttl_s),
    )


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
    try:
        load_service_catalog(settings)
    except CatalogError as exc:
        log.critical("invalid service catalog: %s", exc)
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


def create_app(settings: Settings | None = None, build: ServicesFactory = build_services) -> FastAPI:
    """Build the FastAPI app.

    Args:
        settings: fixed settings (tests); None reads them at start-up with ``get_settings()``.
        build: builds the services from the settings, store, HTTP client and task set (tests inject fakes).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging()
        active = settings or load_settings()
        for integration, state in active.integration_report().items():
            log.info("integration %-19s %s", integration, state)
        redact = Redactor(active.secret_values())
        install_log_redaction(redact)
        await asyncio.to_thread(migrate, active.store_url)
        store = Store(active.store_url, redact)
        log.info("database %s", store.engine.url.render_as_string(hide_password=True))
        tasks = BackgroundTasks()
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as http:
            services = build(active, store, http, tasks)
            app.state.services = services
            await services.scheduler.resume_interrupted()
            async with store.read() as conn:
                INCIDENTS_OPEN.set(await incident_rows.count_firing(conn))
            tasks.spawn_daemon(RawAlertRetention(store, active.raw_alert_retention_days).run(), "raw-alert-retention")
            tasks.spawn_daemon(watch_loop_lag(), "event-loop-lag")
            gc.collect()
            gc.freeze()  # start-up objects leave the collector's generations: shorter full-collection pauses
            try:
                yield
            finally:
                await tasks.drain(DRAIN_TIMEOUT_S)
                await store.close()

    app = FastAPI(title="AI on-call agent", lifespan=lifespan)
    for router in (alerts.router, incidents.router, twilio.router, health.router, console_router):
        app.include_router(router)
    install_components(app)
    return app


app = create_app()
