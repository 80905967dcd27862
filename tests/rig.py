"""The agent's services assembled for unit tests: settings, a migrated store, one HTTP client,
the investigation tools, an investigator, a scheduler, and the outbox worker delivering on the console
WhatsApp channel (or Twilio when the settings say so)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai

from on_call_agent import build_engines
from oncall.channels.jira.delivery import JiraIssueDelivery
from oncall.channels.jira.models import JiraConfig
from oncall.channels.outbox import OutboxWorker
from oncall.channels.whatsapp.sender import WhatsAppSender
from oncall.diagnosis import Diagnosis
from oncall.incidents.scheduler import InvestigationScheduler
from oncall.investigate.aftercare import Aftercare
from oncall.investigate.history import IncidentHistory
from oncall.investigate.investigator import Investigator
from oncall.investigate.setup import build_tool_factory
from oncall.investigate.toolloop import ToolSpec
from oncall.investigate.tools import ToolFactory
from oncall.redaction import Redactor
from oncall.settings import Settings
from oncall.store.database import Store
from oncall.tasks import BackgroundTasks

PROM = "http://127.0.0.1:19090"
LB = "http://127.0.0.1:19000"
PM = "http://127.0.0.1:17070"
GITHUB = "http://127.0.0.1:18443"
API_TOKEN = "api-test-token-5b7d0f1e"
"""ONCALL_API_TOKEN of the test settings (send ``Authorization: Bearer`` with it to reach /incidents)."""


def investigation_tools(settings: Settings, http: httpx.AsyncClient, store: Store) -> ToolFactory:
    """The agent's investigation tools (``build_tool_factory``) with the store's resolved incidents as history."""
    return build_tool_factory(settings, http, history=IncidentHistory(store))


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for tests: tmp database, loopback URLs for the mocked stack, no .env, no model."""
    values = {
        "DATABASE_PATH": str(tmp_path / "oncall.db"),
        "PROMETHEUS_URL": PROM,
        "LB_URL": LB,
        "PM_URL": PM,
        "GITHUB_API_URL": GITHUB,
        "CODE_ROOT": str(tmp_path / "code"),
        "TOOL_TIMEOUT_S": "2",
        "AGENT_REPLICA_ID": "test-replica",
        "ONCALL_API_TOKEN": API_TOKEN,
        **overrides,
    }
    return Settings(_env_file=None, **values)


@dataclass
class Rig:
    """Settings, store and HTTP client of one test, and the services built from them."""

    settings: Settings
    store: Store
    http: httpx.AsyncClient
    tasks: BackgroundTasks = field(default_factory=BackgroundTasks)

    def tools(self, engine: str = "offline", service: str = "inventory") -> dict[str, ToolSpec]:
        """The investigation tool specs of the catalog's ``service``, stamping diagnoses with ``engine``."""
        return investigation_tools(self.settings, self.http, self.store).for_service(service).specs(engine)

    def investigator(self, llm_client: openai.AsyncOpenAI | None = None) -> Investigator:
        """The investigator the agent would build (the model engine with ``llm_client`` when given)."""
        s = self.settings
        tools = investigation_tools(s, self.http, self.store)
        engines = build_engines(s, tools, llm_client)
        redact = Redactor([s.openai_api_key, s.github_token])
        return Investigator(
            self.store,
            engines,
            timeout_s=s.investigation_timeout_s,
            tool_output_max_chars=s.tool_output_max_chars,
            redact=redact,
            aftercare=Aftercare(tools, IncidentHistory(self.store)),
        )

    def sender(self) -> WhatsAppSender:
        """The WhatsApp sender the agent would build (the console channel without Twilio settings)."""
        return WhatsAppSender.from_settings(self.settings, self.store)

    def outbox(self, sender: WhatsAppSender | None = None) -> OutboxWorker:
        """The outbox worker the agent would build over ``sender`` (default ``sender()``) and Jira."""
        sender = sender or self.sender()
        jira = JiraIssueDelivery(self.http, JiraConfig.from_settings(self.settings), sender)
        return OutboxWorker.from_settings(self.settings, self.store, self.tasks, {"whatsapp": sender, "jira": jira})

    def scheduler(self, llm_client: openai.AsyncOpenAI | None = None) -> InvestigationScheduler:
        """A scheduler over ``investigator(llm_client)``."""
        investigator = self.investigator(llm_client)
        return InvestigationScheduler.from_settings(self.settings, self.store, investigator, self.tasks)

    async def investigate(self, incident_id: int, llm_client: openai.AsyncOpenAI | None = None) -> Diagnosis | None:
        """Investigate the incident now as the agent would: diagnosis stored, then its notice delivered."""
        diagnosis = await self.scheduler(llm_client).investigate_now(incident_id)
        await self.outbox().drain()
        return diagnosis
