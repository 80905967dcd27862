"""The "who is on call?" answer of the running agent, over its settings and service catalog."""

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
