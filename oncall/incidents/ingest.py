"""Ingest of Alertmanager webhook notifications: parse (``oncall.incidents.body``) -> store raw
(``oncall.incidents.intake``) -> apply (``oncall.incidents.applier``, here): incident by group key ->
alerts by fingerprint -> decide whether to investigate and whether the incident is now resolved.

Rules (Alertmanager webhook payload v4, see ``oncall.incidents.payload``):
- The raw body is committed to ``raw_alerts`` before it is acknowledged and applied: a valid body whole,
  an invalid one as its SHA-256, size, reason and first KiB (so junk posts cannot fill the database).
- A body byte-identical (same SHA-256) to one already accepted changes nothing: Alertmanager re-sends
  the identical body after a 5xx, and repeat notifications of an unchanged group are identical too.
  The intake marks a copy of a body its process stored before as ``duplicate`` at once; the applier
  checks the rest here (a copy another replica received).
- One incident per ``groupKey``: created with ``INSERT ... ON CONFLICT DO NOTHING`` and then locked
  for the transaction (PostgreSQL ``FOR UPDATE``; SQLite writers are serialised by ``BEGIN IMMEDIATE``),
  so replicas receiving the same notification at once apply it one after the other, and only once.
- Alerts are merged by ``fingerprint`` and ``startsAt`` (``oncall.incidents.merge``: a newer
  ``startsAt`` wins; for one ``startsAt`` resolved wins over firing), so the final state does not
  depend on the order notifications arrive in.
- Episodes (``oncall.incidents.lifecycle``): an alert firing after the episode's end (its alerts'
  ``endsAt``) opens the next episode; one that started before it continues the episode.
- One investigation, hence one page, per episode: queued the first time any notification shows an
  alert of the episode firing (even a firing copy that arrives after the resolution: Alertmanager
  did notify it). An episode only ever seen resolved is never investigated nor paged.
- The incident is resolved when all its tracked alerts are resolved, but never by a notification
  with ``truncatedAlerts > 0`` (it lists only part of the group; a cut alert may still fire). The
  resolved notice is written by the lifecycle once the episode's investigation has ended too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from oncall.incidents import lifecycle, merge
from oncall.incidents.body import ReceivedBody
from oncall.incidents.payload import WebhookAlert, WebhookNotification
from oncall.metrics import ALERT_NOTIFICATIONS
from oncall.store import incidents, raw_alerts, timeline
from oncall.store.database import Connection, Store
from oncall.store.rows import Row

log = logging.getLogger("oncall.ingest")

Outcome = Literal["accepted", "duplicate", "invalid", "failed"]


@dataclass(frozen=True)
class IngestResult:
    """What applying one webhook body did (or why the body was refused).

    ``outcome``: ``accepted`` (applied), ``duplicate`` (identical body already accepted; nothing
    changed), ``invalid`` (``error`` holds the reason, ``errors`` the per-field details) or ``failed``
    (valid, but applying it raised or its stored text is not whole: ``error``).
    ``start_investigation``: this notification queued the episode's investigation (wake the scheduler).
    ``resolved_now``: this notification resolved a firing incident (the resolved notice, if due, is in
    the outbox already: wake the outbox worker).
    ``new_firing`` / ``newly_resolved``: fingerprints that changed state.
    """

    outcome: Outcome
    raw_id: int
    incident_id: int | None = None
    group_key: str | None = None
    start_investigation: bool = False
    resolved_now: bool = False
    new_firing: tuple[str, ...] = ()
    newly_resolved: tuple[str, ...] = ()
    error: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)


async def store_invalid(store: Store, received: ReceivedBody) -> IngestResult:
    """Keep an invalid body's hash, size, reason and first KiB; report it (outcome ``invalid``)."""
    error = received.error
    assert error is not None
    head = received.head.decode("utf-8", errors="backslashreplace")
    async with store.write() as conn:
        raw_id = await raw_alerts.add_invalid(conn, head, received.sha256, time.time(), received.size, error.reason)
    ALERT_NOTIFICATIONS.labels(outcome="invalid").inc()
    log.warning("rejected webhook body raw_alerts#%d (%d bytes): %s", raw_id, received.size, error.reason)
    return IngestResult(outcome="invalid", raw_id=raw_id, error=error.reason, errors=error.errors)


