"""ERROR records from Grafana Loki (``logs.type: loki`` in the catalog).

Protocol: Loki HTTP API, ``GET /loki/api/v1/query_range`` with ``query`` (LogQL), ``start`` and
``end`` (Unix epoch nanoseconds), ``limit`` and ``direction=backward`` (newest first). A log query
answers ``{"status": "success", "data": {"resultType": "streams", "result": [{"stream": {labels},
"values": [["<epoch ns>", "<line>"], ...]}], "stats": {...}}}``; a bad query answers HTTP 400 with
the parse error as plain text. Multi-tenant Loki reads the tenant from ``X-Scope-OrgID``.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from oncall.catalog.models import LokiLogs
from oncall.sources import http as source_http
from oncall.sources.http import SourceError
from oncall.sources.logformat import parse_lines

QUERY_RANGE_PATH = "/loki/api/v1/query_range"


def _ns(epoch_s: float) -> int:
    return int(epoch_s * 1e9)


class LokiLogSource:
    """ERROR records of one LogQL query.

    Args:
        http: the shared client.
        spec: the catalog's ``logs`` section (``type: loki``).
        timeout_s: timeout of one request, seconds.
        token: bearer token (from ``spec.token_env``) or None.
    """

    name = "loki"

    def __init__(self, http: httpx.AsyncClient, spec: LokiLogs, timeout_s: float, token: str | None) -> None:
        self.http = http
        self.spec = spec
        self.base_url = spec.url.rstrip("/")
        self.timeout_s = timeout_s
        self.token = token

    @property
    def where(self) -> str:
        """The LogQL query, for tool descriptions and evidence."""
        return f"{self.spec.query} ({self.base_url})"

    def _headers(self) -> dict[str, str]:
        headers = {}
        if self.spec.tenant:
            headers["X-Scope-OrgID"] = self.spec.tenant
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def _streams(self, seconds: int, limit: int) -> list[dict[str, Any]]:
        now = time.time()
        params = {
            "query": self.spec.query,
            "start": _ns(now - seconds),
            "end": _ns(now),
            "limit": limit,
            "direction": "backward",
        }
        response = await source_http.get(
            self.http, f"{self.base_url}{QUERY_RANGE_PATH}", self.timeout_s, params, self._headers()
        )
        if response.status_code >= 400:
            raise SourceError(f"Loki answered HTTP {response.status_code}: {response.text[:300].strip()}")
        try:
            body = response.json()
        except ValueError:
            raise SourceError(f"Loki answered without JSON: {response.text[:200]}") from None
        data = body.get("data") or {}
        if body.get("status") != "success":
            raise SourceError(f"Loki query failed: {body.get('error') or body.get('status')}")
        if data.get("resultType") != "streams":
            raise SourceError(f"the LogQL query must select log lines (streams), not a {data.get('resultType')} metric")
        return list(data.get("result") or [])

    def _records(self, stream: dict[str, Any]) -> list[dict[str, Any]]:
        labels = stream.get("stream") or {}
        replica = labels.get(self.spec.replica_label) if self.spec.replica_label else None
        level = labels.get("level") or labels.get("detected_level")
        records = []
        for stamp, line in stream.get("values") or []:
            defaults = {"replica": replica, "level": level, "ts": int(stamp) / 1e9}
            records += parse_lines(str(line).splitlines(), self.spec, {k: v for k, v in defaults.items() if v})
        return records

    async def errors(self, seconds: int, limit: int, replica: str | None = None) -> list[dict[str, Any]]:
        """ERROR records of the last ``seconds``, newest first, at most ``limit`` (one replica's when given).

        Raises:
            SourceError: Loki rejected the query or answered something else than log streams.
            httpx.HTTPError: Loki could not be reached.
        """
        records = [r for stream in await self._streams(seconds, limit) for r in self._records(stream)]
        if replica:
            records = [r for r in records if r.get("replica") == replica]
        records.sort(key=lambda r: -(r.get("ts") or 0))
        return records[:limit]
