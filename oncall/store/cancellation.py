"""Database steps that a task's cancellation never cuts short."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def uncancellable(step: Awaitable[T]) -> T:
    """Run ``step`` (a statement, BEGIN, COMMIT, ROLLBACK) to its end even when the task is cancelled meanwhile;
    the cancellation (however many times it is repeated) is raised once it finished. SQLAlchemy invalidates a
    connection whose operation is cut by a cancellation, and the dropped connection's transaction may stay open
    on the server until it is garbage-collected; a SQLite statement on a worker thread would still be running
    when the rollback starts. So no operation is ever cut."""
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
