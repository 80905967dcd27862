"""The roster file (``ONCALL_FILE``, YAML): people, teams with a rotation and overrides, escalation
policies and service ownership. ``load_roster`` validates it and reports every problem as
``FILE:LINE:COLUMN: PATH: reason`` (lines and columns 1-based), the way a config checker does.

Shape (see ``oncall.yaml`` at the repository root for a complete example)::

    people:                       # id -> person
      priya: {name: Priya Sharma, whatsapp: "whatsapp:+15550100001", jira: priya.sharma@example.com}
    teams:                        # id -> team
      inventory:
        rotation: {kind: weekly, members: [priya, ravi], handover: "09:00", handover_day: monday,
                   timezone: Europe/Berlin, start: 2026-01-05}
        overrides: [{person: lee, start: 2026-11-24T18:00:00+01:00, end: 2026-11-25T09:00:00+01:00}]
        escalation_policy: inventory
    escalation_policies:          # id -> levels, paged in order while nobody acknowledges
      inventory:
        levels:
          - {targets: [{on_call: inventory}], delay_s: 300}
          - {targets: [{person: lee}]}
    services: {inventory: inventory}   # service -> owning team
    default_team: inventory            # owner of services not listed (optional)

Times of day are quoted ``"HH:MM"``: YAML 1.1 reads an unquoted ``10:30`` as the base-60 number 630.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from oncall.roster.models import Roster
from oncall.roster.references import Path_, Problem, reference_problems


class RosterError(ValueError):
    """The roster file is unreadable or invalid; ``problems`` lists every finding (the message shows them)."""

    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        lines = "\n".join(f"  {problem.describe(file)}" for problem in problems)
        super().__init__(f"invalid on-call roster {file} ({len(problems)} problem(s)):\n{lines}")


def load_roster(path: Path) -> Roster:
    """Read and validate the roster file at ``path``.

    Raises:
        RosterError: the file is missing, not YAML, has duplicate keys, does not match the schema, or
            refers to people, teams or policies it does not define (every problem, with line and column).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RosterError(str(path), [Problem((), f"cannot read the file: {exc.strerror or exc}")]) from None
    return parse_roster(text, str(path))


def parse_roster(text: str, file: str = "<roster>") -> Roster:
    """Validate roster YAML ``text``; ``file`` names it in errors. Raises ``RosterError`` (see ``load_roster``)."""
    try:
        tree = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise RosterError(file, [Problem((), f"not valid YAML: {exc.problem or exc}", line, column)]) from None
    except yaml.YAMLError as exc:
        raise RosterError(file, [Problem((), f"not valid YAML: {exc}")]) from None
    problems = duplicate_keys(tree, ())
    if not isinstance(data, dict):
        problems.append(Problem((), "the roster must be a mapping with people, teams and escalation_policies"))
    if problems:
        raise RosterError(file, [locate(tree, problem) for problem in problems])
    try:
        roster = Roster.model_validate(data)
    except ValidationError as exc:
        found = [Problem(tuple(error["loc"]), error["msg"]) for error in exc.errors(include_url=False)]
        raise RosterError(file, [locate(tree, problem) for problem in found]) from None
    found = reference_problems(roster)
    if found:
        raise RosterError(file, [locate(tree, problem) for problem in found])
    return roster


def duplicate_keys(node: Any, path: Path_) -> list[Problem]:
    """Keys given twice in one mapping (YAML loaders silently keep the last one)."""
    problems: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                mark = key.start_mark
                problems.append(Problem((*path, name), "key given twice", mark.line + 1, mark.column + 1))
            seen.add(name)
            problems += duplicate_keys(value, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems += duplicate_keys(item, (*path, index))
    return problems


def locate(tree: Any, problem: Problem) -> Problem:
    """``problem`` with the line and column of the deepest node of its path that exists in the file."""
    if problem.line:
        return problem
    node, key = tree, None
    for part in problem.path:
        found = _child(node, part)
        if found is None:
            break
        key, node = found
    if node is None:
        return problem
    # an unknown key is shown where the key is; anything else where its value is
    mark = key.start_mark if key is not None and problem.message.startswith("Extra inputs") else node.start_mark
    return Problem(problem.path, problem.message, mark.line + 1, mark.column + 1)


def _child(node: Any, part: str | int) -> tuple[Any, Any] | None:
    """``(key node or None, value node)`` under key ``part`` of a mapping or item ``part`` of a sequence."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if str(key.value) == str(part):
                return key, value
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return None, node.value[part]
    return None
