"""A loopback fake of the OpenAI Chat Completions wire protocol for tests (reusable by every helper).

``FakeOpenAI`` runs an aiohttp.web server in its own thread on 127.0.0.1 (an OS-assigned free port),
answers ``POST /v1/chat/completions`` with scripted responses in order, and records every request
body. Responses are built from the recorded OpenAI answers in ``fixtures/openai/`` (same ids, object,
model, usage and ``finish_reason`` shape), so the real ``openai`` SDK parses them as it would the API's.

Usage::

    with FakeOpenAI([tool_calls_response([("fetch_logs", {"seconds": 300})]), text_response("done")]) as fake:
        client = openai.AsyncOpenAI(api_key="test", base_url=fake.base_url, max_retries=0)
        ...
        fake.requests[0]["tools"]   # what the client sent

When the script is exhausted the server answers 500 with an OpenAI-style error body. Instead of a
script, a ``responder`` may answer each request from its body (several clients at once, in any order).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.support import load_json_fixture

_TEMPLATE_FIXTURE = "openai/chat_completion_test_parse_multiple_pydantic_tools.json"
_ids = itertools.count(1)


@dataclass
class Scripted:
    """One scripted answer: HTTP ``status`` with JSON ``body``, sent after ``delay_s`` seconds."""

    body: dict
    status: int = 200
    delay_s: float = 0.0


def chat_completion(message: dict, *, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> dict:
    """A Chat Completions response (recorded fixture shape) whose only choice carries ``message``."""
    body = copy.deepcopy(load_json_fixture(_TEMPLATE_FIXTURE))
    body["id"] = f"chatcmpl-fake{next(_ids):06d}"
    body["choices"][0]["message"] = {"role": "assistant", "content": None, "refusal": None, **message}
    body["choices"][0]["finish_reason"] = finish_reason
    body["usage"].update(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens
    )
    return body


def tool_calls_response(
    calls: Sequence[tuple[str, dict | str]], *, prompt_tokens: int = 149, completion_tokens: int = 60
) -> dict:
    """An assistant turn with parallel ``tool_calls``; each call is ``(name, arguments)`` where a str
    argument is sent verbatim (to script invalid JSON) and a dict is JSON-encoded."""
    tool_calls = [
        {
            "id": f"call_fake{next(_ids):06d}",
            "type": "function",
            "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
        }
        for name, args in calls
    ]
    return chat_completion(
        {"tool_calls": tool_calls},
        finish_reason="tool_calls",
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )


def text_response(text: str, *, prompt_tokens: int = 120, completion_tokens: int = 15) -> dict:
    """An assistant turn that answers in plain text (no tool calls)."""
    return chat_completion(
        {"content": text}, finish_reason="stop", prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
    )


class FakeOpenAI:
    """Loopback fake Chat Completions server replaying ``script`` (dicts are 200 bodies, or ``Scripted``).

    Attributes:
        base_url: ``http://127.0.0.1:<port>/v1`` for ``openai.AsyncOpenAI(base_url=...)``.
        requests: JSON bodies received, in order.
        auth_headers: the ``Authorization`` header of each request.
    """

    def __init__(
        self, script: Sequence[dict | Scripted] = (), responder: Callable[[dict], Scripted] | None = None
    ) -> None:
        self.script: list[Scripted] = [s if isinstance(s, Scripted) else Scripted(s) for s in script]
        self.responder = responder
        self.requests: list[dict] = []
        self.auth_headers: list[str | None] = []
        self.base_url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def add(self, *responses: dict | Scripted) -> None:
        """Append responses to the script (thread-safe)."""
        with self._lock:
            self.script.extend(r if isinstance(r, Scripted) else Scripted(r) for r in responses)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            self.requests.append(body)
            self.auth_headers.append(request.headers.get("Authorization"))
            if self.responder is not None:
                answer: Scripted | None = self.responder(body)
            else:
                answer = self.script.pop(0) if self.script else None
        if answer is None:
            error = {
                "error": {
                    "message": "fake OpenAI: no scripted response left",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
            return web.json_response(error, status=500)
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        return web.json_response(answer.body, status=answer.status)

    def start(self) -> FakeOpenAI:
        """Start the server thread and return once it listens."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._handle)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.25)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            port = self._runner.addresses[0][1]
            self.base_url = f"http://127.0.0.1:{port}/v1"
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake OpenAI server did not start within 10 s")
        return self

    def stop(self) -> None:
        """Stop the server and its thread (the port is released)."""
        if self._loop is None or self._runner is None:
            return

        async def shutdown() -> None:
            assert self._runner is not None
            await self._runner.cleanup()
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:  # handlers still sleeping on a scripted delay
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
