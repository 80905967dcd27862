"""Work claims with leases on both dialects (the ``store`` fixture: SQLite, then PostgreSQL): two stores on one
database play two agent replicas. Investigations, outbox rows and unapplied raw alerts are each claimed
by one replica at a time, taken over after the lease, and a replica that lost its claim records nothing."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator

import pytest

from oncall.incidents.applier import RawAlertApplier
from oncall.incidents.body import receive_stored
from oncall.incidents.ingest import apply_notification
from oncall.incidents.intake import RawAlertIntake
from oncall.incidents.payload import parse_notification
from oncall.store import episodes, outbox, raw_alerts
from oncall.store.database import Store
from tests.support import ingest_notification, json_body, sql, sql_exec
from tests.test_ingest import capture, captured_bytes, webhook_bytes


@pytest.fixture
async def other(store: Store) -> AsyncIterator[Store]:
    """A second store (its own connection pool) on the same database: another replica."""
    replica = Store(store.url)
    yield replica
    await replica.close()


def in_group(seq: int, n: int, starts_at: str | None = None) -> bytes:
    """Captured request ``seq`` moved to alert group ``Claim<n>`` (its one alert gets fingerprint ``n``)."""
    body = capture(seq)["body"]
    body["groupKey"] = f'{{}}:{{alertname="Claim{n}"}}'
    body["alerts"][0]["fingerprint"] = f"{n:016x}"
    if starts_at is not None:
        body["alerts"][0]["startsAt"] = starts_at
    return webhook_bytes(body)


async def queue_investigations(store: Store, count: int) -> list[int]:
    """``count`` incidents (own alert groups) whose investigations are queued; returns the episode ids."""
    for n in range(count):
        assert (await ingest_notification(store, in_group(1, n))).start_investigation
    return [row["id"] for row in await sql(store, "SELECT id FROM episodes ORDER BY id")]


async def claim(store: Store, replica: str, limit: int, now: float | None = None, lease_s: float = 30) -> list[int]:
    async with store.write() as conn:
        rows = await episodes.claim(conn, replica, time.time() if now is None else now, lease_s, limit)
    return [row["id"] for row in rows]


async def test_two_replicas_claiming_at_once_get_disjoint_investigations(store: Store, other: Store) -> None:
    ids = await queue_investigations(store, 6)
    first, second = await asyncio.gather(claim(store, "agent-1", 4), claim(other, "agent-2", 4))
    assert sorted(first + second) == ids and not set(first) & set(second)
    assert len(first) + len(second) == 6
    assert await claim(store, "agent-1", 4) == []  # every lease is live
    holders = {row["id"]: row["claimed_by"] for row in await sql(store, "SELECT id, claimed_by FROM episodes")}
    assert {holders[i] for i in first} <= {"agent-1"} and {holders[i] for i in second} <= {"agent-2"}


async def test_an_expired_lease_is_taken_over_and_the_old_holder_is_fenced_off(store: Store, other: Store) -> None:
    [episode_id] = await queue_investigations(store, 1)
    now = time.time()
    assert await claim(store, "agent-1", 1, now=now, lease_s=5) == [episode_id]
    assert await claim(other, "agent-2", 1, now=now + 4) == []  # still agent-1's
    async with other.write() as conn:
        [taken] = await episodes.claim(conn, "agent-2", now + 6, 30, 1)
    assert (taken["investigation"], taken["claimed_by"], taken["attempts"]) == ("running", "agent-1", 2)
    async with store.write() as conn:  # agent-1 was only slow: it comes back with its result
        assert await episodes.renew(conn, [episode_id], "agent-1", now + 40) == set()
        assert not await episodes.finish(conn, episode_id, "agent-1", "done", now + 7)
    async with other.write() as conn:
        assert await episodes.finish(conn, episode_id, "agent-2", "done", now + 8)
    assert await sql(store, "SELECT investigation, claimed_by FROM episodes") == [
        {"investigation": "done", "claimed_by": "agent-2"}
    ]


async def test_one_live_claim_per_incident(store: Store) -> None:
    """A new episode's investigation waits while the previous episode's is still running."""
    [first] = await queue_investigations(store, 1)
    assert await claim(store, "agent-1", 5) == [first]
    await ingest_notification(store, in_group(10, 0))  # resolved, then fires again an hour later
    assert (await ingest_notification(store, in_group(1, 0, starts_at="2026-11-22T09:00:00Z"))).start_investigation
    queued = await sql(store, "SELECT number, investigation FROM episodes ORDER BY number")
    assert queued == [{"number": 1, "investigation": "running"}, {"number": 2, "investigation": "queued"}]
    assert await claim(store, "agent-2", 5) == []


async def message_rows(store: Store, incident_id: int | None, count: int) -> None:
    async with store.write() as conn:
        for n in range(count):
            await outbox.add(
                conn,
                event_key=f"test:{incident_id}:{n}",
                channel="whatsapp",
                operation="message",
                incident_id=incident_id,
                payload={"n": n},
                now=time.time() - 1,
            )


async def claim_outbox(store: Store, replica: str, limit: int) -> list[int]:
    async with store.write() as conn:
        return [row["payload"]["n"] for row in await outbox.claim_due(conn, replica, time.time(), 30, limit)]


async def test_outbox_rows_are_claimed_once_and_in_order_per_incident(store: Store, other: Store) -> None:
    await message_rows(store, None, 6)  # no incident: no order between them
    first, second = await asyncio.gather(claim_outbox(store, "agent-1", 4), claim_outbox(other, "agent-2", 4))
    assert sorted(first + second) == list(range(6)) and not set(first) & set(second)

    await sql_exec(store, "DELETE FROM outbox")
    await sql_exec(
        store,
        "INSERT INTO incidents (id, group_key, title, group_labels, common_labels, common_annotations, created_at,"
        " updated_at) VALUES (7, 'g', 't', '{}', '{}', '{}', 0, 0)",
    )
    await message_rows(store, 7, 3)
    assert await claim_outbox(store, "agent-1", 5) == [0]  # only the oldest of the incident
    assert await claim_outbox(other, "agent-2", 5) == []  # the next waits until it is delivered
    async with store.write() as conn:
        [head] = await sql(store, "SELECT id FROM outbox WHERE payload IS NOT NULL ORDER BY id LIMIT 1")
        assert not await outbox.mark_delivered(conn, head["id"], "agent-2", time.time())  # not agent-2's claim
        assert await outbox.mark_delivered(conn, head["id"], "agent-1", time.time())
    assert await claim_outbox(other, "agent-2", 5) == [1]


def stored_body(body: bytes, received_at: float, received_by: str) -> raw_alerts.StoredBody:
    """A valid body as the intake stores it."""
    return raw_alerts.StoredBody(body.decode(), hashlib.sha256(body).hexdigest(), len(body), received_at, received_by)


async def test_a_batch_of_bodies_gets_its_ids_in_the_order_given(store: Store) -> None:
    """One group commit of many bodies (SQLite: one executemany, not one INSERT per body) answers each body
    its own row's id, in order, also after the newest rows were deleted (retention)."""
    bodies = [json_body({"n": n}) for n in range(40)]
    async with store.write() as conn:
        old = await raw_alerts.add_received(conn, [stored_body(b, time.time(), "agent-1") for b in bodies[:5]])
    await sql_exec(store, "DELETE FROM raw_alerts WHERE id >= :id", id=old[2])
    async with store.write() as conn:
        ids = await raw_alerts.add_received(conn, [stored_body(b, time.time(), "agent-1") for b in bodies[5:]])
    rows = await sql(store, "SELECT id, body FROM raw_alerts WHERE id >= :id ORDER BY id", id=ids[0])
    assert [(row["id"], row["body"]) for row in rows] == list(zip(ids, [b.decode() for b in bodies[5:]], strict=True))
    if store.dialect == "sqlite":  # "one larger than the largest ROWID": the deleted ids come back
        assert ids[0] == old[2]
    else:  # PostgreSQL's sequence goes on
        assert ids[0] > old[-1]


