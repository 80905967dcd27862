"""Tests of traffic_gen.py: rate profiles, request mix, open-loop measurement, CLI end to end.

The HTTP target is a tiny aiohttp server (SERVER_SOURCE) that counts every request it answers
by (method, route template, status), so the generator's summary can be compared with what the
server really received. /__stats returns those counts and is not counted itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import signal
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from pydantic import ValidationError

import traffic_gen
from payments_service import PaymentRequest
from tests.payments_support import PaymentsInstance, metric, start_instances
from tests.support import PYTHON, REPO_ROOT, free_port, wait_http_ok, wait_until
from traffic_gen import (
    RunConfig,
    choose_inventory_request,
    choose_payments_request,
    choose_request,
    config_from_args,
    phase_at,
    rate_at,
    send_offsets,
)

SERVER_SOURCE = """
import asyncio, os, re, sys
from collections import Counter
from aiohttp import web

counts = Counter()
DELAY_S = float(os.environ.get("DELAY_S", "0"))

async def stats(request):
    return web.json_response({f"{m} {r} {s}": n for (m, r, s), n in counts.items()})

async def handle(request):
    route = re.sub(r"^/items/\\d+$", "/items/{item_id}", request.path)
    status = 500 if request.path == "/random-endpoint/error" else 200
    if request.method == "PUT":
        await request.json()
    await asyncio.sleep(DELAY_S)
    counts[(request.method, route, status)] += 1
    return web.json_response({"ok": status == 200}, status=status)

