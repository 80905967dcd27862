"""Outgoing WhatsApp messages: written to the outbox, delivered through Twilio Programmable Messaging or a
console channel (no account) by the outbox worker (``oncall.channels.outbox``).

Two kinds of ``outbox`` rows on channel ``whatsapp``:
- ``notice`` (written by ``oncall.incidents.lifecycle``: ``diagnosis``, ``resolved``,
  ``investigation_failed``): rendered when delivered, from the incident as stored then, into one
  ``message`` row per recipient and part (key ``<notice key>:<recipient>:<part>``), in the transaction
  that marks the notice delivered, with a ``notified`` timeline event. The payload's ``to`` (the people
  paged) replaces the default recipients, ``paged`` (why them) is shown under the diagnosis, and the
  resolved notice links the post-mortem.
- ``message``: one part (at most 1600 characters) to one recipient. Its ``messages`` row (the
  conversation log shown on the incident page) is written with it as ``queued`` and mirrors the
  delivery: attempts and last error while retried, then ``sent`` (with Twilio's MessageSid) or
  ``failed`` (Twilio's error code and message, never credentials; or "expired").

One Twilio attempt per outbox attempt (the worker retries with backoff): 5xx, 429, connection errors
and timeouts are transient; any other Twilio error (e.g. 21211 invalid number, 20003 authentication)
is permanent. Twilio calls run in a thread with a 10 s timeout, so a hanging Twilio holds one
delivery slot of the outbox worker and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from oncall.channels.outbox import Attempt, Settled
from oncall.channels.whatsapp.format import (
    format_diagnosis,
    format_investigation_failed,
    format_resolved,
    postmortem_url,
    split_message,
)
from oncall.diagnosis import Diagnosis
from oncall.metrics import WHATSAPP_MESSAGES
from oncall.settings import Settings
from oncall.store import incidents, messages, outbox, timeline
from oncall.store.database import Connection, Store
from oncall.store.rows import Row

log = logging.getLogger("oncall.notify")
console_log = logging.getLogger("oncall.whatsapp.console")

CHANNEL = "whatsapp"
CONSOLE_RECIPIENT = "console"
TWILIO_TIMEOUT_S = 10.0


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
    """Queues WhatsApp messages in the outbox and delivers them (the outbox worker's ``whatsapp`` channel).

    Args:
        store: the agent database (``outbox`` and ``messages`` rows, timeline events).
        twilio: a twilio SDK client (``build_twilio_client``), or None for the console channel.
        from_number: the WhatsApp sender (``TWILIO_WHATSAPP_FROM``); required with ``twilio``.
        recipients: the on-call numbers paged by default (``whatsapp:+E164``); empty -> the console recipient.
        public_base_url: the agent's public URL, for incident links.
        wake: called after ``send`` committed rows (the outbox worker's ``wake``).
    """

    def __init__(
        self,
        store: Store,
        *,
        twilio: Client | None,
        from_number: str | None,
        recipients: list[str],
        public_base_url: str,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        if twilio is not None and not from_number:
            raise ValueError("a Twilio client needs the sender number (TWILIO_WHATSAPP_FROM)")
        self.store = store
        self.twilio = twilio
        self.from_number = whatsapp_address(from_number) if from_number else None
        self.recipients = recipients
        self.public_base_url = public_base_url
        self.wake = wake

    @classmethod
    def from_settings(cls, settings: Settings, store: Store) -> WhatsAppSender:
        """The sender the agent uses: Twilio when ``settings.twilio_enabled``, else the console channel."""
        twilio = None
        if settings.twilio_enabled and settings.twilio_auth_token is not None:
            token = settings.twilio_auth_token.get_secret_value()
            twilio = build_twilio_client(settings.twilio_account_sid or "", token, settings.twilio_api_base_url)
        return cls(
            store,
            twilio=twilio,
            from_number=settings.twilio_whatsapp_from,
            recipients=settings.oncall_whatsapp_numbers,
            public_base_url=settings.public_base_url,
        )

    @property
    def channel(self) -> str:
        """``twilio`` when a Twilio client is available, else ``console`` (the ``messages.channel``)."""
        return "twilio" if self.twilio is not None else "console"

    async def queue(
        self,
        conn: Connection,
        body: str,
        *,
        incident_id: int | None,
        event: str,
        to: list[str] | None = None,
        now: float | None = None,
    ) -> list[int]:
        """Write ``body`` for ``to`` (default: the on-call numbers, or the console recipient) in the caller's
        transaction: one outbox row and one ``queued`` ``messages`` row per recipient and part (at most 1600
        characters each). ``event`` makes it once only: a key written before adds nothing.

        Returns the new ``messages`` row ids.
        """
        now = time.time() if now is None else now
        ids: list[int] = []
        for recipient in to or self.recipients or [CONSOLE_RECIPIENT]:
            to_number = whatsapp_address(recipient) if recipient != CONSOLE_RECIPIENT else recipient
            for number, part in enumerate(split_message(body), start=1):
                payload = {"to": to_number, "from": self.from_number, "body": part, "via": self.channel}
                outbox_id = await outbox.add(
                    conn,
                    event_key=f"{event}:{to_number}:{number}",
                    channel=CHANNEL,
                    operation="message",
                    incident_id=incident_id,
                    payload=payload,
                    now=now,
                )
                if outbox_id is None:
                    continue
                message_id = await messages.queue_outbound(
                    conn,
                    incident_id=incident_id,
                    channel=self.channel,
                    to_number=to_number,
                    from_number=self.from_number,
                    body=part,
                    now=now,
                )
                await outbox.set_payload(conn, outbox_id, {**payload, "message_id": message_id})
                ids.append(message_id)
        return ids

    async def send(
        self, body: str, *, incident_id: int | None, to: list[str] | None = None, event: str | None = None
    ) -> list[int]:
        """Queue ``body`` (see ``queue``) in its own transaction and wake the outbox worker; ``event`` defaults
        to a fresh key (sent once). Returns the ``messages`` row ids; delivery outcomes land on those rows."""
        async with self.store.write() as conn:
            ids = await self.queue(
                conn, body, incident_id=incident_id, event=event or f"message:{uuid.uuid4().hex}", to=to
            )
        self.wake()
        return ids

    # ------------------------------------------------------------------ the outbox worker's channel

    async def deliver(self, row: Row) -> Attempt:
        """Deliver one ``whatsapp`` outbox row: a ``notice`` is rendered (``settled`` writes its parts), a
        ``message`` goes to the console or through Twilio."""
        if row["operation"] == "notice":
            return await self._render_notice(row)
        payload = row["payload"]
        if payload["via"] == "console":
            console_log.info("WhatsApp to %s (incident %s):\n%s", payload["to"], row["incident_id"], payload["body"])
            return Attempt("delivered")
        if self.twilio is None:
            return Attempt("failed", error="Twilio is not configured any more")
        try:
            message = await asyncio.to_thread(self._create, payload["to"], payload["body"])
        except Exception as exc:  # noqa: BLE001 - every failure is stored on the rows
            error = describe_error(exc)
            log.warning(
                "WhatsApp outbox row %s to %s: attempt %d failed: %s", row["id"], payload["to"], row["attempts"], error
            )
            return Attempt("retry" if is_transient(exc) else "failed", error=error)
        return Attempt("delivered", result={"sid": message.sid})

    async def settled(self, conn: Connection, row: Row, attempt: Attempt, status: Settled) -> None:
        """Expand a delivered notice into its messages; mirror a message's outcome on its ``messages`` row."""
        if row["operation"] == "notice":
            if status == "delivered":
                await self._expand_notice(conn, row, attempt.result["body"])
            return
        message_id = row["payload"].get("message_id")
        if message_id is None:
            return
        final = {"delivered": "sent", "failed": "failed", "expired": "failed"}.get(status, "queued")
        error = None if status == "delivered" else attempt.error
        await messages.finish_outbound(
            conn,
            message_id,
            status=final,
            attempts=int(row["attempts"]),
            now=time.time(),
            error=error,
            message_sid=attempt.result.get("sid"),
        )
        if final != "queued":
            WHATSAPP_MESSAGES.labels(channel=row["payload"]["via"], status=final).inc()

    async def _render_notice(self, row: Row) -> Attempt:
        """Render a notice from the incident as stored now (the text goes to ``settled`` in the result)."""
        async with self.store.read() as conn:
            incident = await incidents.get(conn, int(row["incident_id"]))
        if incident is None:
            return Attempt("failed", error=f"incident {row['incident_id']} not found")
        try:
            body = self.render(row["payload"]["what"], incident, row["payload"])
        except ValueError as exc:
            return Attempt("failed", error=str(exc))
        return Attempt("delivered", result={"body": body})

    async def _expand_notice(self, conn: Connection, row: Row, body: str) -> None:
        """Queue the rendered notice's parts and record ``notified`` (the transaction marking it delivered)."""
        incident_id = int(row["incident_id"])
        to = row["payload"].get("to") or None
        ids = await self.queue(conn, body, incident_id=incident_id, event=row["event_key"], to=to)
        await timeline.add(
            conn,
            incident_id,
            "notified",
            {
                "what": row["payload"]["what"],
                "episode": row["payload"].get("episode"),
                "message_ids": ids,
                "channel": self.channel,
            },
        )

    def render(self, what: str, incident: Row, payload: dict[str, Any]) -> str:
        """The text of a notice: ``diagnosis``, ``resolved`` or ``investigation_failed``.

        Raises:
            ValueError: an unknown notice, or a diagnosis notice for an incident without a diagnosis.
        """
        paged = f"\n\n📟 Paged: {payload['paged']}" if payload.get("paged") else ""
        if what == "diagnosis":
            if incident["diagnosis"] is None:
                raise ValueError(f"incident {incident['id']} has no diagnosis to send")
            diagnosis = Diagnosis.model_validate(incident["diagnosis"])
            return format_diagnosis(diagnosis, incident, self.public_base_url) + paged
        if what == "resolved":
            return (
                f"{format_resolved(incident)}\nPost-mortem: {postmortem_url(self.public_base_url, int(incident['id']))}"
            )
        if what == "investigation_failed":
            error = str(payload.get("error", ""))
            return format_investigation_failed(incident, error, self.public_base_url) + paged
        raise ValueError(f"unknown notice {what!r}")

    def _create(self, to_number: str, body: str) -> Any:
        """Blocking twilio SDK call: POST /2010-04-01/Accounts/{sid}/Messages.json."""
        assert self.twilio is not None and self.from_number is not None
        return self.twilio.messages.create(to=to_number, from_=self.from_number, body=body)
