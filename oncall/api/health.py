"""``GET /healthz`` and ``GET /metrics`` (Prometheus text exposition), both open.

``/healthz`` tells anyone only whether the agent and its database answer; the integration report,
open incidents and background tasks are shown to callers with ``ONCALL_API_TOKEN`` only. ``/metrics``
stays open (Prometheus scrapes without credentials): its label values are closed sets chosen by the
agent (outcomes, tool and engine names, fault types), never text from alerts or secrets.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from oncall.api.deps import OptionalCredentials, ServicesDep, api_token_valid
from oncall.store import incidents

log = logging.getLogger("oncall.api.health")
router = APIRouter()


@router.get("/healthz")
async def healthz(services: ServicesDep, credentials: OptionalCredentials) -> JSONResponse:
    """200 {"status": "ok", "db": "ok"} (with ONCALL_API_TOKEN also "integrations", "incidents_open",
    "background_tasks"); 503 {"status": "error", "db": "error"} when the database fails (the reason is logged)."""
    try:
        async with services.store.read() as conn:
            open_incidents = await incidents.count_firing(conn)
    except Exception:  # noqa: BLE001 - reported as unhealthy; the cause goes to the log, not to callers
        log.exception("health check: the database failed")
        return JSONResponse({"status": "error", "db": "error"}, status_code=503)
    body: dict[str, object] = {"status": "ok", "db": "ok"}
    if api_token_valid(services, credentials):
        body.update(
            integrations=services.settings.integration_report(),
            incidents_open=open_incidents,
            background_tasks=len(services.tasks),
        )
    return JSONResponse(body)


@router.get("/metrics")
async def metrics() -> Response:
    """Prometheus text exposition of the agent's metrics (``oncall.metrics``) and process metrics."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
