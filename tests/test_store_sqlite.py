"""SQLite on the event loop's thread (``oncall.store.sqlite``): the loop never waits inside SQLite. A write lock
held by another process is waited for with asynchronous retries (the loop keeps running, and the wait has an
end), the WAL is checkpointed on a worker thread instead of inside a commit, and a statement with a large parameter
runs on a worker thread too, and so does its transaction's commit."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from oncall.store import sqlite as inline_sqlite
from oncall.store.database import Store
from oncall.store.sqlite import WriterTurns
from tests.support import migrated_store


@contextlib.contextmanager
def write_lock_held(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection (as another process would) holding SQLite's write lock until the block ends."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield other
    finally:
        other.execute("ROLLBACK")
        other.close()


async def ticks_while(work: asyncio.Task[object]) -> int:
    """How many 5 ms sleeps the event loop completed while ``work`` ran."""
    ticks = 0
    while not work.done():
        await asyncio.sleep(0.005)
        ticks += 1
    return ticks


INSERT_INCIDENT = text(
    "INSERT INTO incidents (group_key, title, group_labels, common_labels, common_annotations, created_at, updated_at)"
    " VALUES (:g, :t, '{}', '{}', '{}', 0, 0)"
)


async def insert_incident(store: Store, group_key: str, title: str = "t") -> None:
    async with store.write() as conn:
        await conn.execute(INSERT_INCIDENT, {"g": group_key, "t": title})


async def count_incidents(store: Store) -> int:
    async with store.read() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM incidents"))).scalar_one())


async def test_a_write_waits_for_another_processs_lock_without_stopping_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "oncall.db"
    store = migrated_store(path)
    try:
        assert await count_incidents(store) == 0  # the store's first connection puts the file in WAL mode
        with write_lock_held(path):
            write = asyncio.create_task(insert_incident(store, "g1"))
            reader = asyncio.create_task(count_incidents(store))  # WAL: readers do not wait for the writer
            assert await asyncio.wait_for(reader, 1) == 0
            await asyncio.sleep(0.3)
            assert not write.done()  # still waiting for the lock
        ticks = await ticks_while(write)
        await write
        assert await count_incidents(store) == 1
    finally:
        await store.close()
    assert ticks < 20  # taken soon after the lock was released (retries pause at most 50 ms)


async def test_the_wait_for_a_lock_that_stays_taken_ends_with_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inline_sqlite, "BUSY_TIMEOUT_S", 0.4)
    path = tmp_path / "oncall.db"
    store = migrated_store(path)
    try:
        assert await count_incidents(store) == 0
        with write_lock_held(path):
            write = asyncio.create_task(insert_incident(store, "g1"))
            started = time.monotonic()
            ticks = await ticks_while(write)
            with pytest.raises(OperationalError, match="locked"):
                await write
            waited = time.monotonic() - started
        assert 0.3 < waited < 2 and ticks > 20  # the loop ran during the whole wait
        await insert_incident(store, "g2")  # the store works once the lock is free
        assert await count_incidents(store) == 1
    finally:
        await store.close()


async def test_the_wal_is_checkpointed_on_a_worker_thread_not_inside_a_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "oncall.db"
    store = migrated_store(path)
    try:
        async with store.read() as conn:
            assert (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar_one() == 0
        monkeypatch.setattr(inline_sqlite, "CHECKPOINT_EVERY_S", 3600.0)
        size_before = path.stat().st_size
        for n in range(300):  # well past the 1,000-page automatic checkpoint it would otherwise run
            await insert_incident(store, f"g{n}", "x" * 20_000)
        assert path.stat().st_size == size_before  # every page is still in the WAL only
        monkeypatch.setattr(inline_sqlite, "CHECKPOINT_EVERY_S", 0.0)
        await insert_incident(store, "last")  # a write starts the checkpoint on a worker thread
        for _ in range(200):
            if path.stat().st_size > size_before + 300 * 20_000:
                break
            await asyncio.sleep(0.01)
        assert path.stat().st_size > size_before + 300 * 20_000
        assert await count_incidents(store) == 301
    finally:
        await store.close()


async def test_a_large_statement_runs_on_a_worker_thread_while_the_loop_runs(tmp_path: Path) -> None:
    store = migrated_store(tmp_path / "oncall.db")
    large = "x" * (8 << 20)  # inline, its redaction and insert hold the loop 0.2 s
    try:
        write = asyncio.create_task(insert_incident(store, "g1", large))
        ticks = await ticks_while(write)
        await write
        async with store.read() as conn:
            stored = (await conn.execute(text("SELECT length(title) FROM incidents"))).scalar_one()
    finally:
        await store.close()
    assert stored == len(large)
    assert ticks >= 3


async def test_a_transaction_with_a_large_statement_commits_on_a_worker_thread(tmp_path: Path) -> None:
    """The commit writes the large statement's pages to the WAL: off the loop too; other commits stay inline."""
    store = migrated_store(tmp_path / "oncall.db")
    committed_on: list[int] = []
    assert store._sqlite is not None
    event.listen(store._sqlite.engine, "commit", lambda _conn: committed_on.append(threading.get_ident()))
    try:
        await insert_incident(store, "g1", "x" * (2 << 20))
        await insert_incident(store, "g2")
    finally:
        await store.close()
    assert committed_on[0] != threading.get_ident() and committed_on[1:] == [threading.get_ident()]


async def test_a_large_statement_cancelled_on_its_thread_finishes_then_rolls_back(tmp_path: Path) -> None:
    store = migrated_store(tmp_path / "oncall.db")
    try:
        write = asyncio.create_task(insert_incident(store, "g1", "x" * (8 << 20)))
        await asyncio.sleep(0.02)  # the INSERT runs on its worker thread
        write.cancel()
        with pytest.raises(asyncio.CancelledError):
            await write
        assert await count_incidents(store) == 0  # rolled back after the statement ended
        await insert_incident(store, "g2")  # the connection went back to the pool usable
        assert await count_incidents(store) == 1
    finally:
        await store.close()


async def test_a_writer_cancelled_while_the_turn_is_passed_on_leaves_with_its_cancellation() -> None:
    turns = WriterTurns()
    holder_may_leave = asyncio.Event()

    async def hold() -> None:
        async with turns.turn(urgent=False):
            await holder_may_leave.wait()

    async def wait_for_turn() -> None:
        async with turns.turn(urgent=False):
            raise AssertionError("a cancelled writer got the turn")

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(wait_for_turn())
    await asyncio.sleep(0)
    holder_may_leave.set()  # the holder runs first and passes the turn on...
    waiter.cancel()  # ...past the waiter, whose future is cancelled now, before the waiter runs again
    await holder
    with pytest.raises(asyncio.CancelledError):
        await waiter
    async with turns.turn(urgent=True):  # the turn is free
        pass
