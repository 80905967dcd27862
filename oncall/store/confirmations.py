"""``confirmations``: actions the agent proposed to an engineer ("Create a Jira task for Ravi Kumar? Reply
YES") and their outcome.

A proposal is ``pending`` until the engineer answers (``confirmed`` / ``declined``), a newer proposal
to the same engineer replaces it (``superseded``) or it expires. Deciding is one conditional UPDATE
(``WHERE status = 'pending' AND expires_at > now``), so of two replicas (or two retried webhooks)
handling the same YES exactly one wins and executes the action.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update

from oncall.store.database import Connection, storable
from oncall.store.rows import Row, first_row
from oncall.store.schema import confirmations


async def propose(
    conn: Connection,
    *,
    sender: str,
    incident_id: int,
    action: str,
    arguments: dict[str, Any],
    question: str,
    proposed_by: str,
    now: float,
    ttl_s: float,
) -> int:
    """Store a pending proposal (superseding the sender's earlier pending ones) and return its id.

    Args:
        sender: the engineer asked (``whatsapp:+E164``); only their YES confirms it.
        action: the intent to execute (``create_ticket``, ``acknowledge``, ``resolve``, ...).
        arguments: exactly what will be executed (e.g. ``{"assignee": "Ravi Kumar", "force_new": false}``).
        question: the text shown to the engineer.
        proposed_by: ``parser`` or the model engine name.
        now: epoch seconds; ``ttl_s``: seconds until it expires.
    """
    await conn.execute(
        update(confirmations)
        .where(confirmations.c.sender == sender, confirmations.c.status == "pending")
        .values(status="superseded", decided_at=now)
    )
    result = await conn.execute(
        insert(confirmations)
        .values(
            sender=storable(sender),
            incident_id=incident_id,
            action=action,
            arguments=arguments,
            question=storable(question),
            proposed_by=proposed_by,
            status="pending",
            created_at=now,
            expires_at=now + ttl_s,
        )
        .returning(confirmations.c.id)
    )
    return int(result.scalar_one())


async def latest_pending(conn: Connection, sender: str, incident_id: int | None, now: float) -> Row | None:
    """The sender's newest pending, unexpired proposal (for ``incident_id`` when given), or None."""
    query = select(confirmations).where(
        confirmations.c.sender == sender, confirmations.c.status == "pending", confirmations.c.expires_at > now
    )
    if incident_id is not None:
        query = query.where(confirmations.c.incident_id == incident_id)
    return first_row(await conn.execute(query.order_by(confirmations.c.id.desc()).limit(1)))


async def latest_expired(conn: Connection, sender: str, now: float) -> Row | None:
    """The sender's newest proposal that expired unanswered, or None (to say why a YES did nothing)."""
    query = select(confirmations).where(
        confirmations.c.sender == sender, confirmations.c.status == "pending", confirmations.c.expires_at <= now
    )
    return first_row(await conn.execute(query.order_by(confirmations.c.id.desc()).limit(1)))


async def decide(conn: Connection, confirmation_id: int, status: str, now: float) -> bool:
    """Mark a pending, unexpired proposal ``confirmed`` or ``declined``; False when another answer won."""
    result = await conn.execute(
        update(confirmations)
        .where(
            confirmations.c.id == confirmation_id,
            confirmations.c.status == "pending",
            confirmations.c.expires_at > now,
        )
        .values(status=status, decided_at=now)
    )
    return bool(result.rowcount)
