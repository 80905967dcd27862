"""Advice that cannot make things worse: no diagnosis may tell anyone to take every replica out at once.

Checked by code against the fleet (the service's replicas), for every engine's diagnosis: a suggested
fix or next step that removes, stops, drains or restarts every replica at once (each named, or "all
replicas") is rewritten into advice that keeps the fleet serving (one replica at a time; during an
overload: scale out or shed load); a proposed ``restart_replica`` of ``all`` or of the only replica
and a ``scale`` to fewer than one replica are dropped. One at a time, rolling, or a negated
instruction ("never restart every replica") is fine.
"""

from __future__ import annotations

import re
from typing import Any

DISRUPTIVE = re.compile(
    r"\b(take|taking|took|remove|removing|pull|pulling|stop|stopping|restart|restarting|kill|killing|drain|"
    r"draining|shut|shutting|evict|evicting|terminate|terminating|disable|disabling|cordon|delete|deleting)\b",
    re.I,
)
NEGATION = re.compile(r"\b(do not|don't|never|avoid|not|without|instead of)\b[^.;:]{0,40}$", re.I)
WHOLE_FLEET = re.compile(
    r"\b(all|every|each|both)\s+(of\s+)?(the\s+)?(\w+\s+)?(replicas?|instances?|pods?|backends?|nodes?|servers?)\b"
    r"|\b(the\s+)?(whole|entire)\s+(fleet|service|cluster)\b|\beverything\b",
    re.I,
)
ONE_AT_A_TIME = re.compile(r"\b(one at a time|one by one|in turn|rolling|one after (the )?other)\b", re.I)


def _names_fleet(text: str, fleet: list[str]) -> bool:
    named = bool(fleet) and all(re.search(rf"(?<![\w-]){re.escape(r)}(?![\w-])", text) for r in fleet)
    return named or bool(WHOLE_FLEET.search(text))


SENTENCE = re.compile(r"(?<=[.;!?])\s+")


def _clause_takes_fleet_out(clause: str, fleet: list[str]) -> bool:
    if ONE_AT_A_TIME.search(clause) or not _names_fleet(clause, fleet):
        return False
    return any(not NEGATION.search(clause[: verb.start()]) for verb in DISRUPTIVE.finditer(clause))


def takes_fleet_out(text: str, fleet: list[str]) -> bool:
    """True when a sentence of ``text`` tells someone to remove, stop, drain or restart every replica of
    ``fleet`` at once."""
    return any(_clause_takes_fleet_out(clause, fleet) for clause in SENTENCE.split(text))


def safe_alternative(overload: bool) -> str:
    """The advice that replaces an instruction taking the whole fleet out (it names no replica, so that it
    reads the same for a fleet of any size and never itself lists the whole fleet)."""
    if overload:
        return "Do not take the replicas out or restart them all: scale out or shed load at the load balancer instead"
    return "Do not take the replicas out at once: act on one replica at a time and keep the others serving"


def unsafe_action(action: dict[str, Any], fleet: list[str]) -> bool:
    """True for a proposed action that would take every replica out: ``restart_replica`` of ``all`` (or of
    the only replica) and ``scale`` to fewer than one replica."""
    kind, target = action.get("action"), action.get("target")
    if kind == "restart_replica":
        return target in (None, "all") or (bool(fleet) and set(fleet) <= {target})
    if kind == "scale":
        wanted = (action.get("params") or {}).get("replicas")
        return isinstance(wanted, int | float) and wanted < 1
    return False


def make_safe(fields: dict[str, Any], fleet: list[str], *, overload: bool) -> dict[str, Any]:
    """``fields`` (diagnosis JSON fields) with every step, fix and action that takes ``fleet`` out replaced or
    dropped (see the module docstring)."""
    steps, seen = [], set()
    for step in fields.get("next_steps") or []:
        text = safe_alternative(overload) if takes_fleet_out(step, fleet) else step
        if text not in seen:
            steps.append(text)
            seen.add(text)
    fields["next_steps"] = steps
    fix = fields.get("suggested_fix") or ""
    if takes_fleet_out(fix, fleet):
        kept = [
            c if not _clause_takes_fleet_out(c, fleet) else safe_alternative(overload) + "."
            for c in SENTENCE.split(fix)
        ]
        fields["suggested_fix"] = " ".join(kept)
    fields["proposed_actions"] = [a for a in fields.get("proposed_actions") or [] if not unsafe_action(a, fleet)]
    return fields
