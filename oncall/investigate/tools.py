"""The investigation tools: what the model (and the offline engine) may call, with argument schemas.

Tools: ``fetch_logs``, ``compute_error_rate``, ``query_prometheus``, ``get_recent_changes``,
``fetch_code_from_github`` and the terminal ``send_diagnosis``. Each handler reads through a source
(``oncall.sources``) and returns a compact JSON-serialisable dict sized to fit the tool output cap,
or raises ``SourceError`` with a message the model can act on.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from oncall.diagnosis import AGENT_FIELDS, Diagnosis
from oncall.investigate.toolloop import ToolSpec
from oncall.sources.changes import ProcessManagerChanges
from oncall.sources.code import CodeSource, numbered_lines
from oncall.sources.logs import DemoLogTail, summarise_logs
from oncall.sources.prometheus import PrometheusSource, by_label

SERVICE_JOB = "inventory"
"""Prometheus job label of the inventory replicas."""
TOOL_DEADLINE_FACTOR = 2.0
"""A tool's deadline is this many times the sources' timeout (room for a retried GET)."""
CHANGES_KEPT = 30
"""Newest process-manager changes listed by ``get_recent_changes``."""


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


class FetchCodeArgs(BaseModel):
    """Arguments of ``fetch_code_from_github``: repository-relative ``path``, optional 1-based ``line``
    of interest and ``context_lines`` (0-200) shown around it."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(
        min_length=1,
        max_length=400,
        description="File path relative to the repository root, e.g. inventory_service.py.",
    )
    line: int | None = Field(default=None, ge=1, description="Line of interest (from a stack trace).")
    context_lines: int = Field(default=20, ge=0, le=200, description="Lines shown before and after `line`.")


_DIAGNOSIS_FIELDS: dict[str, Any] = {
    name: (field.annotation, field) for name, field in Diagnosis.model_fields.items() if name not in AGENT_FIELDS
}
SendDiagnosisArgs: type[BaseModel] = create_model(
    "SendDiagnosisArgs",
    __config__=ConfigDict(extra="ignore"),
    __doc__="Arguments of send_diagnosis: the Diagnosis fields except those the agent sets (AGENT_FIELDS).",
    **_DIAGNOSIS_FIELDS,
)


def _rounded(values: dict[str, float | str], digits: int = 4) -> dict[str, float | str]:
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in sorted(values.items())}


