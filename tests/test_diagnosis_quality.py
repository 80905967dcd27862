"""The quality of a diagnosis (issues 13 and 17), over the mocked demo stack of ``test_investigation``:
each incident explains its own paging alert (its rule's expression and the series breaching it now),
load against its baseline (a surge beyond capacity is ``overload``, one within capacity is no fault,
a fault under a surge stays the fault), replicas that stopped answering scrapes (stale series, client
timeouts, P1), confidence that follows how much evidence agrees, and advice that never takes every
replica of a service out, whichever engine wrote it."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import respx
from hypothesis import given, settings
from hypothesis import strategies as st

from oncall.channels.whatsapp.format import format_diagnosis
from oncall.diagnosis import Diagnosis, Hypothesis, Impact
from oncall.investigate.advice import make_safe, takes_fleet_out, unsafe_action
from oncall.store import incidents
from oncall.store.database import Store
from tests.diagnosis_support import Series, client_view_answers, rule_query
from tests.fake_openai import FakeOpenAI, tool_calls_response
from tests.test_investigation import (
    REPLICAS,
    Stack,
    diagnosis_args,
    make_rig,  # noqa: F401  (fixture)
    scenario_cpu_saturated_scrapes_failing,
    scenario_healthy,
    scenario_injected_errors,
    scenario_latency_and_injected,
)
from tests.test_similar import diagnosis as similar_diagnosis
from tests.test_similar import seed
from tests.test_tools import prom_vector
from tests.test_whatsapp import sample_diagnosis

RUNS = itertools.count(1)


@dataclass
class AlertStack(Stack):
    """The mocked stack plus the paging alert's rule evaluated now (``breaching``: rule expression -> the
    series it returns) and client timeouts at the load balancer (504/s per replica)."""

    breaching: dict[str, Series] = field(default_factory=dict)
    timeouts: dict[str, float] = field(default_factory=dict)
    client_p99: dict[str, float] | None = None

    def prom_answers(self) -> dict[str, list]:
        answers = super().prom_answers()
        per_replica = dict.fromkeys(self.up, self.rps / len(self.up))
        p99 = self.client_p99 if self.client_p99 is not None else self.p99
        answers.update(client_view_answers(per_replica, self.err, p99, self.in_flight, self.timeouts))
        return answers

    def answer(self, request: httpx.Request) -> httpx.Response:
        query = parse_qs(urlparse(str(request.url)).query)["query"][0]
        if query in self.breaching:
            return httpx.Response(200, json=prom_vector(self.breaching[query]))
        return super().answer(request)


def paging(stack: AlertStack, alertname: str, series: Series) -> AlertStack:
    """``stack`` with ``alertname``'s shipped expression returning ``series`` now."""
    stack.breaching[rule_query(alertname)] = series
    return stack


async def alert_incident(store: Store, alertname: str, **labels: str) -> int:
    """Store an incident of one firing inventory alert ``alertname`` (started 90 s ago) with ``labels``."""
    now = time.time()
    all_labels = {"alertname": alertname, "service": "inventory", "job": "inventory", "severity": "warning", **labels}
    started = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now - 90))
    async with store.write() as conn:
        incident_id = await incidents.add_if_absent(
            conn,
            {
                "group_key": f'{{}}:{{alertname="{alertname}", run="{next(RUNS)}"}}',
                "title": alertname,
                "service": "inventory",
                "severity": all_labels["severity"],
                "group_labels": {"alertname": alertname},
                "common_labels": all_labels,
                "common_annotations": {"summary": alertname},
                "created_at": now,
                "updated_at": now,
            },
        )
        assert incident_id is not None
        await incidents.add_alert(
            conn,
            {
                "incident_id": incident_id,
                "fingerprint": f"{abs(hash((alertname, tuple(labels.items())))):016x}"[:16],
                "alertname": alertname,
                "status": "firing",
                "labels": all_labels,
                "annotations": {"summary": alertname},
                "starts_at": started,
                "ends_at": "0001-01-01T00:00:00Z",
                "generator_url": "http://prometheus/graph",
                "first_seen_at": now,
                "last_seen_at": now,
            },
        )
    return incident_id


