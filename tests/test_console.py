"""The incident console over HTTP: the real app (lifespan, store, scheduler) in-process through httpx.

Login and session cookies, viewer and responder roles, CSRF on every form, session expiry, the pages
(list with filters, incident with evidence linked to tool calls, tool call, services, status) and the
responder actions landing on the same timeline as WhatsApp actions. An investigator fake records a
real audit trail (an engine run, tool calls, ``send_diagnosis``) so evidence links can be followed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import argon2
import httpx
import pytest
from fastapi import FastAPI

from on_call_agent import build_services, create_app
from oncall.api.deps import Services
from oncall.console.auth import LOGIN_COOKIE, MAX_FAILURES, SESSION_COOKIE, ConsoleAuth, Session
from oncall.diagnosis import Diagnosis, Evidence, FaultType
from oncall.incidents.scheduler import InvestigationScheduler
from oncall.settings import Settings
from oncall.store import investigations
from oncall.store.database import Store
from oncall.tasks import BackgroundTasks
from tests.support import post_alert, sql, until_idle
from tests.test_agent_api import API, make_settings, with_scheduler
from tests.test_ingest import capture, webhook_bytes

CHEAP = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PASSWORD = "correct horse battery"
HASH = CHEAP.hash(PASSWORD)
TOKEN = "console-token-0123456789"
SECRET = "k" * 40
P99 = 'histogram_quantile(0.99, sum by (le)(rate(http_request_duration_seconds_bucket{job="checkout"}[1m])))'
JSON = {"Content-Type": "application/json"}
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


class EvidenceInvestigator:
    """Records an engine run with three tool calls and ``send_diagnosis``, then returns a diagnosis whose
    evidence names the PromQL of the second call, as the offline engine's would."""

    first_engine = "offline"

    def __init__(self, store: Store) -> None:
        self.store = store

    async def investigate(self, incident: dict, alerts: list[dict], *, episode: int | None = None) -> Diagnosis:
        incident_id, now = int(incident["id"]), time.time()
        diagnosis = Diagnosis(
            summary=f"p99 of {incident['service']} above 2 s",
            root_cause="slow database",
            fault_type=FaultType.latency,
            affected_service=str(incident["service"]),
            priority="P2",
            confidence=0.7,
            evidence=[Evidence(tool="query_prometheus", query=P99, finding="p99 2.4 s")],
        )
        calls = [
            ("query_prometheus", {"query": "up"}, {"result": [{"value": 1}]}),
            ("query_prometheus", {"query": P99}, {"query": P99, "result": [{"value": 2.4}]}),
            ("fetch_logs", {"seconds": 300, "limit": 200}, {"count": 0}),
            ("send_diagnosis", diagnosis.model_dump(mode="json"), {"summary": diagnosis.summary}),
        ]
        async with self.store.write() as conn:
            run = await investigations.start(conn, incident_id, "offline", now)
            for number, (tool, arguments, result) in enumerate(calls):
                await investigations.add_tool_call(
                    conn,
                    {
                        "incident_id": incident_id,
                        "investigation_id": run,
                        "round": number,
                        "call_id": f"offline-{number}",
                        "tool": tool,
                        "arguments": json.dumps(arguments),
                        "ok": 1,
                        "result": json.dumps(result),
                        "started_at": now,
                        "duration_s": 0.01,
                    },
                )
            await investigations.finish(conn, run, "done", time.time())
        return diagnosis


def with_evidence(settings: Settings, store: Store, http: httpx.AsyncClient, tasks: BackgroundTasks) -> Services:
    """The real services (console WhatsApp channel through the outbox), with ``EvidenceInvestigator`` behind
    the scheduler."""
    services = build_services(settings, store, http, tasks)
    wake = services.outbox.wake
    scheduler = InvestigationScheduler.from_settings(
        settings, store, EvidenceInvestigator(store), tasks, on_outcome=wake
    )
    return with_scheduler(services, scheduler)


