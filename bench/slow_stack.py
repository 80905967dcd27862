"""A loopback stand-in for the endpoints the agent's tools read, answering every request after a fixed delay.

Serves, on 127.0.0.1 (OS-assigned port), in its own thread:
``GET /logs/tail`` (load balancer -> inventory; {"entries": [], "count": 0, ...}),
``GET /api/v1/query`` (Prometheus HTTP API instant query; the recorded answer
``tests/fixtures/prometheus/prom_api_v1_query_up.json``), ``GET /changes`` and ``GET /instances``
(process manager; empty lists). Used by bench/investigation_bench.py so that each tool call takes
``delay_s`` seconds and the parallel speed-up of a round of tool calls can be measured.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from aiohttp import web
from common import REPO_ROOT

PROM_QUERY_FIXTURE = REPO_ROOT / "tests" / "fixtures" / "prometheus" / "prom_api_v1_query_up.json"


class SlowStack:
    """aiohttp server in a thread; ``base_url`` is set once ``start()`` returns.

    Every answer waits ``delay_s`` seconds."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.base_url = ""
        self.requests = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._prom = json.loads(PROM_QUERY_FIXTURE.read_text())

    def _answer(self, body: dict[str, Any]) -> Any:
        async def handler(request: web.Request) -> web.Response:
            self.requests += 1
            await asyncio.sleep(self.delay_s)
            return web.json_response(body)

        return handler

    def start(self) -> SlowStack:
        """Start the server thread; returns once it listens. Raises RuntimeError after 10 s without it."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            app = web.Application()
            app.router.add_get("/logs/tail", self._answer({"entries": [], "count": 0, "seconds": 300, "limit": 1000}))
            app.router.add_get("/api/v1/query", self._answer(self._prom))
            app.router.add_get("/changes", self._answer({"changes": []}))
            app.router.add_get("/instances", self._answer({"instances": []}))
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", 0).start()
            self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="slow-stack", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("slow stack server did not start within 10 s")
        return self

    def stop(self) -> None:
        """Stop the server and join its thread (the port is released)."""
        if self._loop is None or self._runner is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> SlowStack:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
