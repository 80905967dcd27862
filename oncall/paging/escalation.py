"""Escalation chains in the store: start one per incident episode, claim the levels that are due, stop
them on acknowledgement or resolution. Every page and every stop is on the incident's timeline
(``paged``, ``escalation_stopped``).

Each method takes the caller's write connection (``Store.write()``) and returns what must be sent,
so the caller can queue the messages in the same transaction (transactional outbox): a level is
marked ``paged`` exactly when its messages are queued, and a restart neither loses a timer nor
pages a level twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from oncall.paging.planner import IncidentState, Timer, decide, page_reason, stop_reason
from oncall.roster.chain import EscalationChain, OwnerTeams, Recipient, escalation_chain
from oncall.roster.models import Roster
from oncall.store import incidents, pages, timeline
from oncall.store.database import Connection
from oncall.store.rows import Row

CLAIM_BATCH = 50
"""Most due levels claimed by one ``claim_due`` call."""


@dataclass(frozen=True)
class Page:
    """A page to send now: ``level`` of ``episode`` of ``incident_id`` to ``recipients`` (empty: nobody
    configured, send to the console channel), ``reason`` why them, and when the next level is due
    (``next_due_at`` epoch s, None when the chain ends here). ``page_id`` is the ``pages`` row."""

    page_id: int
    incident_id: int
    episode: int
    level: int
    recipients: tuple[Recipient, ...]
    reason: str
    next_due_at: float | None

    @property
    def escalated(self) -> bool:
        """True for levels after the first (the message should say it escalates)."""
        return self.level > 1

    @property
    def numbers(self) -> list[str]:
        """The recipients' WhatsApp numbers (``whatsapp:+E164``)."""
        return [recipient.whatsapp for recipient in self.recipients]


def instant(epoch_s: float) -> datetime:
    """An epoch time (seconds) as an aware UTC datetime."""
    return datetime.fromtimestamp(epoch_s, UTC)


def escalation_notice(page: Page, alert: str) -> str:
    """The first line of an escalated page: ``⏫ Escalation level 2: #12 InventoryHighErrorRate is not
    acknowledged; you are paged because ...``."""
    names = ", ".join(recipient.name for recipient in page.recipients) or "the console channel"
    return (
        f"⏫ *Escalation level {page.level}*: #{page.incident_id} {alert} is not acknowledged. "
        f"Paging {names}. Reply #{page.incident_id} ack to stop the escalation."
    )


