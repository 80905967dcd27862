"""The on-call roster: validation with file, line and reason; rotations across handovers, DST and time
zones; overrides; gaps falling back to ONCALL_WHATSAPP_NUMBERS; ownership (roster and catalog); the
escalation chain, the sender allowlist and the "who is on call?" answer."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from oncall.roster.answer import who_is_on_call
from oncall.roster.chain import allowed_senders, escalation_chain, owning_team, person_by_number
from oncall.roster.config import RosterError, load_roster, parse_roster
from oncall.roster.models import Roster
from oncall.roster.rotation import on_call, shift_at
from oncall.settings import Settings
from tests.support import REPO_ROOT

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
FALLBACK = ["whatsapp:+15550109999"]

ROSTER = textwrap.dedent(
    """\
    people:
      priya: {name: Priya Sharma, whatsapp: "whatsapp:+15550100001", jira: priya@example.com}
      ravi: {name: Ravi Kumar, whatsapp: "+15550100002", jira: Ravi Kumar}
      lee: {name: Lee Chen, whatsapp: "whatsapp:+15550100003"}
      marta: {name: Marta Silva, whatsapp: "whatsapp:+15550100004"}
    teams:
      inventory:
        rotation:
          kind: weekly
          members: [priya, ravi]
          handover: "09:00"
          handover_day: monday
          timezone: Europe/Berlin
          start: 2026-01-05
        overrides:
          - {person: lee, start: "2026-11-24T18:00:00+01:00", end: "2026-11-25T09:00:00+01:00", note: covering}
        escalation_policy: inventory
      payments:
        rotation:
          kind: daily
          members: [marta, ravi, lee]
          handover: "09:00"
          timezone: Europe/Berlin
          start: 2026-03-01
          end: 2026-12-31
        escalation_policy: payments
      nights:
        escalation_policy: payments
    escalation_policies:
      inventory:
        levels:
          - targets: [{on_call: inventory}]
            delay_s: 300
          - targets: [{person: lee}]
            delay_s: 600
          - targets: [{on_call: nights}]
      payments:
        levels:
          - targets: [{on_call: payments}]
    services:
      inventory: inventory
      payments: payments
    """
)


@pytest.fixture(scope="module")
def roster() -> Roster:
    return parse_roster(ROSTER, "oncall.yaml")


def at(text: str) -> datetime:
    """An aware instant from ISO 8601 with an offset."""
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None
    return moment


def who(roster: Roster, team: str, moment: str) -> str | None:
    current = on_call(roster, team, at(moment))
    return current.person_id if current else None


# ---------------------------------------------------------------- rotations


def test_weekly_rotation_hands_over_on_monday_at_nine_berlin_time(roster: Roster) -> None:
    # 2026-01-05 is the first handover (priya); 2026-01-12 09:00 CET (08:00 UTC) ravi takes over.
    assert who(roster, "inventory", "2026-01-05T08:00:00+00:00") == "priya"
    assert who(roster, "inventory", "2026-01-12T07:59:59+00:00") == "priya"
    assert who(roster, "inventory", "2026-01-12T08:00:00+00:00") == "ravi"
    assert who(roster, "inventory", "2026-01-19T08:00:00+00:00") == "priya"
    # a Sunday evening in New York is already Monday morning in Berlin, but before the handover
    assert who(roster, "inventory", "2026-01-18T23:30:00-05:00") == "ravi"
    current = on_call(roster, "inventory", at("2026-01-14T12:00:00+00:00"))
    assert current is not None and current.source == "rotation"
    assert current.since == datetime(2026, 1, 12, 9, 0, tzinfo=BERLIN)
    assert current.until == datetime(2026, 1, 19, 9, 0, tzinfo=BERLIN)
    assert current.reason == "weekly rotation of team inventory, shift since Mon 12 Jan 09:00 Europe/Berlin"


def test_handover_stays_at_local_time_across_daylight_saving_changes(roster: Roster) -> None:
    # Europe/Berlin springs forward on 2026-03-29: the 09:00 handover moves from 08:00 UTC to 07:00 UTC,
    # so the shift of 28 March lasts 23 hours (counting 24 h of elapsed time would hand over an hour late).
    members = {d: who(roster, "payments", f"2026-03-{d:02d}T12:00:00+00:00") for d in (27, 28, 29, 30)}
    assert members == {27: "lee", 28: "marta", 29: "ravi", 30: "lee"}
    assert who(roster, "payments", "2026-03-29T06:59:59+00:00") == "marta"
    assert who(roster, "payments", "2026-03-29T07:00:00+00:00") == "ravi"
    shift = shift_at(roster.teams["payments"].rotation, at("2026-03-28T12:00:00+00:00"))  # type: ignore[arg-type]
    assert shift is not None and (shift.end.astimezone(UTC) - shift.start.astimezone(UTC)).total_seconds() == 23 * 3600
    # and falls back on 2026-10-25: that shift lasts 25 hours, the handover is at 08:00 UTC again
    assert who(roster, "payments", "2026-10-26T07:59:59+00:00") == who(roster, "payments", "2026-10-25T12:00:00+00:00")
    assert who(roster, "payments", "2026-10-26T08:00:00+00:00") != who(roster, "payments", "2026-10-25T12:00:00+00:00")


def test_a_handover_time_skipped_by_dst_happens_at_the_shifted_instant() -> None:
    text = ROSTER.replace(
        'handover: "09:00"\n      timezone: Europe/Berlin\n      start: 2026-03-01',
        'handover: "02:30"\n      timezone: Europe/Berlin\n      start: 2026-03-01',
    )
    assert text != ROSTER
    roster = parse_roster(text)
    # 02:30 does not exist on 2026-03-29 in Berlin; PEP 495 (fold=0) reads it with the winter offset: 01:30 UTC
    assert who(roster, "payments", "2026-03-29T01:29:59+00:00") != who(roster, "payments", "2026-03-29T01:30:00+00:00")


def test_rotation_in_another_time_zone() -> None:
    text = ROSTER.replace(
        "timezone: Europe/Berlin\n      start: 2026-01-05", "timezone: America/New_York\n      start: 2026-01-05"
    )
    assert text != ROSTER
    roster = parse_roster(text)
    # Monday 2026-01-12 09:00 EST = 14:00 UTC
    assert who(roster, "inventory", "2026-01-12T13:59:59+00:00") == "priya"
    assert who(roster, "inventory", "2026-01-12T14:00:00+00:00") == "ravi"
    # after the US DST change (2026-03-08) the handover is 09:00 EDT = 13:00 UTC
    assert who(roster, "inventory", "2026-03-09T12:59:59+00:00") == who(
        roster, "inventory", "2026-03-08T12:00:00+00:00"
    )
    assert who(roster, "inventory", "2026-03-09T13:00:00+00:00") != who(
        roster, "inventory", "2026-03-08T12:00:00+00:00"
    )


def test_override_replaces_the_rotation_for_its_window(roster: Roster) -> None:
    # the week from 2026-11-23 is shift 46 (322 days after the first handover): priya's
    base = who(roster, "inventory", "2026-11-24T16:59:59+00:00")
    assert base == "priya"
    assert who(roster, "inventory", "2026-11-24T17:00:00+00:00") == "lee"  # 18:00 +01:00
    assert who(roster, "inventory", "2026-11-25T07:59:59+00:00") == "lee"
    assert who(roster, "inventory", "2026-11-25T08:00:00+00:00") == base  # end is exclusive
    current = on_call(roster, "inventory", at("2026-11-24T20:00:00+00:00"))
    assert current is not None and current.source == "override" and current.person.name == "Lee Chen"
    assert current.reason == "override for team inventory until Wed 25 Nov 09:00 Europe/Berlin (covering)"
    before = on_call(roster, "inventory", at("2026-11-24T10:00:00+00:00"))
    assert before is not None and before.until == at("2026-11-24T18:00:00+01:00")  # interrupted by the override


def test_gaps_before_start_after_end_and_without_rotation(roster: Roster) -> None:
    assert who(roster, "inventory", "2026-01-05T07:59:59+00:00") is None  # before the first handover
    assert who(roster, "payments", "2026-12-31T08:00:00+00:00") is None  # from the last handover on
    assert who(roster, "payments", "2026-12-31T07:59:59+00:00") is not None
    assert who(roster, "nights", "2026-06-01T12:00:00+00:00") is None  # no rotation, no override
    with pytest.raises(ValueError, match="aware"):
        on_call(roster, "inventory", datetime(2026, 6, 1, 12, 0))


# ---------------------------------------------------------------- chain, ownership, allowlist


def test_escalation_chain_names_who_and_why(roster: Roster) -> None:
    chain = escalation_chain(roster, "inventory", at("2026-01-14T12:00:00+00:00"), FALLBACK)
    assert (chain.team, chain.policy) == ("inventory", "inventory")
    assert chain.ownership == "service inventory is owned by team inventory (on-call roster)"
    assert [(lvl.number, lvl.delay_s) for lvl in chain.levels] == [(1, 300), (2, 600), (3, None)]
    first, second, third = (lvl.recipients for lvl in chain.levels)
    assert [(r.person_id, r.whatsapp, r.jira) for r in first] == [("ravi", "whatsapp:+15550100002", "Ravi Kumar")]
    assert first[0].reason.startswith("on call for team inventory (weekly rotation of team inventory")
    assert [(r.person_id, r.reason) for r in second] == [("lee", "named in level 2 of escalation policy inventory")]
    # nobody is on call for team nights: that level pages the fallback numbers and says why
    assert [(r.whatsapp, r.person_id) for r in third] == [("whatsapp:+15550109999", None)]
    assert third[0].reason == "nobody on call for team nights: ONCALL_WHATSAPP_NUMBERS fallback"


def test_service_without_owner_and_no_roster_fall_back(roster: Roster) -> None:
    moment = at("2026-06-01T12:00:00+00:00")
    chain = escalation_chain(roster, "checkout", moment, FALLBACK)
    assert chain.team is None and chain.ownership == "service checkout has no owner team in the roster"
    assert [r.whatsapp for r in chain.levels[0].recipients] == FALLBACK
    none = escalation_chain(None, "inventory", moment, FALLBACK)
    assert (
        none.levels[0].recipients[0].reason == "no on-call roster (ONCALL_FILE unset): ONCALL_WHATSAPP_NUMBERS fallback"
    )
    with_default = parse_roster(ROSTER + "default_team: payments\n")
    assert owning_team(with_default, "checkout") == (
        "payments",
        "service checkout has no owner team; default team payments",
    )


class Catalog:
    """A service catalog's ownership (the OwnerTeams protocol)."""

    def __init__(self, owners: dict[str, str]) -> None:
        self.owners = owners

    def owner_team(self, service: str) -> str | None:
        return self.owners.get(service)


