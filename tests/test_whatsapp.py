"""WhatsApp formatting, message splitting, and the WhatsAppSender's console and Twilio channels, delivered
through the outbox worker (backoff until delivered or expired, fencing by lease, order per incident).

The Twilio path runs the real twilio SDK over HTTP against tests/fake_twilio.py on loopback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from oncall.channels.outbox import OutboxWorker
from oncall.channels.whatsapp.format import format_diagnosis, format_duration, format_resolved, split_message
from oncall.channels.whatsapp.sender import WhatsAppSender, build_twilio_client
from oncall.diagnosis import Diagnosis, Evidence, FaultType
from oncall.metrics import OUTBOX_DELIVERIES, WHATSAPP_MESSAGES
from oncall.store import incidents, outbox
from oncall.store.database import Connection, Store
from oncall.tasks import BackgroundTasks
from tests.fake_twilio import FakeTwilio
from tests.support import free_port, sql, sql_exec, sql_one

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "secret-auth-token-do-not-log"
ONCALL = "whatsapp:+491511234567"
PUBLIC_BASE = "https://oncall.example.com"


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


async def insert_incident(
    store: Store, diagnosis: Diagnosis | None, *, created_at: float | None = None, resolved_at: float | None = None
) -> int:
    """Insert an incident row as ingest would, with an optional stored diagnosis; returns its id."""
    now = time.time()
    async with store.write() as conn:
        return await incidents.add_if_absent(
            conn,
            {
                "group_key": f'{{}}:{{alertname="InventoryHighErrorRate"}}-{now}',
                "status": "resolved" if resolved_at else "firing",
                "title": "InventoryHighErrorRate",
                "service": "inventory",
                "severity": "critical",
                "group_labels": {"alertname": "InventoryHighErrorRate"},
                "common_labels": {"alertname": "InventoryHighErrorRate", "service": "inventory"},
                "common_annotations": {},
                "created_at": created_at or now,
                "updated_at": now,
                "resolved_at": resolved_at,
                "diagnosis": diagnosis.model_dump(mode="json") if diagnosis else None,
            },
        )


def console_sender(store: Store) -> WhatsAppSender:
    """A sender without Twilio and without on-call numbers: the console channel."""
    return WhatsAppSender(store, twilio=None, from_number=None, recipients=[], public_base_url=PUBLIC_BASE)


def twilio_sender(
    store: Store, api_base_url: str, *, auth_token: str = AUTH_TOKEN, from_number: str = "+14155238886"
) -> WhatsAppSender:
    """A sender whose twilio SDK client talks to ``api_base_url``, paging the on-call number (given without prefix)."""
    return WhatsAppSender(
        store,
        twilio=build_twilio_client(ACCOUNT_SID, auth_token, api_base_url),
        from_number=from_number,
        recipients=["+491511234567"],
        public_base_url=PUBLIC_BASE,
    )


def worker(store: Store, sender: WhatsAppSender, replica_id: str = "replica-a", **options: float) -> OutboxWorker:
    """An outbox worker delivering ``sender``'s channel with millisecond backoff (``options`` override)."""
    settings = {"backoff_s": 0.01, "backoff_max_s": 0.05, "lease_s": 5.0, "poll_s": 0.05, **options}
    return OutboxWorker(store, {"whatsapp": sender}, BackgroundTasks(), replica_id=replica_id, **settings)  # type: ignore[arg-type]


async def notice(store: Store, incident_id: int, what: str, episode: int = 1, **extra: object) -> None:
    """Write a notice row as the lifecycle does."""
    async with store.write() as conn:
        await outbox.add(
            conn,
            event_key=f"incident:{incident_id}:episode:{episode}:{what}",
            channel="whatsapp",
            operation="notice",
            incident_id=incident_id,
            payload={"what": what, "episode": episode, **extra},
            now=time.time(),
        )


async def sent_ids(store: Store, incident_id: int) -> list[int]:
    rows = await sql(store, "SELECT id FROM messages WHERE incident_id = :id ORDER BY id", id=incident_id)
    return [row["id"] for row in rows]


@pytest.fixture
def fake_twilio():
    """The loopback fake Twilio Messages API."""
    fake = FakeTwilio(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN).start()
    yield fake
    fake.stop()


@pytest.fixture
async def console(store: Store) -> AsyncIterator[WhatsAppSender]:
    """The console-channel sender on the test's store."""
    yield console_sender(store)


@pytest.fixture
async def twilio(store: Store, fake_twilio: FakeTwilio) -> AsyncIterator[WhatsAppSender]:
    """A Twilio sender pointed at the fake."""
    yield twilio_sender(store, fake_twilio.base_url)


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
    assert "https://oncall.example.com/ui/incidents/12" in text
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