def console_settings(tmp_path: Path, **env: str) -> Settings:
    values = {
        "CONSOLE_USERS": f"ravi:responder:{HASH};vera:viewer:{HASH}",
        "CONSOLE_SESSION_SECRET": SECRET,
        "ONCALL_WHATSAPP_NUMBERS": "whatsapp:+15550100001",
        **env,
    }
    return make_settings(tmp_path, **values)


@dataclass
class Console:
    """The running app, its base URL for clients, and the incident ids seeded by ``alert``."""

    app: FastAPI
    transport: httpx.ASGITransport

    def client(self) -> httpx.AsyncClient:
        """A new browser-like client (its own cookie jar)."""
        return httpx.AsyncClient(transport=self.transport, base_url="http://agent")

    async def alert(self, group_key: str, service: str) -> int:
        """POST an Alertmanager notification (the captured one, regrouped) and wait for its investigation."""
        body = capture(1)["body"]
        body["groupKey"] = group_key
        body["commonLabels"] = {**body["commonLabels"], "service": service}
        body["groupLabels"] = {**body["groupLabels"], "service": service}
        for alert in body["alerts"]:
            alert["labels"] = {**alert["labels"], "service": service}
        async with httpx.AsyncClient(transport=self.transport, base_url="http://agent", headers=API) as client:
            answer = await post_alert(client, webhook_bytes(body))
        await until_idle(self.app.state.services.store)
        return int(answer["incident_id"])


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    app = create_app(console_settings(tmp_path), build=with_evidence)
    async with app.router.lifespan_context(app):
        yield Console(app, httpx.ASGITransport(app=app))


async def login(client: httpx.AsyncClient, username: str = "ravi", password: str = PASSWORD, **extra: str) -> str:
    """Log in through the form; returns the session's CSRF token (read from a page, as a browser would)."""
    form = await client.get("/ui/login")
    token = CSRF_FIELD.search(form.text).group(1)  # type: ignore[union-attr]
    data = {"username": username, "password": password, "csrf_token": token, **extra}
    answer = await client.post("/ui/login", data=data)
    assert answer.status_code == 303, answer.text
    page = await client.get("/ui/incidents")
    return CSRF_FIELD.search(page.text).group(1)  # type: ignore[union-attr]


async def timeline(console: Console, incident_id: int, kind: str) -> list[dict[str, Any]]:
    rows = await sql(
        console.app.state.services.store,
        "SELECT detail FROM timeline WHERE incident_id = :id AND kind = :kind ORDER BY id",
        id=incident_id,
        kind=kind,
    )
    return [json.loads(row["detail"]) for row in rows]


async def test_pages_need_a_login_that_comes_back_to_the_page(console: Console) -> None:
    incident_id = await console.alert("g1", "checkout")
    async with console.client() as client:
        page = await client.get(f"/ui/incidents/{incident_id}")
        assert (page.status_code, page.headers["location"]) == (303, f"/ui/login?next=/ui/incidents/{incident_id}")
        assert (await client.get("/ui/events/incidents")).status_code == 401
        assert (await client.get("/ui/status")).status_code == 303
        form = await client.get(page.headers["location"])
        assert f'name="next" value="/ui/incidents/{incident_id}"' in form.text
        assert (await client.get("/ui")).headers["location"] == "/ui/incidents"
        token = CSRF_FIELD.search(form.text).group(1)  # type: ignore[union-attr]
        data = {"username": "ravi", "password": PASSWORD, "csrf_token": token, "next": f"/ui/incidents/{incident_id}"}
        answer = await client.post("/ui/login", data=data)
        assert (answer.status_code, answer.headers["location"]) == (303, f"/ui/incidents/{incident_id}")
        cookie = next(h for h in answer.headers.get_list("set-cookie") if h.startswith(f"{SESSION_COOKIE}="))
        flags = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")[1:]}
        assert {"httponly", "path", "samesite", "max-age"} <= set(flags) and "secure" not in flags
        assert (flags["path"], flags["samesite"].lower(), flags["max-age"]) == (
            "Path=/ui",
            "samesite=lax",
            "Max-Age=28800",
        )
        assert (await client.get(f"/ui/incidents/{incident_id}")).status_code == 200
        assert (await client.get("/ui/login?next=/ui/status")).headers["location"] == "/ui/status"


