"""Shared pytest fixtures: a per-test process group that is always cleaned up, and the agent's store on both
dialects: ``store`` runs each test on a fresh SQLite file and on a fresh PostgreSQL database (one throw-away
PostgreSQL server for the session, ``stackctl.postgres``; skipped with the reason when its binaries are
missing: ``make deps`` installs them, CI does)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql as pgsql
from sqlalchemy.engine import make_url

from oncall.store.database import Store
from oncall.store.migrate import migrate
from oncall.store.schema import metadata
from stackctl.postgres import PostgresServer, find_pg_bindir
from tests.rig import Rig, make_settings
from tests.support import ProcessGroup, migrated_store

TEST_DATABASE = "oncall_tests"


@pytest.fixture
def procs(tmp_path: Path):
    """A ProcessGroup whose processes are stopped by PID when the test ends."""
    group = ProcessGroup(tmp_path / "proc-logs")
    try:
        yield group
    finally:
        group.stop_all()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory):
    """One throw-away PostgreSQL server for the session, with a migrated database ``oncall_tests``."""
    if find_pg_bindir() is None:
        pytest.skip("PostgreSQL binaries (initdb, postgres) not installed: make deps installs them")
    with PostgresServer(tmp_path_factory.mktemp("postgres")) as server:
        migrate(database_url(server.url, TEST_DATABASE, create=True))
        yield server


def database_url(server_url: str, name: str, *, create: bool = False) -> str:
    """The URL of database ``name`` on the server of ``server_url``, created first when asked."""
    if create:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def emptied_postgres_url(server: PostgresServer) -> str:
    """The session's migrated test database with every table emptied and every id sequence reset."""
    url = database_url(server.url, TEST_DATABASE)
    tables = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")  # type: ignore[arg-type]
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A migrated, empty store, closed afterwards: a SQLite file in the test's folder, then the session's
    PostgreSQL test database emptied."""
    if request.param == "sqlite":
        database = migrated_store(tmp_path / "oncall.db")
    else:
        database = Store(emptied_postgres_url(request.getfixturevalue("postgres")))
    yield database
    await database.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No model, GitHub or code root settings leak in from the environment."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL", "GITHUB_REPO", "GITHUB_TOKEN", "CODE_ROOT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def rig_factory(tmp_path: Path, clean_env: None) -> AsyncIterator[Callable[..., Rig]]:
    """Build Rigs (settings overrides as keyword arguments) sharing one migrated store; closed at the end."""
    store = migrated_store(tmp_path / "oncall.db")
    made: list[Rig] = []

    def make(**overrides: Any) -> Rig:
        rig = Rig(make_settings(tmp_path, **overrides), store, httpx.AsyncClient())
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.tasks.drain(5)
        await rig.http.aclose()
    await store.close()
