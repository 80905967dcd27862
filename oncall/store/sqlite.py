"""SQLite on the event loop's own thread: SQLAlchemy's synchronous pysqlite engine, never waiting inside SQLite.

A statement on a local SQLite file takes microseconds, while an asyncio driver (aiosqlite) hands every call
(cursor, execute, fetch, close) to its own thread and back: measured on 2026-12-03, 0.5 ms of CPU per
statement against 0.006 ms for the statement itself, and 11 ms of CPU per applied webhook body against 4 ms
here. So the statements run inline, and the event loop runs between two of them (``InlineConnection``), as
it did between two hand-offs. Nothing may block the loop inside SQLite:

- Locks: ``busy_timeout`` is 0, so SQLite answers ``SQLITE_BUSY`` at once instead of waiting; this process's
  writers take turns before that (``WriterTurns``), so only another process (or another ``Store`` on the same
  file) holding the write lock makes ``BEGIN IMMEDIATE`` busy, and it is tried again after asynchronous pauses
  (1 ms doubling to 50 ms) for up to ``BUSY_TIMEOUT_S``. In WAL mode readers never wait for the writer
  (sqlite.org/wal.html; they can meet ``SQLITE_BUSY`` only while another connection recovers the WAL or
  holds the file in exclusive mode, which the agent never does).
- Checkpoints: the automatic checkpoint would run inside a ``COMMIT`` and fsync the database file, so it is
  off (``wal_autocheckpoint=0``) and a PASSIVE checkpoint runs on a worker thread instead, at most every
  ``CHECKPOINT_EVERY_S`` after a write (sqlite3 releases the GIL meanwhile). In WAL mode with
  ``synchronous=NORMAL`` a commit does not fsync (sqlite.org/pragma.html#pragma_synchronous).
- Large statements: one whose parameters hold a megabyte or more (a raw body of several MiB) runs on a worker
  thread (``InlineConnection``), the loop running meanwhile.
- The pool never makes a checkout wait for a connection (``max_overflow=-1``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, CursorResult, Dialect, Engine, Executable, RootTransaction, create_engine, event
from sqlalchemy.exc import OperationalError

from oncall.store.cancellation import uncancellable

log = logging.getLogger("oncall.store")

WRITE_OPTION = "oncall_write"
"""Execution option set on the connections of write transactions (``BEGIN IMMEDIATE``)."""
SQLITE_BUSY = 5
"""SQLite's primary result code when a lock is held by another connection (sqlite.org/rescode.html#busy)."""
BUSY_TIMEOUT_S = 5.0
"""How long a write transaction tries to begin while another process holds SQLite's write lock (seconds)."""
RETRY_PAUSE_S = (0.001, 0.05)
"""First and longest pause (seconds, doubling) between two tries of a busy ``BEGIN IMMEDIATE``."""
CHECKPOINT_EVERY_S = 1.0
"""Least seconds between two WAL checkpoints (each after a write)."""
LARGE_PARAMETERS = 1 << 20
"""Parameter characters (or bytes) from which a statement runs on a worker thread (``InlineConnection``)."""


def _pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Configure a new connection: SQLAlchemy emits BEGIN itself (``_begin``), WAL, foreign keys, no automatic
    checkpoint (``SQLiteDatabase.checkpoint_soon``)."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "wal_autocheckpoint=0"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _begin(connection: Any) -> None:
    """SQLAlchemy's "begin" event: ``BEGIN IMMEDIATE`` for a write transaction, so two writers never deadlock on a
    lock upgrade, a deferred ``BEGIN`` for a read (SQLAlchemy docs, "Transactions with SQLite and the sqlite3
    driver")."""
    write = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def is_busy(exc: OperationalError) -> bool:
    """Whether SQLite refused because another connection holds a lock (``SQLITE_BUSY`` or one of its extended
    codes; ``sqlite_errorcode`` is set by Python 3.11+)."""
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == SQLITE_BUSY


