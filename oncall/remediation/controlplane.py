"""The process manager's HTTP API as remediation uses it (the demo control plane, ``process_manager.py``).

Reads: ``GET /instances`` (``{"instances": [{name, state, version, fault, restarts, ...}], "operation": null |
{"kind", ...}}``) and ``GET /deploys`` (``current_version``, ``previous_version``). Writes: ``POST /fault``
(``{"mode": "none"[, "replica"]}`` clears), ``POST /instances/{name}/restart``, ``POST /scale {"replicas"}``
and ``POST /deploy {"version", "wait": false}`` (202 at once; the rollout is watched through
``GET /instances``). A write answers 409 while another operation runs. Writes are retried only when the
connection was refused (the request never reached the process manager); clearing a fault, scaling to a count
and deploying a version are idempotent, a restart is not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from oncall.sources.http import get_json

RUNNING = "running"
STOPPED = "stopped"
UNCLEARABLE = frozenset({"none", "crash"})
"""Fault modes ``clear_fault`` cannot end: no fault, and a crash (the process has exited already)."""


class ControlPlaneError(Exception):
    """The process manager refused or failed a request (``status``: HTTP status, 0 when unreachable)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Fleet:
    """The replicas of a service as the control plane sees them.

    ``instances``: the ``GET /instances`` items; ``operation``: the operation in progress or None;
    ``current_version`` / ``previous_version``: from ``GET /deploys`` (None when unknown).
    """

    instances: list[dict[str, Any]] = field(default_factory=list)
    operation: dict[str, Any] | None = None
    current_version: str | None = None
    previous_version: str | None = None

    @property
    def names(self) -> list[str]:
        """Every replica's name."""
        return [str(i["name"]) for i in self.instances]

    @property
    def in_service(self) -> list[str]:
        """The replicas the service has now: every slot but the ``stopped`` ones (a scale-in leaves its slots
        listed by ``GET /instances``, stopped)."""
        return [str(i["name"]) for i in self.instances if i.get("state") != STOPPED]

    @property
    def running(self) -> list[str]:
        """The replicas serving now (state ``running``)."""
        return [str(i["name"]) for i in self.instances if i.get("state") == RUNNING]

    def faulty(self) -> list[str]:
        """Replicas with an injected fault that clearing ends (``fault.mode`` other than ``none`` and ``crash``:
        the process manager shows ``crash`` until the crashed replica is back, and a restart is its remedy)."""
        return [str(i["name"]) for i in self.instances if (i.get("fault") or {}).get("mode", "none") not in UNCLEARABLE]

    def instance(self, name: str) -> dict[str, Any] | None:
        """The instance called ``name``, or None."""
        return next((i for i in self.instances if i.get("name") == name), None)


@retry(
    retry=retry_if_exception_type(httpx.ConnectError),
    stop=stop_after_attempt(3),
    wait=wait_exponential(multiplier=0.2, max=1.0),
    reraise=True,
)
async def _post(http: httpx.AsyncClient, url: str, body: dict[str, Any], timeout_s: float) -> httpx.Response:
    return await http.post(url, json=body, timeout=timeout_s)


class ProcessManager:
    """Client of one process manager.

    Args:
        http: the shared client.
        base_url: e.g. ``http://127.0.0.1:7070`` (no trailing slash).
        timeout_s: timeout of a read, seconds; writes wait ``write_timeout_s`` (a restart waits until healthy).
    """

    def __init__(self, http: httpx.AsyncClient, base_url: str, timeout_s: float, write_timeout_s: float = 60.0) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.write_timeout_s = write_timeout_s

    async def fleet(self) -> Fleet:
        """The instances, the operation in progress and the deployed versions.

        Raises:
            ControlPlaneError: the process manager failed or could not be reached.
        """
        try:
            instances = await get_json(self.http, f"{self.base_url}/instances", self.timeout_s)
            deploys = await get_json(self.http, f"{self.base_url}/deploys", self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - SourceError or httpx.HTTPError, reported the same way
            raise ControlPlaneError(f"process manager unavailable: {type(exc).__name__}: {exc}") from None
        return Fleet(
            list(instances.get("instances") or []),
            instances.get("operation"),
            deploys.get("current_version"),
            deploys.get("previous_version"),
        )

    async def request(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``path`` and return the JSON answer.

        Raises:
            ControlPlaneError: HTTP status >= 400 (409: another operation runs) or the request failed.
        """
        url = f"{self.base_url}{path}"
        try:
            response = await _post(self.http, url, body, self.write_timeout_s)
        except httpx.HTTPError as exc:
            raise ControlPlaneError(f"POST {path} failed: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            raise ControlPlaneError(
                f"POST {path} answered HTTP {response.status_code}: {response.text[:300]}", response.status_code
            )
        try:
            answer = response.json()
        except ValueError:
            answer = {"text": response.text[:300]}
        return answer if isinstance(answer, dict) else {"answer": answer}


def request_for(action: str, target: str | None, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The (path, body) of the process manager request that carries out a catalogued action.

    Raises:
        ValueError: not a catalogued action.
    """
    if action == "clear_fault":
        body: dict[str, Any] = {"mode": "none"}
        if target and target != "all":
            body["replica"] = target
        return "/fault", body
    if action == "restart_replica":
        return f"/instances/{target}/restart", {}
    if action == "scale":
        return "/scale", {"replicas": int(params["replicas"])}
    if action == "rollback":
        return "/deploy", {"version": str(params["version"]), "wait": False}
    raise ValueError(f"{action!r} is not a catalogued action")
