"""Investigator end to end over respx mocks of the demo stack (Prometheus, LB /logs/tail, PM) with a
tmp SQLite database: the model path against the loopback fake OpenAI server, the corrective retry
and fallbacks, and the offline engine's classification of every fault mode from realistic evidence."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import openai
import pytest
import respx
from prometheus_client import REGISTRY

from oncall.store import incidents
from oncall.store.database import Store
from tests.catalog_support import QUERIES, error_rate_queries
from tests.diagnosis_support import client_view_answers, impact_answer, load_answer, rules_body
from tests.fake_openai import FakeOpenAI, Scripted, text_response, tool_calls_response
from tests.rig import LB, PM, PROM
from tests.support import free_port, load_json_fixture, sql
from tests.test_tools import prom_router, prom_vector

REPLICAS = ["inventory-1", "inventory-2", "inventory-3"]
MiB = 2**20
BUG_LINE = 7
BUGGY_SOURCE = '''"""inventory service (test copy)."""


def apply_discount(item):
    reservation = find_reservation(item)
    price = item["price"]
    return price * reservation.discount


def find_reservation(item):
    return None
'''


# ---------------------------------------------------------------- the mocked demo stack


def log_entry(
    replica: str,
    exception_type: str,
    message: str,
    *,
    file: str,
    line: int,
    function: str,
    route: str,
    age_s: float = 5.0,
) -> dict:
    """An inventory ERROR log line as the stack contract defines it."""
    ts = time.time() - age_s
    return {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)),
        "ts": ts,
        "level": "ERROR",
        "service": "inventory",
        "replica": replica,
        "method": "GET",
        "route": route,
        "status": 500,
        "message": message,
        "exception_type": exception_type,
        "traceback": "Traceback (most recent call last):\n"
        f'  File "/srv/{file}", line {line}, in {function}\n{exception_type}: {message}\n',
        "file": file,
        "line": line,
        "function": function,
        "fault": None,
    }


def flaky_timeouts(n: int) -> list[dict]:
    """The healthy baseline: /random-endpoint's simulated flaky dependency."""
    return [
        log_entry(
            REPLICAS[i % 3],
            "TimeoutError",
            "simulated flaky dependency timed out",
            file="inventory_service.py",
            line=140,
            function="random_endpoint",
            route="/random-endpoint",
            age_s=10 + i,
        )
        for i in range(n)
    ]


