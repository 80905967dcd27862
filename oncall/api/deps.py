"""What the routers depend on: the agent's services (built once by the composition root) and auth.

``ApiTokenDep`` guards the incident API (``/incidents*`` reads and every state-changing endpoint but
the two webhooks, which have their own authentication): ``Authorization: Bearer $ONCALL_API_TOKEN``,
compared in constant time. Without ``ONCALL_API_TOKEN`` the guarded endpoints answer 403: the API is
closed, never open by default.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

import httpx
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from oncall.channels.outbox import OutboxWorker
from oncall.conversation.handler import ConversationHandler
from oncall.incidents.applier import RawAlertApplier
from oncall.incidents.checks import RemediationDesk
from oncall.incidents.escalation import EscalationPoller
from oncall.incidents.intake import RawAlertIntake
from oncall.incidents.scheduler import InvestigationScheduler
from oncall.settings import Settings
from oncall.store.database import Store
from oncall.tasks import BackgroundTasks


@dataclass(frozen=True)
class Services:
    """The long-lived objects the routers use, built in the lifespan of ``on_call_agent.create_app``;
    ``start``/``stop`` run the work queues (investigations, outbox, raw-alert applier, escalation)."""

    settings: Settings
    store: Store
    http: httpx.AsyncClient
    tasks: BackgroundTasks
    scheduler: InvestigationScheduler
    conversation: ConversationHandler
    outbox: OutboxWorker
    intake: RawAlertIntake
    applier: RawAlertApplier
    escalation: EscalationPoller
    remediation: RemediationDesk | None = None

    async def start(self) -> None:
        """Start the outbox worker, the investigation scheduler, the raw-alert applier (claims of a previous
        process with this replica id are released first) and the remediation executor's takeover."""
        await self.outbox.start()
        await self.scheduler.start()
        self.applier.start()
        self.escalation.start()
        if self.remediation is not None:
            await self.remediation.resume(self.tasks)

    async def stop(self) -> None:
        """Stop the work queues: running investigations and leases are handed back for other replicas."""
        await self.escalation.stop()
        await self.applier.stop()
        await self.scheduler.stop()
        await self.outbox.stop()


async def get_services(request: Request) -> Services:
    """The services of the running app (``app.state.services``). Dependencies here are ``async def``:
    FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per request for no I/O."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def bearer_ok(expected: str | None, authorization: str | None) -> bool:
    """True when no token is expected, or ``authorization`` is ``Bearer <expected>`` (constant-time compare)."""
    if expected is None:
        return True
    scheme, _, token = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(), expected.encode())


API_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="ApiToken",
    description="ONCALL_API_TOKEN, sent as `Authorization: Bearer <token>`.",
)
"""The OpenAPI security scheme of the incident API (credentials checked by ``require_api_token``)."""


def api_token_valid(services: Services, credentials: HTTPAuthorizationCredentials | None) -> bool:
    """True when ``ONCALL_API_TOKEN`` is set and ``credentials`` carry it."""
    token = services.settings.oncall_api_token
    if token is None or credentials is None:
        return False
    return bearer_ok(token.get_secret_value(), f"Bearer {credentials.credentials}")


async def require_api_token(
    services: ServicesDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(API_BEARER)]
) -> None:
    """Admit a request carrying ``ONCALL_API_TOKEN``.

    Raises:
        HTTPException: 403 when no token is configured (the API is disabled), 401 when the request's
            bearer token is missing or wrong.
    """
    if services.settings.oncall_api_token is None:
        raise HTTPException(status_code=403, detail="the incident API is disabled: set ONCALL_API_TOKEN to enable it")
    if not api_token_valid(services, credentials):
        raise HTTPException(
            status_code=401, detail="missing or invalid API token", headers={"WWW-Authenticate": "Bearer"}
        )


ApiTokenDep = Depends(require_api_token)
"""Router/endpoint dependency: only callers with ``ONCALL_API_TOKEN`` get through."""
OptionalCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(API_BEARER)]
"""The request's bearer credentials if any (``/healthz`` shows details to API token holders only)."""
