"""Reads that stay small however large an incident grows (both dialects): its alerts without their annotations,
page by page; its timeline with the alert state changes capped; its history as distinct alert names and replicas."""

from __future__ import annotations

import time

import pytest

from oncall.store import history, incidents, timeline
from oncall.store.database import Store

NOW = time.time()


async def incident_with_alerts(store: Store, alerts: int) -> int:
    """An incident whose alerts' fingerprints run opposite to their first-seen order; alert ``n`` has
    ``replica`` ``r{n % 3}`` (none for n == 0) and the annotation ``{"summary": "alert n"}``."""
    async with store.write() as conn:
        incident_id = await incidents.add_if_absent(
            conn,
            {
                "group_key": '{}:{alertname="Big"}',
                "title": "Big",
                "group_labels": {"alertname": "Big"},
                "common_labels": {},
                "common_annotations": {},
                "created_at": NOW,
                "updated_at": NOW,
            },
        )
        assert incident_id is not None
        for n in range(alerts):
            labels = {"alertname": "Big" if n % 2 else "Other", "pod": f"web-{n}"} | (
                {"replica": f"r{n % 3}"} if n else {}
            )
            await incidents.add_alert(
                conn,
                {
                    "incident_id": incident_id,
                    "fingerprint": f"{alerts - n:04d}",
                    "alertname": labels["alertname"],
                    "status": "firing",
                    "labels": labels,
                    "annotations": {"summary": f"alert {n}"},
                    "first_seen_at": NOW + n,
                    "last_seen_at": NOW + n,
                },
            )
    return incident_id


async def test_alert_heads_come_page_by_page_oldest_first_and_annotate_completes_the_few_shown(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(incidents, "HEADS_PER_QUERY", 4)
    incident_id = await incident_with_alerts(store, 10)
    async with store.read() as conn:
        heads = await incidents.alert_heads(conn, incident_id)
        shown = [heads[7], heads[2], {**heads[0], "fingerprint": "gone"}]
        await incidents.annotate(conn, incident_id, shown)
    assert [head["fingerprint"] for head in heads] == [f"{10 - n:04d}" for n in range(10)]
    assert [head["labels"]["pod"] for head in heads] == [f"web-{n}" for n in range(10)]
    assert not any("annotations" in head for head in heads[3:7])
    assert [alert["annotations"] for alert in shown] == [{"summary": "alert 7"}, {"summary": "alert 2"}, {}]


async def test_the_timeline_keeps_every_event_but_the_first_alert_state_changes_only(store: Store) -> None:
    incident_id = await incident_with_alerts(store, 1)
    kinds = ["created", "alert_firing", "alert_firing", "diagnosis", "alert_resolved", "alert_firing", "resolved"]
    async with store.write() as conn:
        for kind in kinds:
            await timeline.add(conn, incident_id, kind, {"kind": kind})
    async with store.read() as conn:
        capped = await timeline.for_incident(conn, incident_id, 2)
        whole = await timeline.for_incident(conn, incident_id, 4)
    assert [event["kind"] for event in capped] == [
        "created",
        "alert_firing",
        "alert_firing",
        "diagnosis",
        "alert_events_omitted",
        "resolved",
    ]
    omitted = capped[4]
    assert omitted["id"] is None and omitted["detail"] == {
        "count": 2,
        "by_kind": {"alert_firing": 1, "alert_resolved": 1},
    }
    assert [event["kind"] for event in whole] == kinds and [event["detail"]["kind"] for event in whole] == kinds
    assert [event["id"] for event in whole] == sorted(event["id"] for event in whole)


async def test_history_reads_distinct_alert_names_and_replicas(store: Store) -> None:
    incident_id = await incident_with_alerts(store, 7)
    async with store.read() as conn:
        found = await history.one(conn, incident_id)
    assert found is not None
    assert (found["alertnames"], found["replicas"]) == (["Big", "Other"], ["r0", "r1", "r2"])
