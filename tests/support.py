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

from sqlalchemy import text

from oncall.store.database import Store
from oncall.store.migrate import migrate
from oncall.store.rows import all_rows
from stackctl.processes import ProcessGroup, free_port, free_port_block, port_is_free, wait_http_ok, wait_until  # noqa: F401  (re-exported for tests)

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


async def until_idle(store: Store, timeout: float = 20.0) -> None:
    """Wait until the agent's work queues are empty: no investigation queued or running and no outbox row due
    (rows in backoff are not waited for). Raises TimeoutError."""
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
        " + (SELECT count(*) FROM outbox WHERE status = 'pending' AND next_attempt_at <= :now) AS n",
        now=time.time(),
    )
    return busy is not None and busy["n"] == 0
