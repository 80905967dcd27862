"""The agent's HTTP API driven with the captured Alertmanager webhooks.

In-process tests run the real FastAPI app (its lifespan included) through httpx's ASGI transport,
with a counting fake investigator and the real outbox (console WhatsApp channel); the subprocess tests
start the agent with uvicorn on a free loopback port.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from on_call_agent import build_services, create_app
from oncall.api.deps import Services
from oncall.diagnosis import Diagnosis, FaultType
from oncall.incidents.applier import RawAlertApplier
from oncall.incidents.body import MAX_ALERT_BODY_BYTES
from oncall.incidents.intake import RawAlertIntake
from oncall.incidents.scheduler import InvestigationScheduler
from oncall.settings import Settings
from oncall.store import investigations
from oncall.store.database import Store
from oncall.tasks import BackgroundTasks
from tests.rig import API_TOKEN
from tests.support import (
    REPO_ROOT,
    free_port,
    migrated_store,
    post_alert,
    post_alert_sync,
    sql,
    sql_exec,
    until_idle,
    wait_http_ok,
    wait_until,
)
from tests.test_ingest import FP_19556, FP_19557, capture, captured_bytes

JSON = {"Content-Type": "application/json"}
API = {"Authorization": f"Bearer {API_TOKEN}"}


class FakeInvestigator:
    """Counts calls; records an engine run and returns an ``unknown`` diagnosis like the real one would.

    ``gate``: when set, each investigation waits for it (to hold an investigation "running").
    """

    first_engine = "fake"

    def __init__(self, store: Store, fail: bool = False) -> None:
        self.store = store
        self.calls: list[int] = []
        self.gate: asyncio.Event | None = None
        self.fail = fail

    async def investigate(self, incident: dict, alerts: list[dict], *, episode: int | None = None) -> Diagnosis:
        incident_id = int(incident["id"])
        self.calls.append(incident_id)
        async with self.store.write() as conn:
            investigation_id = await investigations.start(conn, incident_id, "fake", time.time())
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("model and offline engine both unavailable")
        async with self.store.write() as conn:
            await investigations.finish(conn, investigation_id, "done", time.time())
        return Diagnosis(
            summary="fake",
            root_cause="fake",
            fault_type=FaultType.unknown,
            affected_service="checkout",
            priority="P3",
            confidence=0.1,
            engine="fake",
        )


class Fakes:
    """Services factory for ``create_app``: the real services, with the fake investigator behind the scheduler
    (paging through the agent's escalation chains, and the raw-alert applier waking that scheduler); keeps the
    fake for assertions."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.investigator: FakeInvestigator | None = None

    def __call__(self, settings: Settings, store: Store, http: httpx.AsyncClient, tasks: BackgroundTasks) -> Services:
        services = build_services(settings, store, http, tasks)
        self.investigator = FakeInvestigator(store, fail=self.fail)
        wake = services.outbox.wake
        scheduler = InvestigationScheduler.from_settings(
            settings, store, self.investigator, tasks, on_outcome=wake, escalations=services.scheduler.escalations
        )
        return with_scheduler(services, scheduler)


def with_scheduler(services: Services, scheduler: InvestigationScheduler) -> Services:
    """The services with ``scheduler`` in place of theirs, and a raw-alert applier (and its intake) that wakes it."""
    store, replica = services.store, services.settings.agent_replica_id
    applier = RawAlertApplier(
        store, replica, services.settings.lease_s, on_investigation=scheduler.wake, on_notice=services.outbox.wake
    )
    return replace(services, scheduler=scheduler, applier=applier, intake=RawAlertIntake(store, replica, applier))


async def notices(store: Store) -> list[tuple[int, str]]:
    """The notices written to the outbox, oldest first: ``(incident_id, what)``."""
    rows = await sql(store, "SELECT incident_id, event_key FROM outbox WHERE operation = 'notice' ORDER BY id")
    return [(row["incident_id"], row["event_key"].rsplit(":", 1)[1]) for row in rows]


async def until(predicate, timeout: float = 10.0) -> None:
    """Wait until ``predicate()`` is true (polled every 10 ms)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def make_settings(tmp_path: Path, **env: str) -> Settings:
    """Settings with a temporary database, no env file and unreachable demo-stack URLs."""
    dead = f"http://127.0.0.1:{free_port()}"
    values: dict[str, Any] = {"ONCALL_API_TOKEN": API_TOKEN, **env}
    return Settings(
        _env_file=None, DATABASE_PATH=tmp_path / "oncall.db", LB_URL=dead, PROMETHEUS_URL=dead, PM_URL=dead, **values
    )


@asynccontextmanager
async def agent(settings: Settings, services) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The app with its lifespan running, and a client talking to it in-process."""
    app = create_app(settings, build=services)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://agent", headers=API) as client,
    ):
        yield client, app


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_capture_sequence_over_http(tmp_path: Path) -> None:
    fakes = Fakes()
    duplicates_before = metric("oncall_alert_notifications_total", outcome="duplicate")
    async with agent(make_settings(tmp_path), fakes) as (client, app):
        answers = []
        for seq in range(1, 12):
            answers.append(await post_alert(client, captured_bytes(seq)))
        await until_idle(app.state.services.store)

        incident_id = answers[0]["incident_id"]
        assert [a["status"] for a in answers] == [
            "accepted",
            "duplicate",
            "duplicate",
            "accepted",
            "accepted",
            "accepted",
            "accepted",
            "duplicate",
            "duplicate",
            "accepted",
            "duplicate",
        ]
        assert {a["incident_id"] for a in answers} == {incident_id}
        assert fakes.investigator.calls == [incident_id]
        assert await notices(app.state.services.store) == [(incident_id, "diagnosis"), (incident_id, "resolved")]
        assert metric("oncall_alert_notifications_total", outcome="duplicate") - duplicates_before == 5

        listing = (await client.get("/incidents")).json()
        assert listing["count"] == 1
        summary = listing["incidents"][0]
        assert summary["id"] == incident_id and summary["status"] == "resolved"
        assert summary["group_key"] == capture(1)["body"]["groupKey"]
        assert (summary["alerts_total"], summary["alerts_firing"], summary["fault_type"]) == (2, 0, "unknown")
        assert (await client.get("/incidents", params={"status": "firing"})).json()["incidents"] == []
        assert (await client.get("/incidents", params={"status": "resolved", "limit": 1})).json()["count"] == 1
        assert (await client.get("/incidents", params={"status": "open"})).status_code == 422
        assert (await client.get("/incidents", params={"limit": 0})).status_code == 422

        detail = (await client.get(f"/incidents/{incident_id}")).json()
        assert detail["status"] == "resolved" and detail["resolved_at"] is not None
        assert detail["group_labels"] == {"alertname": "TargetDown", "service": "checkout"}
        assert {a["fingerprint"]: a["status"] for a in detail["alerts"]} == {FP_19557: "resolved", FP_19556: "resolved"}
        assert [a["annotations"]["summary"] for a in detail["alerts"]] == [
            "Target 127.0.0.1:19557 is down",
            "Target 127.0.0.1:19556 is down",
        ]
        assert detail["diagnosis"]["fault_type"] == "unknown"
        assert [i["status"] for i in detail["investigations"]] == ["done"]
        every = [event["kind"] for event in detail["timeline"]]
        assert every.count("paged") == every.count("postmortem") == 1  # level 1 with the diagnosis; the draft
        kinds = [kind for kind in every if kind not in ("notified", "paged", "postmortem")]
        investigation = ("investigation_started", "diagnosis")
        assert [k for k in kinds if k not in investigation] == [
            "created",
            "alert_firing",
            "alert_firing",
            "alert_resolved",
            "alert_resolved",
            "resolved",
        ]
        assert [k for k in kinds if k in investigation] == list(investigation)
        assert detail["tool_calls"] == [] and detail["tickets"] == []
        diagnosis, resolved = detail["messages"]  # console channel: the diagnosis, then the resolved notice
        assert "🚨" in diagnosis["body"] and "resolved after" in resolved["body"]
        assert {m["status"] for m in detail["messages"]} == {"sent"}
        assert (await client.get("/incidents/999")).status_code == 404
        assert (await client.get("/incidents/abc")).status_code == 422

        health = (await client.get("/healthz")).json()
        assert health["status"] == "ok" and health["db"] == "ok" and health["incidents_open"] == 0
        assert health["replica_id"] == app.state.services.settings.agent_replica_id
        assert health["outbox"] == {"pending": 0, "failed": 0, "expired": 0, "oldest_pending_age_s": None}
        assert health["investigations"]["queued"] == 0 and health["investigations"]["running"] == 0
        assert health["integrations"]["twilio"].startswith("disabled")
        exposition = (await client.get("/metrics")).text
        assert 'oncall_alert_notifications_total{outcome="accepted"}' in exposition
        assert "oncall_incidents_open 0.0" in exposition


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"receiver": "agent", ', "not valid JSON"),
        (json.dumps({**capture(1)["body"], "version": "3"}).encode(), "version"),
        (json.dumps({**capture(1)["body"], "alerts": []}).encode(), "alerts"),
    ],
)
async def test_malformed_body_gets_422_with_reason_and_is_stored(tmp_path: Path, body: bytes, reason: str) -> None:
    fakes = Fakes()
    async with agent(make_settings(tmp_path), fakes) as (client, app):
        response = await client.post("/alerts", content=body, headers=JSON)
        assert response.status_code == 422
        answer = response.json()
        assert reason in answer["detail"]
        [raw] = await sql(
            app.state.services.store, "SELECT body, valid, error FROM raw_alerts WHERE id = :id", id=answer["raw_id"]
        )
        assert raw == {"body": body[:1024].decode(), "valid": 0, "error": answer["detail"]}
        assert (await client.get("/incidents")).json()["count"] == 0
        assert fakes.investigator.calls == []


