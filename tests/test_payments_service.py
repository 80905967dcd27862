"""Tests of payments_service.py against one real instance (``python payments_service.py --port P``).

The instance runs for the whole module with a small LOG_MAX_BYTES, so its plain-text log rotates
during the tests and every log assertion reads through rotation (tests/payments_support.py).
Tests that inject a fault reset it afterwards (autouse fixture).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

import payments_service
from payments_service import FaultSpec, PaymentsSettings, settle, to_minor_units
from tests.payments_support import (
    HEADER,
    SERVICE_FILE,
    PaymentsInstance,
    bug_line,
    label_names,
    label_sets,
    label_values,
    metric,
    start_instances,
)
from tests.support import ProcessGroup

LOG_MAX_BYTES = 8192
LOG_BACKUP_COUNT = 3
VERSION = "2.7.1-test"
PAYMENT = {"amount": "12.34", "currency": "EUR", "customer_id": "cus-7"}
JPY_PAYMENT = {"amount": "1200", "currency": "JPY", "customer_id": "cus-8"}


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PaymentsInstance]:
    tmp_path = tmp_path_factory.mktemp("payments")
    procs = ProcessGroup(tmp_path / "proc-logs")
    try:
        (started,) = start_instances(
            procs,
            tmp_path,
            ["payments-t1"],
            SERVICE_VERSION=VERSION,
            LOG_MAX_BYTES=str(LOG_MAX_BYTES),
            LOG_BACKUP_COUNT=str(LOG_BACKUP_COUNT),
        )
        yield started
    finally:
        procs.stop_all()


@pytest.fixture(autouse=True)
def no_fault_after(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "instance" in request.fixturenames:
        request.getfixturevalue("instance").set_fault(mode="none")


# ---------------------------------------------------------------- business endpoints


def test_create_and_read_a_payment(instance: PaymentsInstance) -> None:
    created = instance.http.post("/payments", json=PAYMENT)
    assert created.status_code == 201, created.text
    payment = created.json()
    # 12.34 EUR = 1234 euro cents; 12.34 * 1.08 = 13.3272 USD -> 1333 US cents (half-even)
    assert {key: payment[key] for key in ("status", "amount", "currency", "amount_minor", "settled_usd_cents")} == {
        "status": "captured",
        "amount": "12.34",
        "currency": "EUR",
        "amount_minor": 1234,
        "settled_usd_cents": 1333,
    }
    assert payment["customer_id"] == "cus-7" and payment["instance"] == "payments-t1"
    assert abs(payment["created_at"] - time.time()) < 30
    assert instance.http.get(f"/payments/{payment['id']}").json() == payment
    captured = [r for r in instance.records() if r.message.startswith(f"payment {payment['id']} captured")]
    assert len(captured) == 1 and captured[0].level == "INFO" and captured[0].logger == "payments.api"
    assert "12.34 EUR (1234 minor units), settled 1333 USD cents, customer cus-7" in captured[0].message


def test_invalid_requests_get_4xx_with_the_reason(instance: PaymentsInstance) -> None:
    invalid = {
        "amount": {**PAYMENT, "amount": "0"},
        "decimal_places": {**PAYMENT, "amount": "1.005"},
        "currency": {**PAYMENT, "currency": "CHF"},
        "customer_id": {**PAYMENT, "customer_id": "../etc"},
        "extra": {**PAYMENT, "card_number": "4242424242424242"},
    }
    for case, body in invalid.items():
        response = instance.http.post("/payments", json=body)
        assert response.status_code == 422, (case, response.text)
        assert response.json()["detail"][0]["msg"], case
    assert (
        instance.http.post("/payments", content=b"{not json", headers={"content-type": "application/json"}).status_code
        == 422
    )
    assert instance.http.get("/payments/0").status_code == 422
    missing = instance.http.get("/payments/987654321")
    assert missing.status_code == 404 and missing.json() == {"detail": "payment 987654321 not found"}


def test_version_over_http_not_as_a_metric(instance: PaymentsInstance) -> None:
    assert instance.http.get("/version").json() == {"service": "payments", "version": VERSION}
    health = instance.http.get("/healthz").json()
    assert health["status"] == "ok" and health["instance"] == "payments-t1" and health["fault"]["mode"] == "none"
    assert "build_info" not in instance.http.get("/metrics").text


# ---------------------------------------------------------------- metrics


def _traffic_deltas(instance: PaymentsInstance) -> Callable[..., float]:
    """Send one 201, one 404 and one 5xx; return ``delta(name, **labels)`` of the metrics over them."""
    before = instance.metrics()
    assert instance.http.post("/payments", json=PAYMENT).status_code == 201
    assert instance.http.get("/payments/987654321").status_code == 404
    assert instance.http.post("/payments", json=JPY_PAYMENT).status_code == 500
    after = instance.metrics()
    return lambda name, **labels: metric(after, name, **labels) - metric(before, name, **labels)


def test_requests_counted_by_route_template_and_grouped_status(instance: PaymentsInstance) -> None:
    delta = _traffic_deltas(instance)
    # counter http_requests_total{handler, method, status}: route template, status grouped by class
    assert delta("http_requests_total", handler="/payments", method="POST", status="2xx") == 1
    assert delta("http_requests_total", handler="/payments", method="POST", status="5xx") == 1
    assert delta("http_requests_total", handler="/payments/{payment_id}", method="GET", status="4xx") == 1
    statuses = label_values(instance.metrics(), "http_requests_total", "status")
    assert statuses <= {"2xx", "3xx", "4xx", "5xx"} and {"2xx", "4xx", "5xx"} <= statuses


def test_latency_histograms_and_size_summaries(instance: PaymentsInstance) -> None:
    delta = _traffic_deltas(instance)
    samples = instance.metrics()
    # histogram http_request_duration_seconds{handler, method}, buckets 0.1 / 0.5 / 1 s
    assert delta("http_request_duration_seconds_count", handler="/payments", method="POST") == 2
    assert label_values(samples, "http_request_duration_seconds_bucket", "le") == {"0.1", "0.5", "1.0", "+Inf"}
    # label-free histogram with many buckets (for percentiles)
    assert delta("http_request_duration_highr_seconds_count") >= 3
    assert label_sets(samples, "http_request_duration_highr_seconds_bucket") == {frozenset({"le"})}
    assert len(label_values(samples, "http_request_duration_highr_seconds_bucket", "le")) == 22
    # request / response size summaries by handler
    assert delta("http_request_size_bytes_count", handler="/payments") == 2
    assert delta("http_response_size_bytes_count", handler="/payments/{payment_id}") == 1


def test_metric_families_are_exactly_the_instrumentator_and_client_defaults(instance: PaymentsInstance) -> None:
    text = instance.http.get("/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    http = {name for name in families if name.startswith("http_") and not name.endswith("_created")}
    assert {name: label_names(families[name]) for name in http} == {
        "http_requests": {"handler", "method", "status"},
        "http_request_size_bytes": {"handler"},
        "http_response_size_bytes": {"handler"},
        "http_request_duration_highr_seconds": {"le"},
        "http_request_duration_seconds": {"handler", "method", "le"},
    }
    assert families["http_requests"].type == "counter"  # exposed as http_requests_total
    assert families["http_request_duration_seconds"].type == "histogram"
    assert families["http_request_size_bytes"].type == "summary"
    # prometheus_client's default collectors: process, platform, GC; nothing of the inventory's own metrics
    samples = instance.metrics()
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_start_time_seconds"):
        assert metric(samples, name) > 0, name
    assert metric(samples, "python_info") == 1 and "python_gc_collections" in families
    assert "http_errors_total" not in text


# ---------------------------------------------------------------- the currency-conversion bug


def test_jpy_payment_raises_a_real_keyerror_logged_with_its_traceback(instance: PaymentsInstance) -> None:
    response = instance.http.post("/payments", json=JPY_PAYMENT)
    assert response.status_code == 500 and response.json() == {"detail": "internal server error"}
    (record,) = [r for r in instance.records() if r.level == "ERROR" and "KeyError" in r.message][-1:]
    assert record.message == "unhandled KeyError in POST /payments: 'JPY'"
    assert record.logger == "payments.api" and record.instance == "payments-t1"
    lines = record.continuation
    assert lines[0] == "Traceback (most recent call last):" and lines[-1] == "KeyError: 'JPY'"
    frame = f'  File "{SERVICE_FILE}", line {bug_line()}, in to_minor_units'
    assert frame in lines, record.traceback
    # the full traceback: framework frames, then the request handler and the conversion path
    assert any("site-packages/starlette" in line for line in lines)
    assert lines.index(frame) > max(i for i, line in enumerate(lines) if ", in create_payment" in line)
    assert any(", in settle" in line for line in lines)


def test_conversion_functions() -> None:
    assert to_minor_units(Decimal("12.34"), "USD") == 1234
    assert to_minor_units(Decimal("0.125"), "EUR") == 12  # half-even
    assert settle(Decimal("10"), "GBP") == (1000, 1270)
    with pytest.raises(KeyError, match="JPY") as raised:
        settle(Decimal("500"), "JPY")
    assert raised.traceback[-1].lineno + 1 == bug_line()  # pytest's lineno is 0-based


# ---------------------------------------------------------------- fault injection


def test_errors_fault_fails_business_routes_only(instance: PaymentsInstance) -> None:
    state = instance.set_fault(mode="errors", p_error=1.0)
    assert state["mode"] == "errors" and state["p_error"] == 1.0 and state["instance"] == "payments-t1"
    assert instance.http.get("/admin/faults").json() == state
    for _ in range(5):
        response = instance.http.post("/payments", json=PAYMENT)
        assert response.status_code == 500 and response.json() == {"detail": "injected fault: errors"}
    assert instance.http.get("/payments/1").status_code == 500
    assert instance.http.get("/healthz").json()["fault"]["mode"] == "errors"
    assert instance.http.get("/version").status_code == 200 and instance.http.get("/metrics").status_code == 200
    instance.set_fault(mode="none")
    assert instance.http.post("/payments", json=PAYMENT).status_code == 201


def test_errors_fault_is_logged_as_one_line_without_traceback(instance: PaymentsInstance) -> None:
    instance.set_fault(mode="errors", p_error=1.0)
    assert instance.http.get("/payments/1").status_code == 500
    records = instance.records()
    injected = [r for r in records if r.message.startswith("injected fault: errors (p_error=1.0)")]
    assert injected[-1].message == "injected fault: errors (p_error=1.0): GET /payments/{payment_id} answered 500"
    assert all(r.level == "ERROR" and r.logger == "payments.faults" and not r.continuation for r in injected)
    changes = [r for r in records if r.message == "fault injection set to errors {'p_error': 1.0}"]
    assert changes and changes[-1].level == "WARNING"


def test_errors_fault_fails_with_its_probability(instance: PaymentsInstance) -> None:
    instance.set_fault(mode="errors", p_error=0.5)
    outcomes = Counter(instance.http.post("/payments", json=PAYMENT).status_code for _ in range(200))
    assert set(outcomes) == {201, 500} and 60 <= outcomes[500] <= 140, outcomes


def test_latency_fault_delays_business_routes(instance: PaymentsInstance) -> None:
    assert instance.set_fault(mode="latency", latency_ms=400)["latency_ms"] == 400
    before = instance.metrics()
    started = time.perf_counter()
    assert instance.http.post("/payments", json=PAYMENT).status_code == 201
    assert time.perf_counter() - started >= 0.4
    fast = time.perf_counter()
    assert instance.http.get("/healthz").status_code == 200
    assert time.perf_counter() - fast < 0.4
    after = instance.metrics()
    slow = metric(after, "http_request_duration_highr_seconds_bucket", le="+Inf") - metric(
        after, "http_request_duration_highr_seconds_bucket", le="0.25"
    )
    slow_before = metric(before, "http_request_duration_highr_seconds_bucket", le="+Inf") - metric(
        before, "http_request_duration_highr_seconds_bucket", le="0.25"
    )
    assert slow - slow_before == 1


def test_fault_requests_are_validated(instance: PaymentsInstance) -> None:
    invalid = [
        {"mode": "latency", "p_error": 0.5},
        {"mode": "errors", "p_error": 1.5},
        {"mode": "latency", "latency_ms": 0},
        {"mode": "crash"},
        {"mode": "none", "note": "x"},
    ]
    for body in invalid:
        response = instance.http.post("/admin/faults", json=body)
        assert response.status_code == 422, (body, response.text)
    reason = instance.http.post("/admin/faults", json={"mode": "latency", "p_error": 0.5}).json()["detail"][0]["msg"]
    assert "p_error does not apply to mode 'latency'" in reason
    assert instance.http.get("/admin/faults").json()["mode"] == "none"
    assert FaultSpec(mode="errors").params() == {"p_error": 0.5}
    assert FaultSpec(mode="latency").params() == {"latency_ms": 1500}


# ---------------------------------------------------------------- plain-text, rotated log


def _assert_plain_text_file(path: Path) -> None:
    """Every line is a record header or a traceback line, none a JSON document; the size stays near the limit."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert HEADER.match(lines[0]), (path.name, lines[0])
    for line in lines:
        with pytest.raises(ValueError):
            json.loads(line)
    # a file only grows past the limit by the one record that did not fit in the previous file
    assert len(text.encode()) <= LOG_MAX_BYTES + 8 * 1024, path.name


