"""Investigation tools over the demo stack (see the stack contract): the load balancer's
``/logs/tail``, Prometheus' HTTP API (``GET /api/v1/query``), the process manager's ``/changes`` and
``/instances``, source code (GitHub contents API or the local checkout) and ``send_diagnosis``.

Every HTTP call goes through ``runtime.http`` with ``timeout=settings.tool_timeout_s``; idempotent
GETs are retried on connection errors (tenacity, 3 attempts, short exponential backoff). Each tool
returns a compact JSON-serialisable dict sized to fit the tool output cap, or raises ``ToolError``
with a message the model can act on.
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, create_model
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from oncall.diagnosis import Diagnosis
from oncall.runtime import AgentRuntime
from oncall.toolloop import ToolSpec

SERVICE_JOB = "inventory"
"""Prometheus job label of the inventory replicas."""
GET_ATTEMPTS = 3
"""Attempts of an idempotent GET on connection errors."""
TOOL_DEADLINE_FACTOR = 2.0
"""A tool's deadline is this many times ``settings.tool_timeout_s`` (room for a retried GET)."""
MAX_SERIES = 40
"""Series kept from one PromQL answer (the rest are counted, not listed)."""
LOG_GROUPS_KEPT = 6
"""Distinct (exception type, file:line) groups listed by ``fetch_logs``."""
NEWEST_ENTRIES_KEPT = 3
"""Newest raw log entries listed by ``fetch_logs``."""
RECENT_LOG_S = 60
"""Seconds counted as "recent" in a log group's ``recent_count``."""
TRACEBACK_TAIL_LINES = 8
"""Last traceback lines kept for the dominant error group."""
CHANGES_KEPT = 30
"""Newest process-manager changes listed by ``get_recent_changes``."""


class ToolError(Exception):
    """A tool failed in a way the model should hear about (the message is fed back verbatim)."""


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


SendDiagnosisArgs: type[BaseModel] = create_model(
    "SendDiagnosisArgs",
    __config__=ConfigDict(extra="ignore"),
    __doc__="Arguments of send_diagnosis: the Diagnosis fields except `engine` (set by the agent).",
    **{name: (field.annotation, field) for name, field in Diagnosis.model_fields.items() if name != "engine"},
)


# ---------------------------------------------------------------- helpers


def prom_value(raw: str) -> float | str:
    """Prometheus sample value text -> float, keeping non-finite values (``NaN``, ``+Inf``) as their text."""
    value = float(raw)
    return value if math.isfinite(value) else raw


def compact_prom_data(data: dict[str, Any]) -> dict[str, Any]:
    """Shrink a Prometheus ``data`` object (``resultType`` vector/scalar/matrix/string) to
    ``{"resultType", "result": [{"labels": {...}, "value": v}]}`` with at most ``MAX_SERIES`` series."""
    kind = data.get("resultType")
    result = data.get("result")
    if kind in ("scalar", "string"):
        return {"resultType": kind, "value": prom_value(result[1]) if kind == "scalar" else result[1]}
    series = []
    for item in result[:MAX_SERIES]:
        labels = {k: v for k, v in item.get("metric", {}).items() if k != "__name__"}
        if kind == "matrix":
            series.append({"labels": labels, "values": [[t, prom_value(v)] for t, v in item["values"][-5:]]})
        else:
            series.append({"labels": labels, "value": prom_value(item["value"][1])})
    out: dict[str, Any] = {"resultType": kind, "result": series}
    if len(result) > MAX_SERIES:
        out["omitted_series"] = len(result) - MAX_SERIES
    return out


def by_label(compact: dict[str, Any], label: str) -> dict[str, float | str]:
    """Map ``label`` value -> sample value for a compacted vector (series without the label are skipped)."""
    return {s["labels"][label]: s["value"] for s in compact.get("result", []) if label in s["labels"]}


def _rounded(values: dict[str, float | str], digits: int = 4) -> dict[str, float | str]:
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in sorted(values.items())}


