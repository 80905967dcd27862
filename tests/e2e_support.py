"""Helpers for the end-to-end tests: an isolated stack on free ports with the demo alert timing."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import httpx

from stackctl.config import load_timing
from stackctl.processes import find_binary
from stackctl.stack import Stack, free_stack_ports
from tests.support import REPO_ROOT, wait_until

ONCALL_NUMBER = "whatsapp:+15550100001"

needs_prometheus = find_binary("prometheus") is None or find_binary("prometheus-alertmanager", "alertmanager") is None


def attribute_access_line(path: Path, function: str, name: str) -> int:
    """1-based line of the one attribute access ``<name>.<attribute>`` inside ``function`` of the file ``path``.

    Found with ``ast`` (no marker comment in the source). Raises AssertionError unless exactly one
    function has that name and exactly one line of it accesses an attribute of ``name``.
    """
    return _one_line(path, function, ast.Attribute, name, f"accessing {name}.<attribute>")


def subscript_line(path: Path, function: str, name: str) -> int:
    """1-based line of the one subscript ``<name>[...]`` inside ``function`` of the file ``path`` (ast, no marker).

    Raises AssertionError unless exactly one function has that name and exactly one line of it subscripts ``name``.
    """
    return _one_line(path, function, ast.Subscript, name, f"subscripting {name}[...]")


def _one_line(path: Path, function: str, kind: type[ast.Attribute | ast.Subscript], name: str, what: str) -> int:
    """The one line inside ``function`` of ``path`` holding a ``kind`` node on the plain name ``name``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    functions = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == function]
    assert len(functions) == 1, f"expected one function {function!r} in {path}, found {len(functions)}"
    lines = {
        node.lineno
        for node in ast.walk(functions[0])
        if isinstance(node, kind) and isinstance(node.value, ast.Name) and node.value.id == name
    }
    assert len(lines) == 1, f"expected one line {what} in {function}(), found {sorted(lines)}"
    return lines.pop()


def bug_line() -> int:
    """Line of inventory_service.py where ``discounted_price`` dereferences ``promotion``, the row its query
    returns (None for an item without a promotion): the null dereference the diagnosis must name."""
    return attribute_access_line(REPO_ROOT / "inventory_service.py", "discounted_price", "promotion")


def start_stack(run_dir: Path, replicas: int = 2, **agent_env: str) -> Stack:
    """Start an isolated stack (offline engine, console WhatsApp channel) with the demo timing; ``agent_env``
    adds agent settings (e.g. ``ONCALL_FILE``)."""
    stack = Stack(
        run_dir=run_dir,
        ports=free_stack_ports(),
        timing=load_timing(),
        isolated=True,
        agent_env={"ONCALL_WHATSAPP_NUMBERS": ONCALL_NUMBER, "TWILIO_AUTH_TOKEN": "e2e-webhook-token", **agent_env},
    )
    stack.start(replicas=replicas)
    return stack


def start_traffic(stack: Stack, args: list[str], log: Path) -> subprocess.Popen:
    """Run traffic_gen.py against the stack's load balancer (bounded by its --duration)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "traffic_gen.py", "--url", stack.url("lb"), "--quiet", *args],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def inject(stack: Stack, body: dict) -> None:
    """POST /fault to the process manager; raise on a non-2xx answer."""
    httpx.post(f"{stack.url('pm')}/fault", json=body, timeout=15).raise_for_status()


def incident_detail(stack: Stack, incident_id: int) -> dict:
    """GET /incidents/{id} from the agent (with the stack's API token)."""
    return httpx.get(f"{stack.url('agent')}/incidents/{incident_id}", headers=stack.api_headers(), timeout=5).json()


def incident_list(stack: Stack) -> list[dict]:
    """GET /incidents from the agent (with the stack's API token): the summaries, newest first."""
    return httpx.get(f"{stack.url('agent')}/incidents", headers=stack.api_headers(), timeout=5).json()["incidents"]


def wait_for_diagnosis(stack: Stack, incident_id: int, timeout: float = 60) -> dict:
    """Wait until the incident has a diagnosis and return the incident detail."""
    return wait_until(
        lambda: (d := incident_detail(stack, incident_id)).get("diagnosis") and d,
        timeout,
        interval=0.5,
        what=f"diagnosis of incident {incident_id}",
    )


def wait_for_outbound(stack: Stack, incident_id: int, timeout: float = 30) -> str:
    """Wait until the agent has sent the incident's first WhatsApp message (it goes out after the diagnosis is
    stored) and return its body."""

    def first_outbound() -> str | None:
        messages = incident_detail(stack, incident_id)["messages"]
        return next((m["body"] for m in messages if m["direction"] == "out"), None)

    return wait_until(first_outbound, timeout, interval=0.5, what=f"first message of incident {incident_id}")