async def test_console_channel_logs_and_stores(
    store: Store, console: WhatsAppSender, caplog: pytest.LogCaptureFixture
) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    before = WHATSAPP_MESSAGES.labels(channel="console", status="sent")._value.get()
    await notice(store, incident_id, "diagnosis")
    with caplog.at_level(logging.INFO, logger="oncall.whatsapp.console"):
        await worker(store, console).drain()
    rows = await sql(store, "SELECT * FROM messages ORDER BY id")
    ids = [row["id"] for row in rows]
    assert ids and all(
        row["channel"] == "console" and row["status"] == "sent" and row["direction"] == "out" for row in rows
    )
    assert rows[0]["to_number"] == "console" and rows[0]["incident_id"] == incident_id
    assert f"#{incident_id} InventoryHighErrorRate" in rows[0]["body"]
    assert any(f"#{incident_id} InventoryHighErrorRate" in record.getMessage() for record in caplog.records)
    assert WHATSAPP_MESSAGES.labels(channel="console", status="sent")._value.get() == before + len(ids)
    timeline = await sql(store, "SELECT kind, detail FROM timeline WHERE incident_id = :id ORDER BY id", id=incident_id)
    assert timeline[-1]["kind"] == "notified" and json.loads(timeline[-1]["detail"])["message_ids"] == ids
    keys = [row["event_key"] for row in await sql(store, "SELECT event_key FROM outbox ORDER BY id")]
    assert keys == [
        f"incident:{incident_id}:episode:1:diagnosis",
        f"incident:{incident_id}:episode:1:diagnosis:console:1",
    ]
    await notice(store, incident_id, "diagnosis")  # the same event again: written once only
    await worker(store, console).drain()
    assert await sent_ids(store, incident_id) == ids


async def test_console_long_body_is_split_into_rows(store: Store, console: WhatsAppSender) -> None:
    body = "\n".join(f"line {i}: " + "detail " * 20 for i in range(40))
    ids = await console.send(body, incident_id=None, to=["+4915000000"])
    await worker(store, console).drain()
    rows = await sql(store, "SELECT body, to_number, status FROM messages ORDER BY id")
    assert len(ids) == len(rows) >= 3
    assert all(len(row["body"]) <= 1600 and row["to_number"] == "whatsapp:+4915000000" for row in rows)
    assert {row["status"] for row in rows} == {"sent"}


async def test_resolved_notice(store: Store, console: WhatsAppSender) -> None:
    now = time.time()
    incident_id = await insert_incident(store, None, created_at=now - 90, resolved_at=now)
    await notice(store, incident_id, "resolved")
    await worker(store, console).drain()
    [row] = await sql(store, "SELECT body FROM messages WHERE incident_id = :id", id=incident_id)
    assert "resolved after 1m 30s" in row["body"]


async def test_investigation_failed_notice_pages_with_reason_and_link(store: Store, console: WhatsAppSender) -> None:
    incident_id = await insert_incident(store, None)
    await notice(store, incident_id, "investigation_failed", error="RuntimeError: Prometheus unreachable")
    await worker(store, console).drain()
    [row] = await sql(store, "SELECT body FROM messages WHERE incident_id = :id", id=incident_id)
    body = row["body"]
    assert f"#{incident_id}" in body and "investigation failed" in body and "Prometheus unreachable" in body
    assert f"/ui/incidents/{incident_id}" in body
    timeline = await sql(
        store, "SELECT detail FROM timeline WHERE incident_id = :id AND kind = 'notified' ORDER BY id", id=incident_id
    )
    assert '"investigation_failed"' in timeline[-1]["detail"]


async def test_diagnosis_notice_without_diagnosis_fails_visibly(store: Store, console: WhatsAppSender) -> None:
    incident_id = await insert_incident(store, None)
    await notice(store, incident_id, "diagnosis")
    await worker(store, console).drain()
    [row] = await sql(store, "SELECT status, last_error FROM outbox")
    assert row["status"] == "failed" and "no diagnosis" in row["last_error"]
    kinds = [r["kind"] for r in await sql(store, "SELECT kind FROM timeline WHERE incident_id = :id", id=incident_id)]
    assert kinds == ["delivery_failed"] and await sent_ids(store, incident_id) == []