@dataclass
class Stack:
    """Evidence the mocked stack serves: per-replica metric values, ERROR logs, PM changes/instances."""

    err: dict[str, float] = field(default_factory=lambda: dict.fromkeys(REPLICAS, 0.011))
    p99: dict[str, float] = field(default_factory=lambda: dict.fromkeys(REPLICAS, 0.024))
    cpu: dict[str, float] = field(default_factory=lambda: dict.fromkeys(REPLICAS, 0.06))
    cpu_per_request: dict[str, float] = field(default_factory=lambda: dict.fromkeys(REPLICAS, 0.0021))
    rss: dict[str, float] = field(default_factory=lambda: dict.fromkeys(REPLICAS, 71 * MiB))
    growth: dict[str, float] = field(default_factory=lambda: dict.fromkeys(REPLICAS, 0.5 * MiB))
    up: dict[str, float] = field(default_factory=lambda: dict.fromkeys(REPLICAS, 1.0))
    restarts: dict[str, float] = field(default_factory=lambda: dict.fromkeys(REPLICAS, 0.0))
    scrape_ok: dict[str, float] | None = None
    rps: float = 20.0
    baseline_rps: float | None = 20.0
    in_flight: dict[str, float] = field(default_factory=dict)
    logs: list[dict] = field(default_factory=lambda: flaky_timeouts(3))
    changes: list[dict] = field(default_factory=list)
    instances: list[dict] = field(
        default_factory=lambda: [
            {
                "name": r,
                "port": 8001 + i,
                "url": f"http://127.0.0.1:{8001 + i}",
                "pid": 1000 + i,
                "state": "running",
                "restarts": 0,
                "fault": {"mode": "none"},
                "started_at": time.time() - 3600,
                "last_exit_code": None,
            }
            for i, r in enumerate(REPLICAS)
        ]
    )

    def prom_answers(self) -> dict[str, list]:
        q = error_rate_queries("1m")

        def per(values):
            return [
                ({"replica": r, "job": "inventory", "instance": f"127.0.0.1:{8001 + REPLICAS.index(r)}"}, v)
                for r, v in values.items()
            ]

        overall = sum(self.err.values()) / len(self.err)
        return {
            q["overall"]: [({}, overall)],
            q["per_replica"]: [({"replica": r}, v) for r, v in self.err.items()],
            q["per_route"]: [({"route": "/items/{item_id}"}, overall), ({"route": "/random-endpoint"}, 0.05)],
            q["rps_per_replica"]: [({"replica": r}, 6.7) for r in self.err],
            QUERIES["p99"]: [({"replica": r}, v) for r, v in self.p99.items()],
            QUERIES["cpu"]: per(self.cpu),
            QUERIES["cpu_per_request"]: [({"replica": r}, v) for r, v in self.cpu_per_request.items()],
            QUERIES["rss"]: per(self.rss),
            QUERIES["rss_growth"]: per(self.growth),
            QUERIES["up"]: per(self.up),
            QUERIES["restarts"]: per(self.restarts),
            QUERIES["scrape_ok"]: per(self.scrape_ok if self.scrape_ok is not None else self.up),
            'inventory_build_info{job="inventory"}': [
                ({"replica": r, "job": "inventory", "service": "inventory", "version": "1.4.0"}, 1) for r in self.up
            ],
            **client_view_answers(dict.fromkeys(self.up, self.rps / len(self.up)), self.err, self.p99, self.in_flight),
        }

    def answer(self, request: httpx.Request) -> httpx.Response:
        """Prometheus' answer to one query: the known ones, the load queries by shape, else its 400 error."""
        query = parse_qs(urlparse(str(request.url)).query)["query"][0]
        per_replica = dict.fromkeys(self.up, self.rps / len(self.up))
        series = load_answer(query, self.rps, self.baseline_rps, per_replica)
        if series is None:
            series = impact_answer(query, self.rps, sum(self.err.values()) / len(self.err))
        if series is not None:
            return httpx.Response(200, json=prom_vector(series))
        return prom_router(self.prom_answers())(request)

    def mock(self, router: respx.Router) -> None:
        router.get(f"{PROM}/api/v1/query").mock(side_effect=self.answer)
        router.get(f"{PROM}/api/v1/rules").mock(return_value=httpx.Response(200, json=rules_body()))
        router.get(f"{LB}/logs/tail").mock(
            side_effect=lambda request: httpx.Response(
                200,
                json={
                    "entries": self.logs[: int(request.url.params["limit"])],
                    "count": len(self.logs),
                    "seconds": int(request.url.params["seconds"]),
                    "limit": int(request.url.params["limit"]),
                },
            )
        )
        router.get(f"{PM}/changes").mock(return_value=httpx.Response(200, json={"changes": self.changes}))
        router.get(f"{PM}/instances").mock(return_value=httpx.Response(200, json={"instances": self.instances}))


def scenario_healthy() -> Stack:
    return Stack()


def scenario_code_bug() -> Stack:
    stack = Stack(err=dict.fromkeys(REPLICAS, 0.79))
    stack.p99 = dict.fromkeys(REPLICAS, 0.009)
    stack.logs = [
        log_entry(
            REPLICAS[i % 3],
            "AttributeError",
            "'NoneType' object has no attribute 'discount'",
            file="inventory_service.py",
            line=BUG_LINE,
            function="apply_discount",
            route="/random-endpoint/error",
            age_s=i * 0.5,
        )
        for i in range(150)
    ]
    stack.logs += flaky_timeouts(4)
    return stack


def scenario_injected_errors() -> Stack:
    stack = Stack()
    stack.err["inventory-2"] = 0.47
    stack.logs = [
        log_entry(
            "inventory-2",
            "InjectedFault",
            "injected fault: errors (p_error=0.5)",
            file="inventory_service.py",
            line=96,
            function="fault_middleware",
            route="/items/{item_id}",
            age_s=i,
        )
        for i in range(60)
    ] + flaky_timeouts(2)
    stack.changes = [
        {
            "ts": time.time() - 90,
            "timestamp": "",
            "kind": "fault",
            "replica": "inventory-2",
            "detail": {"mode": "errors", "p_error": 0.5},
        }
    ]
    return stack


def scenario_latency() -> Stack:
    stack = Stack()
    stack.p99["inventory-3"] = 0.99
    stack.cpu["inventory-3"] = 0.04
    return stack


def scenario_cpu() -> Stack:
    stack = Stack()
    stack.cpu["inventory-1"] = 0.98
    stack.p99["inventory-1"] = 2.45
    return stack


def scenario_cpu_everywhere() -> Stack:
    return Stack(cpu={"inventory-1": 0.97, "inventory-2": 0.95, "inventory-3": 0.99}, p99=dict.fromkeys(REPLICAS, 4.8))