async def test_an_unapplied_raw_alert_is_taken_over_once_by_one_replica(store: Store, other: Store) -> None:
    """The replica that stored the body died before applying it: once the grace period is over, one
    replica applies it from its stored text, exactly once."""
    body = captured_bytes(1)
    async with store.write() as conn:
        [raw_id] = await raw_alerts.add_received(conn, [stored_body(body, time.time() - 60, "agent-0")])
    woken: list[str] = []
    appliers = [
        RawAlertApplier(s, name, 30, on_investigation=lambda name=name: woken.append(name))
        for s, name in ((store, "agent-1"), (other, "agent-2"))
    ]
    results = await asyncio.gather(*(applier.apply_one() for applier in appliers))
    assert sorted(r is None for r in results) == [False, True] and len(woken) == 1
    assert await sql(store, "SELECT valid, incident_id, outcome FROM raw_alerts") == [
        {"valid": 1, "incident_id": 1, "outcome": "accepted"}
    ]
    assert await sql(store, "SELECT investigation FROM episodes") == [{"investigation": "queued"}]
    # Applying the same row again (a claim lost meanwhile) reports a duplicate and changes nothing.
    async with store.write() as conn:
        late = await apply_notification(conn, raw_id, hashlib.sha256(body).hexdigest(), parse_notification(body))
    assert late.outcome == "duplicate" and await sql(store, "SELECT count(*) AS n FROM timeline") == [{"n": 2}]


