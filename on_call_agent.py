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

from oncall.api import alerts, health, incidents, remediation, twilio
from oncall.api.deps import Services
from oncall.api.schemas import install_components
from oncall.catalog.loader import CatalogError
from oncall.channels.jira.client import JiraClient
from oncall.channels.jira.delivery import JiraIssueDelivery
from oncall.channels.jira.models import JiraConfig
from oncall.channels.outbox import Deliverer, OutboxWorker
from oncall.channels.whatsapp.sender import WhatsAppSender
from oncall.console.routes import router as console_router
from oncall.conversation.handler import ConversationHandler
from oncall.conversation.model import ReplyModel
from oncall.incidents.applier import RawAlertApplier
from oncall.incidents.checks import RemediationDesk
from oncall.incidents.escalation import EscalationPoller
from oncall.incidents.followup import followup_deliverers
from oncall.incidents.intake import RawAlertIntake
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
from oncall.paging.answer import on_call_answer
from oncall.paging.escalation import Escalations
from oncall.redaction import Redactor, install_log_redaction
from oncall.remediation.setup import build_remediation, proposing
from oncall.settings import Settings, get_settings
from oncall.store import incidents as incident_rows
from oncall.store.database import Store
from oncall.store.migrate import migrate
from oncall.tasks import BackgroundTasks, watch_loop_lag

log = logging.getLogger("oncall.agent")

HTTP_TIMEOUT_S = 10.0  # default for the shared outbound client; each call passes its own
DRAIN_TIMEOUT_S = 10.0

ServicesFactory = Callable[[Settings, Store, httpx.AsyncClient, BackgroundTasks], Services]


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


def build_services(settings: Settings, store: Store, http: httpx.AsyncClient, tasks: BackgroundTasks) -> Services:
    """Every service of the agent, each given what it uses."""
    s, redact, catalog = settings, Redactor(settings.secret_values()), load_service_catalog(settings)
    history = IncidentHistory(store)
    tools = build_tool_factory(s, http, catalog, history)
    investigator = Investigator(
        store,
        build_engines(s, tools),
        timeout_s=s.investigation_timeout_s,
        tool_output_max_chars=s.tool_output_max_chars,
        redact=redact,
        replica_id=s.agent_replica_id,
        aftercare=Aftercare(tools, history),
    )
    sender, config = WhatsAppSender.from_settings(s, store), JiraConfig.from_settings(s)
    deliverers: dict[str, Deliverer] = {"whatsapp": sender, "jira": JiraIssueDelivery(http, config, sender)}
    outbox = OutboxWorker.from_settings(
        s, store, tasks, {**deliverers, **followup_deliverers(s, http, config, catalog)}
    )
    sender.wake = outbox.wake
    escalations = Escalations(s.roster, s.oncall_whatsapp_numbers, catalog)
    jira = JiraClient(store, http, config, s.public_base_url, wake=outbox.wake)
    remedy = build_remediation(s, store, http, tasks, sender, catalog)
    proposer = proposing(investigator, s, http, catalog, remedy)
    scheduler = InvestigationScheduler.from_settings(
        s, store, proposer, tasks, on_outcome=outbox.wake, escalations=escalations
    )
    desk = RemediationDesk(store, catalog, scheduler, remedy)
    applier = RawAlertApplier(
        store, s.agent_replica_id, s.lease_s, on_investigation=scheduler.wake, on_notice=outbox.wake
    )
    return Services(
        settings=s,
        store=store,
        http=http,
        tasks=tasks,
        scheduler=scheduler,
        conversation=ConversationHandler(
            store,
            sender,
            jira,
            s.public_base_url,
            ReplyModel.from_settings(s, store, redact),
            s.confirmation_ttl_s,
            remediation=desk,
            on_call=on_call_answer(s, catalog),
        ),
        outbox=outbox,
        intake=RawAlertIntake(store, s.agent_replica_id, applier),
        applier=applier,
        remediation=desk,
        escalation=EscalationPoller.from_settings(s, store, escalations, sender, on_paged=outbox.wake),
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
        log.info("database %s, replica %s", store.shown_url, active.agent_replica_id)
        tasks = BackgroundTasks()
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as http:
            services = build(active, store, http, tasks)
            app.state.services = services
            await services.start()
            async with store.read() as conn:
                INCIDENTS_OPEN.set(await incident_rows.count_firing(conn))
            tasks.spawn_daemon(RawAlertRetention(store, active.raw_alert_retention_days).run(), "raw-alert-retention")
            tasks.spawn_daemon(watch_loop_lag(), "event-loop-lag")
            gc.collect()
            gc.freeze()  # start-up objects leave the collector's generations: shorter full-collection pauses
            try:
                yield
            finally:
                await services.stop()
                await tasks.drain(DRAIN_TIMEOUT_S)
                await store.close()

    app = FastAPI(title="AI on-call agent", lifespan=lifespan)
    for router in (alerts.router, incidents.router, remediation.router, twilio.router, health.router, console_router):
        app.include_router(router)
    install_components(app)
    return app


app = create_app()