def scenario_memory() -> Stack:
    stack = Stack()
    stack.rss["inventory-2"] = 345 * MiB
    stack.growth["inventory-2"] = 272 * MiB
    return stack


def scenario_crash() -> Stack:
    stack = Stack()
    stack.up["inventory-3"] = 0.0
    stack.restarts["inventory-3"] = 1.0
    for metric in (stack.p99, stack.cpu, stack.rss, stack.growth):
        del metric["inventory-3"]  # a down target has no samples
    now = time.time()
    stack.changes = [
        {"ts": now - 20, "timestamp": "", "kind": "crash", "replica": "inventory-3", "detail": {"exit_code": 3}}
    ]
    stack.instances[2].update(state="restarting", restarts=1, last_exit_code=3, pid=None)
    return stack


def scenario_cpu_diluted() -> Stack:
    """A CPU burn that began 15 s ago: the 1m rate is still well below one core, but an outlier."""
    stack = Stack()
    stack.cpu["inventory-2"] = 0.42
    stack.p99["inventory-2"] = 0.31
    return stack


def scenario_cpu_bound_latency() -> Stack:
    """Low traffic, 80 ms of CPU per request on inventory-2 (measured on the demo stack): far below one
    core, but its CPU stands out from its peer's and its p99 is high."""
    stack = Stack(
        err={"inventory-1": 0.0, "inventory-2": 0.01},
        p99={"inventory-1": 0.09, "inventory-2": 2.41},
        cpu={"inventory-1": 0.0049, "inventory-2": 0.1326},
        rss={"inventory-1": 59990016.0, "inventory-2": 63188992.0},
        growth={"inventory-1": 310618.8, "inventory-2": 3869245.4},
        up={"inventory-1": 1.0, "inventory-2": 1.0},
        restarts={"inventory-1": 0.0, "inventory-2": 0.0},
    )
    stack.instances = stack.instances[:2]
    return stack


def scenario_cpu_rising() -> Stack:
    """80 ms of CPU per request on inventory-2 for 15 s (values measured on the demo stack): the 1m rate
    is far below one core and p99 still normal, but its CPU is 30x its peer's."""
    stack = scenario_cpu_bound_latency()
    stack.cpu = {"inventory-1": 0.0046, "inventory-2": 0.1563}
    stack.p99 = {"inventory-1": 0.0244, "inventory-2": 0.0995}
    return stack


def scenario_crash_recovered() -> Stack:
    """inventory-2 crashed 40 s ago and is serving again; the crash fault logged its exit notice."""
    stack = Stack()
    stack.restarts["inventory-2"] = 1.0
    now = time.time()
    stack.changes = [
        {"ts": now - 39, "timestamp": "", "kind": "restart", "replica": "inventory-2", "detail": {"attempt": 1}},
        {
            "ts": now - 40,
            "timestamp": "",
            "kind": "crash",
            "replica": "inventory-2",
            "detail": {"pid": 4711, "exit_code": 3, "uptime_s": 30.2},
        },
        {"ts": now - 41, "timestamp": "", "kind": "fault", "replica": "inventory-2", "detail": {"mode": "crash"}},
    ]
    stack.instances[1].update(restarts=1, last_exit_code=3)
    for age in (40.3, 40.2, 40.1, 40.0):
        entry = log_entry(
            "inventory-2",
            "InjectedFault",
            "injected fault: crash (process exits with code 3)",
            file="",
            line=0,
            function="",
            route="/faults",
            age_s=age,
        )
        entry.update(file=None, line=None, function=None, traceback="", status=200, method="POST")
        stack.logs.insert(0, entry)
    return stack


def scenario_cpu_saturated_scrapes_failing() -> Stack:
    """Every replica's event loop is saturated so scrapes time out (up == 0), yet the process manager
    reports the processes running with no crash or restart: CPU saturation, not a crash."""
    stack = scenario_cpu_everywhere()
    stack.up = dict.fromkeys(REPLICAS, 0.0)
    return stack


def scenario_cpu_all_replicas_early() -> Stack:
    """70 ms of CPU per request on every replica for 15 s: the 1m CPU rate is still diluted and no replica
    stands out, but every request costs tens of ms of CPU while p99 is high: computing, not waiting."""
    return Stack(
        p99=dict.fromkeys(REPLICAS, 2.4),
        cpu=dict.fromkeys(REPLICAS, 0.35),
        cpu_per_request=dict.fromkeys(REPLICAS, 0.041),
    )


