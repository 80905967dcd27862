"""The shipped service catalog's PromQL, for tests that mock Prometheus answers to the agent's queries."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from oncall.catalog.loader import load_catalog
from oncall.catalog.promql import ServiceQueries
from tests.rig import LB, PM
from tests.support import REPO_ROOT

SHIPPED_CATALOG = load_catalog(REPO_ROOT / "services.yaml", {"LB_URL": LB, "PM_URL": PM})


def service_queries(name: str) -> ServiceQueries:
    """The PromQL of the shipped catalog's service ``name``."""
    entry = SHIPPED_CATALOG.get(name)
    assert entry is not None and entry.prometheus is not None, name
    return entry.prometheus.queries()


INVENTORY = service_queries("inventory")
QUERIES = INVENTORY.evidence()
"""The offline engine's round-1 queries of the inventory service, by evidence key."""


def error_rate_queries(window: str, service: str = "inventory") -> dict[str, str]:
    """``compute_error_rate``'s queries of ``service`` over ``window``."""
    return service_queries(service).error_rate(window)


def catalog_with_alias(folder: Path, alias: str, like: str = "inventory") -> Path:
    """Write ``folder/services.yaml``: the shipped catalog plus a service ``alias`` (its alerts:
    ``service="<alias>"``) whose signals are those of the shipped service ``like``; returns its path.

    Tests whose captured alerts name another service (``checkout``) investigate it over the mocked demo stack."""
    shipped = yaml.safe_load((REPO_ROOT / "services.yaml").read_text())
    entry = copy.deepcopy(next(s for s in shipped["services"] if s["name"] == like))
    entry.update(name=alias, alerts=[{"matchers": [f'service="{alias}"']}])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "services.yaml"
    path.write_text(yaml.safe_dump({"services": [*shipped["services"], entry]}, sort_keys=False))
    return path
