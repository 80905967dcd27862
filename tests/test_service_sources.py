"""The catalog's pluggable sources against real files, a real git repository, a loopback Loki server
(recorded ``query_range`` answer) and respx mocks of GitHub and Prometheus (recorded shapes)."""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import AsyncIterator
from logging.handlers import RotatingFileHandler
from pathlib import Path

import httpx
import pytest
import respx
from aiohttp import web

from oncall.catalog import models as m
from oncall.sources.http import SourceError
from oncall.sources.logfile import FileLogSource
from oncall.sources.loki import LokiLogSource
from oncall.sources.prometheus import PrometheusSource
from oncall.sources.repo_changes import GitHubRepoChanges, GitRepoChanges
from oncall.sources.service_code import ServiceCode
from oncall.sources.version import HttpVersionSource, PromQLVersionSource
from tests.support import fixture_path, load_json_fixture
from tests.test_tools import prom_vector

PAYMENTS_PATTERN = (
    r"^(?P<timestamp>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) (?P<level>[A-Z]+) (?P<replica>\S+) "
    r"(?P<logger>[\w.]+): (?P<message>.*)$"
)
PROM = "http://127.0.0.1:19090"
GITHUB = "http://127.0.0.1:18443"


class UTCFormatter(logging.Formatter):
    """The payments service's header: ``<UTC ms timestamp>Z <LEVEL> <instance> <logger>: <message>``."""

    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def write_rotated_log(folder: Path, instance: str, records: int) -> logging.Logger:
    """Log ``records`` ERROR records with tracebacks through a RotatingFileHandler small enough to rotate."""
    handler = RotatingFileHandler(folder / f"{instance}.log", maxBytes=2048, backupCount=5)
    handler.setFormatter(UTCFormatter(f"%(asctime)s %(levelname)s {instance} %(name)s: %(message)s"))
    logger = logging.getLogger("payments.api")
    logger.handlers = [handler]
    logger.propagate = False
    for n in range(records):
        try:
            {"USD": 2}[f"JPY{n}"]
        except KeyError:
            logger.exception("unhandled KeyError in POST /payments: %s", n)
        logger.info("payment %s captured", n)
    logger.error("injected fault: errors (p_error=0.6): GET /payments/{payment_id} answered 500")
    handler.close()
    return logger


def text_logs(folder: Path) -> m.FileLogs:
    return m.FileLogs(
        type="file",
        path=str(folder / "*.log"),
        format="text",
        pattern=PAYMENTS_PATTERN,
        extract=[r"(?P<method>GET|POST) (?P<route>/[^\s:]*)", r"answered (?P<status>\d{3})"],
        classify={"InjectedFault": "^injected fault: "},
    )


async def test_file_logs_follow_rotation_and_parse_tracebacks(tmp_path: Path) -> None:
    write_rotated_log(tmp_path, "payments-1", 12)
    write_rotated_log(tmp_path, "payments-2", 2)
    assert (tmp_path / "payments-1.log.1").exists()  # rotated at least once
    source = FileLogSource(text_logs(tmp_path), tmp_path)
    records = await source.errors(300, 100)
    ones = [r for r in records if r["replica"] == "payments-1"]
    assert len([r for r in ones if r["exception_type"] == "KeyError"]) == 12  # across the rotated files
    assert [r["ts"] for r in records] == sorted((r["ts"] for r in records), reverse=True)
    key_error = next(r for r in ones if r["exception_type"] == "KeyError")
    assert key_error["message"] == "'JPY11'" and key_error["function"] == "write_rotated_log"
    assert key_error["file"] == __file__ and key_error["method"] == "POST" and key_error["route"] == "/payments"
    assert key_error["frames"][-1][0] == __file__
    injected = records[0]
    assert (injected["exception_type"], injected["status"], injected["route"]) == (
        "InjectedFault",
        500,
        "/payments/{payment_id}",
    )
    assert all(r["level"] == "ERROR" for r in records)  # INFO lines are not read
    only_two = await source.errors(300, 100, replica="payments-2")
    assert {r["replica"] for r in only_two} == {"payments-2"} and len(only_two) == 3
    assert len(await source.errors(300, 4)) == 4
    assert await source.errors(1, 100, replica="payments-3") == []
    with pytest.raises(SourceError, match="no log file matches"):
        await FileLogSource(text_logs(tmp_path / "nowhere"), tmp_path).errors(300, 10)


