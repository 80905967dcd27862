"""The answer to "who is on call?" on WhatsApp: each team's person now, until when, who is next, and
(for a service) the escalation chain that would be paged."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from oncall.roster.chain import EscalationChain, OwnerTeams, escalation_chain
from oncall.roster.models import Roster
from oncall.roster.rotation import describe_instant, next_on_call, on_call


def delay_text(seconds: float) -> str:
    """``5 min``, ``1 h 30 min`` or ``45 s``."""
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    hours, minutes = divmod(round(total / 60), 60)
    return f"{hours} h {minutes} min" if hours and minutes else f"{hours} h" if hours else f"{minutes} min"


def team_line(roster: Roster, team_id: str, at: datetime, fallback: Sequence[str]) -> str:
    """``• inventory: Priya Sharma until Mon 30 Nov 09:00 Europe/Berlin (weekly rotation ...); next Ravi Kumar``."""
    team = roster.teams[team_id]
    zone = team.rotation.timezone if team.rotation else None
    current = on_call(roster, team_id, at)
    if current is None:
        to = ", ".join(fallback) or "nobody"
        return f"• {team_id}: nobody on call (pages go to the ONCALL_WHATSAPP_NUMBERS fallback: {to})"
    until = f" until {describe_instant(current.until, zone)}" if current.until else ""
    following = next_on_call(roster, team_id, at)
    after = f"; next {following.person.name}" if following and following.person_id != current.person_id else ""
    return f"• {team_id}: {current.person.name}{until} ({current.reason}){after}"


def chain_lines(chain: EscalationChain) -> list[str]:
    """The levels of ``chain``: ``1. Priya Sharma, then after 5 min unacknowledged:``."""
    lines = [f"Escalation for {chain.service or 'this service'}: {chain.ownership}"]
    for level in chain.levels:
        names = ", ".join(recipient.name for recipient in level.recipients) or "nobody"
        then = (
            f", after {delay_text(level.delay_s)} unacknowledged:"
            if level.delay_s and level != chain.levels[-1]
            else ""
        )
        lines.append(f"{level.number}. {names}{then}")
    return lines


def who_is_on_call(
    roster: Roster | None,
    at: datetime,
    fallback: Sequence[str] = (),
    *,
    service: str | None = None,
    catalog: OwnerTeams | None = None,
) -> str:
    """The WhatsApp answer to "who is on call?" at the instant ``at`` (aware).

    Args:
        roster: the roster, or None when ``ONCALL_FILE`` is unset (the fallback numbers are named).
        fallback: ``ONCALL_WHATSAPP_NUMBERS``.
        service: also list the escalation chain of this service (e.g. the incident's).
        catalog: owner teams from the service catalog (see ``OwnerTeams``).
    """
    if roster is None:
        numbers = ", ".join(fallback) or "nobody (the console channel)"
        return f"No on-call roster is configured (ONCALL_FILE). Incidents page: {numbers}"
    lines = [f"*On call now* ({describe_instant(at)})"]
    lines += [team_line(roster, team_id, at, fallback) for team_id in roster.teams]
    if service is not None:
        lines += ["", *chain_lines(escalation_chain(roster, service, at, fallback, catalog))]
    return "\n".join(lines)
