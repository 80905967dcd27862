"""Source code the investigation reads: the local checkout or the GitHub contents API.

GitHub protocol: REST API "Get repository content", ``GET /repos/{owner}/{repo}/contents/{path}?ref=REF``
answers ``{"type": "file", "encoding": "base64", "content": ...}`` for a file and a list for a folder.
"""

from __future__ import annotations

import base64
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from oncall.sources import http as source_http
from oncall.sources.code_policy import CodeReadPolicy
from oncall.sources.http import SourceError


class CodeSource(Protocol):
    """A place source files are read from."""

    @property
    def name(self) -> str:
        """Where the code comes from, e.g. ``local`` or ``github:owner/repo@main``."""
        ...

    async def read(self, path: str) -> str:
        """The text of the repository-relative ``path``; raises ``SourceError`` with the reason."""
        ...


def safe_relative_path(path: str) -> PurePosixPath:
    """Validate a repository-relative path: no absolute paths, no ``..`` segments, no empty path.

    Raises:
        SourceError: the path could escape the repository.
    """
    candidate = PurePosixPath(path.replace("\\", "/"))
    if candidate.is_absolute() or path.startswith("~"):
        raise SourceError(f"path {path!r} must be relative to the repository root")
    if any(part == ".." for part in candidate.parts) or not candidate.parts:
        raise SourceError(f"path {path!r} must not contain '..' or be empty")
    return candidate


def numbered_lines(text: str, line: int | None, context_lines: int) -> dict[str, Any]:
    """Return the lines around ``line`` (1-based) with line numbers, ``>`` marking ``line``;
    without ``line`` the first ``2*context_lines+1`` lines.

    Raises:
        SourceError: ``line`` is past the end of the file.
    """
    lines = text.splitlines()
    if line is not None and line > len(lines):
        raise SourceError(f"line {line} is past the end of the file ({len(lines)} lines)")
    if line is None:
        first, last = 1, min(len(lines), 2 * context_lines + 1)
    else:
        first, last = max(1, line - context_lines), min(len(lines), line + context_lines)
    width = len(str(last))
    rendered = [f"{'>' if n == line else ' '} {n:>{width}} | {lines[n - 1]}" for n in range(first, last + 1)]
    out: dict[str, Any] = {
        "total_lines": len(lines),
        "start_line": first,
        "end_line": last,
        "code": "\n".join(rendered),
    }
    if line is not None:
        out["focus_line"] = line
        out["focus_text"] = lines[line - 1].strip()
    return out


class LocalCode:
    """Files below a local folder that ``policy`` allows; symlinks resolving outside the folder, or to a
    file the policy refuses, are rejected.

    Args:
        root: the checkout's root folder.
        policy: which files may be read (default: ``CodeReadPolicy.for_checkout(root)``, tracked ``*.py``).
    """

    name = "local"

    def __init__(self, root: Path, policy: CodeReadPolicy | None = None) -> None:
        self.root = root
        self.policy = policy or CodeReadPolicy.for_checkout(root)

    async def read(self, path: str) -> str:
        """The file's text (undecodable bytes replaced).

        Raises:
            SourceError: unsafe path, refused by the policy, escape through a symlink, missing file or a directory.
        """
        relative = safe_relative_path(path)
        await self.policy.check(relative)
        root = self.root.resolve()
        target = (root / relative).resolve()
        if not target.is_relative_to(root):
            raise SourceError(f"path {path!r} resolves outside the code folder")
        if (reason := self.policy.refusal(PurePosixPath(target.relative_to(root).as_posix()))) is not None:
            raise SourceError(f"refused: {path!r} is a link to a file that is never read: {reason}")
        if not target.exists():
            raise SourceError(f"file {path!r} not found in the code folder")
        if not target.is_file():
            raise SourceError(f"{path!r} is not a file")
        return target.read_text(encoding="utf-8", errors="replace")


class GitHubCode:
    """Files of a GitHub repository at a ref, through the contents API.

    Args:
        http: the shared client.
        api_url: ``https://api.github.com`` or a GitHub Enterprise ``https://HOST/api/v3``.
        repo: ``owner/name``.
        ref: branch, tag or commit.
        token: a token for private repositories (sent as ``Authorization: Bearer``), or None.
        timeout_s: timeout of one request, seconds.
        policy: which paths may be read (default ``CodeReadPolicy()``: ``*.py``, never dotfiles or keys).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        api_url: str,
        repo: str,
        ref: str,
        token: str | None,
        timeout_s: float,
        policy: CodeReadPolicy | None = None,
    ) -> None:
        self.http = http
        self.api_url = api_url
        self.repo = repo
        self.ref = ref
        self.token = token
        self.timeout_s = timeout_s
        self.policy = policy or CodeReadPolicy()

    @property
    def name(self) -> str:
        """``github:owner/name@ref``."""
        return f"github:{self.repo}@{self.ref}"

    async def read(self, path: str) -> str:
        """The file's text at ``ref`` (base64-decoded).

        Raises:
            SourceError: refused by the policy, GitHub's error message, a folder, or a non-base64 entry.
        """
        relative = safe_relative_path(path)
        await self.policy.check(relative)
        url = f"{self.api_url}/repos/{self.repo}/contents/{quote(str(relative))}"
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        response = await source_http.get(self.http, url, self.timeout_s, {"ref": self.ref}, headers)
        if response.status_code >= 400:
            try:
                message = response.json().get("message", "")
            except ValueError:
                message = response.text[:200]
            raise SourceError(f"GitHub answered HTTP {response.status_code} for {path!r}: {message}")
        body = response.json()
        if isinstance(body, list):
            raise SourceError(
                f"{path!r} is a directory on GitHub; entries: {', '.join(e.get('path', '') for e in body[:30])}"
            )
        if body.get("type") != "file" or body.get("encoding") != "base64":
            raise SourceError(
                f"{path!r} is a {body.get('type')} with encoding {body.get('encoding')}; "
                "only base64 files are supported"
            )
        return base64.b64decode(body["content"]).decode("utf-8", errors="replace")
