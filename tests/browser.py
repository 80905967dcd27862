"""Browser end-to-end test kit: real Chromium driven by Playwright's async API, axe-core scans, screenshots.

Chromium is the Debian package (``/usr/bin/chromium``, installed by ``scripts/install_system_deps.sh``);
Playwright's own browser download cannot run here. Playwright's *async* API is used on purpose: while a
sync-API Playwright is alive it marks its event loop as running in the main thread, so every later
pytest-asyncio test and every ``asyncio.run()`` of the session fails ("Cannot run the event loop while
another loop is running"). The async API lives on pytest-asyncio's session loop instead and coexists with
``asyncio_mode = auto``: browser tests only have to run on that loop too.

Usage in a test module::

    from tests.browser import BROWSER_LOOP, axe_violations, format_violations, serve_asgi

    pytest_plugins = ["tests.browser"]               # the fixtures below, registered once per session
    pytestmark = [pytest.mark.e2e, BROWSER_LOOP]     # async tests on the session loop (or @BROWSER_LOOP
                                                     # per test when the module also has sync tests)

    async def test_console(page, tmp_path):
        with serve_asgi(app) as base_url:            # uvicorn on a free loopback port, in a thread
            await page.goto(f"{base_url}/ui")
            assert await axe_violations(page) == []

Fixtures, registered by ``pytest_plugins = ["tests.browser"]`` in the test module (or once in
``tests/conftest.py``). Do not import them by name: pytest then sets a session fixture up once per
importing module (one Chromium each), and ruff flags every test argument as F811.

- ``chromium``: the session's ``playwright.async_api.Browser``; skips the test when Chromium is missing.
- ``page``: a fresh context (no cookies, no storage) and page at the desktop viewport, closed after the test.
- ``phone_page``: the same at a phone viewport (390 x 844 CSS pixels, 2x, touch, mobile meta viewport).
- ``screenshot_dir``: where ``screenshot()`` writes: ``$SCREENSHOT_DIR/<test name>`` when that variable
  is set (a run folder to look at afterwards), else the test's ``tmp_path``.

PYTEST_DONT_REWRITE: this module has no asserts, and a test module imports it before its
``pytest_plugins`` registers it, which would otherwise warn that it cannot be rewritten.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import uvicorn
from axe_playwright_python.async_playwright import Axe  # type: ignore[import-untyped]
from axe_playwright_python.base import AxeResults  # type: ignore[import-untyped]
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, ViewportSize, async_playwright

logger = logging.getLogger(__name__)

CHROMIUM_ENV = "CHROMIUM_PATH"
DEFAULT_CHROMIUM = Path("/usr/bin/chromium")
# Headless as root on a closed network: no sandbox (root), no GPU, no QUIC, and none of Chromium's
# background connections (component updates, sync, first-run fetches) that this network refuses.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
DESKTOP_VIEWPORT = ViewportSize(width=1280, height=800)
PHONE_VIEWPORT = ViewportSize(width=390, height=844)
PHONE_SCALE_FACTOR = 2
BLOCKING_IMPACTS = frozenset({"serious", "critical"})
SCREENSHOT_ENV = "SCREENSHOT_DIR"
# Every test that uses the browser fixtures must run on pytest-asyncio's session loop, where the browser lives.
BROWSER_LOOP = pytest.mark.asyncio(loop_scope="session")

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_AXE = Axe()


def chromium_executable() -> Path | None:
    """The Chromium binary to drive: ``$CHROMIUM_PATH``, else ``/usr/bin/chromium``, else ``chromium`` on PATH.

    Returns None when none of them is an executable file.
    """
    override = os.environ.get(CHROMIUM_ENV)
    candidates = [Path(override)] if override else [DEFAULT_CHROMIUM]
    found = shutil.which("chromium")
    if not override and found:
        candidates.append(Path(found))
    return next((path for path in candidates if path.is_file() and os.access(path, os.X_OK)), None)


@asynccontextmanager
async def launch_chromium(executable: Path, *, extra_args: Iterable[str] = ()) -> AsyncIterator[Browser]:
    """Start Playwright's driver and a headless Chromium from ``executable``; stop both on exit.

    Playwright gives the browser a fresh temporary profile (``--user-data-dir``) and deletes it on close.
    Raises ``playwright.async_api.Error`` when the binary does not start.
    """
    started = time.perf_counter()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(executable), headless=True, args=[*CHROMIUM_ARGS, *extra_args]
        )
        logger.info("chromium %s started in %.2f s", browser.version, time.perf_counter() - started)
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def open_page(browser: Browser, *, phone: bool = False, base_url: str | None = None) -> AsyncIterator[Page]:
    """A page in a new browser context (own cookies and storage), closed with its context on exit.

    ``phone`` selects the phone viewport (390 x 844 CSS pixels at 2x, touch, mobile) instead of
    1280 x 800; ``base_url`` lets ``page.goto("/path")`` take relative URLs.
    """
    options: dict[str, Any] = {"locale": "en-US", "base_url": base_url}
    if phone:
        options.update(viewport=PHONE_VIEWPORT, device_scale_factor=PHONE_SCALE_FACTOR, is_mobile=True, has_touch=True)
    else:
        options.update(viewport=DESKTOP_VIEWPORT)
    context: BrowserContext = await browser.new_context(**options)
    try:
        yield await context.new_page()
    finally:
        await context.close()


def watch_console(page: Page) -> list[str]:
    """Collect the page's console errors and uncaught exceptions (CSP refusals included) from now on.

    Returns a list that fills up while the page runs; assert it is empty at the end of a test.
    """
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"{message.text} ({message.location.get('url', '?')})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    return problems


async def screenshot(page: Page, run_dir: Path, name: str, *, full_page: bool = True) -> Path:
    """Write a PNG of the page to ``run_dir/<name>.png`` (directory created) and return its path.

    ``name`` is a plain file stem (letters, digits, ``.``, ``_``, ``-``); anything else raises ValueError.
    """
    if not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"screenshot name must be a plain file stem, got {name!r}")
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"{name}.png"
    await page.screenshot(path=str(path), full_page=full_page, type="png")
    return path


async def axe_violations(
    page: Page, impacts: Iterable[str] = BLOCKING_IMPACTS, *, context: str | None = None
) -> list[dict[str, Any]]:
    """Run axe-core (bundled by ``axe-playwright-python``) in the page; return its violations of these impacts.

    ``impacts`` are axe impact levels (``minor``, ``moderate``, ``serious``, ``critical``); ``context`` is an
    optional CSS selector to scan instead of the whole document. Each violation is axe's own result object
    (``id``, ``impact``, ``help``, ``helpUrl``, ``nodes`` with ``target`` and ``html``), see
    https://github.com/dequelabs/axe-core/blob/develop/doc/API.md#results-object.
    """
    wanted = set(impacts)
    results = await _AXE.run(page, context=context)
    return [violation for violation in results.response["violations"] if violation["impact"] in wanted]


def format_violations(violations: list[dict[str, Any]]) -> str:
    """A readable report of axe violations (rule, impact, help URL, each failing element) for assert messages."""
    return AxeResults({"violations": violations}).generate_report()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def chromium() -> AsyncIterator[Browser]:
    """The session's headless Chromium; skips when the binary is missing (see ``chromium_executable``)."""
    executable = chromium_executable()
    if executable is None:
        pytest.skip(
            f"Chromium not found ({DEFAULT_CHROMIUM} or ${CHROMIUM_ENV}): "
            "run scripts/install_system_deps.sh (Debian package chromium)"
        )
    async with launch_chromium(executable) as browser:
        yield browser


