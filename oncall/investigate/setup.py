"""The service catalog and the investigation tools built from the settings (used by the composition root).

``SERVICES_FILE`` is read with ``${VAR}`` expanded from the environment and from the agent's own URL
settings (``LB_URL``, ``PM_URL``, ``PROMETHEUS_URL``, ``CODE_ROOT``), relative paths resolved against
the file's folder. ``GITHUB_REPO`` (with ``GITHUB_REF``, ``GITHUB_TOKEN``) reads the code of services
whose catalog ``code`` section is ``local`` from GitHub instead.
"""

from __future__ import annotations

import os

import httpx

from oncall.catalog.loader import load_catalog
from oncall.catalog.models import Catalog, GitHubCodeSpec, ServiceEntry
from oncall.investigate.context import Toolbox
from oncall.investigate.tools import SimilarLookup, ToolFactory
from oncall.redaction import Redactor
from oncall.settings import Settings
from oncall.sources.build import SourceEnvironment, build_sources
from oncall.sources.prometheus import PrometheusSource


def catalog_variables(settings: Settings) -> dict[str, str]:
    """Variables ``${VAR}`` in the catalog may name: the environment, then the agent's URL settings."""
    return {
        **os.environ,
        "LB_URL": settings.lb_url,
        "PM_URL": settings.pm_url,
        "PROMETHEUS_URL": settings.prometheus_url,
        "CODE_ROOT": str(settings.code_root),
    }


def load_service_catalog(settings: Settings) -> Catalog:
    """The catalog ``SERVICES_FILE``.

    Raises:
        CatalogError: the file is missing or invalid (one line: file, line, reason).
    """
    return load_catalog(settings.services_file, catalog_variables(settings))


def _secret(settings: Settings, name: str) -> str | None:
    """A secret by environment variable name (``GITHUB_TOKEN`` from the settings, others from the environment)."""
    if name == "GITHUB_TOKEN" and settings.github_token is not None:
        return settings.github_token.get_secret_value()
    return os.environ.get(name) or None


def _with_github_code(entry: ServiceEntry, settings: Settings) -> ServiceEntry:
    """``entry`` reading its code from ``GITHUB_REPO`` when that is set and its code section is local."""
    if not settings.github_repo or entry.code is None or entry.code.type != "local":
        return entry
    code = GitHubCodeSpec(
        type="github",
        repo=settings.github_repo,
        ref=settings.github_ref,
        default_ref=settings.github_ref,
        api_url=settings.github_api_url,
        path_prefixes=entry.code.path_prefixes,
    )
    return entry.model_copy(update={"code": code})


def catalog_secrets(catalog: Catalog, settings: Settings) -> list[str]:
    """The secret values the catalog's sources use (each ``token_env`` variable's value)."""
    sections = [section for entry in catalog.services for section in (entry.logs, entry.changes, entry.code)]
    names = {str(getattr(section, "token_env", None)) for section in sections if getattr(section, "token_env", None)}
    return [value for value in (_secret(settings, name) for name in sorted(names)) if value]


def build_tool_factory(
    settings: Settings,
    http: httpx.AsyncClient,
    catalog: Catalog | None = None,
    history: SimilarLookup | None = None,
) -> ToolFactory:
    """The investigation tools of every catalog service (and of alerts outside it) over the shared client:
    code reads limited by ``CODE_READ_GLOBS``, every tool's output redacted with the configured secrets and
    the catalog's tokens; ``history`` gives ``find_similar_incidents`` (None: not offered).

    Raises:
        CatalogError: ``catalog`` is None and ``SERVICES_FILE`` is missing or invalid.
    """
    catalog = catalog or load_service_catalog(settings)
    env = SourceEnvironment(
        http=http,
        prometheus=PrometheusSource(http, settings.prometheus_url, settings.tool_timeout_s),
        timeout_s=settings.tool_timeout_s,
        base_dir=settings.services_file.resolve().parent,
        code_root=settings.code_root,
        secret=lambda name: _secret(settings, name),
        code_read_globs=tuple(settings.code_read_globs),
    )
    toolbox = Toolbox(
        catalog, lambda entry: build_sources(_with_github_code(entry, settings), env), str(settings.services_file)
    )
    redact = Redactor([*settings.secret_values(), *catalog_secrets(catalog, settings)])
    return ToolFactory(toolbox, settings.tool_timeout_s, redact, history)
