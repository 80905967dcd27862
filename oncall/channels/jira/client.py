"""Jira Cloud tickets for incidents (Jira Cloud platform REST API v3).

- Assignee: ``GET /rest/api/3/user/assignable/search?project=KEY&query=NAME`` returns ``User`` objects
  (``accountId``, ``displayName``, ``active``); exactly one active match is used, otherwise nothing is
  guessed and the candidates are reported.
- Issue: ``POST /rest/api/3/issue`` with ``{"fields": {...}}`` (``description`` in Atlassian Document
  Format) answers 201 ``CreatedIssue`` ``{"id", "key", "self"}``; errors come as ``ErrorCollection``
  ``{"errorMessages": [...], "errors": {field: message}}``.
Authentication is HTTP basic with the account e-mail and an API token.

An engineer's request is checked here (incident, existing ticket, assignee) and the issue creation is
written to the outbox with a ``queued`` ticket row in one transaction; ``oncall.channels.jira.delivery``
makes the call, records the issue and queues the WhatsApp confirmation once Jira has it.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from oncall.channels.jira.adf import incident_document
from oncall.channels.jira.models import JiraConfig, JiraError, JiraUser, TicketResult, TicketStatus, jira_error_text
from oncall.channels.whatsapp.format import alert_name, incident_url
from oncall.diagnosis import Diagnosis
from oncall.metrics import JIRA_TICKETS
from oncall.store import incidents, investigations, outbox, tickets, timeline
from oncall.store.database import Store
from oncall.store.rows import Row

log = logging.getLogger("oncall.jira")

PRIORITY_NAMES = {"P1": "Highest", "P2": "High", "P3": "Medium", "P4": "Low"}
JIRA_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
SUMMARY_MAX_CHARS = 255  # Jira's limit for the summary field
ATTEMPTS = 3


def _transient_status(exc: BaseException) -> bool:
    """Retry reads on 5xx/429 answers and on transport errors."""
    if isinstance(exc, JiraError):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, httpx.TransportError)


def idempotency_label() -> str:
    """A label unique to one requested issue (``oncall-<24 hex>``): a retry finds the issue by it."""
    return f"oncall-{uuid.uuid4().hex[:24]}"


class JiraClient:
    """Creates Jira issues for incidents, or keeps drafts when Jira is not configured.

    Args:
        store: the agent database (``tickets`` rows, timeline events; reads incidents and tool calls).
        http: the shared client.
        config: the Jira site and credentials, or None to keep drafts only.
        public_base_url: the agent's public URL, linked from the issue.
        backoff_s: first retry wait of the assignee search in seconds (doubles per attempt); at most 3 attempts.
        wake: called once an issue creation was written to the outbox (the outbox worker's ``wake``).
    """

    def __init__(
        self,
        store: Store,
        http: httpx.AsyncClient,
        config: JiraConfig | None,
        public_base_url: str,
        backoff_s: float = 0.5,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.http = http
        self.config = config
        self.public_base_url = public_base_url
        self.backoff_s = backoff_s
        self.wake = wake

    async def create_ticket(
        self,
        incident_id: int,
        *,
        assignee: str | None,
        summary: str | None = None,
        force_new: bool = False,
        notify: list[str] | None = None,
    ) -> TicketResult:
        """Request (or draft) the Jira issue for an incident.

        Args:
            incident_id: the incident.
            assignee: a name as the engineer wrote it (``"Ravi"``), resolved through the assignable-user
                search; None = unassigned.
            summary: issue summary; default ``[#id] <alert>: <diagnosis summary>`` (max 255 chars).
            force_new: create another issue even when the incident already has one.
            notify: who gets the confirmation once Jira has the issue (default: the on-call numbers).
        Returns:
            A ``TicketResult``: ``queued`` when the creation went to the outbox; Jira and network errors of
            the assignee search are reported in it, never raised.
        """
        return await self._create(
            incident_id,
            assignee=assignee.strip() if assignee else None,
            summary=summary,
            force_new=force_new,
            notify=notify,
        )

    async def _create(
        self, incident_id: int, *, assignee: str | None, summary: str | None, force_new: bool, notify: list[str] | None
    ) -> TicketResult:
        async with self.store.read() as conn:
            incident = await incidents.get(conn, incident_id)
            existing = None if force_new or incident is None else await self._existing_ticket(conn, incident_id)
            code = await self._code_excerpt(conn, incident) if incident is not None else None
        if incident is None:
            return TicketResult(
                status="no_incident", incident_id=incident_id, message=f"Incident #{incident_id} does not exist."
            )
        if existing is not None:
            return existing
        fields = self._fields(incident, summary, code)
        if self.config is None:
            for_whom = f" for {assignee}" if assignee else ""
            return await self._store(
                incident_id,
                "draft",
                fields,
                assignee,
                None,
                message="Jira is not configured (set JIRA_BASE_URL, JIRA_EMAIL, JIRA_API_TOKEN, JIRA_PROJECT_KEY), "
                f"so no issue was created. The ticket draft{for_whom} is kept on incident #{incident_id}.",
            )
        account: JiraUser | None = None
        if assignee:
            choice = await self._assignee(incident_id, assignee, fields)
            if isinstance(choice, TicketResult):
                return choice
            account = choice
            fields["assignee"] = {"accountId": account.accountId}
        return await self._enqueue(incident_id, fields, assignee, account, force_new=force_new, notify=notify)

    async def _assignee(self, incident_id: int, assignee: str, fields: dict[str, Any]) -> JiraUser | TicketResult:
        """The one Jira user ``assignee`` names, or the result to report instead (lookup failed, none, several)."""
        try:
            users = await self.find_assignable(assignee)
        except (JiraError, httpx.HTTPError) as exc:
            return await self._store(
                incident_id,
                "failed",
                fields,
                assignee,
                None,
                error=self._describe(exc),
                message=f'❌ Could not look up Jira user "{assignee}": {self._describe(exc)}',
            )
        return self._choose(assignee, users, incident_id)

    async def _existing_ticket(self, conn: Any, incident_id: int) -> TicketResult | None:
        """The incident's ticket that blocks a new one: a created or queued issue, or a draft while Jira is disabled."""
        statuses = ("created", "queued") if self.config is not None else ("created", "draft")
        row = await tickets.latest(conn, incident_id, statuses)
        if row is None:
            return None
        what = {
            "created": f"Jira {row['jira_key']}: {row['url']}",
            "queued": "a Jira issue being created (a confirmation follows)",
        }.get(row["status"], "a ticket draft (Jira is not configured)")
        return TicketResult(
            status="exists",
            incident_id=incident_id,
            ticket_id=row["id"],
            key=row["jira_key"],
            url=row["url"],
            message=f"Incident #{incident_id} already has {what}. "
            f'Reply "#{incident_id} new ticket ..." to create another.',
        )

    def _fields(self, incident: Row, summary: str | None, code_excerpt: str | None) -> dict[str, Any]:
        """The ``fields`` of the create-issue request (assignee added after resolution)."""
        diagnosis = Diagnosis.model_validate(incident["diagnosis"]) if incident["diagnosis"] else None
        default = f"[#{incident['id']}] {alert_name(incident)}: " + (
            diagnosis.summary if diagnosis else incident["title"]
        )
        text = " ".join((summary or default).split())
        labels = ["oncall-agent"] + ([diagnosis.fault_type.value] if diagnosis else [])
        return {
            "project": {"key": self.config.project_key if self.config else ""},
            "issuetype": {"name": self.config.issue_type if self.config else "Task"},
            "summary": text[:SUMMARY_MAX_CHARS],
            "description": incident_document(
                incident, diagnosis, incident_url(self.public_base_url, incident["id"]), code_excerpt
            ),
            "priority": {"name": PRIORITY_NAMES[diagnosis.priority if diagnosis else "P3"]},
            "labels": labels,
        }

    async def _code_excerpt(self, conn: Any, incident: Row) -> str | None:
        """Numbered source lines of the diagnosis' file that the investigation fetched (latest result's ``code``)."""
        path = (incident["diagnosis"] or {}).get("affected_file")
        if not path:
            return None
        for row in reversed(await investigations.tool_calls_for(conn, incident["id"], tool="fetch_code_from_github")):
            try:
                result = json.loads(row["result"] or "")
            except ValueError:  # a result capped for the audit trail is not valid JSON any more
                continue
            if isinstance(result, dict) and result.get("path") == path and isinstance(result.get("code"), str):
                return str(result["code"])
        return None

    def _auth(self) -> httpx.BasicAuth:
        assert self.config is not None
        return httpx.BasicAuth(self.config.email, self.config.api_token.get_secret_value())

    async def find_assignable(self, name: str) -> list[JiraUser]:
        """Users assignable in the project whose display name or e-mail starts with ``name``.

        Raises:
            JiraError: a non-2xx answer (after retries on 5xx/429). httpx.HTTPError: network failure after retries.
        """
        assert self.config is not None
        url = f"{self.config.base_url}/rest/api/3/user/assignable/search"
        params: dict[str, Any] = {"project": self.config.project_key, "query": name, "maxResults": 50}
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(ATTEMPTS),
            wait=wait_exponential(multiplier=self.backoff_s, max=8),
            retry=retry_if_exception(_transient_status),
            reraise=True,
        ):
            with attempt:
                response = await self.http.get(
                    url, params=params, auth=self._auth(), timeout=JIRA_TIMEOUT, headers={"Accept": "application/json"}
                )
                if response.status_code != 200:
                    raise JiraError(response.status_code, jira_error_text(response))
        return [JiraUser.model_validate(user) for user in response.json()]

    def _choose(self, query: str, users: list[JiraUser], incident_id: int) -> JiraUser | TicketResult:
        """Exactly one active match (or one exact display-name match among several); otherwise a report."""
        active = [user for user in users if user.active]
        exact = [user for user in active if user.displayName.casefold() == query.casefold()]
        if len(exact) == 1:
            return exact[0]
        if len(active) == 1:
            return active[0]
        project = self.config.project_key if self.config else ""
        if not active:
            inactive = f" (inactive: {', '.join(u.displayName for u in users)})" if users else ""
            return TicketResult(
                status="assignee_not_found",
                incident_id=incident_id,
                candidates=[],
                message=f'No assignable Jira user in project {project} matches "{query}"{inactive}. '
                f"No ticket created for #{incident_id}.",
            )
        names = [user.displayName for user in active]
        return TicketResult(
            status="assignee_ambiguous",
            incident_id=incident_id,
            candidates=names,
            message=f'Several Jira users match "{query}": {", ".join(names)}. No ticket created; reply e.g. '
            f'"#{incident_id} ticket assign to {names[0]}".',
        )

    async def _enqueue(
        self,
        incident_id: int,
        fields: dict[str, Any],
        assignee: str | None,
        account: JiraUser | None,
        *,
        force_new: bool,
        notify: list[str] | None,
    ) -> TicketResult:
        """Write a ``queued`` ticket and the outbox row that creates the issue, in one transaction under the
        incident's lock (two replies racing on two replicas make one issue)."""
        label = idempotency_label()
        fields = {**fields, "labels": [*fields["labels"], label]}
        now = time.time()
        async with self.store.write() as conn:
            await incidents.lock(conn, incident_id)
            existing = None if force_new else await self._existing_ticket(conn, incident_id)
            if existing is not None:
                return existing
            ticket_id = await tickets.add(conn, self._ticket_values(incident_id, "queued", fields, assignee, account))
            await outbox.add(
                conn,
                event_key=f"ticket:{ticket_id}:create",
                channel="jira",
                operation="create_issue",
                incident_id=incident_id,
                payload={
                    "ticket_id": ticket_id,
                    "fields": fields,
                    "label": label,
                    "assignee": account.displayName if account else None,
                    "notify": notify,
                },
                now=now,
            )
            await timeline.add(conn, incident_id, "ticket", {"status": "queued", "assignee": assignee})
        self.wake()
        who = f" assigned to {account.displayName}" if account else " (unassigned)"
        return TicketResult(
            status="queued",
            incident_id=incident_id,
            ticket_id=ticket_id,
            assignee=account.displayName if account else None,
            message=f"⏳ Creating the Jira issue for #{incident_id}{who}; I will confirm here once Jira has it.",
        )

    @staticmethod
    def _ticket_values(
        incident_id: int, status: TicketStatus, fields: dict[str, Any], assignee: str | None, account: JiraUser | None
    ) -> dict[str, Any]:
        return {
            "incident_id": incident_id,
            "status": status,
            "summary": fields["summary"],
            "assignee_query": assignee,
            "assignee_account_id": account.accountId if account else None,
            "payload": {"fields": fields},
            "created_at": time.time(),
        }

    @staticmethod
    def _describe(exc: BaseException) -> str:
        """Error text for the engineer and the ticket row (Jira's own text; no credentials)."""
        if isinstance(exc, JiraError):
            return exc.text
        if isinstance(exc, httpx.HTTPError):
            return f"could not reach Jira ({type(exc).__name__})"
        return f"unexpected Jira answer ({type(exc).__name__}: {exc})"

    async def _store(
        self,
        incident_id: int,
        status: TicketStatus,
        fields: dict[str, Any],
        assignee: str | None,
        account: JiraUser | None,
        *,
        message: str,
        error: str | None = None,
    ) -> TicketResult:
        """Write a ``tickets`` row that needs no Jira call (a draft, a failed lookup), its timeline event and
        the metric; return the result."""
        async with self.store.write() as conn:
            values = self._ticket_values(incident_id, status, fields, assignee, account)
            ticket_id = await tickets.add(conn, {**values, "error": error})
            await timeline.add(conn, incident_id, "ticket", {"status": status, "assignee": assignee, "error": error})
        JIRA_TICKETS.labels(outcome=status).inc()
        return TicketResult(
            status=status,
            incident_id=incident_id,
            message=message,
            ticket_id=ticket_id,
            assignee=account.displayName if account else None,
            error=error,
        )