def scenario_latency_all_replicas() -> Stack:
    """900 ms added latency everywhere: p99 high, CPU per request unchanged."""
    return Stack(p99=dict.fromkeys(REPLICAS, 0.99), cpu=dict.fromkeys(REPLICAS, 0.05))


def scenario_crash_after_an_earlier_crash() -> Stack:
    """inventory-2 crashed 20 s ago; inventory-1 and inventory-3 crashed in an earlier, separate event 160 s ago."""
    stack = Stack()
    now = time.time()
    stack.changes = [
        {"ts": now - 20, "timestamp": "", "kind": "crash", "replica": "inventory-2", "detail": {"exit_code": 3}},
        {"ts": now - 160, "timestamp": "", "kind": "crash", "replica": "inventory-1", "detail": {"exit_code": 3}},
        {"ts": now - 160, "timestamp": "", "kind": "crash", "replica": "inventory-3", "detail": {"exit_code": 3}},
    ]
    stack.restarts = dict.fromkeys(REPLICAS, 1.0)
    for instance in stack.instances:
        instance.update(restarts=1, last_exit_code=3)
    return stack


def scenario_errors_one_replica_after_errors_everywhere() -> Stack:
    """inventory-2 fails with injected errors now; inventory-1 logged the same InjectedFault minutes ago
    (an earlier fault, cleared) and its error ratio is at baseline."""
    stack = Stack()
    stack.err["inventory-2"] = 0.6
    stack.logs = [
        log_entry(
            "inventory-2",
            "InjectedFault",
            "injected fault: errors (p_error=0.8)",
            file="inventory_service.py",
            line=96,
            function="fault_middleware",
            route="/items/{item_id}",
            age_s=i * 0.5,
        )
        for i in range(60)
    ]
    stack.logs += [
        log_entry(
            "inventory-1",
            "InjectedFault",
            "injected fault: errors (p_error=0.6)",
            file="inventory_service.py",
            line=96,
            function="fault_middleware",
            route="/items/{item_id}",
            age_s=120 + i,
        )
        for i in range(40)
    ]
    return stack


def scenario_latency_after_an_old_crash() -> Stack:
    """inventory-2 crashed and recovered 5 minutes ago; now every replica is slow while CPU stays low."""
    stack = scenario_latency_all_replicas()
    stack.changes = [
        {
            "ts": time.time() - 330,
            "timestamp": "",
            "kind": "crash",
            "replica": "inventory-2",
            "detail": {"exit_code": 3},
        }
    ]
    stack.instances[1].update(restarts=1, last_exit_code=3)
    return stack


def scenario_latency_and_injected() -> Stack:
    stack = scenario_injected_errors()
    stack.p99["inventory-3"] = 0.8
    return stack


# ---------------------------------------------------------------- runtime and incident


