"""How a notified alert merges with what is stored for its fingerprint, whatever the arrival order.

Alertmanager notifications can arrive in any order (two webhook configs, two clustered peers, retries
after a 5xx, replicas behind a load balancer). An alert is identified by its ``fingerprint``; one
firing period of it by its ``startsAt`` (Prometheus keeps ``startsAt`` while the alert stays active and
a new period starts later). So the stored state is a function of the *set* of notifications:

- a newer ``startsAt`` wins (a later firing period of the alert);
- an older ``startsAt`` changes nothing (a period already superseded);
- for one ``startsAt``, ``resolved`` wins over ``firing`` (a firing copy that arrives after the
  resolution of the same period is stale).

Protocol source: Alertmanager webhook payload v4 (``startsAt``/``endsAt`` RFC 3339; firing alerts carry
Go's zero time as ``endsAt``) and Prometheus' alerting rule state (``activeAt`` kept while active).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from oncall.incidents.payload import WebhookAlert
from oncall.store.rows import Row

Verdict = Literal["new", "newer", "same", "resolves", "stale", "older"]
"""``new``: first notification of the fingerprint; ``newer``: a later period; ``same``: same period and
status (a repeat); ``resolves``: the period's resolution; ``stale``: a firing copy of a resolved period;
``older``: a superseded period."""


def stored_time(value: str | None) -> datetime | None:
    """A stored RFC 3339 time (``incident_alerts.starts_at``/``ends_at``) as an aware datetime, or None."""
    return datetime.fromisoformat(value) if value else None


def verdict(previous: Row | None, alert: WebhookAlert) -> Verdict:
    """How ``alert`` merges with ``previous`` (``{"status", "starts_at"}`` as stored, or None)."""
    if previous is None:
        return "new"
    known_start = stored_time(previous["starts_at"])
    if known_start is None or alert.starts_at > known_start:
        return "newer"
    if alert.starts_at < known_start:
        return "older"
    if alert.status == previous["status"]:
        return "same"
    return "resolves" if alert.status == "resolved" else "stale"


def applies(choice: Verdict) -> bool:
    """True when the notified alert replaces the stored one (its labels, annotations, times and status)."""
    return choice in ("new", "newer", "same", "resolves")


def shows_firing(alert: WebhookAlert, choice: Verdict) -> bool:
    """True when the notification is evidence that the alert's current period fired (a stale copy counts:
    Alertmanager did notify it firing; a superseded period does not)."""
    return alert.status == "firing" and choice != "older"


def latest_end(states: dict[str, Row]) -> float | None:
    """The latest ``ends_at`` among stored alert states, as epoch seconds, or None when none has one."""
    ends = [end.timestamp() for state in states.values() if (end := stored_time(state.get("ends_at")))]
    return max(ends) if ends else None
