"""JiraClient and its outbox delivery against respx-mocked Jira Cloud REST v3: assignee resolution, issue
payload (ADF validated against the official schema), Jira errors surfaced, retries that first look for
the issue by its idempotency label, one ticket per incident, the WhatsApp confirmation once Jira has the
issue, drafts without Jira."""

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
from oncall.channels.jira.delivery import JiraIssueDelivery
from oncall.channels.jira.models import JiraConfig, TicketResult
from oncall.channels.outbox import OutboxWorker
from oncall.channels.whatsapp.sender import WhatsAppSender
from oncall.metrics import JIRA_TICKETS
from oncall.settings import Settings
from oncall.store.database import Store
from oncall.tasks import BackgroundTasks
from tests.support import load_json_fixture, sql, sql_exec, sql_one
from tests.test_whatsapp import insert_incident, sample_diagnosis

JIRA = "https://acme.atlassian.net"
SEARCH = f"{JIRA}/rest/api/3/user/assignable/search"
ISSUE = f"{JIRA}/rest/api/3/issue"
JQL = f"{JIRA}/rest/api/3/search/jql"
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


class Jira(JiraClient):
    """The JiraClient with the outbox worker that delivers its requests (console WhatsApp confirmations)."""

    def __init__(self, store: Store, http: httpx.AsyncClient) -> None:
        super().__init__(store, http, jira_config(), PUBLIC_BASE, backoff_s=0.01)
        sender = WhatsAppSender(store, twilio=None, from_number=None, recipients=[], public_base_url=PUBLIC_BASE)
        self.outbox = OutboxWorker(
            store,
            {"jira": JiraIssueDelivery(http, jira_config(), sender), "whatsapp": sender},
            BackgroundTasks(),
            replica_id="test",
            backoff_s=0.01,
            backoff_max_s=0.02,
            poll_s=0.05,
        )

    async def request(self, incident_id: int, **options: object) -> TicketResult:
        """``create_ticket`` then deliver the outbox until nothing is pending; returns the immediate result."""
        result = await self.create_ticket(incident_id, **options)  # type: ignore[arg-type]
        await self.outbox.drain(retries=True)
        return result


async def confirmations(store: Store, incident_id: int) -> list[str]:
    rows = await sql(store, "SELECT body FROM messages WHERE incident_id = :id ORDER BY id", id=incident_id)
    return [row["body"] for row in rows]


