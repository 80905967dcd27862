"""Who is on call for a team at an instant: an override covering the instant, else the rotation's shift.

Shifts are counted in the rotation's local calendar (``zoneinfo``), so a daily 09:00 handover stays at
09:00 local time across DST changes (a shift is then 23 or 25 hours long). Instants are aware
``datetime`` values; comparisons are made in UTC (aware datetimes sharing a ``tzinfo`` compare by
wall time in Python, which is wrong around a DST change).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from oncall.roster.models import Override, Person, Roster, Rotation, Team


@dataclass(frozen=True)
class Shift:
    """One rotation shift: ``index`` 0 is the first (members[0]); ``start``/``end`` are aware, local to the rotation."""

    index: int
    member: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class OnCall:
    """Who is on call for ``team`` and why.

    ``source`` ``override`` or ``rotation``; ``since``/``until`` bound the current assignment (aware,
    in the rotation's zone when there is one; ``until`` None when unbounded); ``reason`` a sentence
    for the engineer (``weekly rotation of team inventory, shift since Mon 23 Nov 09:00 Europe/Berlin``).
    """

    team: str
    person_id: str
    person: Person
    source: Literal["override", "rotation"]
    since: datetime
    until: datetime | None
    reason: str


def utc(moment: datetime) -> datetime:
    """``moment`` in UTC. Raises ValueError for a naive datetime (its instant is unknown)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("an instant must be an aware datetime (with a time zone)")
    return moment.astimezone(UTC)


def handover_at(rotation: Rotation, day: date) -> datetime:
    """The aware instant of the handover on local ``day`` (a non-existent wall time resolves with fold=0)."""
    return datetime.combine(day, rotation.handover, tzinfo=rotation.zone)


def shift_at(rotation: Rotation, at: datetime) -> Shift | None:
    """The rotation's shift containing the instant ``at``; None before the first or from the last handover."""
    moment = utc(at)
    day = moment.astimezone(rotation.zone).date()
    if rotation.kind == "weekly":
        day -= timedelta(days=(day.weekday() - rotation.weekday) % 7)
    if utc(handover_at(rotation, day)) > moment:
        day -= timedelta(days=rotation.period_days)
    index = (day - rotation.start).days // rotation.period_days
    if index < 0 or (rotation.end is not None and day >= rotation.end):
        return None
    member = rotation.members[index % len(rotation.members)]
    end_day = day + timedelta(days=rotation.period_days)
    return Shift(index, member, handover_at(rotation, day), handover_at(rotation, end_day))


def override_at(team: Team, at: datetime) -> Override | None:
    """The team's override covering ``at`` (start inclusive, end exclusive), or None."""
    moment = utc(at)
    return next((o for o in team.overrides if utc(o.start) <= moment < utc(o.end)), None)


def next_override_start(team: Team, after: datetime, before: datetime | None) -> datetime | None:
    """The start of the earliest override beginning after ``after`` (and before ``before`` when given)."""
    starts = [o.start for o in team.overrides if utc(o.start) > utc(after)]
    if before is not None:
        starts = [start for start in starts if utc(start) < utc(before)]
    return min(starts, key=utc) if starts else None


def describe_instant(moment: datetime, zone_name: str | None = None) -> str:
    """``Mon 23 Nov 09:00 Europe/Berlin`` (``UTC`` when no zone is given)."""
    if zone_name is None:
        return utc(moment).strftime("%a %d %b %H:%M UTC")
    return moment.astimezone(ZoneInfo(zone_name)).strftime(f"%a %d %b %H:%M {zone_name}")


def on_call(roster: Roster, team_id: str, at: datetime) -> OnCall | None:
    """Who is on call for team ``team_id`` at the instant ``at``: an override first, else the rotation.

    Returns None when nobody is (no rotation, before its start, after its end, no override).
    Raises:
        KeyError: unknown team. ValueError: naive ``at``.
    """
    team = roster.teams[team_id]
    zone = team.rotation.timezone if team.rotation else None
    override = override_at(team, at)
    if override is not None:
        note = f" ({override.note})" if override.note else ""
        return OnCall(
            team=team_id,
            person_id=override.person,
            person=roster.people[override.person],
            source="override",
            since=override.start,
            until=override.end,
            reason=f"override for team {team_id} until {describe_instant(override.end, zone)}{note}",
        )
    if team.rotation is None:
        return None
    shift = shift_at(team.rotation, at)
    if shift is None:
        return None
    interrupted = next_override_start(team, at, shift.end)
    return OnCall(
        team=team_id,
        person_id=shift.member,
        person=roster.people[shift.member],
        source="rotation",
        since=shift.start,
        until=interrupted or shift.end,
        reason=f"{team.rotation.kind} rotation of team {team_id}, shift since {describe_instant(shift.start, zone)}",
    )


def next_on_call(roster: Roster, team_id: str, at: datetime) -> OnCall | None:
    """Who takes over when the current assignment of ``team_id`` ends (None when unknown or nobody)."""
    current = on_call(roster, team_id, at)
    if current is None or current.until is None:
        return None
    return on_call(roster, team_id, current.until)
