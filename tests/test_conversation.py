"""Replies on WhatsApp: offline parser and model path (tests/fake_openai.py), Jira via respx, confirmations
through the WhatsAppSender; one end-to-end run from a signed Twilio webhook to the fake Twilio API."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import respx
from twilio.request_validator import RequestValidator

from on_call_agent import create_app
from oncall.api.deps import Services
from oncall.channels.jira.client import JiraClient
from oncall.channels.jira.delivery import JiraIssueDelivery
from oncall.channels.jira.models import JiraConfig
from oncall.channels.outbox import OutboxWorker
from oncall.channels.whatsapp.sender import WhatsAppSender
from oncall.conversation.handler import ConversationHandler
from oncall.conversation.model import ReplyModel
from oncall.settings import Settings
from oncall.store import messages
from oncall.store.database import Store
from oncall.tasks import BackgroundTasks
from tests.fake_openai import FakeOpenAI, Scripted, text_response, tool_calls_response
from tests.fake_twilio import FakeTwilio
from tests.support import settle, sql, sql_one
from tests.test_whatsapp import insert_incident, sample_diagnosis

JIRA = "https://acme.atlassian.net"
SEARCH = f"{JIRA}/rest/api/3/user/assignable/search"
ISSUE = f"{JIRA}/rest/api/3/issue"
ENGINEER = "whatsapp:+491511234567"
PUBLIC_BASE = "https://oncall.example.com"
JIRA_ENV: dict[str, Any] = dict(
    JIRA_BASE_URL=JIRA, JIRA_EMAIL="bot@acme.example", JIRA_API_TOKEN="jira-token", JIRA_PROJECT_KEY="OPS"
)
RAVI = {"accountId": "acc-ravi", "displayName": "Ravi Kumar", "active": True}


@dataclass
class Agent:
    """The services a reply goes through, on one store."""

    store: Store
    sender: WhatsAppSender
    jira: JiraClient
    conversation: ConversationHandler
    outbox: OutboxWorker

    async def deliver(self) -> None:
        """Deliver what the outbox holds (Jira issue creations, then their confirmations)."""
        await self.outbox.drain(retries=True)


def build_agent(
    store: Store, http: httpx.AsyncClient, *, jira: bool = True, llm: openai.AsyncOpenAI | None = None
) -> Agent:
    """Console WhatsApp channel, Jira when ``jira`` (else drafts), the offline parser unless ``llm`` is given.

    The model settings (name, temperature, rounds, output cap) are the agent's defaults.
    """
    settings = Settings(_env_file=None, PUBLIC_BASE_URL=PUBLIC_BASE, **(JIRA_ENV if jira else {}))
    sender = WhatsAppSender(store, twilio=None, from_number=None, recipients=[], public_base_url=PUBLIC_BASE)
    config = JiraConfig.from_settings(settings)
    jira_client = JiraClient(store, http, config, PUBLIC_BASE, backoff_s=0.01)
    deliverers = {"whatsapp": sender, "jira": JiraIssueDelivery(http, config, sender)}
    outbox = OutboxWorker(store, deliverers, BackgroundTasks(), replica_id="test", backoff_s=0.01, poll_s=0.05)
    model = None
    if llm is not None:
        model = ReplyModel(
            llm,
            store,
            model=settings.openai_model,
            temperature=settings.llm_temperature,
            max_rounds=settings.reply_max_rounds,
            max_output_chars=settings.tool_output_max_chars,
        )
    conversation = ConversationHandler(store, sender, jira_client, PUBLIC_BASE, model)
    return Agent(store, sender, jira_client, conversation, outbox)


@pytest.fixture
async def agent(store: Store) -> AsyncIterator[Agent]:
    async with httpx.AsyncClient() as http:
        yield build_agent(store, http)


async def replies_to(store: Store, number: str = ENGINEER) -> list[str]:
    """Bodies of outbound messages to ``number``, oldest first."""
    rows = await sql(
        store, "SELECT body FROM messages WHERE direction = 'out' AND to_number = :to ORDER BY id", to=number
    )
    return [row["body"] for row in rows]


async def store_inbound(store: Store, body: str, sid: str) -> None:
    """The row the webhook writes before handing the message over."""
    async with store.write() as conn:
        stored = await messages.add_inbound(
            conn, from_number=ENGINEER, to_number=None, body=body, message_sid=sid, now=time.time()
        )
    assert stored


async def incident_row(store: Store, incident_id: int) -> dict:
    """The incident's row as stored."""
    row = await sql_one(store, "SELECT * FROM incidents WHERE id = :id", id=incident_id)
    assert row is not None
    return row


