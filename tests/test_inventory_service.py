"""Tests of inventory_service.py against real replica processes on free loopback ports.

Each test starts its own replicas (``python inventory_service.py --port P``) with a temporary
INVENTORY_DB and LOG_DIR; the ``procs`` fixture stops them by PID.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inventory_service import FaultSpec, iter_lines_reversed
from tests.e2e_support import bug_line
from tests.support import PYTHON, REPO_ROOT, ProcessGroup, free_port, wait_http_ok

SERVICE_FILE = REPO_ROOT / "inventory_service.py"
ITEM_ROUTE = "/items/{item_id}"


class Replica:
    """One started replica: its name, base URL, process and an HTTP client."""

    def __init__(self, name: str, port: int, proc, log_dir: Path) -> None:
        self.name = name
        self.url = f"http://127.0.0.1:{port}"
        self.proc = proc
        self.log_file = log_dir / "inventory_common.log"
        self.http = httpx.Client(base_url=self.url, timeout=15.0)

    def set_fault(self, **body) -> dict:
        response = self.http.post("/faults", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        """Scrape /metrics: {(sample name, frozenset(labels.items())): value}."""
        response = self.http.get("/metrics")
        assert response.status_code == 200
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }

    def logs(self, **params) -> list[dict]:
        response = self.http.get("/logs/tail", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["count"] == len(body["entries"])
        return body["entries"]


def metric(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels`` (0 when none)."""
    wanted = set(labels.items())
    return sum(
        value
        for (sample_name, sample_labels), value in samples.items()
        if sample_name == name and wanted <= sample_labels
    )


def start_replicas(procs: ProcessGroup, tmp_path: Path, names: list[str], **env: str) -> list[Replica]:
    """Start one process per name at the same moment (same DB and LOG_DIR), wait until all are healthy."""
    log_dir = tmp_path / "logs"
    replicas = []
    for name in names:
        port = free_port()
        proc = procs.start(
            name,
            [PYTHON, str(SERVICE_FILE), "--port", str(port)],
            env={"REPLICA": name, "INVENTORY_DB": str(tmp_path / "inventory.db"), "LOG_DIR": str(log_dir), **env},
        )
        replicas.append(Replica(name, port, proc, log_dir))
    for replica in replicas:
        try:
            wait_http_ok(f"{replica.url}/healthz", timeout=20)
        except TimeoutError:
            pytest.fail(f"{replica.name} did not start:\n{procs.log_text(replica.name)}")
    return replicas


INVALID_BODIES = {
    "quantity": {"name": "x", "quantity": -1, "price": 1},
    "price": {"name": "x", "quantity": 1, "price": -0.01},
    "name": {"name": "", "quantity": 1, "price": 1},
    "colour": {"name": "x", "quantity": 1, "price": 1, "colour": "red"},
}


def assert_invalid_requests_rejected(replica: Replica) -> None:
    """PUT bodies of INVALID_BODIES and ids 0 / abc answer 422 naming the offending field."""
    for field, body in INVALID_BODIES.items():
        response = replica.http.put("/items/7", json=body)
        assert response.status_code == 422, body
        assert any(field in error["loc"] for error in response.json()["detail"]), response.text
    for bad_id in ("0", "abc"):
        response = replica.http.get(f"/items/{bad_id}")
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["path", "item_id"]


def test_items_read_update_not_found_and_validation(procs, tmp_path):
    (replica,) = start_replicas(procs, tmp_path, ["inventory-t1"])
    assert replica.http.get("/version").json() == {
        "service": "inventory",
        "version": "1.4.0",
        "replica": "inventory-t1",
    }
    item = replica.http.get("/items/7").json()
    assert set(item) == {"id", "name", "quantity", "price"} and item["id"] == 7 and item["quantity"] >= 0

    updated = replica.http.put("/items/7", json={"name": "Blue Widget", "quantity": 42, "price": 9.5})
    assert updated.status_code == 200
    assert updated.json() == {"id": 7, "name": "Blue Widget", "quantity": 42, "price": 9.5}
    assert replica.http.get("/items/7").json() == updated.json()

    assert replica.http.get("/items/100000").status_code == 404
    missing = replica.http.put("/items/100000", json={"name": "x", "quantity": 1, "price": 1})
    assert missing.status_code == 404 and "not found" in missing.json()["detail"]
    assert_invalid_requests_rejected(replica)
    assert replica.http.get("/items/7").json()["quantity"] == 42

    samples = replica.metrics()
    assert {
        "items": metric(samples, "inventory_items"),
        "put 422": metric(samples, "http_requests_total", route=ITEM_ROUTE, method="PUT", status="422"),
        "get 404": metric(samples, "http_requests_total", route=ITEM_ROUTE, method="GET", status="404"),
        "errors": metric(samples, "http_errors_total"),
    } == {"items": 100, "put 422": len(INVALID_BODIES), "get 404": 1, "errors": 0}
    assert replica.http.get("/no-such-path").status_code == 404
    samples = replica.metrics()
    assert metric(samples, "http_requests_total", route="unmatched", status="404") == 1
    assert metric(samples, "http_requests_total", route="/metrics") == 0
    assert not any("/items/7" in dict(labels).get("route", "") for _, labels in samples)


