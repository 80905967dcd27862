"""Investigation tools against respx mocks of Prometheus, the load balancer, the process manager and
GitHub (payload shapes from the recorded fixtures), and local source-code path confinement."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import respx

from oncall.investigate.toolloop import ToolCallRecord, execute_tool_calls
from oncall.sources.logs import summarise_logs
from tests.catalog_support import error_rate_queries
from tests.rig import GITHUB, LB, PM, PROM, Rig
from tests.support import fixture_path, load_json_fixture


def prom_vector(series: list[tuple[dict[str, str], float | str]]) -> dict:
    """A Prometheus 2.x instant-query answer (shape of fixtures/prometheus/prom_api_v1_query_up.json)."""
    body = copy.deepcopy(load_json_fixture("prometheus/prom_api_v1_query_up.json"))
    stamp = time.time()
    body["data"]["result"] = [{"metric": labels, "value": [stamp, str(value)]} for labels, value in series]
    return body


def prom_router(answers: dict[str, list[tuple[dict[str, str], float | str]]]):
    """respx side effect answering known PromQL with vectors and anything else with Prometheus' 400 error."""

    def answer(request: httpx.Request) -> httpx.Response:
        query = parse_qs(urlparse(str(request.url)).query)["query"][0]
        if query in answers:
            return httpx.Response(200, json=prom_vector(answers[query]))
        return httpx.Response(400, json=load_json_fixture("prometheus/prom_api_v1_query_error.json"))

    return answer


async def run_tool(rig: Rig, name: str, args: dict | str) -> ToolCallRecord:
    raw = args if isinstance(args, str) else json.dumps(args)
    [record] = await execute_tool_calls([("t1", name, raw)], rig.tools(), 1)
    return record


@respx.mock
async def test_compute_error_rate_overall_per_replica_and_route(rig_factory) -> None:
    rig = rig_factory()
    q = error_rate_queries("1m")
    respx.get(f"{PROM}/api/v1/query").mock(
        side_effect=prom_router(
            {
                q["overall"]: [({}, 0.1613)],
                q["per_replica"]: [
                    ({"replica": "inventory-1"}, 0.012),
                    ({"replica": "inventory-2"}, 0.4531),
                    ({"replica": "inventory-3"}, "NaN"),
                ],
                q["per_route"]: [({"route": "/items/{item_id}"}, 0.17), ({"route": "/random-endpoint"}, 0.05)],
                q["rps_per_replica"]: [({"replica": "inventory-1"}, 6.67), ({"replica": "inventory-2"}, 6.6)],
            }
        )
    )
    record = await run_tool(rig, "compute_error_rate", {"window": "1m"})
    assert record.ok, record.error
    result = record.result
    assert result["overall_error_ratio"] == 0.1613
    assert result["per_replica_error_ratio"] == {"inventory-1": 0.012, "inventory-2": 0.4531, "inventory-3": "NaN"}
    assert result["per_route_error_ratio"]["/items/{item_id}"] == 0.17
    assert result["requests_per_second_by_replica"] == {"inventory-1": 6.67, "inventory-2": 6.6}
    assert result["queries"]["per_replica"].startswith(
        '(sum by (replica)(rate(http_errors_total{job="inventory"}[1m]))'
    )
    assert len(respx.calls) == 4

    bad = await run_tool(rig, "compute_error_rate", {"window": "1 minute"})
    assert not bad.ok and "window" in bad.error


@respx.mock
async def test_query_prometheus_compact_result_and_prometheus_error(rig_factory) -> None:
    rig = rig_factory()
    up = load_json_fixture("prometheus/prom_api_v1_query_up.json")
    route = respx.get(f"{PROM}/api/v1/query")
    route.side_effect = lambda request: (
        httpx.Response(200, json=up)
        if request.url.params["query"] == "up"
        else httpx.Response(400, json=load_json_fixture("prometheus/prom_api_v1_query_error.json"))
    )
    ok = await run_tool(rig, "query_prometheus", {"query": "up"})
    assert ok.ok
    assert ok.result["resultType"] == "vector"
    assert ok.result["result"][0] == {
        "labels": {"env": "test", "instance": "127.0.0.1:19556", "job": "demo", "service": "checkout"},
        "value": 0.0,
    }
    bad = await run_tool(rig, "query_prometheus", {"query": "up{job="})
    assert not bad.ok
    assert "Prometheus rejected the query (bad_data)" in bad.error
    assert "parse error: unexpected end of input inside braces" in bad.error


