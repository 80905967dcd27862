"""``make demo`` scenarios: DEMO_SCENARIO=bad-deploy rolls the bad release out through the process manager's
``POST /deploy`` under constant traffic; an unknown scenario is refused before anything starts; the demo
pages through the roster and ``make reply`` speaks as the person paged."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import respx

from oncall.settings import Settings
from stackctl import demo, demo_paging
from stackctl.config import StackPorts
from stackctl.stack import Stack


def test_bad_deploy_scenario_deploys_the_regression(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo.time, "sleep", lambda seconds: None)
    stack = Stack(run_dir=tmp_path, ports=StackPorts(pm=17071))
    record = {"from_version": "1.4.0", "to_version": "1.4.1", "replicas": ["inventory-1", "inventory-2"]}
    with respx.mock:
        deploy = respx.post("http://127.0.0.1:17071/deploy").mock(return_value=httpx.Response(200, json=record))
        demo.start_incident(stack, None, "bad-deploy")
    assert deploy.call_count == 1 and deploy.calls.last.request.content == b'{"version":"1.4.1"}'
    command = demo.traffic_command(stack, "bad-deploy", tmp_path / "t.json")
    assert command[command.index("--profile") + 1] == "constant"  # steady traffic, not the buggy endpoint


def test_unknown_scenario_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_SCENARIO", "meteor-strike")
    monkeypatch.delenv("DEMO_FAULT", raising=False)
    assert demo.main() == 2


def test_demo_pages_through_the_roster_and_replies_as_the_person_paged(tmp_path: Path) -> None:
    env = demo.demo_agent_env(Settings(_env_file=None))
    assert env["ONCALL_FILE"] == str(demo.DEMO_ROSTER)
    assert Settings(_env_file=None, ONCALL_FILE=env["ONCALL_FILE"]).roster is not None
    assert "ONCALL_FILE" not in demo.demo_agent_env(Settings(_env_file=None, ONCALL_FILE=str(demo.DEMO_ROSTER)))
    ravi = {"name": "Ravi Kumar", "whatsapp": "whatsapp:+15550100002"}
    detail = {
        "pages": [
            {"episode": 1, "level": 1, "status": "paged", "recipients": [ravi], "reason": "on call for team inventory"},
            {"episode": 1, "level": 2, "status": "cancelled", "recipients": [], "stop_reason": "acknowledged"},
        ]
    }
    assert demo_paging.paged_lines(detail) == [
        "episode 1 level 1: Ravi Kumar (paged whatsapp:+15550100002)",
        "    why: on call for team inventory",
        "episode 1 level 2: - (not paged: acknowledged)",
    ]
    (tmp_path / "reply.json").write_text(json.dumps({"from": "whatsapp:+15550100001", "token": "t"}))
    assert demo_paging.reply_as_paged(tmp_path, detail) == ravi["whatsapp"]
    assert json.loads((tmp_path / "reply.json").read_text()) == {"from": ravi["whatsapp"], "token": "t"}
    assert demo_paging.reply_as_paged(tmp_path, {"pages": []}) is None
