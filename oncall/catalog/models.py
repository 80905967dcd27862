"""The service catalog's entries: what the agent knows about each service it watches.

One entry per service (``SERVICES_FILE``, YAML, see ``services.yaml`` and the README section
"Describe your own service"). Every source is optional; what an entry leaves out is reported in
the diagnosis as missing from the catalog. Durations are seconds, ratios 0-1.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from oncall.catalog.matchers import Matcher, distinct_cuts, parse_matcher
from oncall.catalog.promql import PRESETS, ClientQueries, ServiceQueries, selector_matchers, series

NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"
LABEL = r"^[a-zA-Z_][a-zA-Z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AlertRoute(_Strict):
    """Alerts of the service: every matcher must match one alert's labels (Alertmanager matcher syntax,
    ``service="inventory"``, ``alertname=~"Inventory.*"``, ``!=``, ``!~``)."""

    matchers: list[str] = Field(min_length=1)

    @field_validator("matchers")
    @classmethod
    def _parse(cls, values: list[str]) -> list[str]:
        for value in values:
            parse_matcher(value)
        return values

    def parsed(self) -> list[Matcher]:
        """The matchers, parsed."""
        return [parse_matcher(value) for value in self.matchers]

    def matches(self, labels: dict[str, str]) -> bool:
        """True when every matcher matches ``labels``."""
        return all(m.matches(labels) for m in self.parsed())


class PrometheusSpec(_Strict):
    """The service's series in Prometheus.

    ``selector``: PromQL label matchers of its scrape targets (``{job="inventory"}``); ``replica_label``:
    the target label naming one replica/instance. The request, error and latency series come from a
    ``preset`` (``demo``, ``instrumentator``, ``otel``) or explicitly: ``requests`` and ``errors``
    are counter series selectors (all requests, failed ones), ``latency_buckets`` a histogram's
    ``_bucket`` series selector (seconds), ``route_label`` the label naming the route. Explicit
    fields override the preset's.
    """

    selector: str
    replica_label: str = Field(default="instance", pattern=LABEL)
    preset: Literal["demo", "instrumentator", "otel"] | None = None
    requests: str | None = None
    errors: str | None = None
    latency_buckets: str | None = None
    route_label: str | None = Field(default=None, pattern=LABEL)
    cpu_seconds: str = "process_cpu_seconds_total"
    resident_memory: str = "process_resident_memory_bytes"
    start_time: str = "process_start_time_seconds"

    @field_validator("selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        selector_matchers(value)
        return value

    @model_validator(mode="after")
    def _complete(self) -> PrometheusSpec:
        explicit = [self.requests, self.errors]
        if self.preset is None and any(explicit) and not all(explicit):
            raise ValueError("give both `requests` and `errors` (counter series selectors), or a `preset`")
        return self

    @property
    def request_metrics(self) -> bool:
        """True when the entry says how to count requests and errors (a preset or explicit selectors)."""
        return self.preset is not None or bool(self.requests and self.errors)

    @property
    def preset_name(self) -> str:
        """The preset's name, ``explicit`` without one."""
        return self.preset or "explicit"

    def queries(self) -> ServiceQueries:
        """The service's PromQL: explicit series selectors, else the preset's metrics on ``selector``."""
        matchers = selector_matchers(self.selector)
        preset = PRESETS[self.preset] if self.preset else None

        def pick(explicit: str | None, which: str) -> str | None:
            if explicit or preset is None:
                return explicit
            metric, extra = getattr(preset, which)
            return series(metric, matchers, extra)

        return ServiceQueries(
            selector=matchers,
            replica=self.replica_label,
            requests=pick(self.requests, "requests"),
            errors=pick(self.errors, "errors"),
            buckets=pick(self.latency_buckets, "latency_buckets"),
            route=self.route_label or (preset.route_label if preset else None),
            cpu_seconds=self.cpu_seconds,
            resident_memory=self.resident_memory,
            start_time=self.start_time,
        )


