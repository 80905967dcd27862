"""Jira comments in Atlassian Document Format (ADF v1): the post-mortem of a resolved incident, the
note that its alert fired again, and the event marker that makes a comment idempotent.

A ``oncall.history.document.Document`` becomes headings, paragraphs and bullet lists whose inline
runs map to text nodes (``code`` and ``strong`` marks; ``link`` marks only for URLs the agent built).
Jira refuses comments over 32767 characters, so long sections are cut (the incident page has it all).
"""

from __future__ import annotations

from typing import Any

from oncall.channels.jira.adf import CODE, STRONG, bullet_list, heading, link, paragraph, text
from oncall.history.document import Document, Inline, Runs

Node = dict[str, Any]
MAX_BULLETS = 40
"""Bullets kept per section (a long timeline is cut; the post-mortem page keeps every line)."""
MARKER_PREFIX = "oncall-agent event: "


def marker_text(event: str) -> str:
    """The text that marks a comment as the one of ``event``."""
    return f"{MARKER_PREFIX}{event}"


def with_marker(body: Node, event: str) -> Node:
    """``body`` (an ADF doc) with a last paragraph naming ``event``, so a retry can find the comment."""
    content = [*body.get("content", []), paragraph(text(marker_text(event), CODE))]
    return {**body, "content": content}


def inline_nodes(runs: Runs) -> list[list[Node]]:
    """ADF inline node lists for document runs (empty runs give no node: ADF forbids empty text)."""
    nodes: list[list[Node]] = []
    for run in runs:
        nodes.append(_inline(run))
    return nodes


def _inline(run: Inline) -> list[Node]:
    if run.kind == "code":
        return text(run.value, CODE)
    if run.kind == "strong":
        return text(run.value, STRONG)
    if run.kind == "link":
        return text(run.value, link(run.value))
    return text(run.value)


def document_adf(document: Document, incident_url: str | None = None) -> Node:
    """An ADF ``doc`` of ``document``: title as a level-2 heading, sections as level-3 headings."""
    content: list[Node] = [heading(document.title, 2)]
    for section in document.sections:
        content.append(heading(section.title, 3))
        content += [paragraph(*inline_nodes(runs)) for runs in section.paragraphs if any(r.value for r in runs)]
        items = [inline_nodes(runs) for runs in section.bullets if any(r.value for r in runs)]
        if len(items) > MAX_BULLETS:
            more = len(items) - MAX_BULLETS
            tail = f"… {more} more on the incident page" + (f": {incident_url}" if incident_url else "")
            items = [*items[:MAX_BULLETS], [text(tail)]]
        if items:
            content.append(bullet_list(items))
    return {"type": "doc", "version": 1, "content": content}


def refire_document(incident_id: int, alert: str, episode: int, incident_url: str) -> Node:
    """The comment added when the alert of an issue fires again: which incident, which episode, where."""
    return {
        "type": "doc",
        "version": 1,
        "content": [
            paragraph(
                text(f"{alert} fired again", STRONG),
                text(f" (incident #{incident_id}, episode {episode}). The on-call agent is investigating: "),
                text(incident_url, link(incident_url)),
            )
        ],
    }
