"""loadbalancer.py against real processes on loopback: the LB under uvicorn, echo backends
(aiohttp.web, defined at the bottom of this file and started as ``python -m tests.test_loadbalancer``),
real inventory_service.py replicas for the failover scenario, and the echo app as a fake process manager.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import http.client
import json
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadbalancer import connection_tokens, downstream_response_headers, error_kind, upstream_request_headers
from tests.support import PYTHON, REPO_ROOT, ProcessGroup, free_port, wait_http_ok, wait_until

INVENTORY = REPO_ROOT / "inventory_service.py"


# ---- process helpers --------------------------------------------------------------------------


def start_echo(procs: ProcessGroup, name: str, port: int | None = None, backends: list[str] | None = None) -> str:
    """Start an echo backend named ``name``; returns its base URL (not yet waited for)."""
    port = port or free_port()
    args = [PYTHON, "-m", "tests.test_loadbalancer", "--port", str(port), "--name", name]
    procs.start(f"echo-{name}-{port}", args, env={"ECHO_BACKENDS": ",".join(backends or [])})
    return f"http://127.0.0.1:{port}"


def start_inventory(procs: ProcessGroup, tmp_path: Path, index: int, port: int | None = None) -> str:
    """Start one inventory_service.py replica sharing tmp_path's database; returns its base URL."""
    port = port or free_port()
    env = {
        "INVENTORY_DB": str(tmp_path / "inventory.db"),
        "LOG_DIR": str(tmp_path / "logs"),
        "RANDOM_FAILURE_RATIO": "0",
        "REPLICA": f"inventory-{index}",
    }
    procs.start(f"inventory-{index}-{port}", [PYTHON, str(INVENTORY), "--port", str(port)], env=env)
    return f"http://127.0.0.1:{port}"


def start_lb(procs: ProcessGroup, tmp_path: Path, **env: str) -> str:
    """Start ``uvicorn loadbalancer:app`` with ``env`` (LB_* / PM_URL); returns its base URL (not yet waited for).

    ``--no-proxy-headers``: the test client is on 127.0.0.1, which uvicorn trusts by default, so it
    would replace the client address with the X-Forwarded-For value the test sends.
    """
    port = free_port()
    args = [
        PYTHON,
        "-m",
        "uvicorn",
        "loadbalancer:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-proxy-headers",
    ]
    procs.start("lb", args, env={"LB_ACCESS_LOG": str(tmp_path / "lb_access.log"), **env})
    return f"http://127.0.0.1:{port}"


def kill_started(procs: ProcessGroup, url: str) -> None:
    """SIGKILL (by PID) the process of ``procs`` whose name ends with ``url``'s port."""
    port = url.rsplit(":", 1)[1]
    for name, proc in procs.procs:
        if name.endswith(f"-{port}") and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
            return
    raise AssertionError(f"no running process for {url}")


def lb_health(lb: str) -> dict:
    return httpx.get(f"{lb}/healthz", timeout=5).json()


def backend_states(lb: str) -> dict[str, str]:
    return {b["url"]: b["state"] for b in lb_health(lb)["backends"]}