def test_put_through_one_replica_is_read_through_another(procs, tmp_path):
    first, second = start_replicas(procs, tmp_path, ["inventory-a", "inventory-b"])
    assert first.http.get("/healthz").json()["pid"] != second.http.get("/healthz").json()["pid"]
    assert first.http.put("/items/12", json={"name": "Shared Gear", "quantity": 3, "price": 1.25}).status_code == 200
    assert second.http.get("/items/12").json() == {"id": 12, "name": "Shared Gear", "quantity": 3, "price": 1.25}
    assert second.http.put("/items/12", json={"name": "Shared Gear", "quantity": 0, "price": 1.25}).status_code == 200
    assert first.http.get("/items/12").json()["quantity"] == 0
    assert metric(first.metrics(), "inventory_items") == metric(second.metrics(), "inventory_items") == 100
    with closing(sqlite3.connect(tmp_path / "inventory.db")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_concurrent_writes_through_two_replicas_all_succeed(procs, tmp_path):
    replicas = start_replicas(procs, tmp_path, ["inventory-w1", "inventory-w2"])

    def put(index: int) -> int:
        body = {"name": f"Item {index}", "quantity": index, "price": float(index)}
        return replicas[index % 2].http.put(f"/items/{index % 10 + 1}", json=body).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(put, range(40)))
    assert statuses == [200] * 40
    assert all(replica.logs(seconds=60) == [] for replica in replicas)


def test_random_endpoint_error_is_a_null_dereference_at_a_stable_line(procs, tmp_path):
    (replica,) = start_replicas(procs, tmp_path, ["inventory-bug"])
    line = bug_line()
    for _ in range(3):
        response = replica.http.get("/random-endpoint/error")
        assert response.status_code == 500 and response.json() == {"detail": "internal server error"}

    entries = replica.logs(seconds=60)
    assert len(entries) == 3
    entry = entries[0]
    assert entry["level"] == "ERROR" and entry["service"] == "inventory" and entry["replica"] == "inventory-bug"
    assert entry["method"] == "GET" and entry["route"] == "/random-endpoint/error" and entry["status"] == 500
    assert entry["exception_type"] == "AttributeError"
    assert entry["message"] == "'NoneType' object has no attribute 'percent_off'"
    assert (entry["file"], entry["line"], entry["function"]) == ("inventory_service.py", line, "discounted_price")
    assert entry["traceback"].startswith("Traceback (most recent call last):")
    assert f'inventory_service.py", line {line}, in discounted_price' in entry["traceback"]
    assert "site-packages" not in entry["traceback"]
    assert entry["fault"] is None and entry["timestamp"].endswith("Z") and abs(entry["ts"] - time.time()) < 60

    samples = replica.metrics()
    assert metric(samples, "http_errors_total", route="/random-endpoint/error", method="GET", status="500") == 3
    assert metric(samples, "http_request_duration_seconds_count", route="/random-endpoint/error") == 3


def assert_reports_version(replica: Replica, version: str) -> None:
    """GET /version, /healthz and inventory_build_info (one series) all name ``version``."""
    assert replica.http.get("/version").json() == {"service": "inventory", "version": version, "replica": replica.name}
    assert replica.http.get("/healthz").json()["version"] == version
    build_info = [
        (labels, value) for (name, labels), value in replica.metrics().items() if name == "inventory_build_info"
    ]
    assert build_info == [(frozenset({("service", "inventory"), ("version", version)}), 1.0)]