async def test_oversized_body_is_refused(tmp_path: Path) -> None:
    async with agent(make_settings(tmp_path), Fakes()) as (client, app):
        response = await client.post("/alerts", content=b" " * (MAX_ALERT_BODY_BYTES + 1), headers=JSON)
        assert response.status_code == 413
        assert await sql(app.state.services.store, "SELECT id FROM raw_alerts") == []


async def test_bearer_token(tmp_path: Path) -> None:
    async with agent(make_settings(tmp_path, ALERTS_BEARER_TOKEN="s3cret-token"), Fakes()) as (client, app):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
            response = await client.post("/alerts", content=captured_bytes(1), headers={**JSON, **headers})
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
            assert "s3cret" not in response.text
        assert await sql(app.state.services.store, "SELECT id FROM raw_alerts") == []
        ok = await client.post(
            "/alerts", content=captured_bytes(1), headers={**JSON, "Authorization": "Bearer s3cret-token"}
        )
        assert ok.status_code == 202 and ok.json()["status"] == "queued"
        assert "s3cret" not in (await client.get("/healthz")).text


async def test_no_second_investigation_while_one_runs(tmp_path: Path) -> None:
    fakes = Fakes()
    async with agent(make_settings(tmp_path), fakes) as (client, app):
        fakes.investigator.gate = asyncio.Event()
        first = await post_alert(client, captured_bytes(1))
        await until(lambda: fakes.investigator.calls)  # claimed and blocked on the gate
        retry = await post_alert(client, captured_bytes(3))  # Alertmanager's retry
        more = await post_alert(client, captured_bytes(4))  # a second alert fires
        assert (retry["status"], more["status"]) == ("duplicate", "accepted")
        concurrent = await asyncio.gather(*[post_alert(client, captured_bytes(5)) for _ in range(5)])
        assert sorted(r["status"] for r in concurrent) == ["accepted"] + ["duplicate"] * 4
        fakes.investigator.gate.set()
        await until_idle(app.state.services.store)
        assert fakes.investigator.calls == [first["incident_id"]]
        assert await notices(app.state.services.store) == [(first["incident_id"], "diagnosis")]
        detail = (await client.get(f"/incidents/{first['incident_id']}")).json()
        assert [e["detail"].get("fingerprint") for e in detail["timeline"] if e["kind"] == "alert_firing"] == [
            FP_19557,
            FP_19556,
        ]


