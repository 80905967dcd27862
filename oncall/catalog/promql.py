"""PromQL of a catalog entry: metric presets, and the queries the investigation runs for a service.

Presets (metric names and labels as each library exports them):

* ``demo``: the demo's inventory service, ``http_requests_total`` / ``http_errors_total`` counters and
  the ``http_request_duration_seconds`` histogram, route label ``route``.
* ``instrumentator``: prometheus-fastapi-instrumentator's defaults (``metrics.default()``):
  ``http_requests_total{handler, method, status="2xx"|"5xx"...}`` and the label-free
  ``http_request_duration_highr_seconds`` histogram; Prometheus' own ``/metrics`` scrapes excluded.
* ``otel``: OpenTelemetry HTTP semantic conventions (``http.server.request.duration``, seconds,
  attributes ``http.response.status_code`` and ``http.route``) through the Prometheus exporter:
  ``http_server_request_duration_seconds_{bucket,count}`` with labels ``http_response_status_code``, ``http_route``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CPU_PER_REQUEST_WINDOW = "30s"
"""PromQL range of CPU seconds per request: at least several scrapes (2 s in the demo timing, 5 s shipped)."""
BASELINE_WINDOW = "10m"
"""How far back before the onset the usual request rate is read."""
BASELINE_GAP_S = 60
"""Seconds before the onset excluded from the baseline (a surge's first minute builds the symptom)."""
IDLE_RPS = 0.5
"""Requests/s below which a sample of the rate is idle time, not the service's usual traffic."""
HEALTHY_LOOKBACK = "30m"
"""How far back the highest rate served within the latency objective is read (a capacity lower bound)."""
_PROM_MATCHER = re.compile(r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*')


@dataclass(frozen=True)
class Preset:
    """A metric preset: (metric name, extra matchers) of requests, errors and latency buckets, and the route label."""

    requests: tuple[str, str]
    errors: tuple[str, str]
    latency_buckets: tuple[str, str]
    route_label: str


PRESETS: dict[str, Preset] = {
    "demo": Preset(
        ("http_requests_total", ""), ("http_errors_total", ""), ("http_request_duration_seconds_bucket", ""), "route"
    ),
    "instrumentator": Preset(
        ("http_requests_total", 'handler!="/metrics"'),
        ("http_requests_total", 'handler!="/metrics",status="5xx"'),
        ("http_request_duration_highr_seconds_bucket", ""),
        "handler",
    ),
    "otel": Preset(
        ("http_server_request_duration_seconds_count", ""),
        ("http_server_request_duration_seconds_count", 'http_response_status_code=~"5.."'),
        ("http_server_request_duration_seconds_bucket", ""),
        "http_route",
    ),
}


def selector_matcher_list(selector: str) -> list[str]:
    """Each matcher of a PromQL selector: ``{job="a",env!="dev"}`` -> ``['job="a"', 'env!="dev"']``.

    Raises:
        ValueError: not a comma-separated list of quoted PromQL label matchers.
    """
    inner = selector.strip()
    if inner.startswith("{") and inner.endswith("}"):
        inner = inner[1:-1]
    found_all: list[str] = []
    position = 0
    while position < len(inner):
        found = _PROM_MATCHER.match(inner, position)
        if found is None or (found.end() < len(inner) and inner[found.end()] != ","):
            raise ValueError(f'{selector!r} is not a PromQL selector such as {{job="inventory"}}')
        found_all.append(found.group(0).strip())
        position = found.end() + 1
    return found_all


def selector_matchers(selector: str) -> str:
    """The matchers inside a PromQL selector: ``{job="inventory"}`` or ``job="inventory"`` -> ``job="inventory"``.

    Raises:
        ValueError: not a comma-separated list of quoted PromQL label matchers.
    """
    return ",".join(selector_matcher_list(selector))


def series(metric: str, *matchers: str) -> str:
    """``metric{m1,m2}`` from non-empty matcher lists."""
    joined = ",".join(m for m in matchers if m)
    return f"{metric}{{{joined}}}"


@dataclass(frozen=True)
class ServiceQueries:
    """The PromQL of one service: series selectors and the replica label every query groups by.

    ``requests`` / ``errors`` are counter series selectors (None: the service has no request metrics),
    ``buckets`` a histogram ``_bucket`` series selector in seconds (None: no latency), ``route`` the route label.
    """

    selector: str
    replica: str
    requests: str | None
    errors: str | None
    buckets: str | None
    route: str | None
    cpu_seconds: str = "process_cpu_seconds_total"
    resident_memory: str = "process_resident_memory_bytes"
    start_time: str = "process_start_time_seconds"

    def of(self, metric: str) -> str:
        """``metric`` restricted to the service's targets."""
        return series(metric, self.selector)

    def evidence(self) -> dict[str, str]:
        """The per-replica instant queries of the offline engine's first round, by evidence key:
        ``p99`` (seconds), ``cpu`` (cores), ``rss`` (bytes), ``rss_growth`` (bytes in 5 min),
        ``cpu_per_request`` (CPU seconds per request over ``CPU_PER_REQUEST_WINDOW``), ``up`` and ``restarts``
        (process starts in 3 min)."""
        r = self.replica
        cpu = self.of(self.cpu_seconds)
        queries: dict[str, str] = {}
        if self.buckets:
            queries["p99"] = f"histogram_quantile(0.99, sum by ({r}, le)(rate({self.buckets}[1m])))"
        queries["cpu"] = f"rate({cpu}[1m])"
        queries["rss"] = self.of(self.resident_memory)
        queries["rss_growth"] = f"delta({self.of(self.resident_memory)}[5m])"
        if self.requests:  # a shorter window: a CPU-heavy code path shows per request before the 1m rates catch up
            window = CPU_PER_REQUEST_WINDOW
            queries["cpu_per_request"] = (
                f"sum by ({r})(rate({cpu}[{window}])) / sum by ({r})(rate({self.requests}[{window}]))"
            )
        queries["up"] = self.of("up")
        queries["scrape_ok"] = f"avg_over_time({self.of('up')}[1m])"
        queries["restarts"] = f"changes({self.of(self.start_time)}[3m])"
        return queries

    def p99(self, by: str = "") -> str | None:
        """p99 latency (seconds) over 1m, grouped ``by`` a label (or overall), None without a histogram."""
        if not self.buckets:
            return None
        grouping = f"{by}, le" if by else "le"
        return f"histogram_quantile(0.99, sum by ({grouping})(rate({self.buckets}[1m])))"

    def load(self, onset_age_s: float | None, latency_objective_s: float) -> dict[str, str]:
        """``get_load``'s queries over the service's own request counter (requests/s, see ``rate_history``) and
        ``per_replica`` / ``baseline_per_replica`` by the replica label. Empty without request metrics."""
        if not self.requests:
            return {}
        queries = rate_history(self.requests, onset_age_s, self.p99(), latency_objective_s)
        per_replica = rate_history(self.requests, onset_age_s, None, latency_objective_s, self.replica)
        queries["per_replica"] = per_replica["now"]
        queries["baseline_per_replica"] = per_replica["baseline"]
        return queries

    def totals(self, window: str) -> dict[str, str]:
        """Requests and failed requests over the PromQL range ``window`` (``300s``): the impact since the onset."""
        if not (self.requests and self.errors):
            return {}
        return {
            "requests": f"sum(increase({self.requests}[{window}]))",
            "failed": f"sum(increase({self.errors}[{window}]))",
        }

    def error_rate(self, window: str) -> dict[str, str]:
        """``compute_error_rate``'s queries (error ratio 0-1 overall, per replica and per route, and requests
        per second per replica) over the PromQL range ``window``. Errors of a series with no failure yet count
        as 0 (``or ... * 0``), so a healthy replica shows 0 instead of disappearing.

        Raises:
            ValueError: the service has no request/error metrics.
        """
        if not (self.requests and self.errors):
            raise ValueError("the service's catalog entry has no request/error metrics")

        def ratio(by: str) -> str:
            grouping = f" by ({by})" if by else ""
            errors = f"sum{grouping}(rate({self.errors}[{window}]))"
            requests = f"sum{grouping}(rate({self.requests}[{window}]))"
            return f"({errors} or {requests} * 0) / {requests}"

        queries = {"overall": ratio(""), "per_replica": ratio(self.replica)}
        if self.route:
            queries["per_route"] = ratio(self.route)
        queries["rps_per_replica"] = f"sum by ({self.replica})(rate({self.requests}[{window}]))"
        return queries


def rate_history(
    counter: str, onset_age_s: float | None, p99: str | None, objective_s: float, by: str = ""
) -> dict[str, str]:
    """Request-rate queries of a ``counter`` series selector (requests/s, grouped ``by`` a label or in total):
    ``now`` (1m rate), ``at_onset`` (the 1m rate ``onset_age_s`` seconds ago), ``baseline`` (median of the 1m
    rate over ``BASELINE_WINDOW`` ending ``BASELINE_GAP_S`` before the onset, idle samples excluded) and, given
    a ``p99`` expression, ``healthy_max`` (the highest 1m rate of the last ``HEALTHY_LOOKBACK`` served with
    that p99 within ``objective_s`` seconds: a lower bound of the capacity)."""
    rate = f"sum{f' by ({by})' if by else ''}(rate({counter}[1m]))"
    age = int(round(onset_age_s or 0.0))
    queries = {"now": rate}
    if onset_age_s is not None:
        queries["at_onset"] = rate.replace("[1m]", f"[1m] offset {max(age, 1)}s")
    before = f"offset {age + BASELINE_GAP_S}s"
    queries["baseline"] = f"quantile_over_time(0.5, ({rate} > {IDLE_RPS})[{BASELINE_WINDOW}:15s] {before})"
    if p99:
        queries["healthy_max"] = f"max_over_time(({rate} and on() ({p99} <= {objective_s:g}))[{HEALTHY_LOOKBACK}:15s])"
    return queries


@dataclass(frozen=True)
class ClientQueries:
    """The PromQL of a service's load balancer (what clients saw), grouped by its ``backend`` label.

    ``selector``: the load balancer's target matchers (``job="loadbalancer"``); ``requests``,
    ``buckets``, ``upstream_errors`` and ``in_flight``: metric names of the answered requests (with a
    status ``code`` label), the request-duration histogram buckets (seconds), the failed upstream
    attempts (with a ``kind`` label) and the upstream requests in flight.
    """

    selector: str
    requests: str = "lb_requests_total"
    buckets: str = "lb_request_duration_seconds_bucket"
    upstream_errors: str = "lb_upstream_errors_total"
    in_flight: str = "lb_upstream_in_flight"
    backend: str = "backend"
    code: str = "code"
    kind: str = "kind"

    def view(self, window: str = "1m") -> dict[str, str]:
        """``get_client_view``'s queries: ``by_code`` (requests/s by backend and status code), ``upstream``
        (failed attempts/s by backend and kind), ``p99`` (client p99 seconds by backend), ``p99_overall``
        and ``in_flight`` (by backend)."""
        b, sel = self.backend, self.selector
        buckets = f"rate({series(self.buckets, sel)}[{window}])"
        return {
            "by_code": f"sum by ({b}, {self.code})(rate({series(self.requests, sel)}[{window}]))",
            "upstream": f"sum by ({b}, {self.kind})(rate({series(self.upstream_errors, sel)}[{window}]))",
            "p99": f"histogram_quantile(0.99, sum by ({b}, le)({buckets}))",
            "p99_overall": f"histogram_quantile(0.99, sum by (le)({buckets}))",
            "in_flight": f"sum by ({b})({series(self.in_flight, sel)})",
        }

    def load(self, onset_age_s: float | None, objective_s: float) -> dict[str, str]:
        """``rate_history`` of the requests the load balancer answered (what clients sent), in total."""
        p99 = f"histogram_quantile(0.99, sum by (le)(rate({series(self.buckets, self.selector)}[1m])))"
        return rate_history(series(self.requests, self.selector), onset_age_s, p99, objective_s)

    def totals(self, window: str) -> dict[str, str]:
        """Requests answered over the PromQL range ``window`` (e.g. ``300s``): ``requests``, ``failed`` (5xx, the
        load balancer's own 502/503/504 included) and ``timeouts`` (504), for the impact since the onset."""

        def increase(*extra: str) -> str:
            return f"sum(increase({series(self.requests, self.selector, *extra)}[{window}]))"

        return {
            "requests": increase(),
            "failed": increase(f'{self.code}=~"5.."'),
            "timeouts": increase(f'{self.code}="504"'),
        }