@pytest.fixture
def make_rig(tmp_path: Path, rig_factory):
    """rig_factory (tests/rig.py) with the buggy service source in CODE_ROOT."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "inventory_service.py").write_text(BUGGY_SOURCE)
    return rig_factory


async def insert_incident(store: Store, service: str = "inventory", starts_at: str | None = None) -> int:
    """Store an incident with the alert of a real Alertmanager webhook (fixtures/alertmanager/req_002.json),
    relabelled as an alert of the catalog's ``service`` (``service`` and ``job`` labels), started at ``starts_at``
    (RFC 3339) when given."""
    body = load_json_fixture("alertmanager/req_002.json")["body"]
    for labels in [body["groupLabels"], body["commonLabels"], *(a["labels"] for a in body["alerts"])]:
        labels.update(service=service, job=service)
    now = time.time()
    async with store.write() as conn:
        incident_id = await incidents.add_if_absent(
            conn,
            {
                "group_key": body["groupKey"],
                "title": body["commonAnnotations"]["summary"],
                "service": service,
                "severity": "critical",
                "group_labels": body["groupLabels"],
                "common_labels": body["commonLabels"],
                "common_annotations": body["commonAnnotations"],
                "created_at": now,
                "updated_at": now,
            },
        )
        for alert in body["alerts"]:
            await incidents.add_alert(
                conn,
                {
                    "incident_id": incident_id,
                    "fingerprint": alert["fingerprint"],
                    "alertname": alert["labels"]["alertname"],
                    "status": alert["status"],
                    "labels": alert["labels"],
                    "annotations": alert["annotations"],
                    "starts_at": starts_at or alert["startsAt"],
                    "ends_at": alert["endsAt"],
                    "generator_url": alert["generatorURL"],
                    "first_seen_at": now,
                    "last_seen_at": now,
                },
            )
    return incident_id


async def stored_incident(store: Store, incident_id: int) -> dict[str, Any]:
    async with store.read() as conn:
        row = await incidents.get(conn, incident_id)
    assert row is not None
    return row


# ---------------------------------------------------------------- offline engine classification


@pytest.mark.parametrize(
    ("scenario", "fault_type", "replicas"),
    [
        (scenario_healthy, "none", []),
        (scenario_code_bug, "code_bug", REPLICAS),
        (scenario_injected_errors, "injected_errors", ["inventory-2"]),
        (scenario_latency, "latency", ["inventory-3"]),
        (scenario_cpu, "cpu_saturation", ["inventory-1"]),
        (scenario_cpu_everywhere, "cpu_saturation", REPLICAS),
        (scenario_memory, "memory_pressure", ["inventory-2"]),
        (scenario_crash, "instance_crash", ["inventory-3"]),
        (scenario_cpu_diluted, "cpu_saturation", ["inventory-2"]),
        (scenario_cpu_bound_latency, "cpu_saturation", ["inventory-2"]),
        (scenario_cpu_rising, "cpu_saturation", ["inventory-2"]),
        (scenario_crash_recovered, "instance_crash", ["inventory-2"]),
        (scenario_cpu_saturated_scrapes_failing, "cpu_saturation", REPLICAS),
        (scenario_cpu_all_replicas_early, "cpu_saturation", REPLICAS),
        (scenario_latency_all_replicas, "latency", REPLICAS),
        (scenario_crash_after_an_earlier_crash, "instance_crash", ["inventory-2"]),
        (scenario_errors_one_replica_after_errors_everywhere, "injected_errors", ["inventory-2"]),
        (scenario_latency_after_an_old_crash, "latency", REPLICAS),
    ],
)
async def test_offline_engine_classifies_fault_modes(make_rig, scenario, fault_type: str, replicas: list[str]) -> None:
    rig = make_rig()
    incident_id = await insert_incident(rig.store)
    with respx.mock(assert_all_called=False) as router:
        scenario().mock(router)
        diagnosis = await rig.investigate(incident_id)
    assert diagnosis.fault_type.value == fault_type, diagnosis.model_dump_json(indent=1)
    assert diagnosis.affected_replicas == replicas
    assert diagnosis.engine == "offline"
    assert diagnosis.evidence and all(e.tool and e.query for e in diagnosis.evidence)
    stored = await stored_incident(rig.store, incident_id)
    assert stored["investigation_status"] == "done" and stored["diagnosed_at"] is not None
    assert stored["diagnosis"]["fault_type"] == fault_type
    calls = await sql(
        rig.store, "SELECT tool, round, ok FROM tool_calls WHERE incident_id = :id ORDER BY id", id=incident_id
    )
    round1 = [c["tool"] for c in calls if c["round"] == 1]
    assert sorted(set(round1)) == [
        "compute_error_rate",
        "evaluate_alert_rule",
        "fetch_logs",
        "find_similar_incidents",
        "get_client_view",
        "get_deployed_versions",
        "get_load",
        "get_recent_changes",
        "query_prometheus",
    ]
    # the incident's alert (TargetDown) has no rule in this Prometheus: only that call fails, and it costs nothing
    assert round1.count("query_prometheus") == len(QUERIES)
    assert all(c["ok"] for c in calls if c["tool"] != "evaluate_alert_rule")
    assert [c["tool"] for c in calls][-2:] == ["send_diagnosis", "measure_impact"]  # the agent measures the impact
    if fault_type == "none":
        assert diagnosis.priority == "P4" and diagnosis.affected_file is None
    else:
        assert diagnosis.priority in ("P1", "P2", "P3")


async def test_offline_null_dereference_names_file_and_line(make_rig) -> None:
    rig = make_rig()
    incident_id = await insert_incident(rig.store)
    with respx.mock(assert_all_called=False) as router:
        scenario_code_bug().mock(router)
        diagnosis = await rig.investigate(incident_id)
    assert diagnosis.fault_type.value == "code_bug"
    assert (diagnosis.affected_file, diagnosis.affected_line) == ("inventory_service.py", BUG_LINE)
    assert diagnosis.priority == "P1"  # 79 % of requests fail on every replica
    assert "AttributeError" in diagnosis.summary and "apply_discount" in diagnosis.summary
    code_evidence = [e for e in diagnosis.evidence if e.tool == "fetch_code_from_github"]
    assert code_evidence and "reservation.discount" in code_evidence[0].finding
    code_calls = await sql(
        rig.store, "SELECT round, arguments, result FROM tool_calls WHERE tool = 'fetch_code_from_github'"
    )
    assert len(code_calls) == 1 and code_calls[0]["round"] == 2
    assert json.loads(code_calls[0]["arguments"])["line"] == BUG_LINE


async def test_offline_lists_a_second_fault_as_a_secondary_hypothesis(make_rig) -> None:
    rig = make_rig()
    incident_id = await insert_incident(rig.store)
    with respx.mock(assert_all_called=False) as router:
        scenario_latency_and_injected().mock(router)
        diagnosis = await rig.investigate(incident_id)
    # two independent faults: the headline names one fault and its replicas only; the other is a secondary
    # hypothesis with its own replicas and evidence (its own alert starts its own incident)
    assert diagnosis.fault_type.value == "injected_errors" and diagnosis.affected_replicas == ["inventory-2"]
    head, *others = diagnosis.hypotheses
    assert (head.fault_type.value, head.affected_replicas, head.confidence) == (
        "injected_errors",
        ["inventory-2"],
        diagnosis.confidence,
    )
    [latency] = [h for h in others if h.fault_type.value == "latency"]
    assert latency.affected_replicas == ["inventory-3"] and latency.evidence_for
    assert "latency" in diagnosis.root_cause and "inventory-3" in diagnosis.root_cause
    assert any("inventory-3" in step for step in diagnosis.next_steps)


async def test_offline_stopped_exceptions_are_context_not_the_cause(make_rig) -> None:
    """A code bug's exceptions that stopped minutes ago are still in the log window; the system is healthy now."""
    rig = make_rig()
    incident_id = await insert_incident(rig.store)
    stack = scenario_code_bug()
    stack.err = dict.fromkeys(REPLICAS, 0.01)
    for entry in stack.logs:
        entry["ts"] -= 150
    with respx.mock(assert_all_called=False) as router:
        stack.mock(router)
        diagnosis = await rig.investigate(incident_id)
    assert diagnosis.fault_type.value == "none" and diagnosis.affected_file is None
    assert any("Earlier errors, stopped" in step and "AttributeError" in step for step in diagnosis.next_steps)