async def reply_detail(store: Store) -> dict:
    """The decoded detail of the one ``reply`` timeline event."""
    [event] = await sql(store, "SELECT detail FROM timeline WHERE kind = 'reply'")
    return json.loads(event["detail"])


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_offline_reply_creates_jira_ticket_and_confirms(agent: Agent, respx_mock: respx.MockRouter) -> None:
    store = agent.store
    incident_id = await insert_incident(store, sample_diagnosis())
    search = respx_mock.get(SEARCH).respond(200, json=[RAVI])
    create = respx_mock.post(ISSUE).respond(201, json={"id": "10042", "key": "OPS-42", "self": f"{ISSUE}/10042"})
    await store_inbound(store, "create a Jira task and assign it to Ravi", "SM1")

    await agent.conversation.handle_inbound(ENGINEER, "create a Jira task and assign it to Ravi", "SM1")
    await agent.deliver()

    assert search.calls.last.request.url.params["query"] == "Ravi"
    assert json.loads(create.calls.last.request.content)["fields"]["assignee"] == {"accountId": "acc-ravi"}
    ticket = await sql_one(store, "SELECT * FROM tickets")
    assert ticket is not None
    assert ticket["incident_id"] == incident_id and ticket["status"] == "created" and ticket["jira_key"] == "OPS-42"
    queued, confirmation = await replies_to(store)
    assert queued.startswith(f"⏳ Creating the Jira issue for #{incident_id} assigned to Ravi Kumar")
    assert "OPS-42" in confirmation and "Ravi Kumar" in confirmation and f"{JIRA}/browse/OPS-42" in confirmation
    inbound = await sql_one(store, "SELECT incident_id FROM messages WHERE message_sid = 'SM1'")
    assert inbound is not None and inbound["incident_id"] == incident_id
    reply_event = await sql_one(
        store, "SELECT detail FROM timeline WHERE incident_id = :id AND kind = 'reply'", id=incident_id
    )
    assert reply_event is not None
    assert json.loads(reply_event["detail"])["intent"] == json.loads(reply_event["detail"])["done"] == "create_ticket"


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_ambiguous_assignee_is_reported(agent: Agent, respx_mock: respx.MockRouter) -> None:
    await insert_incident(agent.store, sample_diagnosis())
    respx_mock.get(SEARCH).respond(200, json=[RAVI, {**RAVI, "accountId": "acc-2", "displayName": "Ravi Shankar"}])
    await agent.conversation.handle_inbound(ENGINEER, "ticket for Ravi", "SM2")
    [confirmation] = await replies_to(agent.store)
    assert "Ravi Kumar, Ravi Shankar" in confirmation and await sql(agent.store, "SELECT * FROM tickets") == []


async def test_jira_not_configured_keeps_draft(store: Store) -> None:
    async with httpx.AsyncClient() as http:
        agent = build_agent(store, http, jira=False)
        incident_id = await insert_incident(store, sample_diagnosis())
        await agent.conversation.handle_inbound(
            ENGINEER, f"#{incident_id} create a jira task and assign it to Ravi", "SM3"
        )
        [confirmation] = await replies_to(store)
        assert "Jira is not configured" in confirmation
        assert await sql(store, "SELECT status FROM tickets") == [{"status": "draft"}]


async def test_acknowledge_and_resolve(agent: Agent) -> None:
    store = agent.store
    incident_id = await insert_incident(store, sample_diagnosis())
    await agent.conversation.handle_inbound(ENGINEER, "on it", "SM4")
    incident = await incident_row(store, incident_id)
    assert incident["acknowledged_by"] == ENGINEER and incident["acknowledged_at"] is not None
    await agent.conversation.handle_inbound(ENGINEER, "ack", "SM5")
    assert (await incident_row(store, incident_id))["acknowledged_at"] == incident["acknowledged_at"]
    await agent.conversation.handle_inbound(ENGINEER, f"resolve #{incident_id}", "SM6")
    incident = await incident_row(store, incident_id)
    assert incident["status"] == "resolved" and incident["resolved_at"] is not None
    ack, again, resolved = await replies_to(store)
    assert "acknowledged by" in ack and "already acknowledged" in again and "marked resolved" in resolved
    kinds = [
        r["kind"]
        for r in await sql(store, "SELECT kind FROM timeline WHERE incident_id = :id ORDER BY id", id=incident_id)
    ]
    assert kinds.count("acknowledged") == 1 and "resolved" in kinds and kinds.count("reply") == 3


