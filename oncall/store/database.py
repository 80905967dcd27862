"""The agent's database: one SQLAlchemy async engine for SQLite (default) or PostgreSQL.

- SQLite (``sqlite:///path``): SQLAlchemy's synchronous pysqlite engine, run on the event loop's thread and
  never waiting inside SQLite (``oncall.store.sqlite``: WAL mode, foreign keys on, checkpoints on a worker
  thread). Write blocks start with ``BEGIN IMMEDIATE`` so two writers (coroutines or processes) never
  deadlock on a lock upgrade, and a process's own writers take turns first (``sqlite.WriterTurns``: urgent
  writers, the webhook intake, before background work); reads use a deferred ``BEGIN`` and run beside
  writers (WAL).
- PostgreSQL (``postgresql://...``, driver psycopg 3): READ COMMITTED; rows that several replicas may
  write at once are locked with ``SELECT ... FOR UPDATE`` by the store modules.

Text reaching the database is made storable: lone UTF-16 surrogates (valid in JSON, not in UTF-8)
and NUL characters (refused by PostgreSQL) become U+FFFD, in plain columns and inside JSON columns.

Secrets never reach the database: every string parameter of every statement (JSON columns included,
after serialisation) passes the store's redactor (``oncall.redaction``) in a ``before_cursor_execute``
hook, whichever module wrote it. Text already redacted (``Redacted``) is not scanned again.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import CursorResult, Dialect, Executable, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from oncall.redaction import Redacted, Redactor
from oncall.store.cancellation import uncancellable
from oncall.store.sqlite import SQLiteDatabase

UNSTORABLE = re.compile("[\ud800-\udfff\x00]")


class StorableText(Redacted):
    """Text already redacted and made storable by its producer (piece by piece, e.g. a large webhook body):
    neither ``storable`` nor the store's redaction hook scan it again."""

    __slots__ = ()


def storable(text: str) -> str:
    """Replace lone surrogates and NUL characters (not storable in UTF-8 / PostgreSQL) with U+FFFD.

    A ``Redacted`` text stays ``Redacted``; a ``StorableText`` is returned as it is.
    """
    if isinstance(text, StorableText):
        return text
    clean = UNSTORABLE.sub("\ufffd", text)
    return Redacted(clean) if isinstance(text, Redacted) and not isinstance(clean, Redacted) else clean


def json_dumps(value: Any) -> str:
    """JSON for JSON columns: compact, non-ASCII kept, unstorable characters replaced, unknown types as str."""
    return storable(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str))


def backend(url: str) -> str:
    """``sqlite`` or ``postgresql``, the database a URL names.

    Raises:
        ValueError: a scheme other than sqlite or postgresql.
    """
    parsed = make_url(url)
    name = parsed.get_backend_name()
    if name not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}: use sqlite:/// or postgresql://")
    return name


def sync_url(url: str) -> URL:
    """The URL with a synchronous driver (Alembic migrations; the SQLite store): pysqlite or psycopg."""
    parsed = make_url(url)
    return parsed.set(drivername="sqlite" if parsed.get_backend_name() == "sqlite" else "postgresql+psycopg")


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for PostgreSQL or an in-memory database)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _redact_parameters(parameters: Any, redact: Callable[[str], str]) -> Any:
    """DBAPI parameters (a tuple, a dict, or a list of them for executemany) with every string redacted."""
    if isinstance(parameters, str):
        return parameters if isinstance(parameters, Redacted) else redact(parameters)
    if isinstance(parameters, dict):
        return {key: _redact_parameters(value, redact) for key, value in parameters.items()}
    if isinstance(parameters, (list, tuple)):
        return type(parameters)(_redact_parameters(value, redact) for value in parameters)
    return parameters


class ShieldedConnection(AsyncConnection):
    """An ``AsyncConnection`` whose statements run to their end when the task is cancelled (``uncancellable``)."""

    async def execute(self, statement: Any, parameters: Any = None, **options: Any) -> Any:
        """``AsyncConnection.execute``, not interrupted by a cancellation (raised after the statement)."""
        return await uncancellable(super().execute(statement, parameters, **options))


