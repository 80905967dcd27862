"""``/incidents``: list, detail, alerts, acknowledge, resolve and the post-mortem draft by HTTP; every route
needs ``ONCALL_API_TOKEN``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from oncall.api.deps import ApiTokenDep, ServicesDep
from oncall.channels.whatsapp.format import incident_url
from oncall.history.phases import phase_timings, timings_json
from oncall.history.postmortem import postmortem_markdown
from oncall.incidents import actions
from oncall.store import incidents as incident_rows
from oncall.store.rows import MAX_ID
from oncall.store.views import incident_detail, incident_list

router = APIRouter(dependencies=[ApiTokenDep])
IncidentId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="Incident id (a positive 64-bit integer).")]
MARKDOWN = "text/markdown; charset=utf-8"


class ActorBody(BaseModel):
    """Who acknowledges or resolves an incident by API (a name, a number or a tool name)."""

    by: str = Field(default="api", min_length=1, max_length=200)


@router.get("/incidents")
async def get_incidents(
    services: ServicesDep,
    status: Literal["firing", "resolved"] | None = None,
    limit: int = Query(default=50, ge=1, le=500),
) -> dict[str, Any]:
    """Incident summaries, newest first: {"incidents": [...], "count": n}."""
    async with services.store.read() as conn:
        rows = await incident_list(conn, status=status, limit=limit)
    return {"incidents": rows, "count": len(rows)}


@router.get("/incidents/{incident_id}")
async def get_incident_detail(incident_id: IncidentId, services: ServicesDep) -> dict[str, Any]:
    """The incident with its alerts, diagnosis, timeline, investigations, tool calls, messages, tickets, pages
    (escalation levels: who was paged and why) and ``phase_timings`` of its latest episode
    (``oncall.history.phases.timings_json``); 404 unknown."""
    async with services.store.read() as conn:
        detail = await incident_detail(conn, incident_id)
    if detail is None:
        raise HTTPException(status_code=404, detail=f"incident {incident_id} not found")
    return {**detail, "phase_timings": timings_json(phase_timings(detail))}


@router.post("/incidents/{incident_id}/acknowledge")
async def post_acknowledge(
    incident_id: IncidentId, services: ServicesDep, body: ActorBody | None = None
) -> dict[str, Any]:
    """Acknowledge the incident (body {"by": name}, optional) as a WhatsApp "ack" would; 404 unknown.
    Answers {"incident_id", "acknowledged", "already", "message"}."""
    try:
        outcome = await actions.acknowledge(services.store, incident_id, (body or ActorBody()).by)
    except LookupError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    return {"incident_id": incident_id, **outcome}


@router.post("/incidents/{incident_id}/resolve")
async def post_resolve(incident_id: IncidentId, services: ServicesDep, body: ActorBody | None = None) -> dict[str, Any]:
    """Resolve the incident by hand (body {"by": name}, optional) as a WhatsApp "resolve" would; 404 unknown.
    Answers {"incident_id", "resolved", "already", "message"}."""
    try:
        outcome = await actions.resolve(services.store, incident_id, (body or ActorBody()).by)
    except LookupError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    return {"incident_id": incident_id, **outcome}


@router.get("/incidents/{incident_id}/alerts")
async def get_incident_alerts(
    incident_id: IncidentId,
    services: ServicesDep,
    status: Literal["firing", "resolved"] | None = None,
    offset: int = Query(default=0, ge=0, le=MAX_ID),
    limit: int = Query(default=100, ge=1, le=1000),
) -> dict[str, Any]:
    """Every alert of the incident, page by page (oldest first): {"incident_id", "total", "offset",
    "alerts"}; 404 unknown incident."""
    async with services.store.read() as conn:
        if await incident_rows.get(conn, incident_id) is None:
            raise HTTPException(status_code=404, detail=f"incident {incident_id} not found")
        total, rows = await incident_rows.alerts_page(conn, incident_id, status=status, offset=offset, limit=limit)
    return {"incident_id": incident_id, "total": total, "offset": offset, "alerts": rows}


@router.get(
    "/incidents/{incident_id}/postmortem",
    response_class=Response,
    responses={200: {"content": {"text/markdown": {"schema": {"type": "string"}}}, "description": "Markdown"}},
)
async def get_postmortem(incident_id: IncidentId, services: ServicesDep) -> Response:
    """The incident's post-mortem draft (Markdown): the one stored when it resolved, else drafted now
    from what is known so far; 404 unknown."""
    async with services.store.read() as conn:
        markdown = await postmortem_markdown(
            conn, incident_id, incident_url=incident_url(services.settings.public_base_url, incident_id)
        )
    if markdown is None:
        raise HTTPException(status_code=404, detail=f"incident {incident_id} not found")
    return Response(markdown, media_type=MARKDOWN)
