"""The real incident console in Chromium, served by uvicorn on a loopback port (no demo stack).

What only a browser shows: htmx swaps under the console's strict Content-Security-Policy. Tools that
inspect a page (axe-core, browser extensions, devtools) leave an empty ``style=""`` on elements they
touched; htmx's settle step copies the ``style`` attribute of an element that a swap replaces (same
``id``), and ``style-src 'self'`` refuses that as an inline style: a console error on every live update.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, expect

from on_call_agent import create_app
from tests.browser import BROWSER_LOOP, serve_asgi, watch_console
from tests.support import post_alert
from tests.test_agent_api import API
from tests.test_console import PASSWORD, console_settings, with_evidence
from tests.test_ingest import capture, webhook_bytes

pytest_plugins = ["tests.browser"]
pytestmark = [pytest.mark.e2e]


@pytest.fixture
def console_url(tmp_path: Path) -> Iterator[str]:
    """The agent with two console accounts, served on a free loopback port for one test."""
    app = create_app(console_settings(tmp_path, CONSOLE_LIVE_INTERVAL_S="0.2"), build=with_evidence)
    with serve_asgi(app) as base_url:
        yield base_url


async def post_group(base_url: str, group_key: str) -> int:
    """POST the captured notification regrouped under ``group_key``; return its incident id once applied."""
    body = capture(1)["body"]
    body["groupKey"] = group_key
    async with httpx.AsyncClient(base_url=base_url, headers=API, timeout=10) as client:
        state = await post_alert(client, webhook_bytes(body))
    return int(state["incident_id"])


@BROWSER_LOOP
async def test_live_updates_swap_rows_a_page_inspector_touched_without_a_policy_violation(
    console_url: str, page: Page
) -> None:
    first = await post_group(console_url, '{}:{alertname="first"}')
    problems = watch_console(page)
    await page.goto(f"{console_url}/ui/incidents")
    await page.get_by_label("User name").fill("ravi")
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#live")).to_have_text("Live updates on")
    row = page.locator(f"#incident-{first}")
    await expect(row).to_be_visible()
    await row.evaluate("element => { element.style.color = 'black'; element.style.color = ''; }")
    assert await row.get_attribute("style") == ""  # what axe-core leaves behind

    second = await post_group(console_url, '{}:{alertname="second"}')
    await expect(page.locator(f"#incident-{second}")).to_be_visible()  # the list re-rendered, the old row with it
    await expect(row).to_be_visible()
    assert problems == []