app = web.Application()
app.router.add_get("/__stats", stats)
app.router.add_route("*", "/{tail:.*}", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def _config(profile: str, **overrides: float) -> RunConfig:
    values = {"url": "http://127.0.0.1:1", "profile": profile, "rps": 10.0, "duration": 30.0, **overrides}
    return RunConfig(**values)


# ---------------------------------------------------------------- rate profiles


@pytest.mark.parametrize(
    ("profile", "t", "expected"),
    [
        ("constant", 0.0, 10.0),
        ("constant", 29.9, 10.0),
        ("constant", 30.0, 0.0),
        ("constant", -1.0, 0.0),
        ("spike", 9.9, 10.0),
        ("spike", 10.0, 50.0),
        ("spike", 19.9, 50.0),
        ("spike", 20.0, 10.0),
        ("ramp", 0.0, 0.0),
        ("ramp", 15.0, 5.0),
        ("ramp", 27.0, 9.0),
        ("sine", 0.0, 10.0),
        ("sine", 7.5, 15.0),
        ("sine", 15.0, 10.0),
        ("sine", 22.5, 5.0),
        # ramp-spike, D=30: ramp 0->10 over 15 s, then 10 / 50 (20..25 s) / 10
        ("ramp-spike", 7.5, 5.0),
        ("ramp-spike", 15.0, 10.0),
        ("ramp-spike", 19.9, 10.0),
        ("ramp-spike", 20.0, 50.0),
        ("ramp-spike", 24.9, 50.0),
        ("ramp-spike", 25.0, 10.0),
    ],
)
def test_rate_at_profiles(profile: str, t: float, expected: float) -> None:
    assert rate_at(profile, t, _config(profile)) == pytest.approx(expected)


def test_rate_at_agentic_phases() -> None:
    config = _config("agentic", normal_rps=20, normal_duration=10, error_rps=40, error_duration=15, duration=40)
    assert rate_at("agentic", 0.0, config) == 20
    assert rate_at("agentic", 9.9, config) == 20
    assert rate_at("agentic", 10.0, config) == 40
    assert rate_at("agentic", 24.9, config) == 40
    assert rate_at("agentic", 25.0, config) == 0  # after the error phase, before the hard stop
    assert [phase_at(config, t) for t in (0, 9.9, 10, 30)] == ["normal", "normal", "error", "error"]
    assert phase_at(_config("constant"), 25.0) == "normal"


def test_rate_at_unknown_profile() -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        rate_at("square", 1.0, _config("constant"))


@pytest.mark.parametrize("profile", traffic_gen.PROFILES)
def test_send_offsets_follow_the_rate_integral(profile: str) -> None:
    config = _config(profile, rps=20, duration=12, normal_rps=5, normal_duration=4, error_rps=30, error_duration=6)
    offsets = list(send_offsets(config))
    expected_total = sum(rate_at(profile, (i + 0.5) / 1000, config) for i in range(12_000)) / 1000
    assert abs(len(offsets) - expected_total) <= 1.5
    assert offsets == sorted(offsets)
    assert offsets[0] >= 0 and offsets[-1] < config.duration
    # requests per second of schedule track the rate function second by second
    per_second = Counter(int(offset) for offset in offsets)
    for second in range(12):
        expected = sum(rate_at(profile, second + (i + 0.5) / 100, config) for i in range(100)) / 100
        assert abs(per_second[second] - expected) <= 1.5, (second, per_second[second], expected)


def test_spike_burst_is_five_times_base() -> None:
    offsets = list(send_offsets(_config("spike", rps=10, duration=30)))
    per_second = Counter(int(offset) for offset in offsets)
    thirds = [sum(per_second[s] for s in range(start, start + 10)) for start in (0, 10, 20)]
    assert [pytest.approx(n, abs=1) for n in thirds] == [100, 500, 100]


# ---------------------------------------------------------------- request mix


def test_error_phase_sends_80_percent_to_error_endpoint() -> None:
    rng = random.Random(1234)
    draws = [choose_request(rng, "error") for _ in range(20_000)]
    share = sum(spec.path == "/random-endpoint/error" for spec in draws) / len(draws)
    assert share == pytest.approx(0.8, abs=0.015)
    # the remaining 20% keep the normal mix
    rest = Counter(spec.route for spec in draws if spec.path != "/random-endpoint/error")
    assert set(rest) == {"/items/{item_id}", "/random-endpoint"}


def test_normal_mix_shares_and_bodies() -> None:
    rng = random.Random(99)
    draws = [choose_request(rng, "normal") for _ in range(20_000)]
    shares = Counter(f"{spec.method} {spec.route}" for spec in draws)
    assert shares["GET /items/{item_id}"] / len(draws) == pytest.approx(0.75, abs=0.015)
    assert shares["PUT /items/{item_id}"] / len(draws) == pytest.approx(0.05, abs=0.01)
    assert shares["GET /random-endpoint"] / len(draws) == pytest.approx(0.20, abs=0.015)
    assert "GET /random-endpoint/error" not in shares
    ids = {int(spec.path.rsplit("/", 1)[1]) for spec in draws if spec.route == "/items/{item_id}"}
    assert min(ids) == 1 and max(ids) == 100
    for spec in draws:
        if spec.method == "PUT":
            assert spec.body is not None and spec.body["quantity"] >= 0 and spec.body["price"] >= 0
        else:
            assert spec.body is None


def test_seed_makes_the_mix_reproducible() -> None:
    rng_a, rng_b = random.Random(5), random.Random(5)
    assert [choose_request(rng_a, "error") for _ in range(200)] == [choose_request(rng_b, "error") for _ in range(200)]


def test_inventory_mix_is_the_default() -> None:
    rng_a, rng_b, rng_c = random.Random(8), random.Random(8), random.Random(8)
    default = [choose_request(rng_a, "error") for _ in range(300)]
    assert default == [choose_request(rng_b, "error", "inventory") for _ in range(300)]
    assert default == [choose_inventory_request(rng_c, "error") for _ in range(300)]
    assert RunConfig(url="http://127.0.0.1:1").mix == "inventory"


def test_payments_normal_mix_shares() -> None:
    rng = random.Random(21)
    draws = [choose_payments_request(rng, "normal") for _ in range(20_000)]
    shares = Counter(f"{spec.method} {spec.route}" for spec in draws)
    assert set(shares) == {"POST /payments", "GET /payments/{payment_id}"}
    assert shares["POST /payments"] / len(draws) == pytest.approx(0.80, abs=0.015)
    currencies = Counter(spec.body["currency"] for spec in draws if spec.body)
    assert set(currencies) == {"USD", "EUR", "GBP"}
    assert currencies["USD"] / shares["POST /payments"] == pytest.approx(0.5, abs=0.02)
    assert currencies["EUR"] / shares["POST /payments"] == pytest.approx(0.3, abs=0.02)
    ids = {int(spec.path.rsplit("/", 1)[1]) for spec in draws if spec.method == "GET"}
    assert min(ids) == 1 and max(ids) == 100


def test_payments_bodies_match_the_service_model() -> None:
    rng = random.Random(22)
    for phase in ("normal", "error"):
        for _ in range(2000):
            spec = choose_payments_request(rng, phase)
            if spec.method == "POST":
                assert spec.path == "/payments" and spec.body is not None
                PaymentRequest.model_validate(spec.body)  # valid for the real service's request model
            else:
                assert spec.body is None


def test_payments_error_phase_sends_80_percent_jpy_charges() -> None:
    rng = random.Random(4)
    draws = [choose_request(rng, "error", "payments") for _ in range(20_000)]
    jpy = [spec for spec in draws if spec.body and spec.body["currency"] == "JPY"]
    assert len(jpy) / len(draws) == pytest.approx(0.8, abs=0.015)
    assert all(spec.method == "POST" and spec.path == "/payments" for spec in jpy)
    # the remaining 20% keep the normal mix, which never charges in JPY
    rest = Counter(spec.route for spec in draws if not (spec.body and spec.body["currency"] == "JPY"))
    assert set(rest) == {"/payments", "/payments/{payment_id}"}
    normal = [choose_payments_request(rng, "normal") for _ in range(2000)]
    assert not [spec for spec in normal if spec.body and spec.body["currency"] == "JPY"]


# ---------------------------------------------------------------- config


def test_config_validation_and_agentic_default_duration() -> None:
    with pytest.raises(ValidationError, match="http"):
        RunConfig(url="ftp://127.0.0.1")
    with pytest.raises(ValidationError):
        RunConfig(url="http://127.0.0.1", rps=0)
    parser = traffic_gen.build_parser()
    args = parser.parse_args(
        ["--url", "http://127.0.0.1:9/", "--profile", "agentic", "--normal-duration", "5", "--error-duration", "7"]
    )
    config = config_from_args(args)
    assert config.duration == 12 and config.url == "http://127.0.0.1:9"
    assert config.urls == ("http://127.0.0.1:9",) and config.mix == "inventory"
    assert config_from_args(parser.parse_args(["--url", "http://127.0.0.1:9"])).duration == 60
    several = config_from_args(
        parser.parse_args(["--mix", "payments", "--url", "http://127.0.0.1:8201/", "--url", "http://127.0.0.1:8202"])
    )
    assert several.urls == ("http://127.0.0.1:8201", "http://127.0.0.1:8202") and several.mix == "payments"
    with pytest.raises(ValidationError, match="http"):
        RunConfig(url="http://127.0.0.1", extra_urls=("ftp://127.0.0.1",))
    with pytest.raises(SystemExit):
        parser.parse_args(["--url", "http://127.0.0.1:9", "--mix", "orders"])


# ---------------------------------------------------------------- open loop, in process


@contextlib.asynccontextmanager
async def _slow_app(delay_s: float) -> AsyncIterator[tuple[str, Counter]]:
    """An in-process server answering 200 after ``delay_s``; yields (base URL, counts by method).

    On exit, handlers still sleeping are released at once so the shutdown does not wait.
    """
    counts: Counter = Counter()
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), delay_s)
        counts[request.method] += 1
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", counts
    finally:
        release.set()
        await runner.cleanup()


