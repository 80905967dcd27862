"""A service's source code at the version it runs: a local checkout (working tree, or git at a ref) or
the GitHub contents API at a ref, plus the mapping of deployed (absolute) file paths to repository paths.

The catalog's ``code.ref`` is a template (``v{version}``): the file is read at the ref of the version
the failing replica runs. When that ref does not exist, the file is read at the default (the working
tree, or ``default_ref`` on GitHub) and the answer says so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath

import httpx

from oncall.catalog.models import CodeSpec, GitHubCodeSpec
from oncall.sources.code import CodeSource, GitHubCode, LocalCode, safe_relative_path
from oncall.sources.code_policy import DEFAULT_GLOBS, CodeReadPolicy
from oncall.sources.http import SourceError
from oncall.sources.repo_changes import run_git

THIRD_PARTY = ("site-packages", "dist-packages")


class GitCode:
    """Files of a local git repository at ``ref`` (``git show <ref>:<path>``): committed files only, and of
    those only what ``policy`` allows by name (source globs, never dotfiles or keys).

    Args:
        root: the repository's folder.
        ref: branch, tag or commit.
        timeout_s: most seconds one ``git show`` may take.
        policy: which paths may be read (default ``CodeReadPolicy()``: ``*.py``).
    """

    def __init__(self, root: Path, ref: str, timeout_s: float, policy: CodeReadPolicy | None = None) -> None:
        self.root = root
        self.ref = ref
        self.timeout_s = timeout_s
        self.policy = policy or CodeReadPolicy()

    @property
    def name(self) -> str:
        """``git:<ref>``."""
        return f"git:{self.ref}"

    async def read(self, path: str) -> str:
        """The file's text at ``ref``.

        Raises:
            SourceError: unsafe path, refused by the policy, unknown ref or path (git's message).
        """
        relative = safe_relative_path(path)
        await self.policy.check(relative)
        return await run_git(self.root, ["show", f"{self.ref}:{relative}"], self.timeout_s)


class ServiceCode:
    """Where one service's files are read, by version.

    Args:
        spec: the catalog's ``code`` section.
        root: the local checkout (``code.root`` resolved, or ``CODE_ROOT``); None for GitHub.
        http: the shared client (GitHub).
        token: GitHub token (from ``spec.token_env``) or None.
        timeout_s: timeout of one read, seconds.
        globs: the files reads may open (``CODE_READ_GLOBS``; never dotfiles or keys, see ``code_policy``).
    """

    def __init__(
        self,
        spec: CodeSpec,
        root: Path | None,
        http: httpx.AsyncClient,
        token: str | None,
        timeout_s: float,
        globs: tuple[str, ...] = DEFAULT_GLOBS,
    ) -> None:
        self.spec = spec
        self.globs = globs
        self.root = root
        self.http = http
        self.token = token
        self.timeout_s = timeout_s
        self.prefixes = [p.rstrip("/") + "/" for p in spec.path_prefixes]
        if root is not None:
            self.prefixes.append(str(root.resolve()).rstrip("/") + "/")

    @property
    def where(self) -> str:
        """The checkout or repository and the ref template, for tool descriptions."""
        if isinstance(self.spec, GitHubCodeSpec):
            return f"GitHub {self.spec.repo} at ref {self.spec.ref} (default {self.spec.default_ref})"
        at = f" at git ref {self.spec.ref}" if self.spec.ref else " (working tree)"
        return f"local checkout {self.root}{at}"

    @property
    def uses_version(self) -> bool:
        """True when the file read depends on the version (the ref is a ``{version}`` template)."""
        return "{version}" in (self.spec.ref or "")

    def _github(self, ref: str) -> CodeSource:
        assert isinstance(self.spec, GitHubCodeSpec)
        url, policy = self.spec.api_url.rstrip("/"), CodeReadPolicy(self.globs)
        return GitHubCode(self.http, url, self.spec.repo, ref, self.token, self.timeout_s, policy)

    def sources(self, version: str | None) -> list[CodeSource]:
        """The code sources to try in order: at the version's ref (when the template and version are known),
        then the default."""
        if isinstance(self.spec, GitHubCodeSpec):
            refs = [self.spec.ref.format(version=version)] if version and "{version}" in self.spec.ref else []
            if "{version}" not in self.spec.ref:
                refs.append(self.spec.ref)
            return [self._github(ref) for ref in [*refs, self.spec.default_ref]]
        assert self.root is not None
        tried: list[CodeSource] = []
        if self.spec.ref and (version or "{version}" not in self.spec.ref):
            ref = self.spec.ref.format(version=version)
            tried.append(GitCode(self.root, ref, self.timeout_s, CodeReadPolicy(self.globs)))
        return [*tried, LocalCode(self.root, CodeReadPolicy.for_checkout(self.root, self.globs))]

    async def read(self, path: str, version: str | None) -> tuple[str, str, str | None]:
        """``(text, source name, note)``: the file at the version's ref, else at the default with a note.

        Raises:
            SourceError: the file could not be read anywhere (the last reason).
        """
        notes: list[str] = []
        last: SourceError | None = None
        for source in self.sources(version):
            try:
                return await source.read(path), source.name, "; ".join(notes) or None
            except SourceError as exc:
                notes.append(f"not read at {source.name}: {exc}")
                last = exc
        assert last is not None
        raise last

    def repository_path(self, path: str | None, exists: Callable[[Path], bool] = Path.is_file) -> str | None:
        """A traceback's file as a repository-relative path, or None when it is not the service's code.

        Relative paths are kept; absolute ones lose a known prefix (``code.path_prefixes``, the local
        checkout); otherwise the longest tail of the path that exists in the local checkout is used.
        Third-party paths (site-packages) are never the service's code.
        """
        if not path:
            return None
        text = str(path).replace("\\", "/")
        if any(part in text for part in THIRD_PARTY):
            return None
        if not text.startswith("/"):
            return text
        for prefix in self.prefixes:
            if text.startswith(prefix):
                return text[len(prefix) :]
        if self.root is not None:
            parts = PurePosixPath(text).parts[1:]
            for start in range(len(parts)):
                tail = PurePosixPath(*parts[start:])
                if exists(self.root / tail):
                    return str(tail)
        return None
