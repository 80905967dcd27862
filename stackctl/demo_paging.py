"""What ``make demo`` and ``make demo-ha`` show around the diagnosis: who was paged and why (the incident's
escalation levels), ``make reply`` sending as the person paged, and the post-mortem once the fault is cleared."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel

RESOLVE_TIMEOUT_S = 150.0
"""Seconds the demo waits for the incident to resolve after the fault is cleared."""


def paged_lines(detail: dict[str, Any]) -> list[str]:
    """One line per escalation level of the incident (``GET /incidents/{id}`` ``pages``): level, names,
    state, and why these people (the reason the agent recorded)."""
    lines = []
    for page in detail.get("pages") or []:
        names = ", ".join(str(r.get("name") or r.get("whatsapp")) for r in page.get("recipients") or []) or "-"
        if page["status"] == "paged":
            state = f"paged {', '.join(str(r.get('whatsapp')) for r in page.get('recipients') or [])}"
        elif page["status"] == "scheduled":
            state = f"due in {max(0.0, float(page['due_at']) - time.time()):.0f} s unless acknowledged"
        else:
            state = f"not paged: {page.get('stop_reason')}"
        lines.append(f"episode {page['episode']} level {page['level']}: {names} ({state})")
        if page.get("reason"):
            lines.append(f"    why: {page['reason']}")
    return lines


def paged_number(detail: dict[str, Any]) -> str | None:
    """The WhatsApp number paged first for the incident's latest episode (level 1), or None."""
    first = [p for p in detail.get("pages") or [] if p["level"] == 1 and p["status"] == "paged"]
    recipients = first[-1].get("recipients") if first else None
    return str(recipients[0]["whatsapp"]) if recipients else None


def reply_as_paged(run_dir: Path, detail: dict[str, Any]) -> str | None:
    """Make ``make reply`` (``run_dir/reply.json``) send as the person paged; returns their number, or None
    when nobody was paged through the roster (the sender stays as it was)."""
    number = paged_number(detail)
    path = run_dir / "reply.json"
    if number is None or not path.exists():
        return None
    reply = json.loads(path.read_text())
    reply["from"] = number
    path.write_text(json.dumps(reply))
    return number


def show_paging(console: Console, detail: dict[str, Any], run_dir: Path) -> None:
    """Print who was paged and why, and whom ``make reply`` now speaks as."""
    lines = paged_lines(detail) or ["no escalation levels recorded (the diagnosis went to ONCALL_WHATSAPP_NUMBERS)"]
    number = reply_as_paged(run_dir, detail)
    if number is not None:
        lines.append(f"make reply now sends as {number}, the person paged")
    console.print(Panel("\n".join(lines), title="Who was paged and why", border_style="magenta"))


def wait_for_resolution(client: httpx.Client, agent_url: str, incident_id: int, timeout: float) -> dict[str, Any]:
    """Poll ``GET /incidents/{id}`` until the incident is resolved; returns its detail.

    Raises:
        TimeoutError: still firing after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        detail: dict[str, Any] = client.get(f"{agent_url}/incidents/{incident_id}").json()
        if detail.get("status") == "resolved":
            return detail
        time.sleep(1.0)
    raise TimeoutError(f"incident #{incident_id} still firing {timeout:.0f} s after the fault was cleared")


def wait_for_approval(client: httpx.Client, agent_url: str, incident_id: int, timeout: float) -> dict[str, Any] | None:
    """Poll ``GET /incidents/{id}`` for up to ``timeout`` seconds until an engineer approved one of its
    ``proposed_actions`` (``make reply MSG="#N approve 1"``); returns that action (with its ``status``:
    approved, running, recovered, ...), or None when none was approved in time or one was rejected."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        detail: dict[str, Any] = client.get(f"{agent_url}/incidents/{incident_id}").json()
        decided = [a for a in detail.get("proposed_actions") or [] if a.get("status") not in (None, "proposed")]
        if decided:
            return None if decided[0]["status"] in ("rejected", "refused") else decided[0]
        time.sleep(1.0)
    return None


def show_postmortem(console: Console, client: httpx.Client, agent_url: str, incident_id: int) -> str:
    """Fetch ``GET /incidents/{id}/postmortem`` (Markdown) and print it; returns the Markdown."""
    response = client.get(f"{agent_url}/incidents/{incident_id}/postmortem")
    response.raise_for_status()
    console.print(Panel(Markdown(response.text), title=f"Post-mortem of #{incident_id}", border_style="cyan"))
    console.print(f"[bold]Post-mortem:[/bold] {agent_url}/incidents/{incident_id}/postmortem")
    return response.text