async def diagnose(rig: Any, stack: AlertStack, alertname: str, **labels: str) -> Diagnosis:
    incident_id = await alert_incident(rig.store, alertname, **labels)
    with respx.mock(assert_all_called=False) as router:
        stack.mock(router)
        diagnosis = await rig.investigate(incident_id)
    assert diagnosis is not None
    return diagnosis


def as_alert_stack(stack: Stack) -> AlertStack:
    return AlertStack(**{k: getattr(stack, k) for k in Stack.__dataclass_fields__})


def assert_fleet_safe(diagnosis: Diagnosis, fleet: list[str]) -> None:
    """No step, fix or proposed action of ``diagnosis`` takes every replica of ``fleet`` out."""
    for text in [diagnosis.suggested_fix, *diagnosis.next_steps]:
        assert not takes_fleet_out(text, fleet), text
    for action in diagnosis.proposed_actions:
        assert not (action.action == "restart_replica" and action.target in (None, "all")), action


# ---------------------------------------------------------------- per-alert focus


async def test_each_alert_of_two_faults_gets_its_own_headline(make_rig) -> None:  # noqa: F811
    """Injected errors on inventory-2 and latency on inventory-3 at once: the latency alert's incident names
    latency on inventory-3 (the errors are a secondary hypothesis that does not explain it), the error alert's
    incident names the injected errors on inventory-2."""
    rig = make_rig()

    def stack() -> AlertStack:
        two = as_alert_stack(scenario_latency_and_injected())
        paging(two, "InventoryHighLatencyP99", [({}, 0.8)])
        return paging(two, "InventoryReplicaHighErrorRate", [({"replica": "inventory-2"}, 0.47)])

    slow = await diagnose(rig, stack(), "InventoryHighLatencyP99")
    assert (slow.fault_type.value, slow.affected_replicas) == ("latency", ["inventory-3"]), slow.model_dump_json()
    head, *others = slow.hypotheses
    assert head.explains_alert and head.fault_type.value == "latency"
    [errors] = [h for h in others if h.fault_type.value == "injected_errors"]
    assert errors.affected_replicas == ["inventory-2"] and not errors.explains_alert and errors.evidence_for
    assert any(
        e.tool == "evaluate_alert_rule" or "InventoryHighLatencyP99" in slow.root_cause for e in head.evidence_for
    )

    failing = await diagnose(rig, stack(), "InventoryReplicaHighErrorRate", replica="inventory-2")
    assert (failing.fault_type.value, failing.affected_replicas) == ("injected_errors", ["inventory-2"])
    assert all(h.fault_type.value != "injected_errors" for h in failing.hypotheses[1:])


async def test_an_alert_that_no_longer_holds_lowers_the_confidence(make_rig) -> None:  # noqa: F811
    """The same injected errors, once with the paging alert's expression breaching now and once with it
    returning nothing: the second diagnosis states less confidence and says why (evidence against)."""
    rig = make_rig()
    holding = paging(
        as_alert_stack(scenario_injected_errors()),
        "InventoryReplicaHighErrorRate",
        [({"replica": "inventory-2"}, 0.47)],
    )
    held = await diagnose(rig, holding, "InventoryReplicaHighErrorRate", replica="inventory-2")
    gone = paging(as_alert_stack(scenario_injected_errors()), "InventoryReplicaHighErrorRate", [])
    cleared = await diagnose(rig, gone, "InventoryReplicaHighErrorRate", replica="inventory-2")
    assert held.fault_type.value == cleared.fault_type.value == "injected_errors"
    assert held.confidence > cleared.confidence
    assert any(e.tool == "evaluate_alert_rule" for e in cleared.hypotheses[0].evidence_against)


# ---------------------------------------------------------------- load (issue 17)