async def test_wrong_credentials_and_forged_login_forms_are_refused(console: Console) -> None:
    async with console.client() as client:
        form = await client.get("/ui/login")
        token = CSRF_FIELD.search(form.text).group(1)  # type: ignore[union-attr]
        attempts = {
            "wrong password": {"username": "ravi", "password": "not the password"},
            "unknown user": {"username": "mallory", "password": PASSWORD},
            "empty": {},
        }
        for what, data in attempts.items():
            answer = await client.post("/ui/login", data={**data, "csrf_token": token})
            assert answer.status_code == 401, what
            assert "Wrong user name, password or token." in answer.text and SESSION_COOKIE not in answer.cookies
            token = CSRF_FIELD.search(answer.text).group(1)  # type: ignore[union-attr]  # the new form's token
        forged = await client.post("/ui/login", data={"username": "ravi", "password": PASSWORD, "csrf_token": "x"})
        assert forged.status_code == 403 and "expired" in forged.text
        client.cookies.delete(LOGIN_COOKIE, path="/ui")
        no_cookie = await client.post("/ui/login", data={"username": "ravi", "password": PASSWORD, "csrf_token": token})
        assert no_cookie.status_code == 403
        assert (await client.post("/ui/login", data={"username": "x" * 65})).status_code == 422


async def test_repeated_failures_are_throttled(console: Console) -> None:
    async with console.client() as client:
        for _ in range(MAX_FAILURES):
            form = await client.get("/ui/login")
            token = CSRF_FIELD.search(form.text).group(1)  # type: ignore[union-attr]
            wrong = await client.post("/ui/login", data={"username": "ravi", "password": "guess", "csrf_token": token})
            assert wrong.status_code == 401
        form = await client.get("/ui/login")
        token = CSRF_FIELD.search(form.text).group(1)  # type: ignore[union-attr]
        right = await client.post("/ui/login", data={"username": "ravi", "password": PASSWORD, "csrf_token": token})
        assert right.status_code == 429 and int(right.headers["retry-after"]) > 0
        assert SESSION_COOKIE not in right.cookies


async def test_token_login_gets_the_token_role(tmp_path: Path) -> None:
    app = create_app(console_settings(tmp_path, CONSOLE_TOKEN=TOKEN, CONSOLE_TOKEN_ROLE="viewer"), build=with_evidence)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent") as client,
    ):
        form = await client.get("/ui/login")
        token = CSRF_FIELD.search(form.text).group(1)  # type: ignore[union-attr]
        wrong = await client.post("/ui/login", data={"token": TOKEN + "x", "csrf_token": token})
        assert wrong.status_code == 401
        token = CSRF_FIELD.search(wrong.text).group(1)  # type: ignore[union-attr]
        answer = await client.post("/ui/login", data={"token": TOKEN, "csrf_token": token})
        assert answer.status_code == 303
        page = await client.get("/ui/incidents")
        assert 'class="role role-viewer">viewer<' in page.text and ">token <" in page.text