async def apply_notification(conn: Connection, raw_id: int, sha256: str, n: WebhookNotification) -> IngestResult:
    """Apply a valid notification inside the caller's transaction (see the module docstring).

    A byte-identical body already applied makes this one a ``duplicate`` (checked first: most repeat
    notifications are, and SQLite writers are serialised, so the check is final there; PostgreSQL
    checks again under the incident's lock, where a concurrent replica may just have applied it). The
    raw row is marked applied before the alerts are merged, only if it is not applied yet (by the
    start-up replay or another replica's), in this same transaction.
    """
    duplicate = await _duplicate(conn, raw_id, sha256, n)
    if duplicate is not None:
        return duplicate
    now = time.time()
    incident, created = await lifecycle.open_or_lock(conn, incident_values(n, now), n.receiver, now)
    incident_id = int(incident["id"])
    if not created and conn.dialect.name == "postgresql":
        duplicate = await _duplicate(conn, raw_id, sha256, n)
        if duplicate is not None:
            return duplicate
    if not await raw_alerts.mark_applied(conn, raw_id, n.group_key, incident_id, "accepted", now):
        return IngestResult(outcome="duplicate", raw_id=raw_id, incident_id=incident_id, group_key=n.group_key)
    changes = await _merge_alerts(conn, incident_id, n.alerts, now)
    start, resolved_now = await _status_change(conn, incident, created, n, changes, now)
    await _refresh_incident(conn, incident_id, n, now)
    return IngestResult(
        outcome="accepted",
        raw_id=raw_id,
        incident_id=incident_id,
        group_key=n.group_key,
        start_investigation=start,
        resolved_now=resolved_now,
        new_firing=tuple(changes.new_firing),
        newly_resolved=tuple(changes.newly_resolved),
    )


async def _duplicate(conn: Connection, raw_id: int, sha256: str, n: WebhookNotification) -> IngestResult | None:
    """The ``duplicate`` result when a byte-identical body was applied already (this raw row is marked
    applied to the same incident), else None."""
    duplicate, incident_id = await raw_alerts.applied_copy_incident(conn, sha256, raw_id)
    if not duplicate:
        return None
    await raw_alerts.mark_applied(conn, raw_id, n.group_key, incident_id, "duplicate", time.time())
    return IngestResult(outcome="duplicate", raw_id=raw_id, incident_id=incident_id, group_key=n.group_key)


@dataclass
class AlertChanges:
    """What merging a notification's alerts changed: fingerprints that became firing or resolved, the
    ``startsAt`` (epoch s) of the alerts that became firing and of every alert the notification shows
    firing, and the stored states after the merge."""

    new_firing: list[str] = field(default_factory=list)
    newly_resolved: list[str] = field(default_factory=list)
    new_firing_starts: list[float] = field(default_factory=list)
    firing_starts: list[float] = field(default_factory=list)
    states: dict[str, Row] = field(default_factory=dict)


async def _status_change(
    conn: Connection, incident: Row, created: bool, n: WebhookNotification, changes: AlertChanges, now: float
) -> tuple[bool, bool]:
    """Start an episode, go on with it, queue its investigation or resolve it, as the merged alert states
    demand; returns (investigation queued, firing incident resolved now)."""
    incident_id = int(incident["id"])
    if incident["status"] == "resolved" and changes.new_firing:
        ended = incident["episode_ends_at"]
        if ended is None or any(start > ended for start in changes.new_firing_starts):
            number = await lifecycle.new_episode(conn, incident, changes.new_firing, now)
            incident = {**incident, "episode": number, "episode_after": ended, "investigation_status": "pending"}
        else:
            await lifecycle.unresolve(conn, incident, changes.new_firing)
        incident = {**incident, "status": "firing"}
    after = incident["episode_after"]
    start = False
    asked = incident["investigation_status"] != "pending"  # the episode's investigation is queued or past it
    if not asked and any(after is None or begun > after for begun in changes.firing_starts):
        start = await lifecycle.queue_investigation(conn, incident_id, int(incident["episode"]), now)
    if incident["status"] != "firing" or any(state["status"] == "firing" for state in changes.states.values()):
        return start, False
    if n.truncated:
        log.info(
            "incident %d: not resolved from a truncated notification (%d alerts cut)", incident_id, n.truncated_alerts
        )
        return start, False
    await lifecycle.resolve_from_alerts(conn, incident, merge.latest_end(changes.states), now)
    return start, not created


