"""Issue 10, finding 4: schemathesis over every operation of the agent's OpenAPI schema reports no server error.

The real app (real services, offline engine, console WhatsApp channel, demo-stack URLs on a closed
port) is fuzzed in-process with tests/api_fuzz.py: positive and negative cases from a fixed seed,
the API token sent, the path parameter pinned to an incident that exists so cases reach its body
and queries. ``/alerts`` and ``/webhook/twilio`` declare their bodies, so their bodies are fuzzed too.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from on_call_agent import create_app
from tests.api_fuzz import fuzz_asgi_app
from tests.support import ingest_notification, migrated_store
from tests.test_ingest import captured_bytes
from tests.test_security_api import API_TOKEN, AUTH, settings_for

OPERATIONS = {
    "POST /alerts",
    "GET /alerts/{raw_id}",
    "GET /incidents",
    "GET /incidents/{incident_id}",
    "GET /incidents/{incident_id}/alerts",
    "GET /incidents/{incident_id}/postmortem",
    "POST /incidents/{incident_id}/acknowledge",
    "POST /incidents/{incident_id}/resolve",
    "POST /webhook/twilio",
    "GET /healthz",
    "GET /metrics",
    "GET /status",
    "POST /investigations",
}


async def seed(database: Path) -> int:
    store = migrated_store(database)
    try:
        result = await ingest_notification(store, captured_bytes(1))
    finally:
        await store.close()
    assert result.incident_id is not None
    return result.incident_id


def test_every_operation_survives_fuzzing(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, TWILIO_AUTH_TOKEN="fuzz-twilio-token-123", ONCALL_WHATSAPP_NUMBERS="+15550100001")
    incident_id = asyncio.run(seed(settings.database_path))
    report = fuzz_asgi_app(
        create_app(settings),
        headers=AUTH,
        path_parameters={"incident_id": incident_id, "raw_id": 1},
        max_examples=20,
        time_budget_s=90,
    )
    assert set(report.operations) == OPERATIONS, report.operations
    assert report.ok, report.format()
    server_errors = {op: counts[500] for op, counts in report.statuses.items() if counts[500]}
    assert server_errors == {}, report.format()
    # the bodies were reached: schema-valid webhooks were accepted, schema-valid token holders got answers
    assert report.statuses["POST /alerts"][202] > 0, report.format()
    assert report.statuses["GET /incidents/{incident_id}"][200] > 0, report.format()
    assert report.statuses["GET /alerts/{raw_id}"][200] > 0, report.format()
    assert API_TOKEN not in report.format()
