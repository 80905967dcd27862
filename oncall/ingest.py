"""Ingest of Alertmanager webhook notifications: store raw -> validate -> incident by group key ->
alerts by fingerprint -> decide whether to investigate and whether the incident is now resolved.

Rules (Alertmanager webhook payload v4, see ``oncall.alertmanager``):
- The raw body is committed to ``raw_alerts`` before anything else, valid or not, so nothing is lost.
- A body byte-identical (same SHA-256) to one already accepted changes nothing: Alertmanager re-sends
  the identical body after a 5xx, and repeat notifications of an unchanged group are identical too.
- One incident per ``groupKey``; alerts are tracked by ``fingerprint`` with their latest status.
- An investigation starts once per episode: for a new incident with a firing alert, and for a
  resolved incident that fires again (a new episode). New firing alerts of a firing incident only
  go to its timeline (the episode's investigation is running or done; a restart resumes a cut one).
- The incident is resolved when all its tracked alerts are resolved, but never by a notification
  with ``truncatedAlerts > 0`` (it lists only part of the group; a cut alert may still fire).
- A ``firing`` status for an alert already resolved with the same ``startsAt`` is a stale copy (two
  webhook configs of one receiver race); a real re-fire has a new ``startsAt``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Literal

from oncall.alertmanager import PayloadError, WebhookAlert, WebhookNotification, parse_notification
from oncall.db import Database, add_timeline, dumps
from oncall.metrics import ALERT_NOTIFICATIONS, ALERTS_RECEIVED, INCIDENTS_OPEN

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
    errors: list[dict] = field(default_factory=list)


def ingest_notification(db: Database, raw_body: bytes) -> IngestResult:
    """Store, validate and apply one Alertmanager webhook body.

    Args:
        db: the agent database.
        raw_body: the exact request body bytes.
    Returns:
        The ``IngestResult``; invalid bodies are reported in it (outcome ``invalid``), not raised.
    Raises:
        sqlite3.Error (or any bug) while applying a valid body; the raw row then keeps the error text.
    """
    sha256 = hashlib.sha256(raw_body).hexdigest()
    raw_id = store_raw(db, raw_body, sha256)
    try:
        notification = parse_notification(raw_body)
    except PayloadError as exc:
        db.execute("UPDATE raw_alerts SET error = ? WHERE id = ?", (exc.reason, raw_id))
        ALERT_NOTIFICATIONS.labels(outcome="invalid").inc()
        log.warning("rejected webhook body raw_alerts#%d: %s", raw_id, exc.reason)
        return IngestResult(outcome="invalid", raw_id=raw_id, error=exc.reason, errors=exc.errors)
    try:
        with db.transaction():
            result = _apply(db, raw_id, sha256, notification)
    except Exception as exc:
        db.execute(
            "UPDATE raw_alerts SET error = ? WHERE id = ?", (f"processing failed: {type(exc).__name__}: {exc}", raw_id)
        )
        raise
    ALERT_NOTIFICATIONS.labels(outcome=result.outcome).inc()
    if result.outcome == "accepted":
        for alert in notification.alerts:
            ALERTS_RECEIVED.labels(status=alert.status).inc()
    INCIDENTS_OPEN.set(count_open_incidents(db))
    return result


def store_raw(db: Database, raw_body: bytes, sha256: str) -> int:
    """Commit the raw body (``valid=0`` until applied) and return its ``raw_alerts`` id.

    ``sha256`` is the hex digest of the exact bytes; bytes that are not UTF-8 are kept with backslash escapes.
    """
    cursor = db.execute(
        "INSERT INTO raw_alerts (received_at, body_sha256, body, valid) VALUES (?, ?, ?, 0)",
        (time.time(), sha256, raw_body.decode("utf-8", errors="backslashreplace")),
    )
    return int(cursor.lastrowid)


def count_open_incidents(db: Database) -> int:
    """Number of incidents with status ``firing``."""
    row = db.query_one("SELECT COUNT(*) AS n FROM incidents WHERE status = 'firing'")
    return int(row["n"]) if row else 0


def _apply(db: Database, raw_id: int, sha256: str, n: WebhookNotification) -> IngestResult:
    """Apply a valid notification inside the caller's transaction."""
    now = time.time()
    duplicate_of = db.query_one(
        "SELECT incident_id FROM raw_alerts WHERE body_sha256 = ? AND valid = 1 AND id != ? LIMIT 1", (sha256, raw_id)
    )
    if duplicate_of is not None:
        db.execute(
            "UPDATE raw_alerts SET valid = 1, group_key = ?, incident_id = ? WHERE id = ?",
            (n.group_key, duplicate_of["incident_id"], raw_id),
        )
        return IngestResult(
            outcome="duplicate", raw_id=raw_id, incident_id=duplicate_of["incident_id"], group_key=n.group_key
        )

    incident = db.query_one("SELECT * FROM incidents WHERE group_key = ?", (n.group_key,))
    created = incident is None
    incident_id = _create_incident(db, n, now) if created else int(incident["id"])
    new_firing, newly_resolved = _upsert_alerts(db, incident_id, n.alerts, now)
    any_firing = (
        db.query_one(
            "SELECT 1 AS x FROM incident_alerts WHERE incident_id = ? AND status = 'firing' LIMIT 1", (incident_id,)
        )
        is not None
    )

    start = False
    resolved_now = False
    if created:
        start = any_firing
        if not any_firing:  # first seen already resolved (e.g. the agent was down while it fired)
            _resolve(db, incident_id, now, notify=False)
    elif incident["status"] == "resolved" and new_firing:
        db.execute(
            "UPDATE incidents SET status = 'firing', resolved_at = NULL, investigation_status = 'pending' WHERE id = ?",
            (incident_id,),
        )
        add_timeline(db, incident_id, "reopened", {"fingerprints": new_firing})
        start = True
    elif incident["status"] == "firing" and not any_firing and not n.truncated:
        _resolve(db, incident_id, now, notify=True)
        resolved_now = True

    _refresh_incident(db, incident_id, n, now)
    db.execute(
        "UPDATE raw_alerts SET valid = 1, group_key = ?, incident_id = ? WHERE id = ?",
        (n.group_key, incident_id, raw_id),
    )
    if n.truncated and not any_firing and not created and incident["status"] == "firing":
        log.info(
            "incident %d: not resolved from a truncated notification (%d alerts cut)", incident_id, n.truncated_alerts
        )
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