def assert_is_the_regression(entry: dict, replica: str) -> None:
    """``entry`` is the 1.4.1 AttributeError of GET /items/{item_id}, at bug_line() in discounted_price."""
    assert pick(entry, "route", "method", "status", "exception_type", "message", "version", "replica") == {
        "route": ITEM_ROUTE,
        "method": "GET",
        "status": 500,
        "exception_type": "AttributeError",
        "message": "'NoneType' object has no attribute 'percent_off'",
        "version": "1.4.1",
        "replica": replica,
    }
    assert (entry["file"], entry["line"], entry["function"]) == ("inventory_service.py", bug_line(), "discounted_price")
    assert "in quote_item" in entry["traceback"] and "in get_item" in entry["traceback"]


def pick(record: dict, *keys: str) -> dict:
    """The ``keys`` of ``record`` (to compare several fields in one assertion)."""
    return {key: record[key] for key in keys}


def test_version_is_exposed_and_1_4_1_prices_items_through_the_null_dereference(procs, tmp_path):
    (old,) = start_replicas(procs, tmp_path / "a", ["inventory-old"], SERVICE_VERSION="1.3.2")
    (new,) = start_replicas(procs, tmp_path / "b", ["inventory-new"], SERVICE_VERSION="1.4.1")
    assert_reports_version(old, "1.3.2")
    assert_reports_version(new, "1.4.1")

    # 1.3.2 answers list prices, like 1.4.0; 1.4.1 answers promotional prices and fails for unpromoted items.
    list_price = old.http.get("/items/42").json()["price"]
    assert new.http.get("/items/42").json()["price"] == round(list_price * 0.75, 2)  # 25 % off
    assert old.http.get("/items/1").status_code == 200
    failed = [new.http.get(f"/items/{item_id}") for item_id in (1, 2, 3)]
    assert [(r.status_code, r.json()) for r in failed] == [(500, {"detail": "internal server error"})] * 3
    assert new.http.get("/items/100000").status_code == 404  # unknown items fail before the pricing path
    assert new.http.put("/items/5", json={"name": "x", "quantity": 1, "price": 2.0}).status_code == 200

    entries = new.logs(seconds=60)
    assert len(entries) == 3
    for entry in entries:
        assert_is_the_regression(entry, "inventory-new")
    assert old.logs(seconds=60) == []
    assert metric(new.metrics(), "http_errors_total", route=ITEM_ROUTE, status="500") == 3
    assert metric(old.metrics(), "http_errors_total") == 0