def surge_stack(rps: float, p99: float, in_flight: float) -> AlertStack:
    """Three healthy replicas serving ``rps`` requests/s against a 30 req/s baseline, with p99 ``p99`` s
    everywhere and ``in_flight`` requests queued at the load balancer per replica; CPU per request normal."""
    stack = AlertStack(rps=rps, baseline_rps=30.0, p99=dict.fromkeys(REPLICAS, p99))
    stack.in_flight = dict.fromkeys(REPLICAS, in_flight)
    stack.cpu = dict.fromkeys(REPLICAS, 0.55)
    return paging(stack, "InventoryHighLatencyP99", [({}, p99)] if p99 > 0.5 else [])


async def test_a_surge_beyond_capacity_is_overload_with_the_rates_and_safe_advice(make_rig) -> None:  # noqa: F811
    rig = make_rig()
    diagnosis = await diagnose(rig, surge_stack(300.0, 1.4, 40.0), "InventoryHighLatencyP99")
    assert diagnosis.fault_type.value == "overload", diagnosis.model_dump_json(indent=1)
    assert diagnosis.affected_replicas == REPLICAS
    load = diagnosis.hypotheses[0].load
    assert load is not None
    assert (load.baseline_rps, load.current_rps, load.surge_factor) == (30.0, 300.0, 10.0)
    assert load.headroom is not None and load.headroom < 0  # over capacity
    assert load.suggested_replicas is not None and load.suggested_replicas > len(REPLICAS)
    assert "30 -> 300 req/s" in diagnosis.root_cause
    assert "scale out" in diagnosis.suggested_fix.lower()
    assert_fleet_safe(diagnosis, REPLICAS)
    assert any(e.tool == "get_load" for e in diagnosis.evidence)


async def test_a_surge_queued_on_every_replica_is_overload_though_one_replica_p99_is_just_under(make_rig) -> None:  # noqa: F811
    """Recorded on the live stack (surge-overload, 27 -> 189 req/s): the replicas' own p99 are 0.46, 1.35 and
    0.98 s, so two "stand out", but the load balancer queues about 190 requests on each and its clients see a
    p99 of 2.3-4.3 s on all three: the symptom is spread, the surge is the cause."""
    rig = make_rig()
    stack = surge_stack(189.0, 1.0, 190.0)
    stack.baseline_rps = 27.0
    stack.p99 = {"inventory-1": 0.46, "inventory-2": 1.345, "inventory-3": 0.975}
    stack.client_p99 = {"inventory-1": 2.28, "inventory-2": 4.29, "inventory-3": 2.42}
    diagnosis = await diagnose(rig, stack, "InventoryHighLatencyP99")
    assert (diagnosis.fault_type.value, diagnosis.affected_replicas) == ("overload", REPLICAS), diagnosis.root_cause
    assert all("stands out" not in e.finding for e in diagnosis.hypotheses[0].evidence_against)


async def test_a_surge_within_capacity_names_no_fault(make_rig) -> None:  # noqa: F811
    """4x the baseline served within the objective, and a latency alert arrives anyway: no fault."""
    rig = make_rig()
    diagnosis = await diagnose(rig, surge_stack(120.0, 0.04, 1.0), "InventoryHighLatencyP99")
    assert diagnosis.fault_type.value in ("none", "unknown"), diagnosis.model_dump_json(indent=1)
    assert diagnosis.affected_replicas == [] and diagnosis.priority == "P4"
    assert "Traffic is 4.0x its baseline but served within the objective" in diagnosis.root_cause, diagnosis.root_cause


async def test_a_fault_under_a_surge_stays_the_fault(make_rig) -> None:  # noqa: F811
    """Injected errors concentrated on inventory-2 during a 10x surge: the fault is the headline, the surge
    its context (with the rates for a capacity decision)."""
    rig = make_rig()
    stack = surge_stack(300.0, 1.4, 40.0)
    faulty = scenario_injected_errors()
    stack.err, stack.logs, stack.changes = faulty.err, faulty.logs, faulty.changes
    paging(stack, "InventoryReplicaHighErrorRate", [({"replica": "inventory-2"}, 0.47)])
    diagnosis = await diagnose(rig, stack, "InventoryReplicaHighErrorRate", replica="inventory-2")
    assert (diagnosis.fault_type.value, diagnosis.affected_replicas) == ("injected_errors", ["inventory-2"])
    assert "surge" in diagnosis.root_cause.lower()
    assert diagnosis.hypotheses[0].load is not None and diagnosis.hypotheses[0].load.surge_factor == 10.0