def _create_incident(db: Database, n: WebhookNotification, now: float) -> int:
    """Insert the incident of a new group key and return its id."""
    cursor = db.execute(
        "INSERT INTO incidents (group_key, status, title, service, severity, group_labels, common_labels,"
        " common_annotations, external_url, created_at, updated_at) VALUES (?, 'firing', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            n.group_key,
            incident_title(n),
            n.common_labels.get("service") or n.group_labels.get("service"),
            n.common_labels.get("severity") or n.group_labels.get("severity"),
            dumps(n.group_labels),
            dumps(n.common_labels),
            dumps(n.common_annotations),
            n.external_url or None,
            now,
            now,
        ),
    )
    incident_id = int(cursor.lastrowid)
    add_timeline(db, incident_id, "created", {"group_key": n.group_key, "receiver": n.receiver})
    return incident_id


def incident_title(n: WebhookNotification) -> str:
    """A short title: the alert name and service, plus the common summary annotation when there is one."""
    alertname = n.group_labels.get("alertname") or n.common_labels.get("alertname") or n.alerts[0].alertname
    service = n.group_labels.get("service") or n.common_labels.get("service")
    title = f"{alertname} ({service})" if service else alertname
    summary = n.common_annotations.get("summary")
    return f"{title}: {summary}" if summary else title


