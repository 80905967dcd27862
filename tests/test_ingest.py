"""Ingest of the captured Alertmanager 0.25 webhooks (tests/fixtures/alertmanager, see INDEX.txt).

All eleven requests belong to one alert group (same groupKey): two webhook_configs of one receiver,
one of them with ``max_alerts: 1``. The bodies are replayed byte-exactly as Alertmanager sent them.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from oncall.channels.outbox import OutboxWorker
from oncall.channels.whatsapp.sender import WhatsAppSender
from oncall.diagnosis import Diagnosis, FaultType
from oncall.incidents.applier import RawAlertApplier
from oncall.incidents.body import parse_body, read_body, receive_stored
from oncall.incidents.ingest import IngestResult
from oncall.incidents.intake import RawAlertIntake
from oncall.incidents.scheduler import InvestigationScheduler
from oncall.investigate.prompts import PROMPT_ALERTS, alerts_text, shown_alerts
from oncall.store import incidents, raw_alerts
from oncall.store.database import Store
from oncall.tasks import BackgroundTasks
from tests.support import ingest_notification, load_json_fixture, sql

FP_19557 = "1f29588ab39692c3"  # never up: fires from req_001 until req_010
FP_19556 = "e3d60c4adbad6964"  # killed then restarted: fires in req_004, resolved in req_006/007


def capture(seq: int) -> dict[str, Any]:
    """The captured request ``seq`` (1..11): {seq, t, path, headers, responded, body}."""
    return load_json_fixture(f"alertmanager/req_{seq:03d}.json")


def webhook_bytes(body: dict[str, Any]) -> bytes:
    """Encode a payload the way Alertmanager (Go encoding/json) does: compact, <>& escaped, newline."""
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    return (text + "\n").encode()


def captured_bytes(seq: int) -> bytes:
    """The exact body bytes of captured request ``seq``."""
    return webhook_bytes(capture(seq)["body"])


async def alert_statuses(store: Store) -> dict[str, str]:
    return {
        row["fingerprint"]: row["status"] for row in await sql(store, "SELECT fingerprint, status FROM incident_alerts")
    }


async def only_incident(store: Store) -> dict[str, Any]:
    rows = await sql(store, "SELECT * FROM incidents")
    assert len(rows) == 1
    return rows[0]


def test_replayed_bodies_are_byte_exact() -> None:
    for seq in range(1, 12):
        assert len(captured_bytes(seq)) == int(capture(seq)["headers"]["Content-Length"]), seq


async def test_full_capture_sequence(store: Store) -> None:
    results: dict[int, IngestResult] = {}
    snapshots: dict[int, tuple[dict[str, str], str]] = {}
    for seq in range(1, 12):
        results[seq] = await ingest_notification(store, captured_bytes(seq))
        snapshots[seq] = (await alert_statuses(store), (await only_incident(store))["status"])

    outcomes = [results[seq].outcome for seq in range(1, 12)]
    # 002/003 repeat 001's bytes (003 is the retry after our 500); 008/009 repeat them again; 011 = 010.
    assert outcomes == [
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
    group_key = capture(1)["body"]["groupKey"]
    incident = await only_incident(store)
    assert incident["group_key"] == group_key
    assert {r.incident_id for r in results.values()} == {incident["id"]}

    assert [seq for seq, r in results.items() if r.start_investigation] == [1]
    assert [seq for seq, r in results.items() if r.resolved_now] == [10]
    assert results[1].new_firing == (FP_19557,)
    assert results[4].new_firing == (FP_19556,)
    assert results[6].newly_resolved == (FP_19556,)
    assert results[10].newly_resolved == (FP_19557,)

    assert snapshots[4] == ({FP_19557: "firing", FP_19556: "firing"}, "firing")
    # req_006: truncated, top-level status "resolved", while 19557 (cut from the list) still fires.
    assert capture(6)["body"]["status"] == "resolved"
    assert snapshots[6] == ({FP_19557: "firing", FP_19556: "resolved"}, "firing")
    assert snapshots[9] == ({FP_19557: "firing", FP_19556: "resolved"}, "firing")
    assert snapshots[10] == ({FP_19557: "resolved", FP_19556: "resolved"}, "resolved")
    assert incident["status"] == "resolved" and incident["resolved_at"] is not None

    alerts = {row["fingerprint"]: row for row in await sql(store, "SELECT * FROM incident_alerts")}
    assert alerts[FP_19557]["ends_at"] == "2026-11-22T07:11:26.568000+00:00"
    assert alerts[FP_19556]["ends_at"] == "2026-11-22T07:10:30.568000+00:00"
    assert json.loads(alerts[FP_19556]["labels"])["instance"] == "127.0.0.1:19556"

    kinds = [
        (row["kind"], json.loads(row["detail"]).get("fingerprint"))
        for row in await sql(store, "SELECT kind, detail FROM timeline ORDER BY id")
    ]
    assert kinds == [
        ("created", None),
        ("alert_firing", FP_19557),
        ("alert_firing", FP_19556),
        ("alert_resolved", FP_19556),
        ("alert_resolved", FP_19557),
        ("resolved", None),
    ]

    raw = await sql(store, "SELECT valid, group_key, incident_id, error FROM raw_alerts ORDER BY id")
    assert len(raw) == 11
    assert all(
        row["valid"] == 1 and row["group_key"] == group_key and row["incident_id"] == incident["id"] for row in raw
    )


async def test_truncated_notification_never_resolves_alone(store: Store) -> None:
    """Only the max_alerts:1 receiver's view: every tracked alert ends up resolved, yet 19557 was cut."""
    assert (await ingest_notification(store, captured_bytes(5))).start_investigation
    result = await ingest_notification(store, captured_bytes(6))
    assert result.newly_resolved == (FP_19556,)
    assert not result.resolved_now
    assert await alert_statuses(store) == {FP_19556: "resolved"}
    incident = await only_incident(store)
    assert incident["status"] == "firing" and incident["resolved_at"] is None
    # The complete notification that follows shows 19557 still firing: still open, no second decision.
    result = await ingest_notification(store, captured_bytes(7))
    assert result.new_firing == (FP_19557,)
    assert not result.start_investigation and not result.resolved_now
    assert (await only_incident(store))["status"] == "firing"


