"""Outbound WhatsApp messages: Twilio Programmable Messaging, or a console channel without an account.

Every message part is a ``messages`` row (direction ``out``) written as ``queued`` before it is sent,
so a restart can re-send it (``resend_queued``); its final status is ``sent`` or ``failed`` with the
error text (Twilio's error code and message, never credentials).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import requests
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from oncall.db import add_timeline, get_incident
from oncall.diagnosis import Diagnosis
from oncall.metrics import WHATSAPP_MESSAGES
from oncall.whatsapp_format import format_diagnosis, format_investigation_failed, format_resolved, split_message

if TYPE_CHECKING:
    from oncall.runtime import AgentRuntime

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


class Notifier:
    """Sends WhatsApp messages through Twilio when configured, otherwise to the console channel.

    Args:
        runtime: the agent runtime (settings, db).
        twilio_client: a twilio SDK client; built from settings when None and Twilio is enabled.
        backoff_s: first retry wait in seconds (doubles per attempt, at most 8 s); 3 attempts in all.
    """

    def __init__(self, runtime: AgentRuntime, twilio_client: Client | None = None, backoff_s: float = 1.0) -> None:
        self.runtime = runtime
        settings = runtime.settings
        if twilio_client is None and settings.twilio_enabled:
            twilio_client = build_twilio_client(
                settings.twilio_account_sid or "",
                settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else "",
                settings.twilio_api_base_url,
            )
        self.twilio = twilio_client
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
        recipients = to or self.runtime.settings.oncall_whatsapp_numbers or [CONSOLE_RECIPIENT]
        ids: list[int] = []
        for recipient in recipients:
            for part in split_message(body):
                ids.append(self._queue(part, incident_id, recipient))
        for message_id in ids:
            await self._deliver(message_id)
        return ids

    async def send_diagnosis(self, incident_id: int) -> list[int]:
        """Format the incident's stored diagnosis for WhatsApp and send it to the on-call numbers.

        Raises:
            ValueError: when the incident does not exist or has no diagnosis yet.
        """
        incident = get_incident(self.runtime.db, incident_id)
        if incident is None or incident["diagnosis"] is None:
            raise ValueError(f"incident {incident_id} has no diagnosis to send")
        diagnosis = Diagnosis.model_validate(incident["diagnosis"])
        ids = await self.send(
            format_diagnosis(diagnosis, incident, self.runtime.settings.public_base_url), incident_id=incident_id
        )
        add_timeline(
            self.runtime.db, incident_id, "notified", {"what": "diagnosis", "message_ids": ids, "channel": self.channel}
        )
        return ids

    async def send_investigation_failed(self, incident_id: int, error: str) -> list[int]:
        """Page the on-call numbers that the incident fires but could not be investigated (``error`` says why).

        Raises:
            ValueError: when the incident does not exist.
        """
        incident = get_incident(self.runtime.db, incident_id)
        if incident is None:
            raise ValueError(f"incident {incident_id} not found")
        ids = await self.send(
            format_investigation_failed(incident, error, self.runtime.settings.public_base_url), incident_id=incident_id
        )
        add_timeline(
            self.runtime.db,
            incident_id,
            "notified",
            {"what": "investigation_failed", "message_ids": ids, "channel": self.channel},
        )
        return ids

    async def send_resolved(self, incident_id: int) -> list[int]:
        """Send one short "resolved after <duration>" message for the incident.

        Raises:
            ValueError: when the incident does not exist.
        """
        incident = get_incident(self.runtime.db, incident_id)
        if incident is None:
            raise ValueError(f"incident {incident_id} not found")
        ids = await self.send(format_resolved(incident), incident_id=incident_id)
        add_timeline(
            self.runtime.db, incident_id, "notified", {"what": "resolved", "message_ids": ids, "channel": self.channel}
        )
        return ids

    async def resend_queued(self) -> int:
        """Deliver outbound messages a restart left ``queued``; returns how many were attempted.

        Only rows queued before this Notifier was built are taken, so a send in flight is never doubled.
        """
        rows = self.runtime.db.query(
            "SELECT id FROM messages WHERE direction = 'out' AND status = 'queued' AND created_at < ? ORDER BY id",
            (self.started_at,),
        )
        for row in rows:
            await self._deliver(row["id"])
        if rows:
            log.info("re-sent %d queued WhatsApp message(s) left by a restart", len(rows))
        return len(rows)

    def _queue(self, body: str, incident_id: int | None, recipient: str) -> int:
        """Insert one outbound ``queued`` row and return its id."""
        now = time.time()
        settings = self.runtime.settings
        to_number = whatsapp_address(recipient) if recipient != CONSOLE_RECIPIENT else recipient
        from_number = (
            whatsapp_address(settings.twilio_whatsapp_from) if self.twilio and settings.twilio_whatsapp_from else None
        )
        cursor = self.runtime.db.execute(
            "INSERT INTO messages (incident_id, direction, channel, to_number, from_number, body, status, created_at, updated_at)"
            " VALUES (?, 'out', ?, ?, ?, ?, 'queued', ?, ?)",
            (incident_id, self.channel, to_number, from_number, body, now, now),
        )
        return int(cursor.lastrowid)

    async def _deliver(self, message_id: int) -> None:
        """Send one queued row on its channel and store the final status."""
        row = self.runtime.db.query_one("SELECT * FROM messages WHERE id = ?", (message_id,))
        if row is None:
            return
        if row["channel"] == "console":
            console_log.info("WhatsApp to %s (incident %s):\n%s", row["to_number"], row["incident_id"], row["body"])
            self._finish(message_id, "console", "sent", attempts=row["attempts"] + 1)
            return
        if self.twilio is None:
            self._finish(
                message_id, "twilio", "failed", attempts=row["attempts"], error="Twilio is not configured any more"
            )
            return
        await self._deliver_twilio(row)

    async def _deliver_twilio(self, row: dict) -> None:
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
            self._finish(row["id"], "twilio", "failed", attempts=attempts, error=error)
            return
        self._finish(row["id"], "twilio", "sent", attempts=attempts, message_sid=message.sid)

    def _create(self, to_number: str, body: str):
        """Blocking twilio SDK call: POST /2010-04-01/Accounts/{sid}/Messages.json."""
        assert self.twilio is not None
        from_number = whatsapp_address(self.runtime.settings.twilio_whatsapp_from or "")
        return self.twilio.messages.create(to=to_number, from_=from_number, body=body)

    def _finish(
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
        self.runtime.db.execute(
            "UPDATE messages SET status = ?, attempts = ?, error = ?, message_sid = COALESCE(?, message_sid), updated_at = ? WHERE id = ?",
            (status, attempts, error, message_sid, time.time(), message_id),
        )
        WHATSAPP_MESSAGES.labels(channel=channel, status=status).inc()
