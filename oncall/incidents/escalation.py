"""The escalation poller: each agent replica claims the escalation levels that are due (``pages`` rows,
``oncall.paging.escalation``) and writes one WhatsApp message per page to the outbox, in the transaction
that marks the level paged.

- Exactly once: a level is claimed and marked ``paged`` in the same transaction that queues its messages
  (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, serialised writers on SQLite), keyed
  ``incident:{id}:episode:{n}:page:{level}``; a restart or another replica never pages it again.
- Timers live in the store: a restarted replica finds the armed levels and pages them when due.
- A level whose incident was acknowledged or resolved meanwhile is not paged: the chain stops there.
- Each page carries the escalation line (who is paged and why) and the diagnosis (or the incident's
  title when the investigation produced none).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from oncall.channels.whatsapp.format import alert_name, format_diagnosis, incident_url
from oncall.channels.whatsapp.sender import WhatsAppSender
from oncall.diagnosis import Diagnosis
from oncall.paging.escalation import Escalations, Page, escalation_notice
from oncall.settings import Settings
from oncall.store import incidents, pages
from oncall.store.database import Store
from oncall.store.rows import Row
from oncall.tasks import Poller


def page_key(page: Page) -> str:
    """The outbox event key of a page, e.g. ``incident:7:episode:1:page:2``."""
    return f"incident:{page.incident_id}:episode:{page.episode}:page:{page.level}"


def page_text(page: Page, incident: Row, public_base_url: str) -> str:
    """The escalated page: the escalation line, why these people, then the diagnosis."""
    head = f"{escalation_notice(page, alert_name(incident))}\nWhy: {page.reason}"
    if incident.get("diagnosis"):
        body = format_diagnosis(Diagnosis.model_validate(incident["diagnosis"]), incident, public_base_url)
    else:
        link = incident_url(public_base_url, int(incident["id"]))
        body = f"#{incident['id']} {incident.get('title') or alert_name(incident)}: {link}"
    return f"{head}\n\n{body}"


class EscalationPoller:
    """Pages the due escalation levels of every incident (see module docstring).

    Args:
        store: the agent database.
        escalations: the chains over the roster (``Escalations(settings.roster, ONCALL_WHATSAPP_NUMBERS, catalog)``).
        sender: queues the page messages (the outbox's WhatsApp channel).
        public_base_url: the agent's public URL, for incident links.
        poll_s: longest wait between two looks for due levels, seconds (``WORK_POLL_S``).
        on_paged: called after pages were committed (wakes the outbox worker).
    """

    def __init__(
        self,
        store: Store,
        escalations: Escalations,
        sender: WhatsAppSender,
        public_base_url: str,
        *,
        poll_s: float = 2.0,
        on_paged: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.escalations = escalations
        self.sender = sender
        self.public_base_url = public_base_url
        self.on_paged = on_paged
        self.poller = Poller("escalation", self.run_due, poll_s)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: Store,
        escalations: Escalations,
        sender: WhatsAppSender,
        on_paged: Callable[[], None] = lambda: None,
    ) -> EscalationPoller:
        """This replica's poller: ``PUBLIC_BASE_URL`` links, a look every ``WORK_POLL_S`` seconds at most."""
        return cls(store, escalations, sender, settings.public_base_url, poll_s=settings.work_poll_s, on_paged=on_paged)

    def start(self) -> None:
        """Start paging due levels."""
        self.poller.start()

    async def stop(self) -> None:
        """Stop the poller (a level being paged commits or rolls back as a whole)."""
        await self.poller.stop()

    async def run_due(self) -> float | None:
        """Page every level due now; returns seconds until the next armed level is due (None: none armed)."""
        now = time.time()
        async with self.store.write() as conn:
            due = await self.escalations.claim_due(conn, now)
            for page in due:
                incident = await incidents.get(conn, page.incident_id)
                if incident is None:
                    continue
                text = page_text(page, incident, self.public_base_url)
                await self.sender.queue(
                    conn, text, incident_id=page.incident_id, event=page_key(page), to=page.numbers or None, now=now
                )
        if due:
            self.on_paged()
        async with self.store.read() as conn:
            next_due = await pages.next_due_at(conn)
        return None if next_due is None else max(0.0, next_due - time.time())