async def test_a_viewer_reads_but_cannot_act(console: Console) -> None:
    incident_id = await console.alert("g1", "checkout")
    async with console.client() as client:
        csrf = await login(client, "vera")
        page = await client.get(f"/ui/incidents/{incident_id}")
        assert page.status_code == 200 and "You are a viewer" in page.text
        assert "/acknowledge" not in page.text and "/resolve" not in page.text
        for action in ("acknowledge", "resolve", "actions/a1/approve", "actions/a1/reject"):
            answer = await client.post(f"/ui/incidents/{incident_id}/{action}", data={"csrf_token": csrf})
            assert answer.status_code == 403, action
            assert answer.json()["detail"] == "vera is a viewer: only a responder can do this"
    assert await timeline(console, incident_id, "acknowledged") == []
    assert await timeline(console, incident_id, "resolved") == []


async def test_a_responder_acknowledges_and_resolves_into_the_shared_audit_trail(console: Console) -> None:
    incident_id = await console.alert("g1", "checkout")
    async with console.client() as client:
        csrf = await login(client, "ravi")
        ack = await client.post(f"/ui/incidents/{incident_id}/acknowledge", data={"csrf_token": csrf, "note": "on it"})
        assert (ack.status_code, ack.headers["location"]) == (303, f"/ui/incidents/{incident_id}")
        page = await client.get(ack.headers["location"])
        assert f"#{incident_id} TargetDown acknowledged by ravi via console." in page.text
        assert "acknowledged by ravi via console" not in (await client.get(f"/ui/incidents/{incident_id}")).text
        resolve = await client.post(f"/ui/incidents/{incident_id}/resolve", data={"csrf_token": csrf})
        assert resolve.status_code == 303
        page = await client.get(f"/ui/incidents/{incident_id}")
        assert "marked resolved by ravi via console" in page.text and 'id="incident-status">resolved<' in page.text
        assert (await client.post("/ui/incidents/999/acknowledge", data={"csrf_token": csrf})).status_code == 404
        too_long = await client.post(
            f"/ui/incidents/{incident_id}/resolve", data={"csrf_token": csrf, "note": "x" * 501}
        )
        assert too_long.status_code == 422
        assert (await client.post("/ui/incidents/abc/resolve", data={"csrf_token": csrf})).status_code == 422
    assert await timeline(console, incident_id, "acknowledged") == [{"by": "ravi via console", "note": "on it"}]
    assert await timeline(console, incident_id, "resolved") == [
        {"by": "ravi via console", "manual": True, "note": None}
    ]


async def test_forms_without_the_sessions_csrf_token_are_refused(console: Console) -> None:
    incident_id = await console.alert("g1", "checkout")
    async with console.client() as ravi, console.client() as vera:
        csrf = await login(ravi, "ravi")
        other = await login(vera, "vera")
        path = f"/ui/incidents/{incident_id}/acknowledge"
        cases = {
            "missing": ({}, {}),
            "wrong": ({"csrf_token": "forged"}, {}),
            "another session's": ({"csrf_token": other}, {}),
            "cross-site": ({"csrf_token": csrf}, {"Sec-Fetch-Site": "cross-site"}),
        }
        for what, (data, headers) in cases.items():
            answer = await ravi.post(path, data=data, headers=headers)
            assert answer.status_code == 403, what
        assert (await ravi.post("/ui/logout", data={})).status_code == 403
        assert (await ravi.post(path, data={"csrf_token": csrf})).status_code == 303
    assert len(await timeline(console, incident_id, "acknowledged")) == 1


async def test_expired_tampered_and_logged_out_sessions_go_back_to_the_login(console: Console, tmp_path: Path) -> None:
    settings = console_settings(tmp_path)
    old = ConsoleAuth(settings, clock=lambda: time.time() - settings.console_session_ttl_s - 1)
    expired = old.dump(await old.check_password("ravi", PASSWORD))  # type: ignore[arg-type]
    other_key = ConsoleAuth(console_settings(tmp_path, CONSOLE_SESSION_SECRET="o" * 40))
    forged = other_key.dump(Session("ravi", "responder", "password", "0" * 16, "csrf", time.time()))
    for cookie in (expired, forged, "garbage"):
        async with console.client() as client:
            client.cookies.set(SESSION_COOKIE, cookie, domain="agent", path="/ui")
            assert (await client.get("/ui/incidents")).status_code == 303
            assert (await client.get("/ui/events/incidents")).status_code == 401
            assert (await client.post("/ui/logout", data={"csrf_token": "csrf"})).status_code == 303
    async with console.client() as client:
        csrf = await login(client)
        answer = await client.post("/ui/logout", data={"csrf_token": csrf})
        assert (answer.status_code, answer.headers["location"]) == (303, "/ui/login")
        assert SESSION_COOKIE not in client.cookies
        assert (await client.get("/ui/incidents")).status_code == 303


