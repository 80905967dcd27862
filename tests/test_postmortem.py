"""The post-mortem of a realistic incident: the captured Alertmanager webhooks ingested (firing, then
resolved), the offline engine investigating the null-dereference scenario through the rig, the
roster paging level 1 then escalating to level 2, a Jira issue, an acknowledgement that stops the
chain. Checks the Markdown's sections and facts, its safety (parsed with markdown-it-py), the phase
timings, the stored draft and ``GET /incidents/{id}/postmortem``."""

from __future__ import annotations

import asyncio
import copy
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import respx
from markdown_it import MarkdownIt
from markdown_it.token import Token

from on_call_agent import build_services, create_app
from oncall.channels.jira.client import JiraClient
from oncall.channels.jira.delivery import JiraIssueDelivery
from oncall.channels.outbox import OutboxWorker
from oncall.diagnosis import Diagnosis, FaultType, Hypothesis, ProposedAction
from oncall.diagnosis import Impact as DiagnosisImpact
from oncall.history.document import Document, Section, code, link, text, to_markdown
from oncall.history.impact import Slo, episode_impact
from oncall.history.phases import PHASES, phase_timings
from oncall.history.postmortem import build_postmortem, postmortem_markdown, write_postmortem
from oncall.incidents import actions
from oncall.paging.escalation import Escalations
from oncall.roster.config import parse_roster
from oncall.store import pages, views
from tests.api_fuzz import fuzz_asgi_app
from tests.catalog_support import catalog_with_alias
from tests.support import ingest_notification, migrated_store, sql
from tests.test_agent_api import API, agent, make_settings
from tests.test_ingest import capture, webhook_bytes
from tests.test_investigation import BUG_LINE, make_rig, scenario_code_bug  # noqa: F401  (make_rig: a fixture)
from tests.test_jira import ISSUE, jira_config
from tests.test_roster import FALLBACK, ROSTER
from tests.test_whatsapp import insert_incident

CHECKOUT_ROSTER = parse_roster(ROSTER.replace("services:\n", "services:\n  checkout: inventory\n"))
NAMES = {person.whatsapp: person.name for person in CHECKOUT_ROSTER.people.values()}
SECTIONS = [
    "Summary",
    "Impact",
    "Timeline",
    "Phase timings",
    "Root cause",
    "Contributing factors",
    "What went well",
    "What went badly",
    "Action items",
]


