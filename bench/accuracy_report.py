"""Grading and reporting of the accuracy benchmark: one row per graded incident, then per-scenario pass
rates, time to diagnosis and calibration (Brier score and a reliability table per confidence bucket).

Calibration: each graded diagnosis states a confidence ``p`` (0-1) that its headline is right; the
outcome ``o`` is 1 when the row is correct (fault type, exact replicas, file:line and priority where the
truth names them), else 0. The Brier score is the mean of ``(p - o)^2`` (0 is perfect; always saying
0.5 scores 0.25). The reliability table groups rows by stated confidence and compares the mean stated
confidence with the share that was right: a calibrated engine's two columns agree.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from accuracy_scenarios import NO_CAUSE, Scenario

BUCKETS = ((0.0, 0.5), (0.5, 0.7), (0.7, 0.85), (0.85, 1.0001))
"""Confidence buckets of the reliability table, [low, high)."""


def deploy_named(scenario: Scenario, diagnosis: dict[str, Any]) -> bool:
    """For a bad-deploy truth: the diagnosis names the deployed version and suggests the rollback; and
    it names the scenario's service. True when the truth names no deploy and the service matches."""
    truth = scenario.truth
    if truth.service != diagnosis.get("affected_service") and not set(truth.fault_type) <= NO_CAUSE:
        return False
    if truth.version is None:
        return True
    rollback = any(
        a.get("action") == "rollback" and (a.get("params") or {}).get("version") == truth.rollback_to
        for a in diagnosis.get("proposed_actions") or []
    )
    return truth.version in diagnosis.get("summary", "") and rollback


def alertname_of(detail: dict[str, Any]) -> str | None:
    """The alert name of an incident detail (its group label, else its first alert's)."""
    labels = detail.get("group_labels") or {}
    if labels.get("alertname"):
        return str(labels["alertname"])
    alerts = detail.get("alerts") or []
    return str(alerts[0].get("alertname")) if alerts else None


def missing_row(scenario: Scenario, round_no: int, alertname: str | None) -> dict[str, Any]:
    """The row of an incident that was never diagnosed (correct only on a control: no false alarm)."""
    expected = scenario.truth.for_alert(alertname)
    control = scenario.truth.control
    return {
        "id": scenario.id,
        "round": round_no,
        "alertname": alertname,
        "expected": "/".join(expected.fault_type),
        "expected_replicas": expected.affected_replicas,
        "got": None,
        "replicas": None,
        "engine": None,
        "confidence": None,
        "priority": None,
        "type_ok": control,
        "replicas_ok": control,
        "line_ok": None,
        "priority_ok": None,
        "false_alarm": False,
        "seconds_to_diagnosis": None,
        "tokens": None,
        "incident_id": None,
        "correct": control,
    }


def score(scenario: Scenario, round_no: int, detail: dict[str, Any], injected_at: float) -> dict[str, Any]:
    """Grade one incident's diagnosis against the scenario's truth for its alert.

    ``correct`` needs the fault type in the accepted set, the exact replica set, file:line for code bugs
    and, where the truth lists priorities, one of them.
    """
    truth, alertname = scenario.truth, alertname_of(detail)
    expected = truth.for_alert(alertname)
    diagnosis = detail["diagnosis"]
    tokens = sum(
        (i.get("prompt_tokens") or 0) + (i.get("completion_tokens") or 0) for i in detail.get("investigations", [])
    )
    line = truth.line()
    line_ok = None
    if line is not None:
        line_ok = (diagnosis.get("affected_file"), diagnosis.get("affected_line")) == (truth.affected_file, line)
    priority_ok = diagnosis.get("priority") in truth.priority if truth.priority else None
    replicas = sorted(diagnosis.get("affected_replicas", []))
    row = {
        "id": scenario.id,
        "round": round_no,
        "alertname": alertname,
        "expected": "/".join(expected.fault_type),
        "expected_replicas": expected.affected_replicas,
        "got": diagnosis["fault_type"],
        "replicas": replicas,
        "engine": diagnosis.get("engine"),
        "confidence": diagnosis.get("confidence"),
        "priority": diagnosis.get("priority"),
        "type_ok": diagnosis["fault_type"] in expected.fault_type and deploy_named(scenario, diagnosis),
        "replicas_ok": replicas == sorted(expected.affected_replicas),
        "line_ok": line_ok,
        "priority_ok": priority_ok,
        "false_alarm": truth.control and diagnosis["fault_type"] not in NO_CAUSE,
        "seconds_to_diagnosis": round(detail["diagnosed_at"] - injected_at, 1),
        "tokens": tokens,
        "incident_id": detail["id"],
    }
    row["correct"] = bool(row["type_ok"] and row["replicas_ok"] and line_ok is not False and priority_ok is not False)
    return row


