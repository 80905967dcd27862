"""Outbound WhatsApp messages: Twilio Programmable Messaging, or a console channel without an account.

Every message part is a ``messages`` row (direction ``out``) written as ``queued`` before it is sent,
so a restart can re-send it (``resend_queued``); its final status is ``sent`` or ``failed`` with the
error text (Twilio's error code and message, never credentials).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import requests
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from oncall.channels.whatsapp.format import (
    format_diagnosis,
    format_investigation_failed,
    format_resolved,
    split_message,
)
from oncall.diagnosis import Diagnosis
from oncall.metrics import WHATSAPP_MESSAGES
from oncall.store import incidents, messages, timeline
from oncall.store.database import Store
from oncall.store.rows import Row

log = logging.getLogger("oncall.notify")
console_log = logging.getLogger("oncall.whatsapp.console")

CONSOLE_RECIPIENT = "console"
TWILIO_TIMEOUT_S = 10.0
SEND_ATTEMPTS = 3


def build_twilio_client(account_sid: str, auth_token: str, api_base_url: str | None) -> Client:
    """Build a twilio SDK client with a request timeout; ``api_base_url`` replaces https://api.twilio.com (tests)."""
    client = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout=TWILIO_TIMEOUT_S))
    if api_base_url:
        client.api.base_url = api_base_url
    return client


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: Twilio 5xx/429, connection errors and timeouts (not 4xx like 21211)."""
    if isinstance(exc, TwilioRestException):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, (requests.ConnectionError, requests.Timeout))


def describe_error(exc: BaseException) -> str:
    """Return a credential-free description of a send failure for the ``messages.error`` column."""
    if isinstance(exc, TwilioRestException):
        return f"Twilio error {exc.code} (HTTP {exc.status}): {exc.msg}"
    return f"{type(exc).__name__}: {exc}"


def whatsapp_address(number: str) -> str:
    """Twilio addresses WhatsApp senders and recipients as ``whatsapp:+E164``."""
    return number if number.startswith("whatsapp:") else f"whatsapp:{number}"


class WhatsAppSender:
    """Sends WhatsApp messages through Twilio when a client is given, otherwise to the console channel.

    Args:
        store: the agent database (``messages`` rows, timeline events).
        twilio: a twilio SDK client (``build_twilio_client``), or None for the console channel.
        from_number: the WhatsApp sender (``TWILIO_WHATSAPP_FROM``); required with ``twilio``.
        recipients: the on-call numbers paged by default (``whatsapp:+E164``); empty -> the console recipient.
        public_base_url: the agent's public URL, for incident links.
        backoff_s: first retry wait in seconds (doubles per attempt, at most 8 s); 3 attempts in all.
    """

    def __init__(
        self,
        store: Store,
        *,
        twilio: Client | None,
        from_number: str | None,
        recipients: list[str],
        public_base_url: str,
        backoff_s: float = 1.0,
    ) -> None:
        if twilio is not None and not from_number:
            raise ValueError("a Twilio client needs the sender number (TWILIO_WHATSAPP_FROM)")
        self.store = store
        self.twilio = twilio
        self.from_number = whatsapp_address(from_number) if from_number else None
        self.recipients = recipients
        self.public_base_url = public_base_url
        self.backoff_s = backoff_s
        self.started_at = time.time()  # rows queued before this are left over from a previous process

    @property
    def channel(self) -> str:
        """``twilio`` when a Twilio client is available, else ``console``."""
        return "twilio" if self.twilio is not None else "console"

    async def send(self, body: str, *, incident_id: int | None, to: list[str] | None = None) -> list[int]:
        """Send ``body`` to ``to`` (default: the on-call numbers, or the console pseudo-recipient).

        The body is split into parts of at most 1600 characters; one ``messages`` row per part and
        recipient. Returns the row ids; failures are stored on the rows, never raised.
        """
        recipients = to or self.recipients or [CONSOLE_RECIPIENT]
        now = time.time()
        ids: list[int] = []
        async with self.store.write() as conn:
            for recipient in recipients:
                to_number = whatsapp_address(recipient) if recipient != CONSOLE_RECIPIENT else recipient
                for part in split_message(body):
                    ids.append(
                        await messages.queue_outbound(
                            conn,
                            incident_id=incident_id,
                            channel=self.channel,
                            to_number=to_number,
                            from_number=self.from_number,
                            body=part,
                            now=now,
                        )
                    )
        for message_id in ids:
            await self._deliver(message_id)
        return ids

    async def _incident(self, incident_id: int) -> Row:
        async with self.store.read() as conn:
            incident = await incidents.get(conn, incident_id)
        if incident is None:
            raise ValueError(f"incident {incident_id} not found")
        return incident

    async def _send_about(self, incident_id: int, what: str, body: str) -> list[int]:
        ids = await self.send(body, incident_id=incident_id)
        async with self.store.write() as conn:
            await timeline.add(
                conn, incident_id, "notified", {"what": what, "message_ids": ids, "channel": self.channel}
            )
        return ids

    async def send_diagnosis(self, incident_id: int) -> list[int]:
        """Format the incident's stored diagnosis for WhatsApp and send it to the on-call numbers.

        Raises:
            ValueError: when the incident does not exist or has no diagnosis yet.
        """
        incident = await self._incident(incident_id)
        if incident["diagnosis"] is None:
            raise ValueError(f"incident {incident_id} has no diagnosis to send")
        diagnosis = Diagnosis.model_validate(incident["diagnosis"])
        return await self._send_about(
            incident_id, "diagnosis", format_diagnosis(diagnosis, incident, self.public_base_url)
        )

    async def send_investigation_failed(self, incident_id: int, error: str) -> list[int]:
        """Page the on-call numbers that the incident fires but could not be investigated (``error`` says why).

        Raises:
            ValueError: when the incident does not exist.
        """
        incident = await self._incident(incident_id)
        body = format_investigation_failed(incident, error, self.public_base_url)
        return await self._send_about(incident_id, "investigation_failed", body)

    async def send_resolved(self, incident_id: int) -> list[int]:
        """Send one short "resolved after <duration>" message for the incident.

        Raises:
            ValueError: when the incident does not exist.
        """
        incident = await self._incident(incident_id)
        return await self._send_about(incident_id, "resolved", format_resolved(incident))

    async def resend_queued(self) -> int:
        """Deliver outbound messages a restart left ``queued``; returns how many were attempted.

        Only rows queued before this sender was built are taken, so a send in flight is never doubled.
        """
        async with self.store.read() as conn:
            ids = await messages.queued_before(conn, self.started_at)
        for message_id in ids:
            await self._deliver(message_id)
        if ids:
            log.info("re-sent %d queued WhatsApp message(s) left by a restart", len(ids))
        return len(ids)

    async def _deliver(self, message_id: int) -> None:
        """Send one queued row on its channel and store the final status."""
        async with self.store.read() as conn:
            row = await messages.get(conn, message_id)
        if row is None:
            return
        if row["channel"] == "console":
            console_log.info("WhatsApp to %s (incident %s):\n%s", row["to_number"], row["incident_id"], row["body"])
            await self._finish(message_id, "console", "sent", attempts=row["attempts"] + 1)
            return
        if self.twilio is None:
            await self._finish(
                message_id, "twilio", "failed", attempts=row["attempts"], error="Twilio is not configured any more"
            )
            return
        await self._deliver_twilio(row)

    async def _deliver_twilio(self, row: Row) -> None:
        """Create the message through the twilio SDK (in a thread), retrying transient failures."""
        attempts = row["attempts"]
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(SEND_ATTEMPTS),
                wait=wait_exponential(multiplier=self.backoff_s, max=8),
                retry=retry_if_exception(is_transient),
                reraise=True,
            ):
                with attempt:
                    attempts += 1
                    message = await asyncio.to_thread(self._create, row["to_number"], row["body"])
        except Exception as exc:  # noqa: BLE001 - every failure is stored on the row
            error = describe_error(exc)
            log.error(
                "WhatsApp message %s to %s failed after %d attempt(s): %s", row["id"], row["to_number"], attempts, error
            )
            await self._finish(row["id"], "twilio", "failed", attempts=attempts, error=error)
            return
        await self._finish(row["id"], "twilio", "sent", attempts=attempts, message_sid=message.sid)

    def _create(self, to_number: str, body: str) -> Any:
        """Blocking twilio SDK call: POST /2010-04-01/Accounts/{sid}/Messages.json."""
        assert self.twilio is not None and self.from_number is not None
        return self.twilio.messages.create(to=to_number, from_=self.from_number, body=body)

    async def _finish(
        self,
        message_id: int,
        channel: str,
        status: str,
        *,
        attempts: int,
        error: str | None = None,
        message_sid: str | None = None,
    ) -> None:
        """Store the final status of a message row and count it in the metrics."""
        async with self.store.write() as conn:
            await messages.finish_outbound(
                conn,
                message_id,
                status=status,
                attempts=attempts,
                now=time.time(),
                error=error,
                message_sid=message_sid,
            )
        WHATSAPP_MESSAGES.labels(channel=channel, status=status).inc()
