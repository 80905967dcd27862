"""Payments demo service: the second service the on-call agent watches (FastAPI).

Run: ``python payments_service.py --port 8201`` or ``uvicorn payments_service:app``.
Environment: PORT, INSTANCE, SERVICE_VERSION, LOG_DIR, LOG_MAX_BYTES, LOG_BACKUP_COUNT,
PAYMENTS_DB (see ``PaymentsSettings``).

It is deliberately built differently from inventory_service.py, the way many teams build theirs:

* metrics: only prometheus-fastapi-instrumentator's defaults (``Instrumentator().instrument(app)
  .expose(app)``) plus prometheus_client's default process, platform and GC collectors;
* logs: plain text through Python logging and a ``RotatingFileHandler``, one file per instance
  (``LOG_DIR/<instance>.log``, rotated to ``.log.1`` ...), full tracebacks for exceptions;
* version: over HTTP (``GET /version``), not as a build_info metric;
* no supervisor: instances are started directly and stopped by PID;
* fault injection: its own admin endpoint ``POST /admin/faults``.

Payments are stored in one SQLite file (WAL) shared by every instance. The HTTP surface is
documented in README.md ("payments_service.py").
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any, ClassVar, Literal

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_fastapi_instrumentator import Instrumentator
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random

from demo_faults import FaultSpecBase, InjectedFault

REPO_ROOT = Path(__file__).resolve().parent
SERVICE = "payments"
BASE_PORT = 8200


class PaymentsSettings(BaseSettings):
    """Instance configuration read from the environment (names are the upper-case field names).

    ``log_max_bytes`` is the size (bytes) at which the log file is rotated; ``log_backup_count``
    the number of rotated files kept (``<instance>.log.1`` is the newest).
    """

    port: int = Field(default=BASE_PORT + 1, ge=1, le=65535)
    instance: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    service_version: str = Field(default="1.0.0", min_length=1, max_length=64)
    log_dir: Path = REPO_ROOT / "logs" / "payments"
    log_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    log_backup_count: int = Field(default=3, ge=1, le=100)
    payments_db: Path = REPO_ROOT / "data" / "payments.db"

    @property
    def instance_name(self) -> str:
        """INSTANCE, else ``payments-<port-8200>`` for ports 8201-8209, else ``payments-<port>``."""
        if self.instance:
            return self.instance
        if BASE_PORT < self.port < BASE_PORT + 10:
            return f"{SERVICE}-{self.port - BASE_PORT}"
        return f"{SERVICE}-{self.port}"

    @property
    def log_file(self) -> Path:
        """This instance's plain-text log: ``LOG_DIR/<instance>.log``."""
        return self.log_dir / f"{self.instance_name}.log"


SETTINGS = PaymentsSettings()


# --------------------------------------------------------------------------------------------
# Business logic: charge in the customer's currency, settle in US dollars
# --------------------------------------------------------------------------------------------

Currency = Literal["USD", "EUR", "GBP", "JPY"]
# ISO 4217 minor-unit exponents of the charge currencies (2 = cents).
MINOR_UNIT_EXPONENTS: dict[str, int] = {"USD": 2, "EUR": 2, "GBP": 2}
# Settlement rates: US dollars per unit of each accepted currency.
USD_PER_UNIT: dict[str, Decimal] = {
    "USD": Decimal("1"),
    "EUR": Decimal("1.08"),
    "GBP": Decimal("1.27"),
    "JPY": Decimal("0.0067"),
}


def to_minor_units(amount: Decimal, currency: str) -> int:
    """``amount`` of ``currency`` in its minor units, rounded half-even (12.345 USD -> 1234 cents).

    Deliberate demo bug: JPY is accepted (it has a settlement rate) but has no entry in
    MINOR_UNIT_EXPONENTS, so every JPY charge raises KeyError: 'JPY'. Tests find the failing
    line by its marker comment; keep the marker on the line that raises.
    """
    exponent = MINOR_UNIT_EXPONENTS[currency]
    return int((amount * 10**exponent).to_integral_value(rounding=ROUND_HALF_EVEN))


