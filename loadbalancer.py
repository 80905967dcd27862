"""Round-robin HTTP load balancer for the inventory replicas (raw ASGI app).

Run: ``uvicorn loadbalancer:app --port 9000 --no-proxy-headers --no-access-log`` (or ``python loadbalancer.py
--port 9000``, same settings). Without ``--no-proxy-headers`` uvicorn replaces the client address of
requests from 127.0.0.1 by their X-Forwarded-For value, so the appended X-Forwarded-For entry repeats it.

Environment (see the demo stack contract, section "loadbalancer.py"):
    PM_URL                 process manager base URL; ``GET PM_URL/backends`` -> {"backends": [urls]}
                           (default http://127.0.0.1:7070)
    LB_REFRESH_SEC         seconds between backend-list refreshes from the PM (default 5)
    LB_BACKENDS            optional comma-separated static backend URLs; when set the PM is not asked
    LB_UPSTREAM_TIMEOUT_S  total seconds allowed for one upstream attempt (default 8: below the 10 s
                           that traffic_gen.py and typical HTTP clients wait, so a client gets the 504)
    LB_ACCESS_LOG          access log path (default REPO_ROOT/logs/loadbalancer_access.log)

Own endpoints (never proxied): ``GET /healthz`` (backends and their state) and ``GET /lb/metrics``
(Prometheus text format). Everything else is proxied round-robin with ONE pooled keep-alive
aiohttp.ClientSession. Hop-by-hop headers are stripped both ways (RFC 9110 section 7.6.1),
X-Forwarded-For is appended, and status, headers and body pass through unchanged (no
decompression). On a connection failure or a dropped keep-alive connection an idempotent request
(RFC 9110 section 9.2.2) is retried once on a distinct alternate backend picked together with the
primary; the failed backend is marked down until its ``GET /healthz`` answers 2xx again
(probed every ``PROBE_INTERVAL_S``). An attempt that exceeds LB_UPSTREAM_TIMEOUT_S is answered 504
(the backend may have acted on it, so it is not retried) and leaves the backend up.

Metrics (the clients' view, complete even when the replicas are too busy to be scraped):
``lb_requests_total{backend, code}`` every answered request by backend URL ("none" for 503 without
a backend) and status code, the LB's own 502/503/504 included; ``lb_request_duration_seconds{backend}``
histogram from request received to response sent; ``lb_upstream_errors_total{backend, kind}`` failed
attempts by kind (``error_kind``); ``lb_upstream_in_flight{backend}`` attempts waiting for or
streaming a response; ``lb_failovers_total``; ``lb_backends{state}`` backends up and down.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings
from yarl import URL

REPO_ROOT = Path(__file__).resolve().parent
PROBE_INTERVAL_S = 0.5
PROBE_TIMEOUT_S = 1.0
PM_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 2.0
# Below uvicorn's default 5 s keep-alive so the pool drops idle connections before the backend does.
POOL_KEEPALIVE_S = 4.0
CHUNK_BYTES = 64 * 1024

# RFC 9110 section 9.2.2: methods whose repetition has the same effect as one request.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# RFC 9110 section 7.6.1 plus RFC 2616 section 13.5.1 (Keep-Alive, Proxy-*, Trailers).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Request headers the LB sets itself: Host (aiohttp sets the backend's, as nginx does), the body
# framing (the body is buffered, aiohttp writes Content-Length), Expect (the LB already read the body).
REQUEST_DROP = HOP_BY_HOP | {b"host", b"content-length", b"expect", b"x-forwarded-for"}
# Response headers the ASGI server writes itself (nginx replaces them the same way by default).
RESPONSE_DROP = HOP_BY_HOP | {b"date", b"server"}
# Connection failures after which an idempotent request may go to the alternate backend.
CONNECTION_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)
# Every failure of one upstream attempt that the LB answers itself (502/504) or fails over from.
ATTEMPT_ERRORS = (TimeoutError, *CONNECTION_ERRORS)
# lb_upstream_errors_total{kind} by exception class, first match wins (aiohttp's exception hierarchy).
ERROR_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (aiohttp.ConnectionTimeoutError, "connect_timeout"),  # no connection within CONNECT_TIMEOUT_S: never sent
    (TimeoutError, "timeout"),  # no (complete) answer within LB_UPSTREAM_TIMEOUT_S
    (aiohttp.ClientConnectorError, "connect"),  # connection refused or unreachable
    (aiohttp.ServerDisconnectedError, "disconnect"),  # closed by the backend (e.g. a stale keep-alive connection)
    (aiohttp.ClientPayloadError, "payload"),  # response body cut short
    (aiohttp.ClientConnectionResetError, "reset"),  # ECONNRESET / EPIPE
    (aiohttp.ClientOSError, "reset"),
)

logger = logging.getLogger("loadbalancer")

REQUESTS = Counter(
    "lb_requests_total",
    "Requests answered by the load balancer, by backend (none: no backend up) and status code (own 502/503/504 too).",
    ["backend", "code"],
)
UPSTREAM_ERRORS = Counter(
    "lb_upstream_errors_total",
    "Failed upstream attempts by kind (connect, connect_timeout, timeout, disconnect, reset, payload, other).",
    ["backend", "kind"],
)
FAILOVERS = Counter("lb_failovers_total", "Requests retried on the alternate backend after a connection failure.")
DURATION = Histogram(
    "lb_request_duration_seconds",
    "Time from request received to response sent, seconds, by the backend that answered (none: the LB itself).",
    ["backend"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
IN_FLIGHT = Gauge(
    "lb_upstream_in_flight", "Upstream attempts waiting for or streaming a response, by backend.", ["backend"]
)
BACKENDS = Gauge("lb_backends", "Backends known to the load balancer, by passive health state (up, down).", ["state"])

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class LBConfig(BaseSettings):
    """Load-balancer settings from the environment. Durations are seconds; URLs have no trailing slash."""

    pm_url: str = Field(default="http://127.0.0.1:7070", alias="PM_URL")
    refresh_sec: float = Field(default=5.0, gt=0, alias="LB_REFRESH_SEC")
    static_backends: str | None = Field(default=None, alias="LB_BACKENDS")
    upstream_timeout_s: float = Field(default=8.0, gt=0, alias="LB_UPSTREAM_TIMEOUT_S")
    access_log: Path = Field(default=REPO_ROOT / "logs" / "loadbalancer_access.log", alias="LB_ACCESS_LOG")

    @field_validator("pm_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    def static_backend_urls(self) -> list[str] | None:
        """The LB_BACKENDS URLs (normalised, validated), or None when the PM is the source.

        Raises:
            ValueError: when a URL is not an absolute http(s) URL.
        """
        if not self.static_backends:
            return None
        return BackendList(backends=[u for u in self.static_backends.split(",") if u.strip()]).backends


class BackendList(BaseModel):
    """``GET PM_URL/backends`` response body: {"backends": ["http://127.0.0.1:8001", ...]}."""

    backends: list[str]

    @field_validator("backends")
    @classmethod
    def _absolute_http(cls, urls: list[str]) -> list[str]:
        normalised = []
        for raw in urls:
            url = URL(raw.strip())
            if url.scheme not in ("http", "https") or not url.host:
                raise ValueError(f"backend {raw!r} is not an absolute http(s) URL")
            normalised.append(str(url).rstrip("/"))
        return normalised


@dataclass(eq=False)
class Backend:
    """One upstream replica: ``url`` without trailing slash, ``up`` passive health state."""

    url: str
    up: bool = True
    failures: int = 0
    last_error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """Shape used by ``GET /healthz``: {"url", "state": "up"|"down", "failures", "last_error"}."""
        return {
            "url": self.url,
            "state": "up" if self.up else "down",
            "failures": self.failures,
            "last_error": self.last_error,
        }


class UpstreamFailure(Exception):
    """An upstream attempt failed before any byte of the response was sent to the client.

    ``retryable``: every kind but ``timeout`` (a timed-out request may have been acted on).
    """

    def __init__(self, backend: Backend, kind: str, detail: str) -> None:
        super().__init__(f"{backend.url}: {kind}: {detail}")
        self.backend = backend
        self.kind = kind
        self.detail = detail
        self.retryable = kind != "timeout"


def error_kind(exc: BaseException) -> str:
    """Label for ``lb_upstream_errors_total{kind}`` (see ERROR_KINDS), ``other`` for anything else."""
    return next((kind for cls, kind in ERROR_KINDS if isinstance(exc, cls)), "other")


def connection_tokens(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names (lowercase bytes) listed in Connection headers; they are hop-by-hop too (RFC 9110 7.6.1)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(token.strip().lower() for token in value.split(b","))
    return frozenset(tokens)


def upstream_request_headers(headers: list[tuple[bytes, bytes]], client_host: str | None) -> list[tuple[str, str]]:
    """Headers to send upstream: ASGI request headers (lowercase bytes) minus hop-by-hop ones, plus X-Forwarded-For.

    An existing X-Forwarded-For (possibly several header lines) is kept and ``client_host`` appended.
    """
    drop = REQUEST_DROP
    forwarded: list[str] = []
    out: list[tuple[str, str]] = []
    for name, _ in headers:
        if name == b"connection":
            drop = REQUEST_DROP | connection_tokens(headers)
            break
    for name, value in headers:
        if name in drop:
            if name == b"x-forwarded-for":
                forwarded.append(value.decode("latin-1"))
            continue
        out.append((name.decode("latin-1"), value.decode("latin-1")))
    if client_host:
        forwarded.append(client_host)
    if forwarded:
        out.append(("X-Forwarded-For", ", ".join(forwarded)))
    return out


def downstream_response_headers(raw_headers: tuple[tuple[bytes, bytes], ...]) -> list[tuple[bytes, bytes]]:
    """Upstream response headers for the ASGI ``http.response.start`` message, hop-by-hop ones removed."""
    drop = RESPONSE_DROP
    for name, _ in raw_headers:
        if name.lower() == b"connection":
            drop = RESPONSE_DROP | connection_tokens(list(raw_headers))
            break
    out = []
    for name, value in raw_headers:
        lname = name.lower()
        if lname not in drop:
            out.append((lname, value))
    return out


class AccessLog:
    """Buffered access log: one line per request, written with one O_APPEND write per flush.

    Line format (space separated): ISO-8601 UTC time, client address, method, path?query, status,
    backend URL ("none" when no backend was up), duration in milliseconds.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lines: list[str] = []
        self._fd: int | None = None
        self._second = -1
        self._second_text = ""

    def open(self) -> None:
        """Create the parent directory and open the file for appending. Raises OSError."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(self, client: str, method: str, target: str, status: int, backend: str, duration_s: float) -> None:
        """Queue one line; ``duration_s`` in seconds (logged as milliseconds)."""
        now = time.time()
        second = int(now)
        if second != self._second:  # format the date part once per second, not per request
            self._second = second
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        millis = int((now - second) * 1000)
        self._lines.append(
            f"{self._second_text}.{millis:03d}Z {client} {method} {target} {status} {backend} {duration_s * 1000:.2f}\n"
        )

    def flush(self) -> None:
        """Write queued lines; errors are logged, never raised (the proxy keeps serving)."""
        if not self._lines or self._fd is None:
            return
        data = "".join(self._lines).encode("utf-8", "replace")
        self._lines.clear()
        try:
            os.write(self._fd, data)
        except OSError as exc:
            logger.error("cannot write access log %s: %s", self.path, exc)

    def close(self) -> None:
        """Flush and close."""
        self.flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class LoadBalancer:
    """The ASGI application: lifespan, own endpoints and the proxy hot path.

    Args:
        config: settings; ``LBConfig()`` reads them from the environment.
    """

    def __init__(self, config: LBConfig) -> None:
        self.config = config
        self.static = config.static_backend_urls()
        self.backends: list[Backend] = [Backend(url) for url in self.static or []]
        self.up: list[Backend] = list(self.backends)
        self.refreshed_at: float | None = time.time() if self.static is not None else None
        self.pm_reachable: bool | None = None
        self.session: aiohttp.ClientSession | None = None
        self.access_log = AccessLog(config.access_log)
        self._rr = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._request_counters: dict[tuple[str, int], Any] = {}
        self._durations: dict[str, Any] = {}
        self._in_flight: dict[str, Any] = {}
        BACKENDS.labels("up").set_function(lambda: len(self.up))
        BACKENDS.labels("down").set_function(lambda: len(self.backends) - len(self.up))
        self._timeout = aiohttp.ClientTimeout(
            total=config.upstream_timeout_s, sock_connect=min(CONNECT_TIMEOUT_S, config.upstream_timeout_s)
        )

    # ---- ASGI entry point -------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """ASGI 3 callable for ``http`` and ``lifespan`` scopes; websockets are refused."""
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if path == "/healthz" or path == "/lb/metrics":
                await self.own_endpoint(scope, send)
            else:
                await self.proxy(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)
        else:
            await send({"type": "websocket.close", "code": 1003})

    async def lifespan(self, receive: Receive, send: Send) -> None:
        """ASGI lifespan: ``startup`` opens the client session and background tasks, ``shutdown`` closes them."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # noqa: BLE001 - reported to the server, which exits
                    logger.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        """Create the pooled session inside the running loop, fetch the PM backend list once, start the loops."""
        configure_logging()
        # This access log replaces uvicorn's own (uvicorn reads the level per connection).
        logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
        self.access_log.open()
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=POOL_KEEPALIVE_S)
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            trust_env=False,
        )
        if self.static is None:
            await self.refresh_from_pm()
            self._tasks.append(asyncio.create_task(self.refresh_loop(), name="lb-refresh"))
        self._tasks.append(asyncio.create_task(self.probe_loop(), name="lb-probe"))
        logger.info(
            "load balancer started; backends from %s: %s",
            "LB_BACKENDS" if self.static is not None else self.config.pm_url,
            [b.url for b in self.backends],
        )

    async def shutdown(self) -> None:
        """Cancel the background loops, close the session and flush the access log."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.session is not None:
            await self.session.close()
            self.session = None
        self.access_log.close()

    # ---- proxy hot path ---------------------------------------------------------------------

    async def proxy(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """Forward one request: primary backend, then (idempotent methods, connection failures) the alternate."""
        started = time.perf_counter()
        method: str = scope["method"]
        body = await read_body(receive)
        if body is None:  # client went away before sending the whole body
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        query: bytes = scope["query_string"]
        target = raw_path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        client = scope.get("client")
        client_host = client[0] if client else None
        up = self.up
        if not up:
            status = await send_json(send, 503, {"error": "no backend available", "backends": len(self.backends)})
            self.finish(client_host, method, target, status, "none", started)
            return
        index = self._rr
        self._rr = index + 1
        count = len(up)
        primary = up[index % count]
        alternate = up[(index + 1) % count] if count > 1 and method in IDEMPOTENT_METHODS else None
        headers = upstream_request_headers(scope["headers"], client_host)
        try:
            status = await self.forward(primary, method, target, headers, body, send)
            served_by = primary
        except UpstreamFailure as failure:
            if alternate is None or not failure.retryable:
                status = await send_failure(send, failure, str(failure))
                self.finish(client_host, method, target, status, primary.url, started)
                return
            FAILOVERS.inc()
            try:
                status = await self.forward(alternate, method, target, headers, body, send)
                served_by = alternate
            except UpstreamFailure as second:
                status = await send_failure(send, second, f"{failure}; then {second}")
                self.finish(client_host, method, target, status, alternate.url, started)
                return
        self.finish(client_host, method, target, status, served_by.url, started)

    async def forward(
        self, backend: Backend, method: str, target: str, headers: list[tuple[str, str]], body: bytes, send: Send
    ) -> int:
        """``attempt`` counted in ``lb_upstream_in_flight{backend}`` while it runs; same result and errors."""
        gauge = self._in_flight.get(backend.url)
        if gauge is None:
            gauge = self._in_flight[backend.url] = IN_FLIGHT.labels(backend.url)
        with gauge.track_inprogress():
            return await self.attempt(backend, method, target, headers, body, send)

    async def attempt(
        self, backend: Backend, method: str, target: str, headers: list[tuple[str, str]], body: bytes, send: Send
    ) -> int:
        """Send the request to ``backend`` and stream its response to the client; return the status code.

        Raises:
            UpstreamFailure: the attempt failed before the response start was sent to the client
                (connection failures also mark ``backend`` down). Failures after that point are
                re-raised as-is so the ASGI server aborts the half-sent response.
        """
        assert self.session is not None, "lifespan startup has not run"
        url = URL(backend.url + target, encoded=True)
        try:
            response = await self.session.request(
                method, url, headers=headers, data=body or None, allow_redirects=False
            )
        except ATTEMPT_ERRORS as exc:
            raise self.failed(backend, exc) from exc
        content = response.content
        try:
            try:
                chunk = await content.read(CHUNK_BYTES)
            except ATTEMPT_ERRORS as exc:
                raise self.failed(backend, exc) from exc
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": downstream_response_headers(response.raw_headers),
                }
            )
            # Send each chunk once the next one is known, so a small body costs one message.
            while True:
                following = b"" if not chunk or content.at_eof() else await content.read(CHUNK_BYTES)
                await send({"type": "http.response.body", "body": chunk, "more_body": bool(following)})
                if not following:
                    break
                chunk = following
        except BaseException as exc:
            response.close()
            if isinstance(exc, ATTEMPT_ERRORS):  # mid-body: counted, but half a response cannot be retried
                self.failed(backend, exc)
            raise
        response.release()
        return response.status

    def failed(self, backend: Backend, exc: BaseException) -> UpstreamFailure:
        """Count a failed attempt; connection failures mark ``backend`` down. Returns the exception to raise."""
        kind = error_kind(exc)
        detail = str(exc) or type(exc).__name__
        UPSTREAM_ERRORS.labels(backend.url, kind).inc()
        backend.failures += 1
        backend.last_error = f"{kind}: {detail}"
        failure = UpstreamFailure(backend, kind, detail)
        if failure.retryable and backend.up:
            backend.up = False
            self.up = [b for b in self.backends if b.up]
            logger.warning("backend %s marked down (%s: %s)", backend.url, kind, detail)
        return failure

    def finish(self, client: str | None, method: str, target: str, status: int, backend: str, started: float) -> None:
        """Record metrics and the access-log line for one answered request."""
        elapsed = time.perf_counter() - started
        key = (backend, status)
        counter = self._request_counters.get(key)
        if counter is None:
            counter = self._request_counters[key] = REQUESTS.labels(backend, str(status))
        counter.inc()
        duration = self._durations.get(backend)
        if duration is None:
            duration = self._durations[backend] = DURATION.labels(backend)
        duration.observe(elapsed)
        self.access_log.record(client or "-", method, target, status, backend, elapsed)

    # ---- own endpoints ----------------------------------------------------------------------

    async def own_endpoint(self, scope: dict[str, Any], send: Send) -> None:
        """``GET /healthz`` and ``GET /lb/metrics``; other methods -> 405."""
        if scope["method"] not in ("GET", "HEAD"):
            await send_json(send, 405, {"error": "method not allowed", "allowed": ["GET", "HEAD"]})
            return
        if scope["path"] == "/healthz":
            await send_json(send, 200, self.health())
            return
        await send_bytes(send, 200, CONTENT_TYPE_LATEST.encode(), generate_latest(REGISTRY))

    def health(self) -> dict[str, Any]:
        """``GET /healthz``: {"status": "ok"|"degraded"|"no_backends", "backends": [...], "refreshed_at", "source"}."""
        up = len(self.up)
        status = "no_backends" if up == 0 else ("ok" if up == len(self.backends) else "degraded")
        return {
            "status": status,
            "backends": [b.as_json() for b in self.backends],
            "refreshed_at": self.refreshed_at,
            "source": "LB_BACKENDS" if self.static is not None else self.config.pm_url,
        }

    # ---- background loops -------------------------------------------------------------------

    async def refresh_loop(self) -> None:
        """Refresh the backend list from the PM every ``LB_REFRESH_SEC`` seconds."""
        while True:
            await asyncio.sleep(self.config.refresh_sec)
            try:
                await self.refresh_from_pm()
            except Exception:  # noqa: BLE001 - the loop must outlive any single failure
                logger.exception("backend refresh failed")

    async def refresh_from_pm(self) -> None:
        """Replace the backend list with ``GET PM_URL/backends``; keep the last list when the PM fails.

        Known backends keep their state; new ones start up. A warning is logged once per change
        from reachable to unreachable (and an info line on recovery), not on every refresh.
        """
        assert self.session is not None
        try:
            async with self.session.get(
                f"{self.config.pm_url}/backends", timeout=aiohttp.ClientTimeout(total=PM_TIMEOUT_S)
            ) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                urls = BackendList.model_validate_json(await response.read()).backends
        except (aiohttp.ClientError, TimeoutError, ValueError, ValidationError) as exc:
            if self.pm_reachable is not False:
                logger.warning(
                    "process manager %s/backends unavailable (%s); keeping last known backends %s",
                    self.config.pm_url,
                    str(exc) or type(exc).__name__,
                    [b.url for b in self.backends],
                )
            self.pm_reachable = False
            return
        if self.pm_reachable is False:
            logger.info("process manager %s reachable again", self.config.pm_url)
        self.pm_reachable = True
        self.refreshed_at = time.time()
        self.set_backends(urls)

    def set_backends(self, urls: list[str]) -> None:
        """Install ``urls`` (deduplicated, order kept) as the backend list, keeping known backends' state."""
        known = {b.url: b for b in self.backends}
        fresh = [known.get(url) or Backend(url) for url in dict.fromkeys(urls)]
        if [b.url for b in fresh] != [b.url for b in self.backends]:
            logger.info("backends changed: %s", [b.url for b in fresh])
        self.backends = fresh
        self.up = [b for b in fresh if b.up]

    async def probe_loop(self) -> None:
        """Every ``PROBE_INTERVAL_S``: probe down backends via ``GET /healthz``, flush the access log."""
        while True:
            await asyncio.sleep(PROBE_INTERVAL_S)
            self.access_log.flush()
            down = [b for b in self.backends if not b.up]
            if not down:
                continue
            try:
                results = await asyncio.gather(*(self.probe(b) for b in down))
            except Exception:  # noqa: BLE001 - the loop must outlive any single failure
                logger.exception("health probe failed")
                continue
            if any(results):
                self.up = [b for b in self.backends if b.up]

    async def probe(self, backend: Backend) -> bool:
        """Mark ``backend`` up when ``GET backend/healthz`` answers 2xx within ``PROBE_TIMEOUT_S``; True if it did."""
        assert self.session is not None
        try:
            async with self.session.get(
                f"{backend.url}/healthz", timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
            ) as response:
                await response.read()
                healthy = 200 <= response.status < 300
        except (aiohttp.ClientError, TimeoutError):
            return False
        if healthy and not backend.up:
            backend.up = True
            logger.info("backend %s is up again", backend.url)
        return healthy


