"""The service catalog: the shipped file, alert matching, PromQL presets, and one clear error line (file, line,
reason) for each kind of mistake, also when the real agent process starts with a broken catalog."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from oncall.catalog import models as m
from oncall.catalog.loader import CatalogError, load_catalog, parse_catalog
from oncall.catalog.matchers import parse_matcher
from oncall.roster.chain import owning_team
from oncall.roster.config import parse_roster
from tests.catalog_support import SHIPPED_CATALOG, service_queries
from tests.support import REPO_ROOT, free_port
from tests.test_agent_api import agent_env, uvicorn_args

VALID = """services:
  - name: checkout
    alerts:
      - matchers: ['service="checkout"']
    prometheus:
      selector: '{job="checkout"}'
      preset: otel
"""


def test_shipped_catalog_describes_the_demo_services() -> None:
    inventory, payments = SHIPPED_CATALOG.services
    assert (inventory.name, payments.name) == ("inventory", "payments")
    assert SHIPPED_CATALOG.match([{"alertname": "InventoryHighErrorRate", "service": "inventory"}]) is inventory
    assert SHIPPED_CATALOG.match([{"alertname": "X"}, {"service": "payments"}]) is payments
    assert SHIPPED_CATALOG.match([{"alertname": "TargetDown", "service": "checkout"}]) is None
    assert inventory.gaps() == [] and payments.gaps() == ["no `changes` source"]
    assert inventory.control_plane is not None and payments.control_plane is None
    assert inventory.owner_team == "inventory" and inventory.slo is not None
    assert SHIPPED_CATALOG.owner_team("payments") == "payments" and SHIPPED_CATALOG.owner_team("checkout") is None
    assert inventory.slo.latency is not None and inventory.slo.latency.threshold_s == 0.5


def test_matching_reads_only_the_labels_the_matchers_name() -> None:
    """1,000 alerts differing by ``pod``: a ``!=`` matcher excludes them by ``team``; one without ``team`` (a missing
    label matches as "") matches; the first matching service wins whatever the order of the label sets."""
    text = """services:
  - name: api
    alerts:
      - matchers: ['alertname=~"Api.*"', 'team!="db"']
  - name: anything-down
    alerts:
      - matchers: ['alertname=~".*Down"']
