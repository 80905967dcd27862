"""Atlassian Document Format (ADF) v1 description of an incident for a Jira Cloud issue.

Jira Cloud REST v3 takes rich-text fields (``description``) as an ADF document
``{"type": "doc", "version": 1, "content": [...]}``; node and mark shapes follow the official
JSON schema (npm @atlaskit/adf-schema, ``#/definitions/doc_node``). Text nodes must not be empty.
"""

from __future__ import annotations

from typing import Any

from oncall.diagnosis import Diagnosis

Node = dict[str, Any]


def text(value: str, *marks: Node) -> list[Node]:
    """A text node (as a one-element list), or no node when ``value`` is empty (ADF forbids empty text)."""
    if not value:
        return []
    node: Node = {"type": "text", "text": value}
    if marks:
        node["marks"] = list(marks)
    return [node]


STRONG: Node = {"type": "strong"}
CODE: Node = {"type": "code"}


def link(href: str) -> Node:
    """A link mark pointing at ``href``."""
    return {"type": "link", "attrs": {"href": href}}


def paragraph(*inline: list[Node]) -> Node:
    """A paragraph of the given inline node lists (empty lists are skipped)."""
    return {"type": "paragraph", "content": [node for nodes in inline for node in nodes]}


def heading(value: str, level: int) -> Node:
    """A heading (level 1-6)."""
    return {"type": "heading", "attrs": {"level": level}, "content": text(value)}


def bullet_list(items: list[list[list[Node]]]) -> Node:
    """A bullet list; each item is a paragraph made of inline node lists."""
    return {"type": "bulletList", "content": [{"type": "listItem", "content": [paragraph(*item)]} for item in items]}


def code_block(value: str, language: str | None = None) -> Node:
    """A code block (plain text, no marks allowed inside)."""
    node: Node = {"type": "codeBlock", "content": text(value)}
    if language:
        node["attrs"] = {"language": language}
    return node


def _language(path: str) -> str | None:
    """Code block language for a file name (only the ones the demo stack has)."""
    return {"py": "python", "yaml": "yaml", "yml": "yaml", "json": "json"}.get(path.rsplit(".", 1)[-1])


def incident_document(
    incident: dict[str, Any], diagnosis: Diagnosis | None, incident_url: str, code_excerpt: str | None = None
) -> Node:
    """Build the ADF document describing an incident and its diagnosis.

    Args:
        incident: the incident row (``oncall.db.get_incident``): ``id``, ``title``, ``status``.
        diagnosis: the validated diagnosis, or None when the investigation has not finished.
        incident_url: the agent's incident page (linked at the end).
        code_excerpt: source lines around ``affected_file:affected_line``, if the investigation fetched them.
    Returns:
        An ADF v1 ``doc`` node (JSON-serialisable dict).
    """
    content: list[Node] = [heading(f"Incident #{incident['id']}: {incident.get('title') or 'alert'}", 2)]
    if diagnosis is None:
        content.append(paragraph(text("The investigation has not produced a diagnosis yet.")))
    else:
        content.extend(_diagnosis_nodes(diagnosis, code_excerpt))
    content.append(paragraph(text("Incident in the on-call agent: "), text(incident_url, link(incident_url))))
    return {"type": "doc", "version": 1, "content": content}


def _diagnosis_nodes(diagnosis: Diagnosis, code_excerpt: str | None) -> list[Node]:
    """Summary, facts, root cause, location, evidence, fix and next steps as ADF blocks."""
    replicas = ", ".join(diagnosis.affected_replicas) or "none identified"
    nodes: list[Node] = [
        paragraph(text("Summary: ", STRONG), text(diagnosis.summary)),
        paragraph(
            text("Fault type: ", STRONG),
            text(diagnosis.fault_type.value, CODE),
            text(
                f" · Priority {diagnosis.priority} · Confidence {round(diagnosis.confidence * 100)}%"
                f" · Engine {diagnosis.engine}"
            ),
        ),
        paragraph(text("Affected: ", STRONG), text(f"service {diagnosis.affected_service}, replicas {replicas}")),
        heading("Root cause", 3),
        paragraph(text(diagnosis.root_cause)),
    ]
    if diagnosis.affected_file:
        location = diagnosis.affected_file + (f":{diagnosis.affected_line}" if diagnosis.affected_line else "")
        nodes += [heading("Location", 3), paragraph(text(location, CODE))]
        if code_excerpt and code_excerpt.strip():
            nodes.append(code_block(code_excerpt, _language(diagnosis.affected_file)))
    if diagnosis.evidence:
        nodes += [
            heading("Evidence", 3),
            bullet_list(
                [
                    [text(f"{item.tool}: ", STRONG), text(item.finding), text(" — "), text(item.query, CODE)]
                    for item in diagnosis.evidence
                ]
            ),
        ]
    if diagnosis.suggested_fix:
        nodes += [heading("Suggested fix", 3), paragraph(text(diagnosis.suggested_fix))]
    if diagnosis.next_steps:
        nodes += [heading("Next steps", 3), bullet_list([[text(step)] for step in diagnosis.next_steps])]
    return nodes