def log_line(entry: dict[str, Any]) -> str:
    """One-line rendering of an inventory ERROR log entry (stack contract log fields)."""
    where = f"{entry.get('file')}:{entry.get('line')}" if entry.get("file") else "?"
    return (
        f"{entry.get('timestamp', '')} {entry.get('level', 'ERROR')} {entry.get('replica')} "
        f"{entry.get('method', '')} {entry.get('route', '')} {entry.get('status', '')} "
        f"{entry.get('exception_type')}: {entry.get('message', '')} ({where} in {entry.get('function')})"
    )


def summarise_logs(entries: list[dict[str, Any]], now: float | None = None) -> dict[str, Any]:
    """Summarise ERROR log entries (newest first): counts by exception type, replica, route and
    file:line, the largest (exception type, file:line) groups with how long ago each was last seen
    (seconds before ``now``, epoch s) and how many entries (by replica) fell in the last ``RECENT_LOG_S`` seconds,
    the newest entries and the dominant group's traceback tail."""
    now = time.time() if now is None else now
    groups: dict[tuple, dict[str, Any]] = {}
    for entry in entries:
        key = (entry.get("exception_type"), entry.get("file"), entry.get("line"))
        group = groups.get(key)
        ts = entry.get("ts") if isinstance(entry.get("ts"), (int, float)) else None
        if group is None:  # entries are newest first: the first one of a group is its newest
            group = groups[key] = {
                "exception_type": key[0],
                "file": key[1],
                "line": key[2],
                "function": entry.get("function"),
                "message": entry.get("message"),
                "count": 0,
                "recent_count": 0,
                "last_seen_s_ago": round(now - ts, 1) if ts is not None else None,
                "replicas": Counter(),
                "recent_replicas": Counter(),
                "routes": Counter(),
                "example": log_line(entry),
                "traceback": entry.get("traceback") or "",
            }
        group["count"] += 1
        if ts is not None and now - ts <= RECENT_LOG_S:
            group["recent_count"] += 1
            group["recent_replicas"][entry.get("replica")] += 1
        group["replicas"][entry.get("replica")] += 1
        group["routes"][entry.get("route")] += 1
    ranked = sorted(groups.values(), key=lambda g: -g["count"])
    for group in ranked:
        group["replicas"] = dict(sorted(group["replicas"].items(), key=lambda kv: str(kv[0])))
        group["recent_replicas"] = dict(sorted(group["recent_replicas"].items(), key=lambda kv: str(kv[0])))
        group["routes"] = dict(group["routes"].most_common())
    summary: dict[str, Any] = {
        "count": len(entries),
        "by_exception_type": dict(Counter(e.get("exception_type") for e in entries).most_common()),
        "by_replica": dict(sorted(Counter(e.get("replica") for e in entries).items(), key=lambda kv: str(kv[0]))),
        "by_route": dict(Counter(e.get("route") for e in entries).most_common()),
        "by_location": dict(Counter(f"{e.get('file')}:{e.get('line')}" for e in entries).most_common(LOG_GROUPS_KEPT)),
        "groups": [{k: v for k, v in g.items() if k != "traceback"} for g in ranked[:LOG_GROUPS_KEPT]],
        "newest": [log_line(e) for e in entries[:NEWEST_ENTRIES_KEPT]],
    }
    if ranked and ranked[0]["traceback"]:
        summary["dominant_traceback_tail"] = "\n".join(
            ranked[0]["traceback"].rstrip().splitlines()[-TRACEBACK_TAIL_LINES:]
        )
    return summary


