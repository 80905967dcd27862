"""The Jira issue of an incident after it was created: comment on it, move it to the done status when
the incident resolves, and reopen or comment on it when the same alert fires again soon after.

Jira Cloud platform REST API v3 (Atlassian's OpenAPI, operations "Get issue", "Get transitions",
"Transition issue", "Get comments", "Add comment"):

- ``GET /rest/api/3/issue/{key}?fields=status`` -> ``{"fields": {"status": StatusDetails}}``;
  ``StatusDetails`` has ``name`` and ``statusCategory.key`` (``new``, ``indeterminate``, ``done``).
- ``GET /rest/api/3/issue/{key}/transitions`` -> ``{"transitions": [IssueTransition]}``, each
  ``{"id", "name", "to": StatusDetails}``: only the transitions available from the current status.
- ``POST /rest/api/3/issue/{key}/transitions`` ``{"transition": {"id": ...}}`` -> 204.
- ``GET /rest/api/3/issue/{key}/comment?orderBy=-created`` -> ``PageOfComments`` ``{"comments": [Comment]}``.
- ``POST /rest/api/3/issue/{key}/comment`` ``{"body": ADF doc}`` -> 201 ``Comment`` (``id``).

Safety: every call has a timeout; reads are retried on 429/5xx and transport errors; writes only
when the connection was never made. Writes are idempotent on their own: a transition first reads
the status (already there: nothing to do), and a comment carries a marker (``oncall-agent:
<event>``) and is not posted again when a recent comment has it, so a caller may retry either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from oncall.channels.jira.comments import Node, marker_text, with_marker
from oncall.channels.jira.models import JiraConfig, JiraError, jira_error_text
from oncall.settings import Settings

log = logging.getLogger("oncall.jira")

TIMEOUT = httpx.Timeout(10.0, connect=5.0)
ATTEMPTS = 3
RECENT_COMMENTS = 50
"""Newest comments searched for an event's marker before posting it."""
DONE_CATEGORY = "done"


@dataclass(frozen=True)
class LifecycleConfig:
    """``done_status`` (``JIRA_DONE_STATUS``) resolved issues move to; ``reopen_status``
    (``JIRA_REOPEN_STATUS``) a done issue moves back to when its alert fires again within
    ``reopen_window_s`` seconds (``JIRA_REOPEN_WINDOW_S``; 0: always a new issue)."""

    done_status: str
    reopen_status: str
    reopen_window_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> LifecycleConfig:
        """The lifecycle settings."""
        return cls(settings.jira_done_status, settings.jira_reopen_status, settings.jira_reopen_window_s)


class StatusCategory(BaseModel):
    """``StatusCategory.key``: ``new``, ``indeterminate`` or ``done`` on Jira Cloud."""

    model_config = ConfigDict(extra="ignore")
    key: str = ""


class StatusDetails(BaseModel):
    """A status: its ``name`` and category."""

    model_config = ConfigDict(extra="ignore")
    name: str
    statusCategory: StatusCategory = StatusCategory()

    @property
    def done(self) -> bool:
        """True in the ``done`` category."""
        return self.statusCategory.key == DONE_CATEGORY


class Transition(BaseModel):
    """An ``IssueTransition``: ``id``, ``name`` and the status it leads ``to``."""

    model_config = ConfigDict(extra="ignore")
    id: str
    name: str = ""
    to: StatusDetails


@dataclass(frozen=True)
class Moved:
    """Outcome of ``move_to``: ``moved`` (a transition ran), ``already`` (the issue had the status), or
    neither (no transition leads there: ``available`` lists the statuses that could be reached)."""

    key: str
    status: str
    moved: bool
    already: bool
    available: tuple[str, ...] = ()


@dataclass(frozen=True)
class RefireDecision:
    """What a new episode of an alert does with the last issue of its group: ``new_issue`` or
    ``update_issue`` (``key``), and why."""

    action: Literal["new_issue", "update_issue"]
    key: str | None
    reason: str


def decide_refire(previous: dict[str, Any] | None, now: float, window_s: float) -> RefireDecision:
    """Reopen/comment on the group's last issue, or file a new one.

    Args:
        previous: ``oncall.store.history.last_ticket_of_group`` (``jira_key``, ``last_resolved_at`` epoch s).
        now: epoch s of the new firing.
        window_s: ``JIRA_REOPEN_WINDOW_S``; firing again within it of the last resolution updates the issue.
    """
    if previous is None or not previous.get("jira_key"):
        return RefireDecision("new_issue", None, "no earlier Jira issue for this alert group")
    key = str(previous["jira_key"])
    if window_s <= 0:
        return RefireDecision("new_issue", None, "JIRA_REOPEN_WINDOW_S is 0: every episode gets its own issue")
    resolved = previous.get("last_resolved_at")
    if resolved is None:
        return RefireDecision("update_issue", key, f"{key} belongs to an incident that never resolved")
    ago = now - float(resolved)
    if ago <= window_s:
        return RefireDecision(
            "update_issue", key, f"fired again {ago:.0f} s after {key} resolved (window {window_s:g} s)"
        )
    return RefireDecision("new_issue", None, f"{key} resolved {ago:.0f} s ago, beyond the window of {window_s:g} s")


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, JiraError):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, httpx.TransportError)


def _not_sent(exc: BaseException) -> bool:
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


