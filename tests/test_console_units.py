"""The console's parts without HTTP: evidence linked to tool calls, settings of the accounts, the password
tool, the login throttle, session cookies, the live-update stream, and the slots of the incident page."""

from __future__ import annotations

import asyncio
import io
import json
import re
from typing import Any

import argon2
import pytest
from pydantic import ValidationError

from oncall.console import passwords, views
from oncall.console.auth import ConsoleAuth, LoginThrottle, Session
from oncall.console.deps import safe_next
from oncall.console.evidence import link_evidence
from oncall.console.live import LIVE_EXPIRED, LIVE_ON, LIVE_PAUSED, updates
from oncall.console.templating import fragment
from oncall.settings import Settings

CHEAP = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PASSWORD = "correct horse battery"
HASH = CHEAP.hash(PASSWORD)
SECRET = "s" * 40
P99 = 'histogram_quantile(0.99, sum by (replica, le)(rate(http_request_duration_seconds_bucket{job="inventory"}[1m])))'
LOG_LINE = "2026-12-01T20:26:30.920Z ERROR inventory-2 GET /random-endpoint/error 500 AttributeError"


def call(call_id: int, tool: str, arguments: dict[str, Any], result: Any, run: int = 2, ok: bool = True) -> dict:
    """A ``tool_calls`` row as ``incident_detail`` returns it (arguments as JSON text, result decoded)."""
    return {
        "id": call_id,
        "investigation_id": run,
        "tool": tool,
        "ok": ok,
        "arguments": json.dumps(arguments),
        "result": result,
        "error": None if ok else result,
        "round": 1,
        "started_at": 1.0,
        "duration_s": 0.01,
    }


DIAGNOSIS = {"summary": "code bug", "evidence": []}
CALLS = [
    call(1, "query_prometheus", {"query": P99}, {"result": []}, run=1),  # an earlier run: never linked
    call(2, "fetch_logs", {"seconds": 300, "limit": 1000}, {"groups": [{"example": LOG_LINE + " (x.py:1)"}]}),
    call(3, "query_prometheus", {"query": "up"}, {"result": []}),
    call(4, "query_prometheus", {"query": P99}, {"result": []}),
    call(5, "fetch_code_from_github", {"path": "inventory_service.py", "line": 118}, {"code": "..."}),
    call(6, "get_recent_changes", {"since_seconds": 900}, {"changes": []}),
    call(7, "get_recent_changes", {"since_seconds": 60}, "connection refused", ok=False),
    call(8, "send_diagnosis", {"summary": "code bug"}, {"summary": "code bug"}),
]


def evidence(tool: str, query: str) -> dict[str, str]:
    return {"tool": tool, "query": query, "finding": f"finding of {tool}"}


def test_each_evidence_item_links_to_the_call_of_the_run_that_sent_the_diagnosis() -> None:
    items = [
        evidence("query_prometheus", P99),
        evidence("fetch_logs", LOG_LINE),
        evidence("fetch_code_from_github", "inventory_service.py:118"),
        evidence("get_recent_changes", "GET /changes?since=-900s"),
        evidence("compute_error_rate", "sum(rate(x[1m]))"),
    ]
    links = link_evidence(items, CALLS, DIAGNOSIS)
    assert [(link.call_id, link.match) for link in links] == [
        (4, "exact"),  # the PromQL argument, in the diagnosing run (run 2), not call 1 of run 1
        (2, "contains"),  # the log line inside the result's example
        (5, "exact"),  # path:line spelled by the arguments
        (6, "same tool"),  # newest successful call of that tool; the failed call 7 is never linked
        (None, None),  # the tool was never called
    ]
    assert links[0].finding == "finding of query_prometheus" and links[0].tool == "query_prometheus"


def test_without_a_send_diagnosis_call_every_run_is_searched() -> None:
    links = link_evidence([evidence("query_prometheus", P99)], CALLS[:2], {"summary": "other"})
    assert [(link.call_id, link.match) for link in links] == [(1, "exact")]
    assert link_evidence([{"not": "evidence"}, "text"], CALLS, DIAGNOSIS) == []  # type: ignore[list-item]


