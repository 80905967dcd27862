"""What the routers depend on: the agent's services (built once by the composition root) and auth."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

import httpx
from fastapi import Depends, Request

from oncall.channels.outbox import OutboxWorker
from oncall.conversation.handler import ConversationHandler
from oncall.incidents.replay import RawAlertReplay
from oncall.incidents.scheduler import InvestigationScheduler
from oncall.settings import Settings
from oncall.store.database import Store
from oncall.tasks import BackgroundTasks


@dataclass(frozen=True)
class Services:
    """The long-lived objects the routers use, built in the lifespan of ``on_call_agent.create_app``;
    ``start``/``stop`` run the work queues (investigations, outbox, raw-alert replay)."""

    settings: Settings
    store: Store
    http: httpx.AsyncClient
    tasks: BackgroundTasks
    scheduler: InvestigationScheduler
    conversation: ConversationHandler
    outbox: OutboxWorker
    replay: RawAlertReplay

    async def start(self) -> None:
        """Start the outbox worker, the investigation scheduler and the raw-alert replay (claims of a
        previous process with this replica id are released first)."""
        await self.outbox.start()
        await self.scheduler.start()
        self.replay.start()

    async def stop(self) -> None:
        """Stop the work queues: running investigations and leases are handed back for other replicas."""
        await self.replay.stop()
        await self.scheduler.stop()
        await self.outbox.stop()


def get_services(request: Request) -> Services:
    """The services of the running app (``app.state.services``)."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def bearer_ok(expected: str | None, authorization: str | None) -> bool:
    """True when no token is expected, or ``authorization`` is ``Bearer <expected>`` (constant-time compare)."""
    if expected is None:
        return True
    scheme, _, token = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(), expected.encode())
