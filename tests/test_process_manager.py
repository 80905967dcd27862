"""process_manager.py against real inventory replicas on loopback (stack contract, "process_manager.py").

Each test starts the real manager as a process on a free port, with PM_BASE_PORT taken from
free_port_block(10) and every file in tmp_path; the manager starts real inventory_service.py
replicas. The ``procs`` fixture stops the manager (and so its replicas) at the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e_support import bug_line
from tests.support import (
    PYTHON,
    REPO_ROOT,
    ProcessGroup,
    free_port,
    free_port_block,
    port_is_free,
    wait_http_ok,
    wait_until,
)

pytestmark = pytest.mark.slow


@dataclass
class PM:
    """A running process manager: its process, HTTP client, replica base port and files."""

    proc: subprocess.Popen
    client: httpx.Client
    base_port: int
    targets_file: Path
    log_dir: Path

    def scale(self, replicas: int) -> httpx.Response:
        return self.client.post("/scale", json={"replicas": replicas})

    def instances(self) -> dict[str, dict[str, Any]]:
        """GET /instances keyed by replica name."""
        return {i["name"]: i for i in self.client.get("/instances").json()["instances"]}

    def changes(self, **params: Any) -> list[dict[str, Any]]:
        return self.client.get("/changes", params=params).json()["changes"]

    def targets(self) -> list[dict[str, Any]]:
        return json.loads(self.targets_file.read_text())


@pytest.fixture
def pm(procs: ProcessGroup, tmp_path: Path) -> Iterator[PM]:
    """Start process_manager.py with every port free and every file under tmp_path."""
    base_port = free_port_block(10)
    pm_port = free_port()
    while base_port < pm_port <= base_port + 10:
        pm_port = free_port()
    targets_file = tmp_path / "inventory_targets.json"
    log_dir = tmp_path / "logs"
    env = {
        "PM_BASE_PORT": str(base_port),
        "TARGETS_FILE": str(targets_file),
        "INVENTORY_DB": str(tmp_path / "inventory.db"),
        "LOG_DIR": str(log_dir),
        "RANDOM_FAILURE_RATIO": "0",
        "PM_INITIAL_REPLICAS": "0",
    }
    proc = procs.start("pm", [PYTHON, str(REPO_ROOT / "process_manager.py"), "--port", str(pm_port)], env=env)
    url = f"http://127.0.0.1:{pm_port}"
    try:
        wait_http_ok(f"{url}/healthz", timeout=20)
    except TimeoutError:
        pytest.fail(f"process manager did not start:\n{procs.log_text('pm')}")
    with httpx.Client(base_url=url, timeout=30.0, trust_env=False) as client:
        yield PM(proc, client, base_port, targets_file, log_dir)


def pid_gone(pid: int) -> bool:
    """True when ``pid`` no longer exists or is a zombie (exited, not yet reaped by its new parent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def replica_get(port: int, path: str) -> dict[str, Any]:
    response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5.0, trust_env=False)
    response.raise_for_status()
    return response.json()


def item_status(port: int, item_id: int) -> int:
    """Status code of GET /items/{item_id} straight from the replica on ``port``."""
    return httpx.get(f"http://127.0.0.1:{port}/items/{item_id}", timeout=5.0, trust_env=False).status_code


