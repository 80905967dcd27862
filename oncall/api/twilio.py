"""``POST /webhook/twilio``: incoming WhatsApp messages from Twilio (form-encoded webhook).

Twilio waits at most 15 s for the answer, so the reply is handled in the background and an empty
TwiML document is returned at once.
"""

from __future__ import annotations

import json
import logging
import time

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import ValidationError
from starlette.datastructures import FormData
from twilio.request_validator import SIGNATURE_HEADER, SIGNATURE_SETTINGS_HEADER

from oncall.api.deps import Services, ServicesDep
from oncall.api.schemas import form_body
from oncall.channels.whatsapp.inbound import EMPTY_TWIML, InboundMessage, public_url, signature_valid
from oncall.roster.chain import allowed_senders
from oncall.store import messages

log = logging.getLogger("oncall.api.twilio")
router = APIRouter()


def twiml() -> Response:
    """An empty TwiML answer (no auto-reply; confirmations are sent through the REST API)."""
    return Response(content=EMPTY_TWIML, media_type="application/xml")


def verify_signature(services: Services, request: Request, form: FormData) -> None:
    """Check ``X-Twilio-Signature``; raises HTTPException 403 when it is missing, wrong or unverifiable."""
    token = services.settings.twilio_auth_token
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
    url = public_url(services.settings.public_base_url, request.url.path, request.url.query)
    params = {key: value for key, value in form.items() if isinstance(value, str)}
    if not signature_valid(
        token.get_secret_value(), url, params, signature, request.headers.get(SIGNATURE_SETTINGS_HEADER)
    ):
        log.warning("rejected Twilio webhook: bad %s for %s (check PUBLIC_BASE_URL)", SIGNATURE_HEADER, url)
        raise HTTPException(status_code=403, detail=f"invalid {SIGNATURE_HEADER}")


@router.post("/webhook/twilio", openapi_extra=form_body(InboundMessage))
async def twilio_inbound(request: Request, services: ServicesDep) -> Response:
    """Accept an incoming WhatsApp message from Twilio.

    403: signature missing or invalid. 422: From/Body/MessageSid missing. 200 with empty TwiML otherwise;
    messages from numbers that are neither a person of the on-call roster (``ONCALL_FILE``) nor in
    ``ONCALL_WHATSAPP_NUMBERS`` (``oncall.roster.chain.allowed_senders``), and repeated MessageSids, cause no action.
    """
    form = await request.form()
    verify_signature(services, request, form)
    try:
        message = InboundMessage.model_validate(dict(form.items()))
    except ValidationError as exc:
        raise HTTPException(status_code=422, detail=json.loads(exc.json(include_url=False))) from exc
    settings = services.settings
    if message.From not in allowed_senders(settings.roster, settings.oncall_whatsapp_numbers):
        log.warning("ignored WhatsApp message %s from %s: not an on-call number", message.MessageSid, message.From)
        return twiml()
    async with services.store.write() as conn:
        stored = await messages.add_inbound(
            conn,
            from_number=message.From,
            to_number=message.To,
            body=message.Body,
            message_sid=message.MessageSid,
            now=time.time(),
        )
    if not stored:
        log.info("ignored repeated WhatsApp message %s", message.MessageSid)
        return twiml()
    services.tasks.spawn(
        services.conversation.handle_inbound(message.From, message.Body, message.MessageSid),
        name=f"reply-{message.MessageSid}",
    )
    return twiml()