async def test_evidence_links_to_the_tool_call_that_produced_it(console: Console) -> None:
    incident_id = await console.alert("g1", "checkout")
    other_id = await console.alert("g2", "payments")
    async with console.client() as client:
        await login(client)
        page = await client.get(f"/ui/incidents/{incident_id}")
        links = re.findall(r'href="(/ui/incidents/\d+/tool-calls/(\d+))" class="evidence-link"', page.text)
        calls = await sql(
            console.app.state.services.store,
            "SELECT id, tool, arguments FROM tool_calls WHERE incident_id = :id ORDER BY id",
            id=incident_id,
        )
        p99_call = next(row["id"] for row in calls if json.loads(row["arguments"]).get("query") == P99)
        assert links == [(f"/ui/incidents/{incident_id}/tool-calls/{p99_call}", str(p99_call))]
        call_page = await client.get(links[0][0])
        assert call_page.status_code == 200 and 'id="tool-name">query_prometheus<' in call_page.text
        arguments = re.search(r'id="call-arguments"[^>]*>(.*?)</pre>', call_page.text, re.S).group(1)  # type: ignore[union-attr]
        assert "histogram_quantile(0.99" in arguments and "&#34;query&#34;" in arguments
        assert re.search(r'id="call-result"[^>]*>.*2\.4', call_page.text, re.S)
        assert "p99 2.4 s" in call_page.text  # the evidence this call produced
        assert (await client.get(f"/ui/incidents/{other_id}/tool-calls/{p99_call}")).status_code == 404
        assert (await client.get("/ui/incidents/999")).status_code == 404
        assert (await client.get("/ui/incidents/0")).status_code == 422
        assert (await client.get("/ui/events/incidents/999")).status_code == 404


async def test_list_filters_by_status_and_service(console: Console) -> None:
    checkout = await console.alert("g1", "checkout")
    payments = await console.alert("g2", "payments")
    async with console.client() as client:
        csrf = await login(client)
        await client.post(f"/ui/incidents/{payments}/resolve", data={"csrf_token": csrf})

        async def listed(**params: str) -> list[int]:
            page = await client.get("/ui/incidents", params=params)
            assert page.status_code == 200
            return [int(n) for n in re.findall(r'<tr id="incident-(\d+)"', page.text)]

        assert await listed() == [payments, checkout]
        assert await listed(status="firing") == [checkout]
        assert await listed(status="resolved") == [payments]
        assert await listed(service="payments") == [payments]
        assert await listed(status="firing", service="payments") == []
        assert (await client.get("/ui/incidents", params={"status": "open"})).status_code == 422
        assert (await client.get("/ui/incidents", params={"service": "x" * 201})).status_code == 422


async def test_status_and_services_pages(console: Console) -> None:
    await console.alert("g1", "checkout")
    async with console.client() as client:
        await login(client)
        status = await client.get("/ui/status")
        assert status.status_code == 200
        assert "enabled at /ui (2 account(s))" in status.text and "disabled (offline engine)" in status.text
        assert "1 open incident;" in status.text and "0 investigations running, 0 queued" in status.text
        assert "Safety mode" in status.text and "Pending approvals" in status.text  # remediation is enabled
        services = await client.get("/ui/services")
        assert "whatsapp:+1••••••0001" in services.text and "15550100001" not in services.text
        assert 'href="/ui/incidents?service=checkout"' in services.text


