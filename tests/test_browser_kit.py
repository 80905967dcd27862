"""Proof of the browser test kit (tests/browser.py) in real Chromium.

A small server-rendered console lives in this file only (it is not product code): Jinja2 templates
served with TemplateResponse, the vendored htmx and its SSE extension from a StaticFiles mount of
``oncall/console/static``, a strict Content-Security-Policy, a live incident list fed by server-sent
events (sse-starlette) and an acknowledge form protected by a CSRF token (double submit: cookie and
hidden field). uvicorn serves it on a free loopback port; Chromium loads it, sees a new row arrive
without a reload, submits the form, takes desktop and phone screenshots and runs axe-core.
"""

from __future__ import annotations

import asyncio
import secrets
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jinja2
import pytest
from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from playwright.async_api import Browser, Page, expect
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse

from tests.browser import (
    BROWSER_LOOP,
    CHROMIUM_ARGS,
    PHONE_SCALE_FACTOR,
    PHONE_VIEWPORT,
    axe_violations,
    format_violations,
    screenshot,
    serve_asgi,
    watch_console,
)

# The kit's fixtures (chromium, page, phone_page, screenshot_dir): registered once for the whole session.
pytest_plugins = ["tests.browser"]
# Async tests run on the session loop where the browser lives (BROWSER_LOOP); the module also has a sync test.
pytestmark = [pytest.mark.e2e]

STATIC_DIR = Path(__file__).resolve().parents[1] / "oncall" / "console" / "static"
CSRF_COOKIE = "csrftoken"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

TEMPLATES = {
    "index.html": """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="htmx-config" content='{"includeIndicatorStyles": false}'>
  <title>Incidents - toy console</title>
  <link rel="stylesheet" href="/toy.css">
  <script src="/static/htmx.min.js"></script>
  <script src="/static/htmx-ext-sse.min.js"></script>
</head>
<body>
  <header><h1>Incidents</h1></header>
  <main hx-ext="sse" sse-connect="/events">
    <p id="live" role="status" sse-swap="status">Connecting to live updates</p>
    <table>
      <caption>Open incidents</caption>
      <thead><tr><th scope="col">Incident</th><th scope="col">Alert</th><th scope="col">Status</th></tr></thead>
      <tbody id="incident-rows" sse-swap="incident" hx-swap="beforeend">
        {% for incident in incidents %}{% include "row.html" %}{% endfor %}
      </tbody>
    </table>
    <h2>Acknowledge an incident</h2>
    <form hx-post="/acknowledge" hx-target="#ack-result" hx-swap="innerHTML">
      <input type="hidden" name="csrf_token" value="{{ csrf_token }}">
      <label for="incident-id">Incident</label>
      <input id="incident-id" name="incident_id" required>
      <label for="note">Note</label>
      <input id="note" name="note">
      <button type="submit">Acknowledge</button>
    </form>
    <p id="ack-result" role="status"></p>
  </main>
</body>
</html>
""",
    "row.html": (
        '<tr id="{{ incident.id }}"><td>{{ incident.id }}</td><td>{{ incident.alertname }}</td>'
        "<td>{{ incident.status }}</td></tr>"
    ),
    "ack.html": "{{ incident.id }} acknowledged: {{ note }}",
}

CSS = """
body { font-family: "Liberation Sans", "DejaVu Sans", sans-serif; color: #1a1a1a; background: #fff;
       margin: 0 auto; padding: 1rem; max-width: 60rem; line-height: 1.4; }
table { border-collapse: collapse; width: 100%; }
caption { text-align: left; font-weight: bold; padding-bottom: .25rem; }
th, td { border: 1px solid #767676; padding: .5rem; text-align: left; overflow-wrap: anywhere; }
label { display: block; margin-top: .75rem; }
input { font-size: 1rem; padding: .4rem; width: 100%; max-width: 24rem; box-sizing: border-box; }
button { margin-top: .75rem; font-size: 1rem; padding: .5rem 1rem; color: #fff; background: #0b5394;
         border: 0; border-radius: 4px; }
"""