"""
    catalog = parse_catalog(text, "c.yaml", {})
    api, anything = catalog.services
    owned_by_db = [{"alertname": "ApiSlow", "pod": f"web-{n}", "team": "db"} for n in range(1000)]
    assert catalog.match(owned_by_db) is None
    assert catalog.match([*owned_by_db, {"alertname": "ApiSlow", "pod": "web-x"}]) is api
    assert catalog.match([{"alertname": "ApiDown", "team": "db"}, *owned_by_db]) is anything
    assert catalog.match([{"alertname": "DbDown"}, {"alertname": "ApiDown"}]) is api


def test_presets_give_each_library_its_own_promql() -> None:
    inventory, payments = service_queries("inventory"), service_queries("payments")
    assert inventory.evidence()["p99"] == (
        "histogram_quantile(0.99, sum by (replica, le)"
        '(rate(http_request_duration_seconds_bucket{job="inventory"}[1m])))'
    )
    assert inventory.error_rate("1m")["per_replica"] == (
        '(sum by (replica)(rate(http_errors_total{job="inventory"}[1m])) or '
        'sum by (replica)(rate(http_requests_total{job="inventory"}[1m])) * 0) / '
        'sum by (replica)(rate(http_requests_total{job="inventory"}[1m]))'
    )
    payments_ratio = payments.error_rate("5m")
    assert 'http_requests_total{job="payments",handler!="/metrics",status="5xx"}[5m]' in payments_ratio["overall"]
    assert payments_ratio["per_route"].startswith("(sum by (handler)")
    assert payments.evidence()["p99"].startswith("histogram_quantile(0.99, sum by (instance, le)")
    assert "http_request_duration_highr_seconds_bucket" in payments.evidence()["p99"]
    otel = parse_catalog(VALID, "c.yaml", {}).services[0].prometheus
    assert otel is not None
    queries = otel.queries()
    assert (
        queries.errors == 'http_server_request_duration_seconds_count{job="checkout",http_response_status_code=~"5.."}'
    )
    assert queries.route == "http_route" and queries.replica == "instance"


def test_explicit_metrics_and_a_service_without_request_metrics() -> None:
    text = VALID.replace(
        "      preset: otel\n",
        '      requests: \'api_calls_total{app="c"}\'\n      errors: \'api_calls_total{app="c",code=~"5.."}\'\n',
    )
    queries = parse_catalog(text, "c.yaml", {}).services[0].prometheus.queries()  # type: ignore[union-attr]
    assert queries.requests == 'api_calls_total{app="c"}' and queries.buckets is None
    assert "p99" not in queries.evidence() and "cpu_per_request" in queries.evidence()
    bare = parse_catalog(VALID.replace("      preset: otel\n", ""), "c.yaml", {}).services[0]
    assert "no request/error metrics" in bare.gaps()[0]
    with pytest.raises(ValueError, match="no request/error metrics"):
        bare.prometheus.queries().error_rate("1m")  # type: ignore[union-attr]


def test_matchers_follow_alertmanager_semantics() -> None:
    labels = {"service": "inventory", "alertname": "InventoryHighErrorRate"}
    assert parse_matcher('service="inventory"').matches(labels)
    assert parse_matcher("service = inventory").matches(labels)
    assert parse_matcher('alertname=~"Inventory.*"').matches(labels)
    assert not parse_matcher('alertname=~"High"').matches(labels)  # anchored, as in Prometheus
    assert parse_matcher('team!="payments"').matches(labels)  # a missing label is ""
    assert not parse_matcher('service!~"inv.*"').matches(labels)
    for bad in ("service", 'service=="x"', 'a=~"("'):
        with pytest.raises(ValueError):
            parse_matcher(bad)


MISTAKES = [
    (VALID.replace("preset: otel", "preset: opentelemetry"), 7, "services[0].prometheus.preset", "'otel'"),
    (VALID.replace('service="checkout"', "service"), 4, "services[0].alerts[0].matchers", "not a label matcher"),
    (VALID.replace("{job=", "{job~"), 6, "services[0].prometheus.selector", "not a PromQL selector"),
    (VALID + "    logs: {type: file, path: a.log, format: text}\n", 8, "services[0].logs", "needs a `pattern`"),
    (VALID + "    logs: {type: kafka}\n", 8, "services[0].logs", "tag 'kafka'"),
    (VALID + "    owner: ops\n", 8, "services[0].owner", "Extra inputs"),
    (VALID + "    logs: {type: http_tail, url: '${TAIL_URL}'}\n", 8, "services[0].logs.url", "TAIL_URL is not set"),
    (VALID + VALID.split("\n", 1)[1], 2, "services", "unique: checkout"),
    (VALID.replace("    alerts:", "    alerts: [\n"), 5, "not valid YAML", ""),
    ("- a\n", 1, "expected a mapping", ""),
]


@pytest.mark.parametrize(("text", "line", "where", "reason"), MISTAKES)
def test_a_mistake_gives_one_line_with_file_line_and_reason(
    tmp_path: Path, text: str, line: int, where: str, reason: str
) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(text)
    with pytest.raises(CatalogError) as caught:
        load_catalog(path, {})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line}: {where}"), message
    assert reason in message


def test_variables_expand_with_defaults(tmp_path: Path) -> None:
    text = VALID + "    logs: {type: http_tail, url: '${TAIL:-http://127.0.0.1:9}/logs/tail'}\n"
    logs = parse_catalog(text, "c.yaml", {}).services[0].logs
    assert logs is not None and logs.url == "http://127.0.0.1:9/logs/tail"  # type: ignore[union-attr]
    logs = parse_catalog(text, "c.yaml", {"TAIL": "http://lb"}).services[0].logs
    assert logs.url == "http://lb/logs/tail"  # type: ignore[union-attr]
    with pytest.raises(CatalogError, match="cannot read the service catalog"):
        load_catalog(tmp_path / "missing.yaml", {})


def test_agent_with_a_broken_catalog_stops_at_start_with_one_line(tmp_path: Path, procs) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(VALID.replace("preset: otel", "preset: opentelemetry"))
    proc = procs.start("agent", uvicorn_args(free_port()), env=agent_env(tmp_path, SERVICES_FILE=str(path)))
    assert proc.wait(timeout=30) != 0
    lines = [line for line in procs.log_text("agent").splitlines() if "invalid service catalog" in line]
    assert len(lines) == 1, procs.log_text("agent")
    assert f"{path}:7: services[0].prometheus.preset: Input should be" in lines[0]


def test_readme_examples_are_valid_catalog_entries() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## Describe your own service") :]
    fastapi, loki = re.findall(r"```yaml\n(.*?)```", section, re.S)[:2]
    orders = parse_catalog(fastapi, "README", {}).services[0]
    assert orders.prometheus is not None and orders.prometheus.preset == "instrumentator"
    assert isinstance(orders.logs, m.FileLogs) and isinstance(orders.code, m.GitHubCodeSpec)
    checkout = parse_catalog("services:\n" + loki, "README", {}).services[0]
    assert isinstance(checkout.logs, m.LokiLogs) and checkout.logs.tenant == "shop"
    assert checkout.matches({"alertname": "CheckoutSlow"}) and not checkout.matches({"alertname": "Slow"})


def test_the_catalog_names_the_owner_team_the_roster_pages() -> None:
    roster = parse_roster((REPO_ROOT / "oncall.yaml").read_text())
    team, why = owning_team(roster, "payments", SHIPPED_CATALOG)
    assert team == "payments" and why.endswith("(service catalog)")
    assert owning_team(roster, "checkout", SHIPPED_CATALOG)[0] == roster.default_team