# ---------------------------------------------------------------- replicas that stop answering


async def test_every_replica_unresponsive_is_saturation_at_p1_without_stale_figures(make_rig) -> None:  # noqa: F811
    """Every replica too busy to answer scrapes (up == 0, processes running) while clients time out at the
    load balancer: CPU saturation on every replica, P1, and the CPU figures are marked stale, never current."""
    rig = make_rig()
    stack = as_alert_stack(scenario_cpu_saturated_scrapes_failing())
    stack.timeouts = dict.fromkeys(REPLICAS, 3.0)
    stack.p99 = dict.fromkeys(REPLICAS, 8.0)
    paging(stack, "InventoryReplicaDown", [({"replica": r}, 0.0) for r in REPLICAS])
    diagnosis = await diagnose(rig, stack, "InventoryReplicaDown", severity="critical")
    assert (diagnosis.fault_type.value, diagnosis.affected_replicas) == ("cpu_saturation", REPLICAS)
    assert diagnosis.priority == "P1"
    cpu_quotes = [e.finding for e in diagnosis.evidence if "cores" in e.finding]
    assert cpu_quotes and all("stale" in quote for quote in cpu_quotes), cpu_quotes
    assert any(e.tool == "get_client_view" and "504" in e.finding for e in diagnosis.evidence)


# ---------------------------------------------------------------- calibrated confidence


async def test_confidence_follows_the_evidence_not_the_rule(make_rig) -> None:  # noqa: F811
    """A healthy control whose alert does not hold is more certain than one whose alert still holds; a
    fault seen by the logs, the metrics, the clients and the alert is more certain than the same fault with
    the logs and the clients' view missing."""
    rig = make_rig()
    quiet = paging(as_alert_stack(scenario_healthy()), "InventoryHighLatencyP99", [])
    calm = await diagnose(rig, quiet, "InventoryHighLatencyP99")
    odd = paging(as_alert_stack(scenario_healthy()), "InventoryHighLatencyP99", [({}, 0.6)])
    puzzling = await diagnose(rig, odd, "InventoryHighLatencyP99")
    assert calm.fault_type.value == "none" and puzzling.fault_type.value in ("none", "unknown")
    assert calm.confidence > puzzling.confidence

    full = paging(
        as_alert_stack(scenario_injected_errors()),
        "InventoryReplicaHighErrorRate",
        [({"replica": "inventory-2"}, 0.47)],
    )
    strong = await diagnose(rig, full, "InventoryReplicaHighErrorRate", replica="inventory-2")
    thin = paging(
        as_alert_stack(scenario_injected_errors()),
        "InventoryReplicaHighErrorRate",
        [({"replica": "inventory-2"}, 0.47)],
    )
    thin.logs, thin.changes, thin.err = [], [], {**thin.err, "inventory-2": 0.3}
    weak = await diagnose(rig, thin, "InventoryReplicaHighErrorRate", replica="inventory-2")
    assert strong.fault_type.value == "injected_errors" and strong.confidence > weak.confidence


# ---------------------------------------------------------------- advice that cannot make things worse


