"""The accuracy benchmark's scenarios and grading (``bench/accuracy_scenarios.py``, ``bench/accuracy_report.py``):
every shipped scenario parses, the set covers what issues 13 and 17 ask for, and a diagnosis is graded per
alert with the Brier score and reliability table computed as documented."""

from __future__ import annotations

import sys

import pytest

from tests.support import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))

import accuracy_report as report  # noqa: E402
from accuracy_scenarios import load_scenarios  # noqa: E402
from actions import expected_action  # noqa: E402


@pytest.fixture(scope="module")
def scenarios():
    return {s.id: s for s in load_scenarios(None)}


def test_the_benchmark_covers_at_least_25_scenarios_of_every_kind_asked_for(scenarios) -> None:
    assert len(scenarios) >= 25
    asked = [
        "errors-one-of-three",  # one bad replica of three
        "saturation-all",  # every replica saturated
        "two-faults",  # two simultaneous faults, both alerts graded
        "errors-during-surge",  # a fault during a traffic spike
        "latency-during-surge",
        "fault-cleared",  # cleared just before the investigation
        "slow-dependency",
        "surge-overload",  # issue 17: capacity
        "surge-within-capacity",  # issue 17: no incident, a synthetic alert gets none/unknown
    ]
    assert set(asked) <= set(scenarios)
    assert set(scenarios["two-faults"].alert.each) == {"InventoryHighErrorRate", "InventoryHighLatencyP99"}
    assert scenarios["surge-overload"].truth.fault_type == ["overload"]
    assert scenarios["surge-within-capacity"].truth.control and scenarios["surge-within-capacity"].alert.synthetic
    assert scenarios["saturation-all"].truth.priority == ["P1"]
    assert [s.id for s in scenarios.values() if s.truth.control]  # controls exist and are graded as such
    assert scenarios["null-dereference"].truth.line() is not None  # found by ast, no answer key in the source


def detail(alertname: str, fault_type: str, replicas: list[str], confidence: float) -> dict:
    """An incident detail as ``GET /incidents/{id}`` answers it (the fields grading reads)."""
    return {
        "id": 1,
        "group_labels": {"alertname": alertname},
        "diagnosis": {
            "fault_type": fault_type,
            "affected_replicas": replicas,
            "affected_service": "inventory",
            "confidence": confidence,
            "priority": "P2",
            "summary": "",
        },
        "diagnosed_at": 130.0,
        "investigations": [],
    }


def test_each_alert_of_two_faults_is_graded_against_its_own_truth(scenarios) -> None:
    two = scenarios["two-faults"]
    right = report.score(two, 1, detail("InventoryHighLatencyP99", "latency", ["inventory-2"], 0.8), 100.0)
    wrong = report.score(
        two, 1, detail("InventoryHighLatencyP99", "injected_errors", ["inventory-1", "inventory-2"], 0.88), 100.0
    )
    assert right["correct"] and right["seconds_to_diagnosis"] == 30.0
    assert not wrong["correct"] and not wrong["type_ok"] and not wrong["replicas_ok"]
    control = scenarios["surge-within-capacity"]
    alarm = report.score(control, 1, detail("InventoryHighLatencyP99", "latency", ["inventory-1"], 0.8), 100.0)
    assert alarm["false_alarm"] and not alarm["correct"]
    assert report.missing_row(control, 1, "InventoryHighLatencyP99")["correct"]  # no incident on a control: right


def test_brier_score_and_reliability_table() -> None:
    rows = [
        {"confidence": 0.9, "correct": True},
        {"confidence": 0.9, "correct": False},
        {"confidence": 0.6, "correct": True},
        {"confidence": 0.2, "correct": False},
        {"confidence": None, "correct": True},  # never diagnosed: no stated confidence
    ]
    assert report.brier(rows) == round((0.01 + 0.81 + 0.16 + 0.04) / 4, 4)
    table = {b["bucket"]: b for b in report.reliability(rows)}
    assert table["0.85-1.00"] == {"bucket": "0.85-1.00", "n": 2, "mean_confidence": 0.9, "accuracy": 0.5}
    assert table["0.50-0.70"]["accuracy"] == 1.0 and table["0.00-0.50"]["accuracy"] == 0.0
    assert table["0.70-0.85"]["n"] == 0


def test_each_alert_of_two_faults_expects_the_action_on_its_own_replica(scenarios) -> None:
    """The two-faults incidents are scored on their own fault: clearing inventory-1 fixes the error alert's,
    clearing inventory-2 the latency alert's; a fault on every replica expects clearing all."""
    two = scenarios["two-faults"]
    assert expected_action(two, "InventoryHighErrorRate") == ("clear_fault", "inventory-1")
    assert expected_action(two, "InventoryHighLatencyP99") == ("clear_fault", "inventory-2")
    assert expected_action(scenarios["latency-all"], "InventoryHighLatencyP99") == ("clear_fault", "all")
    assert expected_action(scenarios["surge-overload"], "InventoryHighLatencyP99") == ("scale", None)
    assert expected_action(scenarios["control-no-fault"], "InventoryHighErrorRate") is None
