"""Jira Cloud REST v3 wire types the agent uses, its configuration, and the outcome of a ticket request.

Protocol: Jira Cloud platform REST API v3 - ``User`` (``accountId``, ``displayName``, ``active``) from
the assignable-user search, and ``ErrorCollection`` (``errorMessages``, ``errors``) on failures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from oncall.settings import Settings

TicketStatus = Literal[
    "queued", "created", "draft", "failed", "exists", "assignee_not_found", "assignee_ambiguous", "no_incident"
]


class JiraUser(BaseModel):
    """The fields of Jira's ``User`` object the agent needs."""

    model_config = ConfigDict(extra="ignore")

    accountId: str
    displayName: str = ""
    active: bool = True


class TicketResult(BaseModel):
    """Outcome of ``create_ticket``.

    ``status``: ``queued`` (the issue creation is in the outbox; a confirmation follows on WhatsApp once
    Jira has it), ``created``/``draft``/``failed`` (a ``tickets`` row was written, ``ticket_id``),
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


@dataclass(frozen=True)
class JiraConfig:
    """Where and as whom issues are created: ``base_url`` (``https://SITE.atlassian.net``), the account
    ``email`` and API token (HTTP basic auth), the ``project_key`` and ``issue_type`` of new issues."""

    base_url: str
    email: str
    api_token: SecretStr
    project_key: str
    issue_type: str

    @classmethod
    def from_settings(cls, settings: Settings) -> JiraConfig | None:
        """The configuration when all four Jira settings are set, else None (tickets become drafts)."""
        if not (
            settings.jira_base_url and settings.jira_email and settings.jira_api_token and settings.jira_project_key
        ):
            return None
        return cls(
            settings.jira_base_url,
            settings.jira_email,
            settings.jira_api_token,
            settings.jira_project_key,
            settings.jira_issue_type,
        )