def brier(rows: list[dict[str, Any]]) -> float | None:
    """Mean squared difference between stated confidence and outcome over rows with a confidence."""
    scored = [(r["confidence"], 1.0 if r["correct"] else 0.0) for r in rows if r.get("confidence") is not None]
    return round(sum((p - o) ** 2 for p, o in scored) / len(scored), 4) if scored else None


def reliability(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per confidence bucket: rows, mean stated confidence and share correct."""
    table = []
    for low, high in BUCKETS:
        inside = [r for r in rows if r.get("confidence") is not None and low <= r["confidence"] < high]
        table.append(
            {
                "bucket": f"{low:.2f}-{min(high, 1.0):.2f}",
                "n": len(inside),
                "mean_confidence": round(statistics.fmean(r["confidence"] for r in inside), 3) if inside else None,
                "accuracy": round(sum(r["correct"] for r in inside) / len(inside), 3) if inside else None,
            }
        )
    return table


def by_run(rows: list[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Rows grouped by (scenario, round): a run passes when every graded incident of it is correct."""
    runs: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        runs[(row["id"], row["round"])].append(row)
    return runs


def scenario_summary(scenarios: list[Scenario], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per scenario: runs, runs passed, median seconds to diagnosis, mean confidence, Brier and what it got."""
    runs = by_run(rows)
    summary = []
    for scenario in scenarios:
        mine = {k: v for k, v in runs.items() if k[0] == scenario.id}
        if not mine:
            continue
        flat = [r for v in mine.values() for r in v]
        times = [r["seconds_to_diagnosis"] for r in flat if r["seconds_to_diagnosis"] is not None]
        confidences = [r["confidence"] for r in flat if r["confidence"] is not None]
        got = sorted({f"{r['alertname']}: {r['got']} {','.join(r['replicas'] or []) or '-'}" for r in flat})
        summary.append(
            {
                "id": scenario.id,
                "expected": scenario.truth.fault_type if not scenario.truth.per_alert else "per alert",
                "runs": len(mine),
                "passed": sum(all(r["correct"] for r in v) for v in mine.values()),
                "median_s": round(statistics.median(times), 1) if times else None,
                "mean_confidence": round(statistics.fmean(confidences), 2) if confidences else None,
                "brier": brier(flat),
                "false_alarms": sum(r["false_alarm"] for r in flat),
                "got": got,
            }
        )
    return summary


SUMMARY_HEADERS = ("scenario", "expected", "pass", "median s to diagnosis", "mean confidence", "Brier", "got")
CALIBRATION_HEADERS = ("confidence", "diagnoses", "mean confidence", "share correct")


def summary_cells(entry: dict[str, Any]) -> list[str]:
    """One scenario's cells of ``SUMMARY_HEADERS``."""
    expected = entry["expected"] if isinstance(entry["expected"], str) else "/".join(entry["expected"])
    return [
        entry["id"],
        expected,
        f"{entry['passed']}/{entry['runs']}",
        "-" if entry["median_s"] is None else f"{entry['median_s']:.1f}",
        "-" if entry["mean_confidence"] is None else f"{entry['mean_confidence']:.2f}",
        "-" if entry["brier"] is None else f"{entry['brier']:.3f}",
        "; ".join(entry["got"])[:160],
    ]


def calibration_cells(entry: dict[str, Any]) -> list[str]:
    """One bucket's cells of ``CALIBRATION_HEADERS``."""
    return [
        entry["bucket"],
        str(entry["n"]),
        "-" if entry["mean_confidence"] is None else f"{entry['mean_confidence']:.2f}",
        "-" if entry["accuracy"] is None else f"{entry['accuracy']:.2f}",
    ]


def headline(scenarios: list[Scenario], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's totals: scenarios, runs, runs passed, scenarios passing in at least 2/3 of their runs, false
    alarms on controls, Brier score and median seconds to diagnosis."""
    summary = scenario_summary(scenarios, rows)
    runs = by_run(rows)
    times = [r["seconds_to_diagnosis"] for r in rows if r["seconds_to_diagnosis"] is not None]
    return {
        "scenarios": len(summary),
        "runs": len(runs),
        "runs_passed": sum(all(r["correct"] for r in v) for v in runs.values()),
        "scenarios_passing_2_of_3": sum(e["passed"] * 3 >= 2 * e["runs"] for e in summary),
        "control_false_alarms": sum(e["false_alarms"] for e in summary),
        "brier": brier(rows),
        "median_s": round(statistics.median(times), 1) if times else None,
    }
