"""``POST /alerts``: the Alertmanager webhook receiver (payload v4).

The body is read, hashed and parsed while it streams in (``oncall.incidents.body``): groups up to
``MAX_ALERT_BODY_BYTES`` (64 MiB) are ingested without holding the event loop.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from oncall.api.deps import ServicesDep, bearer_ok
from oncall.api.schemas import json_body
from oncall.incidents.body import MAX_ALERT_BODY_BYTES, BodyTooLarge, receive_notification
from oncall.incidents.ingest import ingest_received
from oncall.incidents.payload import WebhookNotification
from oncall.metrics import ALERT_NOTIFICATIONS

log = logging.getLogger("oncall.api.alerts")
router = APIRouter()


@router.post("/alerts", openapi_extra=json_body(WebhookNotification))
async def receive_alerts(request: Request, services: ServicesDep) -> JSONResponse:
    """Alertmanager webhook (payload v4). 200 {"status": "accepted"|"duplicate", "incident_id",
    "investigation_started"}; 401 bad/missing bearer token; 413 larger than 64 MiB; 422 {"detail": reason,
    "errors": [...], "raw_id"} for malformed bodies (their hash, size, reason and first KiB are stored)."""
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
    try:
        received = await receive_notification(request.stream(), MAX_ALERT_BODY_BYTES)
    except BodyTooLarge as exc:
        ALERT_NOTIFICATIONS.labels(outcome="too_large").inc()
        log.error("refused POST /alerts: %s; the notification is lost (Alertmanager does not retry 4xx)", exc)
        return JSONResponse({"detail": str(exc)}, status_code=413)
    result = await ingest_received(services.store, received)
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
        list(result.new_firing)[:20],
        list(result.newly_resolved)[:20],
        "started" if started else "not started",
        ", incident resolved" if result.resolved_now else "",
    )
    return JSONResponse({"status": result.outcome, "incident_id": result.incident_id, "investigation_started": started})