def checkpoint(path: Path) -> None:
    """Copy what the WAL holds into the database file, as far as no reader still needs it (PASSIVE: it takes no
    lock a writer or reader waits for). Blocking: run it on a worker thread.

    Raises:
        sqlite3.Error: the database could not be opened or read.
    """
    with contextlib.closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)) as db:
        db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def text_size(value: Any) -> int:
    """Characters (str) or bytes held by a statement's parameters (a dict, or a list of dicts for executemany),
    counting the keys and values of JSON columns' dicts and lists too."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, dict):
        return sum(text_size(key) + text_size(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return sum(text_size(item) for item in value)
    return 0


class InlineConnection:
    """The connection of one SQLite transaction for the store modules (the part of ``Connection`` they use):
    each statement runs on the event loop's thread after letting the loop run once, or on a worker thread when
    its parameters hold ``LARGE_PARAMETERS`` or more (a 16 MiB body takes about 45 ms to insert; ``offloaded``
    then tells the transaction to commit there too: the commit writes those pages to the WAL).

    Args:
        conn: the transaction's connection.
        threads: whether the connection may be used from a worker thread (a file: pysqlite's
            ``check_same_thread`` is off; an in-memory database: no).
    """

    def __init__(self, conn: Connection, threads: bool) -> None:
        self._conn = conn
        self._threads = threads
        self.dialect: Dialect = conn.dialect
        self.offloaded = False

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]:
        """Run one statement (SQLAlchemy Core; ``parameters`` a dict, or a list of dicts for executemany) and
        return its buffered result. A statement on a worker thread runs to its end when the task is cancelled
        (the cancellation is raised after it)."""
        if self._threads and text_size(parameters) >= LARGE_PARAMETERS:
            self.offloaded = True
            return await uncancellable(asyncio.to_thread(self._conn.execute, statement, parameters))
        await asyncio.sleep(0)  # the loop runs between two statements, as it did between two driver hand-offs
        return self._conn.execute(statement, parameters)


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
                elif handed in self._waiting[urgent]:  # a holder's _pass_on may have dropped it already
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


class SQLiteDatabase:
    """A SQLite file (or in-memory database) used from the event loop's thread (see module docstring).

    Args:
        url: the synchronous SQLAlchemy URL (``sqlite:///path``).
        path: the database file (None in memory: no checkpoints).
        before_execute: SQLAlchemy ``before_cursor_execute`` hook with ``retval=True`` (the store's redaction).
        json_serializer: serialiser of JSON columns.
    """

    def __init__(
        self, url: Any, path: Path | None, before_execute: Callable[..., Any], json_serializer: Callable[[Any], str]
    ) -> None:
        self.path = path
        self.engine: Engine = create_engine(
            url, json_serializer=json_serializer, max_overflow=-1, connect_args={"timeout": 0}
        )
        event.listen(self.engine, "before_cursor_execute", before_execute, retval=True)
        event.listen(self.engine, "connect", _pragmas)
        event.listen(self.engine, "begin", _begin)
        self._writer = self.engine.execution_options(**{WRITE_OPTION: True})
        # SQLite has one writer at a time: this process's writers queue here (fair, FIFO, holding no pooled
        # connection) instead of retrying a busy BEGIN IMMEDIATE; other processes' locks are retried (``_begin``).
        self._turns = WriterTurns()
        self._checkpoint: asyncio.Task[None] | None = None
        self._checkpointed_at = time.monotonic()

    @asynccontextmanager
    async def transaction(self, write: bool, urgent: bool = False) -> AsyncIterator[InlineConnection]:
        """One transaction: committed when the block ends, rolled back when it raises (or is cancelled). A write
        first waits for this process's writer turn (``urgent``: ahead of the waiting ordinary writers).

        Raises:
            sqlalchemy.exc.OperationalError: a write's lock stayed taken by another process for
                ``BUSY_TIMEOUT_S``, or the database failed.
        """
        turn = self._turns.turn(urgent) if write else contextlib.nullcontext()
        async with turn, self._transaction(write) as inline:
            yield inline
        if write:
            self.checkpoint_soon()

    @asynccontextmanager
    async def _transaction(self, write: bool) -> AsyncIterator[InlineConnection]:
        """Begin, then commit when the block ends or roll back when it raises."""
        conn, transaction = await self._begin(write)
        try:
            inline = InlineConnection(conn, threads=self.path is not None)
            yield inline
        except BaseException:
            transaction.rollback()
            raise
        else:
            if inline.offloaded:  # a large statement's pages: written to the WAL off the loop
                await uncancellable(asyncio.to_thread(transaction.commit))
            else:
                transaction.commit()
        finally:
            conn.close()

    async def _begin(self, write: bool) -> tuple[Connection, RootTransaction]:
        """A connection and its begun transaction; a busy ``BEGIN IMMEDIATE`` is tried again after asynchronous
        pauses (module docstring)."""
        pause, longest = RETRY_PAUSE_S
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        engine = self._writer if write else self.engine
        while True:
            try:
                conn = engine.connect()
                try:
                    return conn, conn.begin()
                except BaseException:
                    conn.close()
                    raise
            except OperationalError as exc:
                if not is_busy(exc) or time.monotonic() + pause > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, longest)

    def checkpoint_soon(self) -> None:
        """Start a checkpoint on a worker thread unless one runs or the last began under ``CHECKPOINT_EVERY_S``
        ago."""
        if self.path is None or (self._checkpoint is not None and not self._checkpoint.done()):
            return
        if time.monotonic() - self._checkpointed_at < CHECKPOINT_EVERY_S:
            return
        self._checkpointed_at = time.monotonic()
        self._checkpoint = asyncio.get_running_loop().create_task(self._run_checkpoint(self.path))

    @staticmethod
    async def _run_checkpoint(path: Path) -> None:
        """One checkpoint on a worker thread; a failure is logged (the WAL keeps the data; the next one tries again)."""
        try:
            await asyncio.to_thread(checkpoint, path)
        except sqlite3.Error as exc:
            log.warning("WAL checkpoint of %s failed: %s", path, exc)

    async def close(self) -> None:
        """Wait for a running checkpoint, then close every pooled connection (the last one checkpoints the WAL)."""
        if self._checkpoint is not None:
            await self._checkpoint
        self.engine.dispose()
