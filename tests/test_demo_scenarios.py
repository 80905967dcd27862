"""``make demo`` scenarios: DEMO_SCENARIO=bad-deploy rolls the bad release out through the process manager's
``POST /deploy`` under constant traffic; an unknown scenario is refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import respx

from stackctl import demo
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
