"""``GET /healthz`` and ``GET /metrics`` (Prometheus text exposition), both open.

``/healthz`` tells anyone only whether the agent and its database answer and whether messages are stuck in
the outbox (``degraded``); which replica answered, the integration report, open incidents, background
tasks and the outbox and investigation backlogs are shown to callers with ``ONCALL_API_TOKEN`` only. ``/metrics``
stays open (Prometheus scrapes without credentials): its label values are closed sets chosen by the
agent (outcomes, tool and engine names, fault types), never text from alerts or secrets.
"""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from oncall.api.deps import OptionalCredentials, ServicesDep, api_token_valid
from oncall.channels.outbox import backlog
from oncall.store import episodes, incidents

log = logging.getLogger("oncall.api.health")
router = APIRouter()


OUTBOX_DEGRADED_AFTER_S = 300.0  # an undelivered message older than this makes the status "degraded"


@router.get("/healthz")
async def healthz(services: ServicesDep, credentials: OptionalCredentials) -> JSONResponse:
    """200 {"status": "ok"|"degraded", "db": "ok"} (with ONCALL_API_TOKEN also "replica_id", "integrations",
    "incidents_open", "background_tasks", "outbox": {"pending", "failed", "expired", "oldest_pending_age_s"},
    "investigations": {"queued", "running", "expired_leases", "oldest_queued_age_s"}); ``degraded`` while a
    message has been undelivered for more than 5 minutes (``failed``/``expired``: rows given up, all time);
    503 {"status": "error", "db": "error"} when the database fails (the reason is logged)."""
    try:
        now = time.time()
        async with services.store.read() as conn:
            open_incidents = await incidents.count_firing(conn)
            claims = await episodes.backlog(conn, now)
        pending = await backlog(services.store)
    except Exception:  # noqa: BLE001 - reported as unhealthy; the cause goes to the log, not to callers
        log.exception("health check: the database failed")
        return JSONResponse({"status": "error", "db": "error"}, status_code=503)
    oldest = claims.pop("oldest_queued_at")
    claims["oldest_queued_age_s"] = round(now - oldest, 1) if oldest is not None else None
    stuck = (pending["oldest_pending_age_s"] or 0) > OUTBOX_DEGRADED_AFTER_S
    body: dict[str, object] = {"status": "degraded" if stuck else "ok", "db": "ok"}
    if api_token_valid(services, credentials):
        body.update(
            replica_id=services.settings.agent_replica_id,
            integrations=services.settings.integration_report(),
            incidents_open=open_incidents,
            background_tasks=len(services.tasks),
            outbox=pending,
            investigations=claims,
        )
    return JSONResponse(body)


@router.get("/metrics")
async def metrics() -> Response:
    """Prometheus text exposition of the agent's metrics (``oncall.metrics``) and process metrics."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