def group_body(n: int) -> bytes:
    """A captured notification (fixture req_003) moved to its own alert group ``Storm<n>``."""
    body = capture(3)["body"]
    body["groupKey"] = f'{{}}:{{alertname="Storm{n}"}}'
    body["alerts"][0]["labels"]["alertname"] = body["groupLabels"]["alertname"] = f"Storm{n}"
    body["alerts"][0]["fingerprint"] = f"{n:016x}"
    return json.dumps(body).encode()


async def test_investigations_beyond_the_limit_wait_their_turn(tmp_path: Path) -> None:
    fakes = Fakes()
    async with agent(make_settings(tmp_path, MAX_CONCURRENT_INVESTIGATIONS="1"), fakes) as (client, app):
        fakes.investigator.gate = asyncio.Event()
        answers = [await post_alert(client, group_body(n)) for n in range(3)]
        await until(lambda: fakes.investigator.calls)
        await asyncio.sleep(0.1)
        assert fakes.investigator.calls == [answers[0]["incident_id"]]  # the other two wait for the one slot
        fakes.investigator.gate.set()
        await until_idle(app.state.services.store)
        ids = sorted(a["incident_id"] for a in answers)
        assert sorted(fakes.investigator.calls) == ids
        assert sorted(await notices(app.state.services.store)) == [(i, "diagnosis") for i in ids]


