"""WhatsApp formatting, message splitting, and the Notifier's console and Twilio channels.

The Twilio path runs the real twilio SDK over HTTP against tests/fake_twilio.py on loopback.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx
import pytest

from oncall.db import Database, dumps
from oncall.diagnosis import Diagnosis, Evidence, FaultType
from oncall.metrics import WHATSAPP_MESSAGES
from oncall.notify import Notifier
from oncall.runtime import AgentRuntime
from oncall.settings import Settings
from oncall.whatsapp_format import format_diagnosis, format_duration, format_resolved, split_message
from tests.fake_twilio import FakeTwilio

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "secret-auth-token-do-not-log"
ONCALL = "whatsapp:+491511234567"


def sample_diagnosis(**overrides: object) -> Diagnosis:
    """A code-bug diagnosis like the offline engine produces for the null dereference."""
    fields: dict = dict(
        summary="GET /random-endpoint/error fails with AttributeError on every request",
        root_cause="find_reservation() returns None and the next line reads .quantity from it",
        fault_type=FaultType.code_bug,
        affected_service="inventory",
        affected_replicas=["inventory-2", "inventory-3"],
        affected_file="inventory_service.py",
        affected_line=212,
        priority="P2",
        confidence=0.87,
        evidence=[
            Evidence(
                tool="fetch_logs",
                query="/logs/tail seconds=300",
                finding="120 AttributeError entries at inventory_service.py:212",
            ),
            Evidence(
                tool="compute_error_rate",
                query="sum(rate(http_errors_total[1m]))/sum(rate(http_requests_total[1m]))",
                finding="error ratio 0.78",
            ),
        ],
        suggested_fix="Return 404 when no reservation exists instead of dereferencing None",
        next_steps=["Deploy the fix", "Watch the error ratio"],
        engine="offline",
    )
    fields.update(overrides)
    return Diagnosis(**fields)


def insert_incident(
    db: Database, diagnosis: Diagnosis | None, *, created_at: float | None = None, resolved_at: float | None = None
) -> int:
    """Insert an incident row as ingest would, with an optional stored diagnosis; returns its id."""
    now = time.time()
    cursor = db.execute(
        "INSERT INTO incidents (group_key, status, title, service, severity, group_labels, common_labels, created_at, updated_at, resolved_at, diagnosis)"
        " VALUES (?, ?, ?, 'inventory', 'critical', ?, ?, ?, ?, ?, ?)",
        (
            f'{{}}:{{alertname="InventoryHighErrorRate"}}-{now}',
            "resolved" if resolved_at else "firing",
            "InventoryHighErrorRate",
            dumps({"alertname": "InventoryHighErrorRate"}),
            dumps({"alertname": "InventoryHighErrorRate", "service": "inventory"}),
            created_at or now,
            now,
            resolved_at,
            diagnosis.model_dump_json() if diagnosis else None,
        ),
    )
    return int(cursor.lastrowid)


@pytest.fixture
async def console_runtime(tmp_path: Path):
    """A runtime with no Twilio settings (console channel) and a temp database."""
    settings = Settings(
        _env_file=None, DATABASE_PATH=tmp_path / "oncall.db", PUBLIC_BASE_URL="https://oncall.example.com"
    )
    async with httpx.AsyncClient() as http:
        runtime = AgentRuntime(settings=settings, db=Database(settings.database_path), http=http)
        yield runtime
        runtime.db.close()


@pytest.fixture
def fake_twilio():
    """The loopback fake Twilio Messages API."""
    fake = FakeTwilio(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN).start()
    yield fake
    fake.stop()


@pytest.fixture
async def twilio_runtime(tmp_path: Path, fake_twilio: FakeTwilio):
    """A runtime whose Twilio settings point the SDK at the fake."""
    settings = Settings(
        _env_file=None,
        DATABASE_PATH=tmp_path / "oncall.db",
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_WHATSAPP_FROM="+14155238886",
        TWILIO_API_BASE_URL=fake_twilio.base_url,
        ONCALL_WHATSAPP_NUMBERS="+491511234567",
    )
    async with httpx.AsyncClient() as http:
        runtime = AgentRuntime(settings=settings, db=Database(settings.database_path), http=http)
        runtime.notifier = Notifier(runtime, backoff_s=0.01)
        yield runtime
        runtime.db.close()


def test_format_diagnosis_has_every_field() -> None:
    incident = {
        "id": 12,
        "title": "InventoryHighErrorRate",
        "status": "firing",
        "common_labels": {"alertname": "InventoryHighErrorRate"},
    }
    text = format_diagnosis(sample_diagnosis(), incident, "https://oncall.example.com")
    first_line = text.splitlines()[0]
    assert "*#12 InventoryHighErrorRate*" in first_line and "P2" in first_line
    assert "code_bug" in text and "87%" in text
    assert "inventory-2, inventory-3" in text
    assert "inventory_service.py:212" in text
    assert "find_reservation() returns None" in text
    assert "• fetch_logs: 120 AttributeError" in text
    assert "Return 404 when no reservation" in text
    assert "1. Deploy the fix\n2. Watch the error ratio" in text
    assert "https://oncall.example.com/incidents/12" in text
    assert "Reply e.g.: #12 create a Jira task and assign it to Ravi" in text
    assert len(text) <= 1600


def test_format_diagnosis_without_file_or_replicas() -> None:
    diagnosis = sample_diagnosis(
        fault_type=FaultType.none,
        affected_file=None,
        affected_line=None,
        affected_replicas=[],
        evidence=[],
        next_steps=[],
        suggested_fix="",
    )
    text = format_diagnosis(diagnosis, {"id": 3, "title": "InventoryHighCPU", "common_labels": {}}, "http://h")
    assert "*Where:*" not in text and "*Evidence*" not in text and "*Next steps*" not in text
    assert "replicas: none identified" in text and "*#3 InventoryHighCPU*" in text


def test_format_resolved_is_one_line_with_duration() -> None:
    incident = {
        "id": 7,
        "title": "InventoryReplicaDown",
        "common_labels": {"alertname": "InventoryReplicaDown"},
        "created_at": 1000.0,
        "resolved_at": 1432.0,
    }
    text = format_resolved(incident)
    assert "\n" not in text
    assert "#7 InventoryReplicaDown" in text and "7m 12s" in text
    assert format_duration(3725) == "1h 02m" and format_duration(45.2) == "45s"


def test_short_message_is_not_split() -> None:
    assert split_message("hello *world*") == ["hello *world*"]


def test_split_on_paragraphs_with_numbering() -> None:
    paragraphs = [f"Paragraph {i} " + " ".join(f"word{i}x{j}" for j in range(60)) for i in range(8)]
    text = "\n\n".join(paragraphs)
    assert len(text) > 3200
    parts = split_message(text)
    assert len(parts) >= 3
    assert all(len(part) <= 1600 for part in parts)
    assert [part.splitlines()[0] for part in parts] == [f"({i}/{len(parts)})" for i in range(1, len(parts) + 1)]
    bodies = [part.split("\n", 1)[1] for part in parts]
    # paragraph boundaries are used: every part starts with a paragraph's first words
    assert all(body.startswith("Paragraph ") for body in bodies)
    # nothing lost, nothing invented
    assert " ".join(" ".join(bodies).split()) == " ".join(text.split())


def test_split_never_cuts_words_when_lines_are_long() -> None:
    words = [f"w{i:05d}" for i in range(900)]  # one 6300-character line, no newlines
    text = " ".join(words)
    parts = split_message(text, limit=500)
    assert all(len(part) <= 500 for part in parts)
    rejoined = " ".join(part.split("\n", 1)[1] for part in parts).split()
    assert rejoined == words


def test_split_hard_cuts_a_single_huge_word() -> None:
    text = "x" * 4000
    parts = split_message(text)
    assert all(len(part) <= 1600 for part in parts)
    assert "".join(part.split("\n", 1)[1] for part in parts) == text


def test_split_marker_width_grows_with_part_count() -> None:
    text = " ".join("abcdefghi" for _ in range(1200))  # 12 000 chars -> more than 9 parts at limit 1000
    parts = split_message(text, limit=1000)
    assert len(parts) >= 10
    assert all(len(part) <= 1000 for part in parts)
    assert parts[-1].startswith(f"({len(parts)}/{len(parts)})\n")


async def test_console_channel_logs_and_stores(console_runtime: AgentRuntime, caplog: pytest.LogCaptureFixture) -> None:
    incident_id = insert_incident(console_runtime.db, sample_diagnosis())
    notifier = Notifier(console_runtime)
    before = WHATSAPP_MESSAGES.labels(channel="console", status="sent")._value.get()
    with caplog.at_level(logging.INFO, logger="oncall.whatsapp.console"):
        ids = await notifier.send_diagnosis(incident_id)
    rows = console_runtime.db.query("SELECT * FROM messages ORDER BY id")
    assert [row["id"] for row in rows] == ids
    assert all(row["channel"] == "console" and row["status"] == "sent" and row["direction"] == "out" for row in rows)
    assert rows[0]["to_number"] == "console" and rows[0]["incident_id"] == incident_id
    assert f"#{incident_id} InventoryHighErrorRate" in rows[0]["body"]
    assert any(f"#{incident_id} InventoryHighErrorRate" in record.getMessage() for record in caplog.records)
    assert WHATSAPP_MESSAGES.labels(channel="console", status="sent")._value.get() == before + len(ids)
    timeline = console_runtime.db.query("SELECT kind, detail FROM timeline WHERE incident_id = ?", (incident_id,))
    assert timeline[-1]["kind"] == "notified" and json.loads(timeline[-1]["detail"])["message_ids"] == ids


async def test_console_long_body_is_split_into_rows(console_runtime: AgentRuntime) -> None:
    body = "\n".join(f"line {i}: " + "detail " * 20 for i in range(40))
    ids = await Notifier(console_runtime).send(body, incident_id=None, to=["+4915000000"])
    rows = console_runtime.db.query("SELECT body, to_number FROM messages ORDER BY id")
    assert len(ids) == len(rows) >= 3
    assert all(len(row["body"]) <= 1600 and row["to_number"] == "whatsapp:+4915000000" for row in rows)


async def test_send_resolved(console_runtime: AgentRuntime) -> None:
    now = time.time()
    incident_id = insert_incident(console_runtime.db, None, created_at=now - 90, resolved_at=now)
    ids = await Notifier(console_runtime).send_resolved(incident_id)
    body = console_runtime.db.query_one("SELECT body FROM messages WHERE id = ?", (ids[0],))["body"]
    assert len(ids) == 1 and "resolved after 1m 30s" in body


async def test_send_investigation_failed_pages_with_reason_and_link(console_runtime: AgentRuntime) -> None:
    incident_id = insert_incident(console_runtime.db, None)
    ids = await Notifier(console_runtime).send_investigation_failed(incident_id, "RuntimeError: Prometheus unreachable")
    body = console_runtime.db.query_one("SELECT body FROM messages WHERE id = ?", (ids[0],))["body"]
    assert f"#{incident_id}" in body and "investigation failed" in body and "Prometheus unreachable" in body
    assert f"/incidents/{incident_id}" in body
    timeline = console_runtime.db.query(
        "SELECT detail FROM timeline WHERE incident_id = ? AND kind = 'notified'", (incident_id,)
    )
    assert '"investigation_failed"' in timeline[-1]["detail"]


async def test_send_diagnosis_without_diagnosis_raises(console_runtime: AgentRuntime) -> None:
    incident_id = insert_incident(console_runtime.db, None)
    with pytest.raises(ValueError, match="no diagnosis"):
        await Notifier(console_runtime).send_diagnosis(incident_id)


async def test_twilio_send_through_sdk(twilio_runtime: AgentRuntime, fake_twilio: FakeTwilio) -> None:
    incident_id = insert_incident(twilio_runtime.db, sample_diagnosis())
    ids = await twilio_runtime.notifier.send_diagnosis(incident_id)
    assert len(fake_twilio.messages) == len(ids) == 1
    sent = fake_twilio.messages[0]
    assert sent["to"] == ONCALL and sent["from"] == "whatsapp:+14155238886"
    row = twilio_runtime.db.query_one("SELECT * FROM messages WHERE id = ?", (ids[0],))
    assert row["status"] == "sent" and row["channel"] == "twilio" and row["attempts"] == 1
    assert row["message_sid"] == sent["sid"] and row["body"] == sent["body"]


async def test_twilio_retries_5xx_then_succeeds(twilio_runtime: AgentRuntime, fake_twilio: FakeTwilio) -> None:
    fake_twilio.fail_next(500, 20500, "Internal Server Error")
    ids = await twilio_runtime.notifier.send("hello", incident_id=None)
    row = twilio_runtime.db.query_one("SELECT * FROM messages WHERE id = ?", (ids[0],))
    assert row["status"] == "sent" and row["attempts"] == 2 and row["error"] is None
    assert len(fake_twilio.requests) == 2 and len(fake_twilio.messages) == 1


async def test_twilio_gives_up_after_three_5xx(twilio_runtime: AgentRuntime, fake_twilio: FakeTwilio) -> None:
    fake_twilio.fail_next(503, 20503, "Service Unavailable", times=3)
    ids = await twilio_runtime.notifier.send("hello", incident_id=None)
    row = twilio_runtime.db.query_one("SELECT * FROM messages WHERE id = ?", (ids[0],))
    assert row["status"] == "failed" and row["attempts"] == 3 and "20503" in row["error"]
    assert len(fake_twilio.requests) == 3


async def test_twilio_4xx_is_not_retried_and_stored(twilio_runtime: AgentRuntime, fake_twilio: FakeTwilio) -> None:
    fake_twilio.fail_next(400, 21211, "The 'To' number whatsapp:+491511234567 is not a valid phone number.")
    before = WHATSAPP_MESSAGES.labels(channel="twilio", status="failed")._value.get()
    ids = await twilio_runtime.notifier.send("hello", incident_id=None)
    row = twilio_runtime.db.query_one("SELECT * FROM messages WHERE id = ?", (ids[0],))
    assert row["status"] == "failed" and row["attempts"] == 1
    assert "21211" in row["error"] and "not a valid phone number" in row["error"]
    assert AUTH_TOKEN not in row["error"]
    assert len(fake_twilio.requests) == 1
    assert WHATSAPP_MESSAGES.labels(channel="twilio", status="failed")._value.get() == before + 1


async def test_twilio_wrong_token_is_a_permanent_failure(tmp_path: Path, fake_twilio: FakeTwilio) -> None:
    settings = Settings(
        _env_file=None,
        DATABASE_PATH=tmp_path / "o.db",
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN="wrong-token",
        TWILIO_WHATSAPP_FROM="whatsapp:+14155238886",
        TWILIO_API_BASE_URL=fake_twilio.base_url,
        ONCALL_WHATSAPP_NUMBERS=ONCALL,
    )
    async with httpx.AsyncClient() as http:
        runtime = AgentRuntime(settings=settings, db=Database(settings.database_path), http=http)
        ids = await Notifier(runtime, backoff_s=0.01).send("hello", incident_id=None)
        row = runtime.db.query_one("SELECT * FROM messages WHERE id = ?", (ids[0],))
    assert row["status"] == "failed" and "20003" in row["error"] and "wrong-token" not in row["error"]


async def test_twilio_connection_refused_is_retried_then_failed(tmp_path: Path) -> None:
    from tests.support import free_port

    settings = Settings(
        _env_file=None,
        DATABASE_PATH=tmp_path / "o.db",
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_WHATSAPP_FROM="+14155238886",
        TWILIO_API_BASE_URL=f"http://127.0.0.1:{free_port()}",
        ONCALL_WHATSAPP_NUMBERS=ONCALL,
    )
    async with httpx.AsyncClient() as http:
        runtime = AgentRuntime(settings=settings, db=Database(settings.database_path), http=http)
        ids = await Notifier(runtime, backoff_s=0.01).send("hello", incident_id=None)
        row = runtime.db.query_one("SELECT * FROM messages WHERE id = ?", (ids[0],))
    assert row["status"] == "failed" and row["attempts"] == 3 and "ConnectionError" in row["error"]


async def test_resend_queued_after_restart(twilio_runtime: AgentRuntime, fake_twilio: FakeTwilio) -> None:
    insert = "INSERT INTO messages (direction, channel, to_number, body, status, created_at, updated_at) VALUES ('out', 'twilio', ?, ?, 'queued', ?, ?)"
    left_over = twilio_runtime.notifier.started_at - 60  # queued by the previous process
    twilio_runtime.db.execute(insert, (ONCALL, "left over", left_over, left_over))
    in_flight = time.time() + 1  # queued by this process, being delivered by a concurrent send()
    twilio_runtime.db.execute(insert, (ONCALL, "in flight", in_flight, in_flight))
    assert await twilio_runtime.notifier.resend_queued() == 1
    assert [m["body"] for m in fake_twilio.messages] == ["left over"]
    statuses = {r["body"]: r["status"] for r in twilio_runtime.db.query("SELECT body, status FROM messages")}
    assert statuses == {"left over": "sent", "in flight": "queued"}
    assert await twilio_runtime.notifier.resend_queued() == 0