async def test_status_and_unknown_and_missing_incident(agent: Agent) -> None:
    incident_id = await insert_incident(agent.store, sample_diagnosis())
    await agent.conversation.handle_inbound(ENGINEER, "status", "SM7")
    await agent.conversation.handle_inbound(ENGINEER, "what a day", "SM8")
    await agent.conversation.handle_inbound(ENGINEER, "#999 ack", "SM9")
    status, unknown, missing = await replies_to(agent.store)
    assert (
        f"#{incident_id} InventoryHighErrorRate" in status
        and "code_bug" in status
        and "inventory_service.py:212" in status
    )
    assert "did not understand" in unknown and "create a Jira task" in unknown
    assert "Incident #999 not found" in missing


async def test_reply_without_any_incident(agent: Agent) -> None:
    await agent.conversation.handle_inbound(ENGINEER, "ack", "SM14")
    [answer] = await replies_to(agent.store)
    assert answer.startswith("There are no incidents yet.") and "What you can reply" in answer


async def test_reply_goes_to_the_senders_latest_open_incident(agent: Agent) -> None:
    store = agent.store
    mine = await insert_incident(store, sample_diagnosis())
    other = await insert_incident(store, sample_diagnosis())  # newer, but paged to someone else
    await agent.sender.send("diagnosis of mine", incident_id=mine, to=[ENGINEER])
    await agent.sender.send("diagnosis of other", incident_id=other, to=["whatsapp:+15550001111"])
    await agent.conversation.handle_inbound(ENGINEER, "ack", "SM10")
    assert (await incident_row(store, mine))["acknowledged_by"] == ENGINEER
    assert (await incident_row(store, other))["acknowledged_by"] is None


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_model_proposes_and_the_engineers_yes_creates_the_ticket(
    store: Store, respx_mock: respx.MockRouter
) -> None:
    # respx patches httpx only; the openai SDK (httpx2) reaches the fake OpenAI server over real loopback HTTP
    respx_mock.get(SEARCH).respond(200, json=[RAVI])
    create = respx_mock.post(ISSUE).respond(201, json={"id": "10042", "key": "OPS-42", "self": f"{ISSUE}/10042"})
    script = [
        tool_calls_response([("get_incident_status", {})]),
        tool_calls_response([("propose_action", {"action": "create_ticket", "assignee": "Ravi"})]),
    ]
    with FakeOpenAI(script) as fake:
        llm = openai.AsyncOpenAI(api_key="test-key", base_url=fake.base_url, max_retries=0)
        async with httpx.AsyncClient() as http:
            agent = build_agent(store, http, llm=llm)
            incident_id = await insert_incident(store, sample_diagnosis())
            await agent.conversation.handle_inbound(ENGINEER, "get Ravi to look into this properly", "SM11")
            assert create.call_count == 0 and await sql(store, "SELECT * FROM tickets") == []
            [question] = await replies_to(store)
            await agent.conversation.handle_inbound(ENGINEER, "YES", "SM11b")
            await agent.deliver()
            answers = await replies_to(store)
            audit = await sql(
                store, "SELECT tool, ok FROM tool_calls WHERE incident_id = :id ORDER BY id", id=incident_id
            )
            events = [
                json.loads(r["detail"]) for r in await sql(store, "SELECT detail FROM timeline WHERE kind = 'reply'")
            ]
        await llm.close()
    assert question.startswith(f"Create a Jira task for #{incident_id} InventoryHighErrorRate assigned to Ravi?")
    assert "Reply YES" in question
    assert create.call_count == 1 and answers[1:] == [  # the action's own line, then the outbox confirms
        f"⏳ Creating the Jira issue for #{incident_id} assigned to Ravi Kumar; I will confirm here once Jira has it.",
        f"✅ Jira OPS-42 created for #{incident_id} and assigned to Ravi Kumar: {JIRA}/browse/OPS-42",
    ]
    assert [row["tool"] for row in audit] == ["get_incident_status", "propose_action"]
    assert events[0]["engine"].startswith("openai:") and events[0]["proposed"] == "create_ticket"
    assert (events[1]["decision"], events[1]["action"]) == ("confirmed", "create_ticket")
    first = fake.requests[0]
    assert sorted(t["function"]["name"] for t in first["tools"]) == ["get_incident_status", "propose_action"]
    assert first["messages"][-1] == {"role": "user", "content": "get Ravi to look into this properly"}
    assert "<<<UNTRUSTED DATA" in first["messages"][0]["content"]
    assert f'"incident_id":{incident_id}' in first["messages"][0]["content"]


