"""POST /webhook/twilio: signature verification with the published vectors, sender allow-list, dedupe, TwiML.

The real app (``on_call_agent.create_app``, lifespan included) runs in-process through httpx's ASGI
transport; only the conversation handler is replaced by a recorder.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from twilio.request_validator import RequestValidator

from on_call_agent import build_services, create_app
from oncall.api.deps import Services
from oncall.channels.whatsapp.inbound import EMPTY_TWIML
from oncall.settings import Settings
from oncall.store.database import Store
from oncall.tasks import BackgroundTasks
from tests.support import REPO_ROOT, load_json_fixture, sql, sql_one

VECTOR = load_json_fixture("twilio/whatsapp_inbound_signed_vector.json")
PUBLIC_BASE = "https://oncall.example.com"
WEBHOOK_URL = f"{PUBLIC_BASE}/webhook/twilio"


class RecordingConversation:
    """Stands in for ConversationHandler: records what the webhook hands over in the background."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.done = asyncio.Event()

    async def handle_inbound(self, from_number: str, body: str, message_sid: str) -> None:
        self.calls.append((from_number, body, message_sid))
        self.done.set()


def make_settings(tmp_path: Path, **extra: str) -> Settings:
    """Twilio configured with the vector's token and the vector's sender as on-call number."""
    values: dict = dict(
        _env_file=None,
        DATABASE_PATH=tmp_path / "oncall.db",
        PUBLIC_BASE_URL=PUBLIC_BASE,
        TWILIO_ACCOUNT_SID=VECTOR["params"]["AccountSid"],
        TWILIO_AUTH_TOKEN=VECTOR["auth_token"],
        TWILIO_WHATSAPP_FROM=VECTOR["params"]["To"],
        ONCALL_WHATSAPP_NUMBERS=VECTOR["params"]["From"],
    )
    values.update(extra)
    return Settings(**values)


def with_conversation(conversation: RecordingConversation):
    """A services factory: the agent's own services, with ``conversation`` as the reply handler."""

    def build(settings: Settings, store: Store, http: httpx.AsyncClient, tasks: BackgroundTasks) -> Services:
        return dataclasses.replace(build_services(settings, store, http, tasks), conversation=conversation)  # type: ignore[arg-type]

    return build


@pytest.fixture
async def app_client(tmp_path: Path) -> AsyncIterator[tuple[Services, RecordingConversation, httpx.AsyncClient]]:
    """(services of the running app, conversation double, httpx client talking to the app)."""
    conversation = RecordingConversation()
    app = create_app(make_settings(tmp_path), build=with_conversation(conversation))
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8088"
        ) as client:
            yield services, conversation, client
        await services.tasks.drain()


def sign(params: dict[str, str], url: str = WEBHOOK_URL, token: str = VECTOR["auth_token"]) -> str:
    """X-Twilio-Signature as Twilio computes it (SDK RequestValidator)."""
    return RequestValidator(token).compute_signature(url, params)


def test_published_vectors_match_the_sdk_signing() -> None:
    """The signing the tests use reproduces Twilio's published vectors and the signed WhatsApp vector."""
    vectors = load_json_fixture("twilio/request_validator_vectors.json")
    validator = RequestValidator(vectors["auth_token"])
    for vector in vectors["vectors"]:
        assert validator.validate(vector["url"], vector["params"], vector["expected_signature"])
    assert sign(VECTOR["params"], VECTOR["url"]) == VECTOR["expected_signature"]


async def test_signed_inbound_is_accepted_and_handled_in_background(app_client) -> None:
    services, conversation, client = app_client
    params = VECTOR["params"]
    response = await client.post("/webhook/twilio", data=params, headers={"X-Twilio-Signature": sign(params)})
    assert response.status_code == 200
    assert response.text == EMPTY_TWIML and response.headers["content-type"].startswith("application/xml")
    await asyncio.wait_for(conversation.done.wait(), 5)
    assert conversation.calls == [(params["From"], params["Body"], params["MessageSid"])]
    row = await sql_one(services.store, "SELECT * FROM messages WHERE message_sid = :sid", sid=params["MessageSid"])
    assert row is not None
    assert row["direction"] == "in" and row["from_number"] == params["From"] and row["body"] == params["Body"]


async def test_vector_signature_for_its_own_url_is_rejected_on_another_path(app_client) -> None:
    """The published signature is bound to /twilio/whatsapp; replayed to /webhook/twilio it must fail."""
    _, conversation, client = app_client
    response = await client.post(
        "/webhook/twilio", data=VECTOR["params"], headers={"X-Twilio-Signature": VECTOR["expected_signature"]}
    )
    assert response.status_code == 403 and conversation.calls == []


