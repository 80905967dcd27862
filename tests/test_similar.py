"""Similar past incidents: the documented score over fault type, service, file:line, error signature,
alert name and replica, ranked on a seeded history of resolved incidents (with how each was resolved,
how long it took, the action taken and its ticket)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from oncall.diagnosis import FaultType
from oncall.history.similar import WEIGHTS, Features, error_signature, find_similar, score
from oncall.store import incidents, investigations, tickets
from oncall.store.database import Store
from tests.support import sql_exec

NOW = 1_790_000_000.0
NULL_DEREF = "'NoneType' object has no attribute 'quantity'"


def logs(exception_type: str, message: str, count: int = 40) -> str:
    """A ``fetch_logs`` result as the audit trail stores it (``oncall.sources.logs.summarise_logs``)."""
    return json.dumps(
        {
            "count": count,
            "by_exception_type": {exception_type: count},
            "groups": [{"exception_type": exception_type, "file": "inventory_service.py", "message": message}],
        }
    )


def diagnosis(fault: str, service: str = "inventory", file: str | None = None, line: int | None = None, **more: Any):
    return {
        "summary": f"{fault} on {service}",
        "root_cause": "seeded",
        "fault_type": fault,
        "affected_service": service,
        "affected_replicas": more.pop("replicas", []),
        "affected_file": file,
        "affected_line": line,
        "priority": "P2",
        "confidence": 0.8,
        **more,
    }


async def seed(
    store: Store,
    name: str,
    *,
    alert: str = "InventoryHighErrorRate",
    service: str = "inventory",
    found: dict[str, Any] | None = None,
    log_result: str | None = None,
    replicas: tuple[str, ...] = (),
    resolved_ago: float | None = 3600.0,
    took: float = 900.0,
    by: str | None = None,
    note: str | None = None,
    ticket: str | None = None,
) -> int:
    """One incident of the history: its row, alerts (one per replica), a fetch_logs call, a ticket and
    its resolution on the timeline, at fixed times."""
    resolved_at = NOW - resolved_ago if resolved_ago is not None else None
    created = (resolved_at or NOW) - took
    async with store.write() as conn:
        incident_id = await incidents.add_if_absent(
            conn,
            {
                "group_key": f"{{}}:{{alertname={alert!r}, name={name!r}}}",
                "status": "resolved" if resolved_at else "firing",
                "title": f"{alert} ({service})",
                "service": service,
                "group_labels": {"alertname": alert},
                "common_labels": {"alertname": alert, "service": service},
                "common_annotations": {},
                "created_at": created,
                "updated_at": created,
                "resolved_at": resolved_at,
                "diagnosis": found,
            },
        )
        for replica in replicas or ("",):
            labels = {"alertname": alert, "service": service} | ({"replica": replica} if replica else {})
            await incidents.add_alert(
                conn,
                {
                    "incident_id": incident_id,
                    "fingerprint": f"{name}-{replica}",
                    "alertname": alert,
                    "status": "resolved" if resolved_at else "firing",
                    "labels": labels,
                    "annotations": {},
                    "first_seen_at": created,
                    "last_seen_at": created,
                },
            )
        if log_result is not None:
            await investigations.add_tool_call(
                conn,
                {
                    "incident_id": incident_id,
                    "tool": "fetch_logs",
                    "arguments": "{}",
                    "ok": 1,
                    "result": log_result,
                    "started_at": created + 5,
                    "duration_s": 0.2,
                },
            )
        if ticket:
            await tickets.add(
                conn,
                {
                    "incident_id": incident_id,
                    "status": "created",
                    "jira_key": ticket,
                    "url": f"https://acme.atlassian.net/browse/{ticket}",
                    "summary": f"[#{incident_id}] {alert}",
                    "payload": {},
                    "created_at": created + 60,
                },
            )
    if resolved_at is not None:
        detail = {"by": by, "manual": True, "note": note} if by else {"notify": True}
        await sql_exec(
            store,
            "INSERT INTO timeline (incident_id, at, kind, detail) VALUES (:id, :at, 'resolved', :detail)",
            id=incident_id,
            at=resolved_at,
            detail=json.dumps(detail),
        )
    return incident_id


@pytest.fixture
async def history(store: Store) -> dict[str, int]:
    """A current code-bug incident and a history of resolved (and one firing) incidents around it."""
    bug = diagnosis("code_bug", file="inventory_service.py", line=212)
    null_deref = logs("AttributeError", NULL_DEREF)
    both = ("inventory-1", "inventory-2")
    ids = {
        "same": await seed(store, "same", found=bug, log_result=null_deref, replicas=both, resolved_ago=3600, took=840,
                           by="Ravi Kumar", note="rolled back to 1.4.0", ticket="OPS-41"),
        "same_older": await seed(store, "older", found=bug, log_result=logs("AttributeError", NULL_DEREF, 7),
                                 replicas=both, resolved_ago=86400 * 9, took=3000),
        "same_file": await seed(store, "file", found=diagnosis("code_bug", file="inventory_service.py", line=180),
                                log_result=logs("KeyError", "'sku-1234'"), replicas=("inventory-1",)),
        "injected": await seed(store, "injected", found=diagnosis("injected_errors"),
                               log_result=logs("InjectedFault", "injected error p=0.4"), replicas=("inventory-2",)),
        "payments": await seed(store, "payments", alert="PaymentsHighErrorRate", service="payments",
                               found=diagnosis("code_bug", service="payments", file="payments_service.py", line=88)),
        "latency": await seed(store, "latency", alert="InventoryHighLatencyP99", found=diagnosis("latency")),
        "still_firing": await seed(store, "firing", found=bug, log_result=null_deref, replicas=both, resolved_ago=None),
        "current": await seed(store, "current", found=bug, log_result=null_deref, replicas=both, resolved_ago=None),
    }  # fmt: skip
    return ids


async def test_ranking_on_a_seeded_history(store: Store, history: dict[str, int]) -> None:
    async with store.read() as conn:
        top = await find_similar(conn, history["current"])
        wider = await find_similar(conn, history["current"], top=10)
    assert [s.incident_id for s in top] == [history["same"], history["same_older"], history["same_file"]]
    # same everything: 1; same file, other line (0.5 x 0.20), other error, one of two replicas (0.5 x 0.10)
    assert [s.score for s in top] == [1.0, 1.0, pytest.approx(0.25 + 0.20 + 0.10 + 0.10 + 0.05)]
    # the injected-errors incident shares service, alert and one replica: 0.20 + 0.10 + 0.05
    assert [(s.incident_id, s.score) for s in wider][3:] == [(history["injected"], pytest.approx(0.35))]
    excluded = {history[name] for name in ("payments", "latency", "still_firing", "current")}
    assert not excluded & {s.incident_id for s in wider}  # below MIN_SCORE (0.25, 0.20), not resolved, itself
    best = top[0]
    assert best.matched == ("fault type", "service", "file:line", "error signature", "alert name", "replica")
    assert (best.fault_type, best.location) == ("code_bug", "inventory_service.py:212")
    assert best.resolution == "resolved by Ravi Kumar: rolled back to 1.4.0"
    assert best.duration_s == 840 and best.resolved_at == NOW - 3600
    assert (best.action, best.ticket_key, best.ticket_url) == (
        "Jira OPS-41 created",
        "OPS-41",
        "https://acme.atlassian.net/browse/OPS-41",
    )
    assert top[1].resolution == "alerts cleared" and top[1].action is None and top[1].duration_s == 3000
    assert best.summary() == (
        f"#{best.incident_id} InventoryHighErrorRate (inventory) (score 1.00: fault type, service, file:line, "
        "error signature, alert name, replica): code_bug at inventory_service.py:212; "
        "resolved by Ravi Kumar: rolled back to 1.4.0 after 14m 00s; Jira OPS-41"
    )


async def test_a_match_as_diagnosis_entry_and_evidence(store: Store, history: dict[str, int]) -> None:
    async with store.read() as conn:
        best = (await find_similar(conn, history["current"]))[0]
    entry = best.to_contract()  # Diagnosis.similar_incidents
    assert (entry.incident_id, entry.score, entry.fault_type, entry.ticket, entry.duration_s) == (
        best.incident_id,
        1.0,
        FaultType.code_bug,
        "OPS-41",
        840,
    )
    assert entry.resolution == best.resolution and entry.action == "Jira OPS-41 created"
    evidence = best.evidence()
    assert (evidence.tool, evidence.query, evidence.finding) == (
        "similar_incidents",
        f"incident #{best.incident_id}",
        best.summary(),
    )


async def test_before_the_diagnosis_only_alert_side_features_count(store: Store, history: dict[str, int]) -> None:
    async with store.read() as conn:
        early = await find_similar(conn, history["current"], diagnosis={}, top=10)
    scores = {s.incident_id: s.score for s in early}
    # known now: service, error signature, alert name, replica (weights 0.55 in all)
    assert scores[history["same"]] == 1.0
    assert scores[history["injected"]] == pytest.approx((0.20 + 0.10 + 0.05) / 0.55, abs=1e-4)
    assert history["payments"] not in scores
    with pytest.raises(LookupError):
        async with store.read() as conn:
            await find_similar(conn, 10_000)


def test_error_signature_masks_numbers_and_reads_capped_results() -> None:
    full = logs("KeyError", "item 42 missing in 0xdeadbeef batch 3fa85f6457174562")
    assert error_signature(full) == "KeyError: item # missing in # batch #"
    long = json.dumps({**json.loads(full), "newest": ["2026-11-24 ERROR inventory-1 GET /items/7 500 ..."] * 50})
    capped = long[:600]  # the audit trail cut the JSON after its groups: no longer parseable
    with pytest.raises(ValueError):
        json.loads(capped)
    assert error_signature(capped) == "KeyError: item # missing in # batch #"
    assert error_signature(json.loads(full)) == "KeyError: item # missing in # batch #"
    assert error_signature(None) is None and error_signature("not json") is None
    assert error_signature(json.dumps({"count": 0, "groups": []})) is None


def test_score_weights_sum_to_one_and_uninformative_faults_never_match() -> None:
    assert sum(WEIGHTS.values()) == pytest.approx(1.0)
    unknown = Features("inventory", None, None, None, None, frozenset({"A"}), frozenset())
    assert score(unknown, unknown) == (1.0, ("service", "alert name"))
    nothing = Features(None, None, None, None, None, frozenset(), frozenset())
    assert score(nothing, unknown) == (0.0, ())
