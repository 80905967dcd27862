"""The incident console in real Chromium (Debian ``chromium`` through Playwright) on a real stack.

One stack (process manager, two replicas, load balancer, Prometheus, Alertmanager, the agent with two
console accounts) and one test walking through what the on-call engineer does: log in, watch an
incident appear during an injected fault without reloading, open it, see its diagnosis arrive live,
follow an evidence link to the tool call that produced it, acknowledge; then a viewer on a phone
who sees everything but cannot act. Every page is screenshotted (``$SCREENSHOT_DIR/<test>`` or the
stack's run folder, ``screenshots/``) and scanned with axe-core: no serious or critical violation.

The remediation step ("approve the proposed action, see the verified recovery") slots in after
``acknowledge``: ``approve_first_action(page)`` clicking the "Approve ..." button of
``#actions-heading``'s section, then waiting for ``.action-status`` to read ``verified``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import argon2
import httpx
import pytest
from playwright.async_api import Page, expect

from stackctl.config import load_timing
from stackctl.stack import Stack, free_stack_ports
from tests.browser import (
    BROWSER_LOOP,
    PHONE_VIEWPORT,
    SCREENSHOT_ENV,
    axe_violations,
    format_violations,
    screenshot,
    watch_console,
)
from tests.e2e_support import ONCALL_NUMBER, incident_detail, needs_prometheus, start_traffic

pytest_plugins = ["tests.browser"]
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(needs_prometheus, reason="prometheus / alertmanager binaries not installed (make deps)"),
]

PASSWORD = "e2e console password"
# Cheap Argon2 parameters keep the logins fast; the agent verifies with the parameters in the hash.
HASH = argon2.PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
ALERT = "InventoryHighErrorRate"
FAULT = {"mode": "errors", "p_error": 0.6}
ALERT_TIMEOUT_MS = 90_000
DIAGNOSIS_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """An isolated stack whose agent has a responder (ravi) and a viewer (vera) console account."""
    run_dir = tmp_path_factory.mktemp("console-stack")
    agent_env: dict[str, str | None] = {
        "ONCALL_WHATSAPP_NUMBERS": ONCALL_NUMBER,
        "TWILIO_AUTH_TOKEN": "e2e-webhook-token",
        "CONSOLE_USERS": f"ravi:responder:{HASH};vera:viewer:{HASH}",
        "CONSOLE_SESSION_SECRET": "e2e-console-session-secret-0123456789",
        "CONSOLE_LIVE_INTERVAL_S": "0.5",
    }
    stack = Stack(run_dir=run_dir, ports=free_stack_ports(), timing=load_timing(), isolated=True, agent_env=agent_env)
    try:
        stack.start(replicas=2)
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def shots(stack: Stack, screenshot_dir: Path) -> Path:
    """Where the screenshots go: ``$SCREENSHOT_DIR/<test>`` when set, else the stack's run folder."""
    return screenshot_dir if os.environ.get(SCREENSHOT_ENV) else stack.run_dir / "screenshots"


async def check_page(page: Page, shots: Path, name: str) -> None:
    """Screenshot the page and assert axe-core finds no serious or critical violation on it."""
    await screenshot(page, shots, name)
    violations = await axe_violations(page)
    assert violations == [], f"{name}: {format_violations(violations)}"


async def log_in(page: Page, base_url: str, user: str, shots: Path | None = None) -> None:
    """Open the incident list, get sent to the login form, log in, land back on the list."""
    await page.goto(f"{base_url}/ui/incidents")
    await expect(page.get_by_role("heading", name="Log in to the incident console")).to_be_visible()
    if shots is not None:
        await check_page(page, shots, "login")
    await page.get_by_label("User name").fill(user)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("heading", name="Incidents", exact=True)).to_be_visible()
    await expect(page.locator("#live")).to_have_text("Live updates on")  # the event stream is open


async def watch_incident_arrive(page: Page, stack: Stack) -> int:
    """Inject the fault while the list is open; the incident's row must appear without a reload."""
    await page.evaluate("window.consoleMarker = 'no reload'")
    async with httpx.AsyncClient(timeout=15) as client:
        (await client.post(f"{stack.url('pm')}/fault", json=FAULT)).raise_for_status()
    row = page.locator("#incident-rows tr", has_text=ALERT).first
    await expect(row).to_be_visible(timeout=ALERT_TIMEOUT_MS)
    assert await page.evaluate("window.consoleMarker") == "no reload"
    href = await row.get_by_role("link").get_attribute("href")
    assert href is not None and href.startswith("/ui/incidents/")
    return int(href.rsplit("/", 1)[1])