async def test_query_string_is_part_of_the_signed_url(app_client) -> None:
    _, conversation, client = app_client
    params = {**VECTOR["params"], "MessageSid": "SM" + "3" * 32}
    response = await client.post(
        "/webhook/twilio?foo=1&bar=2",
        data=params,
        headers={"X-Twilio-Signature": sign(params, WEBHOOK_URL + "?foo=1&bar=2")},
    )
    assert response.status_code == 200
    await asyncio.wait_for(conversation.done.wait(), 5)


async def test_missing_signature_is_403(app_client) -> None:
    services, conversation, client = app_client
    response = await client.post("/webhook/twilio", data=VECTOR["params"])
    assert response.status_code == 403
    assert await sql(services.store, "SELECT * FROM messages") == [] and conversation.calls == []


async def test_tampered_body_is_403(app_client) -> None:
    _, conversation, client = app_client
    signature = sign(VECTOR["params"])
    tampered = {**VECTOR["params"], "Body": "resolve #1"}
    response = await client.post("/webhook/twilio", data=tampered, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403 and conversation.calls == []


async def test_signature_with_another_token_is_403(app_client) -> None:
    _, _, client = app_client
    response = await client.post(
        "/webhook/twilio", data=VECTOR["params"], headers={"X-Twilio-Signature": sign(VECTOR["params"], token="54321")}
    )
    assert response.status_code == 403


async def test_without_auth_token_everything_is_403(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, DATABASE_PATH=tmp_path / "o.db", PUBLIC_BASE_URL=PUBLIC_BASE)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        response = await client.post(
            "/webhook/twilio", data=VECTOR["params"], headers={"X-Twilio-Signature": sign(VECTOR["params"])}
        )
        assert await sql(app.state.services.store, "SELECT * FROM messages") == []
    assert response.status_code == 403 and "TWILIO_AUTH_TOKEN" in response.json()["detail"]


async def test_unknown_sender_gets_twiml_and_no_action(app_client, caplog: pytest.LogCaptureFixture) -> None:
    services, conversation, client = app_client
    params = {**VECTOR["params"], "From": "whatsapp:+15550001111"}
    response = await client.post("/webhook/twilio", data=params, headers={"X-Twilio-Signature": sign(params)})
    assert response.status_code == 200 and response.text == EMPTY_TWIML
    await asyncio.sleep(0.05)
    assert conversation.calls == [] and await sql(services.store, "SELECT * FROM messages") == []
    assert any("not an on-call number" in record.getMessage() for record in caplog.records)


async def test_roster_people_may_send_commands_others_not(tmp_path: Path) -> None:
    """The allowlist is the roster's people plus ONCALL_WHATSAPP_NUMBERS (the one-person fallback)."""
    conversation = RecordingConversation()
    app = create_app(
        make_settings(tmp_path, ONCALL_FILE=str(REPO_ROOT / "oncall.yaml")), build=with_conversation(conversation)
    )
    senders = {
        "ravi": "whatsapp:+15550100002",
        "fallback": VECTOR["params"]["From"],
        "stranger": "whatsapp:+15550001111",
    }
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        for index, number in enumerate(senders.values()):
            params = {**VECTOR["params"], "From": number, "MessageSid": f"SM{index:032d}"}
            response = await client.post("/webhook/twilio", data=params, headers={"X-Twilio-Signature": sign(params)})
            assert response.status_code == 200 and response.text == EMPTY_TWIML
        await app.state.services.tasks.drain()
    assert sorted(call[0] for call in conversation.calls) == sorted([senders["ravi"], senders["fallback"]])


async def test_repeated_message_sid_is_ignored(app_client) -> None:
    services, conversation, client = app_client
    params = VECTOR["params"]
    for _ in range(3):
        response = await client.post("/webhook/twilio", data=params, headers={"X-Twilio-Signature": sign(params)})
        assert response.status_code == 200 and response.text == EMPTY_TWIML
    await services.tasks.drain()
    assert len(conversation.calls) == 1
    assert len(await sql(services.store, "SELECT * FROM messages WHERE direction = 'in'")) == 1


@pytest.mark.parametrize("missing", ["Body", "From", "MessageSid"])
async def test_missing_field_is_422(app_client, missing: str) -> None:
    _, conversation, client = app_client
    params = {key: value for key, value in VECTOR["params"].items() if key != missing}
    response = await client.post("/webhook/twilio", data=params, headers={"X-Twilio-Signature": sign(params)})
    assert response.status_code == 422
    assert any(missing in error["loc"] for error in response.json()["detail"])
    assert conversation.calls == []