async def test_latency_counts_from_scheduled_time_when_server_is_slow() -> None:
    """One connection, 50 ms per request, 40 req/s offered: the server can do 20/s, so requests
    queue. An open-loop generator still sends every scheduled request and reports the queueing
    in its latency (a closed loop would report ~50 ms and send half as many)."""
    async with _slow_app(delay_s=0.05) as (url, counts):
        config = RunConfig(url=url, profile="constant", rps=40, duration=1.5, connections=1, grace=5, seed=1)
        summary = await traffic_gen.run(config)
    assert summary.sent == 60 == len(list(send_offsets(config)))
    assert summary.outcomes == {"200": 60} and sum(counts.values()) == 60
    assert summary.latency_ms.p99 > 10 * 50  # queueing behind the single connection is visible
    assert summary.schedule_lag_ms.p99 < summary.latency_ms.p99 / 5  # the scheduler never waited
    assert summary.error_ratio == 0 and not summary.interrupted


async def test_requests_rotate_over_every_url() -> None:
    async with _slow_app(delay_s=0) as (first, first_counts), _slow_app(delay_s=0) as (second, second_counts):
        config = RunConfig(url=first, extra_urls=(second,), rps=40, duration=1.0, seed=2)
        summary = await traffic_gen.run(config)
    assert summary.sent == 40 and summary.outcomes == {"200": 40}
    assert sum(first_counts.values()) == sum(second_counts.values()) == 20
    assert summary.urls == [first, second] and summary.url == first


