"""JiraClient against respx-mocked Jira Cloud REST v3: assignee resolution, issue payload (ADF validated
against the official schema), Jira errors surfaced, retries, one ticket per incident, drafts without Jira."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import httpx
import pytest
import respx
from jsonschema import Draft4Validator

from oncall.channels.jira.adf import incident_document
from oncall.channels.jira.client import JiraClient
from oncall.channels.jira.models import JiraConfig
from oncall.metrics import JIRA_TICKETS
from oncall.settings import Settings
from oncall.store.database import Store
from tests.support import load_json_fixture, sql, sql_exec, sql_one
from tests.test_whatsapp import insert_incident, sample_diagnosis

JIRA = "https://acme.atlassian.net"
SEARCH = f"{JIRA}/rest/api/3/user/assignable/search"
ISSUE = f"{JIRA}/rest/api/3/issue"
EMAIL = "oncall-bot@acme.example"
TOKEN = "jira-api-token-secret"
PUBLIC_BASE = "https://oncall.example.com"
ADF_VALIDATOR = Draft4Validator(load_json_fixture("adf/adf-schema-v1-full.json"))


def jira_user(account_id: str, name: str, active: bool = True) -> dict:
    """A Jira ``User`` object shaped like the published user-search 200 example."""
    user = dict(load_json_fixture("jira/jira-v3-user-search-200-example.json")[0])
    user.update(
        accountId=account_id, displayName=name, active=active, self=f"{JIRA}/rest/api/3/user?accountId={account_id}"
    )
    return user


def assert_valid_adf(document: dict) -> None:
    errors = sorted(ADF_VALIDATOR.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message[:200]}" for e in errors]


def jira_config() -> JiraConfig:
    """The Jira configuration as the agent reads it from its settings (the base URL's trailing slash dropped)."""
    settings = Settings(
        _env_file=None,
        PUBLIC_BASE_URL=PUBLIC_BASE,
        JIRA_BASE_URL=JIRA + "/",
        JIRA_EMAIL=EMAIL,
        JIRA_API_TOKEN=TOKEN,
        JIRA_PROJECT_KEY="OPS",
    )
    config = JiraConfig.from_settings(settings)
    assert config is not None
    return config


@pytest.fixture
async def jira(store: Store) -> AsyncIterator[JiraClient]:
    async with httpx.AsyncClient() as http:
        yield JiraClient(store, http, jira_config(), PUBLIC_BASE, backoff_s=0.01)


@pytest.fixture
async def disabled_jira(store: Store) -> AsyncIterator[JiraClient]:
    config = JiraConfig.from_settings(Settings(_env_file=None))
    assert config is None
    async with httpx.AsyncClient() as http:
        yield JiraClient(store, http, config, PUBLIC_BASE, backoff_s=0.01)


def test_adf_document_validates_against_the_official_schema() -> None:
    incident = {"id": 12, "title": "InventoryHighErrorRate"}
    full = incident_document(
        incident,
        sample_diagnosis(),
        "https://oncall.example.com/incidents/12",
        "210  def f():\n212      return r.quantity",
    )
    assert_valid_adf(full)
    kinds = [node["type"] for node in full["content"]]
    assert {"heading", "paragraph", "bulletList", "codeBlock"} <= set(kinds)
    link = full["content"][-1]["content"][-1]
    assert link["marks"] == [{"type": "link", "attrs": {"href": "https://oncall.example.com/incidents/12"}}]
    minimal = incident_document(
        incident,
        sample_diagnosis(evidence=[], next_steps=[], suggested_fix="", affected_file=None, affected_line=None),
        "http://x",
    )
    assert_valid_adf(minimal)
    assert_valid_adf(incident_document(incident, None, "http://x"))


def test_schema_rejects_an_invalid_document() -> None:
    """The validator is live: an empty text node (forbidden by ADF) is reported."""
    bad = {"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": [{"type": "text", "text": ""}]}]}
    assert list(ADF_VALIDATOR.iter_errors(bad))


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_single_match_creates_issue_with_full_payload(
    store: Store, jira: JiraClient, respx_mock: respx.MockRouter
) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    search = respx_mock.get(SEARCH).respond(
        200, json=[jira_user("acc-ravi", "Ravi Kumar"), jira_user("acc-old", "Ravi Old", active=False)]
    )
    create = respx_mock.post(ISSUE).respond(201, json={"id": "10042", "key": "OPS-42", "self": f"{ISSUE}/10042"})
    before = JIRA_TICKETS.labels(outcome="created")._value.get()

    result = await jira.create_ticket(incident_id, assignee="Ravi")

    assert result.status == "created" and result.key == "OPS-42" and result.url == f"{JIRA}/browse/OPS-42"
    assert "OPS-42" in result.message and "Ravi Kumar" in result.message
    assert (
        search.calls.last.request.url.params["project"] == "OPS"
        and search.calls.last.request.url.params["query"] == "Ravi"
    )
    request = create.calls.last.request
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(f"{EMAIL}:{TOKEN}".encode()).decode()
    fields = json.loads(request.content)["fields"]
    assert fields["project"] == {"key": "OPS"} and fields["issuetype"] == {"name": "Task"}
    assert fields["priority"] == {"name": "High"}  # P2
    assert fields["assignee"] == {"accountId": "acc-ravi"}
    assert fields["labels"] == ["oncall-agent", "code_bug"]
    assert fields["summary"].startswith(f"[#{incident_id}] InventoryHighErrorRate: GET /random-endpoint/error fails")
    assert len(fields["summary"]) <= 255
    assert_valid_adf(fields["description"])
    assert f"https://oncall.example.com/ui/incidents/{incident_id}" in json.dumps(fields["description"])

    row = await sql_one(store, "SELECT * FROM tickets WHERE id = :id", id=result.ticket_id)

    assert row is not None
    assert row["status"] == "created" and row["jira_key"] == "OPS-42" and row["assignee_account_id"] == "acc-ravi"
    assert json.loads(row["payload"])["fields"]["summary"] == fields["summary"]
    event = (await sql(store, "SELECT kind, detail FROM timeline WHERE incident_id = :id ORDER BY id", id=incident_id))[
        -1
    ]
    assert event["kind"] == "ticket" and json.loads(event["detail"])["key"] == "OPS-42"
    assert JIRA_TICKETS.labels(outcome="created")._value.get() == before + 1


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_inactive_users_from_the_published_example_are_not_assignable(
    store: Store, jira: JiraClient, respx_mock: respx.MockRouter
) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    respx_mock.get(SEARCH).respond(200, json=load_json_fixture("jira/jira-v3-user-search-200-example.json"))
    create = respx_mock.post(ISSUE)
    result = await jira.create_ticket(incident_id, assignee="Mia")
    assert result.status == "assignee_not_found" and "No assignable Jira user" in result.message
    assert "Mia Krystof" in result.message  # the inactive match is named, not silently dropped
    assert not create.called and await sql(store, "SELECT * FROM tickets") == []


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_no_match_is_reported(store: Store, jira: JiraClient, respx_mock: respx.MockRouter) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    respx_mock.get(SEARCH).respond(200, json=[])
    result = await jira.create_ticket(incident_id, assignee="Nobody")
    assert result.status == "assignee_not_found" and '"Nobody"' in result.message and result.candidates == []


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_several_matches_are_listed_not_guessed(
    store: Store, jira: JiraClient, respx_mock: respx.MockRouter
) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    respx_mock.get(SEARCH).respond(200, json=[jira_user("a1", "Ravi Kumar"), jira_user("a2", "Ravi Shankar")])
    create = respx_mock.post(ISSUE)
    result = await jira.create_ticket(incident_id, assignee="Ravi")
    assert result.status == "assignee_ambiguous" and result.candidates == ["Ravi Kumar", "Ravi Shankar"]
    assert "Ravi Kumar, Ravi Shankar" in result.message
    assert not create.called and await sql(store, "SELECT * FROM tickets") == []


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_exact_full_name_wins_among_prefix_matches(
    store: Store, jira: JiraClient, respx_mock: respx.MockRouter
) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    respx_mock.get(SEARCH).respond(200, json=[jira_user("a1", "Ravi Kumar"), jira_user("a2", "Ravi Kumaran")])
    create = respx_mock.post(ISSUE).respond(201, json={"id": "1", "key": "OPS-1", "self": f"{ISSUE}/1"})
    result = await jira.create_ticket(incident_id, assignee="ravi kumar")
    assert result.status == "created"
    assert json.loads(create.calls.last.request.content)["fields"]["assignee"] == {"accountId": "a1"}


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_jira_400_error_collection_is_surfaced(
    store: Store, jira: JiraClient, respx_mock: respx.MockRouter
) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    body = {
        "errorMessages": ["Field 'priority' is required"],
        "errors": {"assignee": "User 'acc-x' cannot be assigned issues."},
    }
    create = respx_mock.post(ISSUE).respond(400, json=body)
    result = await jira.create_ticket(incident_id, assignee=None)
    assert result.status == "failed" and create.call_count == 1
    assert result.error == "Field 'priority' is required; assignee: User 'acc-x' cannot be assigned issues."
    assert result.error in result.message
    row = await sql_one(store, "SELECT * FROM tickets")
    assert row is not None
    assert (
        row["status"] == "failed"
        and row["error"] == result.error
        and "assignee" not in json.loads(row["payload"])["fields"]
    )
    assert TOKEN not in result.message


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_issue_post_5xx_is_not_retried(store: Store, jira: JiraClient, respx_mock: respx.MockRouter) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    create = respx_mock.post(ISSUE).respond(502, text="<html>Bad Gateway</html>")
    result = await jira.create_ticket(incident_id, assignee=None)
    assert result.status == "failed" and create.call_count == 1 and result.error is not None and "502" in result.error


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_issue_post_connect_error_is_retried(
    store: Store, jira: JiraClient, respx_mock: respx.MockRouter
) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    create = respx_mock.post(ISSUE).mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(201, json={"id": "7", "key": "OPS-7", "self": "x"})]
    )
    result = await jira.create_ticket(incident_id, assignee=None)
    assert result.status == "created" and result.key == "OPS-7" and create.call_count == 2
    assert "unassigned" in result.message


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_user_search_retries_5xx_and_429(store: Store, jira: JiraClient, respx_mock: respx.MockRouter) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    search = respx_mock.get(SEARCH).mock(
        side_effect=[
            httpx.Response(503, json={"errorMessages": ["busy"]}),
            httpx.Response(429, json={"errorMessages": ["Rate limit exceeded."]}),
            httpx.Response(200, json=[jira_user("a1", "Priya Nair")]),
        ]
    )
    respx_mock.post(ISSUE).respond(201, json={"id": "8", "key": "OPS-8", "self": "x"})
    result = await jira.create_ticket(incident_id, assignee="priya")
    assert result.status == "created" and search.call_count == 3 and result.assignee == "Priya Nair"


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_user_search_401_is_reported_without_credentials(
    store: Store, jira: JiraClient, respx_mock: respx.MockRouter
) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    search = respx_mock.get(SEARCH).respond(401, text="")
    result = await jira.create_ticket(incident_id, assignee="Ravi")
    assert result.status == "failed" and search.call_count == 1
    assert "authentication failed" in result.message and TOKEN not in result.message


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_one_ticket_per_incident_unless_forced(
    store: Store, jira: JiraClient, respx_mock: respx.MockRouter
) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    create = respx_mock.post(ISSUE).mock(
        side_effect=[
            httpx.Response(201, json={"id": "1", "key": "OPS-1", "self": "x"}),
            httpx.Response(201, json={"id": "2", "key": "OPS-2", "self": "x"}),
        ]
    )
    first = await jira.create_ticket(incident_id, assignee=None)
    again = await jira.create_ticket(incident_id, assignee=None)
    assert first.status == "created" and again.status == "exists" and again.key == "OPS-1"
    assert "already has Jira OPS-1" in again.message and create.call_count == 1
    forced = await jira.create_ticket(incident_id, assignee=None, force_new=True)
    assert forced.status == "created" and forced.key == "OPS-2" and create.call_count == 2


