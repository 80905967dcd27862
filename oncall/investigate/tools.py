"""The investigation tools: what the model (and the offline engine) may call, with argument schemas.

Tools: ``fetch_logs``, ``compute_error_rate``, ``query_prometheus``, ``get_recent_changes``,
``get_deployed_versions``, ``fetch_code_from_github``, ``evaluate_alert_rule``, ``get_client_view``
(the load balancer's view), ``get_load`` (request rate against its baseline), ``find_similar_incidents``
(resolved incidents like this one) and the terminal ``send_diagnosis``. They are built per
investigation for the incident's service (``ServiceContext``):
the descriptions the model sees name that service's sources and metrics from the catalog, and a
tool whose source the catalog entry lacks is left out. Each handler returns a compact
JSON-serialisable dict sized to fit the tool output cap, or raises ``SourceError`` with a message
the model can act on.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, create_model

from oncall.diagnosis import AGENT_FIELDS, Diagnosis
from oncall.investigate import descriptions
from oncall.investigate.clientview import client_view, load_view
from oncall.investigate.context import ServiceContext, Toolbox
from oncall.investigate.impact import measure_impact
from oncall.investigate.rules import evaluate_rule
from oncall.investigate.timeline import change_timeline
from oncall.investigate.toolloop import ToolSpec, with_redactor
from oncall.redaction import Redactor
from oncall.sources.code import numbered_lines
from oncall.sources.logs import summarise_logs
from oncall.sources.prometheus import by_label

TOOL_DEADLINE_FACTOR = 2.0
"""A tool's deadline is this many times the sources' timeout (room for a retried GET)."""
CHANGES_KEPT = 30
"""Newest changes listed by ``get_recent_changes``."""


# ---------------------------------------------------------------- argument models


class FetchLogsArgs(BaseModel):
    """Arguments of ``fetch_logs``: look-back ``seconds`` (1-86400), at most ``limit`` entries (1-2000)."""

    model_config = ConfigDict(extra="forbid")
    seconds: int = Field(default=300, ge=1, le=86400, description="Look-back window in seconds.")
    limit: int = Field(default=200, ge=1, le=2000, description="Maximum number of log entries to read.")
    replica: str | None = Field(default=None, description="Only this replica's entries, e.g. inventory-2.")


class ErrorRateArgs(BaseModel):
    """Arguments of ``compute_error_rate``: a PromQL range ``window`` such as ``1m`` or ``5m``."""

    model_config = ConfigDict(extra="forbid")
    window: str = Field(default="1m", pattern=r"^[1-9][0-9]{0,3}[smh]$", description="PromQL rate window, e.g. 1m, 5m.")


class PromQueryArgs(BaseModel):
    """Arguments of ``query_prometheus``: one PromQL expression evaluated at the current time."""

    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=2000, description="PromQL instant query.")


class RecentChangesArgs(BaseModel):
    """Arguments of ``get_recent_changes``: look-back ``since_seconds`` (1-86400)."""

    model_config = ConfigDict(extra="forbid")
    since_seconds: int = Field(default=900, ge=1, le=86400, description="Look-back window in seconds.")


class NoArgs(BaseModel):
    """A tool without arguments."""

    model_config = ConfigDict(extra="forbid")


class FetchCodeArgs(BaseModel):
    """Arguments of ``fetch_code_from_github``: repository-relative ``path`` (or the absolute path a traceback
    shows), optional 1-based ``line`` of interest, ``context_lines`` (0-200) and the ``version`` to read at."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(
        min_length=1,
        max_length=400,
        description="File path relative to the repository root (an absolute traceback path is mapped to it).",
    )
    line: int | None = Field(default=None, ge=1, description="Line of interest (from a stack trace).")
    context_lines: int = Field(default=20, ge=0, le=200, description="Lines shown before and after `line`.")
    version: str | None = Field(
        default=None, max_length=100, description="Service version to read the file at; default: the deployed one."
    )