class LineFormat(_Strict):
    """How one log line (file or Loki) becomes a record.

    ``format: json``: one JSON object per line; ``fields`` maps record fields (``ts``, ``level``,
    ``message``, ``replica``, ``exception_type``, ``file``, ``line``, ``function``, ``traceback``,
    ``route``, ``method``, ``status``, ``version``) to the line's keys. ``format: text``: ``pattern``
    is a regular expression with named groups (at least ``message``; ``timestamp``, ``level``,
    ``replica``, ``logger`` ...) matching a record's first line; lines that do not match continue the
    record (a Python traceback). ``extract``: regexes applied to the message whose named groups add
    fields (``route``, ``method``, ``status``). ``classify``: exception type -> message regex, for
    ERROR records that name no exception (e.g. ``InjectedFault: '^injected fault'``). ``levels``:
    the levels read (the agent reads errors).
    """

    format: Literal["json", "text"] = "json"
    pattern: str | None = None
    fields: dict[str, str] = Field(default_factory=dict)
    extract: list[str] = Field(default_factory=list)
    classify: dict[str, str] = Field(default_factory=dict)
    levels: list[str] = Field(default_factory=lambda: ["ERROR", "CRITICAL", "FATAL"])

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None and "message" not in re.compile(value).groupindex:
            raise ValueError("the pattern needs a named group `message`: (?P<message>.*)")
        return value

    @field_validator("extract")
    @classmethod
    def _extract(cls, values: list[str]) -> list[str]:
        for value in values:
            re.compile(value)
        return values

    @field_validator("classify")
    @classmethod
    def _classify(cls, values: dict[str, str]) -> dict[str, str]:
        for value in values.values():
            re.compile(value)
        return values

    @model_validator(mode="after")
    def _text_needs_pattern(self) -> LineFormat:
        if self.format == "text" and not self.pattern:
            raise ValueError("format `text` needs a `pattern` (a regex with a named group `message`)")
        return self


class HttpTailLogs(_Strict):
    """The demo's ERROR log tail: ``GET <url>?seconds=&limit=[&replica=]`` answering ``{"entries": [...]}``."""

    type: Literal["http_tail"]
    url: str


class FileLogs(LineFormat):
    """Log files on this machine: ``path`` is a glob (``logs/payments/*.log``); each file's rotated
    copies (``<file>.1`` newest ... ``<file>.N``) are read too. ``max_bytes``: bytes read at most per
    file (from its end). Without a ``replica`` field the file name (without ``.log``) names the replica."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["file"]
    path: str
    max_bytes: int = Field(default=4 * 2**20, ge=1024)


class LokiLogs(LineFormat):
    """Grafana Loki: ``query`` (LogQL, e.g. ``{app="checkout"} |= "ERROR"``) over ``GET
    <url>/loki/api/v1/query_range``; ``replica_label``: the stream label naming the replica;
    ``tenant``: ``X-Scope-OrgID``; ``token_env``: environment variable holding a bearer token."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["loki"]
    url: str
    query: str
    replica_label: str | None = None
    tenant: str | None = None
    token_env: str | None = None


LogsSpec = Annotated[HttpTailLogs | FileLogs | LokiLogs, Field(discriminator="type")]


class ProcessManagerChanges(_Strict):
    """The demo process manager's change log (``GET <url>/changes``, ``/instances``)."""

    type: Literal["process_manager"]
    url: str


class GitChanges(_Strict):
    """Commits in the window of a local git repository (``path``, on ``branch`` or HEAD)."""

    type: Literal["git"]
    path: str
    branch: str | None = None


class GitHubChanges(_Strict):
    """GitHub deployments (``environment``) and commits (``branch``) of ``repo`` (``owner/name``)."""

    type: Literal["github"]
    repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    environment: str | None = None
    branch: str | None = None
    token_env: str = "GITHUB_TOKEN"  # noqa: S105 - the variable name, not a secret
    api_url: str = "https://api.github.com"


ChangesSpec = Annotated[ProcessManagerChanges | GitChanges | GitHubChanges, Field(discriminator="type")]


class LocalCodeSpec(_Strict):
    """A local checkout (``root``; default ``CODE_ROOT``). With ``ref`` (a git ref template such as
    ``v{version}``) files are read from git at the deployed version. ``path_prefixes``: absolute
    prefixes of the deployed files (as tracebacks show them) stripped to repository-relative paths."""

    type: Literal["local"]
    root: str | None = None
    ref: str | None = None
    path_prefixes: list[str] = Field(default_factory=list)


class GitHubCodeSpec(_Strict):
    """The GitHub contents API at ``ref`` (a template such as ``v{version}``; ``default_ref``: version unknown)."""

    type: Literal["github"]
    repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    ref: str = "{version}"
    default_ref: str = "main"
    token_env: str = "GITHUB_TOKEN"  # noqa: S105 - the variable name, not a secret
    api_url: str = "https://api.github.com"
    path_prefixes: list[str] = Field(default_factory=list)


CodeSpec = Annotated[LocalCodeSpec | GitHubCodeSpec, Field(discriminator="type")]


class PromQLVersion(_Strict):
    """The deployed version per replica from a ``*_build_info`` series: ``query`` and the ``label`` holding it."""

    type: Literal["promql"]
    query: str
    label: str = Field(default="version", pattern=LABEL)


class HttpVersion(_Strict):
    """The version from each replica's HTTP endpoint: ``path`` (``/version``) on every scrape target of the
    service (from Prometheus' targets), or fixed ``urls``; ``field``: the JSON field holding it."""

    type: Literal["http"]
    path: str = "/version"
    urls: list[str] = Field(default_factory=list)
    field: str = "version"


VersionSpec = Annotated[PromQLVersion | HttpVersion, Field(discriminator="type")]


