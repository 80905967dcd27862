"""The Alembic migrations and ``oncall.store.schema`` describe the same database (SQLite and PostgreSQL), with
one head, and a database written by the agent's first (SQLite-only) version is adopted, not recreated."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from oncall.store.database import sync_url
from oncall.store.migrate import FIRST_VERSION_REVISION, MIGRATIONS, alembic_config, migrate
from oncall.store.schema import metadata
from tests.conftest import TEST_DATABASE, database_url
from tests.support import LOCAL_FIXTURES

FIRST_VERSION_SCHEMA = (LOCAL_FIXTURES / "store" / "v1_schema.sql").read_text()
OLD_INCIDENT = (
    "INSERT INTO incidents (group_key, title, created_at, updated_at) VALUES ('{}:{alertname=\"Old\"}', 'Old', 1, 1)"
)


def test_migrations_have_one_head() -> None:
    with create_engine("sqlite://").connect() as connection:
        heads = ScriptDirectory.from_config(alembic_config(connection)).get_heads()
    assert len(heads) == 1, f"several Alembic heads {heads}: chain the newest revision onto the previous head"
    assert MIGRATIONS.is_dir()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_migrated_database_matches_the_schema(tmp_path: Path, dialect: str, request: pytest.FixtureRequest) -> None:
    if dialect == "sqlite":
        url = f"sqlite:///{tmp_path / 'fresh.db'}"
        migrate(url)
    else:
        url = database_url(request.getfixturevalue("postgres").url, TEST_DATABASE)  # migrated by the fixture
    engine = create_engine(sync_url(url))
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    engine.dispose()
    assert differences == [], differences


def test_a_first_version_database_is_stamped_and_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as connection:
        connection.executescript(FIRST_VERSION_SCHEMA)
        connection.execute(OLD_INCIDENT)
    migrate(f"sqlite:///{path}")
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        version = MigrationContext.configure(connection).get_current_revision()
        assert set(metadata.tables) <= set(inspect(connection).get_table_names())
        assert connection.exec_driver_sql("SELECT title FROM incidents").scalar_one() == "Old"
        # the old firing incident, never investigated, becomes episode 1 with its investigation queued
        episode = connection.exec_driver_sql("SELECT number, investigation FROM episodes").one()
        assert tuple(episode) == (1, "queued")
    engine.dispose()
    assert version is not None and version >= FIRST_VERSION_REVISION


def test_raw_alerts_stored_before_the_intake_get_their_outcome(tmp_path: Path) -> None:
    """0006: bodies stored by an older version keep what became of them: applied ones ``accepted``, refused
    ones ``invalid``, ones whose application raised ``failed``; one never applied stays waiting (claimable)."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0005_remediations")
        connection.exec_driver_sql(
            "INSERT INTO raw_alerts (received_at, body_sha256, body, valid, error) VALUES"
            " (1, 'a', '{}', 1, NULL), (2, 'b', 'x', 0, 'not valid JSON'),"
            " (3, 'c', '{}', 0, 'processing failed: KeyError: x'), (4, 'd', '{}', 0, NULL)"
        )
    migrate(url)
    with engine.connect() as connection:
        outcomes = connection.exec_driver_sql("SELECT body_sha256, outcome FROM raw_alerts ORDER BY id").all()
    engine.dispose()
    assert outcomes == [("a", "accepted"), ("b", "invalid"), ("c", "failed"), ("d", None)]
