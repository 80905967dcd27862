"""The version each replica of a service runs: a ``*_build_info`` series' label, or an HTTP endpoint.

``versions()`` answers ``{replica: version}``. The HTTP source asks every active scrape target of the
service (Prometheus ``/api/v1/targets``, filtered by the service's selector) at the target's own
scheme and address, so it needs no list of instance URLs.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from oncall.catalog.matchers import parse_matcher
from oncall.catalog.models import HttpVersion, PromQLVersion
from oncall.catalog.promql import selector_matcher_list
from oncall.sources.http import SourceError, get_json
from oncall.sources.prometheus import PrometheusSource


class VersionSource(Protocol):
    """Where the deployed version of each replica is read."""

    @property
    def where(self) -> str:
        """The query or endpoint, for tool descriptions and evidence."""
        ...

    async def versions(self) -> dict[str, str]:
        """``{replica: version}``; raises ``SourceError`` with the reason."""
        ...


class PromQLVersionSource:
    """Versions from a build-info series (``inventory_build_info{version="1.4.1"} 1``).

    Args:
        prometheus: the Prometheus source.
        spec: the catalog's ``version`` section (``type: promql``).
        replica_label: the label naming the replica.
    """

    def __init__(self, prometheus: PrometheusSource, spec: PromQLVersion, replica_label: str) -> None:
        self.prometheus = prometheus
        self.spec = spec
        self.replica_label = replica_label

    @property
    def where(self) -> str:
        """The PromQL query and the label read."""
        return f"{self.spec.query} (label {self.spec.label})"

    async def versions(self) -> dict[str, str]:
        """``{replica: version}`` of the series carrying both labels."""
        answer = await self.prometheus.query(self.spec.query)
        return {
            s["labels"][self.replica_label]: s["labels"][self.spec.label]
            for s in answer.get("result", [])
            if self.replica_label in s.get("labels", {}) and self.spec.label in s["labels"]
        }


class HttpVersionSource:
    """Versions from each replica's HTTP endpoint (``GET <target>/version`` -> ``{"version": ...}``).

    Args:
        http: the shared client.
        prometheus: finds the service's scrape targets (unless ``spec.urls`` lists the endpoints).
        spec: the catalog's ``version`` section (``type: http``).
        selector: the service's PromQL selector (targets whose labels match it are the service's).
        replica_label: the target label naming the replica.
        timeout_s: timeout of one request, seconds.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        prometheus: PrometheusSource,
        spec: HttpVersion,
        selector: str,
        replica_label: str,
        timeout_s: float,
    ) -> None:
        self.http = http
        self.prometheus = prometheus
        self.spec = spec
        self.matchers = [parse_matcher(m) for m in selector_matcher_list(selector)]
        self.replica_label = replica_label
        self.timeout_s = timeout_s

    @property
    def where(self) -> str:
        """The endpoint read."""
        return ", ".join(self.spec.urls) or f"GET <each scrape target>{self.spec.path}"

    async def endpoints(self) -> dict[str, str]:
        """``{replica: version URL}``: the configured URLs, else one per matching active scrape target."""
        if self.spec.urls:
            return {url: url for url in self.spec.urls}
        endpoints = {}
        for target in await self.prometheus.targets():
            labels = target.get("labels") or {}
            if all(m.matches(labels) for m in self.matchers) and labels.get(self.replica_label):
                parts = urlsplit(str(target.get("scrapeUrl") or ""))
                endpoints[labels[self.replica_label]] = f"{parts.scheme}://{parts.netloc}{self.spec.path}"
        return endpoints

    async def _one(self, url: str) -> Any:
        try:
            return await get_json(self.http, url, self.timeout_s)
        except (SourceError, httpx.HTTPError, ValueError) as exc:
            return exc

    async def versions(self) -> dict[str, str]:
        """``{replica: version}`` of every endpoint that answered (a replica that did not is left out).

        Raises:
            SourceError: no endpoint found, or none answered.
        """
        endpoints = await self.endpoints()
        if not endpoints:
            raise SourceError("no scrape target of the service found in Prometheus to ask for its version")
        answers = await asyncio.gather(*(self._one(url) for url in endpoints.values()))
        found = {}
        for replica, answer in zip(endpoints, answers, strict=True):
            if isinstance(answer, dict) and answer.get(self.spec.field) is not None:
                name = str(answer.get("replica") or answer.get("instance") or replica) if self.spec.urls else replica
                found[name] = str(answer[self.spec.field])
        if not found:
            raise SourceError(f"no replica answered its version at {self.where}: {answers[0]}")
        return found