class Escalations:
    """Escalation chains over the roster.

    Args:
        roster: the validated roster (``Settings.roster``), or None: every page goes to ``fallback``.
        fallback: ``ONCALL_WHATSAPP_NUMBERS`` (``whatsapp:+E164``), paged where nobody else is found.
        catalog: owner teams from the service catalog, consulted before the roster's ``services``.
        batch: most due levels claimed per ``claim_due`` call.
    """

    def __init__(
        self,
        roster: Roster | None,
        fallback: Sequence[str] = (),
        catalog: OwnerTeams | None = None,
        batch: int = CLAIM_BATCH,
    ) -> None:
        self.roster = roster
        self.fallback = tuple(fallback)
        self.catalog = catalog
        self.batch = batch

    def chain(self, service: str | None, now: float) -> EscalationChain:
        """The chain for ``service`` with recipients resolved at ``now`` (epoch s)."""
        return escalation_chain(self.roster, service, instant(now), self.fallback, self.catalog)

    async def start(
        self,
        conn: Connection,
        *,
        incident_id: int,
        episode: int,
        service: str | None,
        episode_started_at: float,
        now: float,
    ) -> Page | None:
        """Page level 1 of the episode now and arm level 2.

        Args:
            episode: the incident's episode number (1 first; a reopened incident starts a new chain).
            service: the incident's service (decides the owning team).
            episode_started_at: when the episode began (epoch s): an acknowledgement from then on stops it.
            now: epoch s.
        Returns:
            The level-1 page to send, or None when this episode's chain was started before (never twice).
        Raises:
            LookupError: no such incident.
        """
        incident = await incidents.get(conn, incident_id)
        if incident is None:
            raise LookupError(f"incident {incident_id} not found")
        chain = self.chain(service, now)
        page_id = await pages.schedule(
            conn,
            incident_id=incident_id,
            episode=episode,
            level=1,
            due_at=now,
            episode_started_at=episode_started_at,
            service=service,
            team=chain.team,
            policy=chain.policy,
            now=now,
        )
        if page_id is None:
            return None
        first = chain.levels[0]
        state = IncidentState(str(incident["status"]), incident["acknowledged_at"])
        armed = first.delay_s is not None and len(chain.levels) > 1 and stop_reason(state, episode_started_at) is None
        page = Page(
            page_id,
            incident_id,
            episode,
            1,
            first.recipients,
            page_reason(chain, first),
            now + first.delay_s if armed and first.delay_s is not None else None,
        )
        await self._paged(conn, page, chain, episode_started_at, now)
        return page

    async def claim_due(self, conn: Connection, now: float) -> list[Page]:
        """Claim every level due at ``now`` (epoch s, at most ``batch``): page it and arm the next, or
        stop the chain when the incident was acknowledged or resolved. Returns the pages to send."""
        sent = []
        for row in await pages.claim_due(conn, now, self.batch):
            chain = self.chain(row["service"], now)
            timer = Timer(int(row["level"]), float(row["due_at"]), float(row["episode_started_at"]))
            decision = decide(timer, IncidentState(str(row["incident_status"]), row["acknowledged_at"]), chain, now)
            if decision.action == "stop":
                if await pages.cancel(conn, int(row["id"]), decision.reason, now):
                    await self._stopped(conn, row, decision.reason, 1)
                continue
            page = Page(
                int(row["id"]),
                int(row["incident_id"]),
                int(row["episode"]),
                timer.level,
                decision.recipients,
                decision.reason,
                decision.next_due_at,
            )
            if await self._paged(conn, page, chain, timer.episode_started_at, now):
                sent.append(page)
        return sent

    async def stop(
        self, conn: Connection, incident_id: int, reason: str, now: float, episode: int | None = None
    ) -> int:
        """Stop the incident's chain (see ``stop_chain``); returns how many armed levels were cancelled."""
        return await stop_chain(conn, incident_id, reason, now, episode)

    async def _paged(
        self, conn: Connection, page: Page, chain: EscalationChain, episode_started_at: float, now: float
    ) -> bool:
        """Mark the row paged, put the page on the timeline and arm the next level; False when another
        claimer paged the row first."""
        recipients = [asdict(recipient) for recipient in page.recipients]
        if not await pages.mark_paged(conn, page.page_id, recipients=recipients, reason=page.reason, now=now):
            return False
        detail = {
            "level": page.level,
            "episode": page.episode,
            "escalated": page.escalated,
            "recipients": [{"name": r.name, "whatsapp": r.whatsapp, "person_id": r.person_id} for r in page.recipients],
            "reason": page.reason,
            "next_level_due_at": page.next_due_at,
        }
        await timeline.add(conn, page.incident_id, "paged", detail)
        if page.next_due_at is not None:
            await pages.schedule(
                conn,
                incident_id=page.incident_id,
                episode=page.episode,
                level=page.level + 1,
                due_at=page.next_due_at,
                episode_started_at=episode_started_at,
                service=chain.service,
                team=chain.team,
                policy=chain.policy,
                now=now,
            )
        return True

    @staticmethod
    async def _stopped(conn: Connection, row: Row, reason: str, cancelled: int) -> None:
        await _stopped(conn, row, reason, cancelled)


async def _stopped(conn: Connection, row: Row, reason: str, cancelled: int) -> None:
    detail = {"reason": reason, "episode": row.get("episode"), "cancelled_levels": cancelled}
    if "level" in row:
        detail["level"] = row["level"]
    await timeline.add(conn, int(row["incident_id"]), "escalation_stopped", detail)


async def stop_chain(conn: Connection, incident_id: int, reason: str, now: float, episode: int | None = None) -> int:
    """Stop the incident's chain (one ``episode`` only when given) for ``reason`` (``acknowledged``,
    ``resolved``) in the caller's transaction: cancels its armed levels, records ``escalation_stopped``
    when there were any; returns how many were cancelled. Needs no roster (the acknowledging and resolving
    transactions call it)."""
    cancelled = await pages.cancel_open(conn, incident_id, reason, now, episode)
    if cancelled:
        await _stopped(conn, {"incident_id": incident_id, "episode": episode}, reason, cancelled)
    return cancelled
