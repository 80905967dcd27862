"""Approving and rejecting proposed actions (``oncall.remediation.decisions``) on a real store: who may, when,
what is recorded, and that an approval received twice runs once. The execution is replaced by a recorder
here (the real executor runs against the real stack in ``test_e2e_remediation``)."""

from __future__ import annotations

import time

import pytest

from oncall.catalog.loader import load_catalog
from oncall.diagnosis import Diagnosis, ProposedAction
from oncall.incidents import lifecycle
from oncall.remediation.decisions import Decisions, Policy
from oncall.store import remediations
from oncall.store.database import Store
from tests.support import REPO_ROOT, sql, sql_exec

ON_CALL = "whatsapp:+15550001111"
STRANGER = "whatsapp:+15559999999"
CATALOG = load_catalog(REPO_ROOT / "services.yaml", {"LB_URL": "http://lb", "PM_URL": "http://pm"})


class RecordingExecutor:
    def __init__(self) -> None:
        self.started: list[int] = []

    def start(self, remediation_id: int) -> None:
        self.started.append(remediation_id)


async def diagnosed_incident(
    store: Store, service: str = "inventory", *, age_s: float = 0.0, first_risk: str = "low"
) -> int:
    now = time.time()
    labels = {"alertname": "InventoryReplicaHighErrorRate", "service": service, "replica": f"{service}-2"}
    values = {
        "group_key": f"g-{service}-{now}",
        "title": "t",
        "service": service,
        "group_labels": labels,
        "common_labels": labels,
        "common_annotations": {},
        "created_at": now,
        "updated_at": now,
    }
    diagnosis = Diagnosis(
        summary="s",
        root_cause="r",
        fault_type="injected_errors",
        affected_service=service,
        affected_replicas=[f"{service}-2"],
        priority="P2",
        confidence=0.9,
        proposed_actions=[
            ProposedAction(action="clear_fault", target=f"{service}-2", risk=first_risk),  # type: ignore[arg-type]
            ProposedAction(action="restart_replica", target=f"{service}-2", risk="medium"),
        ],
    )
    async with store.write() as conn:
        incident, _ = await lifecycle.open_or_lock(conn, values, "test", now)
        incident_id = int(incident["id"])
        await lifecycle.record_diagnosis(conn, incident_id, 1, diagnosis, "test-replica", now - age_s)
    return incident_id


def decisions(store: Store, **policy: object) -> tuple[Decisions, RecordingExecutor]:
    executor = RecordingExecutor()
    return Decisions(store, CATALOG, executor, Policy(**policy), lambda: frozenset({ON_CALL})), executor  # type: ignore[arg-type]


async def test_an_on_call_approval_records_the_decision_and_starts_the_execution_once(store: Store) -> None:
    desk, executor = decisions(store)
    incident_id = await diagnosed_incident(store)
    first = await desk.record(incident_id, 1, True, ON_CALL, via="whatsapp")
    assert first["ok"] and "clear the injected fault on inventory-2" in first["message"]
    replay = await desk.record(incident_id, 1, True, ON_CALL, via="whatsapp")
    assert not replay["ok"] and "already approved" in replay["message"] and "runs once" in replay["message"]
    assert executor.started == [first["remediation_id"]]
    rows = await sql(store, "SELECT action, target, status, decided_by, risk FROM remediations")
    assert rows == [
        {"action": "clear_fault", "target": "inventory-2", "status": "approved", "decided_by": ON_CALL, "risk": "low"}
    ]
    kinds = [r["kind"] for r in await sql(store, "SELECT kind FROM timeline WHERE incident_id = :i", i=incident_id)]
    assert kinds.count("remediation_approved") == 1 and kinds.count("remediation_refused") == 1


@pytest.mark.parametrize(
    ("policy", "by", "age_s", "expected"),
    [
        ({"safety_mode": "read-only"}, ON_CALL, 0.0, "SAFETY_MODE is read-only"),
        ({}, STRANGER, 0.0, "only from an on-call number"),
        ({"approval_ttl_s": 60.0}, ON_CALL, 120.0, "APPROVAL_TTL_S=60"),
    ],
    ids=["read-only", "not-on-call", "stale"],
)
async def test_refused_approvals_run_nothing_and_say_why(
    store: Store, policy: dict, by: str, age_s: float, expected: str
) -> None:
    desk, executor = decisions(store, **policy)
    incident_id = await diagnosed_incident(store, age_s=age_s)
    outcome = await desk.record(incident_id, 1, True, by, via="whatsapp")
    assert not outcome["ok"] and expected in outcome["message"]
    assert executor.started == [] and await sql(store, "SELECT id FROM remediations") == []
    refused = await sql(store, "SELECT detail FROM timeline WHERE kind = 'remediation_refused'")
    assert len(refused) == 1


