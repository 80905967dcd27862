"""Inventory demo service watched by the on-call agent (FastAPI).

Run: ``python inventory_service.py --port 8001`` or ``uvicorn inventory_service:app``.
Environment: SERVICE, SERVICE_VERSION, PORT, REPLICA, INVENTORY_DB, LOG_DIR, RANDOM_FAILURE_RATIO
(see ``ServiceSettings``). Every replica shares one SQLite file (WAL mode) and one
JSON-lines error log; fault-injection state is per replica and in memory.
SERVICE_VERSION picks one of the shipped releases (``SHIPPED_VERSIONS``); the process manager's
rolling deploys set it. The HTTP surface is documented in README.md ("inventory_service.py").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import sqlite3
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import uvicorn
from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, HTTPException, Query, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random

from demo_faults import FaultSpecBase, InjectedFault

REPO_ROOT = Path(__file__).resolve().parent
LOG_FILE_NAME = "inventory_common.log"

# The releases of this service that can run (oldest first). A replica refuses to start on any other.
ServiceVersion = Literal["1.3.2", "1.4.0", "1.4.1"]
SHIPPED_VERSIONS: tuple[str, ...] = get_args(ServiceVersion)
DEFAULT_VERSION: ServiceVersion = "1.4.0"
# Draws of the simulated failures and fault injection (not security-relevant).
SIMULATION_RNG = random.Random()  # noqa: S311
# Releases whose GET /items/{item_id} answers the promotional price (the pricing path added in 1.4.1).
PROMOTION_PRICING_VERSIONS = frozenset({"1.4.1"})


class ServiceSettings(BaseSettings):
    """Replica configuration read from the environment (names are the upper-case field names).

    ``service_version`` (SERVICE_VERSION) must be one of SHIPPED_VERSIONS (ValidationError at start
    otherwise); ``random_failure_ratio`` is the probability (0-1) that GET /random-endpoint fails.
    ``backend_connections`` (BACKEND_CONNECTIONS) and ``backend_time_ms`` (BACKEND_TIME_MS, milliseconds)
    model a backend every business request calls through a pool of that many connections, so a replica
    has a fixed capacity of ``backend_connections / backend_time`` requests/s on any machine (0 ms: no
    modelled backend, capacity set by the CPU).
    """

    service: str = "inventory"
    service_version: ServiceVersion = DEFAULT_VERSION
    port: int = Field(default=8001, ge=1, le=65535)
    replica: str | None = None
    inventory_db: Path = REPO_ROOT / "data" / "inventory.db"
    log_dir: Path = REPO_ROOT / "logs"
    random_failure_ratio: float = Field(default=0.05, ge=0.0, le=1.0)
    backend_connections: int = Field(default=4, ge=1, le=1000)
    backend_time_ms: float = Field(default=0.0, ge=0.0, le=10000.0)

    @property
    def replica_name(self) -> str:
        """REPLICA, else ``<service>-<port-8000>`` for ports 8001-8010, else ``<service>-<port>``."""
        if self.replica:
            return self.replica
        if 8001 <= self.port <= 8010:
            return f"{self.service}-{self.port - 8000}"
        return f"{self.service}-{self.port}"


SETTINGS = ServiceSettings()


# --------------------------------------------------------------------------------------------
# Business logic
# --------------------------------------------------------------------------------------------


class Item(BaseModel):
    """One inventory row: ``quantity`` in units (>= 0), ``price`` in currency units (>= 0)."""

    id: int
    name: str
    quantity: int
    price: float


@dataclass(frozen=True)
class Promotion:
    """A price promotion on one item (a row of the ``promotions`` table); ``percent_off`` is 0-100."""

    item_id: int
    percent_off: float


def promotion_from_row(_: sqlite3.Cursor, row: tuple[Any, ...]) -> Promotion:
    """sqlite3 row factory: a ``promotions`` row (item_id, percent_off) as a Promotion."""
    return Promotion(item_id=row[0], percent_off=row[1])


def discounted_price(item: Item) -> float:
    """Price of ``item`` after its promotion (``percent_off`` taken off the price), rounded to cents."""
    with closing(connect(SETTINGS.inventory_db)) as conn:
        conn.row_factory = promotion_from_row
        promotion = conn.execute("SELECT item_id, percent_off FROM promotions WHERE item_id = ?", (item.id,)).fetchone()
    return round(item.price * (1 - promotion.percent_off / 100), 2)


def quote_item(item: Item) -> Item:
    """``item`` as GET /items/{item_id} answers it: at its promotional price on PROMOTION_PRICING_VERSIONS."""
    if SETTINGS.service_version in PROMOTION_PRICING_VERSIONS:
        return item.model_copy(update={"price": discounted_price(item)})
    return item


class ItemUpdate(BaseModel):
    """PUT /items/{item_id} body: full replacement of name, quantity (units) and price."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    quantity: int = Field(ge=0, le=1_000_000_000)
    price: float = Field(ge=0.0, le=1_000_000.0, allow_inf_nan=False)


