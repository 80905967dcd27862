"""Which audit-trail tool call produced each evidence item of a diagnosis.

An evidence item (``oncall.diagnosis.Evidence``) names its ``tool`` and the ``query`` it came from: a
PromQL expression, a log line, ``path:line`` of a source file, or an HTTP request. The call that
produced it is one of the incident's ``tool_calls`` rows with that tool, searched in the engine run
that sent the diagnosis (the investigation holding the newest ``send_diagnosis`` call with the same
summary), newest first:

1. ``exact``: an argument or a result value equals the query (or the arguments ``path`` and ``line``
   spell it as ``path:line``);
2. ``contains``: an argument or a result value contains the query;
3. ``same tool``: the newest successful call of that tool in that run.

A link therefore says how sure it is (``match``); an item whose tool was never called has no link.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MATCH_EXACT = "exact"
MATCH_CONTAINS = "contains"
MATCH_SAME_TOOL = "same tool"
MIN_CONTAINED_CHARS = 8
"""Shorter queries are not searched inside longer values (too many accidental hits)."""


@dataclass(frozen=True)
class EvidenceLink:
    """One evidence item (``tool``, ``query``, ``finding``) and the id of its tool call (None: no call
    found); ``match`` is ``exact``, ``contains``, ``same tool`` or None."""

    tool: str
    query: str
    finding: str
    call_id: int | None
    match: str | None


def string_leaves(value: Any) -> Iterator[str]:
    """Every string (and number, as text) inside a JSON-like value, depth first."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from string_leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from string_leaves(item)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)


def decoded(value: Any) -> Any:
    """A ``tool_calls`` column as JSON when it is JSON text, else as it is."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def match_strength(call: dict[str, Any], query: str) -> int:
    """How well ``call`` matches an evidence ``query``: 3 exact, 2 contains, 1 neither (same tool only)."""
    arguments = decoded(call.get("arguments"))
    if (
        isinstance(arguments, dict)
        and arguments.get("path")
        and query == f"{arguments['path']}:{arguments.get('line')}"
    ):
        return 3
    leaves = [*string_leaves(arguments), *string_leaves(decoded(call.get("result")))]
    if query in leaves:
        return 3
    if len(query) >= MIN_CONTAINED_CHARS and any(query in leaf for leaf in leaves):
        return 2
    return 1


STRENGTH_NAMES = {3: MATCH_EXACT, 2: MATCH_CONTAINS, 1: MATCH_SAME_TOOL}


def diagnosing_run(tool_calls: list[dict[str, Any]], diagnosis: dict[str, Any]) -> int | None:
    """The investigation id of the newest successful ``send_diagnosis`` call that sent this diagnosis
    (same summary), else of the newest successful one; None when there is none."""
    sent = [call for call in tool_calls if call.get("tool") == "send_diagnosis" and call.get("ok")]
    same = [call for call in sent if _summary(call) == diagnosis.get("summary")]
    chosen = (same or sent)[-1:] if sent else []
    return chosen[0].get("investigation_id") if chosen else None


def _summary(call: dict[str, Any]) -> Any:
    arguments = decoded(call.get("arguments"))
    return arguments.get("summary") if isinstance(arguments, dict) else None


def find_call(candidates: list[dict[str, Any]], tool: str, query: str) -> tuple[int | None, str | None]:
    """The id of the best-matching successful call of ``tool`` among ``candidates`` (oldest first) and the
    match name; ``(None, None)`` when ``tool`` has no successful call there."""
    best: tuple[int, int] | None = None
    for call in reversed(candidates):
        if call.get("tool") != tool or not call.get("ok"):
            continue
        strength = match_strength(call, query)
        if best is None or strength > best[0]:
            best = (strength, int(call["id"]))
        if strength == 3:
            break
    return (best[1], STRENGTH_NAMES[best[0]]) if best else (None, None)


def link_evidence(
    evidence: list[dict[str, Any]], tool_calls: list[dict[str, Any]], diagnosis: dict[str, Any]
) -> list[EvidenceLink]:
    """Link each evidence item to the tool call that produced it (see the module docstring).

    Args:
        evidence: items with ``tool``, ``query`` and ``finding`` (a diagnosis' or a hypothesis' evidence).
        tool_calls: the incident's ``tool_calls`` rows, oldest first (``id``, ``investigation_id``,
            ``tool``, ``ok``, ``arguments``, ``result``).
        diagnosis: the diagnosis the evidence belongs to (its ``summary`` finds the run that sent it).
    """
    run = diagnosing_run(tool_calls, diagnosis)
    candidates = [call for call in tool_calls if run is None or call.get("investigation_id") == run]
    links = []
    for item in evidence:
        if not isinstance(item, dict) or not item.get("tool"):
            continue
        tool, query = str(item.get("tool") or ""), str(item.get("query") or "")
        call_id, match = find_call(candidates, tool, query)
        links.append(EvidenceLink(tool, query, str(item.get("finding") or ""), call_id, match))
    return links