async def test_twilio_send_through_sdk(store: Store, twilio: WhatsAppSender, fake_twilio: FakeTwilio) -> None:
    incident_id = await insert_incident(store, sample_diagnosis())
    await notice(store, incident_id, "diagnosis")
    await worker(store, twilio).drain()
    ids = await sent_ids(store, incident_id)
    assert len(fake_twilio.messages) == len(ids) == 1
    sent = fake_twilio.messages[0]
    assert sent["to"] == ONCALL and sent["from"] == "whatsapp:+14155238886"
    row = await sql_one(store, "SELECT * FROM messages WHERE id = :id", id=ids[0])
    assert row is not None
    assert row["status"] == "sent" and row["channel"] == "twilio" and row["attempts"] == 1
    assert row["message_sid"] == sent["sid"] and row["body"] == sent["body"]


async def test_twilio_5xx_is_retried_with_backoff_until_delivered(
    store: Store, twilio: WhatsAppSender, fake_twilio: FakeTwilio
) -> None:
    """Far more than the old three attempts: the row stays pending, with its last error, until Twilio answers."""
    fake_twilio.fail_next(503, 20503, "Service Unavailable", times=7)
    ids = await twilio.send("hello", incident_id=None)
    delivering = worker(store, twilio)
    await delivering.drain()  # the first attempt failed; the next one waits for its backoff
    row = await sql_one(store, "SELECT * FROM messages WHERE id = :id", id=ids[0])
    assert row is not None and row["status"] == "queued" and "20503" in row["error"] and 1 <= row["attempts"] < 8
    await delivering.drain(retries=True)
    row = await sql_one(store, "SELECT * FROM messages WHERE id = :id", id=ids[0])
    assert row is not None
    assert row["status"] == "sent" and row["attempts"] == 8 and row["error"] is None
    assert len(fake_twilio.requests) == 8 and len(fake_twilio.messages) == 1
    [out] = await sql(store, "SELECT status, attempts, delivered_by FROM outbox")
    assert out == {"status": "delivered", "attempts": 8, "delivered_by": "replica-a"}


async def test_undelivered_past_expiry_is_given_up_visibly(
    store: Store, twilio: WhatsAppSender, fake_twilio: FakeTwilio
) -> None:
    incident_id = await insert_incident(store, None)
    fake_twilio.fail_for(30, 500, 20500, "Internal Server Error")
    await twilio.send("page", incident_id=incident_id)
    expired_before = OUTBOX_DELIVERIES.labels(channel="whatsapp", operation="message", outcome="expired")._value.get()
    await worker(store, twilio, expiry_s=0.4, warn_attempts=2).drain(retries=True)
    [out] = await sql(store, "SELECT status, attempts, last_error, warned FROM outbox")
    assert out["status"] == "expired" and out["attempts"] >= 2 and "20500" in out["last_error"] and out["warned"] == 1
    [message] = await sql(store, "SELECT status, error FROM messages")
    assert message["status"] == "failed" and "20500" in message["error"]
    kinds = [r["kind"] for r in await sql(store, "SELECT kind FROM timeline WHERE incident_id = :id", id=incident_id)]
    assert kinds == ["delivery_delayed", "delivery_failed"]
    assert OUTBOX_DELIVERIES.labels(channel="whatsapp", operation="message", outcome="expired")._value.get() == (
        expired_before + 1
    )


async def test_twilio_4xx_is_not_retried_and_stored(
    store: Store, twilio: WhatsAppSender, fake_twilio: FakeTwilio
) -> None:
    fake_twilio.fail_next(400, 21211, "The 'To' number whatsapp:+491511234567 is not a valid phone number.")
    before = WHATSAPP_MESSAGES.labels(channel="twilio", status="failed")._value.get()
    ids = await twilio.send("hello", incident_id=None)
    await worker(store, twilio).drain(retries=True)
    row = await sql_one(store, "SELECT * FROM messages WHERE id = :id", id=ids[0])
    assert row is not None
    assert row["status"] == "failed" and row["attempts"] == 1
    assert "21211" in row["error"] and "not a valid phone number" in row["error"]
    assert AUTH_TOKEN not in row["error"]
    assert len(fake_twilio.requests) == 1
    assert WHATSAPP_MESSAGES.labels(channel="twilio", status="failed")._value.get() == before + 1


async def test_twilio_wrong_token_is_a_permanent_failure(store: Store, fake_twilio: FakeTwilio) -> None:
    sender = twilio_sender(store, fake_twilio.base_url, auth_token="wrong-token", from_number="whatsapp:+14155238886")
    ids = await sender.send("hello", incident_id=None)
    await worker(store, sender).drain(retries=True)
    row = await sql_one(store, "SELECT * FROM messages WHERE id = :id", id=ids[0])
    assert row is not None
    assert row["status"] == "failed" and "20003" in row["error"] and "wrong-token" not in row["error"]