def numbered_lines(text: str, line: int | None, context_lines: int) -> dict[str, Any]:
    """Return the lines around ``line`` (1-based) with line numbers, ``>`` marking ``line``;
    without ``line`` the first ``2*context_lines+1`` lines.

    Raises:
        ToolError: ``line`` is past the end of the file.
    """
    lines = text.splitlines()
    if line is not None and line > len(lines):
        raise ToolError(f"line {line} is past the end of the file ({len(lines)} lines)")
    if line is None:
        first, last = 1, min(len(lines), 2 * context_lines + 1)
    else:
        first, last = max(1, line - context_lines), min(len(lines), line + context_lines)
    width = len(str(last))
    rendered = [f"{'>' if n == line else ' '} {n:>{width}} | {lines[n - 1]}" for n in range(first, last + 1)]
    out: dict[str, Any] = {
        "total_lines": len(lines),
        "start_line": first,
        "end_line": last,
        "code": "\n".join(rendered),
    }
    if line is not None:
        out["focus_line"] = line
        out["focus_text"] = lines[line - 1].strip()
    return out


def safe_relative_path(path: str) -> PurePosixPath:
    """Validate a repository-relative path: no absolute paths, no ``..`` segments, no empty path.

    Raises:
        ToolError: the path could escape the repository.
    """
    candidate = PurePosixPath(path.replace("\\", "/"))
    if candidate.is_absolute() or path.startswith("~"):
        raise ToolError(f"path {path!r} must be relative to the repository root")
    if any(part == ".." for part in candidate.parts) or not candidate.parts:
        raise ToolError(f"path {path!r} must not contain '..' or be empty")
    return candidate


def read_local_source(code_root: Path, path: str) -> str:
    """Read ``path`` below ``code_root``; symlinks resolving outside the folder are rejected.

    Raises:
        ToolError: unsafe path, escape through a symlink, missing file or a directory.
    """
    relative = safe_relative_path(path)
    root = code_root.resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise ToolError(f"path {path!r} resolves outside the code folder")
    if not target.exists():
        raise ToolError(f"file {path!r} not found in the code folder")
    if not target.is_file():
        raise ToolError(f"{path!r} is not a file")
    return target.read_text(encoding="utf-8", errors="replace")


# ---------------------------------------------------------------- the tool set