async def open_incident(page: Page, incident_id: int) -> None:
    """Open the incident from its row and wait for the diagnosis to arrive on the open page."""
    await page.locator(f"#incident-{incident_id}").get_by_role("link").click()
    await expect(page.locator("#live")).to_have_text("Live updates on")
    await expect(page.locator("#diagnosis-summary")).to_be_visible(timeout=DIAGNOSIS_TIMEOUT_MS)
    await expect(page.locator("#fault-type")).to_have_text("injected_errors")


async def follow_first_evidence(page: Page, shots: Path) -> None:
    """Follow the first evidence link to its tool call: the same tool, with its arguments and result."""
    item = page.locator("ol.evidence > li").first
    tool = (await item.locator(".tool").inner_text()).strip()
    await item.locator(".evidence-link").click()
    await expect(page.locator("#tool-name")).to_have_text(tool)
    await expect(page.locator("#call-outcome")).to_have_text("ok")
    await expect(page.locator("#call-arguments")).to_be_visible()
    await expect(page.locator("#call-result")).not_to_be_empty()
    await check_page(page, shots, "tool-call")
    await page.go_back()


async def acknowledge(page: Page, incident_id: int) -> None:
    """Acknowledge with a note; the page and the shared timeline name the console user."""
    await page.get_by_label("Acknowledgement note (optional)").fill("looking at it from the console")
    await page.get_by_role("button", name="Acknowledge").click()
    await expect(page.locator(".notice")).to_contain_text(f"#{incident_id} {ALERT} acknowledged by ravi via console")
    await expect(page.locator("#incident-ack")).to_contain_text("by ravi via console")


async def viewer_cannot_act(page: Page, base_url: str, incident_id: int, shots: Path) -> None:
    """A viewer (on a phone) sees the incident, no action button, and a forged POST gets 403."""
    await log_in(page, base_url, "vera")
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE_VIEWPORT["width"]
    await check_page(page, shots, "incidents-phone")
    await screenshot(page, shots, "incidents-phone-viewport", full_page=False)  # docs/console-phone.png
    await page.goto(f"{base_url}/ui/incidents/{incident_id}")
    await expect(page.locator("#viewer-hint")).to_be_visible()
    assert await page.get_by_role("button", name="Acknowledge").count() == 0
    assert await page.get_by_role("button", name="Resolve").count() == 0
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE_VIEWPORT["width"]
    await check_page(page, shots, "incident-phone")
    csrf = await page.locator("form.logout input[name=csrf_token]").get_attribute("value")
    forged = await page.request.post(
        f"{base_url}/ui/incidents/{incident_id}/resolve", form={"csrf_token": csrf or ""}, max_redirects=0
    )
    assert forged.status == 403 and "only a responder" in await forged.text()


@BROWSER_LOOP
async def test_console_from_login_to_acknowledged_incident_and_a_read_only_viewer(
    page: Page, phone_page: Page, stack: Stack, shots: Path
) -> None:
    base_url = stack.url("agent")
    problems = [watch_console(page), watch_console(phone_page)]
    shots.mkdir(parents=True, exist_ok=True)
    traffic = start_traffic(stack, ["--profile", "constant", "--rps", "20", "--duration", "120"], shots / "traffic.log")
    try:
        await log_in(page, base_url, "ravi", shots)
        incident_id = await watch_incident_arrive(page, stack)
        await check_page(page, shots, "incidents")
        await open_incident(page, incident_id)
        await check_page(page, shots, "incident")
        await follow_first_evidence(page, shots)
        await acknowledge(page, incident_id)
        await check_page(page, shots, "incident-acknowledged")
        await screenshot(page, shots, "incident-viewport", full_page=False)  # the README's docs/console.png
        # Remediation lands here: await approve_first_action(page); await check_page(page, shots, "recovered")
        for path, name in (("/ui/services", "services"), ("/ui/status", "status")):
            await page.goto(f"{base_url}{path}")
            await check_page(page, shots, name)
        await viewer_cannot_act(phone_page, base_url, incident_id, shots)
    finally:
        traffic.terminate()
        traffic.wait(timeout=15)
    events = incident_detail(stack, incident_id)["timeline"]
    acknowledged = [event["detail"] for event in events if event["kind"] == "acknowledged"]
    assert acknowledged == [{"by": "ravi via console", "note": "looking at it from the console"}]
    assert not [event for event in events if event["kind"] == "resolved" and event["detail"].get("manual")]
    assert problems == [[], []]