async def test_pages_carry_a_strict_policy_and_no_inline_code(console: Console) -> None:
    incident_id = await console.alert("g1", "checkout")
    async with console.client() as client:
        pages = [await client.get("/ui/login")]
        await login(client)
        for path in ("/ui/incidents", f"/ui/incidents/{incident_id}", "/ui/services", "/ui/status"):
            pages.append(await client.get(path))
        for page in pages:
            path = page.url.path
            assert page.status_code == 200, path
            policy = page.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "unsafe" not in policy and "frame-ancestors 'none'" in policy
            assert page.headers["x-content-type-options"] == "nosniff" and page.headers["cache-control"] == "no-store"
            assert re.findall(r"<script(?![^>]*\bsrc=)", page.text) == [], path
            assert re.findall(r"\s(on\w+|style)=", page.text) == [], path
            assert '<html lang="en">' in page.text
        static = await client.get("/ui/static/htmx.min.js")
        assert static.status_code == 200 and "javascript" in static.headers["content-type"]


async def test_no_console_account_means_no_login(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    app = create_app(settings, build=with_evidence)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent") as client,
    ):
        form = await client.get("/ui/login")
        assert "No console account is configured" in form.text
        token = CSRF_FIELD.search(form.text).group(1)  # type: ignore[union-attr]
        answer = await client.post("/ui/login", data={"username": "ravi", "password": PASSWORD, "csrf_token": token})
        assert answer.status_code == 401


class FakeRemediation:
    """Stands in for the remediation service (``Services.remediation``): records decisions."""

    def __init__(self) -> None:
        self.decisions: list[tuple[int, str, bool, str]] = []

    async def decide(self, incident_id: int, action_id: str, approve: bool, by: str) -> dict[str, Any]:
        if action_id == "gone":
            raise LookupError(f"action {action_id} not found")
        if action_id == "done":
            raise ValueError(f"action {action_id} was already decided")
        self.decisions.append((incident_id, action_id, approve, by))
        return {"message": f"Action {action_id} {'approved' if approve else 'rejected'} by {by}."}


async def test_approve_and_reject_go_to_the_remediation_service_when_there_is_one(console: Console) -> None:
    incident_id = await console.alert("g1", "checkout")
    async with console.client() as client:
        csrf = await login(client)
        path = f"/ui/incidents/{incident_id}/actions"
        object.__setattr__(console.app.state.services, "remediation", None)  # an agent without remediation
        absent = await client.post(f"{path}/a1/approve", data={"csrf_token": csrf})
        assert absent.status_code == 404 and absent.json()["detail"] == "remediation is not enabled on this agent"
        remediation = FakeRemediation()
        object.__setattr__(console.app.state.services, "remediation", remediation)  # the extension point
        approved = await client.post(f"{path}/a1/approve", data={"csrf_token": csrf})
        rejected = await client.post(f"{path}/a2/reject", data={"csrf_token": csrf})
        assert (approved.status_code, rejected.status_code) == (303, 303)
        assert "Action a2 rejected by ravi via console." in (await client.get(f"/ui/incidents/{incident_id}")).text
        assert remediation.decisions == [
            (incident_id, "a1", True, "ravi via console"),
            (incident_id, "a2", False, "ravi via console"),
        ]
        assert (await client.post(f"{path}/gone/approve", data={"csrf_token": csrf})).status_code == 404
        assert (await client.post(f"{path}/done/approve", data={"csrf_token": csrf})).status_code == 409
        assert (await client.post(f"{path}/a1/execute", data={"csrf_token": csrf})).status_code == 422
        assert (await client.post(f"{path}/bad%20id/approve", data={"csrf_token": csrf})).status_code == 422
        assert (await client.post(f"{path}/a1/approve", data={})).status_code == 403
