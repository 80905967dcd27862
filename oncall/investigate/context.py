"""Which service an incident belongs to, and the sources its investigation reads.

An incident's alerts are matched against the service catalog (the first entry one of whose alert
routes matches an alert's labels). An incident no entry matches still gets a context: a stand-in
entry named after the alert's ``service`` (or ``job``) label, whose only source is Prometheus
(``{job="..."}`` targets, replicas by ``instance``, when the alert names a job), with ``gaps``
saying plainly what is missing from the catalog.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from oncall.catalog.models import AlertRoute, Catalog, PrometheusSpec, ServiceEntry
from oncall.catalog.promql import ClientQueries, ServiceQueries
from oncall.sources.build import ServiceSources
from oncall.sources.logformat import parse_time

UNKNOWN_REPLICA_LABEL = "instance"
DEFAULT_LATENCY_OBJECTIVE_S = 0.5
"""Seconds of p99 latency taken as the objective of a service whose catalog entry has no latency SLO."""


@dataclass
class ServiceContext:
    """One investigation's service: its catalog entry (or stand-in), sources, alerts and onset.

    ``alerts``: the incident's alert rows (``labels``, ``starts_at``, ``status``; ``annotations`` on those the
    prompt shows, ``prompts.shown_alerts``);
    ``onset``: epoch seconds when the first firing alert started (None when unknown);
    ``gaps``: what the catalog does not say about the service, one sentence each.
    """

    entry: ServiceEntry
    in_catalog: bool
    sources: ServiceSources
    alerts: list[dict[str, Any]] = field(default_factory=list)
    onset: float | None = None
    gaps: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The service's name."""
        return self.entry.name

    @property
    def queries(self) -> ServiceQueries | None:
        """The service's PromQL, or None without a ``prometheus`` section."""
        return self.entry.prometheus.queries() if self.entry.prometheus else None

    @property
    def clients(self) -> ClientQueries | None:
        """The PromQL of the service's load balancer (what clients saw), or None without one."""
        return self.entry.load_balancer.queries() if self.entry.load_balancer else None

    @property
    def latency_objective_s(self) -> float:
        """The latency the service promises (its SLO's ``threshold_s``), else ``DEFAULT_LATENCY_OBJECTIVE_S``."""
        slo = self.entry.slo
        return slo.latency.threshold_s if slo is not None and slo.latency is not None else DEFAULT_LATENCY_OBJECTIVE_S

    @property
    def replica_label(self) -> str:
        """The Prometheus label naming one replica."""
        return self.entry.prometheus.replica_label if self.entry.prometheus else UNKNOWN_REPLICA_LABEL


def alert_labels(incident: dict[str, Any], alerts: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """Every label set the incident carries: each alert's labels, then the common and group labels."""
    sets = [a.get("labels") or {} for a in alerts]
    sets += [incident.get(key) or {} for key in ("common_labels", "group_labels")]
    return [s for s in sets if s]


def onset_of(alerts: Sequence[dict[str, Any]]) -> float | None:
    """Epoch seconds of the earliest ``starts_at`` among firing alerts (any alert when none fires)."""
    firing = [a for a in alerts if a.get("status", "firing") == "firing"] or list(alerts)
    texts = {a.get("starts_at") or a.get("startsAt") for a in firing}  # a group's alerts often share a start
    starts = [t for t in (parse_time(text) for text in texts) if t and t > 0]
    return min(starts) if starts else None


def stand_in_entry(labels: list[dict[str, str]]) -> ServiceEntry:
    """A catalog entry for a service the catalog does not know, from the alert's labels (for each of ``service``,
    ``job`` and ``alertname``, the first label set that has it)."""
    merged = {key: next((s[key] for s in labels if key in s), "") for key in ("service", "job", "alertname")}
    name = merged["service"] or merged["job"] or "unknown"
    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in name.lower()).strip("-.") or "unknown"
    prometheus = None
    if merged["job"]:
        job = json.dumps(merged["job"])
        prometheus = PrometheusSpec(selector=f"{{job={job}}}", replica_label=UNKNOWN_REPLICA_LABEL)
    route = AlertRoute(matchers=[f"alertname={json.dumps(merged['alertname'])}"])
    return ServiceEntry(name=safe[:63], alerts=[route], prometheus=prometheus)


def unknown_gaps(entry: ServiceEntry, labels: list[dict[str, str]], catalog_source: str) -> list[str]:
    """What is missing when no catalog entry matches the alert."""
    shown = json.dumps(labels[0] if labels else {}, sort_keys=True)
    gaps = [
        f"no service in the catalog ({catalog_source}) matches the alert's labels {shown}: add an entry whose "
        "`alerts` matchers match them (README, 'Describe your own service')"
    ]
    if entry.prometheus is None:
        gaps.append("the alert has no `job` label, so no Prometheus targets of the service are known")
    gaps += [f"{gap} (no catalog entry)" for gap in ("no logs source", "no changes source", "no code source")]
    gaps.append("no request/error metrics: only the alert rule's own expression and process metrics were read")
    return gaps


class Toolbox:
    """Finds the service of an incident and builds (and keeps) its sources.

    Args:
        catalog: the service catalog.
        build: builds a service's sources from its entry.
        catalog_source: where the catalog was read (named in the gaps of unknown services).
    """

    def __init__(
        self, catalog: Catalog, build: Callable[[ServiceEntry], ServiceSources], catalog_source: str = "SERVICES_FILE"
    ) -> None:
        self.catalog = catalog
        self.build = build
        self.catalog_source = catalog_source
        self._sources: dict[str, ServiceSources] = {}

    def _sources_of(self, entry: ServiceEntry, in_catalog: bool) -> ServiceSources:
        if not in_catalog:
            return self.build(entry)
        if entry.name not in self._sources:
            self._sources[entry.name] = self.build(entry)
        return self._sources[entry.name]

    def context(self, incident: dict[str, Any], alerts: Sequence[dict[str, Any]]) -> ServiceContext:
        """The service context of ``incident`` (an incidents row) with its ``alerts`` rows."""
        labels = alert_labels(incident, alerts)
        entry = self.catalog.match(labels)
        if entry is None:
            stand_in = stand_in_entry(labels)
            return ServiceContext(
                stand_in,
                False,
                self._sources_of(stand_in, False),
                list(alerts),
                onset_of(alerts),
                unknown_gaps(stand_in, labels, self.catalog_source),
            )
        return ServiceContext(entry, True, self._sources_of(entry, True), list(alerts), onset_of(alerts), entry.gaps())

    def service(self, name: str, alerts: Sequence[dict[str, Any]] = ()) -> ServiceContext:
        """The context of the catalog's service ``name`` (tests, replies). Raises KeyError when unknown."""
        entry = self.catalog.get(name)
        if entry is None:
            raise KeyError(name)
        return ServiceContext(entry, True, self._sources_of(entry, True), list(alerts), onset_of(alerts), entry.gaps())