class AlertIn(BaseModel):
    """What the toy console's /alerts endpoint takes (a stand-in for an Alertmanager webhook)."""

    alertname: str = Field(min_length=1, max_length=80)


@dataclass
class ToyConsole:
    """In-memory incidents and the SSE subscribers to notify; used from the server's event loop only."""

    incidents: list[dict[str, str]] = field(default_factory=list)
    subscribers: set[asyncio.Queue[str]] = field(default_factory=set)


def build_console() -> FastAPI:
    """The toy console app (one open incident to start with)."""
    state = ToyConsole(incidents=[{"id": "INC-1", "alertname": "InventoryHighErrorRate", "status": "firing"}])
    templates = Jinja2Templates(env=jinja2.Environment(loader=jinja2.DictLoader(TEMPLATES), autoescape=True))
    app = FastAPI()
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request) -> Response:
        token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
        response = templates.TemplateResponse(
            request, "index.html", {"incidents": state.incidents, "csrf_token": token}
        )
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict")
        return response

    @app.get("/favicon.ico", status_code=204)
    async def favicon() -> None:
        return None

    @app.get("/toy.css")
    async def stylesheet() -> Response:
        return Response(CSS, media_type="text/css")

    @app.post("/alerts", status_code=201)
    async def alert(body: AlertIn) -> dict[str, str]:
        incident = {"id": f"INC-{len(state.incidents) + 1}", "alertname": body.alertname, "status": "firing"}
        state.incidents.append(incident)
        row = templates.get_template("row.html").render(incident=incident)
        for queue in state.subscribers:
            queue.put_nowait(row)
        return incident

    @app.get("/events")
    async def events() -> EventSourceResponse:
        queue: asyncio.Queue[str] = asyncio.Queue()

        async def stream() -> AsyncIterator[dict[str, str]]:
            state.subscribers.add(queue)
            try:
                yield {"event": "status", "data": "Live updates on"}
                while True:
                    yield {"event": "incident", "data": await queue.get()}
            finally:
                state.subscribers.discard(queue)

        return EventSourceResponse(stream())

    @app.post("/acknowledge", response_class=HTMLResponse)
    async def acknowledge(
        request: Request,
        incident_id: str = Form(max_length=20),
        note: str = Form("", max_length=200),
        csrf_token: str = Form(""),
    ) -> Response:
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if not cookie or not secrets.compare_digest(cookie, csrf_token):
            raise HTTPException(403, "CSRF token missing or wrong")
        incident = next((item for item in state.incidents if item["id"] == incident_id), None)
        if incident is None:
            raise HTTPException(404, f"no incident {incident_id}")
        incident["status"] = "acknowledged"
        return templates.TemplateResponse(request, "ack.html", {"incident": incident, "note": note})

    return app


@pytest.fixture(scope="module")
def console_url() -> Iterator[str]:
    """The toy console served by uvicorn on a free loopback port for this module's tests."""
    with serve_asgi(build_console()) as base_url:
        yield base_url


