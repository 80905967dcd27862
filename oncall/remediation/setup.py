"""Remediation built from the settings: the proposing investigator, the executor and the decisions."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import httpx

from oncall.catalog.models import Catalog
from oncall.remediation.auto import AutoApprover
from oncall.remediation.controlplane import ProcessManager
from oncall.remediation.decisions import Decisions, Policy
from oncall.remediation.executor import Executor, SendsMessages
from oncall.remediation.proposer import Investigates, ProposingInvestigator
from oncall.remediation.verifier import Verifier
from oncall.roster.chain import allowed_senders
from oncall.settings import Settings
from oncall.sources.prometheus import PrometheusSource
from oncall.store.database import Store
from oncall.tasks import BackgroundTasks


def replica_id(settings: Settings) -> str:
    """This agent replica's id: ``AGENT_REPLICA_ID`` when the settings have it, else host and process id."""
    return str(getattr(settings, "agent_replica_id", None) or f"{socket.gethostname()}:{os.getpid()}")


@dataclass(frozen=True)
class Remediation:
    """The remediation services of one agent replica."""

    executor: Executor
    decisions: Decisions
    settings: Settings
    auto: AutoApprover | None = None


def bounds(settings: Settings) -> tuple[int, int]:
    """(min, max) replicas a scale may go to."""
    return settings.scale_min_replicas, settings.scale_max_replicas


def proposing(
    inner: Investigates, settings: Settings, http: httpx.AsyncClient, catalog: Catalog, remediation: Remediation
) -> ProposingInvestigator:
    """``inner`` with every diagnosis' proposals checked against the service's control plane; with
    ``SAFETY_MODE=auto-low-risk`` the first low-risk option of each then runs at once."""
    auto = remediation.auto.proposed if remediation.auto is not None else None
    return ProposingInvestigator(
        inner, catalog, lambda url: ProcessManager(http, url, settings.tool_timeout_s), bounds(settings), auto
    )


def build_remediation(
    settings: Settings,
    store: Store,
    http: httpx.AsyncClient,
    tasks: BackgroundTasks,
    sender: SendsMessages,
    catalog: Catalog,
) -> Remediation:
    """The executor (verifying through ``PROMETHEUS_URL``) and the decisions (``SAFETY_MODE``, ``APPROVAL_TTL_S``,
    budgets; approvals over WhatsApp from the roster's numbers and ``ONCALL_WHATSAPP_NUMBERS``)."""
    verifier = Verifier(
        PrometheusSource(http, settings.prometheus_url, settings.tool_timeout_s),
        settings.verify_s,
        settings.verify_poll_s,
    )
    executor = Executor(
        store,
        catalog,
        lambda url: ProcessManager(http, url, settings.tool_timeout_s),
        verifier,
        sender,
        tasks,
        replica_id=replica_id(settings),
        lease_s=settings.remediation_lease_s,
        bounds=bounds(settings),
    )
    policy = Policy(
        settings.safety_mode,
        settings.approval_ttl_s,
        settings.remediation_max_per_incident,
        settings.remediation_max_per_hour,
    )

    def senders() -> frozenset[str]:
        return allowed_senders(settings.roster, settings.oncall_whatsapp_numbers)

    decisions = Decisions(store, catalog, executor, policy, senders)
    auto = AutoApprover(store, decisions, sender, tasks) if settings.safety_mode == "auto-low-risk" else None
    return Remediation(executor, decisions, settings, auto)