def test_log_is_plain_text_with_tracebacks_and_rotates(instance: PaymentsInstance) -> None:
    for _ in range(3):
        assert instance.http.post("/payments", json=JPY_PAYMENT).status_code == 500
    for _ in range(40):
        assert instance.http.post("/payments", json=PAYMENT).status_code == 201
    files = [path.name for path in sorted(instance.log_dir.iterdir())]
    assert files == ["payments-t1.log"] + [f"payments-t1.log.{n}" for n in range(1, LOG_BACKUP_COUNT + 1)], files
    for path in instance.log_dir.iterdir():
        _assert_plain_text_file(path)
    records = instance.records()
    timestamps = [r.timestamp for r in records]
    assert timestamps == sorted(timestamps)  # oldest file first, in write order
    assert records[-1].message.startswith("payment ") and records[-1].level == "INFO"
    assert {r.instance for r in records} == {"payments-t1"}
    tracebacks = [r.continuation[-1] for r in records if r.continuation]
    assert tracebacks and set(tracebacks) == {"KeyError: 'JPY'"}


# ---------------------------------------------------------------- settings


def test_settings_instance_name_and_validation(tmp_path: Path) -> None:
    assert PaymentsSettings(port=8201).instance_name == "payments-1"
    assert PaymentsSettings(port=8209).instance_name == "payments-9"
    assert PaymentsSettings(port=18201).instance_name == "payments-18201"
    named = PaymentsSettings(port=8201, instance="payments-eu-1", log_dir=tmp_path)
    assert named.instance_name == "payments-eu-1" and named.log_file == tmp_path / "payments-eu-1.log"
    for bad in ({"instance": "../etc/passwd"}, {"port": 0}, {"log_max_bytes": 10}, {"log_backup_count": 0}):
        with pytest.raises(ValidationError):
            PaymentsSettings(**bad)
    assert payments_service.LOG_FORMAT == "%(asctime)s.%(msecs)03dZ %(levelname)s %(instance)s %(name)s: %(message)s"
