"""The roster as the running agent uses it: the "who is on call?" answer over its settings and service
catalog, and the names of the people by WhatsApp number (post-mortems name who acknowledged)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from oncall.roster.answer import who_is_on_call
from oncall.roster.chain import OwnerTeams
from oncall.settings import Settings


def on_call_answer(settings: Settings, catalog: OwnerTeams | None) -> Callable[[str | None], str]:
    """A function ``service -> text``: the "who is on call?" answer at the moment it is called, from the
    roster (``ONCALL_FILE``), the fallback ``ONCALL_WHATSAPP_NUMBERS`` and the catalog's service owners;
    ``service`` (the incident's, or None) adds its escalation chain."""

    def answer(service: str | None) -> str:
        numbers = settings.oncall_whatsapp_numbers
        return who_is_on_call(settings.roster, datetime.now(UTC), numbers, service=service, catalog=catalog)

    return answer


def names_by_number(settings: Settings) -> dict[str, str]:
    """WhatsApp number (``whatsapp:+E164``) -> person name, for every person of the roster ({} without one)."""
    roster = settings.roster
    return {person.whatsapp: person.name for person in roster.people.values()} if roster is not None else {}