class InvestigationTools:
    """The investigation tools bound to one runtime (settings + shared HTTP client)."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings

    @retry(
        retry=retry_if_exception_type(httpx.ConnectError),
        stop=stop_after_attempt(GET_ATTEMPTS),
        wait=wait_exponential(multiplier=0.1, max=1.0),
        reraise=True,
    )
    async def _get(
        self, url: str, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """Idempotent GET with the tool timeout; retried on connection errors."""
        return await self.runtime.http.get(url, params=params, headers=headers, timeout=self.settings.tool_timeout_s)

    async def _get_json(self, url: str, params: dict[str, Any] | None = None) -> Any:
        response = await self._get(url, params)
        if response.status_code >= 400:
            raise ToolError(f"GET {url} answered HTTP {response.status_code}: {response.text[:300]}")
        return response.json()

    async def prom_query(self, query: str) -> dict[str, Any]:
        """Evaluate a PromQL instant query; returns the compacted data (see ``compact_prom_data``).

        Raises:
            ToolError: Prometheus rejected the query (its own ``errorType``/``error``) or answered non-JSON.
        """
        url = f"{self.settings.prometheus_url}/api/v1/query"
        response = await self._get(url, {"query": query})
        try:
            body = response.json()
        except ValueError:
            raise ToolError(
                f"Prometheus answered HTTP {response.status_code} without JSON: {response.text[:200]}"
            ) from None
        if body.get("status") != "success":
            raise ToolError(f"Prometheus rejected the query ({body.get('errorType')}): {body.get('error')}")
        return compact_prom_data(body["data"])

    async def fetch_logs(self, args: FetchLogsArgs) -> dict[str, Any]:
        """Read ERROR logs through ``LB_URL/logs/tail`` and summarise them."""
        params: dict[str, Any] = {"seconds": args.seconds, "limit": args.limit}
        if args.replica:
            params["replica"] = args.replica
        body = await self._get_json(f"{self.settings.lb_url}/logs/tail", params)
        entries = body.get("entries", [])
        summary = summarise_logs(entries)
        summary.update(seconds=args.seconds, limit=args.limit, hit_limit=len(entries) >= args.limit)
        return summary

    async def compute_error_rate(self, args: ErrorRateArgs) -> dict[str, Any]:
        """Error ratio (5xx / all requests, 0-1) overall, per replica and per route, plus request rates."""
        queries = error_rate_queries(args.window)
        results = await asyncio.gather(*(self.prom_query(q) for q in queries.values()))
        data = dict(zip(queries, results))
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
        return {"query": args.query, **await self.prom_query(args.query)}

    async def get_recent_changes(self, args: RecentChangesArgs) -> dict[str, Any]:
        """Process-manager changes of the last ``since_seconds`` and the current instances."""
        now = time.time()
        changes, instances = await asyncio.gather(
            self._get_json(
                f"{self.settings.pm_url}/changes", {"since": round(now - args.since_seconds, 3), "limit": 200}
            ),
            self._get_json(f"{self.settings.pm_url}/instances"),
        )
        listed = changes.get("changes", [])
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
                for i in instances.get("instances", [])
            ],
        }

    async def fetch_code(self, args: FetchCodeArgs) -> dict[str, Any]:
        """Source lines around ``line`` from GitHub (contents API at ``GITHUB_REF``) or the local checkout."""
        if self.settings.github_enabled:
            text = await self._github_file(args.path)
            source = f"github:{self.settings.github_repo}@{self.settings.github_ref}"
        else:
            text = read_local_source(self.settings.code_root, args.path)
            source = "local"
        return {"source": source, "path": args.path, **numbered_lines(text, args.line, args.context_lines)}

    async def _github_file(self, path: str) -> str:
        """GET /repos/{repo}/contents/{path}?ref=REF (GitHub REST API "Get repository content"); base64-decoded text."""
        relative = safe_relative_path(path)
        url = f"{self.settings.github_api_url}/repos/{self.settings.github_repo}/contents/{quote(str(relative))}"
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        if self.settings.github_token:
            headers["Authorization"] = f"Bearer {self.settings.github_token.get_secret_value()}"
        response = await self._get(url, {"ref": self.settings.github_ref}, headers)
        if response.status_code >= 400:
            try:
                message = response.json().get("message", "")
            except ValueError:
                message = response.text[:200]
            raise ToolError(f"GitHub answered HTTP {response.status_code} for {path!r}: {message}")
        body = response.json()
        if isinstance(body, list):
            raise ToolError(
                f"{path!r} is a directory on GitHub; entries: {', '.join(e.get('path', '') for e in body[:30])}"
            )
        if body.get("type") != "file" or body.get("encoding") != "base64":
            raise ToolError(
                f"{path!r} is a {body.get('type')} with encoding {body.get('encoding')}; only base64 files are supported"
            )
        return base64.b64decode(body["content"]).decode("utf-8", errors="replace")

    def specs(self, engine: str) -> dict[str, ToolSpec]:
        """The investigation ToolSpecs by name; ``send_diagnosis`` stamps diagnoses with ``engine``."""
        deadline = self.settings.tool_timeout_s * TOOL_DEADLINE_FACTOR

        async def send_diagnosis(args: BaseModel) -> dict[str, Any]:
            return Diagnosis(**args.model_dump(), engine=engine).model_dump(mode="json")

        return {
            spec.name: spec
            for spec in (
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
                    'histogram_quantile(0.99, sum by (replica, le)(rate(http_request_duration_seconds_bucket{job="inventory"}[1m]))), '
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
        }


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


def build_tools(runtime: AgentRuntime, engine: str) -> dict[str, ToolSpec]:
    """The investigation tools by name for ``runtime``; diagnoses are stamped with ``engine``."""
    return InvestigationTools(runtime).specs(engine)
