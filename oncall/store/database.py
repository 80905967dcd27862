"""The agent's database: one SQLAlchemy async engine for SQLite (default) or PostgreSQL.

- SQLite (``sqlite:///path``, driver aiosqlite): WAL mode, ``busy_timeout`` 5 s, foreign keys on.
  Write blocks start with ``BEGIN IMMEDIATE`` so two writers (coroutines or processes) never deadlock
  on a lock upgrade, and a process's own writers take turns first (``WriterTurns``: urgent writers, the
  webhook intake, before background work); reads use a deferred ``BEGIN`` and run beside writers (WAL). SQLAlchemy's
  documented recipe: the driver's own BEGIN is disabled (``isolation_level = None``) and the
  ``begin`` event emits ours (SQLAlchemy docs, "Transactions with SQLite and the sqlite3 driver").
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
import collections
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from oncall.redaction import Redacted, Redactor

WRITE_OPTION = "oncall_write"
"""Execution option set on connections of ``Store.write()`` (SQLite: ``BEGIN IMMEDIATE``)."""
SQLITE_BUSY_TIMEOUT_MS = 5000
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


def async_url(url: str) -> URL:
    """The SQLAlchemy URL with its async driver: ``sqlite`` -> aiosqlite, ``postgresql`` -> psycopg.

    Raises:
        ValueError: a scheme other than sqlite or postgresql.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}: use sqlite:/// or postgresql://")


def sync_url(url: str) -> URL:
    """The URL with a synchronous driver (Alembic migrations): pysqlite or psycopg."""
    parsed = make_url(url)
    return parsed.set(drivername="sqlite" if parsed.get_backend_name() == "sqlite" else "postgresql+psycopg")


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for PostgreSQL or an in-memory database)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (see _sqlite_begin)
    cursor = dbapi_connection.cursor()
    for pragma in (
        "journal_mode=WAL",
        "synchronous=NORMAL",
        "foreign_keys=ON",
        f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _redact_parameters(parameters: Any, redact: Callable[[str], str]) -> Any:
    """DBAPI parameters (a tuple, a dict, or a list of them for executemany) with every string redacted."""
    if isinstance(parameters, str):
        return parameters if isinstance(parameters, Redacted) else redact(parameters)
    if isinstance(parameters, dict):
        return {key: _redact_parameters(value, redact) for key, value in parameters.items()}
    if isinstance(parameters, (list, tuple)):
        return type(parameters)(_redact_parameters(value, redact) for value in parameters)
    return parameters


def _sqlite_begin(connection: Any) -> None:
    write = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


T = TypeVar("T")


async def uncancellable(step: Awaitable[T]) -> T:
    """Run ``step`` (a statement, BEGIN, COMMIT, ROLLBACK) to its end even when the task is cancelled meanwhile;
    the cancellation (however many times it is repeated) is raised once it finished. SQLAlchemy invalidates a
    connection whose operation is cut by a cancellation, and with aiosqlite the dropped connection keeps its
    SQLite write lock until it is garbage-collected, so no operation is ever cut."""
    task = asyncio.ensure_future(step)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})  # never cancels ``task`` itself
        except asyncio.CancelledError:
            # anyio's cancel scopes (Starlette's streaming responses) cancel again at every await: keep waiting,
            # or a late BEGIN would run on a connection already handed back to the pool.
            cancelled = True
    if cancelled:
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation wins
        raise asyncio.CancelledError
    return task.result()


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
    (shutdown, a lost claim), so a cancelled task never leaves a SQLite write lock or a PostgreSQL
    transaction open on a pooled connection."""
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


class WriterTurns:
    """One writer at a time, in arrival order, except that an urgent writer goes before every waiting ordinary one.

    SQLite has one writer: a POST waiting to commit its webhook body (the sender waits for the answer) goes
    before queued background writers (applier, investigations, outbox); a transaction already running ends
    first. A cancelled waiter leaves the queue; one cancelled just after being handed the turn passes it on.
    """

    def __init__(self) -> None:
        self._busy = False
        self._waiting: dict[bool, collections.deque[asyncio.Future[None]]] = {
            True: collections.deque(),
            False: collections.deque(),
        }

    @asynccontextmanager
    async def turn(self, urgent: bool) -> AsyncIterator[None]:
        """Hold the writer's turn for the block (``urgent``: ahead of every waiting ordinary writer)."""
        if self._busy:
            handed = asyncio.get_running_loop().create_future()
            self._waiting[urgent].append(handed)
            try:
                await handed
            except asyncio.CancelledError:
                if handed.done() and not handed.cancelled():
                    self._pass_on()
                else:
                    self._waiting[urgent].remove(handed)
                raise
        self._busy = True
        try:
            yield
        finally:
            self._pass_on()

    def _pass_on(self) -> None:
        """Hand the turn to the next waiter (urgent ones first), or mark it free."""
        for queue in (self._waiting[True], self._waiting[False]):
            while queue:
                handed = queue.popleft()
                if not handed.done():
                    handed.set_result(None)
                    return
        self._busy = False


class Store:
    """The async engine and its transactions.

    Args:
        url: ``sqlite:///relative/or/absolute.db`` or ``postgresql://user:pw@host:port/db``
            (the async driver is chosen here; see ``async_url``). A SQLite file's folder is created.
        redact: applied to every string written (default: a ``Redactor`` of secret-shaped strings only;
            the agent passes one that also knows the configured secret values).
    """

    def __init__(self, url: str, redact: Callable[[str], str] | None = None) -> None:
        self.url = url
        self.redact = redact or Redactor()
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        # A local SQLite file needs no liveness ping on every checkout (each costs aiosqlite thread hops).
        # The pool's rollback on checkin stays: it ends a transaction whose BEGIN a cancelled task left behind.
        local = make_url(url).get_backend_name() == "sqlite"
        engine = create_async_engine(async_url(url), json_serializer=json_dumps, pool_pre_ping=not local)
        self.engine: AsyncEngine = ShieldedEngine(engine.sync_engine)
        self.dialect = self.engine.dialect.name
        # SQLite has one writer at a time: this process's writers queue here (fair, FIFO, holding no pooled
        # connection) instead of in SQLite's busy handler, where a burst of them could each wait out
        # busy_timeout while the writer holding the lock waits for the event loop. Other processes on the
        # same file still meet the busy handler.
        self._writers = WriterTurns() if self.dialect == "sqlite" else None
        event.listen(self.engine.sync_engine, "before_cursor_execute", self._before_execute, retval=True)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin)

    def _before_execute(
        self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> tuple[str, Any]:
        return statement, _redact_parameters(parameters, self.redact)

    @asynccontextmanager
    async def write(self, urgent: bool = False) -> AsyncIterator[AsyncConnection]:
        """A read-write transaction: committed when the block ends, rolled back when it raises. ``urgent``: on
        SQLite, ahead of the writers of this process waiting for their turn (``WriterTurns``)."""
        turn = self._writers.turn(urgent) if self._writers is not None else contextlib.nullcontext()
        async with turn, self.engine.connect() as conn:
            conn = await conn.execution_options(**{WRITE_OPTION: True})
            async with _transaction(conn):
                yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction (a consistent snapshot on both dialects)."""
        async with self.engine.connect() as conn, _transaction(conn):
            yield conn

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
