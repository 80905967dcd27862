"""Ingest of Alertmanager webhook notifications: parse (``oncall.incidents.body``) -> store raw -> incident
by group key -> alerts by fingerprint -> decide whether to investigate and whether the incident is now resolved.

Rules (Alertmanager webhook payload v4, see ``oncall.incidents.payload``):
- The raw body is committed to ``raw_alerts`` before it is applied: a valid body whole, an invalid one
  as its SHA-256, size, reason and first KiB (so junk posts cannot fill the database).
- A body byte-identical (same SHA-256) to one already accepted changes nothing: Alertmanager re-sends
  the identical body after a 5xx, and repeat notifications of an unchanged group are identical too.
- One incident per ``groupKey``; alerts are tracked by ``fingerprint`` with their latest status.
  The incident row is locked for the transaction (PostgreSQL ``FOR UPDATE``; SQLite writers are
  serialised by ``BEGIN IMMEDIATE``), so concurrent notifications of one group apply one by one.
- An investigation starts once per episode: for a new incident with a firing alert, and for a
  resolved incident that fires again (a new episode). New firing alerts of a firing incident only
  go to its timeline (the episode's investigation is running or done; a restart resumes a cut one).
- The incident is resolved when all its tracked alerts are resolved, but never by a notification
  with ``truncatedAlerts > 0`` (it lists only part of the group; a cut alert may still fire).
- A ``firing`` status for an alert already resolved with the same ``startsAt`` is a stale copy (two
  webhook configs of one receiver race); a real re-fire has a new ``startsAt``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncConnection

from oncall.incidents import lifecycle
from oncall.incidents.body import ReceivedBody, receive_notification, storable_text
from oncall.incidents.payload import WebhookAlert, WebhookNotification
from oncall.metrics import ALERT_NOTIFICATIONS, ALERTS_RECEIVED, INCIDENTS_OPEN
from oncall.store import incidents, raw_alerts, timeline
from oncall.store.database import Store
from oncall.store.rows import Row

log = logging.getLogger("oncall.ingest")

Outcome = Literal["accepted", "duplicate", "invalid"]


@dataclass(frozen=True)
class IngestResult:
    """What one webhook POST did.

    ``outcome``: ``accepted`` (applied), ``duplicate`` (identical body already accepted; nothing
    changed) or ``invalid`` (``error`` holds the reason, ``errors`` the per-field details).
    ``start_investigation``: the caller must start an investigation of ``incident_id``.
    ``resolved_now``: this notification resolved the incident (once per episode); notify the engineer.
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


async def ingest_notification(store: Store, raw_body: bytes) -> IngestResult:
    """Parse, store and apply one Alertmanager webhook body given as bytes (see ``ingest_received``)."""

    async def one_chunk() -> AsyncIterator[bytes]:
        yield raw_body

    return await ingest_received(store, await receive_notification(one_chunk(), limit=len(raw_body)))


async def ingest_received(store: Store, received: ReceivedBody) -> IngestResult:
    """Store and apply one Alertmanager webhook body, already read and parsed (``oncall.incidents.body``).

    Args:
        store: the agent database.
        received: the body's hash, size and parsed notification, or why it is invalid.
    Returns:
        The ``IngestResult``; invalid bodies are reported in it (outcome ``invalid``), not raised. An
        invalid body is stored as its hash, size, reason and first KiB only.
    Raises:
        sqlalchemy.exc.SQLAlchemyError (or any bug) while applying a valid body; the raw row then
        keeps the error text.
    """
    sha256, notification = received.sha256, received.notification
    if notification is None:
        return await _store_invalid(store, received)
    text = await storable_text(received.raw, store.redact)
    async with store.write() as conn:
        raw_id = await raw_alerts.add(conn, text, sha256, time.time(), received.size)
    try:
        async with store.write() as conn:
            result = await apply_notification(conn, raw_id, sha256, notification)
            open_count = await incidents.count_firing(conn)
    except Exception as exc:
        async with store.write() as conn:
            await raw_alerts.set_error(conn, raw_id, f"processing failed: {type(exc).__name__}: {exc}")
        raise
    ALERT_NOTIFICATIONS.labels(outcome=result.outcome).inc()
    if result.outcome == "accepted":
        for alert in notification.alerts:
            ALERTS_RECEIVED.labels(status=alert.status).inc()
    INCIDENTS_OPEN.set(open_count)
    return result


async def _store_invalid(store: Store, received: ReceivedBody) -> IngestResult:
    """Keep an invalid body's hash, size, reason and first KiB; report it."""
    error = received.error
    assert error is not None
    head = received.head.decode("utf-8", errors="backslashreplace")
    async with store.write() as conn:
        raw_id = await raw_alerts.add(conn, head, received.sha256, time.time(), received.size, error.reason)
    ALERT_NOTIFICATIONS.labels(outcome="invalid").inc()
    log.warning("rejected webhook body raw_alerts#%d (%d bytes): %s", raw_id, received.size, error.reason)
    return IngestResult(outcome="invalid", raw_id=raw_id, error=error.reason, errors=error.errors)