def test_catalog_ownership_wins_over_the_roster(roster: Roster) -> None:
    moment = at("2026-06-01T12:00:00+00:00")
    chain = escalation_chain(roster, "inventory", moment, FALLBACK, Catalog({"inventory": "payments"}))
    assert (
        chain.team == "payments" and chain.ownership == "service inventory is owned by team payments (service catalog)"
    )
    unknown_team = owning_team(roster, "inventory", Catalog({"inventory": "search"}))
    assert unknown_team == (
        "inventory",
        "service inventory is owned by team inventory (on-call roster)"
        " (the service catalog names team search, which the roster does not define)",
    )
    assert owning_team(roster, "checkout", Catalog({"checkout": "inventory"}))[0] == "inventory"


def test_sender_allowlist_is_the_roster_plus_the_fallback(roster: Roster) -> None:
    allowed = allowed_senders(roster, FALLBACK)
    assert allowed == {f"whatsapp:+1555010000{n}" for n in (1, 2, 3, 4)} | set(FALLBACK)
    assert allowed_senders(None, FALLBACK) == set(FALLBACK)
    assert person_by_number(roster, "whatsapp:+15550100002") == ("ravi", roster.people["ravi"])
    assert person_by_number(roster, "whatsapp:+19990000000") is None


def test_who_is_on_call_answer(roster: Roster) -> None:
    answer = who_is_on_call(roster, at("2026-11-24T20:00:00+00:00"), FALLBACK, service="inventory")
    lines = answer.splitlines()
    assert lines[0] == "*On call now* (Tue 24 Nov 20:00 UTC)"
    assert lines[1].startswith(
        "• inventory: Lee Chen until Wed 25 Nov 09:00 Europe/Berlin (override for team inventory"
    )
    assert lines[2].startswith("• payments: ") and "; next " in lines[2]
    assert (
        lines[3] == "• nights: nobody on call (pages go to the ONCALL_WHATSAPP_NUMBERS fallback: whatsapp:+15550109999)"
    )
    assert "Escalation for inventory: service inventory is owned by team inventory (on-call roster)" in answer
    assert "1. Lee Chen, after 5 min unacknowledged:" in answer and "3. whatsapp:+15550109999" in answer
    assert who_is_on_call(None, at("2026-11-24T20:00:00+00:00"), FALLBACK) == (
        "No on-call roster is configured (ONCALL_FILE). Incidents page: whatsapp:+15550109999"
    )