def test_unknown_service_version_refuses_to_start(tmp_path):
    env = {**os.environ, "SERVICE_VERSION": "2.0.0", "LOG_DIR": str(tmp_path), "INVENTORY_DB": str(tmp_path / "db")}
    result = subprocess.run(
        [PYTHON, str(SERVICE_FILE), "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "service_version" in result.stderr and "'1.3.2', '1.4.0' or '1.4.1'" in result.stderr


def test_bug_line_is_the_promotion_dereference_in_discounted_price():
    source = SERVICE_FILE.read_text().splitlines()
    assert "promotion.percent_off" in source[bug_line() - 1]
    answer_keys = ("NULL-DEREFERENCE", "referenced by tests", "deliberate", "demo bug")
    assert not [text for text in source if any(key in text.lower() for key in map(str.lower, answer_keys))]


def test_random_endpoint_fails_with_the_configured_ratio(procs, tmp_path):
    always, never = start_replicas(
        procs, tmp_path / "a", ["inventory-flaky"], RANDOM_FAILURE_RATIO="1"
    ) + start_replicas(procs, tmp_path / "b", ["inventory-steady"], RANDOM_FAILURE_RATIO="0")
    for _ in range(5):
        assert always.http.get("/random-endpoint").status_code == 500
        ok = never.http.get("/random-endpoint")
        assert ok.status_code == 200 and ok.json()["ok"] is True
    entries = always.logs(seconds=60)
    assert len(entries) == 5 and {entry["exception_type"] for entry in entries} == {"TimeoutError"}
    assert entries[0]["route"] == "/random-endpoint" and entries[0]["function"] == "call_recommendation_dependency"
    assert never.logs(seconds=60) == []


def test_errors_fault_counts_errors_by_route_template_and_logs_injected_fault(procs, tmp_path):
    (replica,) = start_replicas(procs, tmp_path, ["inventory-err"])
    state = replica.set_fault(mode="errors", p_error=1)
    assert state["mode"] == "errors" and state["p_error"] == 1.0 and state["replica"] == "inventory-err"
    for item_id in (1, 2, 3):
        response = replica.http.get(f"/items/{item_id}")
        assert response.status_code == 500 and response.json() == {"detail": "injected fault: errors"}
    for path in ("/healthz", "/metrics", "/faults", "/logs/tail"):
        assert replica.http.get(path).status_code == 200, path
    assert replica.http.get("/healthz").json()["fault"]["mode"] == "errors"

    samples = replica.metrics()
    assert metric(samples, "http_errors_total", route=ITEM_ROUTE, method="GET", status="500", service="inventory") == 3
    entries = replica.logs(seconds=60)
    assert len(entries) == 3
    assert all(entry["exception_type"] == "InjectedFault" and entry["fault"] == "errors" for entry in entries)
    assert entries[0]["message"] == "injected fault: errors (p_error=1.0)" and entries[0]["route"] == ITEM_ROUTE

    assert replica.set_fault(mode="none") == {
        "mode": "none",
        "since": pytest.approx(time.time(), abs=30),
        "replica": "inventory-err",
    }
    assert replica.http.get("/items/1").status_code == 200
    assert metric(replica.metrics(), "http_errors_total") == 3


def test_latency_fault_grows_the_duration_histogram(procs, tmp_path):
    (replica,) = start_replicas(procs, tmp_path, ["inventory-slow"])
    replica.http.get("/items/1")
    samples = replica.metrics()
    before = metric(samples, "http_request_duration_seconds_sum", route=ITEM_ROUTE)
    fast_before = metric(samples, "http_request_duration_seconds_bucket", route=ITEM_ROUTE, le="0.25")
    assert replica.set_fault(mode="latency", latency_ms=300)["latency_ms"] == 300
    for _ in range(3):
        assert replica.http.get("/items/1").status_code == 200
    samples = replica.metrics()
    # asyncio.sleep never returns early, so each request lasted at least 0.3 s (bucket le=0.25 unchanged).
    assert metric(samples, "http_request_duration_seconds_sum", route=ITEM_ROUTE) - before >= 0.9 * 0.99
    assert metric(samples, "http_request_duration_seconds_bucket", route=ITEM_ROUTE, le="0.25") == fast_before
    replica.set_fault(mode="none")
    assert replica.http.get("/faults").json()["mode"] == "none"


def test_cpu_fault_burns_process_cpu(procs, tmp_path):
    (replica,) = start_replicas(procs, tmp_path, ["inventory-cpu"])
    before = metric(replica.metrics(), "process_cpu_seconds_total")
    replica.set_fault(mode="cpu", cpu_ms=300)
    for _ in range(5):
        assert replica.http.get("/items/2").status_code == 200
    samples = replica.metrics()
    # 1.5 s of busy loop; on a shared 2-core machine the process still gets well over 20 % of it.
    assert metric(samples, "process_cpu_seconds_total") - before >= 0.3
    assert metric(samples, "http_request_duration_seconds_sum", route=ITEM_ROUTE) >= 5 * 0.3
    replica.set_fault(mode="none")


def test_a_replica_burning_cpu_still_answers_its_scrape(procs, tmp_path):
    """Prometheus scrapes every 2 s with a 2 s timeout (demo timing): while ten requests burn 300 ms of CPU
    each on worker threads (3 s of work queued), /metrics still answers within the timeout, so the CPU alert
    can see the CPU."""
    (replica,) = start_replicas(procs, tmp_path, ["inventory-busy"])
    replica.set_fault(mode="cpu", cpu_ms=300)
    with ThreadPoolExecutor(max_workers=10) as pool:
        burns = [pool.submit(replica.http.get, "/items/3") for _ in range(10)]
        time.sleep(0.3)  # the burns have started
        scrape = httpx.get(f"{replica.url}/metrics", timeout=2.0)
        assert scrape.status_code == 200 and not all(burn.done() for burn in burns)
        assert all(burn.result().status_code == 200 for burn in burns)
    replica.set_fault(mode="none")


def test_a_stalled_replica_answers_no_scrape_until_its_event_loop_is_free(procs, tmp_path):
    """The stall fault burns on the event loop: with three 800 ms burns queued, a scrape waits behind them
    (times out at 1 s), then the replica answers again."""
    (replica,) = start_replicas(procs, tmp_path, ["inventory-stall"])
    replica.set_fault(mode="stall", stall_ms=800)
    with ThreadPoolExecutor(max_workers=3) as pool:
        burns = [pool.submit(replica.http.get, "/items/3") for _ in range(3)]
        time.sleep(0.3)  # the first burn holds the loop
        with pytest.raises(httpx.TimeoutException):
            httpx.get(f"{replica.url}/metrics", timeout=1.0)
        assert all(burn.result().status_code == 200 for burn in burns)
    assert httpx.get(f"{replica.url}/metrics", timeout=2.0).status_code == 200
    replica.set_fault(mode="none")


def test_the_modelled_backend_caps_a_replica_at_connections_per_backend_time(procs, tmp_path):
    """2 backend connections held 200 ms each serve at most 10 requests/s: six concurrent requests need three
    waves (>= 0.6 s), the queue shows in the duration histogram, and /metrics is not queued behind them."""
    (replica,) = start_replicas(procs, tmp_path, ["inventory-pool"], BACKEND_CONNECTIONS="2", BACKEND_TIME_MS="200")
    before = metric(replica.metrics(), "http_request_duration_seconds_count", route=ITEM_ROUTE)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=6) as pool:
        requests = [pool.submit(replica.http.get, "/items/4") for _ in range(6)]
        time.sleep(0.1)  # all six are queued or holding a connection
        scrape = httpx.get(f"{replica.url}/metrics", timeout=2.0)
        assert scrape.status_code == 200 and not any(request.done() for request in requests)
        assert all(request.result().status_code == 200 for request in requests)
    assert time.perf_counter() - started >= 0.6
    samples = replica.metrics()
    assert metric(samples, "http_request_duration_seconds_count", route=ITEM_ROUTE) - before == 6
    # asyncio.sleep never returns early: no request took under 200 ms, and at least two waited a wave or more
    assert metric(samples, "http_request_duration_seconds_bucket", route=ITEM_ROUTE, le="0.1") == 0
    slow = metric(samples, "http_request_duration_seconds_count", route=ITEM_ROUTE) - metric(
        samples, "http_request_duration_seconds_bucket", route=ITEM_ROUTE, le="0.25"
    )
    assert slow >= 4


@pytest.mark.parametrize("setting", [{"BACKEND_CONNECTIONS": "0"}, {"BACKEND_TIME_MS": "-1"}])
def test_an_invalid_backend_model_refuses_to_start(tmp_path, setting):
    env = {**os.environ, **setting, "LOG_DIR": str(tmp_path), "INVENTORY_DB": str(tmp_path / "db")}
    result = subprocess.run(
        [PYTHON, str(SERVICE_FILE), "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert next(iter(setting)).lower() in result.stderr


def test_oom_safe_fault_grows_resident_memory_up_to_the_cap(procs, tmp_path):
    (replica,) = start_replicas(procs, tmp_path, ["inventory-mem"])
    mib = 1024 * 1024
    baseline = metric(replica.metrics(), "process_resident_memory_bytes")
    state = replica.set_fault(mode="oom_safe", step_mb=8, max_mb=24)
    assert (state["step_mb"], state["max_mb"], state["retained_mb"]) == (8, 24, 0)
    for expected_mb in (8, 16, 24):
        assert replica.http.get("/items/3").status_code == 200
        assert replica.http.get("/faults").json()["retained_mb"] == expected_mb
    at_cap = metric(replica.metrics(), "process_resident_memory_bytes")
    assert at_cap - baseline >= 20 * mib
    for _ in range(4):
        assert replica.http.get("/items/3").status_code == 200
    assert replica.http.get("/faults").json()["retained_mb"] == 24
    assert metric(replica.metrics(), "process_resident_memory_bytes") - at_cap < 8 * mib
    assert "retained_mb" not in replica.set_fault(mode="none")


def test_crash_fault_answers_then_exits_with_code_3(procs, tmp_path):
    (replica,) = start_replicas(procs, tmp_path, ["inventory-crash"])
    assert replica.set_fault(mode="crash")["mode"] == "crash"
    assert replica.proc.wait(timeout=10) == 3
    crash_logs = [json.loads(line) for line in replica.log_file.read_text().splitlines()]
    assert [entry["message"] for entry in crash_logs] == ["injected fault: crash (process exits with code 3)"]
    assert crash_logs[0]["replica"] == "inventory-crash" and crash_logs[0]["fault"] == "crash"


INVALID_FAULTS = [
    ({"mode": "latency", "latency_ms": 0}, "latency_ms"),
    ({"mode": "latency", "latency_ms": 30001}, "latency_ms"),
    ({"mode": "errors", "p_error": 1.5}, "p_error"),
    ({"mode": "cpu", "cpu_ms": 2001}, "cpu_ms"),
    ({"mode": "stall", "cpu_ms": 100}, "cpu_ms"),
    ({"mode": "stall", "stall_ms": 0}, "stall_ms"),
    ({"mode": "oom_safe", "step_mb": 65}, "step_mb"),
    ({"mode": "oom_safe", "max_mb": 0}, "max_mb"),
    ({"mode": "explode"}, "mode"),
    ({"latency_ms": 100}, "mode"),
    ({"mode": "none", "colour": "red"}, "colour"),
    ({"mode": "latency", "p_error": 0.3}, "p_error does not apply to mode 'latency'"),
]


def test_invalid_fault_parameters_are_rejected_with_the_reason(procs, tmp_path):
    (replica,) = start_replicas(procs, tmp_path, ["inventory-val"])
    for body, reason in INVALID_FAULTS:
        response = replica.http.post("/faults", json=body)
        assert response.status_code == 422, body
        assert reason in json.dumps(response.json()["detail"]), (body, response.text)
    assert replica.http.get("/faults").json()["mode"] == "none"
    assert replica.set_fault(mode="latency")["latency_ms"] == 800
    defaults = replica.set_fault(mode="oom_safe")
    assert (defaults["step_mb"], defaults["max_mb"]) == (16, 256)


def test_fault_spec_model_fills_defaults_of_its_mode_only():
    spec = FaultSpec(mode="errors")
    assert spec.params() == {"p_error": 0.5}
    assert spec.model_dump(exclude_none=True) == {"mode": "errors", "p_error": 0.5}
    assert FaultSpec(**spec.model_dump()).params() == {"p_error": 0.5}


def write_old_entries(log_file: Path, count: int, age_s: float) -> None:
    """Pre-populate the shared log with ``count`` entries ``age_s`` seconds old and one garbage line."""
    log_file.parent.mkdir(parents=True)
    old_ts = time.time() - age_s
    lines = [
        json.dumps({"ts": old_ts + index * 1e-3, "level": "ERROR", "replica": "inventory-old", "message": "x" * 200})
        for index in range(count)
    ]
    log_file.write_text("\n".join(lines) + "\nnot json\n")


def test_logs_tail_filters_by_seconds_limit_and_replica(procs, tmp_path):
    write_old_entries(tmp_path / "logs" / "inventory_common.log", count=600, age_s=1000)
    first, second = start_replicas(procs, tmp_path, ["inventory-l1", "inventory-l2"])
    for replica, errors in ((first, 3), (second, 2)):
        for _ in range(errors):
            assert replica.http.get("/random-endpoint/error").status_code == 500

    recent = first.logs(seconds=300)
    assert len(recent) == 5 and {entry["replica"] for entry in recent} == {"inventory-l1", "inventory-l2"}
    assert [entry["ts"] for entry in recent] == sorted((entry["ts"] for entry in recent), reverse=True)
    assert [entry["replica"] for entry in second.logs(seconds=300, replica="inventory-l1")] == ["inventory-l1"] * 3
    newest_two = first.logs(seconds=300, limit=2)
    assert newest_two == recent[:2]
    everything = first.logs(seconds=2000, limit=10000)
    assert len(everything) == 605 and everything[-1]["replica"] == "inventory-old"
    assert first.http.get("/logs/tail", params={"seconds": 2000, "limit": 10}).json()["count"] == 10

    for params in (
        {"seconds": 0},
        {"seconds": 86401},
        {"limit": 0},
        {"limit": 10001},
        {"seconds": "abc"},
        {"replica": ""},
    ):
        response = first.http.get("/logs/tail", params=params)
        assert response.status_code == 422, params
        assert list(params)[0] in json.dumps(response.json()["detail"])


@pytest.mark.parametrize("block_size", [1, 7, 64 * 1024])
def test_iter_lines_reversed_handles_block_boundaries(tmp_path, block_size):
    path = tmp_path / "lines.log"
    lines = [f"line-{index}-" + "y" * (index % 13) for index in range(50)]
    path.write_text("\n".join(lines) + "\n\n")
    assert [line.decode() for line in iter_lines_reversed(path, block_size=block_size)] == lines[::-1]