@respx.mock
async def test_fetch_logs_summarises_and_retries_connect_errors(rig_factory) -> None:
    rig = rig_factory()
    entries = [
        {
            "timestamp": "2025-01-01T10:00:05Z",
            "ts": 1735725605,
            "level": "ERROR",
            "service": "inventory",
            "replica": f"inventory-{1 + i % 3}",
            "method": "GET",
            "route": "/random-endpoint/error",
            "status": 500,
            "message": "'NoneType' object has no attribute 'discount'",
            "exception_type": "AttributeError",
            "traceback": "Traceback (most recent call last):\n"
            '  File "/srv/inventory_service.py", line 212, in random_error\n'
            "AttributeError: 'NoneType' object has no attribute 'discount'",
            "file": "inventory_service.py",
            "line": 212,
            "function": "apply_discount",
            "fault": None,
        }
        for i in range(9)
    ] + [
        {
            "timestamp": "2025-01-01T10:00:00Z",
            "ts": 1735725600,
            "level": "ERROR",
            "service": "inventory",
            "replica": "inventory-2",
            "method": "GET",
            "route": "/random-endpoint",
            "status": 500,
            "message": "dependency timed out",
            "exception_type": "TimeoutError",
            "traceback": "",
            "file": "inventory_service.py",
            "line": 180,
            "function": "random_endpoint",
            "fault": None,
        }
    ]
    route = respx.get(f"{LB}/logs/tail")
    route.side_effect = [
        httpx.ConnectError("connection refused"),
        httpx.Response(200, json={"entries": entries, "count": 10, "seconds": 300, "limit": 200}),
    ]
    record = await run_tool(rig, "fetch_logs", {})
    assert record.ok, record.error
    assert route.call_count == 2
    assert (
        route.calls.last.request.url.params["seconds"] == "300"
        and route.calls.last.request.url.params["limit"] == "200"
    )
    summary = record.result
    assert summary["count"] == 10
    assert summary["by_exception_type"] == {"AttributeError": 9, "TimeoutError": 1}
    assert summary["by_replica"] == {"inventory-1": 3, "inventory-2": 4, "inventory-3": 3}
    assert summary["by_location"]["inventory_service.py:212"] == 9
    top = summary["groups"][0]
    assert (top["exception_type"], top["file"], top["line"], top["count"]) == (
        "AttributeError",
        "inventory_service.py",
        212,
        9,
    )
    assert top["replicas"] == {"inventory-1": 3, "inventory-2": 3, "inventory-3": 3}
    assert "AttributeError: 'NoneType' object has no attribute 'discount'" in summary["dominant_traceback_tail"]
    assert len(summary["newest"]) == 3 and "inventory_service.py:212" in summary["newest"][0]


def test_log_groups_say_when_they_were_last_seen() -> None:
    now = 1_800_000_000.0

    def entry(age, kind):
        return {
            "ts": now - age,
            "exception_type": kind,
            "file": "inventory_service.py",
            "line": 7,
            "replica": "inventory-1",
            "route": "/x",
        }

    summary = summarise_logs(
        [
            entry(5, "InjectedFault"),
            entry(30, "InjectedFault"),
            entry(200, "InjectedFault"),
            entry(120, "AttributeError"),
        ],
        now=now,
    )
    groups = {g["exception_type"]: g for g in summary["groups"]}
    assert (
        groups["InjectedFault"]["last_seen_s_ago"],
        groups["InjectedFault"]["recent_count"],
        groups["InjectedFault"]["count"],
    ) == (5.0, 2, 3)
    assert (groups["AttributeError"]["last_seen_s_ago"], groups["AttributeError"]["recent_count"]) == (120.0, 0)
    assert (
        groups["InjectedFault"]["recent_replicas"] == {"inventory-1": 2}
        and groups["AttributeError"]["recent_replicas"] == {}
    )


