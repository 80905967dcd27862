"""Intake of valid webhook bodies: ``POST /alerts`` acknowledges a notification once its body is committed.

Requests arriving together share one transaction (group commit): each waits while the batch before it
commits, then the bodies gathered meanwhile are inserted in one statement and one commit. A body
byte-identical to one this process stored before (Alertmanager re-sends an unchanged group's state
every ``repeat_interval``, and the identical body after a 5xx) is stored as applied, outcome
``duplicate``, without being parsed (``store_copy``; its text is not kept twice: the digest names the first
copy): the alert merge is idempotent, so applying it could change nothing. Once committed,
the body is durable (a crash before it is applied loses nothing: the applier, here or on another replica,
takes it up) and the parsed notification is handed over to this replica's applier
(``oncall.incidents.applier``), which applies it after the acknowledgement. Alertmanager needs only a 2xx
(its notifier retries on 5xx, webhook.go); the answer carries the body's ``raw_id``, whose fate
``GET /alerts/{raw_id}`` reports.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from oncall.incidents.applier import RawAlertApplier
from oncall.incidents.body import ReceivedBody, storable_text
from oncall.incidents.payload import WebhookNotification
from oncall.metrics import ALERT_NOTIFICATIONS
from oncall.store import raw_alerts
from oncall.store.database import Store

log = logging.getLogger("oncall.intake")

MAX_BATCH = 500
"""Most bodies inserted by one statement."""
REMEMBERED_BODIES = 20_000
"""SHA-256 digests of the bodies stored last that a new body is compared with (a few MB of memory)."""


class IntakeError(Exception):
    """The database did not store a body (its batch's transaction failed; the cause is logged)."""


@dataclasses.dataclass(frozen=True)
class Waiting:
    """A body waiting for its batch's commit: the row to insert, its group key, the parsed notification (None
    for a copy of a committed body, which is stored applied) and the request's future (the id)."""

    body: raw_alerts.StoredBody
    group_key: str
    notification: WebhookNotification | None
    future: asyncio.Future[int]


class RawAlertIntake:
    """Commits valid webhook bodies to ``raw_alerts``, many requests per transaction (see module docstring).

    Args:
        store: the agent database.
        replica_id: this replica's ``AGENT_REPLICA_ID`` (``received_by``).
        applier: this replica's applier; it gets each committed body's notification and a wake-up.
    """

    def __init__(self, store: Store, replica_id: str, applier: RawAlertApplier) -> None:
        self.store = store
        self.replica_id = replica_id
        self.applier = applier
        self._waiting: list[Waiting] = []
        self._committer: asyncio.Task[None] | None = None
        self._stored: dict[str, str] = {}  # digest -> group key of committed bodies, oldest first (insertion order)

    async def store_copy(self, sha256: str, size: int) -> int | None:
        """Commit a byte-identical copy (SHA-256 hex digest, size in bytes) of a body committed before as an applied
        duplicate, without parsing it; returns its id, or None when no body with this digest was committed here
        (parse it: ``store_body``).

        Raises:
            IntakeError: the batch's transaction failed (nothing of it was stored; the sender should retry).
        """
        group_key = self._stored.get(sha256)  # the digest names the first copy: its text is not kept twice
        if group_key is None:
            return None
        stored = raw_alerts.StoredBody("", sha256, size, time.time(), self.replica_id, group_key)
        return await self._commit(stored, group_key, None)

    async def store_body(self, received: ReceivedBody) -> int:
        """Commit one valid body (its text redacted and cut as ``storable_text`` keeps it); returns its id.

        Raises:
            ValueError: ``received`` is not a valid notification (``ingest.store_invalid`` keeps those).
            IntakeError: the batch's transaction failed (nothing of it was stored; the sender should retry).
        """
        notification = received.notification
        if notification is None:
            raise ValueError("only a valid notification is applied")
        copy_id = await self.store_copy(received.sha256, received.size)
        if copy_id is not None:
            return copy_id
        text = await storable_text(received.raw, self.store.redact)
        body = raw_alerts.StoredBody(text, received.sha256, received.size, time.time(), self.replica_id)
        return await self._commit(body, notification.group_key, notification)

    async def _commit(
        self, body: raw_alerts.StoredBody, group_key: str, notification: WebhookNotification | None
    ) -> int:
        """Add a body to the next batch and wait for its commit; returns its id."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append(Waiting(body, group_key, notification, future))
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_waiting(), name="raw-alert-intake")
        return await asyncio.shield(future)  # a request cut meanwhile leaves its body in the batch

    async def _commit_waiting(self) -> None:
        """Commit batches until no body waits; a failed batch's requests get the error, the next batch goes on."""
        batch: list[Waiting] = []
        self.applier.pause()  # the acknowledgements go first (the writer, the CPU, the commits' WAL flushes)
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                try:
                    ids = await self._insert(batch)
                except Exception:  # noqa: BLE001 - the requests of this batch answer 503
                    log.exception("storing %d webhook bodies failed", len(batch))
                    _fail(batch, IntakeError("the database did not store the notification"))
                    continue
                for raw_id, waiting in zip(ids, batch, strict=True):
                    if not waiting.future.done():
                        waiting.future.set_result(raw_id)
                self.applier.wake()
        except BaseException:  # cancelled (shutdown): no request waits forever
            _fail(batch + self._waiting, IntakeError("the agent is shutting down"))
            self._waiting = []
            raise
        finally:
            self._committer = None
            self.applier.resume()

    async def _insert(self, batch: list[Waiting]) -> list[int]:
        """Insert and commit one batch, handing its new notifications over to the applier; returns the ids."""
        bodies = self._mark_duplicates(batch)
        ids: list[int] = []
        try:
            async with self.store.write(urgent=True) as conn:
                ids = await raw_alerts.add_received(conn, bodies)
                for raw_id, body, waiting in zip(ids, bodies, batch, strict=True):
                    if body.duplicate_of_group is None and waiting.notification is not None:
                        self.applier.hand_over(raw_id, waiting.notification)
        except BaseException:
            self.applier.forget(ids)
            raise
        self._remember(bodies, batch)
        return ids

    def _mark_duplicates(self, batch: list[Waiting]) -> list[raw_alerts.StoredBody]:
        """The batch's bodies, those identical to one earlier in the batch marked duplicate too (copies of a body
        committed before were marked at receipt)."""
        in_batch: set[str] = set()
        bodies = []
        for waiting in batch:
            body = waiting.body
            if body.duplicate_of_group is None and body.sha256 in in_batch:
                body = dataclasses.replace(body, duplicate_of_group=waiting.group_key)
            in_batch.add(body.sha256)
            bodies.append(body)
        return bodies

    def _remember(self, bodies: list[raw_alerts.StoredBody], batch: list[Waiting]) -> None:
        """Remember the digests and group keys of committed bodies, forgetting the oldest past
        ``REMEMBERED_BODIES``; count the duplicates."""
        for body, waiting in zip(bodies, batch, strict=True):
            if body.duplicate_of_group is not None:
                ALERT_NOTIFICATIONS.labels(outcome="duplicate").inc()
            self._stored.pop(body.sha256, None)
            self._stored[body.sha256] = waiting.group_key
        while len(self._stored) > REMEMBERED_BODIES:
            del self._stored[next(iter(self._stored))]


def _fail(batch: list[Waiting], exc: Exception) -> None:
    """Answer the requests of a batch that was not committed with ``exc``."""
    for waiting in batch:
        if not waiting.future.done():
            waiting.future.set_exception(exc)