async def test_a_young_body_waits_for_its_receiver_but_not_for_its_own_replica(store: Store) -> None:
    """Another replica's body younger than the grace period may still be applied by its receiver: left
    alone; this replica's own body is applied at once, from the text it stored after a restart."""
    body = captured_bytes(1)
    async with store.write() as conn:
        await raw_alerts.add_received(conn, [stored_body(body, time.time(), "agent-2")])
    assert await RawAlertApplier(store, "agent-1", 30).apply_one() is None
    restarted = await RawAlertApplier(store, "agent-2", 30).apply_one()
    assert restarted is not None and restarted.outcome == "accepted" and restarted.start_investigation


async def test_the_applier_lets_the_intake_commit_first(store: Store) -> None:
    """While the intake commits (paused), no waiting body is applied; once it is idle again, all of them."""
    async with store.write() as conn:
        await raw_alerts.add_received(conn, [stored_body(in_group(1, n), time.time(), "agent-1") for n in range(2)])
    applier = RawAlertApplier(store, "agent-1", 30)
    applier.pause()
    due = asyncio.create_task(applier.apply_due())
    await asyncio.sleep(1.0)
    assert await sql(store, "SELECT count(*) AS n FROM raw_alerts WHERE valid = 1") == [{"n": 0}]
    applier.resume()
    assert await asyncio.wait_for(due, 10) is None  # both applied, then nothing waits
    assert await sql(store, "SELECT count(*) AS n FROM raw_alerts WHERE valid = 1") == [{"n": 2}]


async def test_the_intake_pauses_the_applier_while_it_commits_on_both_stores(store: Store) -> None:
    """Acknowledgements go first on SQLite and PostgreSQL alike: the applier is paused for the commit and
    resumed after it."""
    calls: list[str] = []

    class Recording(RawAlertApplier):
        def pause(self) -> None:
            calls.append("pause")
            super().pause()

        def resume(self) -> None:
            calls.append("resume")
            super().resume()

    intake = RawAlertIntake(store, "agent-1", Recording(store, "agent-1", 30))
    raw_id = await intake.store_body(await receive_stored(in_group(1, 7)))
    assert calls == ["pause", "resume"]
    assert await sql(store, "SELECT id, valid FROM raw_alerts") == [{"id": raw_id, "valid": 0}]
