"""Background work of the agent (investigations, replies, deliveries): started, tracked, drained; and
``Poller``, the loop of each work queue (investigations, outbox, raw-alert replay)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from oncall.metrics import EVENT_LOOP_LAG

log = logging.getLogger("oncall.tasks")


class BackgroundTasks:
    """Keeps a reference to every background task (so none is garbage-collected mid-flight), logs the
    exception of any that fails, and drains them at shutdown."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.daemons: set[asyncio.Task[Any]] = set()

    def spawn_daemon(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start a task that runs until shutdown (a periodic job); ``drain`` cancels it first, without waiting."""
        task = asyncio.create_task(coro, name=name)
        self.daemons.add(task)
        task.add_done_callback(self._daemon_done)
        return task

    def _daemon_done(self, task: asyncio.Task[Any]) -> None:
        self.daemons.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background job %s stopped", task.get_name(), exc_info=task.exception())

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start ``coro`` as a background task named ``name``; its exception, if any, is logged, never lost."""
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def drain(self, timeout: float = 10.0) -> None:
        """Cancel the daemons, wait up to ``timeout`` seconds for the running tasks, then cancel the rest."""
        for daemon in list(self.daemons):
            daemon.cancel()
        await asyncio.gather(*self.daemons, return_exceptions=True)
        if not self.tasks:
            return
        _, pending = await asyncio.wait(set(self.tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def __len__(self) -> int:
        return len(self.tasks)


class Poller:
    """Runs ``tick`` in a background task whenever woken (``wake``) and at least every ``poll_s`` seconds.

    ``tick`` returns how many seconds until it has work again (None = ``poll_s``); it runs again at once
    when woken meanwhile. An exception in ``tick`` is logged and the loop goes on after ``poll_s``.

    Args:
        name: task name (logs).
        tick: one round of work.
        poll_s: longest sleep between rounds, seconds (> 0): how soon work written by another replica is seen.
    """

    def __init__(self, name: str, tick: Callable[[], Awaitable[float | None]], poll_s: float) -> None:
        self.name = name
        self.tick = tick
        self.poll_s = poll_s
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Run a round as soon as possible (many wakes before it runs make one round)."""
        self._woken.set()

    def start(self) -> None:
        """Start the loop (once). It is not one of the ``BackgroundTasks`` (it never ends by itself, so
        draining those does not wait for it); ``stop`` ends it."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        """Cancel the loop and wait until it ended."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            self._woken.clear()
            try:
                delay = await self.tick()
            except Exception:  # noqa: BLE001 - a database outage must not end the loop
                log.exception("%s: round failed; retrying in %.1f s", self.name, self.poll_s)
                delay = self.poll_s
            wait = self.poll_s if delay is None else max(0.0, min(delay, self.poll_s))
            if wait > 0:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
                # arrives as the event is set (CPython gh-86296), and stop() then waits forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._woken.wait()


LOOP_LAG_INTERVAL_S = 0.01


async def watch_loop_lag(interval_s: float = LOOP_LAG_INTERVAL_S) -> None:
    """Until cancelled: sleep ``interval_s`` seconds and record how much later than that the loop woke
    us (``oncall_event_loop_lag_seconds``): the time the event loop was held by someone else."""
    while True:
        started = time.monotonic()
        await asyncio.sleep(interval_s)
        EVENT_LOOP_LAG.observe(max(0.0, time.monotonic() - started - interval_s))