@respx.mock
async def test_fetch_logs_gives_up_after_retries(rig_factory) -> None:
    rig = rig_factory()
    route = respx.get(f"{LB}/logs/tail").mock(side_effect=httpx.ConnectError("connection refused"))
    record = await run_tool(rig, "fetch_logs", {"seconds": 60, "limit": 10})
    assert not record.ok and "ConnectError" in record.error
    assert route.call_count == 3


@respx.mock
async def test_get_recent_changes(rig_factory) -> None:
    rig = rig_factory()
    now = time.time()
    changes = respx.get(f"{PM}/changes").mock(
        return_value=httpx.Response(
            200,
            json={
                "changes": [
                    {
                        "ts": now - 30,
                        "timestamp": "",
                        "kind": "restart",
                        "replica": "inventory-3",
                        "detail": {"attempt": 1},
                    },
                    {
                        "ts": now - 31,
                        "timestamp": "",
                        "kind": "crash",
                        "replica": "inventory-3",
                        "detail": {"exit_code": 3},
                    },
                ]
            },
        )
    )
    respx.get(f"{PM}/instances").mock(
        return_value=httpx.Response(
            200,
            json={
                "instances": [
                    {
                        "name": "inventory-3",
                        "port": 8003,
                        "url": "http://127.0.0.1:8003",
                        "pid": 4242,
                        "state": "running",
                        "restarts": 1,
                        "fault": {"mode": "none"},
                        "started_at": now - 29,
                        "last_exit_code": 3,
                    },
                ]
            },
        )
    )
    record = await run_tool(rig, "get_recent_changes", {"since_seconds": 600})
    assert record.ok, record.error
    since = float(changes.calls.last.request.url.params["since"])
    assert now - 602 < since < now - 598
    assert [c["kind"] for c in record.result["changes"]] == ["crash", "restart"]  # time order
    assert 29 < record.result["changes"][0]["age_s"] < 40
    assert record.result["instances"][0]["last_exit_code"] == 3


def github_fixture_body() -> str:
    """Response body of a recorded GitHub contents API call (PyGithub replay data, line 10)."""
    return (
        fixture_path("github/PyGithub__tests_ReplayData_Issue140.testGetFileContents.txt").read_text().splitlines()[9]
    )