def settle(amount: Decimal, currency: str) -> tuple[int, int]:
    """Return (charged amount in ``currency``'s minor units, settled amount in US cents).

    Raises:
        KeyError: for a currency missing from the conversion tables (the JPY bug above).
    """
    charged = to_minor_units(amount, currency)
    settled = to_minor_units(amount * USD_PER_UNIT[currency], "USD")
    return charged, settled


class PaymentRequest(BaseModel):
    """POST /payments body: ``amount`` in currency units (> 0, at most 2 decimals), the charge
    currency and the paying customer's id. Unknown fields are rejected (422)."""

    model_config = ConfigDict(extra="forbid")

    amount: Decimal = Field(gt=0, le=1_000_000, decimal_places=2, allow_inf_nan=False)
    currency: Currency
    customer_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")


class Payment(BaseModel):
    """A captured payment. ``amount_minor`` is in the charge currency's minor units,
    ``settled_usd_cents`` in US cents; ``created_at`` epoch seconds; ``instance`` took the request."""

    id: int
    status: Literal["captured"]
    amount: Decimal
    currency: Currency
    amount_minor: int
    settled_usd_cents: int
    customer_id: str
    instance: str
    created_at: float


# --------------------------------------------------------------------------------------------
# SQLite storage (one file shared by every instance)
# --------------------------------------------------------------------------------------------

DB_BUSY_TIMEOUT_S = 10.0


