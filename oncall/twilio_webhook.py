"""``POST /webhook/twilio``: incoming WhatsApp messages from Twilio (form-encoded webhook).

Twilio signs each webhook with ``X-Twilio-Signature`` = base64(HMAC-SHA1(auth token, URL + sorted
params)); the SDK's ``RequestValidator`` checks it against the public URL Twilio called
(``PUBLIC_BASE_URL`` + path + query, because the agent may sit behind a proxy). Twilio waits at most
15 s for the answer, so the reply is handled in the background and an empty TwiML document is
returned at once.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import FormData
from twilio.request_validator import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)

if TYPE_CHECKING:
    from oncall.runtime import AgentRuntime

log = logging.getLogger("oncall.twilio_webhook")
router = APIRouter()

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


class InboundMessage(BaseModel):
    """The parameters of Twilio's incoming-message webhook the agent uses (others are tolerated).

    ``From``/``To`` are ``whatsapp:+E164`` addresses; ``Body`` may be empty for a media-only message.
    """

    model_config = ConfigDict(extra="allow")

    From: str = Field(min_length=1)
    Body: str
    MessageSid: str = Field(min_length=1)
    To: str | None = None


def public_url(base_url: str, request: Request) -> str:
    """The URL Twilio signed: the public base URL + this request's path (+ query)."""
    query = request.url.query
    return f"{base_url}{request.url.path}" + (f"?{query}" if query else "")


def twiml() -> Response:
    """An empty TwiML answer (no auto-reply; confirmations are sent through the REST API)."""
    return Response(content=EMPTY_TWIML, media_type="application/xml")


def verify_signature(runtime: AgentRuntime, request: Request, form: FormData) -> None:
    """Check ``X-Twilio-Signature``; raises HTTPException 403 when it is missing, wrong or unverifiable."""
    token = runtime.settings.twilio_auth_token
    if token is None:
        log.warning("rejected Twilio webhook: TWILIO_AUTH_TOKEN is not set, so X-Twilio-Signature cannot be verified")
        raise HTTPException(
            status_code=403, detail="Twilio webhook signature cannot be verified: TWILIO_AUTH_TOKEN is not configured"
        )
    signature = request.headers.get(SIGNATURE_HEADER)
    if not signature:
        log.warning(
            "rejected Twilio webhook from %s: no %s header",
            request.client.host if request.client else "?",
            SIGNATURE_HEADER,
        )
        raise HTTPException(status_code=403, detail=f"missing {SIGNATURE_HEADER}")
    url = public_url(runtime.settings.public_base_url, request)
    algorithm = get_signature_algorithm(request.headers.get(SIGNATURE_SETTINGS_HEADER))
    if not RequestValidator(token.get_secret_value()).validate(url, form, signature, algorithm):
        log.warning("rejected Twilio webhook: bad %s for %s (check PUBLIC_BASE_URL)", SIGNATURE_HEADER, url)
        raise HTTPException(status_code=403, detail=f"invalid {SIGNATURE_HEADER}")


def store_inbound(runtime: AgentRuntime, message: InboundMessage) -> bool:
    """Store the inbound message (direction ``in``); False when its MessageSid was already stored."""
    now = time.time()
    try:
        runtime.db.execute(
            "INSERT INTO messages (direction, channel, to_number, from_number, body, message_sid, status, attempts, created_at, updated_at)"
            " VALUES ('in', 'twilio', ?, ?, ?, ?, 'received', 0, ?, ?)",
            (message.To, message.From, message.Body, message.MessageSid, now, now),
        )
    except sqlite3.IntegrityError:
        return False
    return True


@router.post("/webhook/twilio")
async def twilio_inbound(request: Request) -> Response:
    """Accept an incoming WhatsApp message from Twilio.

    403: signature missing or invalid. 422: From/Body/MessageSid missing. 200 with empty TwiML otherwise;
    messages from numbers outside ONCALL_WHATSAPP_NUMBERS and repeated MessageSids cause no action.
    """
    runtime: AgentRuntime = request.app.state.runtime
    form = await request.form()
    verify_signature(runtime, request, form)
    try:
        message = InboundMessage.model_validate(dict(form.items()))
    except ValidationError as exc:
        raise HTTPException(status_code=422, detail=json.loads(exc.json(include_url=False))) from exc

    if message.From not in runtime.settings.oncall_whatsapp_numbers:
        log.warning("ignored WhatsApp message %s from %s: not an on-call number", message.MessageSid, message.From)
        return twiml()
    if not store_inbound(runtime, message):
        log.info("ignored repeated WhatsApp message %s", message.MessageSid)
        return twiml()
    if runtime.conversation is None:
        log.error("WhatsApp message %s stored but no conversation handler is configured", message.MessageSid)
        return twiml()
    runtime.spawn(
        runtime.conversation.handle_inbound(message.From, message.Body, message.MessageSid),
        name=f"reply-{message.MessageSid}",
    )
    return twiml()