def incident_values(n: WebhookNotification, now: float) -> dict[str, Any]:
    """The columns of a new group key's incident."""
    return {
        "group_key": n.group_key,
        "title": incident_title(n),
        "service": n.common_labels.get("service") or n.group_labels.get("service"),
        "severity": n.common_labels.get("severity") or n.group_labels.get("severity"),
        "group_labels": n.group_labels,
        "common_labels": n.common_labels,
        "common_annotations": n.common_annotations,
        "external_url": n.external_url or None,
        "created_at": now,
        "updated_at": now,
    }


def incident_title(n: WebhookNotification) -> str:
    """A short title: the alert name and service, plus the common summary annotation when there is one."""
    alertname = n.group_labels.get("alertname") or n.common_labels.get("alertname") or n.alerts[0].alertname
    service = n.group_labels.get("service") or n.common_labels.get("service")
    title = f"{alertname} ({service})" if service else alertname
    summary = n.common_annotations.get("summary")
    return f"{title}: {summary}" if summary else title


async def _merge_alerts(conn: Connection, incident_id: int, alerts: list[WebhookAlert], now: float) -> AlertChanges:
    """Merge each alert with its fingerprint's stored state (``oncall.incidents.merge``) and store the winners."""
    changes = AlertChanges(states=await incidents.alert_states(conn, incident_id))
    for alert in alerts:
        previous = changes.states.get(alert.fingerprint)
        choice = merge.verdict(previous, alert)
        begun = alert.starts_at.timestamp()
        if merge.shows_firing(alert, choice):
            changes.firing_starts.append(begun)
        if not merge.applies(choice):
            continue
        if previous is None:
            await incidents.add_alert(
                conn, {**_alert_values(alert, now), "incident_id": incident_id, "first_seen_at": now}
            )
        else:
            await incidents.update_alert(conn, incident_id, alert.fingerprint, _alert_update(alert, previous, now))
        changes.states[alert.fingerprint] = _alert_values(alert, now)
        if alert.status == "firing" and (previous is None or previous["status"] != "firing" or choice == "newer"):
            changes.new_firing.append(alert.fingerprint)
            changes.new_firing_starts.append(begun)
            await _timeline_alert(conn, incident_id, "alert_firing", alert)
        elif alert.status == "resolved" and previous is not None and previous["status"] == "firing":
            changes.newly_resolved.append(alert.fingerprint)
            await _timeline_alert(conn, incident_id, "alert_resolved", alert)
    return changes


def _alert_values(alert: WebhookAlert, now: float) -> dict[str, Any]:
    """The ``incident_alerts`` columns an alert's notification sets."""
    return {
        "fingerprint": alert.fingerprint,
        "alertname": alert.alertname,
        "status": alert.status,
        "labels": alert.labels,
        "annotations": alert.annotations,
        "starts_at": alert.starts_at.isoformat(),
        "ends_at": alert.ends_at_known.isoformat() if alert.ends_at_known else None,
        "generator_url": alert.generator_url,
        "last_seen_at": now,
        "resolved_at": now if alert.status == "resolved" else None,
    }


def _alert_update(alert: WebhookAlert, previous: Row, now: float) -> dict[str, Any]:
    """Columns to update on a known alert; ``resolved_at`` keeps the first resolution time of an episode."""
    values = _alert_values(alert, now)
    del values["fingerprint"], values["alertname"]
    if alert.status == "resolved" and previous["status"] == "resolved":
        del values["resolved_at"]
    return values


async def _timeline_alert(conn: Connection, incident_id: int, kind: str, alert: WebhookAlert) -> None:
    """Record an alert state change (``alert_firing`` / ``alert_resolved``) on the timeline."""
    await timeline.add(
        conn,
        incident_id,
        kind,
        {
            "fingerprint": alert.fingerprint,
            "alertname": alert.alertname,
            "labels": alert.labels,
            "summary": alert.annotations.get("summary"),
            "starts_at": alert.starts_at.isoformat(),
            "ends_at": alert.ends_at_known.isoformat() if alert.ends_at_known else None,
        },
    )


async def _refresh_incident(conn: Connection, incident_id: int, n: WebhookNotification, now: float) -> None:
    """Update ``updated_at``; a complete (not truncated) notification also refreshes the common labels."""
    if n.truncated:
        await incidents.update_fields(conn, incident_id, updated_at=now)
        return
    await incidents.update_fields(
        conn, incident_id, updated_at=now, common_labels=n.common_labels, common_annotations=n.common_annotations
    )
