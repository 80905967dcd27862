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
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from oncall.adf import incident_document
from oncall.db import add_timeline, dumps, get_incident
from oncall.diagnosis import Diagnosis
from oncall.metrics import JIRA_TICKETS
from oncall.whatsapp_format import alert_name, incident_url

if TYPE_CHECKING:
    from oncall.runtime import AgentRuntime

log = logging.getLogger("oncall.jira")

PRIORITY_NAMES = {"P1": "Highest", "P2": "High", "P3": "Medium", "P4": "Low"}
JIRA_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
SUMMARY_MAX_CHARS = 255  # Jira's limit for the summary field
ATTEMPTS = 3

TicketStatus = Literal[
    "created", "draft", "failed", "exists", "assignee_not_found", "assignee_ambiguous", "no_incident"
]


class JiraUser(BaseModel):
    """The fields of Jira's ``User`` object the agent needs."""

    model_config = ConfigDict(extra="ignore")

    accountId: str
    displayName: str = ""
    active: bool = True


class TicketResult(BaseModel):
    """Outcome of ``create_ticket``.

    ``status``: ``created``/``draft``/``failed`` (a ``tickets`` row was written, ``ticket_id``),
    ``exists`` (the incident already has a ticket), ``assignee_not_found``/``assignee_ambiguous``
    (nothing created; ``candidates`` lists display names), ``no_incident``.
    ``message`` is the line to send the engineer on WhatsApp.
    """

    status: TicketStatus
    incident_id: int
    message: str
    ticket_id: int | None = None
    key: str | None = None
    url: str | None = None
    assignee: str | None = None
    candidates: list[str] = []
    error: str | None = None