def _has_marker(node: Any, marker: str) -> bool:
    """True when an ADF node tree holds a text node containing ``marker``."""
    if isinstance(node, dict):
        if node.get("type") == "text" and marker in str(node.get("text", "")):
            return True
        return any(_has_marker(child, marker) for child in node.get("content") or [])
    return False


class JiraLifecycle:
    """Comments and transitions of existing issues.

    Args:
        http: the shared client.
        config: the Jira site and credentials (``JiraConfig.from_settings``).
        lifecycle: done/reopen statuses and the reopen window.
        backoff_s: first retry wait (doubles per attempt, at most 8 s); at most 3 attempts per call.
    """

    def __init__(
        self, http: httpx.AsyncClient, config: JiraConfig, lifecycle: LifecycleConfig, backoff_s: float = 0.5
    ) -> None:
        self.http = http
        self.config = config
        self.lifecycle = lifecycle
        self.backoff_s = backoff_s

    def _retrying(self, retry: Any) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(ATTEMPTS),
            wait=wait_exponential(multiplier=self.backoff_s, max=8),
            retry=retry_if_exception(retry),
            reraise=True,
        )

    async def _call(self, method: str, path: str, expect: int, **kwargs: Any) -> httpx.Response:
        """One request (reads retried on transient errors, writes only when not sent); raises JiraError
        unless the status is ``expect``."""
        auth = httpx.BasicAuth(self.config.email, self.config.api_token.get_secret_value())
        url = f"{self.config.base_url}{path}"
        async for attempt in self._retrying(_transient if method == "GET" else _not_sent):
            with attempt:
                response = await self.http.request(
                    method, url, auth=auth, timeout=TIMEOUT, headers={"Accept": "application/json"}, **kwargs
                )
                if method == "GET" and response.status_code != expect:
                    raise JiraError(response.status_code, jira_error_text(response))
        if response.status_code != expect:
            raise JiraError(response.status_code, jira_error_text(response))
        return response

    async def status(self, key: str) -> StatusDetails:
        """The issue's current status. Raises JiraError (e.g. 404 unknown issue) or httpx.HTTPError."""
        response = await self._call("GET", f"/rest/api/3/issue/{key}", 200, params={"fields": "status"})
        return StatusDetails.model_validate(response.json()["fields"]["status"])

    async def transitions(self, key: str) -> list[Transition]:
        """The transitions available from the issue's current status. Raises JiraError or httpx.HTTPError."""
        response = await self._call("GET", f"/rest/api/3/issue/{key}/transitions", 200)
        return [Transition.model_validate(item) for item in response.json().get("transitions", [])]

    async def move_to(self, key: str, status_name: str) -> Moved:
        """Move the issue to the status named ``status_name`` (case-insensitive; a transition of that
        name also counts). Nothing happens when it already has it, or when no transition leads there.
        Raises JiraError or httpx.HTTPError."""
        current = await self.status(key)
        wanted = status_name.casefold()
        if current.name.casefold() == wanted:
            return Moved(key, current.name, moved=False, already=True)
        options = await self.transitions(key)
        chosen = next((t for t in options if t.to.name.casefold() == wanted), None)
        chosen = chosen or next((t for t in options if t.name.casefold() == wanted), None)
        if chosen is None:
            return Moved(key, current.name, moved=False, already=False, available=tuple(t.to.name for t in options))
        await self._call("POST", f"/rest/api/3/issue/{key}/transitions", 204, json={"transition": {"id": chosen.id}})
        return Moved(key, chosen.to.name, moved=True, already=False)

    async def comment(self, key: str, body: Node, event: str) -> str:
        """Add the ADF ``body`` as a comment marked with ``event`` (e.g. ``resolved-12-1``), unless one of
        the newest comments already has that marker; returns the comment id. Raises JiraError or
        httpx.HTTPError."""
        marker = marker_text(event)
        page = await self._call(
            "GET",
            f"/rest/api/3/issue/{key}/comment",
            200,
            params={"orderBy": "-created", "maxResults": RECENT_COMMENTS},
        )
        for existing in page.json().get("comments", []):
            if _has_marker(existing.get("body"), marker):
                return str(existing["id"])
        response = await self._call(
            "POST", f"/rest/api/3/issue/{key}/comment", 201, json={"body": with_marker(body, event)}
        )
        return str(response.json()["id"])

    async def resolve(self, key: str, body: Node, event: str) -> Moved:
        """The incident resolved: comment ``body`` (the post-mortem) and move the issue to the done
        status. Raises JiraError or httpx.HTTPError."""
        await self.comment(key, body, event)
        moved = await self.move_to(key, self.lifecycle.done_status)
        if not moved.moved and not moved.already:
            log.warning(
                "Jira %s: no transition to %r (available: %s)", key, self.lifecycle.done_status, moved.available
            )
        return moved

    async def refire(self, key: str, body: Node, event: str) -> Moved:
        """The alert fired again within the window: reopen the issue when it is done (to the reopen
        status), then comment ``body``. Raises JiraError or httpx.HTTPError."""
        current = await self.status(key)
        moved = Moved(key, current.name, moved=False, already=not current.done)
        if current.done:
            moved = await self.move_to(key, self.lifecycle.reopen_status)
        await self.comment(key, body, event)
        return moved