class AlertRuleArgs(BaseModel):
    """Arguments of ``evaluate_alert_rule``: the ``alertname`` and optionally the alert's ``labels``."""

    model_config = ConfigDict(extra="forbid")
    alertname: str = Field(min_length=1, max_length=200, description="The alert's name (label alertname).")
    labels: dict[str, str] = Field(default_factory=dict, description="The alert's labels (pick among same-name rules).")


_DIAGNOSIS_FIELDS: dict[str, Any] = {
    name: (field.annotation, field) for name, field in Diagnosis.model_fields.items() if name not in AGENT_FIELDS
}
SendDiagnosisArgs: type[BaseModel] = create_model(
    "SendDiagnosisArgs",
    __config__=ConfigDict(extra="ignore"),
    __doc__="Arguments of send_diagnosis: the Diagnosis fields except those the agent sets (AGENT_FIELDS).",
    **_DIAGNOSIS_FIELDS,
)


class SimilarLookup(Protocol):
    """Resolved incidents like one incident (``oncall.investigate.history.IncidentHistory``)."""

    async def similar_summaries(self, incident_id: int) -> list[dict[str, Any]]: ...


def _rounded(values: dict[str, float | str], digits: int = 4) -> dict[str, float | str]:
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in sorted(values.items())}


class InvestigationTools:
    """The investigation tools over one service's sources.

    Args:
        context: the incident's service, its catalog entry and sources.
        timeout_s: the sources' timeout per request, seconds (a tool's deadline is twice it).
        redact: cleans every tool's result and error text (None: the tool loop's default, secret shapes only).
        history: finds resolved incidents like ``incident_id`` (None: no ``find_similar_incidents``).
        incident_id: the incident investigated (None: tools of a service, no incident).
    """

    def __init__(
        self,
        context: ServiceContext,
        timeout_s: float,
        redact: Redactor | None = None,
        history: SimilarLookup | None = None,
        incident_id: int | None = None,
    ) -> None:
        self.context = context
        self.redact = redact
        self.history = history
        self.incident_id = incident_id
        self.sources = context.sources
        self.prometheus = context.sources.prometheus
        self.timeout_s = timeout_s

    def _map_paths(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Point each entry's ``file``/``line`` at the innermost frame of the service's own code (repository path)."""
        code = self.sources.code
        if code is None:
            return entries
        for entry in entries:
            frames = entry.pop("frames", None) or [[entry.get("file"), entry.get("line"), entry.get("function")]]
            mapped = [(code.repository_path(path), line, function) for path, line, function in frames]
            ours = [frame for frame in mapped if frame[0]]
            if ours:
                entry["file"], entry["line"], entry["function"] = ours[-1]
        return entries

    async def fetch_logs(self, args: FetchLogsArgs) -> dict[str, Any]:
        """Read ERROR logs and summarise them."""
        assert self.sources.logs is not None
        entries = self._map_paths(await self.sources.logs.errors(args.seconds, args.limit, args.replica))
        summary = summarise_logs(entries)
        summary.update(seconds=args.seconds, limit=args.limit, hit_limit=len(entries) >= args.limit)
        return summary

    async def compute_error_rate(self, args: ErrorRateArgs) -> dict[str, Any]:
        """Error ratio (failed / all requests, 0-1) overall, per replica and per route, plus request rates."""
        assert self.context.queries is not None
        queries = self.context.queries.error_rate(args.window)
        results = await asyncio.gather(*(self.prometheus.query(q) for q in queries.values()))
        data = dict(zip(queries, results, strict=True))
        overall = data["overall"]["result"]
        label, route = self.context.replica_label, self.context.queries.route
        return {
            "window": args.window,
            "overall_error_ratio": round(overall[0]["value"], 4)
            if overall and isinstance(overall[0]["value"], float)
            else None,
            "per_replica_error_ratio": _rounded(by_label(data["per_replica"], label)),
            "per_route_error_ratio": _rounded(by_label(data["per_route"], route)) if route else {},
            "requests_per_second_by_replica": _rounded(by_label(data["rps_per_replica"], label), 2),
            "queries": queries,
        }

    async def query_prometheus(self, args: PromQueryArgs) -> dict[str, Any]:
        """Any PromQL instant query, answered compactly."""
        return {"query": args.query, **await self.prometheus.query(args.query)}

    async def get_recent_changes(self, args: RecentChangesArgs) -> dict[str, Any]:
        """Changes of the last ``since_seconds`` (offsets relative to the onset) and the current instances."""
        assert self.sources.changes is not None
        now = time.time()
        since = min(now, self.context.onset or now) - args.since_seconds
        listed, instances = await self.sources.changes.changes_and_instances(since)
        changes = [
            {**c, "age_s": round(now - c["ts"], 1)} for c in change_timeline(listed[:CHANGES_KEPT], self.context.onset)
        ]
        return {
            "now": round(now, 3),
            "onset": self.context.onset,
            "since_seconds": args.since_seconds,
            "source": self.sources.changes.name,
            "changes": changes,
            "omitted_changes": max(0, len(listed) - CHANGES_KEPT),
            "instances": [
                {
                    k: i.get(k)
                    for k in ("name", "state", "version", "restarts", "fault", "started_at", "last_exit_code", "pid")
                }
                for i in instances
            ],
        }

    async def get_deployed_versions(self, args: NoArgs) -> dict[str, Any]:
        """The version each replica runs."""
        assert self.sources.version is not None
        versions = await self.sources.version.versions()
        return {"source": self.sources.version.where, "versions": dict(sorted(versions.items()))}

    async def _deployed_version(self) -> str | None:
        """The version most replicas run, or None when unknown."""
        if self.sources.version is None or self.sources.code is None or not self.sources.code.uses_version:
            return None
        try:
            versions = await self.sources.version.versions()
        except Exception:  # noqa: BLE001 - the version is a hint: without it the file is read at the default ref
            return None
        return Counter(versions.values()).most_common(1)[0][0] if versions else None

    async def fetch_code(self, args: FetchCodeArgs) -> dict[str, Any]:
        """Source lines around ``line``, read at the service's deployed version (or ``version``)."""
        code = self.sources.code
        assert code is not None
        path = code.repository_path(args.path) or args.path
        version = args.version or await self._deployed_version()
        text, source, note = await code.read(path, version)
        out = {
            "source": source,
            "path": path,
            "version": version,
            **numbered_lines(text, args.line, args.context_lines),
        }
        if note:
            out["note"] = note
        return out

    async def evaluate_alert_rule(self, args: AlertRuleArgs) -> dict[str, Any]:
        """The alerting rule behind ``alertname`` and its expression evaluated now, per series."""
        return await evaluate_rule(self.prometheus, args.alertname, args.labels)

    async def get_client_view(self, args: NoArgs) -> dict[str, Any]:
        """The load balancer's view of the service's replicas (``oncall.investigate.clientview.client_view``)."""
        assert self.context.clients is not None and self.context.queries is not None
        return await client_view(self.prometheus, self.context.clients, self.context.queries)

    async def get_load(self, args: NoArgs) -> dict[str, Any]:
        """Request rates now, at the onset and the baseline before it (``oncall.investigate.clientview.load_view``)."""
        assert self.context.queries is not None
        onset = self.context.onset
        age = max(0.0, time.time() - onset) if onset else None
        return await load_view(
            self.prometheus, self.context.queries, self.context.clients, age, self.context.latency_objective_s
        )

    async def find_similar_incidents(self, args: NoArgs) -> dict[str, Any]:
        """The resolved incidents most like this one, each with how it ended."""
        assert self.history is not None and self.incident_id is not None
        return {"similar_incidents": await self.history.similar_summaries(self.incident_id)}

    async def measure_impact(self, args: NoArgs) -> dict[str, Any]:
        """What clients experienced since the onset (``oncall.investigate.impact.measure_impact``)."""
        return await measure_impact(
            self.prometheus, self.context.queries, self.context.clients, self.context.onset, time.time()
        )

    def agent_specs(self) -> dict[str, ToolSpec]:
        """The tools only the agent calls after an engine's diagnosis (``measure_impact``): the impact is the
        agent's measurement (``AGENT_FIELDS``), never a model's."""
        spec = ToolSpec(
            "measure_impact",
            "Requests, failed requests and client timeouts since the onset, the failed routes and the fleet.",
            NoArgs,
            self.measure_impact,
            self.timeout_s * TOOL_DEADLINE_FACTOR,
        )
        specs = {spec.name: spec}
        return with_redactor(specs, self.redact) if self.redact is not None else specs

    def specs(self, engine: str) -> dict[str, ToolSpec]:
        """The ToolSpecs available for this service, by name; ``send_diagnosis`` stamps diagnoses with ``engine``."""
        deadline = self.timeout_s * TOOL_DEADLINE_FACTOR
        text = descriptions.for_context(self.context)

        async def send_diagnosis(args: BaseModel) -> dict[str, Any]:
            return Diagnosis(**args.model_dump(), engine=engine).model_dump(mode="json")

        available: dict[str, tuple[type[BaseModel], Callable[[Any], Awaitable[Any]], bool]] = {
            "fetch_logs": (FetchLogsArgs, self.fetch_logs, self.sources.logs is not None),
            "compute_error_rate": (
                ErrorRateArgs,
                self.compute_error_rate,
                bool(self.context.queries and self.context.queries.errors),
            ),
            "query_prometheus": (PromQueryArgs, self.query_prometheus, True),
            "get_recent_changes": (RecentChangesArgs, self.get_recent_changes, self.sources.changes is not None),
            "get_deployed_versions": (NoArgs, self.get_deployed_versions, self.sources.version is not None),
            "fetch_code_from_github": (FetchCodeArgs, self.fetch_code, self.sources.code is not None),
            "evaluate_alert_rule": (AlertRuleArgs, self.evaluate_alert_rule, True),
            "get_client_view": (
                NoArgs,
                self.get_client_view,
                self.context.clients is not None and self.context.queries is not None,
            ),
            "get_load": (NoArgs, self.get_load, bool(self.context.queries and self.context.queries.requests)),
            "find_similar_incidents": (
                NoArgs,
                self.find_similar_incidents,
                self.history is not None and self.incident_id is not None,
            ),
        }
        specs = [
            ToolSpec(name, text[name], model, handler, deadline)
            for name, (model, handler, present) in available.items()
            if present
        ]
        specs.append(
            ToolSpec("send_diagnosis", text["send_diagnosis"], SendDiagnosisArgs, send_diagnosis, deadline, True)
        )
        by_name = {spec.name: spec for spec in specs}
        return with_redactor(by_name, self.redact) if self.redact is not None else by_name


class ToolFactory:
    """Builds the investigation tools of an incident's service.

    Args:
        toolbox: finds the incident's service and its sources.
        timeout_s: the sources' timeout per request, seconds.
        redact: cleans every tool's result and error text (the configured and the catalog's secrets).
        history: finds resolved incidents like the one investigated (None: no ``find_similar_incidents``).
    """

    def __init__(
        self, toolbox: Toolbox, timeout_s: float, redact: Redactor | None = None, history: SimilarLookup | None = None
    ) -> None:
        self.toolbox = toolbox
        self.timeout_s = timeout_s
        self.redact = redact
        self.history = history

    def for_incident(self, incident: dict[str, Any], alerts: list[dict[str, Any]]) -> InvestigationTools:
        """The tools of ``incident``'s service (an incidents row with its alert rows)."""
        context = self.toolbox.context(incident, alerts)
        return InvestigationTools(context, self.timeout_s, self.redact, self.history, incident.get("id"))

    def for_service(self, name: str) -> InvestigationTools:
        """The tools of the catalog's service ``name``. Raises KeyError when unknown."""
        return InvestigationTools(self.toolbox.service(name), self.timeout_s, self.redact)