async def test_offline_is_unknown_when_tools_fail(make_rig) -> None:
    rig = make_rig()
    incident_id = await insert_incident(rig.store)
    with respx.mock(assert_all_called=False) as router:
        router.get(f"{PROM}/api/v1/query").mock(return_value=httpx.Response(503, text="service unavailable"))
        router.get(f"{LB}/logs/tail").mock(side_effect=httpx.ConnectError("connection refused"))
        router.get(f"{PM}/changes").mock(side_effect=httpx.ConnectError("connection refused"))
        router.get(f"{PM}/instances").mock(side_effect=httpx.ConnectError("connection refused"))
        diagnosis = await rig.investigate(incident_id)
    assert diagnosis.fault_type.value == "unknown"
    assert diagnosis.confidence <= 0.3
    assert diagnosis.affected_replicas == []
    failed = await sql(rig.store, "SELECT tool, error FROM tool_calls WHERE ok = 0")
    tools = {
        "fetch_logs",
        "compute_error_rate",
        "get_recent_changes",
        "get_deployed_versions",
        "get_client_view",
        "get_load",
        "evaluate_alert_rule",
        "measure_impact",
    }
    assert len(failed) == len(tools) + len(QUERIES) and {f["tool"] for f in failed} == tools | {"query_prometheus"}
    assert any("HTTP 503" in f["error"] for f in failed)


# ---------------------------------------------------------------- the model path


def diagnosis_args(**overrides: Any) -> dict:
    args = {
        "summary": "Injected errors on inventory-2",
        "root_cause": "inventory-2 answers 500 with InjectedFault",
        "fault_type": "injected_errors",
        "affected_service": "inventory",
        "affected_replicas": ["inventory-2"],
        "priority": "P2",
        "confidence": 0.86,
        "suggested_fix": "Reset the fault on inventory-2",
        "next_steps": ['POST /faults {"mode": "none"} on inventory-2'],
        "evidence": [
            {
                "tool": "fetch_logs",
                "query": "GET /logs/tail?seconds=300",
                "finding": "60 x InjectedFault on inventory-2",
            }
        ],
    }
    return {**args, **overrides}


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


