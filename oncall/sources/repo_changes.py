"""Recent changes from a git repository (commits) or from GitHub (deployments and commits).

Each change has the process manager's shape: ``{"ts" (epoch s), "kind", "replica" (None), "detail"}``
with ``kind`` ``commit`` (``detail``: ``sha``, ``author``, ``subject``) or ``deploy`` (``detail``:
``from_version``, ``to_version``, ``environment``, ``sha``, ``deployment_id``, ``creator``), newest first.

Protocols: ``git log --since=@<epoch> --format=...`` (git-log(1) "PRETTY FORMATS": ``%H`` hash, ``%ct``
committer time, ``%an`` author, ``%s`` subject); GitHub REST "List deployments"
(``GET /repos/{owner}/{repo}/deployments``, newest first; ``payload.version`` or ``ref`` is the version)
and "List commits" (``GET /repos/{owner}/{repo}/commits?since=<ISO 8601>&sha=<branch>``).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from oncall.catalog.models import GitChanges, GitHubChanges
from oncall.sources import http as source_http
from oncall.sources.http import SourceError
from oncall.sources.logformat import parse_time

FIELD_SEPARATOR = "\x1f"
GITHUB_PAGE = 30


async def run_git(root: Path, args: list[str], timeout_s: float) -> str:
    """Run ``git -C root <args>`` and return its standard output.

    Raises:
        SourceError: git is missing, timed out or failed (its error message).
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            "git",
            "-C",
            str(root),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise SourceError("git is not installed") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise SourceError(f"git {args[0]} timed out after {timeout_s:g} s") from None
    if proc.returncode != 0:
        raise SourceError(f"git {args[0]} failed: {err.decode(errors='replace').strip()[:300]}")
    return out.decode("utf-8", errors="replace")


class GitRepoChanges:
    """Commits of a local repository in the look-back window.

    Args:
        spec: the catalog's ``changes`` section (``type: git``).
        base_dir: folder a relative ``spec.path`` is resolved against.
        timeout_s: most seconds ``git log`` may take.
    """

    name = "git"

    def __init__(self, spec: GitChanges, base_dir: Path, timeout_s: float) -> None:
        path = Path(spec.path)
        self.root = path if path.is_absolute() else base_dir / path
        self.branch = spec.branch
        self.timeout_s = timeout_s

    async def changes_and_instances(
        self, since: float, limit: int = 200
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Commits after ``since`` (epoch s), newest first, and no instances (git knows none)."""
        fmt = FIELD_SEPARATOR.join(("%H", "%ct", "%an", "%s"))
        args = ["log", f"--since=@{int(since)}", f"--max-count={limit}", f"--format={fmt}"]
        if self.branch:
            args.append(self.branch)
        out = await run_git(self.root, args, self.timeout_s)
        changes = []
        for line in out.splitlines():
            sha, stamp, author, subject = (line.split(FIELD_SEPARATOR) + ["", "", ""])[:4]
            detail = {"sha": sha, "author": author, "subject": subject}
            changes.append({"ts": float(stamp), "kind": "commit", "replica": None, "detail": detail})
        return changes, []


def deployment_version(deployment: dict[str, Any]) -> str | None:
    """The version a GitHub deployment deployed: ``payload.version`` when given, else its ``ref``."""
    payload = deployment.get("payload")
    if isinstance(payload, dict) and payload.get("version"):
        return str(payload["version"])
    return deployment.get("ref")


class GitHubRepoChanges:
    """Deployments and commits of a GitHub repository in the look-back window.

    Args:
        http: the shared client.
        spec: the catalog's ``changes`` section (``type: github``).
        token: a token (from ``spec.token_env``) or None for public repositories.
        timeout_s: timeout of one request, seconds.
    """

    name = "github"

    def __init__(self, http: httpx.AsyncClient, spec: GitHubChanges, token: str | None, timeout_s: float) -> None:
        self.http = http
        self.spec = spec
        self.token = token
        self.timeout_s = timeout_s

    async def _get(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        url = f"{self.spec.api_url.rstrip('/')}/repos/{self.spec.repo}/{path}"
        response = await source_http.get(self.http, url, self.timeout_s, params, headers)
        if response.status_code >= 400:
            try:
                message = response.json().get("message", "")
            except ValueError:
                message = response.text[:200]
            raise SourceError(f"GitHub answered HTTP {response.status_code} for {path}: {message}")
        body = response.json()
        return body if isinstance(body, list) else []

    async def deployments(self, since: float) -> list[dict[str, Any]]:
        """Deploy changes after ``since``; each names the version it replaced (the next older deployment's)."""
        params: dict[str, Any] = {"per_page": GITHUB_PAGE}
        if self.spec.environment:
            params["environment"] = self.spec.environment
        listed = await self._get("deployments", params)
        changes = []
        for index, deployment in enumerate(listed):
            ts = parse_time(deployment.get("created_at"))
            if ts is None or ts <= since:
                continue
            previous = listed[index + 1] if index + 1 < len(listed) else None
            detail = {
                "from_version": deployment_version(previous) if previous else None,
                "to_version": deployment_version(deployment),
                "environment": deployment.get("environment"),
                "sha": deployment.get("sha"),
                "deployment_id": deployment.get("id"),
                "creator": (deployment.get("creator") or {}).get("login"),
                "description": deployment.get("description"),
            }
            changes.append({"ts": ts, "kind": "deploy", "replica": None, "detail": detail})
        return changes

    async def commits(self, since: float) -> list[dict[str, Any]]:
        """Commit changes after ``since`` on ``spec.branch`` (the default branch when unset)."""
        params: dict[str, Any] = {"since": datetime.fromtimestamp(since, UTC).isoformat(), "per_page": GITHUB_PAGE}
        if self.spec.branch:
            params["sha"] = self.spec.branch
        changes = []
        for item in await self._get("commits", params):
            commit = item.get("commit") or {}
            ts = parse_time((commit.get("committer") or {}).get("date"))
            if ts is None:
                continue
            detail = {
                "sha": item.get("sha"),
                "author": (commit.get("author") or {}).get("name"),
                "subject": str(commit.get("message") or "").splitlines()[0] if commit.get("message") else "",
            }
            changes.append({"ts": ts, "kind": "commit", "replica": None, "detail": detail})
        return changes

    async def changes_and_instances(
        self, since: float, limit: int = 200
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Deployments and commits after ``since`` (epoch s), newest first, and no instances."""
        deployments, commits = await asyncio.gather(self.deployments(since), self.commits(since))
        merged = sorted(deployments + commits, key=lambda c: -c["ts"])
        return merged[:limit], []
