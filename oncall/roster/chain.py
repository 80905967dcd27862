"""Who is paged for a service: its owning team (service catalog first, then the roster's ``services``,
then ``default_team``), that team's escalation policy, and each level's recipients at an instant.

When there is no roster, no owning team, or nobody on call for a level, the level falls back to the
one-person list ``ONCALL_WHATSAPP_NUMBERS`` (passed in as ``fallback``), and the reason says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from oncall.roster.models import Level, Person, Roster
from oncall.roster.rotation import on_call


class OwnerTeams(Protocol):
    """Service ownership from the service catalog (``SERVICES_FILE``): the owner team id of a service, or
    None when the catalog does not know the service. Its answer wins over the roster's ``services``."""

    def owner_team(self, service: str) -> str | None: ...


@dataclass(frozen=True)
class Recipient:
    """One number to page: ``whatsapp`` (``whatsapp:+E164``), the person's ``name`` (the number itself
    for a fallback number), ``person_id``/``jira`` from the roster (None for fallback numbers), and
    ``reason``, why this person is paged."""

    whatsapp: str
    name: str
    reason: str
    person_id: str | None = None
    jira: str | None = None


@dataclass(frozen=True)
class ChainLevel:
    """Level ``number`` (1 first) of a chain: its recipients now, and ``delay_s`` seconds to wait
    unacknowledged before the next level (None: the last level)."""

    number: int
    delay_s: float | None
    recipients: tuple[Recipient, ...]


@dataclass(frozen=True)
class EscalationChain:
    """The chain for ``service``: owning ``team`` and ``policy`` (None without one), ``ownership`` (why
    this team, a sentence), and the ``levels`` in paging order (at least one)."""

    service: str | None
    team: str | None
    policy: str | None
    ownership: str
    levels: tuple[ChainLevel, ...]

    def level(self, number: int) -> ChainLevel | None:
        """Level ``number`` (1-based), or None past the last."""
        return self.levels[number - 1] if 1 <= number <= len(self.levels) else None


def owning_team(roster: Roster, service: str | None, catalog: OwnerTeams | None = None) -> tuple[str | None, str]:
    """The team owning ``service`` and why: the catalog's owner when the roster has that team, else
    the roster's ``services`` entry, else ``default_team``; ``(None, why)`` when none applies."""
    label = service or "(unknown service)"
    notes = ""
    if catalog is not None and service:
        team = catalog.owner_team(service)
        if team is not None and team in roster.teams:
            return team, f"service {label} is owned by team {team} (service catalog)"
        if team is not None:
            notes = f" (the service catalog names team {team}, which the roster does not define)"
    if service and service in roster.services:
        team = roster.services[service]
        return team, f"service {label} is owned by team {team} (on-call roster){notes}"
    if roster.default_team is not None:
        return roster.default_team, f"service {label} has no owner team; default team {roster.default_team}{notes}"
    return None, f"service {label} has no owner team in the roster{notes}"


def fallback_recipients(fallback: Sequence[str], why: str) -> tuple[Recipient, ...]:
    """The ``ONCALL_WHATSAPP_NUMBERS`` fallback, each with ``why`` it is used."""
    reason = f"{why}: ONCALL_WHATSAPP_NUMBERS fallback"
    return tuple(Recipient(whatsapp=number, name=number, reason=reason) for number in dict.fromkeys(fallback))


def _person(person_id: str, person: Person, reason: str) -> Recipient:
    return Recipient(whatsapp=person.whatsapp, name=person.name, reason=reason, person_id=person_id, jira=person.jira)


def level_recipients(
    roster: Roster, policy_id: str, number: int, level: Level, at: datetime, fallback: Sequence[str]
) -> tuple[Recipient, ...]:
    """The recipients of ``level`` (number ``number`` of policy ``policy_id``) at the instant ``at``:
    named people and whoever is on call for each ``on_call`` team, one entry per number; the fallback
    numbers when that leaves nobody."""
    found: dict[str, Recipient] = {}
    gaps: list[str] = []
    for target in level.targets:
        if target.person is not None:
            reason = f"named in level {number} of escalation policy {policy_id}"
            found.setdefault(
                roster.people[target.person].whatsapp, _person(target.person, roster.people[target.person], reason)
            )
            continue
        assert target.on_call is not None  # the roster's reference checks guarantee one of the two
        current = on_call(roster, target.on_call, at)
        if current is None:
            gaps.append(target.on_call)
            continue
        reason = f"on call for team {target.on_call} ({current.reason})"
        found.setdefault(current.person.whatsapp, _person(current.person_id, current.person, reason))
    if found:
        return tuple(found.values())
    return fallback_recipients(fallback, f"nobody on call for team {', '.join(gaps)}")


def escalation_chain(
    roster: Roster | None,
    service: str | None,
    at: datetime,
    fallback: Sequence[str] = (),
    catalog: OwnerTeams | None = None,
) -> EscalationChain:
    """The escalation chain for ``service`` at the instant ``at`` (aware).

    Args:
        roster: the validated roster, or None when ``ONCALL_FILE`` is unset.
        service: the incident's service (``incidents.service``), None when unknown.
        at: the instant recipients are resolved for (each level is re-resolved when it is paged).
        fallback: ``ONCALL_WHATSAPP_NUMBERS`` (``whatsapp:+E164``), used where nobody else is found.
        catalog: owner teams from the service catalog, consulted before the roster's ``services``.
    Returns:
        An ``EscalationChain``; without a roster or an owning team, one level of fallback numbers.
    """
    if roster is None:
        why = "no on-call roster (ONCALL_FILE unset)"
        return EscalationChain(service, None, None, why, (ChainLevel(1, None, fallback_recipients(fallback, why)),))
    team, ownership = owning_team(roster, service, catalog)
    if team is None:
        return EscalationChain(
            service, None, None, ownership, (ChainLevel(1, None, fallback_recipients(fallback, ownership)),)
        )
    policy_id = roster.teams[team].escalation_policy
    levels = tuple(
        ChainLevel(number, level.delay_s, level_recipients(roster, policy_id, number, level, at, fallback))
        for number, level in enumerate(roster.escalation_policies[policy_id].levels, 1)
    )
    return EscalationChain(service, team, policy_id, ownership, levels)


def allowed_senders(roster: Roster | None, fallback: Sequence[str] = ()) -> frozenset[str]:
    """The WhatsApp numbers whose messages are commands: every person of the roster plus the fallback
    numbers (``ONCALL_WHATSAPP_NUMBERS``)."""
    numbers = set(fallback)
    if roster is not None:
        numbers |= {person.whatsapp for person in roster.people.values()}
    return frozenset(numbers)


def person_by_number(roster: Roster | None, whatsapp: str) -> tuple[str, Person] | None:
    """The roster's ``(id, person)`` with this WhatsApp number (``whatsapp:+E164``), or None."""
    if roster is None:
        return None
    return next(((pid, person) for pid, person in roster.people.items() if person.whatsapp == whatsapp), None)
