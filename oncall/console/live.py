"""Live updates of the console over server-sent events (sse-starlette), consumed by htmx's SSE extension.

``GET /ui/events/incidents`` streams the incident list's rows, ``GET /ui/events/incidents/{id}`` the
body of one incident page. Each stream reads the database every ``CONSOLE_LIVE_INTERVAL_S`` seconds
and sends the re-rendered partial only when it differs from what the browser shows (the page passes
the ``v`` version it was rendered with). Reading the shared database rather than listening inside
this process means an incident opened by another agent replica shows up too.

Events: ``live`` (a status line: on, paused while the database does not answer, session expired),
``incidents`` (the list's ``<tbody>`` content), ``incident`` (the incident page's body). A stream ends
when its session expires.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from sse_starlette import EventSourceResponse

from oncall.api.deps import ServicesDep
from oncall.console.deps import AuthDep, StreamSession
from oncall.console.pages import RowId, ServiceFilter, StatusFilter, body_context, list_rows, rows_context, version
from oncall.console.templating import fragment
from oncall.store import incidents as incident_rows
from oncall.store.views import incident_detail

log = logging.getLogger("oncall.console.live")
router = APIRouter(include_in_schema=False)
Version = Annotated[str, Query(max_length=64)]
LIVE_ON = "Live updates on"
LIVE_PAUSED = "Live updates paused: the database does not answer"
LIVE_EXPIRED = "Session expired: reload the page to log in again"


async def updates(
    render: Callable[[], Awaitable[str]],
    event: str,
    shown: str,
    interval_s: float,
    deadline: float,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[dict[str, str]]:
    """Server-sent events for one live partial until ``deadline`` (epoch seconds).

    Args:
        render: renders the partial's current HTML (reads the database).
        event: the event name the page swaps on.
        shown: ``version()`` of the HTML the browser shows; nothing is sent while it is unchanged.
        interval_s: seconds between two reads.
        deadline: when the session expires; the stream then says so and ends.
        clock: the time source (epoch seconds).
    """
    yield {"event": "live", "data": LIVE_ON}
    paused = False
    while clock() < deadline:
        try:
            html = await render()
        except Exception:  # the database is down or busy: say so, keep trying
            log.warning("live update of %s failed", event, exc_info=True)
            if not paused:
                paused = True
                yield {"event": "live", "data": LIVE_PAUSED}
        else:
            if paused:
                paused = False
                yield {"event": "live", "data": LIVE_ON}
            if version(html) != shown:
                shown = version(html)
                yield {"event": event, "data": html}
        await asyncio.sleep(max(0.0, min(interval_s, deadline - clock())))
    yield {"event": "live", "data": LIVE_EXPIRED}


@router.get("/ui/events/incidents")
async def incident_list_events(
    session: StreamSession,
    auth: AuthDep,
    services: ServicesDep,
    status: StatusFilter = "",
    service: ServiceFilter = "",
    v: Version = "",
) -> EventSourceResponse:
    """The incident list's rows (same filters as the page) whenever they change."""

    async def render() -> str:
        rows, _ = await list_rows(services, status, service)
        return fragment("_incident_rows.html", rows_context(rows, status, service))

    deadline = session.issued_at + auth.ttl_s
    return EventSourceResponse(updates(render, "incidents", v, services.settings.console_live_interval_s, deadline))


@router.get("/ui/events/incidents/{incident_id}")
async def incident_events(
    incident_id: RowId, session: StreamSession, auth: AuthDep, services: ServicesDep, v: Version = ""
) -> EventSourceResponse:
    """The incident page's body whenever it changes (diagnosis, acknowledgement, timeline, messages ...);
    404 for an unknown incident."""
    async with services.store.read() as conn:
        if not await incident_rows.exists_id(conn, incident_id):
            raise HTTPException(404, f"incident {incident_id} not found")

    async def render() -> str:
        async with services.store.read() as conn:
            detail = await incident_detail(conn, incident_id)
        if detail is None:
            raise LookupError(f"incident {incident_id} not found")
        return fragment("_incident_body.html", body_context(detail, session, services))

    deadline = session.issued_at + auth.ttl_s
    return EventSourceResponse(updates(render, "incident", v, services.settings.console_live_interval_s, deadline))
