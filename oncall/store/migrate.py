"""Schema migrations at start: ``alembic upgrade head`` on SQLite or PostgreSQL, the same migrations.

Several agent replicas may start at once against one PostgreSQL; a session-level advisory lock
(``pg_advisory_lock``) makes them migrate one after the other. A SQLite file written by the agent's
first version (tables present, no ``alembic_version``) is stamped at revision ``0001``, the schema
that version created, then upgraded. Run by hand: ``python -m oncall.store.migrate <database URL>``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Connection

from oncall.store.database import sqlite_path, sync_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK_KEY = 0x6F6E63616C6C  # "oncall": the advisory lock id of migrations
FIRST_VERSION_REVISION = "0001"


def alembic_config(connection: Connection) -> Config:
    """An Alembic config bound to ``connection`` (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema revision.

    Raises:
        sqlalchemy.exc.OperationalError (or the driver's error) when the database cannot be reached.
    """
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as connection:
            postgres = connection.dialect.name == "postgresql"
            if postgres:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                connection.commit()
            try:
                config = alembic_config(connection)
                tables = set(inspect(connection).get_table_names())
                if "incidents" in tables and "alembic_version" not in tables:
                    command.stamp(config, FIRST_VERSION_REVISION)
                command.upgrade(config, "head")
                connection.commit()
            finally:
                if postgres:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                    connection.commit()
    finally:
        engine.dispose()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m oncall.store.migrate <database URL, e.g. sqlite:///data/oncall.db>")
    migrate(sys.argv[1])