@respx.mock
async def test_fetch_code_from_github(rig_factory) -> None:
    # the replayed repository holds JavaScript; "js" (the folder itself) shows GitHub's directory answer
    rig = rig_factory(
        GITHUB_REPO="twitter/bootstrap", GITHUB_REF="v2.3.0", GITHUB_TOKEN="ghp_testtoken", CODE_READ_GLOBS="*.js,js"
    )
    route = respx.get(f"{GITHUB}/repos/twitter/bootstrap/contents/js/bootstrap-affix.js").mock(
        return_value=httpx.Response(200, text=github_fixture_body(), headers={"content-type": "application/json"})
    )
    respx.get(f"{GITHUB}/repos/twitter/bootstrap/contents/js/missing.js").mock(
        return_value=httpx.Response(
            404, json={"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}
        )
    )
    dir_body = (
        fixture_path("github/PyGithub__tests_ReplayData_Repository.testGetContentsDir.txt").read_text().splitlines()[9]
    )
    respx.get(f"{GITHUB}/repos/twitter/bootstrap/contents/js").mock(return_value=httpx.Response(200, text=dir_body))

    record = await run_tool(
        rig, "fetch_code_from_github", {"path": "js/bootstrap-affix.js", "line": 29, "context_lines": 2}
    )
    assert record.ok, record.error
    request = route.calls.last.request
    assert request.url.params["ref"] == "v2.3.0"
    assert request.headers["Authorization"] == "Bearer ghp_testtoken"
    result = record.result
    assert result["source"] == "github:twitter/bootstrap@v2.3.0"
    assert (result["start_line"], result["end_line"], result["focus_line"]) == (27, 31, 29)
    assert result["code"].splitlines()[2] == "> 29 |   var Affix = function (element, options) {"
    assert result["focus_text"] == "var Affix = function (element, options) {"

    missing = await run_tool(rig, "fetch_code_from_github", {"path": "js/missing.js", "line": 3})
    assert not missing.ok and "HTTP 404" in missing.error and "Not Found" in missing.error
    directory = await run_tool(rig, "fetch_code_from_github", {"path": "js"})
    assert not directory.ok and "is a directory" in directory.error
    escape = await run_tool(rig, "fetch_code_from_github", {"path": "../secrets.txt"})
    assert not escape.ok and "'..'" in escape.error
    assert "ghp_testtoken" not in (missing.error + directory.error + escape.error)


async def test_fetch_code_local_checkout_is_confined(rig_factory, tmp_path: Path) -> None:
    rig = rig_factory()
    code = tmp_path / "code"
    code.mkdir()
    (code / "svc.py").write_text("\n".join(f"line_{n} = {n}" for n in range(1, 41)) + "\n")
    (tmp_path / "outside.txt").write_text("top secret\n")
    (code / "link.py").symlink_to(tmp_path / "outside.txt")
    (code / "pkg.py").mkdir()

    ok = await run_tool(rig, "fetch_code_from_github", {"path": "svc.py", "line": 20, "context_lines": 3})
    assert ok.ok, ok.error
    assert ok.result["source"] == "local"
    lines = ok.result["code"].splitlines()
    assert len(lines) == 7 and lines[3] == "> 20 | line_20 = 20" and lines[0] == "  17 | line_17 = 17"
    head = await run_tool(rig, "fetch_code_from_github", {"path": "svc.py", "context_lines": 1})
    assert head.result["code"].splitlines() == ["  1 | line_1 = 1", "  2 | line_2 = 2", "  3 | line_3 = 3"]

    for path, expected in [
        ("/etc/passwd", "must be relative"),
        ("../outside.txt", "'..'"),
        ("pkg/../../outside.txt", "'..'"),
        ("link.py", "outside the code folder"),
        ("nope.py", "not found"),
        ("pkg.py", "not a file"),
    ]:
        record = await run_tool(rig, "fetch_code_from_github", {"path": path})
        assert not record.ok and expected in record.error, (path, record.error)
        assert "top secret" not in record.error
    past_end = await run_tool(rig, "fetch_code_from_github", {"path": "svc.py", "line": 99})
    assert not past_end.ok and "past the end" in past_end.error


async def test_send_diagnosis_validates_and_stamps_engine(rig_factory) -> None:
    rig = rig_factory()
    tools = rig.tools("openai:gpt-4o")
    assert tools["send_diagnosis"].terminal and not tools["fetch_logs"].terminal
    args = {
        "summary": "Injected errors on inventory-2",
        "root_cause": "InjectedFault",
        "fault_type": "injected_errors",
        "affected_service": "inventory",
        "affected_replicas": ["inventory-2"],
        "priority": "P2",
        "confidence": 0.8,
        "evidence": [{"tool": "fetch_logs", "query": "GET /logs/tail", "finding": "40 x InjectedFault"}],
        "engine": "forged",
    }
    [good, bad] = await execute_tool_calls(
        [
            ("a", "send_diagnosis", json.dumps(args)),
            ("b", "send_diagnosis", json.dumps({**args, "fault_type": "database", "confidence": 3})),
        ],
        tools,
        1,
    )
    assert good.ok and good.result["engine"] == "openai:gpt-4o" and good.result["affected_replicas"] == ["inventory-2"]
    assert not bad.ok and "fault_type" in bad.error and "confidence" in bad.error