def call_recommendation_dependency(failure_ratio: float) -> int:
    """Simulated flaky downstream call: returns a recommended item id (1-100).

    Raises:
        TimeoutError: with probability ``failure_ratio`` (0-1).
    """
    if SIMULATION_RNG.random() < failure_ratio:
        raise TimeoutError("recommendation service did not answer within 2.0 s (simulated flaky dependency)")
    return SIMULATION_RNG.randint(1, SEED_ITEM_COUNT)


# --------------------------------------------------------------------------------------------
# SQLite storage (one file shared by every replica)
# --------------------------------------------------------------------------------------------

SEED_ITEM_COUNT = 100
SEED_PROMOTIONS = ((17, 10.0), (42, 25.0), (88, 15.0))  # (item_id, percent_off)
DB_BUSY_TIMEOUT_S = 10.0
_ADJECTIVES = ("Steel", "Copper", "Oak", "Nylon", "Carbon", "Brass", "Rubber", "Glass", "Cotton", "Titanium")
_NOUNS = ("Bolt", "Hinge", "Bracket", "Washer", "Valve", "Spring", "Gasket", "Pulley", "Clamp", "Sprocket")


def seed_items() -> list[tuple[int, str, int, float]]:
    """The deterministic seed catalogue: ``SEED_ITEM_COUNT`` rows of (id, name, quantity, price)."""
    rng = random.Random(20240601)  # noqa: S311 - a fixed seed: the same catalogue in every database
    return [
        (
            index + 1,
            f"{_ADJECTIVES[index // len(_NOUNS) % len(_ADJECTIVES)]} {_NOUNS[index % len(_NOUNS)]}",
            rng.randint(0, 500),
            round(rng.uniform(0.5, 250.0), 2),
        )
        for index in range(SEED_ITEM_COUNT)
    ]


