"""Helpers shared by the test suite: free loopback ports, child processes, HTTP polling.

Every process a test starts is registered here and stopped by its PID (SIGTERM, then
SIGKILL after a grace period) so no test leaves an orphan or a busy port behind.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from oncall.incidents.applier import RawAlertApplier
from oncall.incidents.body import receive_stored
from oncall.incidents.ingest import IngestResult, store_invalid
from oncall.incidents.intake import RawAlertIntake
from oncall.store.database import Store
from oncall.store.migrate import migrate
from oncall.store.rows import all_rows
from stackctl.processes import (  # noqa: F401  (re-exported for tests)
    ProcessGroup,
    free_port,
    free_port_block,
    port_is_free,
    wait_applied,
    wait_http_ok,
    wait_until,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"
LOCAL_FIXTURES = REPO_ROOT / "tests" / "fixtures"
PYTHON = sys.executable


def fixture_path(relative: str) -> Path:
    """Return the path of a third-party fixture, preferring the copy kept in tests/fixtures/.

    Args:
        relative: path below ``fixtures/``, e.g. ``"alertmanager/req_001.json"``.
    Raises:
        FileNotFoundError: when neither tests/fixtures nor ../shared/fixtures has it.
    """
    for base in (LOCAL_FIXTURES, SHARED_FIXTURES):
        candidate = base / relative
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"fixture {relative!r} not found in {LOCAL_FIXTURES} or {SHARED_FIXTURES}")


def load_json_fixture(relative: str) -> Any:
    """Parse a JSON fixture (see ``fixture_path``)."""
    return json.loads(fixture_path(relative).read_text())


def migrated_store(path: Path) -> Store:
    """A Store on a fresh SQLite file at ``path``, migrated to the newest schema."""
    url = f"sqlite:///{path}"
    migrate(url)
    return Store(url)


async def sql(store: Store, statement: str, **params: Any) -> list[dict[str, Any]]:
    """Rows of a raw SQL query (named ``:params``) as dicts: for assertions on what was stored. JSON columns
    come back as JSON text on both dialects (PostgreSQL's JSONB is decoded by the driver; re-encoded here)."""
    async with store.read() as conn:
        rows = all_rows(await conn.execute(text(statement), params))
    return [{key: _as_text(value) for key, value in row.items()} for row in rows]


def _as_text(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list) else value


async def sql_one(store: Store, statement: str, **params: Any) -> dict[str, Any] | None:
    """The first row of a raw SQL query (named ``:params``), or None."""
    found = await sql(store, statement, **params)
    return found[0] if found else None


async def sql_exec(store: Store, statement: str, **params: Any) -> None:
    """Run a raw SQL write (named ``:params``) in its own transaction: for seeding test states."""
    async with store.write() as conn:
        await conn.execute(text(statement), params)


async def ingest_notification(store: Store, body: bytes, replica_id: str = "test-replica") -> IngestResult:
    """Store and apply one webhook body as ``POST /alerts`` and the applier do (``RawAlertIntake`` then
    ``RawAlertApplier.apply_one``), one after the other; returns what applying it did. Calls running at once
    on one store need distinct ``replica_id``s (each applier takes its own replica's bodies)."""
    received = await receive_stored(body)
    if received.notification is None:
        return await store_invalid(store, received)
    applier = RawAlertApplier(store, replica_id, grace_s=30.0)
    raw_id = await RawAlertIntake(store, replica_id, applier).store_body(received)
    result = await applier.apply_one()
    assert result is not None and result.raw_id == raw_id, (raw_id, result)
    return result


async def post_alert(
    client: Any,
    body: bytes,
    headers: dict[str, str] | None = None,
    api_headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """POST a webhook body to an agent (an ``httpx.AsyncClient``; ``api_headers`` carry ``ONCALL_API_TOKEN``
    unless the client does) and wait until it was applied; returns ``GET /alerts/{raw_id}`` (``status``:
    accepted/duplicate/failed, ``incident_id``). Raises AssertionError when the POST is not acknowledged
    (202), TimeoutError when it stays queued."""
    answer = await client.post("/alerts", content=body, headers={"Content-Type": "application/json", **(headers or {})})
    assert answer.status_code == 202, answer.text
    raw_id = answer.json()["raw_id"]
    deadline = time.monotonic() + timeout
    while True:
        state: dict[str, Any] = (await client.get(f"/alerts/{raw_id}", headers=api_headers)).raise_for_status().json()
        if state["status"] != "queued":
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"webhook body {raw_id} still queued after {timeout} s")
        await asyncio.sleep(0.01)


def json_body(value: Any) -> bytes:
    """``value`` as the JSON bytes a client posts."""
    return json.dumps(value).encode()


def post_alert_sync(
    base_url: str,
    body: bytes,
    api_headers: dict[str, str],
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """``post_alert`` against a running agent at ``base_url`` (``api_headers`` carry ``ONCALL_API_TOKEN``)."""
    answer = httpx.post(
        f"{base_url}/alerts", content=body, headers={"Content-Type": "application/json", **(headers or {})}, timeout=10
    )
    assert answer.status_code == 202, answer.text
    return wait_applied(base_url, answer.json()["raw_id"], api_headers, timeout)


async def until_idle(store: Store, timeout: float = 20.0) -> None:
    """Wait until the agent's work queues are empty: no webhook body waiting to be applied, no investigation
    queued or running and no outbox row due (rows in backoff are not waited for). Raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while not await _idle(store):
        if time.monotonic() > deadline:
            raise TimeoutError(f"agent still busy after {timeout} s")
        await asyncio.sleep(0.02)


async def settle(services: Any, timeout: float = 20.0) -> None:
    """Wait until an in-process agent's background work is done: no task running (replies being handled,
    deliveries, investigations) and its work queues empty (``until_idle``), twice in a row 50 ms apart.
    Raises TimeoutError."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 2:
        if time.monotonic() > deadline:
            raise TimeoutError(f"agent still busy after {timeout} s")
        quiet = quiet + 1 if not services.tasks.tasks and await _idle(services.store) else 0
        await asyncio.sleep(0.05 if quiet else 0.02)


async def _idle(store: Store) -> bool:
    busy = await sql_one(
        store,
        "SELECT (SELECT count(*) FROM episodes WHERE investigation IN ('queued', 'running'))"
        " + (SELECT count(*) FROM outbox WHERE status = 'pending' AND next_attempt_at <= :now)"
        " + (SELECT count(*) FROM raw_alerts WHERE valid = 0 AND error IS NULL) AS n",
        now=time.time(),
    )
    return busy is not None and busy["n"] == 0
