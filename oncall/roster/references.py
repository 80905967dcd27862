"""Checks the schema alone cannot make: every id a roster refers to exists, and its rules make sense
(a weekly rotation starts on its handover day, overrides end after they start and do not overlap,
every level but the last says when to escalate, no WhatsApp number belongs to two people)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from oncall.roster.models import WEEKDAYS, Level, Roster, Rotation, Team

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong in the file: where (``path`` of keys/indexes, 1-based ``line``/``column``) and why."""

    path: Path_
    message: str
    line: int = 0
    column: int = 0

    def describe(self, file: str) -> str:
        """``FILE:LINE:COLUMN: a.b.0.c: message``."""
        where = ".".join(str(part) for part in self.path) or "(top level)"
        return f"{file}:{self.line}:{self.column}: {where}: {self.message}"


def reference_problems(roster: Roster) -> list[Problem]:
    """Every broken reference or inconsistent rule of a schema-valid roster, in file order."""
    problems: list[Problem] = _shared_numbers(roster)
    for team_id, team in roster.teams.items():
        problems += _team_problems(roster, team_id, team)
    for policy_id, policy in roster.escalation_policies.items():
        for index, level in enumerate(policy.levels):
            last = index == len(policy.levels) - 1
            problems += _level_problems(roster, ("escalation_policies", policy_id, "levels", index), level, last)
    for service, team_id in roster.services.items():
        if team_id not in roster.teams:
            problems.append(Problem(("services", service), f"unknown team {team_id!r}{_known(roster.teams)}"))
    if roster.default_team is not None and roster.default_team not in roster.teams:
        problems.append(Problem(("default_team",), f"unknown team {roster.default_team!r}{_known(roster.teams)}"))
    return problems


def _known(ids: Mapping[str, object]) -> str:
    return f" (defined: {', '.join(sorted(ids))})"


def _shared_numbers(roster: Roster) -> list[Problem]:
    """A WhatsApp number must name one person: replies are attributed by number."""
    owner: dict[str, str] = {}
    problems = []
    for person_id, person in roster.people.items():
        if person.whatsapp in owner:
            problems.append(
                Problem(("people", person_id, "whatsapp"), f"number already belongs to {owner[person.whatsapp]!r}")
            )
        owner.setdefault(person.whatsapp, person_id)
    return problems


def _team_problems(roster: Roster, team_id: str, team: Team) -> list[Problem]:
    path: Path_ = ("teams", team_id)
    problems = []
    if team.escalation_policy not in roster.escalation_policies:
        problems.append(
            Problem(
                (*path, "escalation_policy"),
                f"unknown escalation policy {team.escalation_policy!r}{_known(roster.escalation_policies)}",
            )
        )
    if team.rotation is not None:
        problems += _rotation_problems(roster, (*path, "rotation"), team.rotation)
    for index, override in enumerate(team.overrides):
        where = (*path, "overrides", index)
        if override.person not in roster.people:
            problems.append(Problem((*where, "person"), f"unknown person {override.person!r}{_known(roster.people)}"))
        if override.end <= override.start:
            problems.append(Problem((*where, "end"), "the override must end after it starts"))
    ordered = sorted(range(len(team.overrides)), key=lambda i: team.overrides[i].start)
    for before, after in zip(ordered, ordered[1:], strict=False):
        if team.overrides[after].start < team.overrides[before].end:
            problems.append(Problem((*path, "overrides", after), f"overlaps override {before} of the same team"))
    return problems


def _rotation_problems(roster: Roster, path: Path_, rotation: Rotation) -> list[Problem]:
    problems = [
        Problem((*path, "members", index), f"unknown person {member!r}{_known(roster.people)}")
        for index, member in enumerate(rotation.members)
        if member not in roster.people
    ]
    if rotation.kind == "daily" and rotation.handover_day is not None:
        problems.append(Problem((*path, "handover_day"), "only weekly rotations have a handover day"))
    if rotation.kind == "weekly" and rotation.start.weekday() != rotation.weekday:
        problems.append(
            Problem(
                (*path, "start"),
                f"{rotation.start.isoformat()} is a {WEEKDAYS[rotation.start.weekday()]}: the first handover of "
                f"a weekly rotation is on its handover_day ({WEEKDAYS[rotation.weekday]})",
            )
        )
    if rotation.end is not None and rotation.end <= rotation.start:
        problems.append(Problem((*path, "end"), "the rotation must end after it starts"))
    return problems


def _level_problems(roster: Roster, path: Path_, level: Level, last: bool) -> list[Problem]:
    problems = []
    if level.delay_s is None and not last:
        problems.append(Problem(path, "delay_s is required: seconds before the next level is paged"))
    for index, target in enumerate(level.targets):
        where = (*path, "targets", index)
        if (target.on_call is None) == (target.person is None):
            problems.append(Problem(where, "give exactly one of on_call (a team) or person"))
        elif target.on_call is not None and target.on_call not in roster.teams:
            problems.append(Problem((*where, "on_call"), f"unknown team {target.on_call!r}{_known(roster.teams)}"))
        elif target.person is not None and target.person not in roster.people:
            problems.append(Problem((*where, "person"), f"unknown person {target.person!r}{_known(roster.people)}"))
    return problems
