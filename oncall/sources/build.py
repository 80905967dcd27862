"""The sources of one catalog entry: Prometheus, logs, changes, code and version, built from its sections.

``SourceEnvironment`` carries what every source shares (the HTTP client, Prometheus, timeouts, the
folder relative paths are resolved against, the default code root, and where secrets are read).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from oncall.catalog import models as m
from oncall.sources.changes import ProcessManagerChanges
from oncall.sources.logfile import FileLogSource
from oncall.sources.logs import DemoLogTail
from oncall.sources.loki import LokiLogSource
from oncall.sources.prometheus import PrometheusSource
from oncall.sources.repo_changes import GitHubRepoChanges, GitRepoChanges
from oncall.sources.service_code import ServiceCode
from oncall.sources.version import HttpVersionSource, PromQLVersionSource, VersionSource


class LogSource(Protocol):
    """Where a service's ERROR records are read."""

    name: str

    @property
    def where(self) -> str:
        """The file glob, URL or query read."""
        ...

    async def errors(self, seconds: int, limit: int, replica: str | None = None) -> list[dict[str, Any]]:
        """ERROR records of the last ``seconds``, newest first, at most ``limit``."""
        ...


class ChangeSource(Protocol):
    """Where a service's recent changes (deploys, config, scale, faults, restarts, commits) are read."""

    name: str

    async def changes_and_instances(
        self, since: float, limit: int = 200
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Changes after ``since`` (epoch s), newest first, and the current instances (may be empty)."""
        ...


@dataclass(frozen=True)
class SourceEnvironment:
    """What the sources of every service share.

    ``base_dir``: folder relative catalog paths are resolved against; ``code_root``: the checkout used
    when a ``code: local`` section names no root; ``secret``: reads a secret by environment variable name;
    ``code_read_globs``: the files code reads may open (``CODE_READ_GLOBS``, see ``code_policy``).
    """

    http: httpx.AsyncClient
    prometheus: PrometheusSource
    timeout_s: float
    base_dir: Path
    code_root: Path
    secret: Callable[[str], str | None]
    code_read_globs: tuple[str, ...] = ("*.py",)


@dataclass(frozen=True)
class ServiceSources:
    """The sources of one service; None where its catalog entry has no such section."""

    prometheus: PrometheusSource
    logs: LogSource | None
    changes: ChangeSource | None
    code: ServiceCode | None
    version: VersionSource | None


def _path(env: SourceEnvironment, value: str | None, default: Path) -> Path:
    if not value:
        return default
    path = Path(value)
    return path if path.is_absolute() else env.base_dir / path


def build_logs(spec: m.LogsSpec | None, env: SourceEnvironment) -> LogSource | None:
    """The log source of a ``logs`` section."""
    if isinstance(spec, m.HttpTailLogs):
        parts = urlsplit(spec.url)
        return DemoLogTail(env.http, f"{parts.scheme}://{parts.netloc}", env.timeout_s, parts.path or "/logs/tail")
    if isinstance(spec, m.FileLogs):
        return FileLogSource(spec, env.base_dir)
    if isinstance(spec, m.LokiLogs):
        token = env.secret(spec.token_env) if spec.token_env else None
        return LokiLogSource(env.http, spec, env.timeout_s, token)
    return None


def build_changes(spec: m.ChangesSpec | None, env: SourceEnvironment) -> ChangeSource | None:
    """The change source of a ``changes`` section."""
    if isinstance(spec, m.ProcessManagerChanges):
        return ProcessManagerChanges(env.http, spec.url.rstrip("/"), env.timeout_s)
    if isinstance(spec, m.GitChanges):
        return GitRepoChanges(spec, env.base_dir, env.timeout_s)
    if isinstance(spec, m.GitHubChanges):
        return GitHubRepoChanges(env.http, spec, env.secret(spec.token_env), env.timeout_s)
    return None


def build_code(spec: m.CodeSpec | None, env: SourceEnvironment) -> ServiceCode | None:
    """The code source of a ``code`` section."""
    if isinstance(spec, m.LocalCodeSpec):
        root = _path(env, spec.root, env.code_root)
        return ServiceCode(spec, root, env.http, None, env.timeout_s, env.code_read_globs)
    if isinstance(spec, m.GitHubCodeSpec):
        return ServiceCode(spec, None, env.http, env.secret(spec.token_env), env.timeout_s, env.code_read_globs)
    return None


def build_version(entry: m.ServiceEntry, env: SourceEnvironment) -> VersionSource | None:
    """The version source of a ``version`` section (it needs the entry's ``prometheus`` section)."""
    spec, prometheus = entry.version, entry.prometheus
    if spec is None or prometheus is None:
        return None
    if isinstance(spec, m.PromQLVersion):
        return PromQLVersionSource(env.prometheus, spec, prometheus.replica_label)
    return HttpVersionSource(
        env.http, env.prometheus, spec, prometheus.selector, prometheus.replica_label, env.timeout_s
    )


def build_sources(entry: m.ServiceEntry, env: SourceEnvironment) -> ServiceSources:
    """Every source of ``entry``."""
    return ServiceSources(
        prometheus=env.prometheus,
        logs=build_logs(entry.logs, env),
        changes=build_changes(entry.changes, env),
        code=build_code(entry.code, env),
        version=build_version(entry, env),
    )