async def test_llm_investigation_runs_tools_and_stores_diagnosis(make_rig, fake: FakeOpenAI) -> None:
    rig = make_rig(OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="sk-test-secret-123", OPENAI_MODEL="gpt-4o")
    incident_id = await insert_incident(rig.store)
    fake.add(
        tool_calls_response(
            [
                ("fetch_logs", {"seconds": 300, "limit": 200}),
                ("compute_error_rate", {"window": "1m"}),
                ("query_prometheus", {"query": QUERIES["up"]}),
            ],
            prompt_tokens=900,
            completion_tokens=80,
        ),
        tool_calls_response([("send_diagnosis", diagnosis_args())], prompt_tokens=2100, completion_tokens=190),
    )

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = (
        sample("oncall_llm_tokens_total", kind="prompt"),
        sample("oncall_llm_tokens_total", kind="completion"),
        sample("oncall_investigations_total", engine="openai", outcome="injected_errors"),
        sample("oncall_tool_call_duration_seconds_count", tool="fetch_logs", result="ok"),
    )
    with respx.mock(assert_all_called=False) as router:
        scenario_injected_errors().mock(router)
        diagnosis = await rig.investigate(incident_id)
    after = (
        sample("oncall_llm_tokens_total", kind="prompt"),
        sample("oncall_llm_tokens_total", kind="completion"),
        sample("oncall_investigations_total", engine="openai", outcome="injected_errors"),
        sample("oncall_tool_call_duration_seconds_count", tool="fetch_logs", result="ok"),
    )
    assert [a - b for a, b in zip(after, before, strict=False)] == [3000, 270, 1, 1]

    assert diagnosis.engine == "openai:gpt-4o"
    assert diagnosis.fault_type.value == "injected_errors" and diagnosis.affected_replicas == ["inventory-2"]
    assert fake.auth_headers[0] == "Bearer sk-test-secret-123"
    first = fake.requests[0]
    assert first["model"] == "gpt-4o" and first["temperature"] == 0.1
    assert "send_diagnosis" in {t["function"]["name"] for t in first["tools"]}
    user = first["messages"][1]["content"]
    assert "TargetDown" in user and "2026-11-22T07:09:50.568Z" in user and "runbook_url" in user
    tool_messages = [m for m in fake.requests[1]["messages"] if m["role"] == "tool"]
    assert len(tool_messages) == 3
    assert "InjectedFault" in tool_messages[0]["content"]
    assert '"inventory-2":0.47' in tool_messages[1]["content"]

    [inv] = await sql(rig.store, "SELECT * FROM investigations WHERE incident_id = :id", id=incident_id)
    assert (inv["engine"], inv["status"], inv["rounds"]) == ("openai:gpt-4o", "done", 2)
    assert (inv["prompt_tokens"], inv["completion_tokens"]) == (3000, 270)
    calls = await sql(
        rig.store,
        "SELECT tool, round, ok, investigation_id, duration_s FROM tool_calls WHERE incident_id = :id ORDER BY id",
        id=incident_id,
    )
    assert [(c["tool"], c["round"]) for c in calls] == [
        ("fetch_logs", 1),
        ("compute_error_rate", 1),
        ("query_prometheus", 1),
        ("send_diagnosis", 2),
        ("measure_impact", 3),
    ]
    assert all(c["ok"] and c["investigation_id"] == inv["id"] and c["duration_s"] >= 0 for c in calls)
    stored = await stored_incident(rig.store, incident_id)
    assert stored["diagnosis"]["engine"] == "openai:gpt-4o" and stored["investigation_status"] == "done"
    kinds = [
        r["kind"]
        for r in (await sql(rig.store, "SELECT kind FROM timeline WHERE incident_id = :id ORDER BY id", id=incident_id))
    ]
    assert kinds == ["investigation_started", "diagnosis", "notified"]  # the scheduler sends the diagnosis too


async def test_invalid_model_output_gets_one_retry_then_offline_fallback(make_rig, fake: FakeOpenAI) -> None:
    rig = make_rig(OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="sk-test-secret-123")
    incident_id = await insert_incident(rig.store)
    fake.add(
        text_response("Probably the database. Restart everything."),
        tool_calls_response([("send_diagnosis", diagnosis_args(fault_type="database", confidence=1.7))]),
        text_response("I am sure it is the database."),
    )
    with respx.mock(assert_all_called=False) as router:
        scenario_memory().mock(router)
        diagnosis = await rig.investigate(incident_id)

    assert len(fake.requests) == 3
    corrective = fake.requests[1]["messages"][-1]
    assert corrective["role"] == "user" and "send_diagnosis" in corrective["content"]
    rejected = [m for m in fake.requests[2]["messages"] if m["role"] == "tool"]
    assert "fault_type" in rejected[-1]["content"] and "confidence" in rejected[-1]["content"]

    assert diagnosis.engine == "offline" and diagnosis.fault_type.value == "memory_pressure"
    assert diagnosis.affected_replicas == ["inventory-2"]
    invs = await sql(
        rig.store,
        "SELECT engine, status, error, rounds, prompt_tokens FROM investigations WHERE incident_id = :id ORDER BY id",
        id=incident_id,
    )
    assert [(i["engine"], i["status"]) for i in invs] == [("openai:gpt-4o", "failed"), ("offline", "done")]
    assert (
        "without a valid send_diagnosis" in invs[0]["error"] and invs[0]["rounds"] == 3 and invs[0]["prompt_tokens"] > 0
    )
    fallback = await sql(
        rig.store,
        "SELECT detail FROM timeline WHERE incident_id = :id AND kind = 'investigation_fallback'",
        id=incident_id,
    )
    assert len(fallback) == 1 and "without a valid send_diagnosis" in json.loads(fallback[0]["detail"])["reason"]


