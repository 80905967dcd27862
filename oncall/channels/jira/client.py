"""Jira Cloud tickets for incidents (Jira Cloud platform REST API v3).

- Assignee: ``GET /rest/api/3/user/assignable/search?project=KEY&query=NAME`` returns ``User`` objects
  (``accountId``, ``displayName``, ``active``); exactly one active match is used, otherwise nothing is
  guessed and the candidates are reported.
- Issue: ``POST /rest/api/3/issue`` with ``{"fields": {...}}`` (``description`` in Atlassian Document
  Format) answers 201 ``CreatedIssue`` ``{"id", "key", "self"}``; errors come as ``ErrorCollection``
  ``{"errorMessages": [...], "errors": {field: message}}``.
Authentication is HTTP basic with the account e-mail and an API token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from oncall.channels.jira.adf import incident_document
from oncall.channels.jira.models import JiraConfig, JiraError, JiraUser, TicketResult, TicketStatus, jira_error_text
from oncall.channels.whatsapp.format import alert_name, incident_url
from oncall.diagnosis import Diagnosis
from oncall.metrics import JIRA_TICKETS
from oncall.store import incidents, investigations, tickets, timeline
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


def _not_sent(exc: BaseException) -> bool:
    """Retry an issue creation only when the connection was never made (no duplicate issue possible)."""
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))


class JiraClient:
    """Creates Jira issues for incidents, or keeps drafts when Jira is not configured.

    Args:
        store: the agent database (``tickets`` rows, timeline events; reads incidents and tool calls).
        http: the shared client.
        config: the Jira site and credentials, or None to keep drafts only.
        public_base_url: the agent's public URL, linked from the issue.
        backoff_s: first retry wait in seconds (doubles per attempt); at most 3 attempts per call.
    """

    def __init__(
        self,
        store: Store,
        http: httpx.AsyncClient,
        config: JiraConfig | None,
        public_base_url: str,
        backoff_s: float = 0.5,
    ) -> None:
        self.store = store
        self.http = http
        self.config = config
        self.public_base_url = public_base_url
        self.backoff_s = backoff_s
        self._lock = asyncio.Lock()  # one ticket per incident even when two replies race

    async def create_ticket(
        self, incident_id: int, *, assignee: str | None, summary: str | None = None, force_new: bool = False
    ) -> TicketResult:
        """Create (or draft) the Jira issue for an incident.

        Args:
            incident_id: the incident.
            assignee: a name as the engineer wrote it (``"Ravi"``), resolved through the assignable-user
                search; None = unassigned.
            summary: issue summary; default ``[#id] <alert>: <diagnosis summary>`` (max 255 chars).
            force_new: create another issue even when the incident already has one.
        Returns:
            A ``TicketResult``; Jira and network errors are reported in it, never raised.
        """
        async with self._lock:
            return await self._create(
                incident_id, assignee=assignee.strip() if assignee else None, summary=summary, force_new=force_new
            )

    async def _create(
        self, incident_id: int, *, assignee: str | None, summary: str | None, force_new: bool
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
        return await self._post_issue(incident_id, fields, assignee, account)

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
        """The incident's ticket that blocks a new one: a created issue, or a draft while Jira is disabled."""
        statuses = ("created",) if self.config is not None else ("created", "draft")
        row = await tickets.latest(conn, incident_id, statuses)
        if row is None:
            return None
        what = (
            f"Jira {row['jira_key']}: {row['url']}"
            if row["status"] == "created"
            else "a ticket draft (Jira is not configured)"
        )
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

    async def _post_issue(
        self, incident_id: int, fields: dict[str, Any], assignee: str | None, account: JiraUser | None
    ) -> TicketResult:
        """POST the issue; retried only when the connection could not be made."""
        assert self.config is not None
        url = f"{self.config.base_url}/rest/api/3/issue"
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(ATTEMPTS),
                wait=wait_exponential(multiplier=self.backoff_s, max=8),
                retry=retry_if_exception(_not_sent),
                reraise=True,
            ):
                with attempt:
                    response = await self.http.post(
                        url,
                        json={"fields": fields},
                        auth=self._auth(),
                        timeout=JIRA_TIMEOUT,
                        headers={"Accept": "application/json"},
                    )
            if response.status_code != 201:
                raise JiraError(response.status_code, jira_error_text(response))
            key = str(response.json()["key"])
        except (JiraError, httpx.HTTPError, KeyError, ValueError) as exc:
            error = self._describe(exc)
            log.error("Jira issue for incident %s failed: %s", incident_id, error)
            return await self._store(
                incident_id,
                "failed",
                fields,
                assignee,
                account,
                error=error,
                message=f"❌ Jira did not create the ticket for #{incident_id}: {error}",
            )
        browse = f"{self.config.base_url}/browse/{key}"
        who = f" and assigned to {account.displayName}" if account else " (unassigned)"
        return await self._store(
            incident_id,
            "created",
            fields,
            assignee,
            account,
            key=key,
            url=browse,
            message=f"✅ Jira {key} created for #{incident_id}{who}: {browse}",
        )

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
        key: str | None = None,
        url: str | None = None,
        error: str | None = None,
    ) -> TicketResult:
        """Write the ``tickets`` row, the timeline event and the metric; return the result."""
        async with self.store.write() as conn:
            ticket_id = await tickets.add(
                conn,
                {
                    "incident_id": incident_id,
                    "status": status,
                    "jira_key": key,
                    "url": url,
                    "summary": fields["summary"],
                    "assignee_query": assignee,
                    "assignee_account_id": account.accountId if account else None,
                    "payload": {"fields": fields},
                    "error": error,
                    "created_at": time.time(),
                },
            )
            await timeline.add(
                conn,
                incident_id,
                "ticket",
                {"status": status, "key": key, "url": url, "assignee": assignee, "error": error},
            )
        JIRA_TICKETS.labels(outcome=status).inc()
        return TicketResult(
            status=status,
            incident_id=incident_id,
            message=message,
            ticket_id=ticket_id,
            key=key,
            url=url,
            assignee=account.displayName if account else None,
            error=error,
        )
