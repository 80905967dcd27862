"""Investigations chosen by the catalog, over respx mocks of the demo stack: a deploy shortly before the onset
named as the cause (and when it is not), an alert outside the catalog investigated through its own rule,
and the model seeing the service's catalog entry in its prompt and tool descriptions."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
import pytest
import respx

from tests.fake_openai import FakeOpenAI, tool_calls_response
from tests.rig import PROM
from tests.support import load_json_fixture, sql
from tests.test_investigation import (
    BUG_LINE,
    REPLICAS,
    Stack,
    diagnosis_args,
    insert_incident,
    make_rig,  # noqa: F401 - the fixture
    scenario_code_bug,
    scenario_cpu_saturated_scrapes_failing,
    scenario_injected_errors,
)
from tests.test_tools import prom_router, prom_vector


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def deploys(now: float, *, ago: float, to_version: str = "1.4.1") -> list[dict]:
    """A rolling deploy 1.4.0 -> ``to_version`` of every replica, the first ``ago`` seconds before ``now``."""
    return [
        {
            "ts": now - ago + 2 * i,
            "timestamp": "",
            "kind": "deploy",
            "replica": replica,
            "detail": {"from_version": "1.4.0", "to_version": to_version, "deploy_id": 1, "ok": True},
        }
        for i, replica in enumerate(REPLICAS)
    ]


def versioned(stack: Stack, version: str) -> Stack:
    for entry in stack.logs:
        entry["version"] = version
    return stack


async def investigate(rig, stack: Stack, starts_at: float, service: str = "inventory"):
    incident_id = await insert_incident(rig.store, service, rfc3339(starts_at))
    with respx.mock(assert_all_called=False) as router:
        stack.mock(router)
        return await rig.investigate(incident_id)


async def test_a_deploy_before_the_onset_is_named_with_the_rollback(make_rig) -> None:  # noqa: F811
    now = time.time()
    stack = versioned(scenario_code_bug(), "1.4.1")
    stack.changes = [*deploys(now, ago=100), {"ts": now - 400, "kind": "scale", "replica": None, "detail": {"to": 3}}]
    diagnosis = await investigate(make_rig(), stack, starts_at=now - 60)
    assert diagnosis.fault_type.value == "deploy_regression", diagnosis.model_dump_json(indent=1)
    assert diagnosis.affected_replicas == REPLICAS
    assert (diagnosis.affected_file, diagnosis.affected_line) == ("inventory_service.py", BUG_LINE)
    assert (
        "1.4.1" in diagnosis.summary and "from 1.4.0" in diagnosis.summary and "before the onset" in diagnosis.summary
    )
    [action] = diagnosis.proposed_actions
    assert (action.action, action.target, action.params) == ("rollback", "all", {"version": "1.4.0"})
    assert "1.4.1" in action.rationale
    assert "Roll back to 1.4.0" in diagnosis.suggested_fix
    assert [c.kind for c in diagnosis.changes] == ["scale", "deploy", "deploy", "deploy"]  # time order
    offsets = [c.offset_s for c in diagnosis.changes]
    assert offsets == sorted(offsets) and offsets[0] == -340.0 and -41 < offsets[1] < -39
    assert diagnosis.changes[1].summary == "deploy inventory-1 1.4.0 -> 1.4.1"
    assert diagnosis.onset_at is not None and abs(diagnosis.onset_at - (now - 60)) < 1
    assert any(e.tool == "fetch_code_from_github" for e in diagnosis.evidence)


def deployed_long_ago(now: float) -> Stack:
    stack = versioned(scenario_code_bug(), "1.4.1")
    stack.changes = deploys(now, ago=3600)
    return stack


def exception_of_another_version(now: float) -> Stack:
    stack = versioned(scenario_code_bug(), "1.4.0")  # the failing replicas log the version before the deploy
    stack.changes = deploys(now, ago=100)
    return stack


def injected_after_the_deploy(now: float) -> Stack:
    stack = scenario_injected_errors()
    stack.changes = [*deploys(now, ago=300), *stack.changes]
    return stack


@pytest.mark.parametrize(
    ("scenario", "fault_type"),
    [
        (deployed_long_ago, "code_bug"),
        (exception_of_another_version, "code_bug"),
        (injected_after_the_deploy, "injected_errors"),
    ],
)
async def test_a_deploy_is_not_blamed_when_something_else_explains_the_errors(
    make_rig,  # noqa: F811
    scenario,
    fault_type: str,
) -> None:
    now = time.time()
    diagnosis = await investigate(make_rig(), scenario(now), starts_at=now - 60)
    assert diagnosis.fault_type.value == fault_type and diagnosis.proposed_actions == []
    assert any(c.kind == "deploy" for c in diagnosis.changes)  # still listed in the timeline


def rules_answer() -> dict:
    return load_json_fixture("prometheus/prom_api_v1_rules.json")


async def test_alert_outside_the_catalog_is_investigated_through_its_rule(make_rig) -> None:  # noqa: F811
    rig = make_rig()
    incident_id = await insert_incident(rig.store, "checkout")
    down = [({"job": "checkout", "instance": f"127.0.0.1:1955{n}"}, 0) for n in (6, 7)]
    with respx.mock(assert_all_called=False) as router:
        answers = {'up{job="checkout"}': down, 'up{job="demo"} == 0': down}
        router.get(f"{PROM}/api/v1/query").mock(side_effect=prom_router(answers))
        router.get(f"{PROM}/api/v1/rules").mock(return_value=httpx.Response(200, json=rules_answer()))
        diagnosis = await rig.investigate(incident_id)
    assert diagnosis.affected_service == "checkout"
    assert diagnosis.summary.startswith("checkout is not in the service catalog: ")
    assert diagnosis.fault_type.value == "instance_crash"  # up == 0: the generic signal it could read
    assert diagnosis.affected_replicas == ["127.0.0.1:19556", "127.0.0.1:19557"]
    rule = next(e for e in diagnosis.evidence if e.tool == "evaluate_alert_rule")
    assert rule.query == 'up{job="demo"} == 0' and "2 series breach TargetDown" in rule.finding
    assert diagnosis.catalog_gaps[0].startswith("no service in the catalog")
    assert "no logs source (no catalog entry)" in diagnosis.catalog_gaps
    assert "only the alert rule's own expression" in diagnosis.root_cause
    tools = {
        c["tool"] for c in await sql(rig.store, "SELECT tool FROM tool_calls WHERE incident_id = :i", i=incident_id)
    }
    assert tools == {
        "evaluate_alert_rule",
        "query_prometheus",
        "find_similar_incidents",
        "send_diagnosis",
        "measure_impact",  # the agent's own measurement after the engine's diagnosis
    }


async def test_the_model_sees_the_service_from_the_catalog(make_rig) -> None:  # noqa: F811
    with FakeOpenAI() as fake:
        rig = make_rig(OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="sk-test")
        fake.add(tool_calls_response([("send_diagnosis", diagnosis_args(affected_service="payments"))]))
        incident_id = await insert_incident(rig.store, "payments")
        with respx.mock(assert_all_called=False) as router:
            router.get(f"{PROM}/api/v1/query").mock(return_value=httpx.Response(200, json=prom_vector([])))
            diagnosis = await rig.investigate(incident_id)
        assert diagnosis.engine == "openai:gpt-4o"
        request = fake.requests[0]
    system = request["messages"][0]["content"]
    assert "Service: payments - Payments API" in system and "metrics instrumentator" in system
    assert "Owner team: payments" in system and "Missing from the catalog: no `changes` source" in system
    tools = {t["function"]["name"]: t["function"]["description"] for t in request["tools"]}
    assert "get_recent_changes" not in tools and "get_deployed_versions" in tools
    assert "/*.log" in tools["fetch_logs"] and "payments" in tools["fetch_logs"]
    assert 'status="5xx"' in tools["compute_error_rate"] and "`instance`" in tools["compute_error_rate"]
    assert "http_request_duration_highr_seconds_bucket" in tools["query_prometheus"]


async def test_the_time_ordered_timeline_still_names_the_newest_crash(make_rig) -> None:  # noqa: F811
    """The changes reach the detectors oldest first; a replica that crashed twice is reported by its newest crash."""
    now = time.time()
    stack = Stack()
    stack.restarts["inventory-2"] = 1.0
    stack.changes = [
        {"ts": now - 20, "kind": "crash", "replica": "inventory-2", "detail": {"exit_code": 3}},
        {"ts": now - 50, "kind": "crash", "replica": "inventory-2", "detail": {"exit_code": 3}},
    ]
    diagnosis = await investigate(make_rig(), stack, starts_at=now - 15)
    assert diagnosis.fault_type.value == "instance_crash" and diagnosis.affected_replicas == ["inventory-2"]
    crash = [e.finding for e in diagnosis.evidence if e.finding.startswith("crash of inventory-2")]
    assert crash and crash[0].startswith("crash of inventory-2 20 s ago"), crash
    assert [c.offset_s for c in diagnosis.changes] == [-35.0, -5.0]


async def test_restarts_of_a_deploy_are_not_crashes(make_rig) -> None:  # noqa: F811
    """CPU saturation right after a rolling deploy: the deploy's new processes (Prometheus sees them start)
    are planned, so the saturated replicas' failing scrapes are not taken for a crash."""
    now = time.time()
    stack = scenario_cpu_saturated_scrapes_failing()
    stack.restarts = dict.fromkeys(REPLICAS, 1.0)
    stack.changes = [
        *deploys(now, ago=100, to_version="1.4.0"),
        *[{"ts": now - 30, "kind": "fault", "replica": r, "detail": {"mode": "cpu", "cpu_ms": 70}} for r in REPLICAS],
    ]
    diagnosis = await investigate(make_rig(), stack, starts_at=now - 10)
    assert diagnosis.fault_type.value == "cpu_saturation", diagnosis.model_dump_json(indent=1)
    assert diagnosis.affected_replicas == REPLICAS