def png_size(path: Path) -> tuple[int, int]:
    """Width and height in pixels from a PNG's IHDR chunk (PNG spec, section 11.2.2)."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


@BROWSER_LOOP
async def test_chromium_runs_headless_with_the_closed_network_flags_and_a_fresh_profile(page: Page) -> None:
    await page.goto("chrome://version")
    command_line = await page.inner_text("#command_line")
    flags = command_line.split()
    assert all(flag in flags for flag in CHROMIUM_ARGS), command_line
    assert "--headless" in flags
    profile = next(flag.split("=", 1)[1] for flag in flags if flag.startswith("--user-data-dir="))
    assert Path(profile).is_dir() and "playwright" in Path(profile).name, profile


@BROWSER_LOOP
async def test_new_incident_appears_live_and_the_form_posts_with_its_csrf_token(
    page: Page, console_url: str, screenshot_dir: Path
) -> None:
    problems = watch_console(page)
    await page.goto(console_url)
    await page.evaluate("window.kitMarker = 'no reload'")
    await expect(page.locator("#live")).to_have_text("Live updates on")  # SSE stream open and subscribed
    rows = page.locator("#incident-rows tr")
    before = await rows.count()

    async with httpx.AsyncClient(base_url=console_url, timeout=5) as client:
        created = (await client.post("/alerts", json={"alertname": "InventoryHighLatency"})).json()
    await expect(rows).to_have_count(before + 1)
    await expect(page.locator(f"#{created['id']}")).to_contain_text("InventoryHighLatency")

    await page.get_by_label("Incident").fill(created["id"])
    await page.get_by_label("Note").fill("<b>paged</b> the owner")
    await page.get_by_role("button", name="Acknowledge").click()
    await expect(page.locator("#ack-result")).to_have_text(f"{created['id']} acknowledged: <b>paged</b> the owner")

    assert await page.evaluate("window.kitMarker") == "no reload"
    await screenshot(page, screenshot_dir, "console-desktop")
    violations = await axe_violations(page)
    assert violations == [], format_violations(violations)
    assert problems == []


@BROWSER_LOOP
async def test_phone_screenshot_fits_the_viewport_and_passes_axe(
    phone_page: Page, console_url: str, screenshot_dir: Path
) -> None:
    await phone_page.goto(console_url)
    await expect(phone_page.locator("#live")).to_have_text("Live updates on")
    assert await phone_page.evaluate("document.documentElement.scrollWidth") <= PHONE_VIEWPORT["width"]
    shot = await screenshot(phone_page, screenshot_dir, "console-phone", full_page=False)
    assert png_size(shot) == (
        PHONE_VIEWPORT["width"] * PHONE_SCALE_FACTOR,
        PHONE_VIEWPORT["height"] * PHONE_SCALE_FACTOR,
    )
    violations = await axe_violations(phone_page)
    assert violations == [], format_violations(violations)
    with pytest.raises(ValueError, match="plain file stem"):
        await screenshot(phone_page, screenshot_dir, "../outside")


@BROWSER_LOOP
async def test_form_post_without_the_csrf_token_is_refused(console_url: str) -> None:
    async with httpx.AsyncClient(base_url=console_url, timeout=5) as client:
        await client.get("/")  # sets the CSRF cookie on this client
        missing = await client.post("/acknowledge", data={"incident_id": "INC-1"})
        forged = await client.post("/acknowledge", data={"incident_id": "INC-1", "csrf_token": "forged"})
    assert (missing.status_code, forged.status_code) == (403, 403)


@BROWSER_LOOP
async def test_axe_scan_reports_an_inaccessible_page(page: Page) -> None:
    await page.set_content(
        "<html><body><img src='data:,'><input type='text'>"
        "<p style='color:#bbb;background:#fff'>low contrast text</p></body></html>"
    )
    violations = await axe_violations(page)
    found = {violation["id"] for violation in violations}
    assert {"image-alt", "label", "color-contrast", "html-has-lang"} <= found, found
    assert all(violation["impact"] in {"serious", "critical"} for violation in violations)
    assert "image-alt" in format_violations(violations)
    every_impact = await axe_violations(page, impacts={"minor", "moderate", "serious", "critical"})
    moderate = {violation["id"] for violation in every_impact if violation["impact"] == "moderate"}
    assert "region" in moderate and not moderate & found  # content outside landmarks: reported only on request


def test_asyncio_run_works_while_the_session_browser_is_up(chromium: Browser) -> None:
    # A sync-API Playwright would leave its loop marked as running here and this would raise RuntimeError.
    assert chromium.is_connected()
    assert asyncio.run(asyncio.sleep(0, result="ran")) == "ran"
