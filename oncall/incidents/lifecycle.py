"""The incident lifecycle: the ONE place that changes an incident's status and investigation status.

Incident ``status``: ``firing`` -> ``resolved`` (all alerts resolved, or by hand) -> ``firing`` again.
Firing again is a new *episode* (``episode`` + 1, its own investigation and page) when an alert fires
that started after the episode's end (the alerts' own ``endsAt``); an alert that started before it
belongs to the episode that was thought over, which goes on without a second page (``unresolved``).
``acknowledged_at/by``: set once, by the first acknowledgement. ``investigation_status`` mirrors the
current episode's investigation: ``pending`` -> ``running`` -> ``done`` | ``failed``.

Notices: the messages a status change causes are written to the outbox in the same transaction, keyed
``incident:{id}:episode:{n}:{what}`` so each is written once per episode:
- ``diagnosis`` (or ``investigation_failed``) when the episode's investigation ends;
- ``resolved`` once the episode is resolved by its alerts AND its investigation has ended, whichever
  comes last, so the resolved notice always follows the diagnosis (also across a restart); an episode
  that was never investigated (never seen firing) gets none, and a resolution by hand gets none (the
  engineer who resolved it is answered directly). It goes to everyone paged for the episode.

Paging (``oncall.paging.escalation``): the diagnosis (or investigation_failed) notice starts the episode's
escalation chain in its transaction and is addressed to level 1 (who, and why, in the payload); an
acknowledgement or a resolution stops the chain in its own transaction. Follow-ups
(``oncall.incidents.followup``, outbox channel ``incident``): the resolved episode's post-mortem and Jira
resolution once it is resolved (by its alerts or by hand) and its investigation has ended; a new episode's
Jira reopen check.

Every function takes the caller's connection, so a status change commits in the same transaction as
whatever caused it, and records the change on the incident's timeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oncall.diagnosis import Diagnosis
from oncall.incidents.followup import queue_followup
from oncall.paging.escalation import Escalations, stop_chain
from oncall.store import episodes, incidents, outbox, pages, timeline
from oncall.store.database import Connection
from oncall.store.rows import Row

NOTICE_CHANNEL = "whatsapp"
FINISHED = ("done", "failed")


@dataclass(frozen=True)
class Acknowledgement:
    """Outcome of ``acknowledge``: the incident row after it, and whether it was acknowledged before."""

    incident: Row
    already: bool


@dataclass(frozen=True)
class Resolution:
    """Outcome of ``resolve_by_hand``: the incident row after it, and whether it was resolved before."""

    incident: Row
    already: bool


def notice_key(incident_id: int, episode: int, what: str) -> str:
    """The outbox event key of an episode's notice, e.g. ``incident:7:episode:1:diagnosis``."""
    return f"incident:{incident_id}:episode:{episode}:{what}"


async def _notice(conn: Connection, incident_id: int, episode: int, what: str, now: float, **extra: Any) -> bool:
    """Write a notice for the WhatsApp channel (rendered and sent by its outbox worker); False when written before."""
    added = await outbox.add(
        conn,
        event_key=notice_key(incident_id, episode, what),
        channel=NOTICE_CHANNEL,
        operation="notice",
        incident_id=incident_id,
        payload={"what": what, "episode": episode, **extra},
        now=now,
    )
    return added is not None


async def _resolved_notice_if_due(conn: Connection, incident_id: int, episode: int, now: float) -> None:
    """Once the episode is resolved (by its alerts or by hand) and its investigation has ended: its
    ``resolved`` follow-up (post-mortem, Jira), and when its alerts resolved it, the ``resolved`` notice to
    everyone paged for it (the default recipients when nobody was)."""
    row = await episodes.get(conn, incident_id, episode)
    if row is None or row["investigation"] not in FINISHED or row["resolution"] is None:
        return
    await queue_followup(conn, incident_id, episode, "resolved", now)
    if row["resolution"] == "alerts":
        paged = await pages.paged_numbers(conn, incident_id, episode)
        await _notice(conn, incident_id, episode, "resolved", now, **({"to": paged} if paged else {}))