def _upsert_alerts(
    db: Database, incident_id: int, alerts: list[WebhookAlert], now: float
) -> tuple[list[str], list[str]]:
    """Insert or update each alert by fingerprint; return (newly firing, newly resolved) fingerprints."""
    known = {
        row["fingerprint"]: row
        for row in db.query(
            "SELECT fingerprint, status, starts_at FROM incident_alerts WHERE incident_id = ?", (incident_id,)
        )
    }
    new_firing: list[str] = []
    newly_resolved: list[str] = []
    for alert in alerts:
        starts_at = alert.starts_at.isoformat()
        ends_at = alert.ends_at_known.isoformat() if alert.ends_at_known else None
        previous = known.get(alert.fingerprint)
        if previous is None:
            _insert_alert(db, incident_id, alert, starts_at, ends_at, now)
            known[alert.fingerprint] = {"status": alert.status, "starts_at": starts_at}
            if alert.status == "firing":
                new_firing.append(alert.fingerprint)
                _timeline_alert(db, incident_id, "alert_firing", alert)
            continue
        if alert.status == "firing" and previous["status"] == "resolved" and previous["starts_at"] == starts_at:
            continue  # stale copy of the episode that already ended
        changed = alert.status != previous["status"]
        db.execute(
            "UPDATE incident_alerts SET status = ?, labels = ?, annotations = ?, starts_at = ?, ends_at = ?,"
            " generator_url = ?, last_seen_at = ?, resolved_at = CASE WHEN ? = 'resolved' THEN COALESCE(resolved_at, ?) END"
            " WHERE incident_id = ? AND fingerprint = ?",
            (
                alert.status,
                dumps(alert.labels),
                dumps(alert.annotations),
                starts_at,
                ends_at,
                alert.generator_url,
                now,
                alert.status,
                now,
                incident_id,
                alert.fingerprint,
            ),
        )
        known[alert.fingerprint] = {"status": alert.status, "starts_at": starts_at}
        if changed and alert.status == "firing":
            new_firing.append(alert.fingerprint)
            _timeline_alert(db, incident_id, "alert_firing", alert)
        elif changed:
            newly_resolved.append(alert.fingerprint)
            _timeline_alert(db, incident_id, "alert_resolved", alert)
    return new_firing, newly_resolved


def _insert_alert(
    db: Database, incident_id: int, alert: WebhookAlert, starts_at: str, ends_at: str | None, now: float
) -> None:
    """Insert a fingerprint seen for the first time in this incident."""
    db.execute(
        "INSERT INTO incident_alerts (incident_id, fingerprint, alertname, status, labels, annotations, starts_at,"
        " ends_at, generator_url, first_seen_at, last_seen_at, resolved_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            incident_id,
            alert.fingerprint,
            alert.alertname,
            alert.status,
            dumps(alert.labels),
            dumps(alert.annotations),
            starts_at,
            ends_at,
            alert.generator_url,
            now,
            now,
            now if alert.status == "resolved" else None,
        ),
    )


def _timeline_alert(db: Database, incident_id: int, kind: str, alert: WebhookAlert) -> None:
    """Record an alert state change (``alert_firing`` / ``alert_resolved``) on the timeline."""
    add_timeline(
        db,
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


def _resolve(db: Database, incident_id: int, now: float, *, notify: bool) -> None:
    """Mark the incident resolved at ``now`` and record it on the timeline."""
    db.execute("UPDATE incidents SET status = 'resolved', resolved_at = ? WHERE id = ?", (now, incident_id))
    add_timeline(db, incident_id, "resolved", {"notify": notify})


def _refresh_incident(db: Database, incident_id: int, n: WebhookNotification, now: float) -> None:
    """Update ``updated_at``; a complete (not truncated) notification also refreshes the common labels."""
    if n.truncated:
        db.execute("UPDATE incidents SET updated_at = ? WHERE id = ?", (now, incident_id))
        return
    db.execute(
        "UPDATE incidents SET updated_at = ?, common_labels = ?, common_annotations = ? WHERE id = ?",
        (now, dumps(n.common_labels), dumps(n.common_annotations), incident_id),
    )
