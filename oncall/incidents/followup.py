"""What an episode's end and a refiring alert cause besides messages, as the outbox worker's ``incident``
channel: work written in the transaction of the status change (``oncall.incidents.lifecycle``) and
done, exactly once per episode, by whichever replica claims the row.

- ``resolved`` (``incident:{id}:episode:{n}:followup:resolved``): the post-mortem draft is written and
  stored (``postmortems``, served at ``GET /incidents/{id}/postmortem``), the episode's phase timings are
  observed (``oncall_incident_phase_seconds``), and when the incident has a Jira issue, a
  ``jira_lifecycle`` ``resolve`` row is queued: the post-mortem as a comment and the done status.
- ``refired`` (a new episode): when the group's last Jira issue resolved within
  ``JIRA_REOPEN_WINDOW_S`` (``decide_refire``), a ``jira_lifecycle`` ``refire`` row reopens or comments
  on that issue instead of a new one being filed; the decision is on the timeline (``ticket_refire``).

The rows make no outside call (``deliver`` succeeds at once); ``settled`` does the work in the
transaction that marks the row delivered, so it commits with the row or not at all.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import httpx

from oncall.catalog.models import Catalog
from oncall.channels.jira.comments import document_adf, refire_document
from oncall.channels.jira.lifecycle import JiraLifecycle, LifecycleConfig, decide_refire
from oncall.channels.jira.lifecycle_delivery import CHANNEL as JIRA_LIFECYCLE
from oncall.channels.jira.lifecycle_delivery import JiraLifecycleDelivery
from oncall.channels.jira.models import JiraConfig
from oncall.channels.outbox import Attempt, Deliverer, Settled
from oncall.channels.whatsapp.format import alert_name, incident_url, postmortem_url
from oncall.history.document import to_markdown
from oncall.history.impact import Slo
from oncall.history.phases import observe_phases, phase_timings
from oncall.history.postmortem import build_postmortem
from oncall.history.similar import find_similar
from oncall.paging.answer import names_by_number
from oncall.settings import Settings
from oncall.store import history, incidents, outbox, pages, postmortems, tickets, timeline, views
from oncall.store.database import Connection
from oncall.store.rows import Row

CHANNEL = "incident"


def followup_key(incident_id: int, episode: int, what: str) -> str:
    """The outbox key of an episode's follow-up, e.g. ``incident:7:episode:1:followup:resolved``."""
    return f"incident:{incident_id}:episode:{episode}:followup:{what}"


async def queue_followup(conn: Connection, incident_id: int, episode: int, what: str, now: float) -> bool:
    """Write the ``resolved`` or ``refired`` follow-up of an episode (once); True when this call wrote it."""
    added = await outbox.add(
        conn,
        event_key=followup_key(incident_id, episode, what),
        channel=CHANNEL,
        operation=what,
        incident_id=incident_id,
        payload={"episode": episode},
        now=now,
    )
    return added is not None


