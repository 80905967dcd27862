"""The Jira lifecycle of an incident's issue as the outbox worker's ``jira_lifecycle`` channel.

Operations (rows written by ``oncall.incidents.followup``):
- ``resolve``: the incident resolved: the post-mortem as a comment, then the issue moves to
  ``JIRA_DONE_STATUS`` (``JiraLifecycle.resolve``);
- ``refire``: the same alert fired again within ``JIRA_REOPEN_WINDOW_S``: a done issue moves back to
  ``JIRA_REOPEN_STATUS``, then a comment says so (``JiraLifecycle.refire``).

Payload: ``key`` (the issue), ``event`` (the comment's marker, e.g. ``incident:7:episode:1:resolved``),
``body`` (an ADF doc). Every call is idempotent (the marker, a status read before a transition), so the
outbox may retry a row whose outcome was lost. 5xx, 429 and transport errors are retried with the
outbox backoff; other answers (404 unknown issue, 403) fail at once. The outcome is on the timeline
(``ticket_lifecycle``).
"""

from __future__ import annotations

import logging

import httpx

from oncall.channels.jira.delivery import describe, transient
from oncall.channels.jira.lifecycle import JiraLifecycle, Moved
from oncall.channels.jira.models import JiraError
from oncall.channels.outbox import Attempt, Settled
from oncall.store import timeline
from oncall.store.database import Connection
from oncall.store.rows import Row

log = logging.getLogger("oncall.jira")

CHANNEL = "jira_lifecycle"
OPERATIONS = ("resolve", "refire")


class JiraLifecycleDelivery:
    """Delivers ``jira_lifecycle`` outbox rows with ``lifecycle`` (None: Jira is not configured, rows fail)."""

    def __init__(self, lifecycle: JiraLifecycle | None) -> None:
        self.lifecycle = lifecycle

    async def deliver(self, row: Row) -> Attempt:
        """Comment and transition the issue named in the row."""
        if self.lifecycle is None:
            return Attempt("failed", error="Jira is not configured any more")
        payload, operation = row["payload"], row["operation"]
        if operation not in OPERATIONS:
            return Attempt("failed", error=f"unknown Jira lifecycle operation {operation!r}")
        act = self.lifecycle.resolve if operation == "resolve" else self.lifecycle.refire
        try:
            moved: Moved = await act(str(payload["key"]), payload["body"], str(payload["event"]))
        except (JiraError, httpx.HTTPError) as exc:
            error = describe(exc)
            log.warning("Jira %s of outbox row %s: attempt %d failed: %s", operation, row["id"], row["attempts"], error)
            return Attempt("retry" if transient(exc) else "failed", error=error)
        return Attempt("delivered", result={"status": moved.status, "moved": moved.moved, "already": moved.already})

    async def settled(self, conn: Connection, row: Row, attempt: Attempt, status: Settled) -> None:
        """Put the outcome on the incident's timeline (``ticket_lifecycle``)."""
        if status == "retry" or row["incident_id"] is None:
            return
        detail = {"operation": row["operation"], "key": row["payload"]["key"], "outcome": status}
        detail.update(attempt.result if status == "delivered" else {"error": attempt.error})
        await timeline.add(conn, int(row["incident_id"]), "ticket_lifecycle", detail)