class JiraError(Exception):
    """A Jira answer that is not a success; ``text`` is Jira's own error text."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"Jira HTTP {status}: {text}")
        self.status = status
        self.text = text


def jira_error_text(response: httpx.Response) -> str:
    """Jira's ``ErrorCollection`` as one line (``errorMessages`` then ``field: message``), else the body start."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("errorMessages" in body or "errors" in body):
        parts = [str(m) for m in body.get("errorMessages") or []]
        parts += [f"{field}: {message}" for field, message in (body.get("errors") or {}).items()]
        if parts:
            return "; ".join(parts)
    if response.status_code == 401:
        return "authentication failed (check JIRA_EMAIL and JIRA_API_TOKEN)"
    return f"HTTP {response.status_code}: {response.text[:200].strip() or response.reason_phrase}"


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
        runtime: the agent runtime (settings, db, the shared ``httpx.AsyncClient``).
        backoff_s: first retry wait in seconds (doubles per attempt); at most 3 attempts per call.
    """

    def __init__(self, runtime: AgentRuntime, backoff_s: float = 0.5) -> None:
        self.runtime = runtime
        self.backoff_s = backoff_s
        self._lock = asyncio.Lock()  # one ticket per incident even when two replies race

    async def create_ticket(
        self, incident_id: int, *, assignee: str | None, summary: str | None = None, force_new: bool = False
    ) -> TicketResult:
        """Create (or draft) the Jira issue for an incident.

        Args:
            incident_id: the incident.
            assignee: a name as the engineer wrote it (``"Ravi"``), resolved through the assignable-user search; None = unassigned.
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
        settings = self.runtime.settings
        incident = get_incident(self.runtime.db, incident_id)
        if incident is None:
            return TicketResult(
                status="no_incident", incident_id=incident_id, message=f"Incident #{incident_id} does not exist."
            )
        if not force_new:
            existing = self._existing_ticket(incident_id)
            if existing is not None:
                return existing
        fields = self._fields(incident, summary)
        if not settings.jira_enabled:
            return self._store(
                incident_id,
                "draft",
                fields,
                assignee,
                None,
                message=(
                    f"Jira is not configured (set JIRA_BASE_URL, JIRA_EMAIL, JIRA_API_TOKEN, JIRA_PROJECT_KEY), so no issue was created. "
                    f"The ticket draft{' for ' + assignee if assignee else ''} is kept on incident #{incident_id}."
                ),
            )
        account: JiraUser | None = None
        if assignee:
            try:
                users = await self.find_assignable(assignee)
            except (JiraError, httpx.HTTPError) as exc:
                return self._store(
                    incident_id,
                    "failed",
                    fields,
                    assignee,
                    None,
                    error=self._describe(exc),
                    message=f'❌ Could not look up Jira user "{assignee}": {self._describe(exc)}',
                )
            choice = self._choose(assignee, users, incident_id)
            if isinstance(choice, TicketResult):
                return choice
            account = choice
            fields["assignee"] = {"accountId": account.accountId}
        return await self._post_issue(incident_id, fields, assignee, account)

    def _existing_ticket(self, incident_id: int) -> TicketResult | None:
        """The incident's ticket that blocks a new one: a created issue, or a draft while Jira is disabled."""
        statuses = ("created",) if self.runtime.settings.jira_enabled else ("created", "draft")
        row = self.runtime.db.query_one(
            f"SELECT * FROM tickets WHERE incident_id = ? AND status IN ({','.join('?' * len(statuses))}) ORDER BY id DESC LIMIT 1",
            (incident_id, *statuses),
        )
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
            message=f'Incident #{incident_id} already has {what}. Reply "#{incident_id} new ticket ..." to create another.',
        )

    def _fields(self, incident: dict[str, Any], summary: str | None) -> dict[str, Any]:
        """The ``fields`` of the create-issue request (assignee added after resolution)."""
        settings = self.runtime.settings
        diagnosis = Diagnosis.model_validate(incident["diagnosis"]) if incident["diagnosis"] else None
        default = f"[#{incident['id']}] {alert_name(incident)}: " + (
            diagnosis.summary if diagnosis else incident["title"]
        )
        text = " ".join((summary or default).split())
        labels = ["oncall-agent"] + ([diagnosis.fault_type.value] if diagnosis else [])
        return {
            "project": {"key": settings.jira_project_key or ""},
            "issuetype": {"name": settings.jira_issue_type},
            "summary": text[:SUMMARY_MAX_CHARS],
            "description": incident_document(
                incident,
                diagnosis,
                incident_url(settings.public_base_url, incident["id"]),
                self._code_excerpt(incident["id"], diagnosis.affected_file if diagnosis else None),
            ),
            "priority": {"name": PRIORITY_NAMES[diagnosis.priority if diagnosis else "P3"]},
            "labels": labels,
        }

    def _code_excerpt(self, incident_id: int, path: str | None) -> str | None:
        """Numbered source lines of ``path`` the investigation fetched (latest ``fetch_code_from_github`` result's ``code``)."""
        if not path:
            return None
        rows = self.runtime.db.query(
            "SELECT result FROM tool_calls WHERE incident_id = ? AND tool = 'fetch_code_from_github' AND ok = 1 ORDER BY id DESC",
            (incident_id,),
        )
        for row in rows:
            try:
                result = json.loads(row["result"] or "")
            except ValueError:  # a result capped for the audit trail is not valid JSON any more
                continue
            if isinstance(result, dict) and result.get("path") == path and isinstance(result.get("code"), str):
                return result["code"]
        return None

    def _auth(self) -> httpx.BasicAuth:
        settings = self.runtime.settings
        assert settings.jira_email and settings.jira_api_token
        return httpx.BasicAuth(settings.jira_email, settings.jira_api_token.get_secret_value())

    async def find_assignable(self, name: str) -> list[JiraUser]:
        """Users assignable in the project whose display name or e-mail starts with ``name``.

        Raises:
            JiraError: a non-2xx answer (after retries on 5xx/429). httpx.HTTPError: network failure after retries.
        """
        settings = self.runtime.settings
        url = f"{settings.jira_base_url}/rest/api/3/user/assignable/search"
        params = {"project": settings.jira_project_key or "", "query": name, "maxResults": 50}
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(ATTEMPTS),
            wait=wait_exponential(multiplier=self.backoff_s, max=8),
            retry=retry_if_exception(_transient_status),
            reraise=True,
        ):
            with attempt:
                response = await self.runtime.http.get(
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
        project = self.runtime.settings.jira_project_key
        if not active:
            inactive = f" (inactive: {', '.join(u.displayName for u in users)})" if users else ""
            return TicketResult(
                status="assignee_not_found",
                incident_id=incident_id,
                candidates=[],
                message=f'No assignable Jira user in project {project} matches "{query}"{inactive}. No ticket created for #{incident_id}.',
            )
        names = [user.displayName for user in active]
        return TicketResult(
            status="assignee_ambiguous",
            incident_id=incident_id,
            candidates=names,
            message=f'Several Jira users match "{query}": {", ".join(names)}. No ticket created; reply e.g. "#{incident_id} ticket assign to {names[0]}".',
        )

    async def _post_issue(
        self, incident_id: int, fields: dict[str, Any], assignee: str | None, account: JiraUser | None
    ) -> TicketResult:
        """POST the issue; retried only when the connection could not be made."""
        url = f"{self.runtime.settings.jira_base_url}/rest/api/3/issue"
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(ATTEMPTS),
                wait=wait_exponential(multiplier=self.backoff_s, max=8),
                retry=retry_if_exception(_not_sent),
                reraise=True,
            ):
                with attempt:
                    response = await self.runtime.http.post(
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
            return self._store(
                incident_id,
                "failed",
                fields,
                assignee,
                account,
                error=error,
                message=f"❌ Jira did not create the ticket for #{incident_id}: {error}",
            )
        browse = f"{self.runtime.settings.jira_base_url}/browse/{key}"
        who = f" and assigned to {account.displayName}" if account else " (unassigned)"
        return self._store(
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

    def _store(
        self,
        incident_id: int,
        status: str,
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
        cursor = self.runtime.db.execute(
            "INSERT INTO tickets (incident_id, status, jira_key, url, summary, assignee_query, assignee_account_id, payload, error, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                incident_id,
                status,
                key,
                url,
                fields["summary"],
                assignee,
                account.accountId if account else None,
                dumps({"fields": fields}),
                error,
                time.time(),
            ),
        )
        add_timeline(
            self.runtime.db,
            incident_id,
            "ticket",
            {"status": status, "key": key, "url": url, "assignee": assignee, "error": error},
        )
        JIRA_TICKETS.labels(outcome=status).inc()
        return TicketResult(
            status=status,
            incident_id=incident_id,
            message=message,
            ticket_id=int(cursor.lastrowid),
            key=key,
            url=url,
            assignee=account.displayName if account else None,
            error=error,
        )