class ShieldedEngine(AsyncEngine):
    """An ``AsyncEngine`` handing out ``ShieldedConnection`` objects."""

    _connection_cls = ShieldedConnection


@asynccontextmanager
async def _transaction(conn: AsyncConnection) -> AsyncIterator[None]:
    """Begin, then commit or roll back, every step and statement run to its end even when the task is cancelled
    (shutdown, a lost claim), so a cancelled task never leaves a PostgreSQL transaction open on a pooled
    connection."""
    transaction = conn.begin()
    try:
        await uncancellable(transaction.start())
    except asyncio.CancelledError:
        if conn.in_transaction():
            await uncancellable(transaction.rollback())
        raise
    try:
        yield
    except BaseException:
        await uncancellable(transaction.rollback())
        raise
    await uncancellable(transaction.commit())


class Connection(Protocol):
    """What the store modules use of a transaction's connection: ``InlineConnection`` on SQLite,
    ``AsyncConnection`` on PostgreSQL."""

    @property
    def dialect(self) -> Dialect:
        """The SQLAlchemy dialect (``dialect.name``: ``sqlite`` or ``postgresql``)."""
        ...

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]:
        """Run one Core statement (``parameters``: a dict, or a list of dicts for executemany); a buffered result."""
        ...


class Store:
    """The database and its transactions.

    Args:
        url: ``sqlite:///relative/or/absolute.db`` or ``postgresql://user:pw@host:port/db`` (the driver is
            chosen here: pysqlite on the event loop's thread, or psycopg 3 async). A SQLite file's folder is
            created.
        redact: applied to every string written (default: a ``Redactor`` of secret-shaped strings only;
            the agent passes one that also knows the configured secret values).

    Raises:
        ValueError: a URL scheme other than sqlite or postgresql.
    """

    def __init__(self, url: str, redact: Callable[[str], str] | None = None) -> None:
        self.url = url
        self.redact = redact or Redactor()
        self.dialect = backend(url)
        self._sqlite: SQLiteDatabase | None = None
        self._postgres: AsyncEngine | None = None
        if self.dialect == "sqlite":
            path = sqlite_path(url)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
            self._sqlite = SQLiteDatabase(sync_url(url), path, self._before_execute, json_dumps)
        else:
            engine = create_async_engine(sync_url(url), json_serializer=json_dumps, pool_pre_ping=True)
            self._postgres = ShieldedEngine(engine.sync_engine)
            event.listen(self._postgres.sync_engine, "before_cursor_execute", self._before_execute, retval=True)

    @property
    def shown_url(self) -> str:
        """The URL with its password masked (for logs)."""
        return make_url(self.url).render_as_string(hide_password=True)

    def _before_execute(
        self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> tuple[str, Any]:
        return statement, _redact_parameters(parameters, self.redact)

    @asynccontextmanager
    async def write(self, urgent: bool = False) -> AsyncIterator[Connection]:
        """A read-write transaction: committed when the block ends, rolled back when it raises. ``urgent``: on
        SQLite, ahead of the writers of this process waiting for their turn (``sqlite.WriterTurns``)."""
        if self._sqlite is not None:
            async with self._sqlite.transaction(write=True, urgent=urgent) as inline:
                yield inline
            return
        assert self._postgres is not None
        async with self._postgres.connect() as conn, _transaction(conn):
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Connection]:
        """A read-only transaction (a consistent snapshot on both dialects)."""
        if self._sqlite is not None:
            async with self._sqlite.transaction(write=False) as inline:
                yield inline
            return
        assert self._postgres is not None
        async with self._postgres.connect() as conn, _transaction(conn):
            yield conn

    async def close(self) -> None:
        """Close every pooled connection (SQLite: after a running checkpoint)."""
        if self._sqlite is not None:
            await self._sqlite.close()
        if self._postgres is not None:
            await self._postgres.dispose()