async def _page(
    conn: Connection, escalations: Escalations | None, incident_id: int, episode: int, now: float
) -> dict[str, Any]:
    """Start the episode's escalation chain; the notice payload addressing level 1 (``to``, ``paged``: why),
    or {} without escalations or when the chain was started before."""
    incident = await incidents.get(conn, incident_id)
    row = await episodes.get(conn, incident_id, episode)
    if escalations is None or incident is None or row is None:
        return {}
    page = await escalations.start(
        conn,
        incident_id=incident_id,
        episode=episode,
        service=incident["service"],
        episode_started_at=float(row["opened_at"]),
        now=now,
    )
    return {"to": page.numbers, "paged": page.reason} if page is not None else {}


async def open_or_lock(conn: Connection, values: dict[str, Any], receiver: str, now: float) -> tuple[Row, bool]:
    """The incident of ``values["group_key"]``, created ``firing`` in episode 1 when absent, locked for the
    transaction; returns ``(incident row, created)``."""
    incident = await incidents.by_group_key(conn, values["group_key"])
    if incident is not None:
        return incident, False
    incident_id = await incidents.add_if_absent(
        conn, {**values, "status": "firing", "investigation_status": "pending", "episode": 1}
    )
    if incident_id is not None:
        await episodes.open_episode(conn, incident_id, 1, now)
        await timeline.add(conn, incident_id, "created", {"group_key": values["group_key"], "receiver": receiver})
    incident = await incidents.by_group_key(conn, values["group_key"])
    assert incident is not None  # inserted above, or by a transaction that committed before our lock
    return incident, incident_id is not None


async def new_episode(conn: Connection, incident: Row, fingerprints: list[str], now: float) -> int:
    """A resolved incident fires again after its episode ended: the next episode; returns its number."""
    number = int(incident["episode"]) + 1
    await incidents.update_fields(
        conn,
        incident["id"],
        status="firing",
        resolved_at=None,
        investigation_status="pending",
        episode=number,
        episode_after=incident["episode_ends_at"],
        episode_ends_at=None,
    )
    await episodes.open_episode(conn, incident["id"], number, now)
    await timeline.add(conn, incident["id"], "reopened", {"fingerprints": fingerprints, "episode": number})
    await queue_followup(conn, incident["id"], number, "refired", now)
    return number


async def unresolve(conn: Connection, incident: Row, fingerprints: list[str]) -> None:
    """An alert that started before the episode's end fires: the episode was not over (no new page)."""
    await incidents.update_fields(conn, incident["id"], status="firing", resolved_at=None, episode_ends_at=None)
    await episodes.set_resolution(conn, incident["id"], incident["episode"], None, None)
    await timeline.add(
        conn, incident["id"], "unresolved", {"fingerprints": fingerprints, "episode": incident["episode"]}
    )


async def resolve_from_alerts(conn: Connection, incident: Row, ends_at: float | None, now: float) -> None:
    """Every alert of the incident resolved; ``ends_at``: the latest alert ``endsAt`` (epoch s), the episode's end."""
    episode = int(incident["episode"])
    await incidents.update_fields(
        conn, incident["id"], status="resolved", resolved_at=now, episode_ends_at=ends_at if ends_at else now
    )
    await episodes.set_resolution(conn, incident["id"], episode, now, "alerts")
    await timeline.add(conn, incident["id"], "resolved", {"episode": episode, "ends_at": ends_at})
    await stop_chain(conn, incident["id"], "resolved", now, episode)
    await _resolved_notice_if_due(conn, incident["id"], episode, now)


async def queue_investigation(conn: Connection, incident_id: int, episode: int, now: float) -> bool:
    """An alert of the episode was seen firing: its one investigation is queued; True when this call queued it."""
    return await episodes.queue_investigation(conn, incident_id, episode, now)


async def acknowledge(
    conn: Connection, incident_id: int, by: str, now: float, note: str | None = None
) -> Acknowledgement:
    """Acknowledge the incident for ``by``; the first acknowledgement wins.

    Raises:
        LookupError: no such incident.
    """
    changed = await incidents.acknowledge_once(conn, incident_id, by, now)
    incident = await _existing(conn, incident_id)
    if changed:
        await timeline.add(conn, incident_id, "acknowledged", {"by": by, "note": note})
        await stop_chain(conn, incident_id, "acknowledged", now, int(incident["episode"]))
    return Acknowledgement(incident, already=not changed)


