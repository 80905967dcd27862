"""The messages the agent used to lose for good, on a real agent process (uvicorn, SQLite) killed with SIGKILL:

- a resolution during a running investigation, then ``kill -9``: after the restart both the diagnosis
  and the resolved notice are sent, in that order;
- Twilio failing (hanging for 30 s, then answering 500 for 30 s) and a restart in the middle: every
  message is delivered exactly once after Twilio recovers, the failure is visible meanwhile
  (``/healthz``, ``oncall_outbox_*`` metrics, ``delivery_delayed`` on the timeline);
- a hanging Twilio does not stall investigations: with 2 investigation slots, the third incident's
  investigation starts as soon as a slot frees, not after Twilio's timeouts.

The model is a loopback fake of the OpenAI API that diagnoses after ``MODEL_DELAY_S`` (so an
investigation is running long enough to be interrupted); Twilio is tests/fake_twilio.py. (The fourth
loss case, raw alerts stored but never applied, is in tests/test_agent_api.py and tests/test_claims.py.)
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.fake_openai import FakeOpenAI, Scripted, tool_calls_response
from tests.fake_twilio import FakeTwilio
from tests.support import free_port, post_alert_sync, wait_http_ok, wait_until
from tests.test_agent_api import API, agent_env, uvicorn_args
from tests.test_ingest import capture, webhook_bytes
from tests.test_investigation import diagnosis_args

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SID = "AC" + "1055" * 8
TOKEN = "loss-cases-token"
ONCALL = "whatsapp:+15550100002"
MODEL_DELAY_S = 4.0
TWILIO_HANG_S = 30.0
TWILIO_FAILING_S = 60.0  # hanging first, then 500s
REPLICA = "agent-1"
JSON = {"Content-Type": "application/json"}


def notification(group: str, status: str = "firing") -> bytes:
    """Captured request 1 (firing) or 10 (resolved) moved to its own alert group ``group``."""
    body = capture(1 if status == "firing" else 10)["body"]
    body["groupKey"] = f'{{}}:{{alertname="{group}"}}'
    body["groupLabels"]["alertname"] = body["commonLabels"]["alertname"] = group
    body["alerts"][0]["labels"]["alertname"] = group
    body["alerts"][0]["fingerprint"] = hashlib.sha256(group.encode()).hexdigest()[:16]
    return webhook_bytes(body)


class Agent:
    """One agent process on a SQLite file, started again with the same replica id after ``kill_9``."""

    def __init__(self, procs, env: dict[str, str]) -> None:
        self.procs = procs
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.proc = self.procs.start(f"agent-{self.starts}", uvicorn_args(self.port), env=self.env)
        wait_http_ok(f"{self.url}/healthz", timeout=30)

    def kill_9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def post(self, body: bytes) -> dict:
        """POST a notification and wait until the agent applied it (``GET /alerts/{raw_id}``)."""
        return post_alert_sync(self.url, body, API)

    def incident(self, incident_id: int) -> dict:
        return httpx.get(f"{self.url}/incidents/{incident_id}", headers=API, timeout=5).json()


def started_at(incident: dict) -> float | None:
    """When the incident's (last) investigation started, from its timeline."""
    times = [event["at"] for event in incident["timeline"] if event["kind"] == "investigation_started"]
    return times[-1] if times else None


@pytest.fixture
def twilio():
    fake = FakeTwilio(account_sid=SID, auth_token=TOKEN).start()
    yield fake
    fake.stop()


@pytest.fixture
def model():
    reply = Scripted(tool_calls_response([("send_diagnosis", diagnosis_args())]), delay_s=MODEL_DELAY_S)
    with FakeOpenAI(responder=lambda _body: reply) as fake:
        yield fake