def connect(db_path: Path) -> sqlite3.Connection:
    """Open an autocommit connection whose busy timeout lets concurrent replicas wait for locks."""
    conn = sqlite3.connect(db_path, timeout=DB_BUSY_TIMEOUT_S, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


@retry(
    retry=retry_if_exception_type(sqlite3.OperationalError),
    stop=stop_after_attempt(5),
    wait=wait_random(0.05, 0.5),
    reraise=True,
)
def init_db(db_path: Path) -> None:
    """Create the schema (WAL mode), seed the catalogue and its promotions; idempotent and safe when replicas race.

    Raises:
        sqlite3.OperationalError: when the file stays locked through every retry.
    """
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with closing(connect(db_path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS items ("
                " id INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL,"
                " quantity INTEGER NOT NULL CHECK (quantity >= 0),"
                " price REAL NOT NULL CHECK (price >= 0))"
            )
            conn.executemany(
                "INSERT OR IGNORE INTO items (id, name, quantity, price) VALUES (?, ?, ?, ?)", seed_items()
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS promotions ("
                " item_id INTEGER PRIMARY KEY REFERENCES items (id),"
                " percent_off REAL NOT NULL CHECK (percent_off > 0 AND percent_off <= 100))"
            )
            conn.executemany("INSERT OR IGNORE INTO promotions (item_id, percent_off) VALUES (?, ?)", SEED_PROMOTIONS)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def fetch_item(db_path: Path, item_id: int) -> Item | None:
    """Return the item with ``item_id``, or None when it does not exist."""
    with closing(connect(db_path)) as conn:
        row = conn.execute("SELECT id, name, quantity, price FROM items WHERE id = ?", (item_id,)).fetchone()
    return Item(**dict(row)) if row else None


def fetch_random_item_without_promotion(db_path: Path) -> Item | None:
    """Return a random item that has no promotion, or None when every item has one."""
    with closing(connect(db_path)) as conn:
        row = conn.execute(
            "SELECT id, name, quantity, price FROM items WHERE id NOT IN (SELECT item_id FROM promotions)"
            " ORDER BY RANDOM() LIMIT 1"
        ).fetchone()
    return Item(**dict(row)) if row else None


def update_item(db_path: Path, item_id: int, update: ItemUpdate) -> Item | None:
    """Replace name/quantity/price of an existing item; None when it does not exist (no upsert)."""
    with closing(connect(db_path)) as conn:
        row = conn.execute(
            "UPDATE items SET name = ?, quantity = ?, price = ? WHERE id = ? RETURNING id, name, quantity, price",
            (update.name, update.quantity, update.price, item_id),
        ).fetchone()
    return Item(**dict(row)) if row else None


def count_items(db_path: Path) -> int:
    """Number of rows in the items table."""
    with closing(connect(db_path)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM items").fetchone()[0])


# --------------------------------------------------------------------------------------------
# Fault injection (per replica, in memory)
# --------------------------------------------------------------------------------------------

FaultMode = Literal["none", "latency", "errors", "cpu", "stall", "oom_safe", "crash"]
# Parameters each mode takes, with their defaults; parameters of other modes are rejected.
MODE_PARAMS: dict[str, dict[str, int | float]] = {
    "none": {},
    "latency": {"latency_ms": 800},
    "errors": {"p_error": 0.5},
    "cpu": {"cpu_ms": 200},
    "stall": {"stall_ms": 200},
    "oom_safe": {"step_mb": 16, "max_mb": 256},
    "crash": {},
}
CRASH_EXIT_CODE = 3
CRASH_DELAY_S = 0.2
MIB = 1024 * 1024


class FaultSpec(FaultSpecBase):
    """POST /faults body (stack contract). Units: latency_ms, cpu_ms and stall_ms milliseconds, p_error a
    probability 0-1, step_mb and max_mb MiB. Unknown fields, out-of-range values and parameters
    of another mode are rejected (ValidationError -> 422); the mode's missing parameters get defaults.
    """

    mode_params: ClassVar[dict[str, dict[str, int | float]]] = MODE_PARAMS

    mode: FaultMode
    latency_ms: int | None = Field(default=None, ge=1, le=30000)
    p_error: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    cpu_ms: int | None = Field(default=None, ge=1, le=2000)
    stall_ms: int | None = Field(default=None, ge=1, le=2000)
    step_mb: int | None = Field(default=None, ge=1, le=64)
    max_mb: int | None = Field(default=None, ge=1, le=1024)


@dataclass
class FaultState:
    """Current fault of this replica; ``ballast`` holds the memory retained by ``oom_safe``."""

    spec: FaultSpec = field(default_factory=lambda: FaultSpec(mode="none"))
    since: float = field(default_factory=time.time)
    ballast: list[bytearray] = field(default_factory=list)

    def set(self, spec: FaultSpec) -> None:
        """Switch to ``spec`` and release any retained memory."""
        self.spec = spec
        self.since = time.time()
        self.ballast.clear()

    @property
    def retained_mb(self) -> int:
        """MiB currently retained by the oom_safe fault."""
        return sum(len(chunk) for chunk in self.ballast) // MIB

    def grow_memory(self) -> None:
        """Retain ``step_mb`` more MiB (pages written so RSS grows), never beyond ``max_mb``."""
        params = self.spec.params()
        grow_mb = int(min(params["step_mb"], params["max_mb"] - self.retained_mb))
        if grow_mb > 0:
            self.ballast.append(bytearray(b"\x01") * (grow_mb * MIB))

    def snapshot(self, replica: str) -> dict[str, Any]:
        """{"mode", ...params, "since": epoch s, "replica"} (+ "retained_mb" for oom_safe)."""
        state: dict[str, Any] = {"mode": self.spec.mode, **self.spec.params(), "since": self.since, "replica": replica}
        if self.spec.mode == "oom_safe":
            state["retained_mb"] = self.retained_mb
        return state


FAULTS = FaultState()


def burn_cpu(seconds: float) -> None:
    """Busy-loop on the calling thread for ``seconds`` of wall-clock time (time.perf_counter)."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


async def apply_fault() -> None:
    """Dependency of every business route: apply this replica's active fault to the request.

    Raises:
        InjectedFault: in mode ``errors`` with probability p_error.
    """
    mode, params = FAULTS.spec.mode, FAULTS.spec.params()
    if mode == "latency":
        await asyncio.sleep(params["latency_ms"] / 1000)
    elif mode == "cpu":
        # CPU-heavy work handed to a worker thread: requests queue for the CPU, yet the event loop still
        # answers Prometheus' scrapes (between the interpreter's switch intervals), so the CPU is visible
        await asyncio.to_thread(burn_cpu, params["cpu_ms"] / 1000)
    elif mode == "stall":
        # the same work done on the event loop (a blocking call in an async handler): while it runs the
        # replica answers nothing, not even /metrics, so its series go stale and clients time out
        burn_cpu(params["stall_ms"] / 1000)
    elif mode == "oom_safe":
        FAULTS.grow_memory()
    elif mode == "errors" and SIMULATION_RNG.random() < params["p_error"]:
        raise InjectedFault(f"injected fault: errors (p_error={params['p_error']})")


class BackendPool:
    """The modelled backend of ServiceSettings: a request holds one of ``connections`` for ``time_s`` seconds.

    Requests beyond the pool wait in FIFO order (asyncio.Semaphore), the way a connection pool queues
    callers, so offered load above ``connections / time_s`` requests/s queues and latency grows. The wait
    is asleep, not CPU, so the capacity is the same on any machine. The semaphore is made on first use,
    inside the event loop that serves the requests.
    """

    def __init__(self, connections: int, time_s: float) -> None:
        self.connections = connections
        self.time_s = time_s
        self._slots: asyncio.Semaphore | None = None

    async def call(self) -> None:
        """Wait for a free connection, then hold it ``time_s`` seconds (no-op when ``time_s`` is 0)."""
        if self.time_s <= 0:
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.connections)
        async with self._slots:
            await asyncio.sleep(self.time_s)


BACKEND = BackendPool(SETTINGS.backend_connections, SETTINGS.backend_time_ms / 1000)


async def call_backend() -> None:
    """Dependency of every business route, after ``apply_fault``: one call to the modelled backend."""
    await BACKEND.call()


async def exit_after_crash_delay() -> None:
    """Background task of the crash fault: log, then terminate the process with exit code 3."""
    await asyncio.sleep(CRASH_DELAY_S)
    LOGGER.error(
        f"injected fault: crash (process exits with code {CRASH_EXIT_CODE})",
        extra={"context": request_context("POST", "/faults", 200, "InjectedFault")},
    )
    os._exit(CRASH_EXIT_CODE)


# --------------------------------------------------------------------------------------------
# Metrics (own registry, so importing FaultSpec elsewhere exports nothing)
# --------------------------------------------------------------------------------------------

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)
HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests answered", ["service", "method", "route", "status"], registry=REGISTRY
)
HTTP_ERRORS = Counter(
    "http_errors_total",
    "HTTP requests answered with status >= 500",
    ["service", "method", "route", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request duration in seconds, injected faults included",
    ["service", "method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
INVENTORY_ITEMS = Gauge("inventory_items", "Items in the inventory database", registry=REGISTRY)
# Exported as inventory_build_info{service, version} 1 (the value set at start-up by the lifespan).
BUILD_INFO = Info("inventory_build", "Release of this replica (SERVICE_VERSION)", registry=REGISTRY)
INVENTORY_ITEMS.set_function(lambda: count_items(SETTINGS.inventory_db))


# --------------------------------------------------------------------------------------------
# Structured ERROR log (JSON lines in LOG_DIR/inventory_common.log, shared by every replica)
# --------------------------------------------------------------------------------------------

LOGGER = logging.getLogger("inventory_service")
LOG_ORDER_SLACK_S = 1.0  # replicas append concurrently, so timestamps may be slightly out of order


def relative_to_repo(filename: str) -> str:
    """``filename`` relative to REPO_ROOT when it lies inside it, else unchanged."""
    try:
        return str(Path(filename).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return filename


def is_application_frame(frame: traceback.FrameSummary) -> bool:
    """True for frames of the repository's own code (not the virtualenv, stdlib or site-packages)."""
    relative = relative_to_repo(frame.filename)
    return not Path(relative).is_absolute() and not relative.startswith(".venv") and "site-packages" not in relative


def application_traceback(exc: BaseException) -> tuple[str, traceback.FrameSummary]:
    """Format ``exc`` keeping only application frames (framework frames are noise for diagnosis).

    Returns the traceback text and the innermost application frame (the innermost frame when
    no frame belongs to the application).
    """
    details = traceback.TracebackException.from_exception(exc)
    frames = [frame for frame in details.stack if is_application_frame(frame)] or list(details.stack[-1:])
    details.stack = traceback.StackSummary.from_list(frames)
    return "".join(details.format()), frames[-1]


def request_context(method: str, route: str, status: int, exception_type: str | None) -> dict[str, Any]:
    """The request fields of one ERROR log entry (route is the template)."""
    return {"method": method, "route": route, "status": status, "exception_type": exception_type}


class JsonLineFormatter(logging.Formatter):
    """Formats a record as one JSON object with the fields of the stack contract's ERROR logs."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the JSON line (no newline); ``record.context`` holds the request fields."""
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "ts": record.created,
            "level": record.levelname,
            "service": SETTINGS.service,
            "version": SETTINGS.service_version,
            "replica": SETTINGS.replica_name,
            **getattr(record, "context", {}),
            "message": record.getMessage(),
            "traceback": "",
            "file": None,
            "line": None,
            "function": None,
            "fault": FAULTS.spec.mode if FAULTS.spec.mode != "none" else None,
        }
        if record.exc_info and record.exc_info[1] is not None:
            text, frame = application_traceback(record.exc_info[1])
            entry.update(traceback=text, file=relative_to_repo(frame.filename), line=frame.lineno, function=frame.name)
        return json.dumps(entry, default=str)


class AppendLineHandler(logging.Handler):
    """Appends each formatted record to ``path`` with O_APPEND and a single write per line."""

    def __init__(self, path: Path) -> None:
        super().__init__(level=logging.ERROR)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def emit(self, record: logging.LogRecord) -> None:
        """Write one line; failures go to logging's standard error reporting."""
        try:
            os.write(self.fd, (self.format(record) + "\n").encode())
        except Exception:  # noqa: BLE001 - logging must never break request handling
            self.handleError(record)

    def close(self) -> None:
        """Close the file descriptor."""
        os.close(self.fd)
        super().close()


def configure_error_log(log_dir: Path) -> None:
    """Route LOGGER (ERROR and above) to ``log_dir/inventory_common.log`` only."""
    for handler in list(LOGGER.handlers):
        LOGGER.removeHandler(handler)
        handler.close()
    handler = AppendLineHandler(log_dir / LOG_FILE_NAME)
    handler.setFormatter(JsonLineFormatter())
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.ERROR)
    LOGGER.propagate = False


def iter_lines_reversed(path: Path, block_size: int = 64 * 1024) -> Iterator[bytes]:
    """Yield the non-empty lines of ``path`` from last to first, reading ``block_size`` bytes at a time."""
    with open(path, "rb") as handle:
        position = handle.seek(0, os.SEEK_END)
        remainder = b""
        while position > 0:
            size = min(block_size, position)
            position -= size
            handle.seek(position)
            lines = (handle.read(size) + remainder).split(b"\n")
            remainder = lines.pop(0)
            yield from (line for line in reversed(lines) if line)
        if remainder:
            yield remainder


def read_recent_entries(path: Path, since_ts: float, limit: int, replica: str | None) -> list[dict[str, Any]]:
    """Newest-first log entries with ts >= ``since_ts`` (epoch s), at most ``limit``, optionally of one replica.

    Stops reading once entries are older than ``since_ts`` (minus a small ordering slack); a
    missing file yields []; lines that are not JSON objects with a numeric ts are skipped.
    """
    entries: list[dict[str, Any]] = []
    try:
        lines = iter_lines_reversed(path)
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            ts = entry.get("ts") if isinstance(entry, dict) else None
            if not isinstance(ts, (int, float)):
                continue
            if ts < since_ts - LOG_ORDER_SLACK_S or len(entries) >= limit:
                break
            if ts >= since_ts and (replica is None or entry.get("replica") == replica):
                entries.append(entry)
    except FileNotFoundError:
        return []
    entries.sort(key=lambda entry: entry["ts"], reverse=True)
    return entries


# --------------------------------------------------------------------------------------------
# HTTP middleware: metrics per route template and ERROR logs for unhandled exceptions
# --------------------------------------------------------------------------------------------


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/items/{item_id}``), or ``"unmatched"``."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class ObservabilityMiddleware:
    """Pure ASGI middleware: counts and times every request except /metrics, and turns an
    unhandled exception into a 500 JSON answer plus one ERROR log entry.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point (HTTP only; lifespan and websockets pass through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_and_record_status(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        except Exception as exc:
            status = 500
            route = route_template(scope)
            LOGGER.error(
                str(exc) or type(exc).__name__,
                exc_info=exc,
                extra={"context": request_context(scope["method"], route, status, type(exc).__name__)},
            )
            if response_started:
                raise
            detail = exc.public_detail if isinstance(exc, InjectedFault) else "internal server error"
            await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
        finally:
            self.record(scope, status, time.perf_counter() - started)

    @staticmethod
    def record(scope: Scope, status: int, duration_s: float) -> None:
        """Update the request counter, error counter and duration histogram (skips /metrics)."""
        route = route_template(scope)
        if route == "/metrics":
            return
        labels = {"service": SETTINGS.service, "method": scope["method"], "route": route}
        HTTP_REQUESTS.labels(**labels, status=str(status)).inc()
        if status >= 500:
            HTTP_ERRORS.labels(**labels, status=str(status)).inc()
        HTTP_DURATION.labels(**labels).observe(duration_s)


# --------------------------------------------------------------------------------------------
# Application and routes
# --------------------------------------------------------------------------------------------


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    """Start-up: export the build info, open the shared ERROR log, create and seed the database."""
    BUILD_INFO.info({"service": SETTINGS.service, "version": SETTINGS.service_version})
    configure_error_log(SETTINGS.log_dir)
    await run_in_threadpool(init_db, SETTINGS.inventory_db)
    yield


app = FastAPI(title="inventory", lifespan=lifespan)
app.add_middleware(ObservabilityMiddleware)
business = APIRouter(dependencies=[Depends(apply_fault), Depends(call_backend)])


@business.get("/items/{item_id}", response_model=Item)
def get_item(item_id: int = PathParam(ge=1, le=2**62)) -> Item:
    """Return one item, priced by ``quote_item``. Raises HTTPException 404 for an unknown id."""
    item = fetch_item(SETTINGS.inventory_db, item_id)
    if item is None:
        raise HTTPException(status_code=404, detail=f"item {item_id} not found")
    return quote_item(item)


@business.put("/items/{item_id}", response_model=Item)
def put_item(update: ItemUpdate, item_id: int = PathParam(ge=1, le=2**62)) -> Item:
    """Update an existing item (no upsert). Raises HTTPException 404 for an unknown id."""
    item = update_item(SETTINGS.inventory_db, item_id, update)
    if item is None:
        raise HTTPException(status_code=404, detail=f"item {item_id} not found")
    return item


@business.get("/random-endpoint")
def random_endpoint() -> dict[str, Any]:
    """Succeeds except with probability RANDOM_FAILURE_RATIO (simulated dependency TimeoutError -> 500)."""
    recommended = call_recommendation_dependency(SETTINGS.random_failure_ratio)
    return {"ok": True, "replica": SETTINGS.replica_name, "recommended_item_id": recommended}


@business.get("/random-endpoint/error")
def random_endpoint_error() -> dict[str, Any]:
    """Quote the promotional price of a random item without a promotion; always fails 500 in ``discounted_price``."""
    item = fetch_random_item_without_promotion(SETTINGS.inventory_db)
    if item is None:
        raise HTTPException(status_code=404, detail="item not found")
    return {"id": item.id, "price": item.price, "discounted_price": discounted_price(item)}


app.include_router(business)


@app.get("/healthz")
def healthz() -> dict[str, Any]:
    """Liveness: {"status": "ok", "service", "version", "replica", "pid", "fault": current fault state}."""
    return {
        "status": "ok",
        "service": SETTINGS.service,
        "version": SETTINGS.service_version,
        "replica": SETTINGS.replica_name,
        "pid": os.getpid(),
        "fault": FAULTS.snapshot(SETTINGS.replica_name),
    }


@app.get("/version")
def version() -> dict[str, str]:
    """The release this replica runs: {"service", "version" (SERVICE_VERSION), "replica"}."""
    return {"service": SETTINGS.service, "version": SETTINGS.service_version, "replica": SETTINGS.replica_name}


@app.get("/faults")
def get_faults() -> dict[str, Any]:
    """Current fault state of this replica."""
    return FAULTS.snapshot(SETTINGS.replica_name)


@app.post("/faults")
def post_faults(spec: FaultSpec, background: BackgroundTasks) -> dict[str, Any]:
    """Set this replica's fault; for ``crash`` the process exits with code 3 after the response."""
    FAULTS.set(spec)
    if spec.mode == "crash":
        background.add_task(exit_after_crash_delay)
    return FAULTS.snapshot(SETTINGS.replica_name)


@app.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition of this replica's registry."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


@app.get("/logs/tail")
def logs_tail(
    seconds: int = Query(default=300, ge=1, le=86400),
    limit: int = Query(default=2000, ge=1, le=10000),
    replica: str | None = Query(default=None, min_length=1, max_length=100),
) -> dict[str, Any]:
    """Newest-first ERROR entries of the shared log from the last ``seconds`` (optionally one replica)."""
    entries = read_recent_entries(SETTINGS.log_dir / LOG_FILE_NAME, time.time() - seconds, limit, replica)
    return {"entries": entries, "count": len(entries), "seconds": seconds, "limit": limit}


def main(argv: list[str] | None = None) -> None:
    """CLI: ``--port`` (default PORT or 8001) and ``--host`` (default 127.0.0.1); runs uvicorn."""
    global SETTINGS
    parser = argparse.ArgumentParser(description="Inventory demo service")
    parser.add_argument("--port", type=int, default=None, help="listen port (default: PORT env or 8001)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address")
    args = parser.parse_args(argv)
    if args.port is not None:
        SETTINGS = ServiceSettings(port=args.port)
    uvicorn.run(app, host=args.host, port=SETTINGS.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
