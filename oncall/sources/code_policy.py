"""Which repository files the investigation may read: source files only, never secrets.

A path (repository-relative, POSIX) may be read when all of these hold:

1. it matches one of the allowed globs (``CODE_READ_GLOBS``, default ``*.py``; ``fnmatch`` syntax
   on the whole path, ``*`` also crosses folders, so ``*.py`` matches ``oncall/api/alerts.py``);
2. no part of it is a dotfile or dot-folder (``.env``, ``.env.local``, ``.git/config``, ``.ssh/id_rsa``);
3. its name is not one of the secret file names (``DENIED_NAMES``: private keys, certificates,
   keystores, ``.netrc``-style credentials, ``*.env``/``*.env.*``, ``*secret*``, ``credentials*``);
4. for a local checkout that is a git work tree: git tracks it (``git ls-files``), so an untracked
   or ignored file (a ``.env`` copy, ``data/oncall.db``, a ``run/`` log) is never read.

Rules 2-3 hold whatever the globs say. A refusal raises ``SourceError`` naming the rule, so the
model learns what it may read instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

from oncall.sources.http import SourceError

DEFAULT_GLOBS = ("*.py",)
DENIED_NAMES = (
    "*.pem",
    "*.key",
    "*.crt",
    "*.cer",
    "*.der",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "*.kdbx",
    "*.gpg",
    "*.asc",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*.env",
    "*.env.*",
    "env",
    "*secret*",
    "*credential*",
    "*.tfstate",
    "*.tfvars",
    "netrc",
    "_netrc",
    "htpasswd",
)
"""File names (lowercase ``fnmatch`` patterns) never read, whatever the globs allow."""
GIT_TIMEOUT_S = 5.0


class CodeReadPolicy:
    """Decides whether a repository-relative path may be read (see the module docstring).

    Args:
        globs: allowed ``fnmatch`` patterns over the whole repository-relative path.
        git_root: a local checkout whose tracked files alone may be read (None: no git check, e.g.
            GitHub, whose repository holds tracked files only, or a folder that is not a work tree).
    """

    def __init__(self, globs: Iterable[str] = DEFAULT_GLOBS, git_root: Path | None = None) -> None:
        self.globs = tuple(globs) or DEFAULT_GLOBS
        self.git_root = git_root

    @classmethod
    def for_checkout(cls, root: Path, globs: Iterable[str] = DEFAULT_GLOBS) -> CodeReadPolicy:
        """The policy of a local folder: the git check applies when ``root`` is a git work tree."""
        is_work_tree = (root / ".git").exists()
        return cls(globs, root if is_work_tree else None)

    def refusal(self, path: PurePosixPath) -> str | None:
        """Why ``path`` may not be read by its name alone (rules 1-3), or None when it may."""
        if any(part.startswith(".") for part in path.parts):
            return f"{str(path)!r} is or lies in a dotfile/dot-folder (such as .env or .git), which is never read"
        name = path.name.lower()
        if any(fnmatchcase(name, pattern) for pattern in DENIED_NAMES):
            return f"{str(path)!r} looks like a key, certificate or credentials file, which is never read"
        if not any(fnmatchcase(str(path), glob) for glob in self.globs):
            return f"{str(path)!r} is not a source file the agent may read (allowed: {', '.join(self.globs)})"
        return None

    async def check(self, path: PurePosixPath) -> None:
        """Raise ``SourceError`` unless ``path`` may be read (all four rules)."""
        reason = self.refusal(path)
        if reason is None and self.git_root is not None and not await self._tracked(path):
            reason = f"{str(path)!r} is not a file tracked by git in the code folder"
        if reason is not None:
            raise SourceError(f"refused: {reason}")

    async def _tracked(self, path: PurePosixPath) -> bool:
        """True when git tracks ``path`` in ``git_root`` (``git ls-files --error-unmatch``)."""
        assert self.git_root is not None
        process = await asyncio.create_subprocess_exec(
            "git",
            "--literal-pathspecs",
            "-C",
            str(self.git_root),
            "ls-files",
            "--error-unmatch",
            "--",
            str(path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with asyncio.timeout(GIT_TIMEOUT_S):
                return await process.wait() == 0
        except TimeoutError:
            process.kill()
            await process.wait()
            return False