async def apply_notification(conn: AsyncConnection, raw_id: int, sha256: str, n: WebhookNotification) -> IngestResult:
    """Apply a valid notification inside the caller's transaction."""
    incident = await incidents.by_group_key(conn, n.group_key)
    duplicate, duplicate_incident = await raw_alerts.applied_copy_incident(conn, sha256, raw_id)
    if duplicate:
        await raw_alerts.mark_applied(conn, raw_id, n.group_key, duplicate_incident)
        return IngestResult(outcome="duplicate", raw_id=raw_id, incident_id=duplicate_incident, group_key=n.group_key)

    now = time.time()
    if incident is None:
        incident_id = await lifecycle.open_incident(conn, incident_values(n, now), n.receiver)
    else:
        incident_id = int(incident["id"])
    new_firing, newly_resolved = await _upsert_alerts(conn, incident_id, n.alerts, now)
    any_firing = await incidents.any_alert_firing(conn, incident_id)
    start, resolved_now = await _status_change(conn, incident, incident_id, n, any_firing, new_firing, now)
    await _refresh_incident(conn, incident_id, n, now)
    await raw_alerts.mark_applied(conn, raw_id, n.group_key, incident_id)
    return IngestResult(
        outcome="accepted",
        raw_id=raw_id,
        incident_id=incident_id,
        group_key=n.group_key,
        start_investigation=start,
        resolved_now=resolved_now,
        new_firing=tuple(new_firing),
        newly_resolved=tuple(newly_resolved),
    )


async def _status_change(
    conn: AsyncConnection,
    incident: Row | None,
    incident_id: int,
    n: WebhookNotification,
    any_firing: bool,
    new_firing: list[str],
    now: float,
) -> tuple[bool, bool]:
    """Open, reopen or resolve the incident as the notification demands; returns (investigate, resolved now)."""
    if incident is None:
        if not any_firing:  # first seen already resolved (e.g. the agent was down while it fired)
            await lifecycle.resolve_from_alerts(conn, incident_id, now, notify=False)
        return any_firing, False
    if incident["status"] == "resolved" and new_firing:
        await lifecycle.reopen(conn, incident_id, new_firing)
        return True, False
    if incident["status"] == "firing" and not any_firing:
        if n.truncated:
            log.info(
                "incident %d: not resolved from a truncated notification (%d alerts cut)",
                incident_id,
                n.truncated_alerts,
            )
            return False, False
        await lifecycle.resolve_from_alerts(conn, incident_id, now, notify=True)
        return False, True
    return False, False


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


async def _upsert_alerts(
    conn: AsyncConnection, incident_id: int, alerts: list[WebhookAlert], now: float
) -> tuple[list[str], list[str]]:
    """Insert or update each alert by fingerprint; return (newly firing, newly resolved) fingerprints."""
    known = await incidents.alert_states(conn, incident_id)
    new_firing: list[str] = []
    newly_resolved: list[str] = []
    for alert in alerts:
        starts_at = alert.starts_at.isoformat()
        previous = known.get(alert.fingerprint)
        if previous is None:
            await incidents.add_alert(
                conn, {**_alert_values(alert, now), "incident_id": incident_id, "first_seen_at": now}
            )
        elif alert.status == "firing" and previous["status"] == "resolved" and previous["starts_at"] == starts_at:
            continue  # stale copy of the episode that already ended
        else:
            await incidents.update_alert(conn, incident_id, alert.fingerprint, _alert_update(alert, previous, now))
        known[alert.fingerprint] = {"status": alert.status, "starts_at": starts_at}
        if previous is not None and alert.status == previous["status"]:
            continue
        if alert.status == "firing":
            new_firing.append(alert.fingerprint)
            await _timeline_alert(conn, incident_id, "alert_firing", alert)
        elif previous is not None:
            newly_resolved.append(alert.fingerprint)
            await _timeline_alert(conn, incident_id, "alert_resolved", alert)
    return new_firing, newly_resolved


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


async def _timeline_alert(conn: AsyncConnection, incident_id: int, kind: str, alert: WebhookAlert) -> None:
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


async def _refresh_incident(conn: AsyncConnection, incident_id: int, n: WebhookNotification, now: float) -> None:
    """Update ``updated_at``; a complete (not truncated) notification also refreshes the common labels."""
    if n.truncated:
        await incidents.update_fields(conn, incident_id, updated_at=now)
        return
    await incidents.update_fields(
        conn, incident_id, updated_at=now, common_labels=n.common_labels, common_annotations=n.common_annotations
    )