async def test_a_model_diagnosis_cannot_take_every_replica_out(make_rig) -> None:  # noqa: F811
    """The model answers with the advice issue 17 observed ("take inventory-1, inventory-2, inventory-3 out of
    the load balancer") and a restart of every replica: the agent rewrites the step and drops the action."""
    with FakeOpenAI() as fake:
        rig = make_rig(OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="sk-test-secret-123", OPENAI_MODEL="gpt-4o")
        unsafe = "Take inventory-1, inventory-2, inventory-3 out of the load balancer if users are affected"
        args = diagnosis_args(
            fault_type="latency",
            affected_replicas=REPLICAS,
            next_steps=[unsafe, "Check the slow dependency"],
            suggested_fix="Restart all replicas. Then watch p99.",
            proposed_actions=[
                {"action": "restart_replica", "target": "all"},
                {"action": "restart_replica", "target": "inventory-2"},
            ],
        )
        fake.add(tool_calls_response([("send_diagnosis", args)]))
        diagnosis = await diagnose(rig, surge_stack(300.0, 1.4, 40.0), "InventoryHighLatencyP99")
    assert diagnosis.engine == "openai:gpt-4o"
    assert_fleet_safe(diagnosis, REPLICAS)
    assert unsafe not in diagnosis.next_steps and "Check the slow dependency" in diagnosis.next_steps
    assert "one replica at a time" in " ".join(diagnosis.next_steps)
    assert [(a.action, a.target) for a in diagnosis.proposed_actions] == [("restart_replica", "inventory-2")]
    assert "Then watch p99." in diagnosis.suggested_fix


@pytest.mark.parametrize(
    ("text", "unsafe"),
    [
        ("Take inventory-1, inventory-2, inventory-3 out of the load balancer", True),
        ("Restart all replicas now", True),
        ("Drain every instance of the service", True),
        ("Stop the whole fleet and redeploy", True),
        ("Restart inventory-2", False),
        ("Restart the replicas one at a time", False),
        ("Never restart every replica at once", False),
        ("Scale out inventory-1, inventory-2, inventory-3 are all saturated", False),
        ("Check p99 on all replicas", False),
    ],
)
def test_advice_that_takes_the_fleet_out_is_recognised(text: str, unsafe: bool) -> None:
    assert takes_fleet_out(text, REPLICAS) is unsafe


# ---------------------------------------------------------------- the page


def test_the_page_shows_what_clients_saw_and_the_other_hypotheses() -> None:
    """The WhatsApp diagnosis quotes the impact (failed requests, share, duration, timeouts, routes, error
    budget) and each secondary hypothesis with its confidence, marking one that does not explain the alert."""
    diagnosis = sample_diagnosis(
        hypotheses=[
            Hypothesis(fault_type="code_bug", summary="AttributeError in apply_discount", confidence=0.87),
            Hypothesis(
                fault_type="latency",
                summary="p99 1.2 s on inventory-3",
                affected_replicas=["inventory-3"],
                confidence=0.52,
                explains_alert=False,
            ),
        ],
        impact=Impact(
            duration_s=190,
            requests=5678,
            failed_requests=1234,
            failed_ratio=0.2173,
            client_timeouts=56,
            affected_routes=["/random-endpoint/error"],
            error_budget_burned=0.004,
        ),
    )
    text = format_diagnosis(diagnosis, {"id": 7, "title": "InventoryHighErrorRate", "common_labels": {}}, "http://h")
    assert "*Clients:* 1,234 of 5,678 requests failed (21.7%) in 3m 10s; 56 timed out" in text
    assert "routes /random-endpoint/error; 0.4% of the SLO error budget" in text
    assert "*Other hypotheses*\n• latency on inventory-3 (52%, not this alert): p99 1.2 s on inventory-3" in text
    assert "AttributeError in apply_discount" not in text.split("*Other hypotheses*")[1]
    assert text.index("*Next steps*") < text.index("*Clients:*")  # the actionable part stays in the first message
    bare = format_diagnosis(sample_diagnosis(), {"id": 8, "title": "x", "common_labels": {}}, "http://h")
    assert "*Clients:*" not in bare and "*Other hypotheses*" not in bare


VERBS = ["Take", "Remove", "Pull", "Stop", "Restart", "Kill", "Drain", "Shut down", "Evict", "Terminate", "Disable"]
FLEET_WORDS = ["all replicas", "every instance", "all the backends", "both replicas", "the whole fleet", "each pod"]