def test_console_users_are_parsed_and_checked() -> None:
    settings = Settings(_env_file=None, CONSOLE_USERS=f" ravi:responder:{HASH} ;\nvera:viewer:{HASH};")
    assert [(u.name, u.role) for u in settings.console_users] == [("ravi", "responder"), ("vera", "viewer")]
    assert HASH not in repr(settings)
    assert settings.integration_report()["console"] == "enabled at /ui (2 account(s))"
    bad = {
        f"ravi:admin:{HASH}": "role",
        "ravi:viewer:$2b$12$notargon": "not an Argon2 hash",
        f"ravi:viewer:{HASH};ravi:responder:{HASH}": "more than once",
        f"bad name:viewer:{HASH}": "name",
        "ravi:viewer": "entry 1 is not name:role:argon2-hash",
    }
    for value, reason in bad.items():
        with pytest.raises(ValidationError, match=reason) as raised:
            Settings(_env_file=None, CONSOLE_USERS=value)
        assert HASH not in str(raised.value)
    with pytest.raises(ValidationError, match="at least 16"):
        Settings(_env_file=None, CONSOLE_TOKEN="short")
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(_env_file=None, CONSOLE_SESSION_SECRET="short")
    token_only = Settings(_env_file=None, CONSOLE_TOKEN="t" * 20, CONSOLE_TOKEN_ROLE="responder")
    assert token_only.integration_report()["console"] == "enabled at /ui (0 account(s), token login as responder)"
    assert Settings(_env_file=None).integration_report()["console"].startswith("disabled")


