"""Small helpers shared by the store modules: rows as dicts, dialect-aware inserts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Result
from sqlalchemy.sql.dml import Insert

from oncall.store.database import Connection

Row = dict[str, Any]
MAX_ID = 2**63 - 1
"""The largest id a lookup may use: SQLite binds signed 64-bit integers only (a larger one raises OverflowError)."""


def all_rows(result: Result[Any]) -> list[Row]:
    """Every row of ``result`` as a dict keyed by column name."""
    return [dict(row._mapping) for row in result]


def first_row(result: Result[Any]) -> Row | None:
    """The first row of ``result`` as a dict, or None."""
    row = result.first()
    return dict(row._mapping) if row is not None else None


def insert_ignoring_conflicts(conn: Connection, table: Table) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` for the connection's dialect (SQLite or PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()