def rfc3339(epoch_s: float) -> str:
    """Alertmanager's timestamp format (Go time.RFC3339Nano, UTC, milliseconds)."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def replayed(seq: int, starts_at: float, ends_at: float | None = None) -> bytes:
    """A captured webhook body with its alert times moved to now (the wire format unchanged)."""
    body: dict[str, Any] = copy.deepcopy(capture(seq)["body"])
    for alert in body["alerts"]:
        alert["startsAt"] = rfc3339(starts_at)
        if ends_at is not None:
            alert["endsAt"] = rfc3339(ends_at)
    return webhook_bytes(body)


def block_texts(tokens: list[Token], opening: str, tag: str | None = None) -> list[str]:
    """The inline source of each block opened by ``opening`` (and ``tag``): headings, paragraphs."""
    return [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == opening and tag in (None, t.tag)]


def inline_children(tokens: list[Token]) -> list[Token]:
    return [child for token in tokens for child in token.children or []]


def token_types(tokens: list[Token]) -> set[str]:
    return {t.type for t in tokens} | {c.type for c in inline_children(tokens)}


def links(tokens: list[Token]) -> list[str | None]:
    return [str(c.attrGet("href")) for c in inline_children(tokens) if c.type == "link_open"]


@pytest.fixture
async def resolved_incident(make_rig, tmp_path):  # noqa: F811
    """The rig, and an incident taken from firing to resolved the way the agent would."""
    rig = make_rig(SERVICES_FILE=str(catalog_with_alias(tmp_path / "catalog", "checkout")))
    store = rig.store
    fired = time.time() - 25
    firing = await ingest_notification(store, replayed(3, fired))
    assert firing.start_investigation and firing.incident_id is not None
    incident_id = firing.incident_id
    escalations = Escalations(CHECKOUT_ROSTER, FALLBACK)
    with respx.mock(assert_all_called=False) as router:
        scenario_code_bug().mock(router)
        router.post(ISSUE).respond(201, json={"id": "10042", "key": "OPS-42", "self": f"{ISSUE}/10042"})
        diagnosis = await rig.investigate(incident_id)  # offline engine; the diagnosis goes to the console
        assert diagnosis is not None and diagnosis.fault_type.value == "code_bug"
        async with store.write() as conn:
            detail = await views.incident_detail(conn, incident_id)
            assert detail is not None
            first = await escalations.start(
                conn,
                incident_id=incident_id,
                episode=1,
                service=detail["service"],
                episode_started_at=detail["created_at"],
                now=time.time(),
            )
        assert first is not None and first.next_due_at is not None
        async with store.write() as conn:  # nobody acknowledged within level 1's delay
            second = await escalations.claim_due(conn, first.next_due_at)
        assert [p.level for p in second] == [2]
        ticket = await JiraClient(store, rig.http, jira_config(), "https://oncall.example.com").create_ticket(
            incident_id, assignee=None
        )
        assert ticket.status == "queued"  # the issue is created from the outbox
        jira = JiraIssueDelivery(rig.http, jira_config(), rig.sender())
        await OutboxWorker(store, {"jira": jira}, rig.tasks, replica_id="test").drain()
        [created] = await sql(store, "SELECT jira_key FROM tickets WHERE incident_id = :id", id=incident_id)
        assert created["jira_key"] == "OPS-42"
    await actions.acknowledge(store, incident_id, "whatsapp:+15550100003", note="rolling back")
    async with store.write() as conn:
        await escalations.stop(conn, incident_id, "acknowledged", time.time())
    resolved = await ingest_notification(store, replayed(11, fired, time.time()))
    assert resolved.resolved_now
    return rig, incident_id, [first, *second]


async def test_postmortem_of_a_resolved_incident(resolved_incident) -> None:
    rig, incident_id, paged = resolved_incident
    url = f"https://oncall.example.com/incidents/{incident_id}"
    async with rig.store.write() as conn:
        markdown = await write_postmortem(conn, incident_id, 1, incident_url=url, names=NAMES)
    assert markdown is not None
    tokens = MarkdownIt("commonmark").parse(markdown)
    assert block_texts(tokens, "heading_open", "h2") == SECTIONS
    assert block_texts(tokens, "heading_open", "h1") == [f"Post-mortem: #{incident_id} TargetDown"]
    assert links(tokens) == [url]  # only the agent's own link
    assert not token_types(tokens) & {"html_inline", "html_block", "image"}

    level_one = paged[0].recipients[0].name
    facts = [
        f"#{incident_id} TargetDown (service checkout, severity critical) is resolved.",
        "acknowledged by Lee Chen after",
        "(time to acknowledge)",
        "(time to resolve)",
        "(from the alert firing)",
        "Affected replicas: `inventory-1, inventory-2, inventory-3`",
        "Error budget: no SLO defined for service checkout",
        "(+0.0 s) Alert fired in Prometheus (detection)",
        "Incident opened from the Alertmanager notification",
        "Investigation started (offline engine, 1 alert(s))",
        "Diagnosis `code_bug` (P1) on inventory-1, inventory-2, inventory-3",
        "WhatsApp diagnosis message sent (console channel)",
        f"Paged level 1: {level_one}",
        "Escalated to level 2: Lee Chen",
        "Jira `OPS-42` created",
        "Acknowledged by Lee Chen: rolling back",
        "Escalation stopped: acknowledged",
        "Resolved: every alert of the group cleared",
        f"at `inventory_service.py:{BUG_LINE}`",
        "- tool `fetch_logs`: 1 call(s)",
        "The offline engine diagnosed it in",
        "The fix is tracked in Jira `OPS-42`.",
        "The page escalated to level 2: earlier levels did not acknowledge in time.",
        "Add a regression test that hits the failing route",
        "Track the fix in Jira `OPS-42`",
        "Review why the first page was not acknowledged before the escalation delay.",
    ]
    missing = [fact for fact in facts if fact not in markdown]
    assert not missing, f"{missing}\n\n{markdown}"
    for phase in PHASES:
        assert f"- {phase}: " in markdown and f"- {phase}: not reached" not in markdown
    async with rig.store.read() as conn:
        detail = await views.incident_detail(conn, incident_id)
        assert await postmortem_markdown(conn, incident_id) == markdown  # the stored draft is served
        rows = await pages.for_incident(conn, incident_id)
    assert detail is not None and detail["diagnosis"]["root_cause"] in markdown.replace("\\", "")
    assert [(r["level"], r["status"]) for r in rows] == [(1, "paged"), (2, "paged"), (3, "cancelled")]


async def test_phase_timings_follow_the_timeline(resolved_incident) -> None:
    rig, incident_id, _ = resolved_incident
    async with rig.store.read() as conn:
        detail = await views.incident_detail(conn, incident_id)
    assert detail is not None
    timings = phase_timings(detail)
    assert [p.name for p in timings.phases] == list(PHASES)
    bounds = [(p.started_at, p.ended_at) for p in timings.phases]
    assert all(start is not None and end is not None and start <= end + 1e-6 for start, end in bounds)
    assert timings.phase("ingest").duration_s == pytest.approx(detail["created_at"] - timings.detected_at)
    assert 20 <= timings.phase("ingest").duration_s < 60  # the replayed alert fired 25 s before ingest
    assert timings.time_to_acknowledge_s == pytest.approx(detail["acknowledged_at"] - timings.detected_at)
    assert timings.time_to_resolve_s == pytest.approx(detail["resolved_at"] - timings.detected_at)
    tools = {t.tool: t for t in timings.tools}
    calls = [c for c in detail["tool_calls"] if c["tool"] == "fetch_logs"]
    assert tools["fetch_logs"].calls == len(calls) and tools["fetch_logs"].total_s == pytest.approx(
        sum(c["duration_s"] for c in calls), abs=1e-3
    )


async def test_postmortem_route_serves_markdown_and_validates_ids(resolved_incident) -> None:
    rig, incident_id, _ = resolved_incident
    async with agent(rig.settings, build_services) as (client, _app):
        live = await client.get(f"/incidents/{incident_id}/postmortem")  # not stored yet: drafted now
        assert live.status_code == 200 and live.headers["content-type"] == "text/markdown; charset=utf-8"
        assert live.text.startswith(f"# Post-mortem: #{incident_id} TargetDown\n")
        async with rig.store.write() as conn:
            stored = await write_postmortem(conn, incident_id, 1, names=NAMES)
        assert (await client.get(f"/incidents/{incident_id}/postmortem")).text == stored
        missing = await client.get("/incidents/999999/postmortem")
        assert missing.status_code == 404 and missing.json()["detail"] == "incident 999999 not found"
        for bad in ("0", "-1", "abc", str(2**63)):
            assert (await client.get(f"/incidents/{bad}/postmortem")).status_code == 422


def test_untrusted_text_cannot_become_markup() -> None:
    hostile = "[click](http://evil.example) <img src=x onerror=alert(1)> **bold** # heading `code`"
    document = Document(
        "T",
        [
            Section(
                "S",
                paragraphs=[[text("- not a list " + hostile)], [text("1. not ordered")]],
                bullets=[[text(hostile)], [code("a `tick` b")], [link("https://oncall.example.com/incidents/1")]],
            )
        ],
    )
    markdown = to_markdown(document)
    tokens = MarkdownIt("commonmark").parse(markdown)
    kinds = token_types(tokens)
    assert "bullet_list_open" in kinds and "ordered_list_open" not in kinds
    assert not kinds & {"image", "html_inline", "html_block"}
    assert block_texts(tokens, "heading_open", "h2") == ["S"]  # "# heading" inside the text stayed text
    assert links(tokens) == ["https://oncall.example.com/incidents/1"]
    rendered = MarkdownIt("commonmark").renderInline(block_texts(tokens, "paragraph_open")[0])
    assert rendered.startswith("- not a list [click](http://evil.example) &lt;img")
    assert [c.content for c in inline_children(tokens) if c.type == "code_inline"] == ["a `tick` b"]


def test_open_incident_draft_says_so_and_counts_duration_so_far() -> None:
    now = 1_790_000_000.0
    detail = {
        "id": 5,
        "title": "X",
        "status": "firing",
        "service": "inventory",
        "severity": None,
        "created_at": now - 100,
        "resolved_at": None,
        "acknowledged_at": None,
        "acknowledged_by": None,
        "common_labels": {"alertname": "InventoryHighErrorRate"},
        "diagnosis": None,
        "alerts": [{"starts_at": rfc3339(now - 130)}],
        "timeline": [{"at": now - 100, "kind": "created", "detail": {}}],
        "tool_calls": [
            {
                "tool": "compute_error_rate",
                "ok": True,
                "started_at": now - 90,
                "duration_s": 0.1,
                "result": {
                    "overall_error_ratio": 0.5,
                    "requests_per_second_by_replica": {"inventory-1": 10.0, "inventory-2": 10.0},
                    "per_route_error_ratio": {"/random-endpoint/error": 1.0, "/items/{item_id}": 0.0},
                    "per_replica_error_ratio": {"inventory-1": 0.5, "inventory-2": 0.5},
                },
            }
        ],
        "tickets": [],
    }
    markdown = to_markdown(build_postmortem(detail, slo=Slo(target=0.999, period_s=30 * 86400), now=now))
    assert markdown.startswith("# Post-mortem: #5 InventoryHighErrorRate (draft: the incident is still firing)")
    assert "Duration so far: 2m 10s (from the alert firing)" in markdown
    # estimate: 50% x 20 req/s x 130 s = 1300 of 2600 requests; budget 0.5 x 130 s / (0.001 x 30 days) = 2.5%
    assert "≈ 1,300 of ≈ 2,600 requests failed, 50.0% of requests (estimate" in markdown
    assert "Affected routes: `/random-endpoint/error`" in markdown
    assert "Error budget: 2.5% of the 30-day budget of the 99.900% SLO burned" in markdown
    assert "- acknowledgement: not reached" in markdown and "Nobody acknowledged the incident." in markdown
    assert "No diagnosis was recorded for this incident." in markdown


def test_counted_impact_alternatives_and_proposed_actions_from_the_diagnosis_contract() -> None:
    now = 1_790_000_000.0
    found = Diagnosis(
        summary="1.4.1 breaks GET /items",
        root_cause="the 1.4.1 pricing path dereferences a missing promotion",
        fault_type=FaultType.code_bug,
        affected_service="inventory",
        affected_replicas=["inventory-1"],
        priority="P1",
        confidence=0.9,
        hypotheses=[
            Hypothesis(fault_type=FaultType.code_bug, summary="1.4.1 regression", confidence=0.9),
            Hypothesis(fault_type=FaultType.latency, summary="slow disk", confidence=0.2, explains_alert=False),
        ],
        proposed_actions=[
            ProposedAction(
                action="rollback", target="all", params={"version": "1.4.0"}, risk="low", rationale="1.4.0 was healthy"
            )
        ],
        impact=DiagnosisImpact(
            requests=12_000, failed_requests=3_000, affected_routes=["/items/{item_id}"], error_budget_burned=0.125
        ),
    )
    detail = {
        "id": 7,
        "title": "InventoryHighErrorRate",
        "status": "resolved",
        "service": "inventory",
        "created_at": now - 600,
        "resolved_at": now,
        "common_labels": {"alertname": "InventoryHighErrorRate"},
        "diagnosis": found.model_dump(mode="json"),
        "alerts": [],
        "timeline": [{"at": now - 600, "kind": "created", "detail": {}}, {"at": now, "kind": "resolved", "detail": {}}],
        "tool_calls": [],
        "tickets": [],
    }
    markdown = to_markdown(build_postmortem(detail, now=now))
    assert "≈ 3,000 of ≈ 12,000 requests failed, 25.0% of requests (counted by the investigation)" in markdown
    assert "Affected routes: `/items/{item_id}`" in markdown
    assert "Error budget: no SLO defined for service inventory" in markdown  # no SLO given: not claimed
    assert "Alternative considered: `latency` slow disk (confidence 20%, does not explain the alert)" in markdown
    assert "Proposed remediation `rollback all version 1.4.0` (risk low): 1.4.0 was healthy" in markdown
    impact = episode_impact(detail, now - 600, now, Slo(0.99))
    assert (impact.source, impact.failed_share, impact.budget_burned) == ("diagnosis", 0.25, 0.125)
    contract = impact.to_contract()
    assert (contract.requests, contract.failed_ratio, contract.duration_s) == (12_000, 0.25, 600)


def test_postmortem_route_survives_fuzzing(tmp_path) -> None:
    settings = make_settings(tmp_path)
    for pinned in (None, {"incident_id": asyncio.run(an_incident(tmp_path / "oncall.db"))}):
        report = fuzz_asgi_app(
            create_app(settings),
            max_examples=10,
            headers=API,
            path_parameters=pinned,
            include=lambda operation: operation.path == "/incidents/{incident_id}/postmortem",
        )
        assert report.ok and report.operations == ["GET /incidents/{incident_id}/postmortem"], report.format()
    assert "200" in report.format()  # the existing incident's draft, checked against the documented response


async def an_incident(path) -> int:
    store = migrated_store(path)
    try:
        return await insert_incident(store, None)
    finally:
        await store.close()