def test_password_tool_prints_an_entry_the_settings_accept(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert passwords.main(["ravi", "responder"]) == 0
    entry = capsys.readouterr().out.strip()
    user = Settings(_env_file=None, CONSOLE_USERS=entry).console_users[0]
    assert (user.name, user.role) == ("ravi", "responder")
    assert argon2.PasswordHasher().verify(user.password_hash.get_secret_value(), PASSWORD)
    assert user.password_hash.get_secret_value().startswith("$argon2id$")
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert passwords.main(["ravi", "responder"]) == 2
    assert "at least 12 characters" in capsys.readouterr().err
    with pytest.raises(ValueError, match="name"):
        passwords.user_entry("no spaces allowed", "viewer", PASSWORD)


def test_login_throttle_refuses_after_too_many_failures_until_the_window_passes() -> None:
    now = [1000.0]
    throttle = LoginThrottle(max_failures=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.retry_after("10.0.0.1") == 0
        throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == 61
    assert throttle.retry_after("10.0.0.2") == 0
    now[0] += 30
    assert throttle.retry_after("10.0.0.1") == 31
    now[0] += 31
    assert throttle.retry_after("10.0.0.1") == 0
    throttle.failed("10.0.0.2")
    throttle.succeeded("10.0.0.2")
    assert throttle.retry_after("10.0.0.2") == 0


async def test_session_cookies_expire_and_end_when_the_account_changes() -> None:
    now = [10_000.0]
    settings = Settings(_env_file=None, CONSOLE_USERS=f"ravi:responder:{HASH}", CONSOLE_SESSION_SECRET=SECRET)
    auth = ConsoleAuth(settings, clock=lambda: now[0])
    assert await auth.check_password("ravi", "wrong password") is None
    assert await auth.check_password("nobody", PASSWORD) is None
    session = await auth.check_password("ravi", PASSWORD)
    assert session is not None and session.role == "responder" and session.actor == "ravi via console"
    cookie = auth.dump(auth.with_notice(session, "done"))
    loaded = auth.load(cookie)
    assert loaded is not None and (loaded.user, loaded.csrf, loaded.notice) == ("ravi", session.csrf, "done")
    assert auth.load(cookie[:-2] + ("A" if cookie[-2] != "A" else "B") + cookie[-1]) is None  # tampered
    demoted = Settings(_env_file=None, CONSOLE_USERS=f"ravi:viewer:{HASH}", CONSOLE_SESSION_SECRET=SECRET)
    assert ConsoleAuth(demoted, clock=lambda: now[0]).load(cookie).role == "viewer"  # type: ignore[union-attr]
    rehashed = Settings(
        _env_file=None, CONSOLE_USERS=f"ravi:responder:{CHEAP.hash(PASSWORD)}", **{"CONSOLE_SESSION_SECRET": SECRET}
    )
    assert ConsoleAuth(rehashed, clock=lambda: now[0]).load(cookie) is None  # password changed: session ends
    other_key = Settings(_env_file=None, CONSOLE_USERS=f"ravi:responder:{HASH}", CONSOLE_SESSION_SECRET="o" * 40)
    assert ConsoleAuth(other_key, clock=lambda: now[0]).load(cookie) is None
    now[0] += settings.console_session_ttl_s - 1
    assert auth.load(auth.dump(session)) is not None and auth.expires_in(session) == 1
    now[0] += 2
    assert auth.load(auth.dump(session)) is None  # re-signed now, but issued longer ago than the TTL


def test_next_page_after_login_stays_on_the_console() -> None:
    kept = ["/ui", "/ui/incidents/3", "/ui/incidents?status=firing&service=inventory"]
    assert [safe_next(target) for target in kept] == kept
    refused = ["", "//evil.example/ui", "https://evil.example/ui/x", "/\\evil.example", "/incidents", "/uix", "ui"]
    assert {safe_next(target) for target in refused} == {"/ui/incidents"}


def test_phone_numbers_are_masked() -> None:
    assert views.mask_number("whatsapp:+15550100001") == "whatsapp:+1••••••0001"
    assert views.mask_number("+4915550100002") == "+4••••••••0002"
    assert (views.mask_number("console"), views.mask_number(None), views.mask_number("+12345")) == (
        "console",
        "",
        "+•••••",
    )


async def test_live_stream_sends_a_partial_only_when_it_changes_and_ends_with_the_session() -> None:
    answers: list[Any] = ["<tr>a</tr>", "<tr>a</tr>", RuntimeError("database down"), "<tr>b</tr>", "<tr>b</tr>"]

    async def render() -> str:
        answer = answers.pop(0) if answers else "<tr>b</tr>"
        if isinstance(answer, Exception):
            raise answer
        return answer

    clock = asyncio.get_running_loop().time
    from oncall.console.pages import version

    stream = updates(render, "incidents", version("<tr>a</tr>"), 0.01, clock() + 0.3, clock=clock)
    events = [event async for event in stream]
    assert events == [
        {"event": "live", "data": LIVE_ON},
        {"event": "live", "data": LIVE_PAUSED},
        {"event": "live", "data": LIVE_ON},
        {"event": "incidents", "data": "<tr>b</tr>"},
        {"event": "live", "data": LIVE_EXPIRED},
    ]


def slot_context(detail: dict[str, Any], *, responder: bool, remediation: bool) -> dict[str, Any]:
    session = Session("ravi", "responder" if responder else "viewer", "password", "f", "csrf-1", 0.0)
    return {**views.incident_context(detail, remediation), "session": session, "csrf_token": session.csrf}


def bare_detail(**diagnosis: Any) -> dict[str, Any]:
    base = {"summary": "code bug", "root_cause": "x", "fault_type": "code_bug", "priority": "P2", "confidence": 0.9}
    return {
        "id": 7,
        "title": "InventoryHighErrorRate",
        "status": "firing",
        "created_at": 1.0,
        "investigation_status": "done",
        "diagnosis": {**base, **diagnosis},
        "alerts": [
            {"status": "firing", "alertname": "A", "labels": {}, "annotations": {"runbook_url": "javascript:x"}}
        ],
        "timeline": [],
        "investigations": [],
        "tool_calls": CALLS,
        "messages": [],
        "tickets": [],
    }


def test_slots_stay_empty_without_their_data() -> None:
    html = fragment("_incident_body.html", slot_context(bare_detail(), responder=True, remediation=True))
    for slot in ("slot-hypotheses", "slot-impact", "slot-actions", "slot-postmortem"):
        assert slot not in html
    assert "Runbook" not in html  # a javascript: runbook URL is not linked
    assert 'action="/ui/incidents/7/acknowledge"' in html and 'value="csrf-1"' in html


def full_detail() -> dict[str, Any]:
    """An incident detail whose diagnosis has every optional part of the contract."""
    return bare_detail(
        hypotheses=[
            {
                "fault_type": "code_bug",
                "summary": "null dereference",
                "confidence": 0.8,
                "evidence_for": [evidence("query_prometheus", P99)],
                "evidence_against": [evidence("fetch_logs", LOG_LINE)],
            },
            {"fault_type": "latency", "summary": "slow database", "confidence": 0.1, "explains_alert": False},
            {"fault_type": "not a fault type", "summary": "left out", "confidence": 0.5},
        ],
        impact={"failed_requests": 1234.0, "failed_ratio": 0.37, "duration_s": 125.0, "affected_routes": ["/items"]},
        similar_incidents=[{"incident_id": 3, "title": "InventoryHighErrorRate", "score": 0.9, "action": "rollback"}],
        proposed_actions=[
            {"action": "rollback", "target": "all", "params": {"version": "1.4.0"}, "risk": "medium"},
            {"action": "restart_replica", "target": "inventory-2", "status": "verified", "verification": "ok 0.4%"},
        ],
        postmortem={"summary": "Bad deploy", "url": "https://wiki.example.com/pm/7"},
    )


def test_slots_render_hypotheses_impact_and_similar_incidents_when_present() -> None:
    detail = full_detail()
    html = fragment("_incident_body.html", slot_context(detail, responder=True, remediation=True))
    hypotheses = html[html.index("slot-hypotheses") : html.index("</section>", html.index("slot-hypotheses"))]
    assert hypotheses.index("null dereference") < hypotheses.index("slow database")
    assert "does not explain the alert" in hypotheses and "confidence 80%" in hypotheses
    assert "left out" not in hypotheses  # outside the contract: not shown
    evidence_for, evidence_against = hypotheses.split("Evidence against")
    assert 'href="/ui/incidents/7/tool-calls/4"' in evidence_for.split("Evidence for")[1]
    assert 'href="/ui/incidents/7/tool-calls/2"' in evidence_against
    assert "1,234 (37%)" in html and "2m 05s" in html and "/items" in html
    assert 'href="/ui/incidents/3"' in html and "similarity 90%" in html
    assert {link.call_id for link in views.all_evidence_links(detail)} == {2, 4}


def test_slots_render_proposed_actions_and_the_postmortem_when_present() -> None:
    detail = full_detail()
    html = fragment("_incident_body.html", slot_context(detail, responder=True, remediation=True))
    assert re.findall(r'action="(/ui/incidents/7/actions/[^"]+)"', html) == [
        "/ui/incidents/7/actions/1/approve",
        "/ui/incidents/7/actions/1/reject",
    ]  # action 2 is verified: it waits for nothing
    assert "Approve rollback on all" in html and "version 1.4.0" in html and "ok 0.4%" in html
    assert "https://wiki.example.com/pm/7" in html
    viewer = fragment("_incident_body.html", slot_context(detail, responder=False, remediation=True))
    no_service = fragment("_incident_body.html", slot_context(detail, responder=True, remediation=False))
    for page in (viewer, no_service):
        assert "restart replica" in page and "/actions/1/approve" not in page
    assert "/acknowledge" not in viewer and "/resolve" not in viewer and "You are a viewer" in viewer
    waiting = views.pending_approvals([detail])
    assert [(item["incident"]["id"], item["action"]["ref"]) for item in waiting] == [(7, "1")]


def test_demo_makes_a_responder_login_unless_the_user_has_accounts() -> None:
    from stackctl.demo import DEMO_CONSOLE_USER, demo_console_login

    env, line = demo_console_login(Settings(_env_file=None))
    password = re.search(r"password (\S+),", line).group(1)  # type: ignore[union-attr]
    agent = Settings(_env_file=None, **{k: v for k, v in env.items() if v is not None})
    user = agent.console_users[0]
    assert (user.name, user.role) == (DEMO_CONSOLE_USER, "responder") and len(password) >= 12
    assert argon2.PasswordHasher().verify(user.password_hash.get_secret_value(), password)
    assert agent.console_session_secret is not None and password not in json.dumps(env)
    own, own_line = demo_console_login(Settings(_env_file=None, CONSOLE_USERS=f"ravi:viewer:{HASH}"))
    assert "CONSOLE_USERS" not in own and "your CONSOLE_USERS account" in own_line
