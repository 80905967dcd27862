"""``POST /alerts``: the Alertmanager webhook receiver (payload v4); ``GET /alerts/{raw_id}``: what became of
one body.

The body is read and hashed as it streams in, then parsed without holding the event loop
(``oncall.incidents.body``; groups up to ``MAX_ALERT_BODY_BYTES``, 64 MiB); a byte-identical copy of a body
already committed (a repeat or a retry) is not parsed again. A valid body is
acknowledged once committed (``oncall.incidents.intake``) and applied right after
(``oncall.incidents.applier``).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from oncall.api.deps import ApiTokenDep, ServicesDep, bearer_ok
from oncall.api.schemas import json_body
from oncall.incidents.body import MAX_ALERT_BODY_BYTES, BodyTooLarge, parse_body, read_body
from oncall.incidents.ingest import store_invalid
from oncall.incidents.intake import IntakeError
from oncall.incidents.payload import WebhookNotification
from oncall.metrics import ALERT_NOTIFICATIONS
from oncall.store import raw_alerts
from oncall.store.rows import MAX_ID

log = logging.getLogger("oncall.api.alerts")
router = APIRouter()
RawId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="The raw_id POST /alerts answered.")]


@router.post("/alerts", openapi_extra=json_body(WebhookNotification), status_code=202)
async def receive_alerts(request: Request, services: ServicesDep) -> JSONResponse:
    """Alertmanager webhook (payload v4). 202 {"status": "queued", "raw_id"} once the body is committed (it
    is applied right after: ``GET /alerts/{raw_id}``); 401 bad/missing bearer token; 413 larger than 64 MiB;
    422 {"detail": reason, "errors": [...], "raw_id"} for malformed bodies (their hash, size, reason and
    first KiB are stored); 503 when the database refused the body (Alertmanager retries 5xx)."""
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
        body = await read_body(request.stream(), MAX_ALERT_BODY_BYTES)
    except BodyTooLarge as exc:
        ALERT_NOTIFICATIONS.labels(outcome="too_large").inc()
        log.error("refused POST /alerts: %s; the notification is lost (Alertmanager does not retry 4xx)", exc)
        return JSONResponse({"detail": str(exc)}, status_code=413)
    try:
        # a repeat or retry of a committed body is not parsed again
        raw_id = await services.intake.store_copy(body.sha256, body.size)
        if raw_id is None:
            received = await parse_body(body)
            if received.notification is None:
                result = await store_invalid(services.store, received)
                detail = {"detail": result.error, "errors": result.errors, "raw_id": result.raw_id}
                return JSONResponse(detail, status_code=422)
            raw_id = await services.intake.store_body(received)
    except IntakeError as exc:
        return JSONResponse({"detail": f"{exc}; retry"}, status_code=503)
    return JSONResponse({"status": "queued", "raw_id": raw_id}, status_code=202)


@router.get("/alerts/{raw_id}", dependencies=[ApiTokenDep])
async def get_raw_alert(raw_id: RawId, services: ServicesDep) -> dict[str, Any]:
    """What became of one webhook body: {"raw_id", "status", "incident_id", "received_at", "received_by",
    "applied_at" (epoch s), "error", "body_bytes"}. ``status``: "queued" (waiting for the applier),
    "accepted" or "duplicate" (applied), "invalid" (refused at the door) or "failed" (applying it raised).
    404 when there is no such body (never stored, or past ``RAW_ALERT_RETENTION_DAYS``). Needs
    ``ONCALL_API_TOKEN``."""
    async with services.store.read() as conn:
        row = await raw_alerts.get(conn, raw_id)
    if row is None:
        raise HTTPException(status_code=404, detail=f"no webhook body {raw_id}")
    return {
        "raw_id": row["id"],
        "status": row["outcome"] or "queued",
        "incident_id": row["incident_id"],
        "received_at": row["received_at"],
        "received_by": row["received_by"],
        "applied_at": row["applied_at"],
        "error": row["error"],
        "body_bytes": row["body_bytes"],
    }
