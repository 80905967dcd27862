"""The roster's schema (pydantic): people, teams, rotations, overrides, escalation policies, services.

``oncall.roster.config`` reads the YAML file into these models; every model rejects unknown keys.
"""

from __future__ import annotations

import re
from datetime import date, time
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
"""Ids of people, teams and policies: letters, digits, ``_ . -``, at most 64 characters."""
WHATSAPP = re.compile(r"^whatsapp:\+[1-9][0-9]{7,14}$")
"""Twilio addresses WhatsApp users as ``whatsapp:+E164`` (E.164: at most 15 digits)."""
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
MAX_LEVELS = 10


class Strict(BaseModel):
    """Roster models reject unknown keys (a typo must not silently disable a rule) and are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Person(Strict):
    """Someone who can be paged: ``whatsapp`` is ``whatsapp:+E164`` (prefix added when missing), ``jira``
    their Jira account name or e-mail (used to assign tickets), optional."""

    name: str = Field(min_length=1, max_length=200)
    whatsapp: str
    jira: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("whatsapp", mode="before")
    @classmethod
    def _whatsapp_address(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().replace(" ", "")
            value = value if value.startswith("whatsapp:") else f"whatsapp:{value}"
            if not WHATSAPP.match(value):
                raise ValueError(f"{value!r} is not a WhatsApp number: write whatsapp:+<country><number> (E.164)")
        return value


def _time_of_day(value: object) -> object:
    """A handover time as ``"HH:MM"``; an int is YAML's base-60 reading of an unquoted time."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f'read as the number {value} (YAML base-60): quote the time, e.g. handover: "09:00"')
    return value


class Rotation(Strict):
    """Members take turns, one shift each: ``daily`` shifts start every day at ``handover``, ``weekly`` ones
    every ``handover_day`` at ``handover``, in the IANA ``timezone`` (DST followed by ``zoneinfo``).

    ``start`` is the date of the first handover (members[0] is on call from it; a weekly start must be
    a ``handover_day``); ``end`` the date of the last one (nobody is on call from it on). A handover
    time that does not exist on a DST change day (02:30 when clocks jump) happens at the instant the
    wall time would have been without the jump (PEP 495, ``fold=0``).
    """

    kind: Literal["daily", "weekly"]
    members: list[Id] = Field(min_length=1)
    handover: time
    handover_day: Weekday | None = None
    timezone: str
    start: date
    end: date | None = None

    _handover_is_quoted = field_validator("handover", mode="before")(_time_of_day)

    @field_validator("handover")
    @classmethod
    def _naive(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("give the time without an offset: the rotation's timezone applies")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. Europe/Berlin, America/New_York, UTC)") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The rotation's time zone."""
        return ZoneInfo(self.timezone)

    @property
    def period_days(self) -> int:
        """Days per shift: 1 (daily) or 7 (weekly)."""
        return 1 if self.kind == "daily" else 7

    @property
    def weekday(self) -> int:
        """Handover weekday of a weekly rotation, Monday = 0 (``monday`` when not given)."""
        return WEEKDAYS.index(self.handover_day or "monday")


class Override(Strict):
    """``person`` is on call for the team from ``start`` to ``end`` (aware timestamps, end exclusive),
    instead of the rotation."""

    person: Id
    start: AwareDatetime
    end: AwareDatetime
    note: str | None = Field(default=None, max_length=200)


class Team(Strict):
    """A team: its rotation (none: only overrides put someone on call), overrides and escalation policy."""

    name: str | None = Field(default=None, max_length=200)
    rotation: Rotation | None = None
    overrides: list[Override] = Field(default_factory=list)
    escalation_policy: Id


class Target(Strict):
    """Who a level pages: ``on_call`` (whoever is on call for that team) or ``person`` (by id)."""

    on_call: Id | None = None
    person: Id | None = None


class Level(Strict):
    """One escalation level: its ``targets`` are paged together; unacknowledged ``delay_s`` seconds
    later the next level is paged (the last level may omit it: the chain ends there)."""

    targets: list[Target] = Field(min_length=1)
    delay_s: float | None = Field(default=None, gt=0)


class Policy(Strict):
    """Levels paged in order, 1 first."""

    levels: list[Level] = Field(min_length=1, max_length=MAX_LEVELS)


class Roster(Strict):
    """The whole roster file."""

    people: dict[Id, Person] = Field(min_length=1)
    teams: dict[Id, Team] = Field(min_length=1)
    escalation_policies: dict[Id, Policy] = Field(min_length=1)
    services: dict[Annotated[str, StringConstraints(min_length=1, max_length=200)], Id] = Field(default_factory=dict)
    default_team: Id | None = None
