"""``GET /status`` (integrations, safety mode, running investigations, pending approvals, recent actions with
their results) and ``POST /investigations`` (an investigation without an alert); both need ``ONCALL_API_TOKEN``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from oncall.api.deps import ApiTokenDep, ServicesDep
from oncall.store.views import incident_list

router = APIRouter(dependencies=[ApiTokenDep])
STATUS_SCAN = 200


class InvestigationRequest(BaseModel):
    """An on-demand investigation of a catalog service (``{"service": "inventory"}``)."""

    service: str = Field(min_length=1, max_length=63, pattern=r"^[a-z][a-z0-9_.-]*$")
    by: str = Field(default="api", min_length=1, max_length=200)


@router.get("/status")
async def get_status(services: ServicesDep) -> dict[str, Any]:
    """``{"integrations", "safety_mode", "investigations": [{incident_id, title, status}], "pending_approvals",
    "recent_actions"}``: ``pending_approvals`` are options of firing incidents' diagnoses not decided within
    ``APPROVAL_TTL_S``; ``recent_actions`` the newest decisions with their status, result and verification."""
    async with services.store.read() as conn:
        rows = await incident_list(conn, limit=STATUS_SCAN)
    running = [
        {"incident_id": r["id"], "title": r["title"], "status": r["investigation_status"]}
        for r in rows
        if r["investigation_status"] in ("pending", "running")
    ]
    desk = services.remediation
    remediation = await desk.status() if desk is not None else {"safety_mode": services.settings.safety_mode}
    return {"integrations": services.settings.integration_report(), "investigations": running, **remediation}


@router.post("/investigations", status_code=202)
async def post_investigation(body: InvestigationRequest, services: ServicesDep) -> dict[str, Any]:
    """Start an investigation of ``service`` without an alert; 202 ``{"incident_id", "service"}``, 404 for a
    service the catalog does not have, 503 when checks are not enabled."""
    if services.remediation is None:
        raise HTTPException(503, "on-demand investigations are not enabled on this agent")
    try:
        incident_id = await services.remediation.start_check(body.service, body.by)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None
    return {"incident_id": incident_id, "service": body.service}
