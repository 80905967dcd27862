"""The console's Jinja2 templates (autoescaped), their filters, and the security headers of every page.

Pages are served with a strict Content-Security-Policy: scripts, styles, images and connections from
the agent itself only, no inline script or style (htmx is configured by a ``<meta name="htmx-config">``
so it inserts no inline style and never copies a ``style`` attribute when it settles a swap), forms may
post to the agent only, and no page may be framed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates

from oncall.channels.whatsapp.format import format_duration
from oncall.console.views import mask_number

CONSOLE_DIR = Path(__file__).resolve().parent
STATIC_DIR = CONSOLE_DIR / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def utc(ts: float | None) -> str:
    """Epoch seconds as ``2026-12-01 20:26:30 UTC`` (``""`` for None)."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(float(ts), tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(ts: float | None) -> str:
    """Epoch seconds as an ISO 8601 UTC timestamp for ``<time datetime>`` (``""`` for None)."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(float(ts), tz=UTC).isoformat(timespec="seconds")


def pretty(value: Any) -> str:
    """A JSON-like value indented for reading (text stays as it is)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def web_url(url: Any) -> str | None:
    """``url`` when it is an absolute http(s) URL, else None (alert annotations are untrusted)."""
    if not isinstance(url, str):
        return None
    parts = urlsplit(url)
    return url if parts.scheme in {"http", "https"} and parts.netloc else None


def percent(ratio: Any) -> str:
    """A ratio 0-1 as a whole percentage (``0.94`` -> ``94%``); other values as text."""
    if isinstance(ratio, int | float) and not isinstance(ratio, bool):
        return f"{round(ratio * 100)}%"
    return str(ratio)


def compact(detail: Any) -> str:
    """A timeline event's detail as ``key: value`` pairs on one line (None values left out)."""
    if not isinstance(detail, dict):
        return "" if detail is None else str(detail)
    parts = []
    for key, value in detail.items():
        if value is None or value == "":
            continue
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
        parts.append(f"{key}: {text}")
    return "; ".join(parts)


templates = Jinja2Templates(directory=CONSOLE_DIR / "templates")
templates.env.filters.update(
    utc=utc,
    iso=iso,
    pretty=pretty,
    web_url=web_url,
    percent=percent,
    compact=compact,
    duration=format_duration,
    mask=mask_number,
)


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    """The template ``name`` rendered as an HTML page with the console's security headers."""
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response


def fragment(name: str, context: dict[str, Any]) -> str:
    """A partial template rendered to text (live updates push it over server-sent events)."""
    return templates.get_template(name).render(context)