async def test_json_lines_files_with_a_field_mapping(tmp_path: Path) -> None:
    now = time.time()
    lines = [
        {"time": now - 5, "severity": "error", "host": "web-1", "msg": "boom", "exc": "ValueError"},
        {"time": now - 4, "severity": "info", "host": "web-1", "msg": "fine"},
        {"time": now - 999, "severity": "error", "host": "web-2", "msg": "old"},
    ]
    (tmp_path / "web.log").write_text("\n".join(json.dumps(line) for line in lines) + "\nnot json\n")
    spec = m.FileLogs(
        type="file",
        path="*.log",
        fields={"ts": "time", "level": "severity", "replica": "host", "message": "msg", "exception_type": "exc"},
    )
    [record] = await FileLogSource(spec, tmp_path).errors(300, 10)
    assert (record["replica"], record["exception_type"], record["message"]) == ("web-1", "ValueError", "boom")


@pytest.fixture
async def loki() -> AsyncIterator[dict]:
    """A loopback Loki answering query_range with the recorded answer (or 400 for a query with `bad`)."""
    seen: dict = {"requests": []}

    async def query_range(request: web.Request) -> web.Response:
        seen["requests"].append(request)
        if "bad" in request.query["query"]:
            return web.Response(status=400, text="parse error at line 1, col 1: syntax error: unexpected IDENTIFIER")
        if "rate(" in request.query["query"]:
            return web.json_response({"status": "success", "data": {"resultType": "matrix", "result": []}})
        return web.json_response(load_json_fixture("loki/query_range_streams.json"))

    app = web.Application()
    app.router.add_get("/loki/api/v1/query_range", query_range)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    seen["url"] = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield seen
    await runner.cleanup()