async def test_stale_firing_copy_does_not_undo_a_resolution(store: Store) -> None:
    for seq in (1, 4, 7):
        await ingest_notification(store, captured_bytes(seq))
    late = await ingest_notification(
        store, captured_bytes(5)
    )  # max1 receiver's older view: 19556 firing, same startsAt
    assert late.outcome == "accepted" and late.new_firing == ()
    assert (await alert_statuses(store))[FP_19556] == "resolved"


def refire(seq: int, starts_at: str) -> bytes:
    """Captured request ``seq`` as Alertmanager would send it when the alert fires again later."""
    body = copy.deepcopy(capture(seq)["body"])
    for alert in body["alerts"]:
        alert["startsAt"] = starts_at
        if alert["status"] == "resolved":
            alert["endsAt"] = "2026-11-22T08:30:00Z"
    return webhook_bytes(body)


async def test_new_episode_after_resolution_is_investigated_and_resolved_once(store: Store) -> None:
    first = await ingest_notification(store, captured_bytes(1))
    assert (await ingest_notification(store, captured_bytes(10))).resolved_now
    assert not (await ingest_notification(store, captured_bytes(11))).resolved_now  # identical body: duplicate

    again = await ingest_notification(store, refire(1, "2026-11-22T08:00:00Z"))
    assert again.incident_id == first.incident_id
    assert again.start_investigation and again.new_firing == (FP_19557,)
    incident = await only_incident(store)
    assert incident["status"] == "firing" and incident["resolved_at"] is None
    assert incident["investigation_status"] == "pending"

    assert (await ingest_notification(store, refire(10, "2026-11-22T08:00:00Z"))).resolved_now
    assert not (await ingest_notification(store, refire(11, "2026-11-22T08:00:00Z"))).resolved_now
    kinds = [row["kind"] for row in await sql(store, "SELECT kind FROM timeline ORDER BY id")]
    assert kinds.count("resolved") == 2 and kinds.count("reopened") == 1


async def test_new_alert_while_firing_goes_to_timeline_only(store: Store) -> None:
    await ingest_notification(store, captured_bytes(1))
    result = await ingest_notification(store, captured_bytes(4))
    assert result.new_firing == (FP_19556,) and not result.start_investigation
    detail = json.loads(
        (await sql(store, "SELECT detail FROM timeline WHERE kind = 'alert_firing' ORDER BY id DESC LIMIT 1"))[0][
            "detail"
        ]
    )
    assert detail["labels"]["instance"] == "127.0.0.1:19556"
    assert detail["summary"] == "Target 127.0.0.1:19556 is down"