def connect(db_path: Path) -> sqlite3.Connection:
    """Open an autocommit connection whose busy timeout lets concurrent instances wait for locks."""
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
    """Create the payments table (WAL mode); idempotent and safe when instances start together.

    Raises:
        sqlite3.OperationalError: when the file stays locked through every retry.
    """
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with closing(connect(db_path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS payments ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " status TEXT NOT NULL,"
            " amount TEXT NOT NULL,"
            " currency TEXT NOT NULL,"
            " amount_minor INTEGER NOT NULL,"
            " settled_usd_cents INTEGER NOT NULL,"
            " customer_id TEXT NOT NULL,"
            " instance TEXT NOT NULL,"
            " created_at REAL NOT NULL)"
        )


def insert_payment(db_path: Path, request: PaymentRequest, charged: int, settled: int, instance: str) -> Payment:
    """Store a captured payment and return it with its new id."""
    with closing(connect(db_path)) as conn:
        row = conn.execute(
            "INSERT INTO payments (status, amount, currency, amount_minor, settled_usd_cents, customer_id, instance,"
            " created_at) VALUES ('captured', ?, ?, ?, ?, ?, ?, ?)"
            " RETURNING id, status, amount, currency, amount_minor, settled_usd_cents, customer_id, instance,"
            " created_at",
            (str(request.amount), request.currency, charged, settled, request.customer_id, instance, time.time()),
        ).fetchone()
    return Payment(**dict(row))


def fetch_payment(db_path: Path, payment_id: int) -> Payment | None:
    """Return the payment with ``payment_id``, or None when it does not exist."""
    with closing(connect(db_path)) as conn:
        row = conn.execute(
            "SELECT id, status, amount, currency, amount_minor, settled_usd_cents, customer_id, instance, created_at"
            " FROM payments WHERE id = ?",
            (payment_id,),
        ).fetchone()
    return Payment(**dict(row)) if row else None


# --------------------------------------------------------------------------------------------
# Fault injection (per instance, in memory)
# --------------------------------------------------------------------------------------------

FaultMode = Literal["none", "errors", "latency"]
# Parameters each mode takes, with their defaults; parameters of another mode are rejected.
MODE_PARAMS: dict[str, dict[str, int | float]] = {
    "none": {},
    "errors": {"p_error": 0.5},
    "latency": {"latency_ms": 1500},
}


class FaultSpec(FaultSpecBase):
    """POST /admin/faults body. ``p_error`` is a probability 0-1, ``latency_ms`` milliseconds
    (1-30000). Unknown fields, out-of-range values and parameters of another mode are rejected
    (422 with the reason); the mode's missing parameters get their defaults."""

    mode_params: ClassVar[dict[str, dict[str, int | float]]] = MODE_PARAMS

    mode: FaultMode
    p_error: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    latency_ms: int | None = Field(default=None, ge=1, le=30000)


@dataclass
class FaultState:
    """Current fault of this instance and when it was set (epoch seconds)."""

    spec: FaultSpec = field(default_factory=lambda: FaultSpec(mode="none"))
    since: float = field(default_factory=time.time)

    def set(self, spec: FaultSpec) -> None:
        """Switch to ``spec``."""
        self.spec = spec
        self.since = time.time()

    def snapshot(self, instance: str) -> dict[str, Any]:
        """{"mode", ...params, "since": epoch s, "instance"}."""
        return {"mode": self.spec.mode, **self.spec.params(), "since": self.since, "instance": instance}


FAULTS = FaultState()


async def apply_fault() -> None:
    """Dependency of the business routes: apply this instance's active fault to the request.

    Raises:
        InjectedFault: in mode ``errors`` with probability p_error.
    """
    spec = FAULTS.spec
    if spec.mode == "latency":
        assert spec.latency_ms is not None  # set by FaultSpec's validator for this mode
        await asyncio.sleep(spec.latency_ms / 1000)
    elif spec.mode == "errors":
        assert spec.p_error is not None  # set by FaultSpec's validator for this mode
        if random.random() < spec.p_error:  # noqa: S311 - fault sampling, not security
            raise InjectedFault(f"injected fault: errors (p_error={spec.p_error})")


# --------------------------------------------------------------------------------------------
# Plain-text log, one rotating file per instance
# --------------------------------------------------------------------------------------------

# e.g. "2025-01-31T12:00:00.123Z ERROR payments-1 payments.api: unhandled KeyError in POST /payments: 'JPY'"
# followed, for exceptions, by the full Python traceback on the next lines.
LOG_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(instance)s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
LOGGER = logging.getLogger("payments")
API_LOG = logging.getLogger("payments.api")
FAULT_LOG = logging.getLogger("payments.faults")


class InstanceFilter(logging.Filter):
    """Adds ``record.instance`` (this instance's name) for LOG_FORMAT."""

    def __init__(self, instance: str) -> None:
        super().__init__()
        self.instance = instance

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate the record; never drops it."""
        record.instance = self.instance
        return True


def log_formatter() -> logging.Formatter:
    """LOG_FORMAT with UTC timestamps (ISO 8601, milliseconds, ``Z``)."""
    formatter = logging.Formatter(LOG_FORMAT, LOG_DATE_FORMAT)
    formatter.converter = time.gmtime
    return formatter


def configure_logging(settings: PaymentsSettings) -> RotatingFileHandler:
    """Route the ``payments`` loggers (INFO and above) to the instance's rotating plain-text file only.

    Returns the handler (rotation at ``log_max_bytes`` bytes, ``log_backup_count`` files kept).
    """
    for handler in list(LOGGER.handlers):
        LOGGER.removeHandler(handler)
        handler.close()
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    handler = RotatingFileHandler(
        settings.log_file,
        maxBytes=settings.log_max_bytes,
        backupCount=settings.log_backup_count,
        encoding="utf-8",
    )
    handler.setFormatter(log_formatter())
    handler.addFilter(InstanceFilter(settings.instance_name))
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False
    return handler


def route_of(request: Request) -> str:
    """The matched route's path template (``/payments/{payment_id}``), else the raw path."""
    return getattr(request.scope.get("route"), "path", None) or request.url.path


# --------------------------------------------------------------------------------------------
# Application and routes
# --------------------------------------------------------------------------------------------


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    """Start-up: open the instance's log file and create the database; log start and stop."""
    configure_logging(SETTINGS)
    await run_in_threadpool(init_db, SETTINGS.payments_db)
    LOGGER.info(
        "payments %s started as %s on port %d (pid %d)",
        SETTINGS.service_version,
        SETTINGS.instance_name,
        SETTINGS.port,
        os.getpid(),
    )
    yield
    LOGGER.info("payments %s stopping", SETTINGS.instance_name)


class UnhandledErrorMiddleware:
    """Pure ASGI middleware: an unhandled exception is logged at ERROR with its full traceback and
    answered 500 {"detail": "internal server error"}.

    It sits inside the instrumentator's middleware (which counts the 500 as ``5xx``) and keeps the
    exception from reaching uvicorn, which would close the client's keep-alive connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point (HTTP only; lifespan passes through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def send_and_track(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_track)
        except Exception as exc:
            route = getattr(scope.get("route"), "path", None) or scope["path"]
            API_LOG.error("unhandled %s in %s %s: %s", type(exc).__name__, scope["method"], route, exc, exc_info=exc)
            if response_started:
                raise
            await JSONResponse({"detail": "internal server error"}, status_code=500)(scope, receive, send)


app = FastAPI(title=SERVICE, lifespan=lifespan)
app.add_middleware(UnhandledErrorMiddleware)
Instrumentator().instrument(app).expose(app)  # added last, so it wraps UnhandledErrorMiddleware
business = APIRouter(dependencies=[Depends(apply_fault)])


@app.exception_handler(InjectedFault)
async def injected_fault_handler(request: Request, exc: InjectedFault) -> JSONResponse:
    """500 {"detail": "injected fault: errors"}, logged as one ERROR line (no traceback: not a code fault)."""
    FAULT_LOG.error("%s: %s %s answered 500", exc, request.method, route_of(request))
    return JSONResponse({"detail": InjectedFault.public_detail}, status_code=500)


@business.post("/payments", status_code=201, response_model=Payment)
def create_payment(request: PaymentRequest) -> Payment:
    """Capture a payment: convert to minor units, settle in US cents, store. 201 with the payment."""
    charged, settled = settle(request.amount, request.currency)
    payment = insert_payment(SETTINGS.payments_db, request, charged, settled, SETTINGS.instance_name)
    API_LOG.info(
        "payment %d captured: %s %s (%d minor units), settled %d USD cents, customer %s",
        payment.id,
        payment.amount,
        payment.currency,
        charged,
        settled,
        payment.customer_id,
    )
    return payment


@business.get("/payments/{payment_id}", response_model=Payment)
def get_payment(payment_id: int = PathParam(ge=1, le=2**62)) -> Payment:
    """Return one payment. Raises HTTPException 404 for an unknown id."""
    payment = fetch_payment(SETTINGS.payments_db, payment_id)
    if payment is None:
        raise HTTPException(status_code=404, detail=f"payment {payment_id} not found")
    return payment


app.include_router(business)


@app.get("/version")
def version() -> dict[str, str]:
    """{"service": "payments", "version": SERVICE_VERSION}."""
    return {"service": SERVICE, "version": SETTINGS.service_version}


@app.get("/healthz")
def healthz() -> dict[str, Any]:
    """Liveness: {"status": "ok", "service", "instance", "pid", "fault": current fault state}."""
    return {
        "status": "ok",
        "service": SERVICE,
        "instance": SETTINGS.instance_name,
        "pid": os.getpid(),
        "fault": FAULTS.snapshot(SETTINGS.instance_name),
    }


@app.get("/admin/faults")
def get_faults() -> dict[str, Any]:
    """Current fault state of this instance."""
    return FAULTS.snapshot(SETTINGS.instance_name)


@app.post("/admin/faults")
def post_faults(spec: FaultSpec) -> dict[str, Any]:
    """Set this instance's fault (logged at WARNING) and return the new fault state."""
    FAULTS.set(spec)
    FAULT_LOG.warning("fault injection set to %s %s", spec.mode, spec.params())
    return FAULTS.snapshot(SETTINGS.instance_name)


def main(argv: list[str] | None = None) -> None:
    """CLI: ``--port`` (default PORT or 8201) and ``--host`` (default 127.0.0.1); runs uvicorn."""
    global SETTINGS
    parser = argparse.ArgumentParser(description="Payments demo service")
    parser.add_argument("--port", type=int, default=None, help="listen port (default: PORT env or 8201)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address")
    args = parser.parse_args(argv)
    if args.port is not None:
        SETTINGS = PaymentsSettings(port=args.port)
    uvicorn.run(app, host=args.host, port=SETTINGS.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
