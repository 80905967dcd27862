"""Paging, escalation, the post-mortem and the Jira lifecycle wired into the running agent (the real app
with its lifespan, the real outbox and pollers, a counting fake investigator; Jira is the loopback fake
of tests/fake_jira.py in Jira Cloud's wire format).

- The diagnosis pages level 1 of the owning team's policy (who and why in the message and on the
  timeline); unacknowledged, level 2 is paged after its delay by the escalation poller, also across a
  restart of the agent (timers in the store), exactly one page per level; an acknowledgement stops the
  chain before level 3.
- The resolution writes the post-mortem, links it in the resolved notice, and through the outbox
  comments it on the incident's Jira issue and moves the issue to Done; the same alert firing again
  within JIRA_REOPEN_WINDOW_S reopens that issue with a comment instead of a new one.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from pathlib import Path

import respx

from oncall.settings import Settings
from oncall.store.database import Store
from tests.fake_jira import FakeJira
from tests.support import post_alert, sql
from tests.test_agent_api import JSON, Fakes, agent, make_settings, metric
from tests.test_ingest import captured_bytes

DELAY_S = 1.5
ANA, BEN, CYD = "whatsapp:+15550200001", "whatsapp:+15550200002", "whatsapp:+15550200003"
ROSTER = textwrap.dedent(
    """\
    people:
      ana: {{name: Ana Lima, whatsapp: "{ana}"}}
      ben: {{name: Ben Okoro, whatsapp: "{ben}"}}
      cyd: {{name: Cyd Park, whatsapp: "{cyd}"}}
    teams:
      checkout:
        rotation: {{kind: daily, members: [ana], handover: "00:00", timezone: UTC, start: 2026-01-01}}
        escalation_policy: checkout
    escalation_policies:
      checkout:
        levels:
          - targets: [{{on_call: checkout}}]
            delay_s: {delay_s}
          - targets: [{{person: ben}}]
            delay_s: {delay_s}
          - targets: [{{person: cyd}}]
    services:
      checkout: checkout
    """
)
JIRA = "https://acme.atlassian.net"
JIRA_ENV = dict(JIRA_BASE_URL=JIRA, JIRA_EMAIL="bot@acme.example", JIRA_API_TOKEN="jira-token", JIRA_PROJECT_KEY="OPS")
API = {"Authorization": "Bearer test-api-token-0123456789"}


def settings_for(tmp_path: Path, delay_s: float = DELAY_S, **env: str) -> Settings:
    """Agent settings: a roster whose checkout policy escalates after ``delay_s``, the API token, fast polls."""
    roster = tmp_path / "oncall.yaml"
    roster.write_text(ROSTER.format(ana=ANA, ben=BEN, cyd=CYD, delay_s=delay_s))
    return make_settings(
        tmp_path, ONCALL_FILE=str(roster), WORK_POLL_S="0.2", ONCALL_API_TOKEN=API["Authorization"][7:], **env
    )


async def outbound(store: Store) -> list[dict]:
    return await sql(store, "SELECT to_number, body FROM messages WHERE direction = 'out' ORDER BY id")


async def page_keys(store: Store) -> list[str]:
    rows = await sql(
        store, "SELECT event_key FROM outbox WHERE operation = 'message' AND event_key LIKE '%:page:%' ORDER BY id"
    )
    return [row["event_key"] for row in rows]


async def eventually(check, timeout: float = 10.0, what: str = "condition"):
    """Await ``check()`` (async) every 50 ms until it returns something truthy; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not met within {timeout} s"
        await asyncio.sleep(0.05)


async def holds(value: bool) -> bool:
    """``value`` as an awaitable, for ``eventually`` over state that is not in the database (the Jira fake)."""
    return value


async def messages_to(store: Store, number: str) -> list[str]:
    rows = await sql(
        store, "SELECT body FROM messages WHERE direction = 'out' AND to_number = :to ORDER BY id", to=number
    )
    return [row["body"] for row in rows]