def lb_samples(lb: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Samples (labels, value) of metric sample ``name`` from the LB's /lb/metrics."""
    text = httpx.get(f"{lb}/lb/metrics", timeout=5).text
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def by_label(lb: str, name: str, label: str) -> dict[str, float]:
    """Samples of ``name`` from the LB's /lb/metrics summed by the value of ``label``."""
    sums: dict[str, float] = {}
    for labels, value in lb_samples(lb, name):
        sums[labels[label]] = sums.get(labels[label], 0) + value
    return sums


def requests_to(lb: str, backend: str) -> float:
    """lb_requests_total summed over codes for ``backend``."""
    return sum(value for labels, value in lb_samples(lb, "lb_requests_total") if labels["backend"] == backend)


@pytest.fixture
def echo_lb(procs: ProcessGroup, tmp_path: Path) -> tuple[str, str, str]:
    """Two echo backends A and B behind a static-list LB; returns (lb, a, b) base URLs."""
    a = start_echo(procs, "A")
    b = start_echo(procs, "B")
    lb = start_lb(procs, tmp_path, LB_BACKENDS=f"{a},{b}")
    for url in (a, b, lb):
        wait_http_ok(f"{url}/healthz")
    return lb, a, b


# ---- pure header functions --------------------------------------------------------------------


def test_request_headers_strip_hop_by_hop_and_append_forwarded_for() -> None:
    headers = [
        (b"host", b"lb:9000"),
        (b"connection", b"keep-alive, X-Secret"),
        (b"x-secret", b"s"),
        (b"te", b"trailers"),
        (b"x-forwarded-for", b"10.0.0.1"),
        (b"x-forwarded-for", b"10.0.0.2"),
        (b"content-length", b"3"),
        (b"x-keep", b"1"),
    ]
    out = upstream_request_headers(headers, "127.0.0.9")
    assert out == [("x-keep", "1"), ("X-Forwarded-For", "10.0.0.1, 10.0.0.2, 127.0.0.9")]


def test_response_headers_keep_duplicates_and_drop_connection_tokens() -> None:
    raw = (
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
        (b"Connection", b"X-Hop"),
        (b"X-Hop", b"1"),
        (b"Keep-Alive", b"timeout=5"),
    )
    assert downstream_response_headers(raw) == [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]
    assert connection_tokens([(b"Connection", b"close, X-A ,x-b")]) == {b"close", b"x-a", b"x-b"}


# ---- proxying against echo backends -----------------------------------------------------------


def test_round_robin_access_log_and_own_endpoints(echo_lb: tuple[str, str, str], tmp_path: Path) -> None:
    lb, a, b = echo_lb
    with httpx.Client(timeout=5) as client:
        served = [client.get(f"{lb}/rr/{i}").json()["backend"] for i in range(20)]
        assert served.count("A") == 10 and served.count("B") == 10
        assert all(served[i] != served[i + 1] for i in range(19)), served
        assert client.post(f"{lb}/healthz").status_code == 405
    health = lb_health(lb)
    assert health["status"] == "ok"
    assert [(x["url"], x["state"]) for x in health["backends"]] == [(a, "up"), (b, "up")]
    assert {
        "requests": by_label(lb, "lb_requests_total", "backend"),
        "durations": by_label(lb, "lb_request_duration_seconds_count", "backend"),
        "in flight": by_label(lb, "lb_upstream_in_flight", "backend"),
        "backends": by_label(lb, "lb_backends", "state"),
    } == {
        "requests": {a: 10, b: 10},
        "durations": {a: 10, b: 10},
        "in flight": {a: 0, b: 0},
        "backends": {"up": 2, "down": 0},
    }

    log = tmp_path / "lb_access.log"
    lines = wait_until(
        lambda: log.exists() and len(log.read_text().splitlines()) >= 20 and log.read_text().splitlines(),
        5,
        what="access log",
    )
    fields = lines[0].split()
    assert fields[1:6] == ["127.0.0.1", "GET", "/rr/0", "200", a]
    assert float(fields[6]) > 0


def test_passes_status_headers_query_and_body(echo_lb: tuple[str, str, str]) -> None:
    lb, _, _ = echo_lb
    with httpx.Client(timeout=5) as client:
        for status in (404, 500, 201):
            response = client.get(
                f"{lb}/items/x%2Fy?q=a%20b&q=c", headers={"X-Echo-Status": str(status), "X-Custom": "v1"}
            )
            assert response.status_code == status
            echoed = response.json()
            assert echoed["raw_path"] == "/items/x%2Fy?q=a%20b&q=c"
            assert ["X-Custom", "v1"] in echoed["headers"] or ["x-custom", "v1"] in echoed["headers"]
            assert response.headers["x-echo-backend"] == echoed["backend"]
            assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
            assert response.headers["content-type"] == "application/json; charset=utf-8"

        payload = os.urandom(1_500_000)
        response = client.put(f"{lb}/items/7", content=payload, headers={"Content-Type": "application/octet-stream"})
        assert response.status_code == 200
        echoed = response.json()
        assert (echoed["method"], echoed["body_len"]) == ("PUT", len(payload))
        assert echoed["body_sha256"] == hashlib.sha256(payload).hexdigest()

        big = client.get(f"{lb}/big?size=3000000")
        assert len(big.content) == 3_000_000
        assert hashlib.sha256(big.content).hexdigest() == big.headers["x-body-sha256"]

        head = client.head(f"{lb}/big?size=1234")
        assert head.status_code == 200 and head.content == b""


def test_hop_by_hop_stripped_and_forwarded_for(echo_lb: tuple[str, str, str]) -> None:
    lb, a, _ = echo_lb
    request_headers = {
        "Connection": "keep-alive, X-Hop-Req",
        "X-Hop-Req": "secret",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "Trailers": "X-Foo",
        "X-Forwarded-For": "203.0.113.7",
        "X-End-To-End": "kept",
    }
    with httpx.Client(timeout=5) as client:
        response = client.get(f"{lb}/hop?hop=1", headers=request_headers)
        assert response.status_code == 200
        seen = {name.lower(): value for name, value in response.json()["headers"]}
        for name in ("x-hop-req", "keep-alive", "te", "proxy-authorization", "trailers"):
            assert name not in seen, (name, seen)
        assert seen["x-end-to-end"] == "kept"
        assert seen["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
        for name in ("keep-alive", "proxy-authenticate", "x-hop-resp", "trailers", "upgrade"):
            assert name not in response.headers, (name, response.headers)
        assert response.headers["x-end-to-end-resp"] == "kept"

        plain = client.get(f"{lb}/hop").json()
        assert dict((n.lower(), v) for n, v in plain["headers"])["x-forwarded-for"] == "127.0.0.1"

    # A minimal client request: the LB must not invent Accept-Encoding, User-Agent or Accept upstream.
    host, port = lb.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.putrequest("GET", "/bare", skip_accept_encoding=True)
    conn.endheaders()
    bare = json.loads(conn.getresponse().read())
    conn.close()
    names = {name.lower(): value for name, value in bare["headers"]}
    assert not {"accept-encoding", "user-agent", "accept", "content-type"} & names.keys(), names
    assert names["host"] in (a.removeprefix("http://"), echo_lb[2].removeprefix("http://"))


def test_compressed_body_passes_through_undecoded(echo_lb: tuple[str, str, str]) -> None:
    lb, _, _ = echo_lb
    with (
        httpx.Client(timeout=5) as client,
        client.stream("GET", f"{lb}/zipped?gzip=1", headers={"Accept-Encoding": "gzip"}) as response,
    ):
        raw = b"".join(response.iter_raw())
        assert response.headers["content-encoding"] == "gzip"
        assert int(response.headers["content-length"]) == len(raw)
    assert json.loads(gzip.decompress(raw))["raw_path"] == "/zipped?gzip=1"


def test_post_is_not_retried_but_get_fails_over(procs: ProcessGroup, echo_lb: tuple[str, str, str]) -> None:
    lb, a, b = echo_lb
    with httpx.Client(timeout=5) as client:
        assert {client.get(f"{lb}/warm").json()["backend"] for _ in range(2)} == {"A", "B"}
        kill_started(procs, b)
        posts = [client.post(f"{lb}/orders", content=b"{}") for _ in range(2)]
        statuses = sorted(r.status_code for r in posts)
        assert statuses == [200, 502], [r.text for r in posts]
        failed = next(r for r in posts if r.status_code == 502).json()
        assert failed["error"] == "bad gateway" and b in failed["detail"]
        assert backend_states(lb) == {a: "up", b: "down"}
        assert all(client.post(f"{lb}/orders").json()["backend"] == "A" for _ in range(3))
    errors = [labels for labels, value in lb_samples(lb, "lb_upstream_errors_total") if value > 0]
    assert errors and all(labels["backend"] == b for labels in errors)
    assert lb_samples(lb, "lb_failovers_total")[0][1] == 0


def test_upstream_timeout_answers_504_without_marking_down(procs: ProcessGroup, tmp_path: Path) -> None:
    a = start_echo(procs, "A")
    b = start_echo(procs, "B")
    lb = start_lb(procs, tmp_path, LB_BACKENDS=f"{a},{b}", LB_UPSTREAM_TIMEOUT_S="0.5")
    for url in (a, b, lb):
        wait_http_ok(f"{url}/healthz")
    started = time.monotonic()
    response = httpx.get(f"{lb}/slow?sleep=2", timeout=10)
    assert response.status_code == 504 and time.monotonic() - started < 1.5
    assert response.json()["error"] == "gateway timeout" and "timeout" in response.json()["detail"]
    assert set(backend_states(lb).values()) == {"up"}
    assert lb_samples(lb, "lb_failovers_total")[0][1] == 0
    codes = {(labels["backend"], labels["code"]): value for labels, value in lb_samples(lb, "lb_requests_total")}
    assert codes == {(a, "504"): 1}
    errors = {
        (labels["backend"], labels["kind"]): value for labels, value in lb_samples(lb, "lb_upstream_errors_total")
    }
    assert errors == {(a, "timeout"): 1}
    slow = [labels for labels, value in lb_samples(lb, "lb_request_duration_seconds_bucket") if value == 1]
    # It took the 0.5 s timeout and a little more: counted from the le="1.0" bucket on.
    assert min(float(labels["le"]) for labels in slow) == 1.0 and all(labels["backend"] == a for labels in slow)


def test_in_flight_attempts_are_visible_before_they_finish(echo_lb: tuple[str, str, str]) -> None:
    lb, a, b = echo_lb
    with ThreadPoolExecutor(max_workers=4) as pool:
        slow = [pool.submit(httpx.get, f"{lb}/slow?sleep=1.5", timeout=10) for _ in range(4)]

        def in_flight() -> dict[str, float] | None:
            samples = {labels["backend"]: value for labels, value in lb_samples(lb, "lb_upstream_in_flight")}
            return samples if sum(samples.values()) == 4 else None

        assert wait_until(in_flight, 1.2, interval=0.05, what="4 attempts in flight") == {a: 2, b: 2}
        assert lb_samples(lb, "lb_requests_total") == []  # nothing answered yet
        assert [f.result().status_code for f in slow] == [200] * 4
    assert {labels["backend"]: value for labels, value in lb_samples(lb, "lb_upstream_in_flight")} == {a: 0, b: 0}


def test_error_kinds_follow_the_aiohttp_exception_hierarchy() -> None:
    assert error_kind(aiohttp.ConnectionTimeoutError("connect")) == "connect_timeout"
    assert error_kind(aiohttp.SocketTimeoutError("read")) == "timeout"
    assert error_kind(TimeoutError()) == "timeout"
    assert error_kind(aiohttp.ServerDisconnectedError()) == "disconnect"
    assert error_kind(aiohttp.ClientPayloadError("cut")) == "payload"
    assert error_kind(aiohttp.ClientConnectionResetError("reset")) == "reset"
    assert error_kind(aiohttp.ClientOSError(104, "Connection reset by peer")) == "reset"
    assert error_kind(ValueError()) == "other"


@pytest.mark.slow
def test_busy_replica_shows_as_timeouts_at_the_lb_while_its_own_metrics_are_stale(
    procs: ProcessGroup, tmp_path: Path
) -> None:
    replica = start_inventory(procs, tmp_path, 1)
    lb = start_lb(procs, tmp_path, LB_BACKENDS=replica, LB_UPSTREAM_TIMEOUT_S="0.5")
    for url in (replica, lb):
        wait_http_ok(f"{url}/healthz", timeout=30)
    httpx.post(f"{replica}/faults", json={"mode": "stall", "stall_ms": 1500}, timeout=5).raise_for_status()
    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(pool.map(lambda _: httpx.get(f"{lb}/items/1", timeout=10), range(3)))
        # The replica's event loop is busy for ~4.5 s: its own /metrics cannot answer a scrape...
        with pytest.raises(httpx.TimeoutException):
            httpx.get(f"{replica}/metrics", timeout=1.0)
        # ...while the load balancer's view is current.
        codes = {labels["code"]: value for labels, value in lb_samples(lb, "lb_requests_total")}
    assert [a.status_code for a in answers] == [504] * 3 and codes == {"504": 3}
    assert all(a.json()["error"] == "gateway timeout" for a in answers)
    errors = {labels["kind"]: value for labels, value in lb_samples(lb, "lb_upstream_errors_total")}
    assert errors == {"timeout": 3}
    assert backend_states(lb) == {replica: "up"}
    httpx.post(f"{replica}/faults", json={"mode": "none"}, timeout=15).raise_for_status()


def test_all_backends_down_answers_502_then_503(procs: ProcessGroup, tmp_path: Path) -> None:
    dead = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    lb = start_lb(procs, tmp_path, LB_BACKENDS=",".join(dead))
    wait_http_ok(f"{lb}/healthz")
    with httpx.Client(timeout=5) as client:
        first = client.get(f"{lb}/items/1")
        assert first.status_code == 502
        assert first.headers["content-type"] == "application/json"
        assert first.json()["error"] == "bad gateway"
        assert all(url in first.json()["detail"] for url in dead)
        for method in ("GET", "POST"):
            then = client.request(method, f"{lb}/items/1")
            assert then.status_code == 503
            assert then.json() == {"error": "no backend available", "backends": 2}
    health = lb_health(lb)
    assert health["status"] == "no_backends"
    assert all(
        b["state"] == "down" and b["failures"] == 1 and b["last_error"].startswith("connect")
        for b in health["backends"]
    )


# ---- failover under load ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["echo", "inventory"])
def test_killed_replica_costs_no_failed_get_and_comes_back(kind: str, procs: ProcessGroup, tmp_path: Path) -> None:
    if kind == "inventory" and not INVENTORY.exists():
        pytest.skip("inventory_service.py not present")

    def start(index: int, port: int | None = None) -> str:
        if kind == "echo":
            return start_echo(procs, "AB"[index - 1], port)
        return start_inventory(procs, tmp_path, index, port)

    a, b = start(1), start(2)
    lb = start_lb(procs, tmp_path, LB_BACKENDS=f"{a},{b}")
    for url in (a, b, lb):
        wait_http_ok(f"{url}/healthz", timeout=30)

    with httpx.Client(timeout=10) as client:
        assert failed_gets(client, lb, 300, kill_at=100, kill=lambda: kill_started(procs, b)) == []
        assert backend_states(lb) == {a: "up", b: "down"}
        assert lb_health(lb)["status"] == "degraded"
        assert lb_samples(lb, "lb_failovers_total")[0][1] >= 1
        served_by_b = requests_to(lb, b)
        assert served_by_b == 50  # every 2nd of the 100 before the kill; later ones failed over to A

        start(2, int(b.rsplit(":", 1)[1]))
        wait_until(lambda: backend_states(lb)[b] == "up", 30, what=f"{b} up again in /healthz")
        assert failed_gets(client, lb, 20) == []
    assert requests_to(lb, b) - served_by_b == 10
    assert lb_health(lb)["status"] == "ok"


def failed_gets(
    client: httpx.Client, lb: str, count: int, kill_at: int | None = None, kill: Callable[[], None] = lambda: None
) -> list[str]:
    """Send ``count`` GET /items/1 through ``lb`` (calling ``kill`` before number ``kill_at``); the non-200 ones."""
    failures = []
    for i in range(count):
        if i == kill_at:
            kill()
        response = client.get(f"{lb}/items/1")
        if response.status_code != 200:
            failures.append(f"{i}: {response.status_code} {response.text[:200]}")
    return failures


# ---- backends from the process manager --------------------------------------------------------


def test_backends_refreshed_from_pm_and_kept_when_pm_is_down(procs: ProcessGroup, tmp_path: Path) -> None:
    a = start_echo(procs, "A")
    b = start_echo(procs, "B")
    pm = start_echo(procs, "pm", backends=[a])
    for url in (a, b, pm):
        wait_http_ok(f"{url}/healthz")
    lb = start_lb(procs, tmp_path, PM_URL=pm, LB_REFRESH_SEC="0.2")
    wait_http_ok(f"{lb}/healthz")
    assert backend_states(lb) == {a: "up"}
    assert lb_health(lb)["source"] == pm

    httpx.post(f"{pm}/__backends", json={"backends": [a, f"{b}/"]}, timeout=5).raise_for_status()
    wait_until(lambda: backend_states(lb) == {a: "up", b: "up"}, 10, what="B picked up from the PM")
    with httpx.Client(timeout=5) as client:
        assert {client.get(f"{lb}/x").json()["backend"] for _ in range(4)} == {"A", "B"}

        kill_started(procs, pm)
        refreshed = lb_health(lb)["refreshed_at"]
        wait_until(lambda: "unavailable" in procs.log_text("lb"), 10, what="PM warning in the LB log")
        time.sleep(1.0)  # ~5 more refresh attempts against the dead PM
        assert backend_states(lb) == {a: "up", b: "up"}
        assert lb_health(lb)["refreshed_at"] == refreshed
        assert procs.log_text("lb").count("unavailable") == 1
        assert {client.get(f"{lb}/x").json()["backend"] for _ in range(4)} == {"A", "B"}


def test_pm_unreachable_at_start_answers_503(procs: ProcessGroup, tmp_path: Path) -> None:
    lb = start_lb(procs, tmp_path, PM_URL=f"http://127.0.0.1:{free_port()}", LB_REFRESH_SEC="0.2")
    wait_http_ok(f"{lb}/healthz")
    health = lb_health(lb)
    assert (health["status"], health["backends"], health["refreshed_at"]) == ("no_backends", [], None)
    response = httpx.get(f"{lb}/items/1", timeout=5)
    assert response.status_code == 503 and response.json()["error"] == "no backend available"
    assert procs.log_text("lb").count("unavailable") == 1


# ---- the echo backend (run as: python -m tests.test_loadbalancer --port P --name N) ------------


def run_echo(port: int, name: str) -> None:
    """Serve an aiohttp.web echo app on 127.0.0.1:``port``.

    Every request -> JSON {"backend", "method", "raw_path", "query", "headers": [[name, value]...],
    "body_len", "body_sha256"} with two Set-Cookie headers and X-Echo-Backend. Controls: header
    X-Echo-Status (status code), query ``sleep`` (seconds), ``size`` (bytes of non-JSON body with
    X-Body-SHA256), ``gzip=1`` (gzip-encoded body), ``hop=1`` (adds hop-by-hop response headers).
    Fake-PM mode: ``GET /backends`` -> {"backends": [...]} (initially $ECHO_BACKENDS), ``POST /__backends`` sets it.
    """
    from aiohttp import web

    pm_backends = [u for u in os.environ.get("ECHO_BACKENDS", "").split(",") if u]

    async def handle(request: web.Request) -> web.StreamResponse:
        nonlocal pm_backends
        body = await request.read()
        if request.path == "/backends" and request.method == "GET" and name == "pm":
            return web.json_response({"backends": pm_backends})
        if request.path == "/__backends":
            pm_backends = json.loads(body)["backends"]
            return web.json_response({"backends": pm_backends})
        if "sleep" in request.query:
            await asyncio.sleep(float(request.query["sleep"]))
        headers = {"X-Echo-Backend": name, "Content-Type": "application/json; charset=utf-8"}
        status = int(request.headers.get("X-Echo-Status", "200"))
        if "size" in request.query:
            data = (b"0123456789abcdef" * (int(request.query["size"]) // 16 + 1))[: int(request.query["size"])]
            headers["X-Body-SHA256"] = hashlib.sha256(data).hexdigest()
            headers["Content-Type"] = "application/octet-stream"
            return web.Response(body=data, status=status, headers=headers)
        echoed = {
            "backend": name,
            "method": request.method,
            "raw_path": request.raw_path,
            "query": request.query_string,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers],
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
        data = json.dumps(echoed).encode()
        if request.query.get("gzip") == "1":
            data = gzip.compress(data)
            headers["Content-Encoding"] = "gzip"
        if request.query.get("hop") == "1":
            headers.update(
                {
                    "Keep-Alive": "timeout=99",
                    "Proxy-Authenticate": "Basic",
                    "X-Hop-Resp": "secret",
                    "Connection": "X-Hop-Resp",
                    "Trailers": "X-T",
                    "X-End-To-End-Resp": "kept",
                }
            )
        response = web.Response(body=data, status=status, headers=headers)
        response.set_cookie("a", "1")
        response.set_cookie("b", "2")
        return response

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    cli = parser.parse_args()
    run_echo(cli.port, cli.name)