async def test_in_flight_requests_are_cancelled_after_grace() -> None:
    async with _slow_app(delay_s=30) as (url, _):
        summary = await traffic_gen.run(RunConfig(url=url, rps=20, duration=0.5, grace=0.3, timeout=60))
    assert summary.sent == 10
    assert summary.outcomes == {"timeout/cancelled": 10}
    assert summary.completed == 0 and summary.error_ratio == 1.0


async def test_connection_errors_are_counted_by_exception_class() -> None:
    summary = await traffic_gen.run(RunConfig(url=f"http://127.0.0.1:{free_port()}", rps=20, duration=0.5))
    assert summary.sent == 10
    assert summary.outcomes == {"ClientConnectorError": 10}
    assert summary.errors == 10 and summary.completed == 0 and summary.latency_ms.p99 == 0


# ---------------------------------------------------------------- CLI end to end


@pytest.fixture
def counting_server(procs, tmp_path: Path) -> str:
    """Start SERVER_SOURCE as a subprocess on a free port; return its base URL."""
    script = tmp_path / "counting_server.py"
    script.write_text(SERVER_SOURCE)
    port = free_port()
    procs.start("counting_server", [PYTHON, str(script), str(port)])
    url = f"http://127.0.0.1:{port}"
    wait_http_ok(f"{url}/__stats", timeout=15)
    return url


def _server_counts(url: str) -> dict[str, int]:
    return httpx.get(f"{url}/__stats", timeout=5).json()


def _assert_summary_matches_server(summary: dict, server: dict[str, int]) -> None:
    by_status: Counter = Counter()
    by_route: Counter = Counter()
    for key, count in server.items():
        method, route, status = key.split(" ")
        by_status[status] += count
        by_route[f"{method} {route}"] += count
    assert summary["outcomes"] == dict(by_status)
    assert summary["routes"] == dict(by_route)
    assert summary["sent"] == summary["completed"] == sum(server.values())
    assert summary["errors"] == by_status["500"]
    assert summary["error_ratio"] == pytest.approx(by_status["500"] / summary["sent"], abs=1e-4)