@pytest.fixture
async def jira(store: Store) -> AsyncIterator[Jira]:
    async with httpx.AsyncClient() as http:
        yield Jira(store, http)


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
    store: Store, jira: Jira, respx_mock: respx.MockRouter
) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    search = respx_mock.get(SEARCH).respond(
        200, json=[jira_user("acc-ravi", "Ravi Kumar"), jira_user("acc-old", "Ravi Old", active=False)]
    )
    create = respx_mock.post(ISSUE).respond(201, json={"id": "10042", "key": "OPS-42", "self": f"{ISSUE}/10042"})
    before = JIRA_TICKETS.labels(outcome="created")._value.get()

    result = await jira.request(incident_id, assignee="Ravi")

    assert result.status == "queued" and "Ravi Kumar" in result.message and result.key is None
    [confirmation] = await confirmations(store, incident_id)
    assert f"Jira OPS-42 created for #{incident_id} and assigned to Ravi Kumar: {JIRA}/browse/OPS-42" in confirmation
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
    assert fields["labels"][:2] == ["oncall-agent", "code_bug"] and fields["labels"][2].startswith("oncall-")
    assert fields["summary"].startswith(f"[#{incident_id}] InventoryHighErrorRate: GET /random-endpoint/error fails")
    assert len(fields["summary"]) <= 255
    assert_valid_adf(fields["description"])
    assert f"https://oncall.example.com/ui/incidents/{incident_id}" in json.dumps(fields["description"])

    row = await sql_one(store, "SELECT * FROM tickets WHERE id = :id", id=result.ticket_id)

    assert row is not None
    assert row["status"] == "created" and row["jira_key"] == "OPS-42" and row["assignee_account_id"] == "acc-ravi"
    assert row["url"] == f"{JIRA}/browse/OPS-42"
    assert json.loads(row["payload"])["fields"]["summary"] == fields["summary"]
    event = (await sql(store, "SELECT kind, detail FROM timeline WHERE incident_id = :id ORDER BY id", id=incident_id))[
        -1
    ]
    assert event["kind"] == "ticket" and json.loads(event["detail"])["key"] == "OPS-42"
    assert JIRA_TICKETS.labels(outcome="created")._value.get() == before + 1


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_inactive_users_from_the_published_example_are_not_assignable(
    store: Store, jira: Jira, respx_mock: respx.MockRouter
) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    respx_mock.get(SEARCH).respond(200, json=load_json_fixture("jira/jira-v3-user-search-200-example.json"))
    create = respx_mock.post(ISSUE)
    result = await jira.request(incident_id, assignee="Mia")
    assert result.status == "assignee_not_found" and "No assignable Jira user" in result.message
    assert "Mia Krystof" in result.message  # the inactive match is named, not silently dropped
    assert not create.called and await sql(store, "SELECT * FROM tickets") == []


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_no_match_is_reported(store: Store, jira: Jira, respx_mock: respx.MockRouter) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    respx_mock.get(SEARCH).respond(200, json=[])
    result = await jira.create_ticket(incident_id, assignee="Nobody")
    assert result.status == "assignee_not_found" and '"Nobody"' in result.message and result.candidates == []


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_several_matches_are_listed_not_guessed(store: Store, jira: Jira, respx_mock: respx.MockRouter) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    respx_mock.get(SEARCH).respond(200, json=[jira_user("a1", "Ravi Kumar"), jira_user("a2", "Ravi Shankar")])
    create = respx_mock.post(ISSUE)
    result = await jira.create_ticket(incident_id, assignee="Ravi")
    assert result.status == "assignee_ambiguous" and result.candidates == ["Ravi Kumar", "Ravi Shankar"]
    assert "Ravi Kumar, Ravi Shankar" in result.message
    assert not create.called and await sql(store, "SELECT * FROM tickets") == []


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_exact_full_name_wins_among_prefix_matches(
    store: Store, jira: Jira, respx_mock: respx.MockRouter
) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    respx_mock.get(SEARCH).respond(200, json=[jira_user("a1", "Ravi Kumar"), jira_user("a2", "Ravi Kumaran")])
    create = respx_mock.post(ISSUE).respond(201, json={"id": "1", "key": "OPS-1", "self": f"{ISSUE}/1"})
    result = await jira.request(incident_id, assignee="ravi kumar")
    assert result.status == "queued" and result.assignee == "Ravi Kumar"
    assert json.loads(create.calls.last.request.content)["fields"]["assignee"] == {"accountId": "a1"}


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_jira_400_error_collection_is_surfaced(store: Store, jira: Jira, respx_mock: respx.MockRouter) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    body = {
        "errorMessages": ["Field 'priority' is required"],
        "errors": {"assignee": "User 'acc-x' cannot be assigned issues."},
    }
    create = respx_mock.post(ISSUE).respond(400, json=body)
    result = await jira.request(incident_id, assignee=None)
    assert result.status == "queued" and create.call_count == 1
    error = "Field 'priority' is required; assignee: User 'acc-x' cannot be assigned issues."
    row = await sql_one(store, "SELECT * FROM tickets")
    assert row is not None
    assert (
        row["status"] == "failed" and row["error"] == error and "assignee" not in json.loads(row["payload"])["fields"]
    )
    [confirmation] = await confirmations(store, incident_id)
    assert (
        confirmation == f"❌ Jira did not create the ticket for #{incident_id}: {error}" and TOKEN not in confirmation
    )
    [outbox_row] = await sql(store, "SELECT status FROM outbox WHERE channel = 'jira'")
    assert outbox_row["status"] == "failed"


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_issue_post_5xx_is_retried_after_looking_for_the_label(
    store: Store, jira: Jira, respx_mock: respx.MockRouter
) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    create = respx_mock.post(ISSUE).mock(
        side_effect=[httpx.Response(502, text="<html>Bad Gateway</html>"), httpx.Response(201, json={"key": "OPS-7"})]
    )
    search = respx_mock.get(JQL).respond(200, json={"issues": [], "isLast": True})
    await jira.request(incident_id, assignee=None)
    label = json.loads(create.calls.last.request.content)["fields"]["labels"][-1]
    assert create.call_count == 2 and search.call_count == 1
    assert search.calls.last.request.url.params["jql"] == f'labels = "{label}"'
    row = await sql_one(store, "SELECT status, jira_key FROM tickets")
    assert row == {"status": "created", "jira_key": "OPS-7"}
    assert "unassigned" in (await confirmations(store, incident_id))[0]


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_an_issue_created_by_an_attempt_that_timed_out_is_adopted_not_duplicated(
    store: Store, jira: Jira, respx_mock: respx.MockRouter
) -> None:
    """Jira created the issue but the answer never arrived: the retry finds it by its label."""
    incident_id = await insert_incident(store, sample_diagnosis())
    create = respx_mock.post(ISSUE).mock(side_effect=httpx.ReadTimeout("no answer"))
    respx_mock.get(JQL).respond(200, json={"issues": [{"id": "10009", "key": "OPS-9"}], "isLast": True})
    await jira.request(incident_id, assignee=None)
    assert create.call_count == 1
    assert await sql_one(store, "SELECT status, jira_key FROM tickets") == {"status": "created", "jira_key": "OPS-9"}
    [event] = await sql(store, "SELECT detail FROM timeline WHERE kind = 'ticket' ORDER BY id DESC LIMIT 1")
    assert json.loads(event["detail"])["adopted"] is True
    assert len(await confirmations(store, incident_id)) == 1


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_issue_post_connect_error_is_retried(store: Store, jira: Jira, respx_mock: respx.MockRouter) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    create = respx_mock.post(ISSUE).mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(201, json={"id": "7", "key": "OPS-7", "self": "x"})]
    )
    respx_mock.get(JQL).respond(200, json={"issues": []})
    await jira.request(incident_id, assignee=None)
    assert create.call_count == 2
    assert await sql_one(store, "SELECT status, jira_key FROM tickets") == {"status": "created", "jira_key": "OPS-7"}


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_user_search_retries_5xx_and_429(store: Store, jira: Jira, respx_mock: respx.MockRouter) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    search = respx_mock.get(SEARCH).mock(
        side_effect=[
            httpx.Response(503, json={"errorMessages": ["busy"]}),
            httpx.Response(429, json={"errorMessages": ["Rate limit exceeded."]}),
            httpx.Response(200, json=[jira_user("a1", "Priya Nair")]),
        ]
    )
    respx_mock.post(ISSUE).respond(201, json={"id": "8", "key": "OPS-8", "self": "x"})
    result = await jira.request(incident_id, assignee="priya")
    assert result.status == "queued" and search.call_count == 3 and result.assignee == "Priya Nair"


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_user_search_401_is_reported_without_credentials(
    store: Store, jira: Jira, respx_mock: respx.MockRouter
) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    search = respx_mock.get(SEARCH).respond(401, text="")
    result = await jira.request(incident_id, assignee="Ravi")
    assert result.status == "failed" and search.call_count == 1
    assert "authentication failed" in result.message and TOKEN not in result.message


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_one_ticket_per_incident_unless_forced(store: Store, jira: Jira, respx_mock: respx.MockRouter) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    create = respx_mock.post(ISSUE).mock(
        side_effect=[
            httpx.Response(201, json={"id": "1", "key": "OPS-1", "self": "x"}),
            httpx.Response(201, json={"id": "2", "key": "OPS-2", "self": "x"}),
        ]
    )
    first = await jira.create_ticket(incident_id, assignee=None)
    while_queued = await jira.create_ticket(incident_id, assignee=None)
    assert first.status == "queued" and while_queued.status == "exists" and "being created" in while_queued.message
    await jira.outbox.drain()
    again = await jira.request(incident_id, assignee=None)
    assert again.status == "exists" and again.key == "OPS-1"
    assert "already has Jira OPS-1" in again.message and create.call_count == 1
    forced = await jira.request(incident_id, assignee=None, force_new=True)
    assert forced.status == "queued" and create.call_count == 2
    keys = [row["jira_key"] for row in await sql(store, "SELECT jira_key FROM tickets ORDER BY id")]
    assert keys == ["OPS-1", "OPS-2"]


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
    store: Store, jira: Jira, respx_mock: respx.MockRouter
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
    assert (await jira.request(incident_id, assignee=None)).status == "queued"
    description = json.loads(create.calls.last.request.content)["fields"]["description"]
    assert_valid_adf(description)
    [block] = [node for node in description["content"] if node["type"] == "codeBlock"]
    assert block["content"][0]["text"] == code and block["attrs"] == {"language": "python"}
