"""``POST /alerts``: the Alertmanager webhook receiver (payload v4)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from oncall.api.deps import ServicesDep, bearer_ok
from oncall.incidents.ingest import ingest_notification
from oncall.metrics import ALERT_NOTIFICATIONS

log = logging.getLogger("oncall.api.alerts")
router = APIRouter()

MAX_ALERT_BODY_BYTES = 5 * 1024 * 1024  # an Alertmanager group of thousands of alerts stays far below this


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


@router.post("/alerts")
async def receive_alerts(request: Request, services: ServicesDep) -> JSONResponse:
    """Alertmanager webhook (payload v4). 200 {"status": "accepted"|"duplicate", "incident_id",
    "investigation_started"}; 401 bad/missing bearer token; 413 too large; 422 {"detail": reason,
    "errors": [...], "raw_id"} for malformed bodies (the raw body is stored anyway)."""
    token = services.settings.alerts_bearer_token
    if not bearer_ok(token.get_secret_value() if token else None, request.headers.get("authorization")):
        ALERT_NOTIFICATIONS.labels(outcome="unauthorized").inc()
        log.warning(
            "rejected POST /alerts from %s: missing or wrong bearer token",
            request.client.host if request.client else "?",
        )
        return JSONResponse(
            {"detail": "missing or invalid bearer token"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )
    result = await ingest_notification(services.store, await read_limited_body(request, MAX_ALERT_BODY_BYTES))
    if result.outcome == "invalid":
        return JSONResponse({"detail": result.error, "errors": result.errors, "raw_id": result.raw_id}, status_code=422)
    started = result.start_investigation  # queued in the database; this replica looks at once
    if started:
        services.scheduler.wake()
    if result.resolved_now:
        services.outbox.wake()
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
    return JSONResponse({"status": result.outcome, "incident_id": result.incident_id, "investigation_started": started})