async def test_a_rejection_is_recorded_and_blocks_a_later_approval(store: Store) -> None:
    desk, executor = decisions(store)
    incident_id = await diagnosed_incident(store)
    assert (await desk.record(incident_id, 2, False, ON_CALL, via="whatsapp"))["ok"]
    later = await desk.record(incident_id, 2, True, ON_CALL, via="whatsapp")
    assert not later["ok"] and "already rejected" in later["message"] and executor.started == []


async def test_unknown_options_resolved_incidents_and_services_without_control_plane(store: Store) -> None:
    desk, executor = decisions(store)
    incident_id = await diagnosed_incident(store)
    with pytest.raises(LookupError):
        await desk.record(incident_id, 3, True, ON_CALL, via="whatsapp")
    with pytest.raises(LookupError):
        await desk.record(999, 1, True, ON_CALL, via="whatsapp")
    payments = await diagnosed_incident(store, "payments")
    no_plane = await desk.record(payments, 1, True, ON_CALL, via="whatsapp")
    assert not no_plane["ok"] and "no control plane" in no_plane["message"]
    await sql_exec(store, "UPDATE incidents SET status = 'resolved' WHERE id = :i", i=incident_id)
    assert "is resolved" in (await desk.record(incident_id, 1, True, ON_CALL, via="whatsapp"))["message"]
    assert executor.started == []


async def test_the_console_hook_raises_lookup_and_value_errors(store: Store) -> None:
    desk, executor = decisions(store)
    incident_id = await diagnosed_incident(store)
    assert (await desk.decide(incident_id, "1", True, "ravi via console"))["ok"]
    with pytest.raises(ValueError, match="already approved"):
        await desk.decide(incident_id, "1", True, "ravi via console")
    with pytest.raises(LookupError):
        await desk.decide(incident_id, "a1", True, "ravi via console")
    assert len(executor.started) == 1


async def test_the_circuit_breaker_stops_automation_after_two_unverified_actions(store: Store) -> None:
    desk, executor = decisions(store)
    now = time.time()
    for number in (1, 2):
        incident_id = await diagnosed_incident(store)
        async with store.write() as conn:
            row_id = await remediations.decide(
                conn,
                incident_id=incident_id,
                proposal_key="old",
                number=number,
                service="inventory",
                action={"action": "clear_fault", "target": "inventory-2", "risk": "low"},
                status="approved",
                decided_by=ON_CALL,
                now=now,
            )
        await sql_exec(
            store, "UPDATE remediations SET status = 'not_recovered', finished_at = :t WHERE id = :i", t=now, i=row_id
        )
    fresh = await diagnosed_incident(store)
    outcome = await desk.record(fresh, 1, True, ON_CALL, via="whatsapp")
    assert not outcome["ok"] and "circuit breaker" in outcome["message"] and executor.started == []


class Outbox:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, body: str, *, incident_id: int | None, to: list[str] | None = None) -> list[int]:
        self.sent.append(body)
        return []

    async def queue(self, conn: object, body: str, *, incident_id: int | None, event: str, **_: object) -> list[int]:
        self.sent.append(body)
        return []

    def wake(self) -> None:
        return None


async def test_auto_low_risk_runs_the_first_low_risk_option_and_reports_it(store: Store) -> None:
    from oncall.remediation.auto import AUTO_APPROVER, AutoApprover
    from oncall.tasks import BackgroundTasks

    desk, executor = decisions(store, safety_mode="auto-low-risk")
    outbox = Outbox()
    auto = AutoApprover(store, desk, outbox, BackgroundTasks())
    incident_id = await diagnosed_incident(store)
    assert await auto.approve_when_stored(incident_id, since=0.0) == 1
    assert len(executor.started) == 1 and "Approved option 1" in outbox.sent[0]
    rows = await sql(store, "SELECT number, decided_by, status FROM remediations")
    assert rows == [{"number": 1, "decided_by": AUTO_APPROVER, "status": "approved"}]
    medium = await diagnosed_incident(store, first_risk="medium")
    assert await auto.approve_when_stored(medium, since=0.0) is None  # medium risk waits for an engineer
