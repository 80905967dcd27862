"""Replies on WhatsApp: offline parser and model path (tests/fake_openai.py), Jira via respx, confirmations
through the Notifier; one end-to-end run from a signed Twilio webhook to the fake Twilio API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import openai
import pytest
import respx
from fastapi import FastAPI
from twilio.request_validator import RequestValidator

from oncall.conversation import ConversationHandler
from oncall.db import Database
from oncall.jira import JiraClient
from oncall.notify import Notifier
from oncall.reply_parser import ReplyAction, parse_reply
from oncall.runtime import AgentRuntime
from oncall.settings import Settings
from oncall.twilio_webhook import router
from tests.fake_openai import FakeOpenAI, Scripted, text_response, tool_calls_response
from tests.fake_twilio import FakeTwilio
from tests.test_whatsapp import insert_incident, sample_diagnosis

JIRA = "https://acme.atlassian.net"
SEARCH = f"{JIRA}/rest/api/3/user/assignable/search"
ISSUE = f"{JIRA}/rest/api/3/issue"
ENGINEER = "whatsapp:+491511234567"
JIRA_ENV = dict(JIRA_BASE_URL=JIRA, JIRA_EMAIL="bot@acme.example", JIRA_API_TOKEN="jira-token", JIRA_PROJECT_KEY="OPS")
RAVI = {"accountId": "acc-ravi", "displayName": "Ravi Kumar", "active": True}


def build_runtime(
    tmp_path: Path, http: httpx.AsyncClient, llm: openai.AsyncOpenAI | None = None, **env: object
) -> AgentRuntime:
    """Console WhatsApp channel, Jira per ``env``, the offline parser unless ``llm`` is given."""
    settings = Settings(
        _env_file=None, DATABASE_PATH=tmp_path / "oncall.db", PUBLIC_BASE_URL="https://oncall.example.com", **env
    )
    runtime = AgentRuntime(settings=settings, db=Database(settings.database_path), http=http)
    runtime.notifier = Notifier(runtime, backoff_s=0.01)
    runtime.jira = JiraClient(runtime, backoff_s=0.01)
    runtime.conversation = ConversationHandler(runtime, llm_client=llm)
    return runtime


@pytest.fixture
async def runtime(tmp_path: Path):
    async with httpx.AsyncClient() as http:
        rt = build_runtime(tmp_path, http, **JIRA_ENV)
        yield rt
        rt.db.close()


def replies_to(runtime: AgentRuntime, number: str = ENGINEER) -> list[str]:
    """Bodies of outbound messages to ``number``, oldest first."""
    return [
        r["body"]
        for r in runtime.db.query(
            "SELECT body FROM messages WHERE direction = 'out' AND to_number = ? ORDER BY id", (number,)
        )
    ]


def store_inbound(runtime: AgentRuntime, body: str, sid: str) -> None:
    """The row the webhook writes before handing the message over."""
    runtime.db.execute(
        "INSERT INTO messages (direction, channel, from_number, body, message_sid, status, created_at, updated_at) VALUES ('in','twilio',?,?,?,'received',0,0)",
        (ENGINEER, body, sid),
    )


@pytest.mark.parametrize(
    ("text", "action", "ref", "assignee", "force_new"),
    [
        ("create a jira task and assign it to Ravi", ReplyAction.create_ticket, None, "Ravi", False),
        ("#12 open a ticket for priya", ReplyAction.create_ticket, 12, "priya", False),
        ("ticket assign to Ravi Kumar", ReplyAction.create_ticket, None, "Ravi Kumar", False),
        ("#12 create a Jira task and assign it to Ravi, thanks", ReplyAction.create_ticket, 12, "Ravi", False),
        ("#7 new ticket for Ravi please", ReplyAction.create_ticket, 7, "Ravi", True),
        ("open a ticket for the error", ReplyAction.create_ticket, None, None, False),
        ("ack", ReplyAction.acknowledge, None, None, False),
        ("Acknowledge #3", ReplyAction.acknowledge, 3, None, False),
        ("on it", ReplyAction.acknowledge, None, None, False),
        ("resolve #12", ReplyAction.resolve, 12, None, False),
        ("mark resolved", ReplyAction.resolve, None, None, False),
        ("status", ReplyAction.status, None, None, False),
        ("incident 4 details", ReplyAction.status, 4, None, False),
        ("help", ReplyAction.help, None, None, False),
    ],
)
def test_parser(text: str, action: ReplyAction, ref: int | None, assignee: str | None, force_new: bool) -> None:
    parsed = parse_reply(text)
    assert (parsed.action, parsed.incident_ref, parsed.assignee, parsed.force_new, parsed.understood) == (
        action,
        ref,
        assignee,
        force_new,
        True,
    )


def test_parser_unknown_text_is_help() -> None:
    parsed = parse_reply("what a day")
    assert parsed.action is ReplyAction.help and not parsed.understood


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_offline_reply_creates_jira_ticket_and_confirms(
    runtime: AgentRuntime, respx_mock: respx.MockRouter
) -> None:
    incident_id = insert_incident(runtime.db, sample_diagnosis())
    search = respx_mock.get(SEARCH).respond(200, json=[RAVI])
    create = respx_mock.post(ISSUE).respond(201, json={"id": "10042", "key": "OPS-42", "self": f"{ISSUE}/10042"})
    store_inbound(runtime, "create a Jira task and assign it to Ravi", "SM1")

    await runtime.conversation.handle_inbound(ENGINEER, "create a Jira task and assign it to Ravi", "SM1")

    assert search.calls.last.request.url.params["query"] == "Ravi"
    assert json.loads(create.calls.last.request.content)["fields"]["assignee"] == {"accountId": "acc-ravi"}
    ticket = runtime.db.query_one("SELECT * FROM tickets")
    assert ticket["incident_id"] == incident_id and ticket["status"] == "created" and ticket["jira_key"] == "OPS-42"
    [confirmation] = replies_to(runtime)
    assert "OPS-42" in confirmation and "Ravi Kumar" in confirmation and f"{JIRA}/browse/OPS-42" in confirmation
    assert (
        runtime.db.query_one("SELECT incident_id FROM messages WHERE message_sid = 'SM1'")["incident_id"] == incident_id
    )
    reply_event = runtime.db.query_one(
        "SELECT detail FROM timeline WHERE incident_id = ? AND kind = 'reply'", (incident_id,)
    )
    assert json.loads(reply_event["detail"])["action"] == "create_ticket"


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_ambiguous_assignee_is_reported(runtime: AgentRuntime, respx_mock: respx.MockRouter) -> None:
    insert_incident(runtime.db, sample_diagnosis())
    respx_mock.get(SEARCH).respond(200, json=[RAVI, {**RAVI, "accountId": "acc-2", "displayName": "Ravi Shankar"}])
    await runtime.conversation.handle_inbound(ENGINEER, "ticket for Ravi", "SM2")
    [confirmation] = replies_to(runtime)
    assert "Ravi Kumar, Ravi Shankar" in confirmation and runtime.db.query("SELECT * FROM tickets") == []


async def test_jira_not_configured_keeps_draft(tmp_path: Path) -> None:
    async with httpx.AsyncClient() as http:
        runtime = build_runtime(tmp_path, http)
        incident_id = insert_incident(runtime.db, sample_diagnosis())
        await runtime.conversation.handle_inbound(
            ENGINEER, f"#{incident_id} create a jira task and assign it to Ravi", "SM3"
        )
        [confirmation] = replies_to(runtime)
        assert "Jira is not configured" in confirmation
        assert runtime.db.query_one("SELECT status FROM tickets")["status"] == "draft"


async def test_acknowledge_and_resolve(runtime: AgentRuntime) -> None:
    incident_id = insert_incident(runtime.db, sample_diagnosis())
    await runtime.conversation.handle_inbound(ENGINEER, "on it", "SM4")
    incident = runtime.db.query_one("SELECT * FROM incidents WHERE id = ?", (incident_id,))
    assert incident["acknowledged_by"] == ENGINEER and incident["acknowledged_at"] is not None
    await runtime.conversation.handle_inbound(ENGINEER, "ack", "SM5")
    assert (
        runtime.db.query_one("SELECT acknowledged_at FROM incidents")["acknowledged_at"] == incident["acknowledged_at"]
    )
    await runtime.conversation.handle_inbound(ENGINEER, f"resolve #{incident_id}", "SM6")
    incident = runtime.db.query_one("SELECT * FROM incidents WHERE id = ?", (incident_id,))
    assert incident["status"] == "resolved" and incident["resolved_at"] is not None
    ack, again, resolved = replies_to(runtime)
    assert "acknowledged by" in ack and "already acknowledged" in again and "marked resolved" in resolved
    kinds = [
        r["kind"]
        for r in runtime.db.query("SELECT kind FROM timeline WHERE incident_id = ? ORDER BY id", (incident_id,))
    ]
    assert kinds.count("acknowledged") == 1 and "resolved" in kinds and kinds.count("reply") == 3


async def test_status_and_unknown_and_missing_incident(runtime: AgentRuntime) -> None:
    incident_id = insert_incident(runtime.db, sample_diagnosis())
    await runtime.conversation.handle_inbound(ENGINEER, "status", "SM7")
    await runtime.conversation.handle_inbound(ENGINEER, "what a day", "SM8")
    await runtime.conversation.handle_inbound(ENGINEER, "#999 ack", "SM9")
    status, unknown, missing = replies_to(runtime)
    assert (
        f"#{incident_id} InventoryHighErrorRate" in status
        and "code_bug" in status
        and "inventory_service.py:212" in status
    )
    assert "did not understand" in unknown and "create a Jira task" in unknown
    assert "Incident #999 not found" in missing


async def test_reply_without_any_incident(runtime: AgentRuntime) -> None:
    await runtime.conversation.handle_inbound(ENGINEER, "ack", "SM14")
    [answer] = replies_to(runtime)
    assert answer.startswith("There are no incidents yet.") and "What you can reply" in answer


async def test_reply_goes_to_the_senders_latest_open_incident(runtime: AgentRuntime) -> None:
    mine = insert_incident(runtime.db, sample_diagnosis())
    other = insert_incident(runtime.db, sample_diagnosis())  # newer, but paged to someone else
    await runtime.notifier.send("diagnosis of mine", incident_id=mine, to=[ENGINEER])
    await runtime.notifier.send("diagnosis of other", incident_id=other, to=["whatsapp:+15550001111"])
    await runtime.conversation.handle_inbound(ENGINEER, "ack", "SM10")
    assert (
        runtime.db.query_one("SELECT acknowledged_by FROM incidents WHERE id = ?", (mine,))["acknowledged_by"]
        == ENGINEER
    )
    assert (
        runtime.db.query_one("SELECT acknowledged_by FROM incidents WHERE id = ?", (other,))["acknowledged_by"] is None
    )


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_model_path_creates_ticket_via_tool(tmp_path: Path, respx_mock: respx.MockRouter) -> None:
    # respx patches httpx only; the openai SDK (httpx2) reaches the fake OpenAI server over real loopback HTTP
    respx_mock.get(SEARCH).respond(200, json=[RAVI])
    create = respx_mock.post(ISSUE).respond(201, json={"id": "10042", "key": "OPS-42", "self": f"{ISSUE}/10042"})
    script = [
        tool_calls_response([("get_incident_status", {}), ("create_jira_ticket", {"assignee": "Ravi"})]),
        text_response("Created OPS-42 and assigned it to Ravi Kumar."),
    ]
    with FakeOpenAI(script) as fake:
        llm = openai.AsyncOpenAI(api_key="test-key", base_url=fake.base_url, max_retries=0)
        async with httpx.AsyncClient() as http:
            runtime = build_runtime(tmp_path, http, llm=llm, OPENAI_BASE_URL=fake.base_url, **JIRA_ENV)
            incident_id = insert_incident(runtime.db, sample_diagnosis())
            await runtime.conversation.handle_inbound(ENGINEER, "please get a jira task going for ravi", "SM11")
            confirmation = replies_to(runtime)
            audit = runtime.db.query(
                "SELECT tool, ok, round FROM tool_calls WHERE incident_id = ? ORDER BY id", (incident_id,)
            )
            reply_event = json.loads(runtime.db.query_one("SELECT detail FROM timeline WHERE kind = 'reply'")["detail"])
        await llm.close()
    assert create.call_count == 1
    assert confirmation == [
        f"✅ Jira OPS-42 created for #{incident_id} and assigned to Ravi Kumar: {JIRA}/browse/OPS-42"
    ]
    assert {row["tool"] for row in audit} == {"get_incident_status", "create_jira_ticket"} and all(
        row["ok"] for row in audit
    )
    assert reply_event["engine"].startswith("openai:")
    assert sorted(reply_event["tools"]) == ["create_jira_ticket", "get_incident_status"]
    first = fake.requests[0]
    assert sorted(t["function"]["name"] for t in first["tools"]) == [
        "acknowledge_incident",
        "create_jira_ticket",
        "get_incident_status",
        "resolve_incident",
    ]
    assert first["messages"][-1] == {"role": "user", "content": "please get a jira task going for ravi"}
    assert f'"incident_id":{incident_id}' in first["messages"][0]["content"]
    assert len(fake.requests) == 2  # the tool results went back, then the model answered


async def test_model_text_answer_is_sent(tmp_path: Path) -> None:
    with FakeOpenAI([text_response("Incident #1 is a code bug on inventory-2; nothing else to do yet.")]) as fake:
        llm = openai.AsyncOpenAI(api_key="test-key", base_url=fake.base_url, max_retries=0)
        async with httpx.AsyncClient() as http:
            runtime = build_runtime(tmp_path, http, llm=llm, OPENAI_BASE_URL=fake.base_url)
            insert_incident(runtime.db, sample_diagnosis())
            await runtime.conversation.handle_inbound(ENGINEER, "what's going on?", "SM12")
            assert replies_to(runtime) == ["Incident #1 is a code bug on inventory-2; nothing else to do yet."]
        await llm.close()


async def test_model_failure_falls_back_to_offline_parser(tmp_path: Path) -> None:
    error = {"error": {"message": "The server had an error", "type": "server_error", "param": None, "code": None}}
    with FakeOpenAI([Scripted(error, status=500)]) as fake:
        llm = openai.AsyncOpenAI(api_key="test-key", base_url=fake.base_url, max_retries=0)
        async with httpx.AsyncClient() as http:
            runtime = build_runtime(tmp_path, http, llm=llm, OPENAI_BASE_URL=fake.base_url)
            incident_id = insert_incident(runtime.db, sample_diagnosis())
            await runtime.conversation.handle_inbound(ENGINEER, "ack", "SM13")
            assert (
                runtime.db.query_one("SELECT acknowledged_by FROM incidents WHERE id = ?", (incident_id,))[
                    "acknowledged_by"
                ]
                == ENGINEER
            )
            detail = json.loads(runtime.db.query_one("SELECT detail FROM timeline WHERE kind = 'reply'")["detail"])
            assert detail["engine"] == "offline (model failed)" and detail["action"] == "acknowledge"
        await llm.close()
    assert len(fake.requests) == 1


@respx.mock(assert_all_mocked=True, assert_all_called=False)
async def test_signed_webhook_to_ticket_to_twilio_confirmation(tmp_path: Path, respx_mock: respx.MockRouter) -> None:
    """End to end: signed Twilio webhook -> background reply -> Jira (respx) -> confirmation through the twilio SDK."""
    respx_mock.get(SEARCH).respond(200, json=[RAVI])
    respx_mock.post(ISSUE).respond(201, json={"id": "10042", "key": "OPS-42", "self": f"{ISSUE}/10042"})
    sid, token = "AC" + "f" * 32, "twilio-token"
    twilio = FakeTwilio(account_sid=sid, auth_token=token).start()
    try:
        async with httpx.AsyncClient() as http:
            runtime = build_runtime(
                tmp_path,
                http,
                TWILIO_ACCOUNT_SID=sid,
                TWILIO_AUTH_TOKEN=token,
                TWILIO_WHATSAPP_FROM="+14155238886",
                TWILIO_API_BASE_URL=twilio.base_url,
                ONCALL_WHATSAPP_NUMBERS=ENGINEER,
                **JIRA_ENV,
            )
            incident_id = insert_incident(runtime.db, sample_diagnosis())
            app = FastAPI()
            app.state.runtime = runtime
            app.include_router(router)
            form = {
                "From": ENGINEER,
                "To": "whatsapp:+14155238886",
                "Body": f"#{incident_id} create a Jira task and assign it to Ravi",
                "MessageSid": "SM" + "a" * 32,
            }
            signature = RequestValidator(token).compute_signature("https://oncall.example.com/webhook/twilio", form)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8088"
            ) as client:
                response = await client.post("/webhook/twilio", data=form, headers={"X-Twilio-Signature": signature})
            assert response.status_code == 200
            await asyncio.wait_for(runtime.drain(), 10)
            row = runtime.db.query_one("SELECT * FROM messages WHERE direction = 'out'")
    finally:
        twilio.stop()
    assert [m["to"] for m in twilio.messages] == [ENGINEER]
    assert "OPS-42" in twilio.messages[0]["body"]
    assert row["status"] == "sent" and row["channel"] == "twilio" and row["message_sid"] == twilio.messages[0]["sid"]
