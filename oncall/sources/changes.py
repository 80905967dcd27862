"""Recent changes from the demo's process manager: ``GET /changes?since=&limit=`` (scale, start, stop,
fault, crash, restart) and ``GET /instances`` (replicas with state, restarts, exit code)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from oncall.sources.http import get_json


class ProcessManagerChanges:
    """The process manager's change log and instance list.

    Args:
        http: the shared client.
        base_url: e.g. ``http://127.0.0.1:7070`` (no trailing slash).
        timeout_s: timeout of one request, seconds.
    """

    name = "process_manager"

    def __init__(self, http: httpx.AsyncClient, base_url: str, timeout_s: float) -> None:
        self.http = http
        self.base_url = base_url
        self.timeout_s = timeout_s

    async def changes_and_instances(
        self, since: float, limit: int = 200
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Changes recorded after ``since`` (epoch s, newest first as the process manager sends them) and
        the current instances, fetched concurrently.

        Raises:
            SourceError / httpx.HTTPError: the process manager failed or could not be reached.
        """
        changes, instances = await asyncio.gather(
            get_json(self.http, f"{self.base_url}/changes", self.timeout_s, {"since": round(since, 3), "limit": limit}),
            get_json(self.http, f"{self.base_url}/instances", self.timeout_s),
        )
        return changes.get("changes", []), instances.get("instances", [])
