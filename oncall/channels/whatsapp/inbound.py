"""Incoming WhatsApp messages from Twilio's webhook: the parameters the agent reads and the signature check.

Twilio signs each webhook with ``X-Twilio-Signature`` = base64(HMAC-SHA1(auth token, URL + sorted
params)); the SDK's ``RequestValidator`` checks it against the public URL Twilio called
(``PUBLIC_BASE_URL`` + path + query, because the agent may sit behind a proxy).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from twilio.request_validator import RequestValidator, get_signature_algorithm

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
"""The answer to Twilio: no auto-reply (confirmations are sent through the REST API)."""


class InboundMessage(BaseModel):
    """The parameters of Twilio's incoming-message webhook the agent uses (others are tolerated).

    ``From``/``To`` are ``whatsapp:+E164`` addresses; ``Body`` may be empty for a media-only message.
    """

    model_config = ConfigDict(extra="allow")

    From: str = Field(min_length=1)
    Body: str
    MessageSid: str = Field(min_length=1)
    To: str | None = None


def public_url(base_url: str, path: str, query: str) -> str:
    """The URL Twilio signed: the public base URL + the request's path (+ query)."""
    return f"{base_url}{path}" + (f"?{query}" if query else "")


def signature_valid(auth_token: str, url: str, params: Any, signature: str, settings_header: str | None) -> bool:
    """True when ``signature`` (``X-Twilio-Signature``) signs ``url`` + ``params`` with ``auth_token``.

    ``params``: the form fields; a multi-dict (with ``getlist``, like Starlette's ``FormData``) keeps
    every value of a repeated field, which Twilio signs too.

    ``settings_header`` is ``X-Twilio-Signature-Settings`` (selects SHA-256 signatures), or None.
    """
    algorithm = get_signature_algorithm(settings_header)
    return bool(RequestValidator(auth_token).validate(url, params, signature, algorithm))