class ProcessManagerControl(_Strict):
    """The control plane for remediation (deploy, restart, scale, faults); ``max_replicas``: scale-out's most."""

    type: Literal["process_manager"]
    url: str
    max_replicas: int = Field(default=10, ge=1, le=1000)


class LoadBalancerSpec(_Strict):
    """What clients saw: the load balancer in front of the service, in Prometheus. ``selector``: its scrape
    target; ``backend_label`` names the backend, a URL whose ``host:port`` is the replica's ``instance``; series
    (defaults: the demo's ``loadbalancer.py``): ``requests`` answered by status ``code_label`` (its own 502/503/504
    too), ``duration_buckets`` (seconds), ``upstream_errors`` by ``kind_label``, ``in_flight`` (a gauge)."""

    selector: str
    backend_label: str = Field(default="backend", pattern=LABEL)
    requests: str = "lb_requests_total"
    code_label: str = Field(default="code", pattern=LABEL)
    duration_buckets: str = "lb_request_duration_seconds_bucket"
    upstream_errors: str = "lb_upstream_errors_total"
    kind_label: str = Field(default="kind", pattern=LABEL)
    in_flight: str = "lb_upstream_in_flight"

    @field_validator("selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        selector_matchers(value)
        return value

    def queries(self) -> ClientQueries:
        """The load balancer's PromQL (``oncall.catalog.promql.ClientQueries``)."""
        return ClientQueries(
            selector=selector_matchers(self.selector),
            requests=self.requests,
            buckets=self.duration_buckets,
            upstream_errors=self.upstream_errors,
            in_flight=self.in_flight,
            backend=self.backend_label,
            code=self.code_label,
            kind=self.kind_label,
        )


class LatencySLO(_Strict):
    """``target`` (ratio 0-1) of requests faster than ``threshold_s`` seconds."""

    threshold_s: float = Field(gt=0)
    target: float = Field(gt=0, lt=1)


class SLO(_Strict):
    """Service level objectives: ``availability`` (ratio 0-1 of requests that succeed) and latency."""

    availability: float | None = Field(default=None, gt=0, lt=1)
    latency: LatencySLO | None = None


class ServiceEntry(_Strict):
    """One service of the catalog."""

    name: str = Field(pattern=NAME)
    description: str = ""
    owner_team: str | None = None  # a team id of the on-call roster (ONCALL_FILE)
    runbook_url: str | None = None
    slo: SLO | None = None
    alerts: list[AlertRoute] = Field(min_length=1)
    prometheus: PrometheusSpec | None = None
    logs: LogsSpec | None = None
    changes: ChangesSpec | None = None
    code: CodeSpec | None = None
    version: VersionSpec | None = None
    control_plane: ProcessManagerControl | None = None
    load_balancer: LoadBalancerSpec | None = None

    def matches(self, labels: dict[str, str]) -> bool:
        """True when one of the entry's alert routes matches an alert's ``labels``."""
        return any(route.matches(labels) for route in self.alerts)

    def gaps(self) -> list[str]:
        """What the entry leaves out, one short sentence each (empty for a complete entry)."""
        missing = []
        if self.prometheus is None:
            missing.append("no `prometheus` section: no metrics of its replicas")
        elif not self.prometheus.request_metrics:
            missing.append("no request/error metrics (`prometheus.preset` or `requests`/`errors`): no error ratio")
        elif self.prometheus.latency_buckets is None and self.prometheus.preset is None:
            missing.append("no latency histogram (`prometheus.latency_buckets`): no p99 latency")
        for section in ("logs", "changes", "code", "version"):
            if getattr(self, section) is None:
                missing.append(f"no `{section}` source")
        return missing


class Catalog(_Strict):
    """Every service the agent watches, in file order (the first entry matching an alert wins)."""

    services: list[ServiceEntry] = Field(min_length=1)

    @field_validator("services")
    @classmethod
    def _unique(cls, services: list[ServiceEntry]) -> list[ServiceEntry]:
        names = [s.name for s in services]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"service names must be unique: {', '.join(duplicates)}")
        return services

    def match(self, alert_labels: list[dict[str, str]]) -> ServiceEntry | None:
        """The first service one of whose alert routes matches any of ``alert_labels`` (``distinct_cuts``), or None."""
        cuts = distinct_cuts(alert_labels, {m.name for s in self.services for r in s.alerts for m in r.parsed()})
        return next((s for s in self.services if any(s.matches(labels) for labels in cuts)), None)

    def get(self, name: str) -> ServiceEntry | None:
        """The service called ``name``, or None."""
        return next((s for s in self.services if s.name == name), None)

    def owner_team(self, service: str) -> str | None:
        """The team owning ``service`` (a roster team id), or None when the catalog does not say
        (``oncall.roster.chain.OwnerTeams``: the catalog's owner wins over the roster's ``services``)."""
        entry = self.get(service)
        return entry.owner_team if entry is not None else None


__all__ = ["PRESETS", "Catalog", "ServiceEntry"]