@st.composite
def advice(draw: st.DrawFn) -> tuple[list[str], dict[str, Any]]:
    """A fleet of 1-5 replicas and diagnosis fields whose steps, fix and actions mix advice that takes the whole
    fleet out (every replica named, or a word for all of them) with harmless advice."""
    fleet = [f"svc-{n}" for n in range(1, draw(st.integers(1, 5)) + 1)]
    whole = st.sampled_from([", ".join(fleet), " and ".join(fleet), *FLEET_WORDS])
    unsafe = st.builds(
        lambda v, w, tail: f"{v} {w}{tail}",
        st.sampled_from(VERBS),
        whole,
        st.sampled_from(["", " out of the load balancer", " now"]),
    )
    harmless = st.sampled_from(["Check p99", f"Restart {fleet[0]} if it stays slow", "Scale out", "Roll back to 1.4.0"])
    steps = draw(st.lists(st.one_of(unsafe, harmless), min_size=1, max_size=5))
    actions = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "action": st.sampled_from(["restart_replica", "scale", "clear_fault", "rollback"]),
                    "target": st.sampled_from([None, "all", *fleet]),
                    "params": st.fixed_dictionaries({"replicas": st.integers(-1, 6)}),
                }
            ),
            max_size=3,
        )
    )
    return fleet, {
        "next_steps": steps,
        "suggested_fix": ". ".join(draw(st.lists(st.one_of(unsafe, harmless), max_size=3))),
        "proposed_actions": actions,
    }


@given(advice(), st.booleans())
@settings(max_examples=300, deadline=None)
def test_no_step_fix_or_action_left_takes_every_replica_out(
    case: tuple[list[str], dict[str, Any]], overload: bool
) -> None:
    fleet, fields = case
    before = [s for s in fields["next_steps"] if not takes_fleet_out(s, fleet)]
    safe = make_safe(dict(fields), fleet, overload=overload)
    assert not any(takes_fleet_out(s, fleet) for s in safe["next_steps"])
    assert not takes_fleet_out(safe["suggested_fix"], fleet)
    assert not any(unsafe_action(a, fleet) for a in safe["proposed_actions"])
    assert all(s in safe["next_steps"] for s in before)  # harmless advice is kept
    for action in safe["proposed_actions"]:
        assert action["target"] != "all" or action["action"] != "restart_replica"
        if len(fleet) == 1 and action["action"] == "restart_replica":
            pytest.fail(f"restarting the only replica {fleet[0]} was kept")


# ---------------------------------------------------------------- history and impact


async def test_similar_resolved_incidents_are_evidence_and_listed_with_the_impact(make_rig) -> None:  # noqa: F811
    """A resolved incident with the same alert, replica and fault is evidence for the headline (both engines
    get it from find_similar_incidents) and heads ``similar_incidents``; the impact is the agent's measurement
    of what clients saw since the onset."""
    rig = make_rig()
    past = await seed(
        rig.store,
        "last-week",
        alert="InventoryReplicaHighErrorRate",
        found=similar_diagnosis("injected_errors", replicas=["inventory-2"]),
        replicas=("inventory-2",),
        by="Ravi",
        note="cleared the fault",
    )
    stack = paging(
        as_alert_stack(scenario_injected_errors()),
        "InventoryReplicaHighErrorRate",
        [({"replica": "inventory-2"}, 0.47)],
    )
    diagnosis = await diagnose(rig, stack, "InventoryReplicaHighErrorRate", replica="inventory-2")
    assert diagnosis.fault_type.value == "injected_errors"
    assert diagnosis.similar_incidents and diagnosis.similar_incidents[0].incident_id == past
    assert diagnosis.similar_incidents[0].fault_type is not None
    assert diagnosis.similar_incidents[0].fault_type.value == "injected_errors"
    assert any(e.tool == "find_similar_incidents" for e in diagnosis.hypotheses[0].evidence_for)
    impact = diagnosis.impact
    assert impact is not None and impact.requests and impact.failed_requests is not None
    assert impact.failed_ratio == pytest.approx(impact.failed_requests / impact.requests, abs=1e-3)
    assert impact.affected_replicas == ["inventory-2"] and impact.affected_routes == ["/items/{item_id}"]