async def test_first_seen_resolved_opens_no_investigation(store: Store) -> None:
    result = await ingest_notification(store, captured_bytes(10))
    assert result.outcome == "accepted"
    assert not result.start_investigation and not result.resolved_now
    assert (await only_incident(store))["status"] == "resolved"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (json.dumps({**capture(1)["body"], "version": "3"}).encode(), "version"),
        (json.dumps({k: v for k, v in capture(1)["body"].items() if k != "groupKey"}).encode(), "groupKey"),
        (json.dumps({**capture(1)["body"], "alerts": [{"status": "pending"}]}).encode(), "alerts.0.status"),
        (b"[]", "body"),
    ],
)
async def test_invalid_bodies_are_stored_and_reported(store: Store, body: bytes, reason: str) -> None:
    result = await ingest_notification(store, body)
    assert result.outcome == "invalid"
    assert reason in result.error
    raw = await sql(store, "SELECT body, body_bytes, body_sha256, valid, error FROM raw_alerts")
    assert len(raw) == 1 and raw[0]["valid"] == 0 and reason in raw[0]["error"]
    # an invalid body is kept as its hash, size, reason and first KiB only
    assert raw[0]["body"] == body[:1024].decode("utf-8", errors="backslashreplace")
    assert (raw[0]["body_bytes"], raw[0]["body_sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
    assert await sql(store, "SELECT * FROM incidents") == []


async def test_unknown_fields_are_tolerated(store: Store) -> None:
    body = copy.deepcopy(capture(1)["body"])
    body["newTopLevelField"] = {"x": 1}
    body["alerts"][0]["silencedBy"] = []
    assert (await ingest_notification(store, webhook_bytes(body))).outcome == "accepted"


async def test_concurrent_identical_posts_from_two_connections(store: Store) -> None:
    """Two stores on one database (like two agent replicas) ingest the same body at once: one accepted, one
    duplicate, one incident, one investigation."""
    second = Store(store.url)
    results: list[IngestResult] = await asyncio.gather(
        *(ingest_notification(each, captured_bytes(1), name) for each, name in ((store, "a"), (second, "b")))
    )
    await second.close()
    assert sorted(r.outcome for r in results) == ["accepted", "duplicate"]
    assert sum(r.start_investigation for r in results) == 1
    assert len(await sql(store, "SELECT * FROM incidents")) == 1


async def test_copies_stored_before_their_original_is_applied_leave_it_to_apply(store: Store) -> None:
    """Alertmanager's identical retries arrive while the first copy waits for the applier (one after the other,
    and several in one group commit): the copies are stored as duplicates at once, and the first copy is
    still applied (accepted, the investigation queued); each copy reports the incident of the first."""
    applier = RawAlertApplier(store, "agent-1", 30)
    intake = RawAlertIntake(store, "agent-1", applier)
    received = await receive_stored(captured_bytes(1))
    first = await intake.store_body(received)
    copies = [
        await intake.store_body(received),
        *await asyncio.gather(*(intake.store_body(received) for _ in range(3))),
    ]
    other = await intake.store_body(await receive_stored(captured_bytes(4)))
    applied = [await applier.apply_one(), await applier.apply_one()]
    assert [(r.raw_id, r.outcome) for r in applied if r is not None] == [(first, "accepted"), (other, "accepted")]
    assert applied[0] is not None and applied[0].start_investigation
    assert await applier.apply_one() is None
    rows = await sql(store, "SELECT id, outcome, valid FROM raw_alerts WHERE id <> :o ORDER BY id", o=other)
    assert rows == [{"id": first, "outcome": "accepted", "valid": 1}] + [
        {"id": c, "outcome": "duplicate", "valid": 1} for c in copies
    ]
    async with store.read() as conn:
        shown = [await raw_alerts.get(conn, c) for c in copies]
    assert {row["incident_id"] for row in shown if row is not None} == {applied[0].incident_id}


async def test_a_copy_of_a_committed_body_is_stored_by_its_digest_without_parsing(store: Store) -> None:
    """``store_copy`` recognises a committed body's repeat by its digest alone: stored as a duplicate of that
    group, its text not kept; a body never committed (or only its parsed twin in flight) is left to ``store_body``."""
    applier = RawAlertApplier(store, "agent-1", 30)
    intake = RawAlertIntake(store, "agent-1", applier)
    raw = captured_bytes(1)
    body = await read_body(pieces(raw))
    assert await intake.store_copy(body.sha256, body.size) is None  # nothing committed yet
    first = await intake.store_body(await parse_body(body))
    again = await read_body(pieces(raw))
    copy_id = await intake.store_copy(again.sha256, again.size)
    assert copy_id is not None and copy_id > first
    other = await read_body(pieces(captured_bytes(4)))
    assert await intake.store_copy(other.sha256, other.size) is None
    rows = await sql(store, "SELECT id, outcome, valid, group_key, body, body_sha256 FROM raw_alerts ORDER BY id")
    group_key = capture(1)["body"]["groupKey"]
    assert rows[1] == {
        "id": copy_id,
        "outcome": "duplicate",
        "valid": 1,
        "group_key": group_key,
        "body": "",
        "body_sha256": hashlib.sha256(raw).hexdigest(),
    }
    assert [r.raw_id for r in [await applier.apply_one()] if r is not None] == [first]
    assert await applier.apply_one() is None


async def pieces(raw: bytes, size: int = 700) -> AsyncIterator[bytes]:
    """``raw`` as a request stream of ``size``-byte chunks."""
    for start in range(0, len(raw), size):
        yield raw[start : start + size]


async def test_a_new_group_key_posted_to_two_replicas_at_once_makes_one_incident(store: Store) -> None:
    """Different bodies of one new group (two webhook configs) at once: one incident, both applied."""
    second = Store(store.url)
    results = await asyncio.gather(
        ingest_notification(store, captured_bytes(4), "a"), ingest_notification(second, captured_bytes(5), "b")
    )
    await second.close()
    assert [r.outcome for r in results] == ["accepted", "accepted"]
    assert {r.incident_id for r in results} == {(await only_incident(store))["id"]}
    assert sum(r.start_investigation for r in results) == 1
    assert await alert_statuses(store) == {FP_19557: "firing", FP_19556: "firing"}


class InstantInvestigator:
    """Diagnoses at once (the paging decisions under test do not depend on what the diagnosis says)."""

    first_engine = "instant"

    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    async def investigate(self, incident: dict, alerts: list[dict], *, episode: int | None = None) -> Diagnosis:
        self.calls.append((int(incident["id"]), episode))
        return Diagnosis(
            summary="instant",
            root_cause="instant",
            fault_type=FaultType.unknown,
            affected_service="checkout",
            priority="P3",
            confidence=0.1,
            engine="instant",
        )


async def final_state(store: Store) -> dict[str, Any]:
    """What must not depend on arrival order: the incident's status and episode, each alert's merged state."""
    incident = await only_incident(store)
    alerts = await sql(
        store, "SELECT fingerprint, status, starts_at, ends_at FROM incident_alerts ORDER BY fingerprint"
    )
    return {"status": incident["status"], "episode": incident["episode"], "alerts": alerts}


@pytest.mark.parametrize("seed", range(25))
async def test_shuffled_replay_pages_once_per_episode_whatever_the_order(store: Store, seed: int) -> None:
    """The 11 captures in a shuffled order (Alertmanager peers, webhook configs and retries race), with the
    investigation running at a random point of the sequence: the same final state, one investigation, one
    diagnosis message, then one resolved message, as in arrival order."""
    rng = random.Random(seed)
    order = list(range(1, 12))
    rng.shuffle(order)
    investigator = InstantInvestigator()
    tasks = BackgroundTasks()
    scheduler = InvestigationScheduler(store, investigator, tasks, 2, replica_id="replay", lease_s=30)
    investigate_after = rng.randrange(len(order))
    for position, seq in enumerate(order):
        await ingest_notification(store, captured_bytes(seq))
        if position == investigate_after:
            await run_investigations(scheduler)
    await run_investigations(scheduler)
    sender = WhatsAppSender(store, twilio=None, from_number=None, recipients=[], public_base_url="http://agent")
    await OutboxWorker(store, {"whatsapp": sender}, tasks, replica_id="replay").drain()

    assert await final_state(store) == {
        "status": "resolved",
        "episode": 1,
        "alerts": [
            {
                "fingerprint": FP_19557,
                "status": "resolved",
                "starts_at": "2026-11-22T07:09:50.568000+00:00",
                "ends_at": "2026-11-22T07:11:26.568000+00:00",
            },
            {
                "fingerprint": FP_19556,
                "status": "resolved",
                "starts_at": "2026-11-22T07:10:10.568000+00:00",
                "ends_at": "2026-11-22T07:10:30.568000+00:00",
            },
        ],
    }, order
    incident_id = (await only_incident(store))["id"]
    assert investigator.calls == [(incident_id, 1)], order
    pages = await sql(store, "SELECT body FROM messages WHERE direction = 'out' ORDER BY id")
    outbox_rows = await sql(store, "SELECT id, event_key, status, attempts, next_attempt_at FROM outbox ORDER BY id")
    state = (order, investigate_after, outbox_rows, await sql(store, "SELECT * FROM episodes"))
    assert len(pages) == 2 and pages[0]["body"].startswith("🚨") and "resolved after" in pages[1]["body"], state


async def run_investigations(scheduler: InvestigationScheduler) -> None:
    """Claim every queued investigation and wait until each has its outcome."""
    await scheduler.run_due()
    await asyncio.gather(*scheduler._running.values())


class RecordingInvestigator(InstantInvestigator):
    """Diagnoses at once and keeps the alert rows each investigation was given."""

    def __init__(self) -> None:
        super().__init__()
        self.alerts: list[list[dict]] = []

    async def investigate(self, incident: dict, alerts: list[dict], *, episode: int | None = None) -> Diagnosis:
        self.alerts.append(alerts)
        return await super().investigate(incident, alerts, episode=episode)


def group_of(pods: range) -> bytes:
    """Capture 1's group with one firing alert per pod in ``pods`` (fingerprint: the pod number)."""
    body = capture(1)["body"]
    template = body["alerts"][0]
    body["alerts"] = [
        {
            **template,
            "labels": {**template["labels"], "pod": f"web-{n:02d}"},
            "annotations": {"description": f"pod web-{n:02d} is down"},
            "fingerprint": f"{n:016x}",
        }
        for n in pods
    ]
    return webhook_bytes(body)


async def test_a_large_groups_investigation_reads_only_the_annotations_its_prompt_shows(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 alerts (10 first, 20 joining later), read in pages of 7: every alert reaches the investigation oldest
    first, and only the ``PROMPT_ALERTS`` the prompt shows carry their annotations, which it prints."""
    monkeypatch.setattr(incidents, "HEADS_PER_QUERY", 7)
    await ingest_notification(store, group_of(range(20, 30)))
    await ingest_notification(store, group_of(range(30)))
    investigator = RecordingInvestigator()
    await run_investigations(InvestigationScheduler(store, investigator, BackgroundTasks(), 2, replica_id="t"))
    [alerts] = investigator.alerts
    annotated = {alert["fingerprint"] for alert in alerts if "annotations" in alert}
    async with store.read() as conn:
        prompt = alerts_text(await incidents.get(conn, alerts[0]["incident_id"]) or {}, alerts)

    assert [int(alert["fingerprint"], 16) for alert in alerts] == [*range(20, 30), *range(20)]
    assert annotated == {alert["fingerprint"] for alert in shown_alerts(alerts)} and len(annotated) == PROMPT_ALERTS
    assert all(f"pod {alert['labels']['pod']} is down" in prompt for alert in shown_alerts(alerts))
    assert '"omitted": 10' in prompt and prompt.count('is down"}') == PROMPT_ALERTS


async def test_an_episode_only_ever_seen_resolved_pages_nobody(store: Store) -> None:
    for seq in (10, 11, 6):
        await ingest_notification(store, captured_bytes(seq))
    assert await sql(store, "SELECT investigation FROM episodes") == [{"investigation": "none"}]
    assert await sql(store, "SELECT * FROM outbox") == []
    assert (await only_incident(store))["status"] == "resolved"


async def test_a_later_firing_period_is_a_new_episode_an_earlier_one_is_not(store: Store) -> None:
    """After the episode ended (07:11:26), an alert starting 08:00 opens episode 2; a copy of a period that
    started inside episode 1 changes nothing and pages nobody."""
    await ingest_notification(store, captured_bytes(1))
    await ingest_notification(store, captured_bytes(10))
    again = await ingest_notification(store, refire(1, "2026-11-22T08:00:00Z"))
    assert again.start_investigation and (await only_incident(store))["episode"] == 2
    late = await ingest_notification(store, captured_bytes(4))  # 19556 of 07:10:10, first seen now: episode 1
    assert not late.start_investigation and late.new_firing == (FP_19556,)
    assert await sql(store, "SELECT number, investigation FROM episodes ORDER BY number") == [
        {"number": 1, "investigation": "queued"},
        {"number": 2, "investigation": "queued"},
    ]