def _require_session_loop(request: pytest.FixtureRequest) -> None:
    marker = request.node.get_closest_marker("asyncio")
    if marker is None or marker.kwargs.get("loop_scope") != "session":
        pytest.fail(
            f"{request.node.nodeid} uses the browser but does not run on the session event loop: "
            "make it `async def` and mark it with tests.browser.BROWSER_LOOP "
            "(pytestmark = [BROWSER_LOOP]), where the browser lives"
        )


@pytest_asyncio.fixture(loop_scope="session")
async def page(chromium: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    """A fresh desktop-sized page (1280 x 800) in its own browser context, closed after the test."""
    _require_session_loop(request)
    async with open_page(chromium) as fresh:
        yield fresh


@pytest_asyncio.fixture(loop_scope="session")
async def phone_page(chromium: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    """A fresh phone-sized page (390 x 844 CSS pixels at 2x, touch, mobile) in its own browser context."""
    _require_session_loop(request)
    async with open_page(chromium, phone=True) as fresh:
        yield fresh


@pytest.fixture
def screenshot_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """``$SCREENSHOT_DIR/<test name>`` when ``SCREENSHOT_DIR`` is set, else the test's ``tmp_path``."""
    root = os.environ.get(SCREENSHOT_ENV)
    if not root:
        return tmp_path
    return Path(root) / re.sub(r"[^A-Za-z0-9._-]+", "_", request.node.name)


@contextmanager
def serve_asgi(app: Any, *, startup_timeout_s: float = 10.0, shutdown_timeout_s: float = 5.0) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free 127.0.0.1 port in a background thread; yield its base URL.

    The port is chosen by the kernel (bind to port 0), so there is no race with other tests. Streaming
    responses (server-sent events) still open at shutdown are cut after 2 s (``timeout_graceful_shutdown``).
    Raises RuntimeError when the server is not up within ``startup_timeout_s`` seconds or does not stop
    within ``shutdown_timeout_s`` seconds.
    """
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="auto", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="serve_asgi", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("uvicorn did not start (see its log above)")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(shutdown_timeout_s)
        if thread.is_alive():
            raise RuntimeError(f"uvicorn on port {port} did not stop within {shutdown_timeout_s} s")
