"""``GET /healthz`` and ``GET /metrics`` (Prometheus text exposition)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from oncall.api.deps import ServicesDep
from oncall.channels.outbox import backlog
from oncall.store import episodes, incidents

router = APIRouter()


OUTBOX_DEGRADED_AFTER_S = 300.0  # an undelivered message older than this makes the status "degraded"


@router.get("/healthz")
async def healthz(services: ServicesDep) -> JSONResponse:
    """200 {"status": "ok"|"degraded", "replica_id", "db": "ok", "integrations", "incidents_open",
    "background_tasks", "outbox": {"pending", "failed", "expired", "oldest_pending_age_s"},
    "investigations": {"queued", "running", "expired_leases", "oldest_queued_age_s"}}; ``degraded``
    while a message has been undelivered for more than 5 minutes (``failed``/``expired``: rows given up,
    all time). 503 when the database fails."""
    settings = services.settings
    try:
        now = time.time()
        async with services.store.read() as conn:
            open_incidents = await incidents.count_firing(conn)
            claims = await episodes.backlog(conn, now)
        pending = await backlog(services.store)
    except Exception as exc:  # noqa: BLE001 - reported as unhealthy
        return JSONResponse(
            {"status": "error", "replica_id": settings.agent_replica_id, "db": f"{type(exc).__name__}: {exc}"},
            status_code=503,
        )
    oldest = claims.pop("oldest_queued_at")
    claims["oldest_queued_age_s"] = round(now - oldest, 1) if oldest is not None else None
    stuck = (pending["oldest_pending_age_s"] or 0) > OUTBOX_DEGRADED_AFTER_S
    return JSONResponse(
        {
            "status": "degraded" if stuck else "ok",
            "replica_id": settings.agent_replica_id,
            "db": "ok",
            "integrations": settings.integration_report(),
            "incidents_open": open_incidents,
            "background_tasks": len(services.tasks),
            "outbox": pending,
            "investigations": claims,
        }
    )


@router.get("/metrics")
async def metrics() -> Response:
    """Prometheus text exposition of the agent's metrics (``oncall.metrics``) and process metrics."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