async def test_failed_investigation_is_recorded(tmp_path: Path) -> None:
    fakes = Fakes(fail=True)
    async with agent(make_settings(tmp_path), fakes) as (client, app):
        incident_id = (await post_alert(client, captured_bytes(1)))["incident_id"]
        await until_idle(app.state.services.store)
        detail = (await client.get(f"/incidents/{incident_id}")).json()
        assert detail["investigation_status"] == "failed"
        [failed] = [event for event in detail["timeline"] if event["kind"] == "investigation_failed"]
        assert "both unavailable" in failed["detail"]["error"]
        assert await notices(app.state.services.store) == [(incident_id, "investigation_failed")]
        [page] = detail["messages"]
        assert "investigation failed" in page["body"] and "model and offline engine both unavailable" in page["body"]


KILLED_REPLICA = "agent-1"


async def seed_killed_replica(path: Path, lease_until: float) -> tuple[int, int]:
    """A database as a replica killed by ``kill -9`` leaves it: two incidents mid-investigation (claims held by
    ``agent-1`` until ``lease_until``), the second one resolved by its alerts during the investigation, and a
    message still queued in the outbox."""
    store = migrated_store(path)
    now = time.time()
    ids = []
    for key, status in (('{}:{alertname="A"}', "firing"), ('{}:{alertname="B"}', "resolved")):
        await sql_exec(
            store,
            "INSERT INTO incidents (group_key, status, title, group_labels, common_labels, common_annotations,"
            " created_at, updated_at, resolved_at, investigation_status)"
            " VALUES (:key, :status, :key, '{}', '{}', '{}', :now, :now, :resolved, 'running')",
            key=key,
            status=status,
            now=now - 60,
            resolved=now if status == "resolved" else None,
        )
        [row] = await sql(store, "SELECT id FROM incidents WHERE group_key = :key", key=key)
        ids.append(row["id"])
        await sql_exec(
            store,
            "INSERT INTO episodes (incident_id, number, opened_at, resolved_at, resolution, investigation, queued_at,"
            " claimed_by, lease_until, attempts) VALUES (:id, 1, :now, :resolved, :resolution, 'running', :now,"
            " :replica, :lease, 1)",
            id=row["id"],
            now=now - 60,
            resolved=now if status == "resolved" else None,
            resolution="alerts" if status == "resolved" else None,
            replica=KILLED_REPLICA,
            lease=lease_until,
        )
        await sql_exec(
            store,
            "INSERT INTO investigations (incident_id, started_at, status, episode, replica_id)"
            " VALUES (:id, :now, 'running', 1, :replica)",
            id=row["id"],
            now=now - 60,
            replica=KILLED_REPLICA,
        )
    await sql_exec(
        store,
        "INSERT INTO messages (incident_id, direction, channel, to_number, body, status, created_at, updated_at)"
        " VALUES (:id, 'out', 'console', 'console', 'queued before the kill', 'queued', :now, :now)",
        id=ids[0],
        now=now,
    )
    await sql_exec(
        store,
        "INSERT INTO outbox (event_key, channel, operation, incident_id, payload, status, attempts, next_attempt_at,"
        " claimed_by, lease_until, created_at) VALUES ('message:left-over:console:1', 'whatsapp', 'message', :id,"
        " :payload, 'pending', 1, :now, :replica, :lease, :now)",
        id=ids[0],
        payload=json.dumps(
            {"to": "console", "from": None, "body": "queued before the kill", "via": "console", "message_id": 1}
        ),
        now=now,
        replica=KILLED_REPLICA,
        lease=lease_until,
    )
    await store.close()
    return ids[0], ids[1]