async def test_model_down_falls_back_to_offline(make_rig) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    rig = make_rig(OPENAI_BASE_URL=dead, OPENAI_API_KEY="sk-test-secret-123")
    incident_id = await insert_incident(rig.store)
    with respx.mock(assert_all_called=False) as router:
        scenario_crash().mock(router)
        diagnosis = await rig.investigate(incident_id)
    assert diagnosis.engine == "offline" and diagnosis.fault_type.value == "instance_crash"
    assert diagnosis.affected_replicas == ["inventory-3"]
    [failed] = await sql(rig.store, "SELECT error FROM investigations WHERE status = 'failed'")
    assert "APIConnectionError" in failed["error"]
    everything = json.dumps(await sql(rig.store, "SELECT * FROM timeline")) + json.dumps(
        await sql(rig.store, "SELECT * FROM investigations")
    )
    assert "sk-test-secret-123" not in everything


async def test_model_timeout_falls_back_to_offline(make_rig, fake: FakeOpenAI) -> None:
    rig = make_rig()
    incident_id = await insert_incident(rig.store)
    fake.add(Scripted(text_response("too late"), delay_s=1.5))
    client = openai.AsyncOpenAI(api_key="sk-test", base_url=fake.base_url, timeout=0.3, max_retries=0)
    with respx.mock(assert_all_called=False) as router:
        scenario_latency().mock(router)
        diagnosis = await rig.investigate(incident_id, client)
    assert diagnosis.engine == "offline" and diagnosis.fault_type.value == "latency"
    [failed] = await sql(rig.store, "SELECT engine, error FROM investigations WHERE status = 'failed'")
    assert failed["engine"] == "openai:gpt-4o" and "APITimeoutError" in failed["error"]


async def test_slow_model_investigation_is_cut_off_and_offline_answers(make_rig, fake: FakeOpenAI) -> None:
    """A model that keeps calling tools, 0.4 s per round, never finishes within INVESTIGATION_TIMEOUT_S=1."""
    rig = make_rig(INVESTIGATION_TIMEOUT_S="1")
    incident_id = await insert_incident(rig.store)
    for _ in range(10):
        fake.add(Scripted(tool_calls_response([("query_prometheus", {"query": "up"})]), delay_s=0.4))
    client = openai.AsyncOpenAI(api_key="sk-test", base_url=fake.base_url, timeout=5, max_retries=0)
    with respx.mock(assert_all_called=False) as router:
        scenario_latency().mock(router)
        diagnosis = await rig.investigate(incident_id, client)
    assert diagnosis.engine == "offline" and diagnosis.fault_type.value == "latency"
    [failed] = await sql(rig.store, "SELECT error FROM investigations WHERE status = 'failed'")
    assert failed["error"] == "TimeoutError: no diagnosis within INVESTIGATION_TIMEOUT_S=1 s"
    assert len(fake.requests) < 10


async def test_unknown_incident_raises(make_rig) -> None:
    with pytest.raises(LookupError):
        await make_rig().investigate(999)


async def test_offline_code_bug_after_errors_subsided(make_rig) -> None:
    rig = make_rig()
    incident_id = await insert_incident(rig.store)
    stack = scenario_code_bug()
    stack.err = dict.fromkeys(REPLICAS, 0.01)  # the failing traffic stopped; the logs still hold the exceptions
    with respx.mock(assert_all_called=False) as router:
        stack.mock(router)
        diagnosis = await rig.investigate(incident_id)
    assert diagnosis.fault_type.value == "code_bug" and diagnosis.affected_line == BUG_LINE
    assert "back at baseline" in diagnosis.root_cause
    assert diagnosis.confidence < 0.7