async def test_loki_source_reads_error_streams(loki: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = m.LokiLogs(
        type="loki",
        url=loki["url"],
        query='{app="checkout"} |= "error"',
        replica_label="pod",
        tenant="team-a",
        fields={"message": "msg"},
    )
    async with httpx.AsyncClient() as http:
        records = await LokiLogSource(http, spec, 5.0, "loki-token").errors(600, 50)
        request = loki["requests"][-1]
        assert request.query["direction"] == "backward" and request.query["limit"] == "50"
        start, end = int(request.query["start"]), int(request.query["end"])
        assert 599e9 < end - start < 601e9 and abs(end / 1e9 - time.time()) < 5  # epoch nanoseconds
        assert request.headers["X-Scope-OrgID"] == "team-a"
        assert request.headers["Authorization"] == "Bearer loki-token"
        assert [r["replica"] for r in records] == ["checkout-7d9f-abcde", "checkout-7d9f-abcde"]  # info not read
        type_error = records[0]
        assert type_error["exception_type"] == "TypeError" and type_error["file"] == "/srv/app/checkout/cart.py"
        assert (type_error["line"], type_error["function"], type_error["level"]) == (42, "total", "ERROR")
        assert records[1]["route"] == "/cart" and records[1]["ts"] == pytest.approx(1569266492.548)
        with pytest.raises(SourceError, match="HTTP 400: parse error"):
            await LokiLogSource(http, spec.model_copy(update={"query": "bad{"}), 5.0, None).errors(60, 5)
        with pytest.raises(SourceError, match="streams"):
            await LokiLogSource(http, spec.model_copy(update={"query": "rate({a=1}[1m])"}), 5.0, None).errors(60, 5)


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository: svc.py at tag v1.0.0, changed in v1.1.0, and an uncommitted edit in the working tree."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "dev@example.com")
    git(root, "config", "user.name", "Dev One")
    for version, body in (("1.0.0", "price = 1\n"), ("1.1.0", "price = item.promotion.discount\n")):
        (root / "svc.py").write_text(body)
        git(root, "add", "svc.py")
        git(root, "commit", "-q", "-m", f"release {version}")
        git(root, "tag", f"v{version}")
    (root / "svc.py").write_text("price = 3  # work in progress\n")
    return root


async def test_git_changes_and_code_at_the_deployed_version(repo: Path) -> None:
    changes, instances = await GitRepoChanges(
        m.GitChanges(type="git", path=str(repo)), repo, 5.0
    ).changes_and_instances(time.time() - 600)
    assert [c["detail"]["subject"] for c in changes] == ["release 1.1.0", "release 1.0.0"] and instances == []
    assert changes[0]["kind"] == "commit" and changes[0]["detail"]["author"] == "Dev One"
    assert await GitRepoChanges(m.GitChanges(type="git", path=str(repo)), repo, 5.0).changes_and_instances(
        time.time() + 60
    ) == ([], [])
    spec = m.LocalCodeSpec(type="local", ref="v{version}", path_prefixes=["/srv/app"])
    async with httpx.AsyncClient() as http:
        code = ServiceCode(spec, repo, http, None, 5.0)
        assert await code.read("svc.py", "1.0.0") == ("price = 1\n", "git:v1.0.0", None)
        text, source, note = await code.read("svc.py", "9.9.9")  # no such tag: the working tree, said so
        assert (text, source) == ("price = 3  # work in progress\n", "local") and "v9.9.9" in (note or "")
        assert (await code.read("svc.py", None))[1] == "local"
        with pytest.raises(SourceError, match="'..'"):
            await code.read("../etc/passwd", "1.0.0")
        git_at_tag = code.sources("1.0.0")[0]
        assert git_at_tag.name == "git:v1.0.0"
        for refused in (".env", "deploy/id_rsa", "notes.txt"):  # the code-read policy holds at a git ref too
            with pytest.raises(SourceError, match="^refused: "):
                await git_at_tag.read(refused)
    assert code.repository_path("/srv/app/svc.py") == "svc.py"
    assert code.repository_path(f"{repo}/svc.py") == "svc.py"
    assert code.repository_path("/opt/deploy/current/svc.py") == "svc.py"  # the tail that exists in the checkout
    assert code.repository_path("/usr/lib/python3/dist-packages/x.py") is None
    assert code.repository_path("/usr/lib/python3.11/asyncio/events.py") is None
    assert code.repository_path("pkg/mod.py") == "pkg/mod.py"


@respx.mock
async def test_github_deployments_and_commits() -> None:
    deployments = respx.get(f"{GITHUB}/repos/octocat/example/deployments").mock(
        return_value=httpx.Response(200, text=fixture_path("github/deployments.json").read_text())
    )
    commits = respx.get(f"{GITHUB}/repos/octocat/example/commits").mock(
        return_value=httpx.Response(200, text=fixture_path("github/commits.json").read_text())
    )
    spec = m.GitHubChanges(type="github", repo="octocat/example", environment="production", api_url=GITHUB)
    since = 1342743600.0  # 2012-07-20T00:20:00Z: after the older deployment
    async with httpx.AsyncClient() as http:
        changes, _ = await GitHubRepoChanges(http, spec, "ghp_secret", 5.0).changes_and_instances(since)
    assert [c["kind"] for c in changes] == ["deploy", "commit"]  # newest first
    deploy = changes[0]["detail"]
    assert (deploy["from_version"], deploy["to_version"], deploy["creator"]) == ("1.4.0", "v1.4.1", "octocat")
    assert changes[1]["detail"]["subject"] == "Price items with their promotion"
    request = deployments.calls.last.request
    assert request.url.params["environment"] == "production" and request.headers["Authorization"] == "Bearer ghp_secret"
    assert commits.calls.last.request.url.params["since"].startswith("2012-07-20T00:20:00")


@respx.mock
async def test_versions_from_build_info_and_from_each_targets_endpoint() -> None:
    build_info = 'inventory_build_info{job="inventory"}'
    respx.get(f"{PROM}/api/v1/query", params={"query": build_info}).mock(
        return_value=httpx.Response(
            200,
            json=prom_vector(
                [
                    ({"replica": "inventory-1", "version": "1.4.1"}, 1),
                    ({"replica": "inventory-2", "version": "1.4.0"}, 1),
                ]
            ),
        )
    )
    targets = load_json_fixture("prometheus/prom_api_v1_targets.json")
    respx.get(f"{PROM}/api/v1/targets").mock(return_value=httpx.Response(200, json=targets))
    respx.get("http://127.0.0.1:19557/version").mock(return_value=httpx.Response(200, json={"version": "2.0.1"}))
    respx.get("http://127.0.0.1:19556/version").mock(side_effect=httpx.ConnectError("refused"))
    async with httpx.AsyncClient() as http:
        prometheus = PrometheusSource(http, PROM, 2.0)
        spec = m.PromQLVersion(type="promql", query=build_info)
        promql = PromQLVersionSource(prometheus, spec, "replica")
        assert await promql.versions() == {"inventory-1": "1.4.1", "inventory-2": "1.4.0"}
        http_source = HttpVersionSource(http, prometheus, m.HttpVersion(type="http"), '{job="demo"}', "instance", 2.0)
        assert await http_source.versions() == {"127.0.0.1:19557": "2.0.1"}  # the unreachable one is left out
        nobody = HttpVersionSource(http, prometheus, m.HttpVersion(type="http"), '{job="other"}', "instance", 2.0)
        with pytest.raises(SourceError, match="no scrape target"):
            await nobody.versions()
