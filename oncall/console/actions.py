"""What a responder does from the console: acknowledge, resolve, approve or reject a proposed action.

Acknowledge and resolve go through ``oncall.incidents.actions`` exactly like the WhatsApp replies and
the HTTP API, so they land on the same timeline (audit trail) with the user as the actor
(``<user> via console``). Each answers 303 back to the incident page, whose next view shows the
outcome once. Viewers get 403; a form without the session's CSRF token gets 403.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Form, HTTPException, Path
from fastapi.responses import RedirectResponse, Response

from oncall.api.deps import ServicesDep
from oncall.console.auth import Session
from oncall.console.deps import AuthDep, ResponderSession, set_session_cookie
from oncall.console.pages import RowId
from oncall.incidents import actions

log = logging.getLogger("oncall.console")
router = APIRouter(include_in_schema=False)
Note = Annotated[str, Form(max_length=500)]
ActionId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


class RemediationDecisions(Protocol):
    """What the console needs from the remediation feature (``Services.remediation``, when it exists).

    ``decide`` approves (``approve=True``) or rejects a proposed action for ``by`` and answers a dict with
    a ``message`` for the responder; it raises LookupError for an unknown incident or action and
    ValueError when the action no longer waits for a decision.
    """

    async def decide(self, incident_id: int, action_id: str, approve: bool, by: str) -> dict[str, Any]: ...


def back_to_incident(auth: AuthDep, session: Session, incident_id: int, notice: str) -> Response:
    """303 to the incident page, with ``notice`` to show there once."""
    response = RedirectResponse(f"/ui/incidents/{incident_id}", status_code=303)
    set_session_cookie(response, auth, auth.with_notice(session, notice[:300]))
    return response


@router.post("/ui/incidents/{incident_id}/acknowledge")
async def post_acknowledge(
    incident_id: RowId, session: ResponderSession, auth: AuthDep, services: ServicesDep, note: Note = ""
) -> Response:
    """Acknowledge the incident as the logged-in responder (first acknowledgement wins); 404 unknown."""
    try:
        outcome = await actions.acknowledge(services.store, incident_id, session.actor, note.strip() or None)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None
    log.info("console: %s acknowledged incident %d", session.user, incident_id)
    return back_to_incident(auth, session, incident_id, str(outcome["message"]))


@router.post("/ui/incidents/{incident_id}/resolve")
async def post_resolve(
    incident_id: RowId, session: ResponderSession, auth: AuthDep, services: ServicesDep, note: Note = ""
) -> Response:
    """Resolve the incident by hand as the logged-in responder; 404 unknown."""
    try:
        outcome = await actions.resolve(services.store, incident_id, session.actor, note.strip() or None)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None
    log.info("console: %s resolved incident %d", session.user, incident_id)
    return back_to_incident(auth, session, incident_id, str(outcome["message"]))


@router.post("/ui/incidents/{incident_id}/actions/{action_id}/{decision}")
async def post_action_decision(
    incident_id: RowId,
    action_id: ActionId,
    decision: Literal["approve", "reject"],
    session: ResponderSession,
    auth: AuthDep,
    services: ServicesDep,
) -> Response:
    """Approve or reject a proposed remediation action; 404 when the agent has no remediation service or
    the action is unknown, 409 when it no longer waits for a decision."""
    remediation: RemediationDecisions | None = getattr(services, "remediation", None)
    if remediation is None:
        raise HTTPException(404, "remediation is not enabled on this agent")
    try:
        outcome = await remediation.decide(incident_id, action_id, decision == "approve", session.actor)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    log.info("console: %s chose %s for action %s of incident %d", session.user, decision, action_id, incident_id)
    done = "approved" if decision == "approve" else "rejected"
    return back_to_incident(auth, session, incident_id, str(outcome.get("message") or f"Action {action_id} {done}."))