async def read_body(receive: Receive) -> bytes | None:
    """Read the whole ASGI request body (bytes); None when the client disconnected first."""
    message = await receive()
    if message["type"] == "http.disconnect":
        return None
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_bytes(send: Send, status: int, content_type: bytes, body: bytes) -> int:
    """Send a complete response; returns ``status``."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
    return status


async def send_json(send: Send, status: int, payload: dict[str, Any]) -> int:
    """Send ``payload`` as an application/json response; returns ``status``."""
    return await send_bytes(send, status, b"application/json", json.dumps(payload).encode())


async def send_failure(send: Send, failure: UpstreamFailure, detail: str) -> int:
    """Answer a failed attempt: 504 {"error": "gateway timeout"} after a timeout, else 502 {"error": "bad gateway"}.

    Both carry ``detail`` (backend URL, kind, message). Returns the status sent.
    """
    if failure.kind == "timeout":
        return await send_json(send, 504, {"error": "gateway timeout", "detail": detail})
    return await send_json(send, 502, {"error": "bad gateway", "detail": detail})


def configure_logging() -> None:
    """Send this module's log records (INFO and up) to stderr once, whatever the ASGI server configured."""
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s loadbalancer: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


app = LoadBalancer(LBConfig())


def main() -> None:
    """``python loadbalancer.py [--host 127.0.0.1] [--port 9000]``: serve ``app`` with uvicorn (uvloop, httptools)."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    # proxy_headers=False: the LB is the edge; X-Forwarded-For from a client on 127.0.0.1 must not
    # replace the peer address that the LB appends to X-Forwarded-For.
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, proxy_headers=False)


if __name__ == "__main__":
    main()