async def test_disabled_jira_keeps_a_draft(store: Store, disabled_jira: JiraClient) -> None:
    incident_id = await insert_incident(store, sample_diagnosis(priority="P1"))
    with respx.mock(assert_all_called=False) as mock:
        result = await disabled_jira.create_ticket(incident_id, assignee="Ravi")
        assert not mock.calls  # no network at all
    assert (
        result.status == "draft" and "Jira is not configured" in result.message and f"#{incident_id}" in result.message
    )
    row = await sql_one(store, "SELECT * FROM tickets")
    assert row is not None
    assert row["status"] == "draft" and row["assignee_query"] == "Ravi" and row["jira_key"] is None
    fields = json.loads(row["payload"])["fields"]
    assert fields["priority"] == {"name": "Highest"}
    assert_valid_adf(fields["description"])
    again = await disabled_jira.create_ticket(incident_id, assignee="Ravi")
    assert again.status == "exists" and "draft" in again.message
    assert len(await sql(store, "SELECT * FROM tickets")) == 1


async def test_unknown_incident(store: Store, disabled_jira: JiraClient) -> None:
    result = await disabled_jira.create_ticket(999, assignee=None)
    assert result.status == "no_incident" and "#999" in result.message


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_description_carries_the_fetched_code_excerpt(
    store: Store, jira: JiraClient, respx_mock: respx.MockRouter
) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    code = "  211 |     reservation = find_reservation(item_id)\n> 212 |     return reservation.quantity"
    await sql_exec(
        store,
        "INSERT INTO tool_calls (incident_id, tool, arguments, ok, result, started_at, duration_s)"
        " VALUES (:id, 'fetch_code_from_github', '{}', 1, :result, 0, 0.01)",
        id=incident_id,
        result=json.dumps(
            {"source": "local", "path": "inventory_service.py", "start_line": 211, "end_line": 212, "code": code}
        ),
    )
    create = respx_mock.post(ISSUE).respond(201, json={"id": "3", "key": "OPS-3", "self": "x"})
    assert (await jira.create_ticket(incident_id, assignee=None)).status == "created"
    description = json.loads(create.calls.last.request.content)["fields"]["description"]
    assert_valid_adf(description)
    [block] = [node for node in description["content"] if node["type"] == "codeBlock"]
    assert block["content"][0]["text"] == code and block["attrs"] == {"language": "python"}