async def resolve_by_hand(
    conn: Connection, incident_id: int, by: str, now: float, note: str | None = None
) -> Resolution:
    """Resolve the incident by hand for ``by`` (its alerts may still fire); the episode ends now.

    Raises:
        LookupError: no such incident.
    """
    changed = await incidents.resolve_if_open(conn, incident_id, now)
    incident = await _existing(conn, incident_id)
    if changed:
        await incidents.update_fields(conn, incident_id, episode_ends_at=now)
        await episodes.set_resolution(conn, incident_id, incident["episode"], now, "manual")
        await timeline.add(conn, incident_id, "resolved", {"by": by, "manual": True, "note": note})
        await stop_chain(conn, incident_id, "resolved", now, int(incident["episode"]))
        await _resolved_notice_if_due(conn, incident_id, int(incident["episode"]), now)
    return Resolution(incident, already=not changed)


async def begin_investigation(
    conn: Connection, claim: Row, engine: str, alert_count: int, replica_id: str, now: float
) -> None:
    """The investigation of ``claim`` (an ``episodes`` row just claimed) starts on ``replica_id`` with ``engine``.

    A claim taken over (a previous attempt's replica lost its lease) or handed back records
    ``investigation_resumed`` first.
    """
    incident_id, episode = int(claim["incident_id"]), int(claim["number"])
    await incidents.set_investigation_status(conn, incident_id, "running", now, episode=episode)
    if claim["attempts"] > 1:
        await timeline.add(
            conn,
            incident_id,
            "investigation_resumed",
            {
                "episode": episode,
                "replica": replica_id,
                "previous_replica": claim["claimed_by"],
                "attempt": claim["attempts"],
            },
        )
    await timeline.add(
        conn,
        incident_id,
        "investigation_started",
        {"engine": engine, "alerts": alert_count, "episode": episode, "replica": replica_id},
    )


async def record_diagnosis(
    conn: Connection,
    incident_id: int,
    episode: int,
    diagnosis: Diagnosis,
    replica_id: str,
    now: float,
    escalations: Escalations | None = None,
) -> None:
    """Store the diagnosis on the incident (its investigation is ``done``) and write the diagnosis notice
    to level 1 of the escalation chain it starts (``escalations``; None: the default recipients), and the
    resolved notice when the episode is already resolved by its alerts."""
    await incidents.update_fields(
        conn, incident_id, diagnosis=diagnosis.model_dump(mode="json"), diagnosed_at=now, updated_at=now
    )
    await incidents.set_investigation_status(conn, incident_id, "done", now, episode=episode)
    await timeline.add(
        conn,
        incident_id,
        "diagnosis",
        {
            "engine": diagnosis.engine,
            "fault_type": diagnosis.fault_type.value,
            "priority": diagnosis.priority,
            "affected_replicas": diagnosis.affected_replicas,
            "summary": diagnosis.summary,
            "episode": episode,
            "replica": replica_id,
        },
    )
    await _notice(
        conn, incident_id, episode, "diagnosis", now, **await _page(conn, escalations, incident_id, episode, now)
    )
    await _resolved_notice_if_due(conn, incident_id, episode, now)


async def fail_investigation(
    conn: Connection,
    incident_id: int,
    episode: int,
    error: str,
    replica_id: str,
    now: float,
    escalations: Escalations | None = None,
) -> None:
    """The episode's investigation failed with ``error``: recorded, and level 1 is paged regardless."""
    await incidents.set_investigation_status(conn, incident_id, "failed", now, episode=episode)
    await timeline.add(
        conn, incident_id, "investigation_failed", {"error": error, "episode": episode, "replica": replica_id}
    )
    page = await _page(conn, escalations, incident_id, episode, now)
    await _notice(conn, incident_id, episode, "investigation_failed", now, error=error, **page)
    await _resolved_notice_if_due(conn, incident_id, episode, now)


async def _existing(conn: Connection, incident_id: int) -> Row:
    incident = await incidents.get(conn, incident_id)
    if incident is None:
        raise LookupError(f"incident {incident_id} not found")
    return incident
