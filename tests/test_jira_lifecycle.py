"""The Jira issue after an incident: the post-mortem comment (ADF, validated against the official schema)
and the move to the done status on resolution; reopen or comment when the alert fires again within
JIRA_REOPEN_WINDOW_S; retries that never duplicate a comment; Jira's errors surfaced. Against a
stateful fake speaking Jira Cloud REST v3 (tests/fake_jira.py)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from oncall.channels.jira.comments import MAX_BULLETS, document_adf, marker_text, refire_document
from oncall.channels.jira.lifecycle import JiraLifecycle, LifecycleConfig, decide_refire
from oncall.channels.jira.models import JiraError
from oncall.history.document import Document, Section, code, link, strong, text
from oncall.settings import Settings
from oncall.store import history
from oncall.store.database import Store
from tests.fake_jira import FakeJira
from tests.support import sql_exec
from tests.test_jira import EMAIL, JIRA, TOKEN, assert_valid_adf, jira_config
from tests.test_similar import seed

URL = "https://oncall.example.com/incidents/12"
LIFECYCLE = LifecycleConfig.from_settings(Settings(_env_file=None))


def postmortem() -> Document:
    return Document(
        "Post-mortem: #12 InventoryHighErrorRate",
        [
            Section("Summary", [[text("Resolved after "), strong("14m"), text(": "), link(URL)]]),
            Section("Timeline", bullets=[[text(f"event {n} "), code("inventory_service.py:212")] for n in range(60)]),
            Section("Empty", paragraphs=[[text("")]]),
        ],
    )


@pytest.fixture
async def jira() -> AsyncIterator[tuple[FakeJira, JiraLifecycle]]:
    fake = FakeJira(JIRA, EMAIL, TOKEN)
    async with httpx.AsyncClient() as http, respx.mock(assert_all_called=False) as router:
        fake.install(router)
        yield fake, JiraLifecycle(http, jira_config(), LIFECYCLE, backoff_s=0.01)


def comment_texts(comment: dict[str, Any]) -> str:
    return json.dumps(comment["body"])


def test_lifecycle_settings_defaults_and_post_mortem_adf() -> None:
    assert (LIFECYCLE.done_status, LIFECYCLE.reopen_status, LIFECYCLE.reopen_window_s) == ("Done", "To Do", 86400)
    document = document_adf(postmortem(), URL)
    assert_valid_adf(document)
    kinds = [node["type"] for node in document["content"]]
    assert kinds == ["heading", "heading", "paragraph", "heading", "bulletList", "heading"]
    timeline = document["content"][4]["content"]
    assert len(timeline) == MAX_BULLETS + 1
    assert timeline[-1]["content"][0]["content"][0]["text"] == f"… 20 more on the incident page: {URL}"
    summary = document["content"][2]["content"]
    assert {"type": "strong"} in summary[1]["marks"] and summary[3]["marks"] == [
        {"type": "link", "attrs": {"href": URL}}
    ]
    assert_valid_adf(refire_document(12, "InventoryHighErrorRate", 2, URL))


async def test_resolution_comments_the_post_mortem_and_moves_the_issue_to_done(jira) -> None:
    fake, lifecycle = jira
    issue = fake.add("OPS-42", "In Progress")
    moved = await lifecycle.resolve("OPS-42", document_adf(postmortem(), URL), "resolved-12-1")
    assert (moved.moved, moved.already, moved.status) == (True, False, "Done") and issue.status == "Done"
    assert len(issue.comments) == 1
    posted = issue.comments[0]["body"]
    assert_valid_adf(posted)
    assert "Post-mortem: #12 InventoryHighErrorRate" in comment_texts(issue.comments[0])
    assert posted["content"][-1]["content"][0]["text"] == marker_text("resolved-12-1")
    assert ("POST", "/rest/api/3/issue/OPS-42/transitions") in fake.requests

    again = await lifecycle.resolve("OPS-42", document_adf(postmortem(), URL), "resolved-12-1")  # a retry
    assert (again.moved, again.already) == (False, True) and len(issue.comments) == 1


async def test_the_alert_firing_again_reopens_a_done_issue_or_comments(jira) -> None:
    fake, lifecycle = jira
    done = fake.add("OPS-42", "Done")
    moved = await lifecycle.refire("OPS-42", refire_document(12, "InventoryHighErrorRate", 2, URL), "refire-12-2")
    assert (moved.moved, moved.status, done.status) == (True, "To Do", "To Do")
    assert "fired again" in comment_texts(done.comments[0])
    open_issue = fake.add("OPS-43", "In Progress")
    moved = await lifecycle.refire("OPS-43", refire_document(13, "InventoryHighErrorRate", 2, URL), "refire-13-2")
    assert (moved.moved, moved.already, open_issue.status) == (False, True, "In Progress")
    assert len(open_issue.comments) == 1
    assert not [r for r in fake.requests if r == ("POST", "/rest/api/3/issue/OPS-43/transitions")]


async def test_a_status_no_transition_leads_to_is_reported_not_forced(jira) -> None:
    fake, lifecycle = jira
    issue = fake.add("OPS-42", "To Do")
    moved = await lifecycle.move_to("OPS-42", "Closed")
    assert (moved.moved, moved.already, moved.status, moved.available) == (
        False,
        False,
        "To Do",
        ("In Progress", "Done"),
    )
    assert issue.status == "To Do"
    assert (await lifecycle.move_to("OPS-42", "start progress")).status == "In Progress"  # by transition name


async def test_transient_errors_are_retried_and_a_lost_answer_never_duplicates_a_comment(jira) -> None:
    fake, lifecycle = jira
    issue = fake.add("OPS-42", "In Progress")
    fake.fail["GET issue"] = lambda request, _: httpx.Response(503, text="Service Unavailable")

    def lost_answer(request: httpx.Request, target: Any) -> httpx.Response:
        fake.create_comment(request, target)  # Jira stored it, but the answer never arrived
        raise httpx.ReadTimeout("timed out", request=request)

    fake.fail["POST comment"] = lost_answer
    with pytest.raises(httpx.ReadTimeout):  # not retried: the comment may exist
        await lifecycle.resolve("OPS-42", document_adf(postmortem(), URL), "resolved-12-1")
    assert len(issue.comments) == 1 and issue.status == "In Progress"
    moved = await lifecycle.resolve("OPS-42", document_adf(postmortem(), URL), "resolved-12-1")  # the caller retries
    assert moved.moved and issue.status == "Done" and len(issue.comments) == 1
    assert fake.requests.count(("GET", "/rest/api/3/issue/OPS-42")) == 2  # the 503, then its retry

    fake.fail["POST comment"] = lambda request, _: (_ for _ in ()).throw(httpx.ConnectError("refused"))
    await lifecycle.comment("OPS-42", document_adf(postmortem(), URL), "note-12")  # never sent: retried
    assert len(issue.comments) == 2


async def test_jira_errors_surface_with_jira_text(jira) -> None:
    fake, lifecycle = jira
    with pytest.raises(JiraError) as missing:
        await lifecycle.status("OPS-404")
    assert missing.value.status == 404
    assert missing.value.text == "Issue does not exist or you do not have permission to see it."
    fake.add("OPS-42", "In Progress")
    fake.fail["POST transitions"] = lambda request, _: httpx.Response(
        400, json={"errorMessages": ["Transition id '31' is not valid for this issue."], "errors": {}}
    )
    with pytest.raises(JiraError, match="Transition id '31' is not valid"):
        await lifecycle.move_to("OPS-42", "Done")
    async with httpx.AsyncClient() as http:
        wrong = dataclasses.replace(jira_config(), api_token=SecretStr("wrong"))
        with pytest.raises(JiraError) as denied:
            await JiraLifecycle(http, wrong, LIFECYCLE, backoff_s=0.01).status("OPS-42")
    assert denied.value.status == 401 and "JIRA_API_TOKEN" in denied.value.text and "wrong" not in str(denied.value)


async def test_refire_decision_reads_the_group_s_last_issue(store: Store) -> None:
    now = 1_790_000_000.0
    incident_id = await seed(store, "refire", ticket="OPS-41", resolved_ago=1800)
    async with store.read() as conn:
        group_key = (await history.one(conn, incident_id))["group_key"]  # type: ignore[index]
        previous = await history.last_ticket_of_group(conn, group_key)
        assert await history.last_ticket_of_group(conn, '{}:{alertname="Other"}') is None
    assert previous is not None and (previous["jira_key"], previous["last_resolved_at"]) == ("OPS-41", now - 1800)
    within = decide_refire(previous, now, 3600)
    assert (within.action, within.key) == ("update_issue", "OPS-41")
    assert within.reason == "fired again 1800 s after OPS-41 resolved (window 3600 s)"
    beyond = decide_refire(previous, now, 600)
    assert (beyond.action, beyond.key, beyond.reason) == (
        "new_issue",
        None,
        "OPS-41 resolved 1800 s ago, beyond the window of 600 s",
    )
    assert decide_refire(previous, now, 0).action == "new_issue"
    assert decide_refire(None, now, 3600).reason == "no earlier Jira issue for this alert group"
    await sql_exec(store, "DELETE FROM timeline WHERE incident_id = :id", id=incident_id)
    async with store.read() as conn:
        never_resolved = await history.last_ticket_of_group(conn, group_key)
    assert decide_refire(never_resolved, now, 3600).action == "update_issue"
