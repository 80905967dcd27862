"""Jira issue creation as the outbox worker's ``jira`` channel (operation ``create_issue``).

Jira's ``POST /rest/api/3/issue`` is not idempotent: a request that timed out, or a replica that died
after Jira answered 201 and before the outcome committed, leaves it unknown whether the issue exists.
Every requested issue therefore carries a label unique to it (``oncall-<24 hex>``, written with the
outbox row), and every attempt after the first one first searches for it with JQL
(``GET /rest/api/3/search/jql?jql=labels = "<label>"``, Jira Cloud's enhanced search; answer
``{"issues": [{"id", "key"}], ...}``): a found issue is adopted instead of created again. Jira's search
index lags writes by a few seconds; the retry backoff and the lease (``LEASE_S``) are longer than that,
so a duplicate needs a crash and an index lag longer than both.

Outcomes: 201 -> the ticket is ``created`` (key, browse URL) and the WhatsApp confirmation is queued in
the same transaction; 5xx, 429 and transport errors are retried with the outbox backoff; other 4xx
(Jira's ``ErrorCollection``) fail at once; failed and expired requests are confirmed as failures.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from oncall.channels.jira.models import JiraConfig, JiraError, jira_error_text
from oncall.channels.outbox import Attempt, Settled
from oncall.channels.whatsapp.sender import WhatsAppSender
from oncall.metrics import JIRA_TICKETS
from oncall.store import tickets, timeline
from oncall.store.database import Connection
from oncall.store.rows import Row

log = logging.getLogger("oncall.jira")

JIRA_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def transient(exc: BaseException) -> bool:
    """True for answers worth retrying: 5xx, 429 and transport errors (timeouts, refused connections)."""
    if isinstance(exc, JiraError):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, httpx.TransportError)


def describe(exc: BaseException) -> str:
    """Error text for the engineer and the ticket row (Jira's own text; no credentials)."""
    if isinstance(exc, JiraError):
        return exc.text
    if isinstance(exc, httpx.HTTPError):
        return f"could not reach Jira ({type(exc).__name__})"
    return f"unexpected Jira answer ({type(exc).__name__}: {exc})"


class JiraIssueDelivery:
    """Creates the Jira issues the outbox holds and confirms them on WhatsApp.

    Args:
        http: the shared client.
        config: the Jira site and credentials (None: every queued creation fails, Jira was unconfigured).
        sender: queues the confirmation message in the outcome's transaction.
    """

    def __init__(self, http: httpx.AsyncClient, config: JiraConfig | None, sender: WhatsAppSender) -> None:
        self.http = http
        self.config = config
        self.sender = sender

    def _auth(self) -> httpx.BasicAuth:
        assert self.config is not None
        return httpx.BasicAuth(self.config.email, self.config.api_token.get_secret_value())

    async def deliver(self, row: Row) -> Attempt:
        """Find the issue by its label (every attempt but the first), else create it."""
        if self.config is None:
            return Attempt("failed", error="Jira is not configured any more")
        payload = row["payload"]
        try:
            key = await self.find_by_label(payload["label"]) if row["attempts"] > 1 else None
            adopted = key is not None
            if key is None:
                key = await self.create(payload["fields"])
        except (JiraError, httpx.HTTPError, KeyError, ValueError) as exc:
            error = describe(exc)
            log.warning("Jira issue of outbox row %s: attempt %d failed: %s", row["id"], row["attempts"], error)
            return Attempt("retry" if transient(exc) else "failed", error=error)
        return Attempt("delivered", result={"key": key, "adopted": adopted})

    async def find_by_label(self, label: str) -> str | None:
        """Key of the issue carrying ``label``, or None.

        Raises:
            JiraError: a non-200 answer. httpx.HTTPError: network failure.
        """
        assert self.config is not None
        response = await self.http.get(
            f"{self.config.base_url}/rest/api/3/search/jql",
            params={"jql": f'labels = "{label}"', "fields": "key", "maxResults": 1},
            auth=self._auth(),
            timeout=JIRA_TIMEOUT,
            headers={"Accept": "application/json"},
        )
        if response.status_code != 200:
            raise JiraError(response.status_code, jira_error_text(response))
        issues = response.json().get("issues") or []
        return str(issues[0]["key"]) if issues else None

    async def create(self, fields: dict[str, Any]) -> str:
        """``POST /rest/api/3/issue``; returns the new issue's key.

        Raises:
            JiraError: a non-201 answer. httpx.HTTPError: network failure. KeyError/ValueError: a 201 without a key.
        """
        assert self.config is not None
        response = await self.http.post(
            f"{self.config.base_url}/rest/api/3/issue",
            json={"fields": fields},
            auth=self._auth(),
            timeout=JIRA_TIMEOUT,
            headers={"Accept": "application/json"},
        )
        if response.status_code != 201:
            raise JiraError(response.status_code, jira_error_text(response))
        return str(response.json()["key"])

    async def settled(self, conn: Connection, row: Row, attempt: Attempt, status: Settled) -> None:
        """Record the ticket's outcome and queue the confirmation (created, failed or expired)."""
        payload = row["payload"]
        ticket_id, incident_id = int(payload["ticket_id"]), int(row["incident_id"])
        if status == "retry":
            await tickets.update_fields(conn, ticket_id, error=attempt.error)
            return
        if status == "delivered":
            key = str(attempt.result["key"])
            url = f"{self.config.base_url}/browse/{key}" if self.config else None
            await tickets.update_fields(conn, ticket_id, status="created", jira_key=key, url=url, error=None)
            who = f" and assigned to {payload['assignee']}" if payload.get("assignee") else " (unassigned)"
            text = f"✅ Jira {key} created for #{incident_id}{who}: {url}"
            event = {"status": "created", "key": key, "url": url, "adopted": attempt.result.get("adopted", False)}
            outcome = "created"
        else:
            error = attempt.error or status
            await tickets.update_fields(conn, ticket_id, status="failed", error=error)
            text = f"❌ Jira did not create the ticket for #{incident_id}: {error}"
            event = {"status": "failed", "error": error, "outbox": status}
            outcome = "failed"
        await timeline.add(conn, incident_id, "ticket", {**event, "ticket_id": ticket_id})
        await self.sender.queue(
            conn, text, incident_id=incident_id, event=f"{row['event_key']}:confirmation", to=payload.get("notify")
        )
        JIRA_TICKETS.labels(outcome=outcome).inc()