def test_cli_agentic_run_matches_server_counts(counting_server: str, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = subprocess.run(
        [
            PYTHON,
            str(REPO_ROOT / "traffic_gen.py"),
            "--url",
            counting_server,
            "--profile",
            "agentic",
            "--normal-rps",
            "40",
            "--normal-duration",
            "1.5",
            "--error-rps",
            "40",
            "--error-duration",
            "1.5",
            "--seed",
            "7",
            "--json",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(out.read_text())
    _assert_summary_matches_server(summary, _server_counts(counting_server))
    assert summary["sent"] == 120 and summary["phases"] == {"normal": 60, "error": 60}
    # 80% of the error phase hits /random-endpoint/error; the normal phase never does
    assert 36 <= summary["routes"]["GET /random-endpoint/error"] <= 60
    assert "sent" in result.stdout and "500" in result.stdout  # summary printed despite --quiet
    assert "t=   1s" not in result.stderr  # no live progress with --quiet
    assert not summary["interrupted"] and summary["duration_s"] == 3


def test_cli_progress_lines_are_printed(counting_server: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [PYTHON, str(REPO_ROOT / "traffic_gen.py"), "--url", counting_server, "--rps", "20", "--duration", "2.5"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    progress = [line for line in result.stderr.splitlines() if line.startswith("t=")]
    assert len(progress) >= 2, result.stderr
    pattern = r"t=\s+1s sent\s+\d+/s done\s+\d+/s p50\s+[\d.]+ p95\s+[\d.]+ p99\s+[\d.]+ ms err\s+0\.0% in-flight \d+"
    assert re.fullmatch(pattern, progress[0]), progress[0]
    sent_per_second = [int(sent) for line in progress for sent in re.findall(r"sent\s+(\d+)/s", line)]
    assert len(sent_per_second) == len(progress)
    assert sum(sent_per_second) <= 50 and max(sent_per_second) >= 15


def test_cli_sigint_still_writes_summary(counting_server: str, procs, tmp_path: Path) -> None:
    out = tmp_path / "interrupted.json"
    proc = procs.start(
        "traffic_gen",
        [
            PYTHON,
            str(REPO_ROOT / "traffic_gen.py"),
            "--url",
            counting_server,
            "--rps",
            "50",
            "--duration",
            "60",
            "--json",
            str(out),
            "--quiet",
        ],
    )
    wait_until(lambda: sum(_server_counts(counting_server).values()) >= 25, timeout=15, what="25 requests served")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 0, procs.log_text("traffic_gen")
    summary = json.loads(out.read_text())
    assert summary["interrupted"] is True
    assert 25 <= summary["sent"] < 60 * 50
    assert summary["elapsed_s"] < 60
    _assert_summary_matches_server(summary, _server_counts(counting_server))
    assert "interrupted" in procs.log_text("traffic_gen")


def test_cli_payments_mix_against_two_real_instances(procs, tmp_path: Path) -> None:
    """The payments mix, agentic profile, spread over two real payments_service.py instances: the
    summary matches what the instances counted, and every 5xx is the JPY conversion bug."""
    instances = start_instances(procs, tmp_path, ["payments-g1", "payments-g2"])
    out = tmp_path / "payments.json"
    urls = [arg for instance in instances for arg in ("--url", instance.url)]
    args = ["--mix", "payments", "--profile", "agentic", "--normal-rps", "40", "--normal-duration", "1.5"]
    args += ["--error-rps", "40", "--error-duration", "1.5", "--seed", "11", "--json", str(out), "--quiet"]
    result = subprocess.run(
        [PYTHON, str(REPO_ROOT / "traffic_gen.py"), *urls, *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(out.read_text())
    assert summary["mix"] == "payments" and summary["urls"] == [instance.url for instance in instances]
    assert summary["sent"] == summary["completed"] == 120 and summary["phases"] == {"normal": 60, "error": 60}
    assert set(summary["outcomes"]) <= {"200", "201", "404", "500"} and summary["outcomes"]["500"] >= 36
    per_instance = [_served_by_status(instance) for instance in instances]
    assert [sum(counts.values()) for counts in per_instance] == [60, 60]  # round robin
    outcomes = summary["outcomes"]
    assert sum(counts["5xx"] for counts in per_instance) == outcomes["500"] == summary["errors"]
    assert sum(counts["4xx"] for counts in per_instance) == outcomes.get("404", 0)
    assert sum(counts["2xx"] for counts in per_instance) == outcomes.get("200", 0) + outcomes.get("201", 0)
    assert 0.6 <= outcomes["500"] / summary["phases"]["error"] <= 1.0  # the error phase sends 80% JPY charges


def _served_by_status(instance: PaymentsInstance) -> dict[str, float]:
    """Business requests an instance counted by grouped status; asserts each 5xx logged the JPY bug."""
    samples = instance.metrics()
    counts = {
        status: sum(
            metric(samples, "http_requests_total", handler=handler, status=status)
            for handler in ("/payments", "/payments/{payment_id}")
        )
        for status in ("2xx", "4xx", "5xx")
    }
    bug_records = [r for r in instance.records() if r.message == "unhandled KeyError in POST /payments: 'JPY'"]
    assert len(bug_records) == counts["5xx"]
    return counts
