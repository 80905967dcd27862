"""Escalation: level 1 paged with the diagnosis, then the next level after the policy's delay while
unacknowledged; timers in the store survive restarts (a new Store on the same file), each level is
paged exactly once even with concurrent claimers (SQLite and a real PostgreSQL with SKIP LOCKED), and
an acknowledgement or the resolution stops the chain. Every page is on the timeline."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

import pytest

from oncall.incidents import lifecycle
from oncall.paging.escalation import Escalations, Page, escalation_notice
from oncall.paging.planner import IncidentState, Timer, decide
from oncall.roster.chain import escalation_chain
from oncall.roster.config import parse_roster
from oncall.roster.models import Roster
from oncall.store import incidents
from oncall.store.database import Store
from oncall.store.migrate import migrate
from stackctl.postgres import PostgresServer, find_pg_bindir
from tests.support import migrated_store, sql
from tests.test_roster import FALLBACK, ROSTER
from tests.test_whatsapp import insert_incident

T0 = datetime.fromisoformat("2026-01-14T12:00:00+00:00").timestamp()
"""Wednesday of ravi's week on team inventory (see tests/test_roster.py's ROSTER)."""
ROSTER_MODEL: Roster = parse_roster(ROSTER)


def escalations() -> Escalations:
    """What a freshly started agent builds from its settings."""
    return Escalations(ROSTER_MODEL, FALLBACK)


async def start(store: Store, incident_id: int, *, episode: int = 1, started: float = T0 - 60) -> Page | None:
    async with store.write() as conn:
        return await escalations().start(
            conn, incident_id=incident_id, episode=episode, service="inventory", episode_started_at=started, now=T0
        )


async def claim(store: Store, now: float, batch: int = 50) -> list[Page]:
    async with store.write() as conn:
        return await Escalations(ROSTER_MODEL, FALLBACK, batch=batch).claim_due(conn, now)


async def paged_events(store: Store, incident_id: int) -> list[dict]:
    rows = await sql(
        store,
        "SELECT kind, detail FROM timeline WHERE incident_id = :id AND kind = 'paged' ORDER BY id",
        id=incident_id,
    )
    return [json.loads(row["detail"]) for row in rows]


# ---------------------------------------------------------------- the pure planner


def test_planner_pages_arms_the_next_level_and_stops() -> None:
    chain = escalation_chain(ROSTER_MODEL, "inventory", datetime.fromtimestamp(T0).astimezone(), FALLBACK)
    firing = IncidentState("firing", None)
    second = decide(Timer(2, T0, T0 - 60), firing, chain, T0)
    assert (second.action, [r.person_id for r in second.recipients]) == ("page", ["lee"])
    assert (second.next_level, second.next_due_at) == (3, T0 + 600)
    assert second.reason.startswith("service inventory is owned by team inventory (on-call roster); level 2 of")
    last = decide(Timer(3, T0, T0 - 60), firing, chain, T0)
    assert last.action == "page" and (last.next_level, last.next_due_at) == (None, None)
    assert decide(Timer(4, T0, T0 - 60), firing, chain, T0).reason == "no level 4 in the escalation policy"
    assert decide(Timer(2, T0, T0 - 60), IncidentState("resolved", None), chain, T0).reason == "resolved"
    acked = decide(Timer(2, T0, T0 - 60), IncidentState("firing", T0 - 10), chain, T0)
    assert (acked.action, acked.reason) == ("stop", "acknowledged")
    # an acknowledgement of an earlier episode does not stop this episode's chain
    assert decide(Timer(2, T0, T0 - 60), IncidentState("firing", T0 - 3600), chain, T0).action == "page"


# ---------------------------------------------------------------- chains in the store


async def test_two_levels_with_a_restart_in_between_page_once_each(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'oncall.db'}"
    migrate(url)
    first_run = Store(url)
    incident_id = await insert_incident(first_run, None)
    page = await start(first_run, incident_id)
    assert page is not None and (page.level, page.numbers, page.next_due_at) == (1, ["whatsapp:+15550100002"], T0 + 300)
    assert await start(first_run, incident_id) is None  # the episode's chain exists: never a second level 1
    assert await claim(first_run, T0 + 299) == []
    await first_run.close()  # the agent stops with level 2 armed

    second_run = Store(url)
    pages = await claim(second_run, T0 + 300)
    assert [(p.level, p.numbers, p.next_due_at) for p in pages] == [(2, ["whatsapp:+15550100003"], T0 + 900)]
    assert pages[0].escalated and "Escalation level 2" in escalation_notice(pages[0], "InventoryHighErrorRate")
    assert await claim(second_run, T0 + 300) == [] and await claim(second_run, T0 + 899) == []
    await second_run.close()

    third_run = Store(url)
    pages = await claim(third_run, T0 + 900)
    assert [(p.level, p.numbers, p.next_due_at) for p in pages] == [(3, FALLBACK, None)]  # nobody on call for nights
    assert await claim(third_run, T0 + 86400) == []
    rows = await sql(third_run, "SELECT level, status, paged_at, due_at FROM pages ORDER BY level")
    assert [(r["level"], r["status"], r["paged_at"]) for r in rows] == [
        (1, "paged", T0),
        (2, "paged", T0 + 300),
        (3, "paged", T0 + 900),
    ]
    events = await paged_events(third_run, incident_id)
    assert [(e["level"], e["escalated"], [r["name"] for r in e["recipients"]]) for e in events] == [
        (1, False, ["Ravi Kumar"]),
        (2, True, ["Lee Chen"]),
        (3, True, ["whatsapp:+15550109999"]),
    ]
    assert "nobody on call for team nights: ONCALL_WHATSAPP_NUMBERS fallback" in events[2]["reason"]
    await third_run.close()


async def test_acknowledgement_stops_the_chain(store: Store) -> None:
    incident_id = await insert_incident(store, None)
    await start(store, incident_id)
    async with store.write() as conn:  # the engineer answers "ack" before level 2 is due
        await lifecycle.acknowledge(conn, incident_id, "whatsapp:+15550100002", T0 + 100)
    assert await claim(store, T0 + 300) == []
    row = (await sql(store, "SELECT status, stop_reason, stopped_at FROM pages WHERE level = 2"))[0]
    assert (row["status"], row["stop_reason"], row["stopped_at"]) == ("cancelled", "acknowledged", T0 + 300)
    stopped = await sql(store, "SELECT detail FROM timeline WHERE kind = 'escalation_stopped'")
    assert [json.loads(s["detail"])["reason"] for s in stopped] == ["acknowledged"]
    assert await claim(store, T0 + 10_000) == [] and len(await paged_events(store, incident_id)) == 1


async def test_stop_and_resolution_cancel_armed_levels(store: Store) -> None:
    stopped_id = await insert_incident(store, None)
    resolved_id = await insert_incident(store, None)
    await start(store, stopped_id)
    await start(store, resolved_id)
    async with store.write() as conn:
        assert await escalations().stop(conn, stopped_id, "acknowledged", T0 + 10) == 1
        assert await escalations().stop(conn, stopped_id, "acknowledged", T0 + 11) == 0
        resolved = await incidents.get(conn, resolved_id)
        assert resolved is not None
        await lifecycle.resolve_from_alerts(conn, resolved, None, T0 + 20)
    assert await claim(store, T0 + 300) == []
    rows = await sql(store, "SELECT incident_id, status, stop_reason FROM pages WHERE level = 2 ORDER BY incident_id")
    assert [(r["incident_id"], r["status"], r["stop_reason"]) for r in rows] == [
        (stopped_id, "cancelled", "acknowledged"),
        (resolved_id, "cancelled", "resolved"),
    ]


async def test_a_new_episode_escalates_despite_an_old_acknowledgement(store: Store) -> None:
    incident_id = await insert_incident(store, None)
    async with store.write() as conn:
        await lifecycle.acknowledge(conn, incident_id, "whatsapp:+15550100002", T0 - 3600)  # episode 1
    page = await start(store, incident_id, episode=2, started=T0 - 60)
    assert page is not None and page.episode == 2 and page.next_due_at == T0 + 300
    assert [p.level for p in await claim(store, T0 + 300)] == [2]
    already = await start(store, incident_id, episode=3, started=T0 - 7200)  # acknowledged during this episode
    assert already is not None and already.next_due_at is None  # level 1 paged, nothing armed


async def test_concurrent_claimers_on_sqlite_page_each_level_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'oncall.db'}"
    stores = [migrated_store(tmp_path / "oncall.db"), Store(url)]
    ids = [await insert_incident(stores[0], None) for _ in range(6)]
    for incident_id in ids:
        await start(stores[0], incident_id)
    results = await asyncio.gather(*(claim(s, T0 + 300, batch=4) for s in stores * 2))
    levels = sorted((p.incident_id, p.level) for pages in results for p in pages)
    assert levels == sorted((incident_id, 2) for incident_id in ids)
    for store in stores:
        await store.close()


# ---------------------------------------------------------------- PostgreSQL: FOR UPDATE SKIP LOCKED


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory: pytest.TempPathFactory):
    if find_pg_bindir() is None:
        pytest.skip("PostgreSQL binaries not installed (make deps)")
    with PostgresServer(tmp_path_factory.mktemp("pg-escalation")) as server:
        migrate(server.url)
        yield server.url


async def test_postgres_claimers_skip_rows_another_replica_holds(postgres_url: str) -> None:
    replica_a, replica_b = Store(postgres_url), Store(postgres_url)
    try:
        ids = [await insert_incident(replica_a, None) for _ in range(2)]
        for incident_id in ids:
            await start(replica_a, incident_id)
        holding = asyncio.Event()
        release = asyncio.Event()

        async def slow_claim() -> list[Page]:
            async with replica_a.write() as conn:
                pages = await Escalations(ROSTER_MODEL, FALLBACK, batch=1).claim_due(conn, T0 + 300)
                holding.set()
                await release.wait()  # the row stays locked until this transaction commits
                return pages

        task = asyncio.create_task(slow_claim())
        await asyncio.wait_for(holding.wait(), 10)
        other = await asyncio.wait_for(claim(replica_b, T0 + 300), 10)  # not blocked: the locked row is skipped
        release.set()
        held = await task
        assert [p.incident_id for p in held] != [p.incident_id for p in other]
        assert sorted(p.incident_id for p in held + other) == sorted(ids)
        assert await claim(replica_b, T0 + 300) == []
        rows = await sql(replica_b, "SELECT incident_id, level, status FROM pages WHERE level = 2 ORDER BY incident_id")
        assert [(r["level"], r["status"]) for r in rows] == [(2, "paged"), (2, "paged")]
    finally:
        await replica_a.close()
        await replica_b.close()