class InvestigationTools:
    """The investigation tools over the demo stack's sources.

    Args:
        prometheus: instant PromQL queries.
        logs: the ERROR log tail.
        changes: the process manager's change log and instances.
        code: where source files are read.
        timeout_s: the sources' timeout per request, seconds (a tool's deadline is twice it).
    """

    def __init__(
        self,
        prometheus: PrometheusSource,
        logs: DemoLogTail,
        changes: ProcessManagerChanges,
        code: CodeSource,
        timeout_s: float,
    ) -> None:
        self.prometheus = prometheus
        self.logs = logs
        self.changes = changes
        self.code = code
        self.timeout_s = timeout_s

    async def fetch_logs(self, args: FetchLogsArgs) -> dict[str, Any]:
        """Read ERROR logs and summarise them."""
        entries = await self.logs.errors(args.seconds, args.limit, args.replica)
        summary = summarise_logs(entries)
        summary.update(seconds=args.seconds, limit=args.limit, hit_limit=len(entries) >= args.limit)
        return summary

    async def compute_error_rate(self, args: ErrorRateArgs) -> dict[str, Any]:
        """Error ratio (5xx / all requests, 0-1) overall, per replica and per route, plus request rates."""
        queries = error_rate_queries(args.window)
        results = await asyncio.gather(*(self.prometheus.query(q) for q in queries.values()))
        data = dict(zip(queries, results, strict=True))
        overall = data["overall"]["result"]
        return {
            "window": args.window,
            "overall_error_ratio": round(overall[0]["value"], 4)
            if overall and isinstance(overall[0]["value"], float)
            else None,
            "per_replica_error_ratio": _rounded(by_label(data["per_replica"], "replica")),
            "per_route_error_ratio": _rounded(by_label(data["per_route"], "route")),
            "requests_per_second_by_replica": _rounded(by_label(data["rps_per_replica"], "replica"), 2),
            "queries": queries,
        }

    async def query_prometheus(self, args: PromQueryArgs) -> dict[str, Any]:
        """Any PromQL instant query, answered compactly."""
        return {"query": args.query, **await self.prometheus.query(args.query)}

    async def get_recent_changes(self, args: RecentChangesArgs) -> dict[str, Any]:
        """Process-manager changes of the last ``since_seconds`` and the current instances."""
        now = time.time()
        listed, instances = await self.changes.changes_and_instances(now - args.since_seconds)
        return {
            "now": round(now, 3),
            "since_seconds": args.since_seconds,
            "changes": [
                {
                    "ts": c.get("ts"),
                    "age_s": round(now - c["ts"], 1) if c.get("ts") else None,
                    "kind": c.get("kind"),
                    "replica": c.get("replica"),
                    "detail": c.get("detail"),
                }
                for c in listed[:CHANGES_KEPT]
            ],
            "omitted_changes": max(0, len(listed) - CHANGES_KEPT),
            "instances": [
                {k: i.get(k) for k in ("name", "state", "restarts", "fault", "started_at", "last_exit_code", "pid")}
                for i in instances
            ],
        }

    async def fetch_code(self, args: FetchCodeArgs) -> dict[str, Any]:
        """Source lines around ``line`` from the code source."""
        text = await self.code.read(args.path)
        return {"source": self.code.name, "path": args.path, **numbered_lines(text, args.line, args.context_lines)}

    def specs(self, engine: str) -> dict[str, ToolSpec]:
        """The investigation ToolSpecs by name; ``send_diagnosis`` stamps diagnoses with ``engine``."""
        deadline = self.timeout_s * TOOL_DEADLINE_FACTOR

        async def send_diagnosis(args: BaseModel) -> dict[str, Any]:
            return Diagnosis(**args.model_dump(), engine=engine).model_dump(mode="json")

        specs = (
            ToolSpec(
                "fetch_logs",
                "Recent ERROR logs of the inventory service (all replicas) through the load balancer's "
                "/logs/tail, summarised: counts by exception_type, replica, route and file:line, the largest error "
                "groups with their message and function, the newest entries and the dominant traceback tail.",
                FetchLogsArgs,
                self.fetch_logs,
                deadline,
            ),
            ToolSpec(
                "compute_error_rate",
                "Error ratio (HTTP 5xx / all requests, 0-1) of the inventory service from "
                "Prometheus: overall, per replica and per route, plus requests per second per replica.",
                ErrorRateArgs,
                self.compute_error_rate,
                deadline,
            ),
            ToolSpec(
                "query_prometheus",
                "Run any PromQL instant query against Prometheus (e.g. p99 latency "
                "histogram_quantile(0.99, sum by (replica, le)"
                '(rate(http_request_duration_seconds_bucket{job="inventory"}[1m]))), '
                'up{job="inventory"}, process_resident_memory_bytes, rate(process_cpu_seconds_total[1m])). '
                "Returns labels and values; on bad PromQL returns Prometheus' error message.",
                PromQueryArgs,
                self.query_prometheus,
                deadline,
            ),
            ToolSpec(
                "get_recent_changes",
                "Recent process-manager changes (scale, start, stop, fault, crash, restart) "
                "and the current replica instances with state, restart count and exit code.",
                RecentChangesArgs,
                self.get_recent_changes,
                deadline,
            ),
            ToolSpec(
                "fetch_code_from_github",
                "Source code of a file in the service repository, with line numbers "
                "around `line` (e.g. the file:line a stack trace points at).",
                FetchCodeArgs,
                self.fetch_code,
                deadline,
            ),
            ToolSpec(
                "send_diagnosis",
                "Submit the final root-cause diagnosis. Ends the investigation. Use fault_type "
                "'none' when nothing is wrong and 'unknown' when the evidence is inconclusive.",
                SendDiagnosisArgs,
                send_diagnosis,
                deadline,
                terminal=True,
            ),
        )
        return {spec.name: spec for spec in specs}


def error_rate_queries(window: str) -> dict[str, str]:
    """PromQL for ``compute_error_rate``. Errors of a series with no 5xx yet count as 0 (``or ... * 0``),
    so a healthy replica shows ratio 0 instead of disappearing."""

    def ratio(by: str) -> str:
        grouping = f" by ({by})" if by else ""
        errors = f'sum{grouping}(rate(http_errors_total{{job="{SERVICE_JOB}"}}[{window}]))'
        requests = f'sum{grouping}(rate(http_requests_total{{job="{SERVICE_JOB}"}}[{window}]))'
        return f"({errors} or {requests} * 0) / {requests}"

    return {
        "overall": ratio(""),
        "per_replica": ratio("replica"),
        "per_route": ratio("route"),
        "rps_per_replica": f'sum by (replica)(rate(http_requests_total{{job="{SERVICE_JOB}"}}[{window}]))',
    }