@pytest.mark.parametrize("replica_id", [KILLED_REPLICA, "agent-2"], ids=["same-replica-restarted", "other-replica"])
async def test_work_of_a_killed_replica_is_taken_over_and_nothing_is_lost(tmp_path: Path, replica_id: str) -> None:
    """Loss case: a resolution during an investigation, then ``kill -9``. The same replica restarted releases
    its claims at once; another replica takes them over when the lease expired. Either way both incidents
    get their diagnosis, the resolved one its resolved notice after it, and the queued message goes out."""
    settings = make_settings(tmp_path, AGENT_REPLICA_ID=replica_id, LEASE_S="1", WORK_POLL_S="0.1")
    lease_until = time.time() + (60 if replica_id == KILLED_REPLICA else 0.5)
    firing_id, resolved_id = await seed_killed_replica(settings.database_path, lease_until)
    fakes = Fakes()
    async with agent(settings, fakes) as (client, app):
        await wait_until_async(lambda: len(fakes.investigator.calls) == 2)
        await until_idle(app.state.services.store)
        assert sorted(fakes.investigator.calls) == [firing_id, resolved_id]
        assert sorted(await notices(app.state.services.store)) == [
            (firing_id, "diagnosis"),
            (resolved_id, "diagnosis"),
            (resolved_id, "resolved"),
        ]
        for incident_id in (firing_id, resolved_id):
            detail = (await client.get(f"/incidents/{incident_id}")).json()
            assert [i["status"] for i in detail["investigations"]] == ["interrupted", "done"]
            resumed = [e["detail"] for e in detail["timeline"] if e["kind"] == "investigation_resumed"]
            assert resumed == [{"episode": 1, "replica": replica_id, "previous_replica": KILLED_REPLICA, "attempt": 2}]
            [started] = [e["detail"] for e in detail["timeline"] if e["kind"] == "investigation_started"]
            assert started["replica"] == replica_id
            assert detail["diagnosis"]["engine"] == "fake"
        resolved_messages = (await client.get(f"/incidents/{resolved_id}")).json()["messages"]
        assert ["🚨" in m["body"] for m in resolved_messages] == [True, False]
        assert "resolved after" in resolved_messages[1]["body"]
        queued = [m for m in (await client.get(f"/incidents/{firing_id}")).json()["messages"] if "kill" in m["body"]]
        assert [m["status"] for m in queued] == ["sent"]


async def test_raw_alerts_stored_but_never_applied_are_replayed_at_start(tmp_path: Path) -> None:
    """Loss case: the process died between storing a webhook body and applying it. At the next start the
    body is applied, so the incident, its investigation and its page exist as if the POST had finished."""
    settings = make_settings(tmp_path, LEASE_S="1")
    store = migrated_store(settings.database_path)
    body = captured_bytes(1)
    await sql_exec(
        store,
        "INSERT INTO raw_alerts (received_at, body_sha256, body, valid) VALUES (:at, :sha, :body, 0)",
        at=time.time() - 5,
        sha=hashlib.sha256(body).hexdigest(),
        body=body.decode(),
    )
    await store.close()
    fakes = Fakes()
    async with agent(settings, fakes) as (client, app):
        await wait_until_async(lambda: fakes.investigator.calls)
        await until_idle(app.state.services.store)
        [raw] = await sql(app.state.services.store, "SELECT valid, incident_id, error FROM raw_alerts")
        assert raw == {"valid": 1, "incident_id": fakes.investigator.calls[0], "error": None}
        assert await notices(app.state.services.store) == [(raw["incident_id"], "diagnosis")]
        assert metric("oncall_raw_alerts_replayed_total") >= 1
        # The same body posted again (Alertmanager's retry) changes nothing.
        assert (await post_alert(client, body))["status"] == "duplicate"


async def wait_until_async(predicate, timeout: float = 15.0) -> None:
    await until(predicate, timeout)


