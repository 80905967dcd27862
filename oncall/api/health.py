"""``GET /healthz`` and ``GET /metrics`` (Prometheus text exposition)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from oncall.api.deps import ServicesDep
from oncall.store import incidents

router = APIRouter()


@router.get("/healthz")
async def healthz(services: ServicesDep) -> JSONResponse:
    """200 {"status": "ok", "db": "ok", "integrations", "incidents_open", "background_tasks"};
    503 when the database fails."""
    try:
        async with services.store.read() as conn:
            open_incidents = await incidents.count_firing(conn)
    except Exception as exc:  # noqa: BLE001 - reported as unhealthy
        return JSONResponse({"status": "error", "db": f"{type(exc).__name__}: {exc}"}, status_code=503)
    return JSONResponse(
        {
            "status": "ok",
            "db": "ok",
            "integrations": services.settings.integration_report(),
            "incidents_open": open_incidents,
            "background_tasks": len(services.tasks),
        }
    )


@router.get("/metrics")
async def metrics() -> Response:
    """Prometheus text exposition of the agent's metrics (``oncall.metrics``) and process metrics."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
