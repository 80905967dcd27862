"""Prompts of the model-driven investigation."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from oncall.investigate.context import ServiceContext
from oncall.investigate.fencing import FENCE_RULES, fence
from oncall.store.alert_summary import summarise_alerts, telling_alerts

PROMPT_ALERTS = 20
"""Alerts listed one by one in the first message; a larger group is summarised (counts + the most telling)."""
PROMPT_VALUE_CHARS = 500
"""Characters of one label or annotation value shown in the first message (longer ones are cut)."""

SYSTEM_PROMPT = (
    """You are an SRE on-call investigator. An alert fired for one service (described below \
from the service catalog); find the root cause of THAT alert from evidence.

How to work:
- Call tools in parallel whenever calls are independent. Start with ONE round of: evaluate_alert_rule for the \
paging alert (its own expression and the series breaching it now: the signal you must explain), fetch_logs, \
compute_error_rate, get_recent_changes, get_deployed_versions, get_client_view, get_load, find_similar_incidents \
and query_prometheus (p99 latency per replica, `up`, CPU rate, CPU per request, resident memory and its growth), \
as far as the service has them.
- Per-alert focus: the headline must explain the paging alert's signal (errors, latency, CPU, memory, down, \
crash, client errors) on the replicas it names. Other findings (a second fault elsewhere) are secondary \
hypotheses with their own evidence, never the headline and never merged into affected_replicas.
- When logs show an exception at a file:line of our code, read it with fetch_code_from_github (at the version \
the failing replicas run).
- Log groups carry last_seen_s_ago: exceptions last logged more than ~60 s ago have stopped; they are \
context, not the cause of what fires now.
- Changes carry offset_s from the alert's onset: a deploy shortly before the onset, on the replicas that then \
fail or slow down, is the likely cause (fault_type deploy_regression; propose a rollback to the previous version).
- What clients saw counts: get_client_view shows the load balancer's 5xx (its own 502/503/504 included: a 504 \
is a client timeout that never appears as an error on the replica), client p99 and requests in flight. \
Priority follows what clients experienced (P1 when most client requests fail or time out).
- Stale series: a replica with up == 0 stopped answering scrapes; its rate() figures (CPU, p99, error ratio) come \
from samples taken before, so never quote them as current values. A replica that waits (sleep, slow \
dependency) still answers scrapes; one that stops answering while its process runs is blocked (computing).
- Load is evidence: get_load compares the request rate with its baseline before the onset. A surge (2x or more) \
that explains latency, queueing or timeouts spread over most replicas, with normal CPU per request and no fault, \
is fault_type overload (give the rate before and during and the headroom). Errors or latency concentrated on \
one replica, or that started before the surge, stay a fault; the surge is context.
- Never advise taking out, stopping, draining or restarting every replica of a service at once; act on one \
replica at a time, and during overload scale out or shed load (within the service's bounds).
- For a service outside the catalog, evaluate_alert_rule shows the alert's own expression per instance.
- Base every conclusion on tool output. Never invent replicas, files, lines or numbers. If the system is \
healthy now, say fault_type "none"; if the evidence is inconclusive or tools failed, say "unknown".
- You MUST finish by calling send_diagnosis exactly once. Do not answer in plain text.

fault_type (closed set):
- code_bug: a real exception (AttributeError, TypeError, KeyError, ...) raised at a file:line of our code; set \
affected_file and affected_line.
- deploy_regression: a deploy shortly before the onset introduced the failure or slowdown on the replicas it \
reached; name the version, set affected_file/affected_line when an exception shows where, and propose \
{"action": "rollback", "target": "all", "params": {"version": <previous version>}}.
- injected_errors: requests fail with exception_type InjectedFault (fault injection).
- latency: p99 latency high on some replicas while their CPU is low and they answer scrapes (waiting).
- cpu_saturation: a replica burns close to or above 0.8 CPU cores (rate of process_cpu_seconds_total), or \
tens of ms of CPU per request, or stopped answering scrapes while slow; usually with high latency.
- memory_pressure: resident memory (process_resident_memory_bytes) grew strongly or is far above the other replicas.
- instance_crash: a replica is down (up == 0) because its process exited, crashed or restarted recently.
- overload: a traffic surge beyond what the replicas serve (see "Load is evidence").
- none: nothing wrong now (error ratio at baseline, latency normal, all replicas up).
- unknown: inconclusive.

Diagnosis fields: affected_service = the service's catalog name; affected_replicas = the replicas of the headline \
hypothesis whose own evidence deviates (all of them when all deviate), named by the service's replica label; \
priority P1 (outage, most client requests failing or timing out) to P4 (no impact); confidence 0-1 = how much \
independent, fresh evidence agrees (logs, metrics, the clients' view, the alert's expression, changes), lower \
when tools failed, sources disagree or figures are stale; hypotheses = 1 to 3 ranked explanations, the headline \
first, each with fault_type, affected_replicas, confidence, explains_alert and evidence_for / evidence_against \
(for overload add load: baseline_rps, current_rps, surge_factor, capacity_rps, headroom); evidence = items naming \
the tool, the exact PromQL query or log line, and the finding; changes = the change timeline around the onset; \
catalog_gaps = what the catalog lacks (given below); suggested_fix and next_steps concrete.

"""
    + FENCE_RULES
)


def service_section(context: ServiceContext) -> str:
    """The service the incident belongs to, from its catalog entry (or what is missing when it has none)."""
    entry = context.entry
    lines = [f"Service: {entry.name}" + (f" - {entry.description}" if entry.description else "")]
    if not context.in_catalog:
        lines[0] = f"Service: {entry.name} (NOT in the service catalog; only generic signals are available)"
    if entry.prometheus is not None:
        p = entry.prometheus
        lines.append(
            f"Prometheus: targets {p.selector}, replicas named by label `{p.replica_label}`, metrics {p.preset_name}."
        )
    for label, value in (("Owner team", entry.owner_team), ("Runbook", entry.runbook_url)):
        if value:
            lines.append(f"{label}: {value}")
    if entry.slo is not None:
        lines.append(f"SLO: {entry.slo.model_dump_json(exclude_none=True)}")
    if context.onset:
        lines.append(f"Onset (first alert started): {datetime.fromtimestamp(context.onset, UTC).isoformat()}")
    if context.gaps:
        lines.append("Missing from the catalog: " + "; ".join(context.gaps))
    return "\n".join(lines)


def system_prompt(context: ServiceContext) -> str:
    """The system prompt of an investigation of ``context``'s service."""
    return f"{SYSTEM_PROMPT}\n\n{service_section(context)}"


CORRECTIVE_MESSAGE = """You ended without a valid send_diagnosis call. Call send_diagnosis now with \
arguments that match its schema (fault_type from the closed set; say "none" or "unknown" rather than guess). \
Do not answer in plain text."""


def _when(value: Any) -> str:
    return str(value) if value else "unknown"


def _short(values: dict[str, Any]) -> str:
    """``values`` as JSON, each value cut to ``PROMPT_VALUE_CHARS`` characters."""
    limit = PROMPT_VALUE_CHARS
    cut = {key: str(value)[:limit] + ("..." if len(str(value)) > limit else "") for key, value in values.items()}
    return json.dumps(cut, sort_keys=True)


def _alert_line(alert: dict[str, Any]) -> str:
    return (
        f"- {alert['alertname']} [{alert['status']}] startsAt {_when(alert.get('starts_at'))}; "
        f"labels {_short(alert['labels'])}; annotations {_short(alert['annotations'])}"
    )


def shown_alerts(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The alerts whose lines (with annotations) ``alerts_text`` shows: all of them when there are at most
    ``PROMPT_ALERTS``, else the most telling; the others' annotations are not read (``incidents.annotate``)."""
    return alerts if len(alerts) <= PROMPT_ALERTS else telling_alerts(alerts, PROMPT_ALERTS)


def alerts_text(incident: dict[str, Any], alerts: list[dict[str, Any]]) -> str:
    """The incident title, group labels and alerts as the alert sender wrote them (untrusted): every
    alert when there are at most ``PROMPT_ALERTS``, else the counts and the most telling alerts."""
    lines = [
        f"Title: {incident['title'][:PROMPT_VALUE_CHARS]}",
        f"Group labels: {_short(incident.get('group_labels') or {})}",
    ]
    if len(alerts) <= PROMPT_ALERTS:
        lines.append("Alerts:")
        lines.extend(_alert_line(alert) for alert in alerts)
        return "\n".join(lines)
    summary = summarise_alerts(alerts, PROMPT_ALERTS)
    shown = summary.pop("alerts")
    lines.append(f"Alert summary (the group is large): {json.dumps(summary, sort_keys=True)}")
    lines.append(f"The {len(shown)} most telling of the {summary['total']} alerts:")
    lines.extend(_alert_line(alert) for alert in shown)
    return "\n".join(lines)


def user_message(incident: dict[str, Any], alerts: list[dict[str, Any]]) -> str:
    """The first user message: the incident and its alerts (labels, annotations, startsAt), fenced as data.

    Args:
        incident: an ``incidents`` row.
        alerts: its ``incident_alerts`` rows.
    """
    opened = datetime.fromtimestamp(incident["created_at"], UTC).isoformat(timespec="seconds")
    return "\n".join(
        [
            f"Incident #{incident['id']} (status {incident['status']}, opened {opened}), as Alertmanager reported it:",
            fence(alerts_text(incident, alerts), "alert labels and annotations"),
            f"Now: {datetime.now(UTC).isoformat(timespec='seconds')}. Investigate and call send_diagnosis.",
        ]
    )
