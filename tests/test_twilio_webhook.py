"""POST /webhook/twilio: signature verification with the published vectors, sender allow-list, dedupe, TwiML."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from twilio.request_validator import RequestValidator

from oncall.db import Database
from oncall.runtime import AgentRuntime
from oncall.settings import Settings
from oncall.twilio_webhook import EMPTY_TWIML, router
from tests.support import load_json_fixture

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


def make_runtime(tmp_path: Path, http: httpx.AsyncClient, **extra: str) -> AgentRuntime:
    """Runtime with Twilio configured with the vector's token and the vector's sender as on-call number."""
    values = dict(
        _env_file=None,
        DATABASE_PATH=tmp_path / "oncall.db",
        PUBLIC_BASE_URL=PUBLIC_BASE,
        TWILIO_ACCOUNT_SID=VECTOR["params"]["AccountSid"],
        TWILIO_AUTH_TOKEN=VECTOR["auth_token"],
        TWILIO_WHATSAPP_FROM=VECTOR["params"]["To"],
        ONCALL_WHATSAPP_NUMBERS=VECTOR["params"]["From"],
    )
    values.update(extra)
    settings = Settings(**values)
    return AgentRuntime(settings=settings, db=Database(settings.database_path), http=http)


@pytest.fixture
async def app_client(tmp_path: Path):
    """(runtime, conversation double, httpx client talking to an app with the webhook router)."""
    async with httpx.AsyncClient() as http:
        runtime = make_runtime(tmp_path, http)
        conversation = RecordingConversation()
        runtime.conversation = conversation  # type: ignore[assignment]
        app = FastAPI()
        app.state.runtime = runtime
        app.include_router(router)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8088"
        ) as client:
            yield runtime, conversation, client
        await runtime.drain()
        runtime.db.close()


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
    runtime, conversation, client = app_client
    params = VECTOR["params"]
    response = await client.post("/webhook/twilio", data=params, headers={"X-Twilio-Signature": sign(params)})
    assert response.status_code == 200
    assert response.text == EMPTY_TWIML and response.headers["content-type"].startswith("application/xml")
    await asyncio.wait_for(conversation.done.wait(), 5)
    assert conversation.calls == [(params["From"], params["Body"], params["MessageSid"])]
    row = runtime.db.query_one("SELECT * FROM messages WHERE message_sid = ?", (params["MessageSid"],))
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
    runtime, conversation, client = app_client
    response = await client.post("/webhook/twilio", data=VECTOR["params"])
    assert response.status_code == 403
    assert runtime.db.query("SELECT * FROM messages") == [] and conversation.calls == []


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
    async with httpx.AsyncClient() as http:
        settings = Settings(_env_file=None, DATABASE_PATH=tmp_path / "o.db", PUBLIC_BASE_URL=PUBLIC_BASE)
        runtime = AgentRuntime(settings=settings, db=Database(settings.database_path), http=http)
        app = FastAPI()
        app.state.runtime = runtime
        app.include_router(router)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            response = await client.post(
                "/webhook/twilio", data=VECTOR["params"], headers={"X-Twilio-Signature": sign(VECTOR["params"])}
            )
    assert response.status_code == 403 and "TWILIO_AUTH_TOKEN" in response.json()["detail"]


async def test_unknown_sender_gets_twiml_and_no_action(app_client, caplog: pytest.LogCaptureFixture) -> None:
    runtime, conversation, client = app_client
    params = {**VECTOR["params"], "From": "whatsapp:+15550001111"}
    response = await client.post("/webhook/twilio", data=params, headers={"X-Twilio-Signature": sign(params)})
    assert response.status_code == 200 and response.text == EMPTY_TWIML
    await asyncio.sleep(0.05)
    assert conversation.calls == [] and runtime.db.query("SELECT * FROM messages") == []
    assert any("not an on-call number" in record.getMessage() for record in caplog.records)


async def test_repeated_message_sid_is_ignored(app_client) -> None:
    runtime, conversation, client = app_client
    params = VECTOR["params"]
    for _ in range(3):
        response = await client.post("/webhook/twilio", data=params, headers={"X-Twilio-Signature": sign(params)})
        assert response.status_code == 200 and response.text == EMPTY_TWIML
    await runtime.drain()
    assert len(conversation.calls) == 1
    assert len(runtime.db.query("SELECT * FROM messages WHERE direction = 'in'")) == 1


@pytest.mark.parametrize("missing", ["Body", "From", "MessageSid"])
async def test_missing_field_is_422(app_client, missing: str) -> None:
    _, conversation, client = app_client
    params = {key: value for key, value in VECTOR["params"].items() if key != missing}
    response = await client.post("/webhook/twilio", data=params, headers={"X-Twilio-Signature": sign(params)})
    assert response.status_code == 422
    assert any(missing in error["loc"] for error in response.json()["detail"])
    assert conversation.calls == []