# ---------------------------------------------------------------- validation


def problems(text: str) -> list[str]:
    with pytest.raises(RosterError) as caught:
        parse_roster(text, "oncall.yaml")
    return [p.describe("oncall.yaml") for p in caught.value.problems]


def test_unknown_references_are_reported_with_their_line() -> None:
    text = ROSTER.replace("members: [priya, ravi]", "members: [priya, rav]").replace(
        "escalation_policy: payments\n  nights", "escalation_policy: payment\n  nights"
    )
    found = problems(text.replace("{person: lee}", "{person: leee}"))
    assert (
        "oncall.yaml:10:24: teams.inventory.rotation.members.1: unknown person 'rav' (defined: lee, marta, priya, ravi)"
        in found
    )
    assert any(
        p.startswith("oncall.yaml:26:24: teams.payments.escalation_policy: unknown escalation policy 'payment'")
        for p in found
    )
    assert any(
        p.startswith(
            "oncall.yaml:34:28: escalation_policies.inventory.levels.1.targets.0.person: unknown person 'leee'"
        )
        for p in found
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ('"09:00"\n      handover_day: monday', "10:30\n      handover_day: monday"),
            "oncall.yaml:11:17: teams.inventory.rotation.handover: Value error, read as the number 630 (YAML base-60)",
        ),
        (
            ("timezone: Europe/Berlin\n      start: 2026-01-05", "timezone: Europe/Berln\n      start: 2026-01-05"),
            "oncall.yaml:13:17: teams.inventory.rotation.timezone: Value error, unknown IANA time zone 'Europe/Berln'",
        ),
        (
            ("start: 2026-01-05", "start: 2026-01-06"),
            "oncall.yaml:14:14: teams.inventory.rotation.start: 2026-01-06 is a tuesday",
        ),
        (
            ("kind: weekly", "kind: monthly"),
            "oncall.yaml:9:13: teams.inventory.rotation.kind: Input should be 'daily' or 'weekly'",
        ),
        (
            ("    escalation_policy: inventory", "    escalaton_policy: inventory"),
            "oncall.yaml:17:5: teams.inventory.escalaton_policy: Extra inputs are not permitted",
        ),
        (
            ('"whatsapp:+15550100003"', '"0170 1234"'),
            "oncall.yaml:4:35: people.lee.whatsapp: Value error, 'whatsapp:01701234' is not a WhatsApp number",
        ),
        (
            ('"whatsapp:+15550100003"', '"whatsapp:+15550100001"'),
            "oncall.yaml:4:35: people.lee.whatsapp: number already belongs to 'priya'",
        ),
        (
            ("        delay_s: 300\n", ""),
            "oncall.yaml:32:9: escalation_policies.inventory.levels.0: delay_s is required",
        ),
        (
            ('end: "2026-11-25T09:00:00+01:00"', 'end: "2026-11-24T09:00:00+01:00"'),
            "oncall.yaml:16:64: teams.inventory.overrides.0.end: the override must end after it starts",
        ),
        (
            ('end: "2026-11-25T09:00:00+01:00"', 'end: "2026-11-25T09:00:00"'),
            "oncall.yaml:16:64: teams.inventory.overrides.0.end: Input should have timezone info",
        ),
        (
            ("{on_call: nights}", "{on_call: nights, person: lee}"),
            "oncall.yaml:36:19: escalation_policies.inventory.levels.2.targets.0: give exactly one of on_call",
        ),
        (
            ("  payments: payments\n", "  payments: billing\n"),
            "oncall.yaml:42:13: services.payments: unknown team 'billing'",
        ),
    ],
)
def test_invalid_rules_name_file_line_and_reason(change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in ROSTER
    found = problems(ROSTER.replace(old, new, 1))
    assert any(p.startswith(expected) for p in found), found


def test_overlapping_overrides_duplicate_keys_and_bad_yaml() -> None:
    overlap = ROSTER.replace(
        "note: covering}\n",
        'note: covering}\n      - {person: priya, start: "2026-11-25T08:00:00+01:00", '
        'end: "2026-11-26T09:00:00+01:00"}\n',
    )
    assert any("teams.inventory.overrides.1: overlaps override 0 of the same team" in p for p in problems(overlap))
    duplicate = ROSTER.replace("  lee: {name: Lee Chen", "  priya: {name: Lee Chen")
    assert problems(duplicate) == ["oncall.yaml:4:3: people.priya: key given twice"]
    broken = ROSTER.replace("members: [priya, ravi]", "members: [priya, ravi")
    assert problems(broken)[0].startswith("oncall.yaml:11:15: (top level): not valid YAML:")
    assert problems("- just a list\n") == [
        "oncall.yaml:1:1: (top level): the roster must be a mapping with people, teams and escalation_policies"
    ]


def test_settings_stop_at_start_with_the_roster_problem(tmp_path: Path) -> None:
    path = tmp_path / "oncall.yaml"
    path.write_text(ROSTER.replace("members: [priya, ravi]", "members: [priya, rav]"))
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, ONCALL_FILE=str(path))
    assert f"{path}:10:24: teams.inventory.rotation.members.1: unknown person 'rav'" in str(caught.value)
    with pytest.raises(RosterError, match="cannot read the file"):
        load_roster(tmp_path / "missing.yaml")
    path.write_text(ROSTER)
    settings = Settings(
        _env_file=None,
        ONCALL_FILE=str(path),
        TWILIO_ACCOUNT_SID="AC1",
        TWILIO_AUTH_TOKEN="t",
        TWILIO_WHATSAPP_FROM="whatsapp:+14155238886",
    )
    assert settings.roster is not None and set(settings.roster.teams) == {"inventory", "payments", "nights"}
    assert settings.integration_report()["oncall_roster"] == f"enabled ({path}: 4 people, 3 teams)"
    assert Settings(_env_file=None).roster is None


def test_shipped_demo_roster_pages_the_demo_engineers() -> None:
    roster = load_roster(REPO_ROOT / "oncall.yaml")
    assert "whatsapp:+15550100001" in allowed_senders(roster)  # the demo engineer of make demo / make reply
    for service in ("inventory", "payments"):
        chain = escalation_chain(roster, service, datetime.now(UTC))
        assert chain.team == service and len(chain.levels) >= 2
        assert all(level.recipients and level.recipients[0].person_id for level in chain.levels)
    inventory = {on_call(roster, "inventory", at(f"2026-12-{day:02d}T12:00:00+00:00")).person_id for day in (2, 9)}  # type: ignore[union-attr]
    assert inventory == {"priya", "ravi"}
