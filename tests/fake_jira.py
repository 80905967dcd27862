"""A stateful Jira Cloud REST v3 fake for respx: issues with a status workflow, their transitions and
comments, speaking the wire format of Atlassian's published OpenAPI (Jira Cloud platform v3).

- ``GET /rest/api/3/issue/{key}?fields=status`` -> ``{"id", "key", "self", "fields": {"status": StatusDetails}}``
- ``GET /rest/api/3/issue/{key}/transitions`` -> ``{"transitions": [IssueTransition]}`` (available ones)
- ``POST /rest/api/3/issue/{key}/transitions`` ``{"transition": {"id"}}`` -> 204, or 400 ErrorCollection
- ``GET /rest/api/3/issue/{key}/comment`` -> ``PageOfComments`` (``orderBy=-created``: newest first)
- ``POST /rest/api/3/issue/{key}/comment`` ``{"body": ADF}`` -> 201 ``Comment``
Unknown issues answer 404 with Jira's ErrorCollection; a wrong Basic auth header 401. The workflow
is Jira's default "simplified" one: To Do -> In Progress -> Done, Done -> (Reopen) To Do.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import respx

STATUSES = {
    "To Do": ("10000", 2, "new", "blue-gray", "To Do"),
    "In Progress": ("3", 4, "indeterminate", "yellow", "In Progress"),
    "Done": ("10001", 3, "done", "green", "Done"),
}
WORKFLOW = {  # status -> [(transition id, transition name, target status)]
    "To Do": [("21", "Start progress", "In Progress"), ("31", "Done", "Done")],
    "In Progress": [("11", "Stop progress", "To Do"), ("31", "Done", "Done")],
    "Done": [("41", "Reopen", "To Do")],
}
NOT_FOUND = {"errorMessages": ["Issue does not exist or you do not have permission to see it."], "errors": {}}


@dataclass
class FakeIssue:
    key: str
    status: str
    comments: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FakeJira:
    """Issues by key; ``requests`` logs ``(method, path)``; ``fail`` hooks raise or answer instead of a route
    (``fail["POST comment"] = callable(request) -> Response | raises``)."""

    base_url: str
    email: str
    token: str
    issues: dict[str, FakeIssue] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    fail: dict[str, Callable[[httpx.Request, FakeIssue], httpx.Response | None]] = field(default_factory=dict)

    def add(self, key: str, status: str) -> FakeIssue:
        self.issues[key] = FakeIssue(key, status)
        return self.issues[key]

    def status_details(self, name: str) -> dict[str, Any]:
        status_id, category_id, key, colour, category = STATUSES[name]
        return {
            "self": f"{self.base_url}/rest/api/3/status/{status_id}",
            "description": "",
            "iconUrl": f"{self.base_url}/images/icons/statuses/generic.png",
            "name": name,
            "id": status_id,
            "statusCategory": {
                "self": f"{self.base_url}/rest/api/3/statuscategory/{category_id}",
                "id": category_id,
                "key": key,
                "colorName": colour,
                "name": category,
            },
        }

    def install(self, router: respx.MockRouter) -> None:
        """Route every Jira issue call of ``base_url`` to this fake."""
        issue = r"/rest/api/3/issue/(?P<key>[A-Z]+-\d+)(?P<rest>/transitions|/comment)?(?:\?.*)?$"
        pattern = re.escape(self.base_url) + issue
        router.route(url__regex=pattern).mock(side_effect=self._handle)

    def _handle(self, request: httpx.Request, key: str, rest: str | None) -> httpx.Response:
        operation = f"{request.method} {(rest or '/issue').strip('/')}"
        self.requests.append((request.method, request.url.path))
        expected = "Basic " + base64.b64encode(f"{self.email}:{self.token}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return httpx.Response(401, text="Client must be authenticated to access this resource.")
        issue = self.issues.get(key)
        if issue is None:
            return httpx.Response(404, json=NOT_FOUND)
        hook = self.fail.pop(operation, None)
        if hook is not None:
            answer = hook(request, issue)
            if answer is not None:
                return answer
        return self._route(operation, request, issue)

    def _route(self, operation: str, request: httpx.Request, issue: FakeIssue) -> httpx.Response:
        if operation == "GET issue":
            assert request.url.params.get("fields") == "status"
            body = {"id": "10042", "key": issue.key, "self": f"{self.base_url}/rest/api/3/issue/10042"}
            return httpx.Response(200, json={**body, "fields": {"status": self.status_details(issue.status)}})
        if operation == "GET transitions":
            return httpx.Response(200, json={"transitions": [self._transition(*t) for t in WORKFLOW[issue.status]]})
        if operation == "POST transitions":
            return self._transition_issue(request, issue)
        if operation == "GET comment":
            return self._page(request, issue)
        if operation == "POST comment":
            return httpx.Response(201, json=self.create_comment(request, issue))
        return httpx.Response(405)

    def _transition(self, transition_id: str, name: str, target: str) -> dict[str, Any]:
        return {
            "id": transition_id,
            "name": name,
            "to": self.status_details(target),
            "hasScreen": False,
            "isGlobal": False,
            "isInitial": False,
            "isAvailable": True,
            "isConditional": False,
            "isLooped": False,
        }

    def _transition_issue(self, request: httpx.Request, issue: FakeIssue) -> httpx.Response:
        wanted = json.loads(request.content)["transition"]["id"]
        target = next((to for tid, _, to in WORKFLOW[issue.status] if tid == wanted), None)
        if target is None:
            errors = {"errorMessages": [f"Transition id '{wanted}' is not valid for this issue."], "errors": {}}
            return httpx.Response(400, json=errors)
        issue.status = target
        return httpx.Response(204)

    def create_comment(self, request: httpx.Request, issue: FakeIssue) -> dict[str, Any]:
        """Store the posted comment (as Jira would) and return its ``Comment`` object."""
        body = json.loads(request.content)["body"]
        comment_id = str(10000 + sum(len(i.comments) for i in self.issues.values()))
        author = {"accountId": "5b10a2844c20165700ede21g", "displayName": "oncall-bot", "active": True}
        comment = {
            "self": f"{self.base_url}/rest/api/3/issue/10042/comment/{comment_id}",
            "id": comment_id,
            "author": author,
            "body": body,
            "updateAuthor": author,
            "created": "2026-11-24T10:15:02.000+0000",
            "updated": "2026-11-24T10:15:02.000+0000",
            "jsdPublic": True,
        }
        issue.comments.append(comment)
        return comment

    def _page(self, request: httpx.Request, issue: FakeIssue) -> httpx.Response:
        newest_first = request.url.params.get("orderBy") == "-created"
        comments = list(reversed(issue.comments)) if newest_first else list(issue.comments)
        limit = int(request.url.params.get("maxResults", 50))
        page = comments[:limit]
        return httpx.Response(200, json={"startAt": 0, "maxResults": limit, "total": len(comments), "comments": page})
