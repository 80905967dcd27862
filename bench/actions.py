"""Action scoring for ``make accuracy`` (called from ``bench/accuracy.py``'s ``Bench.run``, in one place).

For each fault scenario: the action the diagnosis should propose first (from the scenario's faults: an
injected fault -> ``clear_fault`` on its target, a crash -> ``restart_replica`` of the crashed replica, a
deploy -> ``rollback`` to the truth's ``rollback_to``; a control -> nothing), whether the first proposed action
is that one, and, when it is, whether executing it recovered the service: the bench approves it as the
on-call engineer (a signed WhatsApp "#N approve 1", exactly as Twilio would post it), then reads the agent's
``GET /status`` until the action finished, and reports the verification's time to recovery (seconds from the
process manager's answer to the first recovered measurement).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from stackctl.processes import wait_until
from stackctl.reply import send_reply

ACTION_TIMEOUT_S = 200.0
WEBHOOK_TOKEN = "accuracy-webhook-token"
"""TWILIO_AUTH_TOKEN of the benchmark's agent (``AGENT_ENV``): the bench signs its approvals with it."""
AGENT_ENV = {
    "TWILIO_AUTH_TOKEN": WEBHOOK_TOKEN,
    "VERIFY_S": "120",
    "VERIFY_POLL_S": "2",
    "REMEDIATION_MAX_PER_HOUR": "100",
}
"""What the benchmark's agent needs for action scoring (merged into its environment by ``bench/accuracy.py``).
A run approves about 25 actions an hour on one service, each for its own injected fault: the default budget of
6 per hour (a guardrail ``tests/test_remediation.py`` covers) refused the seventh, which read as a timeout."""
HEADERS = ("first action", "action ok", "recovered", "s to recovery")


class Runs(Protocol):
    """What scoring needs from ``bench/accuracy.py``'s ``Bench``."""

    stack: Any

    def get(self, component: str, path: str, **params: object) -> dict: ...


def expected_action(scenario: Any, alertname: str | None = None) -> tuple[str, str | None] | None:
    """``(action, target)`` the scenario's faults call for first (target None: any), or None for a control or a
    fault no catalogued action fixes (a code bug). With several faults, ``alertname``'s incident calls for the
    one on the replicas its truth names (``truth.per_alert``), else the first that is not a surge."""
    truth = scenario.truth
    if set(truth.fault_type) <= {"none", "unknown"} or not scenario.faults:
        return None
    faults = [f for f in scenario.faults if f.mode != "surge"] or scenario.faults
    if alertname in truth.per_alert:
        own = set(truth.per_alert[alertname].affected_replicas)
        faults = [f for f in faults if {f.target} == own] or faults
    fault = faults[0]
    if fault.mode == "surge":
        return ("scale", None)  # overload: scale out within bounds
    if fault.mode == "deploy":
        return ("rollback", "all")
    if fault.via == "payments":
        return None  # payments has no control plane: no executable action is right
    if fault.mode == "crash":
        return ("restart_replica", None if fault.target == "all" else fault.target)
    return ("clear_fault", fault.target)


def first_action(detail: dict | None) -> dict | None:
    """The diagnosis' first proposed action, or None."""
    actions = ((detail or {}).get("diagnosis") or {}).get("proposed_actions") or []
    return actions[0] if actions else None


def action_ok(expected: tuple[str, str | None] | None, first: dict | None, rollback_to: str | None) -> bool:
    """True when the first proposed action is the expected one (no action when none is expected)."""
    if expected is None:
        return first is None
    if first is None or first.get("action") != expected[0]:
        return False
    if expected[0] == "rollback":
        return (first.get("params") or {}).get("version") == rollback_to
    return expected[1] is None or first.get("target") == expected[1]


def execute(bench: Runs, incident_id: int, sender: str) -> dict[str, Any]:
    """Approve option 1 of the incident as ``sender`` and wait for the outcome; ``{"status", "after_s"}``."""
    stack = bench.stack
    answer = send_reply(stack.url("agent"), WEBHOOK_TOKEN, sender, f"#{incident_id} approve 1")
    if answer.status_code != 200:
        return {"status": f"approval refused ({answer.status_code})", "after_s": None}

    def finished() -> dict | None:
        actions = bench.get("agent", "/status").get("recent_actions") or []
        mine = [a for a in actions if a["incident_id"] == incident_id]
        return mine[0] if mine and mine[0]["status"] in ("recovered", "not_recovered", "failed") else None

    try:
        done = wait_until(finished, ACTION_TIMEOUT_S, interval=2.0, what="the approved action's outcome")
    except TimeoutError:
        return {"status": "timeout", "after_s": None}
    return {"status": done["status"], "after_s": (done.get("verification") or {}).get("after_s")}


def score_actions(bench: Runs, scenario: Any, alertname: str, detail: dict | None, sender: str) -> dict[str, Any]:
    """The action columns of the row of ``alertname``'s incident: ``first_action``, ``action_ok``, ``recovered``
    (None when nothing was executed), ``seconds_to_recovery``."""
    expected = expected_action(scenario, alertname)
    first = first_action(detail)
    ok = action_ok(expected, first, scenario.truth.rollback_to)
    row: dict[str, Any] = {
        "expected_action": None if expected is None else "/".join(str(p) for p in expected if p),
        "first_action": None if first is None else f"{first['action']} {first.get('target') or ''}".strip(),
        "action_ok": ok,
        "recovered": None,
        "seconds_to_recovery": None,
        "action_status": None,
    }
    if ok and first is not None and detail is not None:
        started = time.time()
        outcome = execute(bench, int(detail["id"]), sender)
        row.update(
            recovered=outcome["status"] == "recovered",
            seconds_to_recovery=outcome["after_s"],
            action_status=outcome["status"],
            seconds_to_outcome=round(time.time() - started, 1),
        )
    return row


def cells(row: dict[str, Any]) -> list[str]:
    """The action cells of one row (``HEADERS``)."""
    recovered = row.get("recovered")
    return [
        str(row.get("first_action") or "-"),
        "✓" if row.get("action_ok") else "✗",
        "-" if recovered is None else ("✓" if recovered else "✗"),
        "-" if row.get("seconds_to_recovery") is None else f"{row['seconds_to_recovery']:.0f}",
    ]