def test_nothing_is_lost_through_a_failing_twilio_and_a_kill_9(tmp_path: Path, procs, twilio, model) -> None:
    env = agent_env(
        tmp_path,
        AGENT_REPLICA_ID=REPLICA,
        OPENAI_BASE_URL=model.base_url,
        OPENAI_API_KEY="sk-loss-cases",
        TWILIO_ACCOUNT_SID=SID,
        TWILIO_AUTH_TOKEN=TOKEN,
        TWILIO_WHATSAPP_FROM="whatsapp:+14155238886",
        TWILIO_API_BASE_URL=twilio.base_url,
        ONCALL_WHATSAPP_NUMBERS=ONCALL,
        MAX_CONCURRENT_INVESTIGATIONS="2",
        LEASE_S="10",
        WORK_POLL_S="0.5",
        OUTBOX_BACKOFF_MAX_S="4",
        OUTBOX_WARN_ATTEMPTS="2",
    )
    agent = Agent(procs, env)
    agent.start()
    twilio.hang_for(TWILIO_HANG_S)
    twilio.fail_for(TWILIO_FAILING_S, 500, 20500, "Internal Server Error")
    outage_ends = time.monotonic() + TWILIO_FAILING_S

    # A hanging Twilio does not hold investigation slots: the third incident starts when a slot frees.
    posted = time.time()
    ids = [agent.post(notification(f"Loss{n}"))["incident_id"] for n in range(3)]
    wait_until(lambda: all(started_at(agent.incident(i)) for i in ids), timeout=3 * MODEL_DELAY_S + 10, interval=0.3)
    third = max(started_at(agent.incident(i)) or 0 for i in ids)
    assert third - posted < 2 * MODEL_DELAY_S + 5, f"third investigation started {third - posted:.1f} s after the post"

    # A resolution arrives while the fourth incident is investigated, then the process is killed.
    fourth = agent.post(notification("LossResolved"))["incident_id"]
    wait_until(lambda: started_at(agent.incident(fourth)), timeout=2 * MODEL_DELAY_S + 10, interval=0.2)
    assert agent.post(notification("LossResolved", "resolved"))["incident_id"] == fourth
    assert agent.incident(fourth)["investigation_status"] == "running"
    agent.kill_9()
    agent.start()  # same AGENT_REPLICA_ID: its claims are released at start and taken again

    health = httpx.get(f"{agent.url}/healthz", headers=API, timeout=5).json()
    assert health["replica_id"] == REPLICA and health["outbox"]["pending"] >= 1  # visible while Twilio fails
    assert time.monotonic() < outage_ends, "the test machine is too slow: Twilio recovered before the restart"

    ids.append(fourth)
    expected = {i: 2 if i == fourth else 1 for i in ids}  # diagnosis (+ resolved) per incident, one part each

    def delivered() -> bool:
        return all(sum(f"#{i} " in m["body"] for m in twilio.messages) >= n for i, n in expected.items())

    wait_until(delivered, timeout=TWILIO_FAILING_S + 60, interval=1, what="every message after Twilio recovered")
    time.sleep(2)  # nothing else may arrive
    bodies = [m["body"] for m in twilio.messages]
    for incident_id, count in expected.items():
        mine = [body for body in bodies if f"#{incident_id} " in body]
        assert len(mine) == count, (incident_id, mine)
        assert mine[0].startswith("🚨")
    assert "resolved after" in [b for b in bodies if f"#{fourth} " in b][1]
    detail = agent.incident(fourth)
    assert [m["status"] for m in detail["messages"]] == ["sent", "sent"]
    assert {row["status"] for row in detail["outbox"]} == {"delivered"}
    kinds = [event["kind"] for event in detail["timeline"]]
    assert "delivery_delayed" in kinds and "investigation_resumed" in kinds
    metrics = httpx.get(f"{agent.url}/metrics", timeout=5).text
    assert 'oncall_outbox_deliveries_total{channel="whatsapp",operation="message",outcome="retry"}' in metrics
    assert httpx.get(f"{agent.url}/healthz", headers=API, timeout=5).json()["outbox"]["pending"] == 0