async def test_twilio_connection_refused_is_retried_until_expiry(store: Store) -> None:
    sender = twilio_sender(store, f"http://127.0.0.1:{free_port()}")
    ids = await sender.send("hello", incident_id=None)
    await worker(store, sender, expiry_s=0.3).drain(retries=True)
    row = await sql_one(store, "SELECT * FROM messages WHERE id = :id", id=ids[0])
    assert row is not None
    assert row["status"] == "failed" and row["attempts"] >= 2 and "ConnectionError" in row["error"]


async def test_twilio_without_sender_number_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="TWILIO_WHATSAPP_FROM"):
        WhatsAppSender(
            store,
            twilio=build_twilio_client(ACCOUNT_SID, AUTH_TOKEN, None),
            from_number=None,
            recipients=[ONCALL],
            public_base_url=PUBLIC_BASE,
        )


async def test_a_dead_replicas_lease_passes_to_another_replica(
    store: Store, twilio: WhatsAppSender, fake_twilio: FakeTwilio
) -> None:
    """Replica A claimed two rows and died; B delivers the one whose lease expired, never one still held."""
    await twilio.send("left by A", incident_id=None)
    await twilio.send("held by A", incident_id=None)
    now = time.time()
    await sql_exec(
        store,
        "UPDATE outbox SET claimed_by = 'replica-a', attempts = 1, lease_until = :past WHERE id = 1",
        past=now - 1,
    )
    await sql_exec(
        store,
        "UPDATE outbox SET claimed_by = 'replica-a', attempts = 1, lease_until = :later WHERE id = 2",
        later=now + 60,
    )
    await worker(store, twilio, replica_id="replica-b").drain()
    assert [m["body"] for m in fake_twilio.messages] == ["left by A"]
    rows = await sql(store, "SELECT status, delivered_by, attempts FROM outbox ORDER BY id")
    assert rows == [
        {"status": "delivered", "delivered_by": "replica-b", "attempts": 2},
        {"status": "pending", "delivered_by": None, "attempts": 1},
    ]
    # A comes back after a restart with the same replica id: its leases are released and it delivers the rest.
    a_again = worker(store, twilio, replica_id="replica-a")
    async with store.write() as conn:
        assert await outbox.release(conn, "replica-a") == 1
    await a_again.drain()
    assert [m["body"] for m in fake_twilio.messages] == ["left by A", "held by A"]


async def test_an_incidents_messages_keep_their_order_through_retries(
    store: Store, twilio: WhatsAppSender, fake_twilio: FakeTwilio
) -> None:
    """The resolved notice never overtakes the diagnosis, even while the diagnosis is in backoff."""
    incident_id = await insert_incident(store, sample_diagnosis(), created_at=time.time() - 60, resolved_at=time.time())
    fake_twilio.fail_next(500, 20500, "Internal Server Error", times=3)
    await notice(store, incident_id, "diagnosis")
    await notice(store, incident_id, "resolved")
    await worker(store, twilio).drain(retries=True)
    bodies = [m["body"] for m in fake_twilio.messages]
    assert len(bodies) == 2 and "🚨" in bodies[0] and "resolved after" in bodies[1]


class AnswersLate:
    """A store whose read transactions hand their result back 50 ms after their statements ran (the snapshot
    is taken first), as on a busy machine: a delivery started meanwhile ends before the reader goes on."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def write(self) -> AbstractAsyncContextManager[Connection]:
        return self.store.write()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Connection]:
        async with self.store.read() as conn:
            yield conn
        await asyncio.sleep(0.05)


async def test_drain_delivers_all_when_a_delivery_ends_while_it_looks_for_the_next(
    store: Store, console: WhatsAppSender
) -> None:
    """``drain`` returned with the resolved notice undelivered when the diagnosis notice's delivery ended while
    ``run_due`` was reading when the next row is due (it had seen that notice's lease, 30 s away)."""
    incident_id = await insert_incident(store, sample_diagnosis(), created_at=time.time() - 60, resolved_at=time.time())
    await notice(store, incident_id, "diagnosis")
    await notice(store, incident_id, "resolved")
    late = OutboxWorker(AnswersLate(store), {"whatsapp": console}, BackgroundTasks(), replica_id="a", lease_s=30.0)  # type: ignore[arg-type]
    await late.drain()
    rows = await sql(store, "SELECT body, status FROM messages WHERE incident_id = :id ORDER BY id", id=incident_id)
    assert [row["status"] for row in rows] == ["sent", "sent"], rows
    assert "🚨" in rows[0]["body"] and "resolved after" in rows[1]["body"]