async def test_acknowledge_and_resolve_by_api(tmp_path: Path) -> None:
    fakes = Fakes()
    async with agent(make_settings(tmp_path), fakes) as (client, app):
        incident_id = (await post_alert(client, captured_bytes(1)))["incident_id"]
        await until_idle(app.state.services.store)
        acked = (await client.post(f"/incidents/{incident_id}/acknowledge", json={"by": "Ravi"})).json()
        assert (acked["acknowledged"], acked["already"]) == (True, False)
        assert (await client.post(f"/incidents/{incident_id}/acknowledge", json={"by": ""})).status_code == 422
        assert (await client.post("/incidents/999/acknowledge")).status_code == 404
        assert (await client.post("/incidents/999/resolve")).status_code == 404
        resolved = (await client.post(f"/incidents/{incident_id}/resolve")).json()
        assert (resolved["resolved"], resolved["already"]) == (True, False)
        assert (await client.post(f"/incidents/{incident_id}/resolve")).json()["already"] is True
        detail = (await client.get(f"/incidents/{incident_id}")).json()
        assert (detail["status"], detail["acknowledged_by"]) == ("resolved", "Ravi")
        timings = detail["phase_timings"]
        phases = {phase["name"]: phase for phase in timings["phases"]}
        assert list(phases) == ["ingest", "investigation", "notification", "acknowledgement", "action", "resolution"]
        assert (phases["acknowledgement"]["ended_at"], phases["resolution"]["ended_at"]) == (
            detail["acknowledged_at"],
            detail["resolved_at"],
        )
        assert timings["time_to_resolve_s"] >= timings["time_to_acknowledge_s"] >= 0
        assert (await client.get("/healthz")).json()["incidents_open"] == 0
        # Alertmanager later reports the alert resolved: the incident is already resolved, no second notice.
        assert (await post_alert(client, captured_bytes(10)))["status"] == "accepted"
        await until_idle(app.state.services.store)
        assert await notices(app.state.services.store) == [(incident_id, "diagnosis")]


def agent_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for an agent subprocess: temp database, no env file, unreachable demo stack."""
    dead = f"http://127.0.0.1:{free_port()}"
    return {
        "ONCALL_ENV_FILE": str(tmp_path / "absent.env"),
        "DATABASE_PATH": str(tmp_path / "agent.db"),
        "LB_URL": dead,
        "PROMETHEUS_URL": dead,
        "PM_URL": dead,
        "OPENAI_API_KEY": "",
        "OPENAI_BASE_URL": "",
        "ONCALL_API_TOKEN": API_TOKEN,
        **extra,
    }


def uvicorn_args(port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "on_call_agent:app", "--host", "127.0.0.1", "--port", str(port)]


def test_invalid_settings_fail_at_start_with_a_clear_message(tmp_path: Path, procs) -> None:
    proc = procs.start(
        "agent",
        uvicorn_args(free_port()),
        env=agent_env(tmp_path, OPENAI_TIMEOUT_S="-1", JIRA_API_TOKEN="do-not-print"),
    )
    assert proc.wait(timeout=30) != 0
    output = procs.log_text("agent")
    assert "invalid agent settings" in output and "OPENAI_TIMEOUT_S" in output
    assert "do-not-print" not in output


@pytest.mark.slow
def test_real_agent_process_end_to_end(tmp_path: Path, procs) -> None:
    """uvicorn on_call_agent:app with the real services: console WhatsApp channel, offline engine."""
    port = free_port()
    procs.start("agent", uvicorn_args(port), env=agent_env(tmp_path))
    base = f"http://127.0.0.1:{port}"
    wait_http_ok(f"{base}/healthz", timeout=30)
    answer = post_alert_sync(base, captured_bytes(1), API)
    assert answer["status"] == "accepted" and answer["received_by"]
    detail = wait_until(
        lambda: (
            (d := httpx.get(f"{base}/incidents/{answer['incident_id']}", headers=API, timeout=5).json())["messages"]
            and d
        ),
        timeout=60,
        interval=0.3,
        what="diagnosis message",
    )
    assert detail["diagnosis"]["engine"] == "offline"
    assert detail["investigations"][0]["status"] in ("done", "failed")
    assert (
        detail["messages"][0]["channel"] == "console" and f"#{answer['incident_id']}" in detail["messages"][0]["body"]
    )
    assert "disabled" in procs.log_text("agent")  # the integration report at start


def test_env_example_documents_every_setting() -> None:
    text = (REPO_ROOT / ".env.example").read_text()
    documented = {
        line.lstrip("# ").split("=", 1)[0]
        for line in text.splitlines()
        if "=" in line and line.lstrip("# ")[:1].isupper()
    }
    aliases = {info.alias for info in Settings.model_fields.values()}
    assert aliases - documented == set()
    assert {
        "PM_URL",
        "LB_REFRESH_SEC",
        "PM_BASE_PORT",
        "TARGETS_FILE",
        "RANDOM_FAILURE_RATIO",
        "LB_BACKENDS",
    } <= documented
    Settings(_env_file=REPO_ROOT / ".env.example")  # the uncommented values are valid