async def test_model_text_answer_is_sent(store: Store) -> None:
    with FakeOpenAI([text_response("Incident #1 is a code bug on inventory-2; nothing else to do yet.")]) as fake:
        llm = openai.AsyncOpenAI(api_key="test-key", base_url=fake.base_url, max_retries=0)
        async with httpx.AsyncClient() as http:
            agent = build_agent(store, http, jira=False, llm=llm)
            await insert_incident(store, sample_diagnosis())
            await agent.conversation.handle_inbound(ENGINEER, "why only inventory-2 though", "SM12")
            assert await replies_to(store) == ["Incident #1 is a code bug on inventory-2; nothing else to do yet."]
        await llm.close()


async def test_commands_never_reach_the_model_and_a_failing_model_gets_a_question_back(store: Store) -> None:
    error = {"error": {"message": "The server had an error", "type": "server_error", "param": None, "code": None}}
    with FakeOpenAI([Scripted(error, status=500)]) as fake:
        llm = openai.AsyncOpenAI(api_key="test-key", base_url=fake.base_url, max_retries=0)
        async with httpx.AsyncClient() as http:
            agent = build_agent(store, http, jira=False, llm=llm)
            incident_id = await insert_incident(store, sample_diagnosis())
            await agent.conversation.handle_inbound(ENGINEER, "ack", "SM13")
            assert (await incident_row(store, incident_id))["acknowledged_by"] == ENGINEER
            assert fake.requests == []
            await agent.conversation.handle_inbound(ENGINEER, "hmm, odd one", "SM13b")
            answer = (await replies_to(store))[-1]
            events = [
                json.loads(r["detail"]) for r in await sql(store, "SELECT detail FROM timeline WHERE kind = 'reply'")
            ]
        await llm.close()
    assert len(fake.requests) == 1
    assert "did not understand" in answer and "What you can reply" in answer
    assert events[0]["done"] == "acknowledge" and events[1]["engine"] == "parser (model failed)"


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_signed_webhook_to_ticket_to_twilio_confirmation(tmp_path: Path, respx_mock: respx.MockRouter) -> None:
    """End to end through the real app: signed Twilio webhook -> background reply -> Jira (respx) -> confirmation
    through the twilio SDK to the fake Twilio API."""
    respx_mock.get(SEARCH).respond(200, json=[RAVI])
    respx_mock.post(ISSUE).respond(201, json={"id": "10042", "key": "OPS-42", "self": f"{ISSUE}/10042"})
    sid, token = "AC" + "f" * 32, "twilio-token"
    twilio = FakeTwilio(account_sid=sid, auth_token=token).start()
    try:
        settings = Settings(
            _env_file=None,
            DATABASE_PATH=tmp_path / "oncall.db",
            PUBLIC_BASE_URL=PUBLIC_BASE,
            TWILIO_ACCOUNT_SID=sid,
            TWILIO_AUTH_TOKEN=token,
            TWILIO_WHATSAPP_FROM="+14155238886",
            TWILIO_API_BASE_URL=twilio.base_url,
            ONCALL_WHATSAPP_NUMBERS=ENGINEER,
            **JIRA_ENV,
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            services: Services = app.state.services
            incident_id = await insert_incident(services.store, sample_diagnosis())
            form = {
                "From": ENGINEER,
                "To": "whatsapp:+14155238886",
                "Body": f"#{incident_id} create a Jira task and assign it to Ravi",
                "MessageSid": "SM" + "a" * 32,
            }
            signature = RequestValidator(token).compute_signature(f"{PUBLIC_BASE}/webhook/twilio", form)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8088"
            ) as client:
                response = await client.post("/webhook/twilio", data=form, headers={"X-Twilio-Signature": signature})
            assert response.status_code == 200
            await settle(services, 10)
            rows = await sql(services.store, "SELECT * FROM messages WHERE direction = 'out' ORDER BY id")
    finally:
        twilio.stop()
    assert [m["to"] for m in twilio.messages] == [ENGINEER, ENGINEER]
    assert "⏳" in twilio.messages[0]["body"] and "OPS-42" in twilio.messages[1]["body"]
    assert [(row["status"], row["channel"]) for row in rows] == [("sent", "twilio"), ("sent", "twilio")]
    assert [row["message_sid"] for row in rows] == [m["sid"] for m in twilio.messages]
