"""What a due escalation timer does now: page its level (and arm the next one), or stop the chain.

Rules:
- The chain stops when the incident is resolved, or acknowledged at or after the start of the episode
  the chain belongs to (an acknowledgement of an earlier episode does not stop a new one).
- A level the policy no longer has (the roster changed) ends the chain.
- Otherwise the level is paged with its recipients resolved at ``now`` (who is on call then), and the
  next level, when there is one, is due ``delay_s`` seconds later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from oncall.roster.chain import ChainLevel, EscalationChain, Recipient


@dataclass(frozen=True)
class Timer:
    """A ``scheduled`` level: its ``level`` number (1 first), ``due_at`` and the start of its episode (epoch s)."""

    level: int
    due_at: float
    episode_started_at: float


@dataclass(frozen=True)
class IncidentState:
    """What stops a chain: the incident's ``status`` (``firing``/``resolved``) and ``acknowledged_at`` (epoch s)."""

    status: str
    acknowledged_at: float | None


@dataclass(frozen=True)
class Decision:
    """``page`` ``recipients`` with ``reason``, then arm ``next_level`` at ``next_due_at`` (None: the chain
    ends after this page); or ``stop`` the chain for ``reason`` (``acknowledged``, ``resolved``, ``no level N``)."""

    action: Literal["page", "stop"]
    reason: str
    recipients: tuple[Recipient, ...] = ()
    next_level: int | None = None
    next_due_at: float | None = None


def stop_reason(incident: IncidentState, episode_started_at: float) -> str | None:
    """``resolved`` or ``acknowledged`` when the chain must stop, else None."""
    if incident.status == "resolved":
        return "resolved"
    if incident.acknowledged_at is not None and incident.acknowledged_at >= episode_started_at:
        return "acknowledged"
    return None


def page_reason(chain: EscalationChain, level: ChainLevel) -> str:
    """Why these people are paged: ownership, level and each recipient's reason, as one sentence."""
    policy = f" of escalation policy {chain.policy}" if chain.policy else ""
    who = "; ".join(f"{r.name}: {r.reason}" for r in level.recipients) or "nobody to page (console channel)"
    return f"{chain.ownership}; level {level.number}{policy}: {who}"


def decide(timer: Timer, incident: IncidentState, chain: EscalationChain, now: float) -> Decision:
    """The decision for a due ``timer`` at ``now`` (epoch s) under ``chain`` (resolved at ``now``)."""
    why = stop_reason(incident, timer.episode_started_at)
    if why is not None:
        return Decision("stop", why)
    level = chain.level(timer.level)
    if level is None:
        return Decision("stop", f"no level {timer.level} in the escalation policy")
    following = chain.level(timer.level + 1)
    armed = following is not None and level.delay_s is not None
    return Decision(
        "page",
        page_reason(chain, level),
        level.recipients,
        next_level=following.number if armed and following else None,
        next_due_at=now + level.delay_s if armed and level.delay_s is not None else None,
    )
