"""Idempotent HTTP reads shared by the sources: a timeout per call, retried on connection errors."""

from __future__ import annotations

from typing import Any

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

GET_ATTEMPTS = 3
"""Attempts of an idempotent GET on connection errors (short exponential backoff, 0.1-1 s)."""


class SourceError(Exception):
    """A source failed in a way the investigation should hear about (the message says what to do)."""


@retry(
    retry=retry_if_exception_type(httpx.ConnectError),
    stop=stop_after_attempt(GET_ATTEMPTS),
    wait=wait_exponential(multiplier=0.1, max=1.0),
    reraise=True,
)
async def get(
    http: httpx.AsyncClient,
    url: str,
    timeout_s: float,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """GET ``url`` with a ``timeout_s`` (seconds) timeout; retried on connection errors.

    Raises:
        httpx.HTTPError: the request failed after the retries (or timed out).
    """
    return await http.get(url, params=params, headers=headers, timeout=timeout_s)


async def get_json(http: httpx.AsyncClient, url: str, timeout_s: float, params: dict[str, Any] | None = None) -> Any:
    """GET ``url`` and decode its JSON body.

    Raises:
        SourceError: an HTTP status >= 400 (with the start of the body).
        httpx.HTTPError: the request failed.
    """
    response = await get(http, url, timeout_s, params)
    if response.status_code >= 400:
        raise SourceError(f"GET {url} answered HTTP {response.status_code}: {response.text[:300]}")
    return response.json()
