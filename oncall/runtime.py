"""The agent's long-lived objects, built once in the FastAPI lifespan and kept on ``app.state.runtime``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from oncall.db import Database
from oncall.settings import Settings

if TYPE_CHECKING:  # the concrete classes live in modules that import this one
    from oncall.conversation import ConversationHandler
    from oncall.investigation import Investigator
    from oncall.jira import JiraClient
    from oncall.notify import Notifier

log = logging.getLogger("oncall.runtime")


@dataclass
class AgentRuntime:
    """Settings, storage, the shared outbound HTTP client and the services built on them.

    ``http`` is one pooled ``httpx.AsyncClient`` for Prometheus, the load balancer, the process
    manager, GitHub and Jira (each call passes its own timeout). ``spawn`` runs background work
    (investigations, replies) and keeps a reference so tasks are not garbage-collected and can be
    awaited at shutdown.
    """

    settings: Settings
    db: Database
    http: httpx.AsyncClient
    notifier: Notifier | None = None
    investigator: Investigator | None = None
    jira: JiraClient | None = None
    conversation: ConversationHandler | None = None
    tasks: set[asyncio.Task] = field(default_factory=set)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task:
        """Start ``coro`` as a background task; its exception, if any, is logged, never lost."""
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait up to ``timeout`` seconds for background tasks, then cancel the rest."""
        if not self.tasks:
            return
        _, pending = await asyncio.wait(set(self.tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