def pick(record: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The ``keys`` of ``record`` (to compare several fields in one assertion)."""
    return {key: record[key] for key in keys}


def durable_changes(pm: PM) -> list[dict[str, Any]]:
    """The changes file, oldest first."""
    return [json.loads(line) for line in (pm.log_dir / "process_manager_changes.log").read_text().splitlines()]


def assert_serving(pm: PM, *indices: int) -> None:
    """GET /backends and the file-SD targets list exactly the replicas ``inventory-<index>``, in order."""
    assert pm.client.get("/backends").json()["backends"] == [f"http://127.0.0.1:{pm.base_port + i}" for i in indices]
    assert pm.targets() == [
        {"targets": [f"127.0.0.1:{pm.base_port + i}"], "labels": {"replica": f"inventory-{i}"}} for i in indices
    ]


def assert_changes_log(pm: PM) -> None:
    """GET /changes is newest first, timestamped, filterable (limit, since) and equal to the durable file."""
    changes = pm.changes()
    assert all(c["timestamp"] and c["ts"] > 0 for c in changes)
    assert [c["ts"] for c in changes] == sorted((c["ts"] for c in changes), reverse=True)
    assert (len(pm.changes(limit=2)), pm.changes(since=changes[0]["ts"])) == (2, [])
    assert durable_changes(pm) == list(reversed(changes))


def test_scale_up_down_updates_instances_backends_targets_and_changes(pm: PM) -> None:
    assert pm.targets() == []

    response = pm.scale(2)
    assert (response.status_code, response.json()["replicas"]) == (200, 2), response.text
    instances = pm.instances()
    assert {name: (i["state"], i["port"], i["restarts"], i["fault"]["mode"]) for name, i in instances.items()} == {
        "inventory-1": ("running", pm.base_port + 1, 0, "none"),
        "inventory-2": ("running", pm.base_port + 2, 0, "none"),
    }
    health = {name: pick(replica_get(i["port"], "/healthz"), "replica", "pid") for name, i in instances.items()}
    assert health == {name: {"replica": name, "pid": i["pid"]} for name, i in instances.items()}
    assert_serving(pm, 1, 2)
    assert (pm.log_dir / "inventory-2.log").exists()
    metrics = pm.client.get("/metrics").text
    assert "pm_replicas_desired 2.0" in metrics and "pm_replicas_running 2.0" in metrics

    pid2 = instances["inventory-2"]["pid"]
    assert pm.scale(1).status_code == 200
    instances = pm.instances()
    assert {name: i["state"] for name, i in instances.items()} == {"inventory-1": "running", "inventory-2": "stopped"}
    assert instances["inventory-2"]["pid"] is None and pid_gone(pid2) and port_is_free(pm.base_port + 2)
    assert_serving(pm, 1)

    pid1 = instances["inventory-1"]["pid"]
    assert pm.scale(0).status_code == 200
    assert pid_gone(pid1) and port_is_free(pm.base_port + 1)
    assert_serving(pm)

    changes = pm.changes()
    assert [c["detail"] for c in changes if c["kind"] == "scale"] == [
        {"from": 1, "to": 0},
        {"from": 2, "to": 1},
        {"from": 0, "to": 2},
    ]
    assert {kind: sorted(c["replica"] for c in changes if c["kind"] == kind) for kind in ("start", "stop")} == {
        "start": ["inventory-1", "inventory-2"],
        "stop": ["inventory-1", "inventory-2"],
    }
    assert_changes_log(pm)


def test_scale_and_changes_reject_invalid_input(pm: PM) -> None:
    for body in ({"replicas": 11}, {"replicas": -1}, {"replicas": "2"}, {}, {"replicas": 1, "extra": 1}):
        assert pm.client.post("/scale", json=body).status_code == 422, body
    for body in ({"replicas": 0}, {"replicas": 11}, {}):
        assert pm.client.post("/start", json=body).status_code == 422, body
    assert pm.client.get("/changes", params={"limit": 0}).status_code == 422
    assert pm.client.get("/changes", params={"since": "yesterday"}).status_code == 422
    for body in ({"version": "9.9.9"}, {"version": "1.4"}, {}, {"version": "1.4.1", "colour": "red"}):
        assert pm.client.post("/deploy", json=body).status_code == 422, body
    assert "'1.3.2', '1.4.0' or '1.4.1'" in json.dumps(pm.client.post("/deploy", json={"version": "9.9.9"}).json())
    assert pm.client.get("/deploys").json()["deploys"] == []
    assert pm.instances() == {}


def test_start_and_stop_remember_the_desired_count(pm: PM) -> None:
    assert pm.client.post("/start", json={"replicas": 2}).status_code == 200
    pids = [i["pid"] for i in pm.instances().values()]
    assert len(pids) == 2

    response = pm.client.post("/stop")
    assert response.status_code == 200 and response.json()["remembered"] == 2
    assert all(i["state"] == "stopped" for i in pm.instances().values())
    assert all(pid_gone(pid) for pid in pids)
    assert pm.targets() == []

    response = pm.client.post("/start")
    assert response.status_code == 200 and response.json()["replicas"] == 2
    assert [i["state"] for i in pm.instances().values()] == ["running", "running"]
    assert len(pm.targets()) == 2


def replica_faults(pm: PM) -> dict[str, dict[str, Any]]:
    """Each replica's own GET /faults without its timestamp, keyed by name."""
    return {
        name: {k: v for k, v in replica_get(i["port"], "/faults").items() if k != "since"}
        for name, i in pm.instances().items()
    }


INVALID_FAULTS = (
    {"mode": "latency", "latency_ms": 0},
    {"mode": "latency", "p_error": 0.5},
    {"mode": "errors", "p_error": 1.5},
    {"mode": "meltdown"},
    {"mode": "none", "colour": "red"},
    {"mode": "none", "replica": "db-1"},
)


def test_fault_fans_out_to_all_or_one_replica(pm: PM) -> None:
    assert pm.scale(2).status_code == 200

    response = pm.client.post("/fault", json={"mode": "latency", "latency_ms": 50})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert sorted((r["replica"], r["ok"], r["status"], r["fault"]["mode"]) for r in results) == [
        ("inventory-1", True, 200, "latency"),
        ("inventory-2", True, 200, "latency"),
    ]
    latency = {"mode": "latency", "latency_ms": 50}
    assert replica_faults(pm) == {name: {**latency, "replica": name} for name in ("inventory-1", "inventory-2")}

    response = pm.client.post("/fault", json={"mode": "errors", "p_error": 0.3, "replica": "inventory-2"})
    assert response.status_code == 200, response.text
    assert [r["replica"] for r in response.json()["results"]] == ["inventory-2"]
    assert replica_faults(pm) == {
        "inventory-1": {**latency, "replica": "inventory-1"},
        "inventory-2": {"mode": "errors", "p_error": 0.3, "replica": "inventory-2"},
    }
    assert {name: i["fault"]["mode"] for name, i in pm.instances().items()} == {
        "inventory-1": "latency",
        "inventory-2": "errors",
    }
    fault_changes = [(c["replica"], c["detail"]["mode"]) for c in pm.changes() if c["kind"] == "fault"]
    assert len(fault_changes) == 3 and fault_changes[0] == ("inventory-2", "errors")

    assert pm.client.post("/fault", json={"mode": "none", "replica": "inventory-7"}).status_code == 404
    assert [pm.client.post("/fault", json=body).status_code for body in INVALID_FAULTS] == [422] * len(INVALID_FAULTS)
    assert replica_get(pm.base_port + 1, "/faults")["mode"] == "latency"


def test_crash_is_recorded_and_the_replica_restarted(pm: PM) -> None:
    assert pm.scale(1).status_code == 200
    old_pid = pm.instances()["inventory-1"]["pid"]

    response = pm.client.post("/fault", json={"mode": "crash", "replica": "inventory-1"})
    assert response.status_code == 200 and response.json()["results"][0]["ok"]

    crash = wait_until(lambda: [c for c in pm.changes() if c["kind"] == "crash"], timeout=10, what="crash change")[0]
    assert (crash["replica"], crash["detail"]["exit_code"], crash["detail"]["pid"]) == ("inventory-1", 3, old_pid)
    assert [t["labels"]["replica"] for t in pm.targets()] == ["inventory-1"]

    def restarted() -> dict[str, Any] | None:
        inst = pm.instances()["inventory-1"]
        return inst if inst["state"] == "running" and inst["restarts"] == 1 else None

    inst = wait_until(restarted, timeout=15, what="inventory-1 restarted")
    assert inst["pid"] != old_pid and inst["fault"]["mode"] == "none" and pid_gone(old_pid)
    health = replica_get(pm.base_port + 1, "/healthz")
    assert (health["pid"], health["fault"]["mode"]) == (inst["pid"], "none")
    assert_serving(pm, 1)
    restart = next(c for c in pm.changes() if c["kind"] == "restart")
    assert restart["replica"] == "inventory-1" and restart["detail"]["ok"] and restart["ts"] > crash["ts"]
    metrics = pm.client.get("/metrics").text
    assert 'pm_replica_crashes_total{replica="inventory-1"} 1.0' in metrics
    assert 'pm_replica_restarts_total{replica="inventory-1"} 1.0' in metrics


def test_busy_port_is_reported_not_retried_silently(pm: PM) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", pm.base_port + 1))
        squatter.listen()
        response = pm.scale(1)
        assert response.status_code == 503
        errors = response.json()["errors"]
        assert errors[0]["replica"] == "inventory-1" and "already in use" in errors[0]["error"]
        inst = pm.instances()["inventory-1"]
        assert inst["state"] == "stopped" and inst["pid"] is None and "already in use" in inst["last_error"]
        start = next(c for c in pm.changes() if c["kind"] == "start")
        assert start["replica"] == "inventory-1" and start["detail"]["ok"] is False
    assert pm.scale(1).status_code == 200
    assert pm.instances()["inventory-1"]["state"] == "running"


def test_sigterm_stops_every_child_and_frees_ports(pm: PM) -> None:
    assert pm.scale(3).status_code == 200
    pids = [i["pid"] for i in pm.instances().values()]
    assert len(pids) == 3 and all(not pid_gone(pid) for pid in pids)

    pm.proc.send_signal(signal.SIGTERM)
    assert pm.proc.wait(timeout=15) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a graceful shutdown
    assert all(pid_gone(pid) for pid in pids)
    stopped = {
        c["detail"]["pid"]
        for c in durable_changes(pm)
        if c["kind"] == "stop" and c["detail"]["reason"] == "process manager shutdown"
    }
    assert stopped == set(pids)
    assert all(port_is_free(pm.base_port + n) for n in (1, 2, 3))
    assert pm.targets() == []


def test_children_die_when_the_manager_is_killed(pm: PM) -> None:
    assert pm.scale(1).status_code == 200
    pid = pm.instances()["inventory-1"]["pid"]

    pm.proc.send_signal(signal.SIGKILL)
    pm.proc.wait(timeout=5)
    wait_until(lambda: pid_gone(pid), timeout=10, what=f"replica pid {pid} to exit after PR_SET_PDEATHSIG")
    wait_until(lambda: port_is_free(pm.base_port + 1), timeout=5, what="replica port freed")


def deploy(pm: PM, version: str) -> dict[str, Any]:
    """POST /deploy ``version`` (waiting for it); assert it succeeded; return the record."""
    response = pm.client.post("/deploy", json={"version": version})
    assert response.status_code == 200 and response.json()["status"] == "succeeded", response.text
    assert response.json()["started_at"] <= response.json()["finished_at"]
    return response.json()


def versions(pm: PM) -> tuple[str, str | None]:
    """(current_version, previous_version) from GET /deploys."""
    history = pm.client.get("/deploys").json()
    return history["current_version"], history["previous_version"]


def assert_replaced_onto(pm: PM, before: dict[str, dict[str, Any]], version: str) -> None:
    """Every replica of ``before`` runs a new process on ``version``, not counted as a crash restart."""
    after = pm.instances()
    assert {name: (after[name]["state"], after[name]["version"], after[name]["restarts"]) for name in before} == {
        name: ("running", version, 0) for name in before
    }
    assert all(after[name]["pid"] != i["pid"] and pid_gone(i["pid"]) for name, i in before.items())
    build_info = f'inventory_build_info{{service="inventory",version="{version}"}} 1.0'
    for name, i in after.items():
        assert replica_get(i["port"], "/version") == {"service": "inventory", "version": version, "replica": name}
        assert build_info in httpx.get(f"http://127.0.0.1:{i['port']}/metrics", timeout=5.0).text


def assert_regression_logged(pm: PM, replicas: set[str]) -> None:
    """The shared error log holds the 1.4.1 AttributeError of GET /items/{item_id} at bug_line(), from ``replicas``."""
    entries = replica_get(pm.base_port + 1, "/logs/tail?seconds=120")["entries"]
    regression = [e for e in entries if e["route"] == "/items/{item_id}"]
    assert {e["replica"] for e in regression} == replicas
    assert {
        (e["exception_type"], e["message"], e["file"], e["line"], e["function"], e["version"]) for e in regression
    } == {
        (
            "AttributeError",
            "'NoneType' object has no attribute 'percent_off'",
            "inventory_service.py",
            bug_line(),
            "discounted_price",
            "1.4.1",
        )
    }


def assert_rolled_one_at_a_time(pm: PM, deploy_id: int, from_version: str, to_version: str) -> None:
    """One "deploy" change per replica, in order, and each replica replaced only after the previous was healthy."""
    changes = sorted((c for c in pm.changes() if c["kind"] == "deploy"), key=lambda c: c["ts"])
    changes = [c for c in changes if c["detail"]["deploy_id"] == deploy_id]
    expected = {"from_version": from_version, "to_version": to_version, "deploy_id": deploy_id}
    assert [(c["replica"], pick(c["detail"], *expected)) for c in changes] == [
        (name, expected) for name in sorted(pm.instances())
    ]
    started = [pm.instances()[c["replica"]]["started_at"] for c in changes]
    assert all(later > earlier["ts"] for earlier, later in zip(changes, started[1:], strict=False))


def test_deploy_rolls_replicas_one_at_a_time_and_rollback_heals_the_regression(pm: PM) -> None:
    assert pm.scale(2).status_code == 200
    assert pm.client.get("/deploys").json() == {
        "current_version": "1.4.0",
        "previous_version": None,
        "versions": ["1.3.2", "1.4.0", "1.4.1"],
        "deploys": [],
    }
    before = pm.instances()
    assert {i["version"] for i in before.values()} == {"1.4.0"}
    list_price = replica_get(pm.base_port + 1, "/items/42")["price"]  # item 42 has a 25 % promotion
    assert [item_status(pm.base_port + n, 1) for n in (1, 2)] == [200, 200]

    record = deploy(pm, "1.4.1")
    assert pick(record, "id", "from_version", "to_version", "replicas", "error") == {
        "id": 1,
        "from_version": "1.4.0",
        "to_version": "1.4.1",
        "replicas": ["inventory-1", "inventory-2"],
        "error": None,
    }
    assert_replaced_onto(pm, before, "1.4.1")
    assert_rolled_one_at_a_time(pm, 1, "1.4.0", "1.4.1")
    assert_serving(pm, 1, 2)

    # 1.4.1 regression: GET /items/{id} for an item without a promotion is a null dereference.
    assert [item_status(pm.base_port + n, 1) for n in (1, 2)] == [500, 500]
    assert replica_get(pm.base_port + 1, "/items/42")["price"] == round(list_price * 0.75, 2)
    assert_regression_logged(pm, {"inventory-1", "inventory-2"})

    # Replicas started later run the current version.
    assert pm.scale(3).status_code == 200
    assert pm.instances()["inventory-3"]["version"] == "1.4.1"
    assert versions(pm) == ("1.4.1", "1.4.0")

    # Rollback: deploy the previous version.
    before = pm.instances()
    assert deploy(pm, "1.4.0")["replicas"] == ["inventory-1", "inventory-2", "inventory-3"]
    assert_replaced_onto(pm, before, "1.4.0")
    assert_rolled_one_at_a_time(pm, 2, "1.4.1", "1.4.0")
    assert [item_status(pm.base_port + n, 1) for n in (1, 2, 3)] == [200, 200, 200]
    assert versions(pm) == ("1.4.0", "1.4.1")
    assert [pick(d, "id", "to_version", "status") for d in pm.client.get("/deploys").json()["deploys"]] == [
        {"id": 2, "to_version": "1.4.0", "status": "succeeded"},
        {"id": 1, "to_version": "1.4.1", "status": "succeeded"},
    ]


def test_restart_of_one_replica_recorded_as_requested(pm: PM) -> None:
    assert pm.scale(2).status_code == 200
    before = pm.instances()

    response = pm.client.post("/instances/inventory-2/restart")
    assert response.status_code == 200, response.text
    restarted = response.json()
    assert pick(restarted, "name", "state", "version", "restarts") == {
        "name": "inventory-2",
        "state": "running",
        "version": "1.4.0",
        "restarts": 0,
    }
    assert restarted["pid"] != before["inventory-2"]["pid"] and pid_gone(before["inventory-2"]["pid"])
    assert replica_get(pm.base_port + 2, "/healthz")["pid"] == restarted["pid"]
    assert pm.instances()["inventory-1"]["pid"] == before["inventory-1"]["pid"]
    change = next(c for c in pm.changes() if c["kind"] == "restart")
    assert (change["replica"], pick(change["detail"], "reason", "ok", "pid", "old_pid")) == (
        "inventory-2",
        {"reason": "requested", "ok": True, "pid": restarted["pid"], "old_pid": before["inventory-2"]["pid"]},
    )
    assert 'pm_replica_restarts_total{replica="inventory-2"} 0.0' in pm.client.get("/metrics").text

    missing = [pm.client.post(f"/instances/{name}/restart") for name in ("inventory-3", "inventory-7", "db-1")]
    assert [(r.status_code, "unknown replica" in r.json()["detail"]) for r in missing] == [(404, True)] * 3


CONFLICTING = (
    ("POST", "/instances/inventory-1/restart", None),
    ("POST", "/deploy", {"version": "1.4.0"}),
    ("POST", "/scale", {"replicas": 3}),
    ("POST", "/start", None),
    ("POST", "/stop", None),
)


def test_operations_exclude_each_other_and_later_replicas_run_the_deployed_version(pm: PM) -> None:
    assert pm.scale(2).status_code == 200
    assert pm.client.get("/instances").json()["operation"] is None
    started = pm.client.post("/deploy", json={"version": "1.4.1", "wait": False})
    assert (started.status_code, started.json()["status"]) == (202, "running")
    operation = pm.client.get("/instances").json()["operation"]
    assert pick(operation, "kind", "deploy_id", "from_version", "to_version") == {
        "kind": "deploy",
        "deploy_id": started.json()["id"],
        "from_version": "1.4.0",
        "to_version": "1.4.1",
    }
    conflicts = [pm.client.request(method, path, json=body) for method, path, body in CONFLICTING]
    assert [(c.status_code, c.json()["operation"]["kind"]) for c in conflicts] == [(409, "deploy")] * len(CONFLICTING)

    def finished() -> dict[str, Any] | None:
        latest = pm.client.get("/deploys").json()["deploys"][0]
        return latest if latest["status"] != "running" else None

    assert wait_until(finished, timeout=40, what="background deploy finished")["status"] == "succeeded"
    assert pm.client.get("/instances").json()["operation"] is None
    assert len([c for c in pm.changes() if c["kind"] == "deploy"]) == 2

    # A crash restart by the supervisor starts the replica on the current version.
    assert pm.client.post("/fault", json={"mode": "crash", "replica": "inventory-1"}).status_code == 200

    def back() -> dict[str, Any] | None:
        inst = pm.instances()["inventory-1"]
        return inst if inst["state"] == "running" and inst["restarts"] == 1 else None

    assert wait_until(back, timeout=15, what="inventory-1 restarted")["version"] == "1.4.1"
    assert item_status(pm.base_port + 1, 1) == 500


def test_sigterm_during_a_deploy_stops_every_child(pm: PM) -> None:
    assert pm.scale(2).status_code == 200
    pids = [i["pid"] for i in pm.instances().values()]
    assert pm.client.post("/deploy", json={"version": "1.3.2", "wait": False}).status_code == 202
    pm.proc.send_signal(signal.SIGTERM)
    assert pm.proc.wait(timeout=20) in (0, -signal.SIGTERM)
    assert all(pid_gone(pid) for pid in pids)
    assert all(port_is_free(pm.base_port + n) for n in (1, 2))
    assert pm.targets() == []


def break_database(tmp_path: Path) -> Callable[[], None]:
    """Put a directory where the inventory database was (a new replica cannot start); return the undo."""
    db, parked = tmp_path / "inventory.db", tmp_path / "parked"
    parked.mkdir()
    for path in tmp_path.glob("inventory.db*"):
        path.rename(parked / path.name)
    db.mkdir()

    def restore() -> None:
        db.rmdir()
        for path in parked.iterdir():
            path.rename(tmp_path / path.name)

    return restore


def test_failed_deploy_and_restart_leave_the_replica_to_the_supervisor(pm: PM, tmp_path: Path) -> None:
    assert pm.scale(1).status_code == 200
    restore = break_database(tmp_path)

    response = pm.client.post("/deploy", json={"version": "1.4.1"})
    assert response.status_code == 503, response.text
    record = response.json()
    assert (record["status"], record["replicas"]) == ("failed", []) and "exited with code" in record["error"]
    change = next(c for c in pm.changes() if c["kind"] == "deploy")
    assert (change["replica"], change["detail"]["ok"]) == ("inventory-1", False)
    assert pm.instances()["inventory-1"]["state"] in ("crashed", "restarting")
    # Like a stuck rollout, the deploy's version stays the one new replicas start on.
    assert versions(pm) == ("1.4.1", "1.4.0")

    wait_until(lambda: pm.instances()["inventory-1"]["state"] == "crashed", timeout=15, what="retry between tries")
    failed = pm.client.post("/instances/inventory-1/restart")
    assert failed.status_code == 503, failed.text
    assert "exited with code" in failed.json()["error"] and failed.json()["instance"]["name"] == "inventory-1"
    assert next(c for c in pm.changes() if c["kind"] == "restart" and "reason" in c["detail"])["detail"]["ok"] is False

    restore()

    def recovered() -> dict[str, Any] | None:
        inst = pm.instances()["inventory-1"]
        return inst if inst["state"] == "running" else None

    assert wait_until(recovered, timeout=40, what="supervisor brings inventory-1 back")["version"] == "1.4.1"