class IncidentFollowUp:
    """The ``incident`` channel (see module docstring).

    Args:
        public_base_url: the agent's public URL (incident and post-mortem links).
        names: WhatsApp number -> person name (the roster's people), for the post-mortem.
        catalog: the service catalog (the service's availability SLO, for the error budget).
        jira_enabled: whether Jira is configured (else no ``jira_lifecycle`` rows are queued).
        reopen_window_s: ``JIRA_REOPEN_WINDOW_S``.
    """

    def __init__(
        self,
        *,
        public_base_url: str,
        names: Mapping[str, str],
        catalog: Catalog | None,
        jira_enabled: bool,
        reopen_window_s: float,
    ) -> None:
        self.public_base_url = public_base_url
        self.names = dict(names)
        self.catalog = catalog
        self.jira_enabled = jira_enabled
        self.reopen_window_s = reopen_window_s

    async def deliver(self, row: Row) -> Attempt:
        """Nothing to call outside: the work is done in ``settled``."""
        return Attempt("delivered")

    async def settled(self, conn: Connection, row: Row, attempt: Attempt, status: Settled) -> None:
        """Do the follow-up in the transaction that marks it delivered."""
        if status != "delivered" or row["incident_id"] is None:
            return
        incident_id, episode = int(row["incident_id"]), int(row["payload"]["episode"])
        if row["operation"] == "resolved":
            await self.resolved(conn, incident_id, episode)
        elif row["operation"] == "refired":
            await self.refired(conn, incident_id, episode)

    def slo(self, service: str | None) -> Slo | None:
        """The service's availability SLO from the catalog, or None."""
        entry = self.catalog.get(service) if self.catalog is not None and service else None
        target = entry.slo.availability if entry is not None and entry.slo is not None else None
        return Slo(target) if target is not None else None

    async def resolved(self, conn: Connection, incident_id: int, episode: int) -> None:
        """Store the post-mortem, observe the phase timings, queue the Jira resolution."""
        detail = await views.incident_detail(conn, incident_id)
        if detail is None:
            return
        now, url = time.time(), incident_url(self.public_base_url, incident_id)
        document = build_postmortem(
            detail,
            pages=await pages.for_incident(conn, incident_id),
            similar=await find_similar(conn, incident_id),
            slo=self.slo(detail.get("service")),
            incident_url=url,
            names=self.names,
            now=now,
        )
        await postmortems.save(conn, incident_id, episode, to_markdown(document), now)
        observe_phases(phase_timings(detail))
        link = postmortem_url(self.public_base_url, incident_id)
        await timeline.add(conn, incident_id, "postmortem", {"episode": episode, "url": link})
        ticket = await tickets.latest(conn, incident_id, ("created",))
        if self.jira_enabled and ticket is not None and ticket.get("jira_key"):
            event = followup_key(incident_id, episode, "jira_resolve")
            payload = {"key": ticket["jira_key"], "event": event, "body": document_adf(document, url)}
            await self._jira(conn, incident_id, event, "resolve", payload, now)

    async def refired(self, conn: Connection, incident_id: int, episode: int) -> None:
        """Reopen or comment on the group's last issue when it resolved within the window."""
        incident = await incidents.get(conn, incident_id)
        if incident is None or not self.jira_enabled:
            return
        now = time.time()
        decision = decide_refire(
            await history.last_ticket_of_group(conn, incident["group_key"]), now, self.reopen_window_s
        )
        await timeline.add(
            conn,
            incident_id,
            "ticket_refire",
            {"episode": episode, "action": decision.action, "key": decision.key, "reason": decision.reason},
        )
        if decision.action == "update_issue" and decision.key is not None:
            event = followup_key(incident_id, episode, "jira_refire")
            url = incident_url(self.public_base_url, incident_id)
            body = refire_document(incident_id, alert_name(incident), episode, url)
            await self._jira(
                conn, incident_id, event, "refire", {"key": decision.key, "event": event, "body": body}, now
            )

    async def _jira(
        self, conn: Connection, incident_id: int, event: str, operation: str, payload: dict, now: float
    ) -> None:
        await outbox.add(
            conn,
            event_key=event,
            channel=JIRA_LIFECYCLE,
            operation=operation,
            incident_id=incident_id,
            payload=payload,
            now=now,
        )  # the outbox worker looks for due rows again after every settled row


def followup_deliverers(
    settings: Settings, http: httpx.AsyncClient, config: JiraConfig | None, catalog: Catalog | None
) -> dict[str, Deliverer]:
    """The outbox channels of follow-ups: ``incident`` (this module) and ``jira_lifecycle`` (comments and
    transitions of existing issues with ``JIRA_DONE_STATUS``, ``JIRA_REOPEN_STATUS``; None config: no Jira)."""
    lifecycle = JiraLifecycle(http, config, LifecycleConfig.from_settings(settings)) if config is not None else None
    followup = IncidentFollowUp(
        public_base_url=settings.public_base_url,
        names=names_by_number(settings),
        catalog=catalog,
        jira_enabled=config is not None,
        reopen_window_s=settings.jira_reopen_window_s,
    )
    return {CHANNEL: followup, JIRA_LIFECYCLE: JiraLifecycleDelivery(lifecycle)}