async def test_escalation_through_two_levels_with_a_restart_in_between(tmp_path: Path) -> None:
    """Level 1 with the diagnosis; the agent stops; level 2 is due while it is down and paged once by the
    restarted agent; the acknowledgement stops the chain before level 3."""
    settings = settings_for(tmp_path)
    async with agent(settings, Fakes()) as (client, app):
        store = app.state.services.store
        incident_id = (await post_alert(client, captured_bytes(1), api_headers=API))["incident_id"]
        [diagnosis] = await eventually(lambda: messages_to(store, ANA), what="the diagnosis paged to level 1")
        levels = await sql(store, "SELECT level, status, due_at FROM pages ORDER BY level")
    assert "*Diagnosis*" in diagnosis or f"#{incident_id}" in diagnosis
    assert "📟 Paged: service checkout is owned by team checkout (on-call roster)" in diagnosis
    assert "Ana Lima: on call for team checkout (daily rotation" in diagnosis
    assert [(row["level"], row["status"]) for row in levels] == [(1, "paged"), (2, "scheduled")]
    await asyncio.sleep(max(0.0, levels[1]["due_at"] - time.time()) + 0.2)  # level 2 falls due while it is down

    async with agent(settings, Fakes()) as (client, app):
        store = app.state.services.store
        [page] = await eventually(lambda: messages_to(store, BEN), what="level 2 paged after the restart")
        assert page.startswith(f"⏫ *Escalation level 2*: #{incident_id} TargetDown is not acknowledged.")
        assert "Why: service checkout is owned by team checkout" in page and "named in level 2" in page
        acked = await client.post(f"/incidents/{incident_id}/acknowledge", json={"by": BEN}, headers=API)
        assert acked.status_code == 200
        await asyncio.sleep(DELAY_S + 0.5)  # level 3 would have been due by now
        assert await messages_to(store, CYD) == [] and len(await messages_to(store, BEN)) == 1
        assert len(await messages_to(store, ANA)) == 1
        levels = await sql(store, "SELECT level, status, stop_reason FROM pages ORDER BY level")
        kinds = [row["kind"] for row in await sql(store, "SELECT kind FROM timeline ORDER BY id")]
        keys = await page_keys(store)
    assert [(r["level"], r["status"], r["stop_reason"]) for r in levels] == [
        (1, "paged", None),
        (2, "paged", None),
        (3, "cancelled", "acknowledged"),
    ]
    assert kinds.count("paged") == 2 and kinds.count("escalation_stopped") == 1
    assert keys == [f"incident:{incident_id}:episode:1:page:2:{BEN}:1"]


def refired(body: bytes) -> bytes:
    """Capture 1 again, its alert starting after the first episode ended (a new episode of the group)."""
    document = json.loads(body)
    for alert in document["alerts"]:
        alert["startsAt"] = "2026-11-30T08:00:00Z"
    return json.dumps(document).encode()


async def test_resolution_post_mortem_and_jira_resolve_then_reopen_through_the_outbox(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, delay_s=600, **JIRA_ENV)
    jira = FakeJira(JIRA, JIRA_ENV["JIRA_EMAIL"], JIRA_ENV["JIRA_API_TOKEN"])
    issue = jira.add("OPS-42", "In Progress")
    phases_before = metric("oncall_incident_phase_seconds_count", phase="resolution")
    with respx.mock(assert_all_called=False) as router:
        jira.install(router)
        create = router.post(f"{JIRA}/rest/api/3/issue").respond(
            201, json={"id": "10042", "key": "OPS-42", "self": f"{JIRA}/rest/api/3/issue/10042"}
        )
        async with agent(settings, Fakes()) as (client, app):
            services = app.state.services
            store = services.store
            incident_id = (await post_alert(client, captured_bytes(1), api_headers=API))["incident_id"]
            await eventually(lambda: messages_to(store, ANA), what="the diagnosis")
            await services.conversation.handle_inbound(ANA, "create a jira task", "SM" + "1" * 32)
            await eventually(
                lambda: sql(store, "SELECT * FROM tickets WHERE status = 'created'"), what="the Jira issue created"
            )
            await client.post("/alerts", content=captured_bytes(10), headers=JSON)  # every alert resolved
            await eventually(lambda: holds(issue.status == "Done"), what="the issue moved to Done")
            stored = await sql(store, "SELECT episode, markdown FROM postmortems")
            served = (await client.get(f"/incidents/{incident_id}/postmortem", headers=API)).text
            resolved_notice = (await messages_to(store, ANA))[-1]

            await client.post("/alerts", content=refired(captured_bytes(1)), headers=JSON)  # fires again
            await eventually(lambda: holds(issue.status == "To Do"), what="the issue reopened")
            await eventually(lambda: holds(len(issue.comments) == 2), what="the refire comment")
            query = "SELECT kind, detail FROM timeline WHERE kind IN ('ticket_refire', 'ticket_lifecycle') ORDER BY id"

            async def recorded() -> list[dict] | None:
                rows = await sql(store, query)
                return rows if len(rows) == 3 else None

            events = await eventually(recorded, what="both Jira outcomes and the refire decision recorded")
    assert [row["episode"] for row in stored] == [1] and served == stored[0]["markdown"]
    assert served.startswith(f"# Post-mortem: #{incident_id} TargetDown\n") and "## Action items" in served
    assert f"Post-mortem: http://127.0.0.1:8088/incidents/{incident_id}/postmortem" in resolved_notice
    first, second = (json.dumps(comment["body"]) for comment in issue.comments)
    assert f"Post-mortem: #{incident_id} TargetDown" in first and f"incident:{incident_id}:episode:1" in first
    assert "TargetDown fired again" in second and "episode 2" in second
    assert create.call_count == 1  # the second episode reopened the issue: no new one was filed
    assert [
        (row["kind"], json.loads(row["detail"]).get("operation") or json.loads(row["detail"])["action"])
        for row in events
    ] == [
        ("ticket_lifecycle", "resolve"),
        ("ticket_refire", "update_issue"),
        ("ticket_lifecycle", "refire"),
    ]
    assert metric("oncall_incident_phase_seconds_count", phase="resolution") == phases_before + 1
