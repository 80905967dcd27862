"""The console's pages: incident list, incident, tool call, services and on-call, status.

Every page needs a session (else 303 to the login page). The live parts (the list's rows, the
incident's body) are rendered by the same partial templates that ``oncall.console.live`` pushes, and
carry a ``version`` (hash of the rendered partial) so the stream only sends what changed since.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from oncall.api.deps import Services, ServicesDep
from oncall.console import views
from oncall.console.auth import Session
from oncall.console.deps import AuthDep, PageSession, set_session_cookie
from oncall.console.templating import fragment, render
from oncall.store import incidents as incident_rows
from oncall.store.views import incident_detail, incident_list

router = APIRouter(include_in_schema=False)

MAX_ID = 2**63 - 1
LIST_SCAN = 500
"""Newest incidents read for the list page (then filtered by service) and the overview pages."""
LIST_SHOWN = 100
"""Incidents shown on the list page."""
APPROVALS_SCAN = 50
"""Newest firing incidents whose proposed actions the status page lists."""
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]
"""An incident or tool-call id: a positive 64-bit integer."""
StatusFilter = Literal["", "firing", "resolved"]
ServiceFilter = Annotated[str, Query(max_length=200)]


def version(html: str) -> str:
    """A short hash of a rendered live partial: the stream sends the partial again only when it changes."""
    return hashlib.sha256(html.encode()).hexdigest()[:16]


def remediation_enabled(services: Services) -> bool:
    """True when the agent has a remediation service that takes approve and reject decisions.

    Extension point: the remediation feature adds ``remediation`` to ``oncall.api.deps.Services``.
    """
    return getattr(services, "remediation", None) is not None


def base_context(session: Session, nav: str) -> dict[str, Any]:
    """What the layout needs: the session (user, role, CSRF token, one-shot notice) and the active nav item."""
    return {"session": session, "csrf_token": session.csrf, "nav": nav, "notice": session.notice}


def page(request: Request, auth: AuthDep, session: Session, name: str, context: dict[str, Any]) -> Response:
    """Render a page; a notice the session carried is shown once, then dropped from the cookie."""
    response = render(request, name, context)
    if session.notice:
        set_session_cookie(response, auth, auth.with_notice(session, None))
    return response


async def list_rows(services: Services, status: StatusFilter, service: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The incidents to list (newest first, filtered) and every service name seen in the scanned ones."""
    async with services.store.read() as conn:
        rows = await incident_list(conn, status=status or None, limit=LIST_SCAN)
    return views.filter_by_service(rows, service, LIST_SHOWN), views.service_names(rows)


def rows_context(rows: list[dict[str, Any]], status: StatusFilter, service: str) -> dict[str, Any]:
    """The context of ``_incident_rows.html`` (the live part of the list)."""
    return {"incidents": rows, "status": status, "service": service}


@router.get("/ui")
async def get_console_root() -> Response:
    """The console starts at the incident list."""
    return RedirectResponse("/ui/incidents", status_code=303)


@router.get("/ui/incidents")
async def get_incident_list(
    request: Request,
    session: PageSession,
    auth: AuthDep,
    services: ServicesDep,
    status: StatusFilter = "",
    service: ServiceFilter = "",
) -> Response:
    """Incidents, newest first, filtered by status (``firing`` = open, ``resolved``) and service; live."""
    rows, names = await list_rows(services, status, service)
    rows_html = fragment("_incident_rows.html", rows_context(rows, status, service))
    context = {
        **base_context(session, "incidents"),
        **rows_context(rows, status, service),
        "services": names,
        "rows_html": rows_html,
        "version": version(rows_html),
    }
    return page(request, auth, session, "incidents.html", context)


async def load_detail(services: Services, incident_id: int) -> dict[str, Any] | None:
    """The incident's detail (``oncall.store.views.incident_detail``), or None."""
    async with services.store.read() as conn:
        return await incident_detail(conn, incident_id)


def body_context(detail: dict[str, Any], session: Session, services: Services) -> dict[str, Any]:
    """The context of ``_incident_body.html`` (the live part of the incident page)."""
    return {
        **views.incident_context(detail, remediation_enabled(services)),
        "session": session,
        "csrf_token": session.csrf,
    }


def not_found(request: Request, session: Session, what: str) -> Response:
    """The 404 page."""
    context = {**base_context(session, ""), "title": "Not found", "message": f"{what} not found."}
    return render(request, "error.html", context, status_code=404)


@router.get("/ui/incidents/{incident_id}")
async def get_incident_page(
    incident_id: RowId, request: Request, session: PageSession, auth: AuthDep, services: ServicesDep
) -> Response:
    """One incident: diagnosis, evidence linked to tool calls, alerts, who was paged, timeline, messages,
    tickets, tool calls; acknowledge and resolve for responders; live."""
    detail = await load_detail(services, incident_id)
    if detail is None:
        return not_found(request, session, f"Incident #{incident_id}")
    body_html = fragment("_incident_body.html", body_context(detail, session, services))
    context = {**base_context(session, "incidents"), "incident": detail, "body_html": body_html}
    return page(request, auth, session, "incident.html", {**context, "version": version(body_html)})


@router.get("/ui/incidents/{incident_id}/tool-calls/{call_id}")
async def get_tool_call_page(
    incident_id: RowId, call_id: RowId, request: Request, session: PageSession, services: ServicesDep
) -> Response:
    """One tool call of the incident's audit trail: arguments, result or error, timing, and the evidence
    items it produced."""
    detail = await load_detail(services, incident_id)
    call = next((c for c in (detail or {}).get("tool_calls", []) if c["id"] == call_id), None)
    if detail is None or call is None:
        return not_found(request, session, f"Tool call {call_id} of incident #{incident_id}")
    produced = [link for link in views.all_evidence_links(detail) if link.call_id == call_id]
    context = {**base_context(session, "incidents"), "incident": detail, "call": call, "produced": produced}
    return render(request, "tool_call.html", context)


@router.get("/ui/services")
async def get_services_page(request: Request, session: PageSession, auth: AuthDep, services: ServicesDep) -> Response:
    """Services seen in incidents (open and total incidents, the newest one) and who is on call now."""
    async with services.store.read() as conn:
        rows = await incident_list(conn, limit=LIST_SCAN)
    context = {
        **base_context(session, "services"),
        "services": views.services_overview(rows),
        "oncall": views.oncall_now(services.settings),
    }
    return page(request, auth, session, "services.html", context)


@router.get("/ui/status")
async def get_status_page(request: Request, session: PageSession, auth: AuthDep, services: ServicesDep) -> Response:
    """Integrations, running and queued investigations (all replicas), this process' background tasks,
    safety mode and pending approvals (when those features are present)."""
    async with services.store.read() as conn:
        rows = await incident_list(conn, limit=LIST_SCAN)
        firing = [row for row in rows if row["status"] == "firing"]
        open_incidents = [
            row for row in [await incident_rows.get(conn, r["id"]) for r in firing[:APPROVALS_SCAN]] if row
        ]
    context = {
        **base_context(session, "status"),
        "integrations": services.settings.integration_report(),
        "queue": views.investigation_queue(rows),
        "open_count": len(firing),
        "tasks": views.background_tasks(services.tasks),
        "safety_mode": getattr(services.settings, "safety_mode", None),
        "pending_approvals": views.pending_approvals(open_incidents),
        "remediation_enabled": remediation_enabled(services),
    }
    return page(request, auth, session, "status.html", context)
