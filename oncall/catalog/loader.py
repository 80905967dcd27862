"""Reading ``SERVICES_FILE``: YAML with ``${VAR}`` / ``${VAR:-default}`` expansion, validated with pydantic.

Any mistake raises ``CatalogError`` whose message is one line naming the file, the line and the
reason (``services.yaml:14: services[0].prometheus.preset: Input should be 'demo', ...``), so the
agent can stop at start with it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from oncall.catalog.models import Catalog

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class CatalogError(ValueError):
    """The catalog file is missing, not YAML, or not a valid catalog; the message is one line."""


def expand(value: Any, variables: Mapping[str, str], loc: tuple[Any, ...] = ()) -> Any:
    """``value`` with ``${VAR}`` and ``${VAR:-default}`` replaced in every string (recursively).

    Raises:
        _Undefined: a variable without a default is not set (``loc`` says where).
    """
    if isinstance(value, str):

        def substitute(found: re.Match[str]) -> str:
            name, default = found.group(1), found.group(2)
            if name in variables and variables[name] != "":
                return variables[name]
            if default is None:
                raise _Undefined(loc, name)
            return default

        return _VARIABLE.sub(substitute, value)
    if isinstance(value, dict):
        return {k: expand(v, variables, (*loc, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, variables, (*loc, i)) for i, v in enumerate(value)]
    return value


class _Undefined(Exception):
    def __init__(self, loc: tuple[Any, ...], name: str) -> None:
        super().__init__(name)
        self.loc = loc
        self.name = name


def node_line(node: yaml.Node | None, loc: tuple[Any, ...]) -> int:
    """1-based line of the YAML node at ``loc`` (keys and list indexes), or of its deepest existing parent."""
    if node is None:
        return 1
    line = node.start_mark.line + 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line


def _where(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(file)"


def _validation_message(exc: ValidationError) -> tuple[tuple[Any, ...], str]:
    """The first error's location (union tags dropped) and message."""
    error = exc.errors(include_url=False, include_input=False)[0]
    loc = tuple(part for part in error["loc"] if not (isinstance(part, str) and part in _UNION_TAGS))
    return loc, error["msg"]


_UNION_TAGS = {"http_tail", "file", "loki", "process_manager", "git", "github", "local", "promql", "http"}


def parse_catalog(text: str, source: str, variables: Mapping[str, str]) -> Catalog:
    """Parse and validate catalog YAML ``text`` (``source`` names it in errors).

    Raises:
        CatalogError: one line, ``<source>:<line>: <where>: <reason>``.
    """
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise CatalogError(f"{source}:{line}: not valid YAML: {exc.problem}") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{source}:1: expected a mapping with a `services` list")
    try:
        data = expand(data, variables)
    except _Undefined as exc:
        raise CatalogError(
            f"{source}:{node_line(root, exc.loc)}: {_where(exc.loc)}: environment variable {exc.name} is not set "
            f"(set it or give a default: ${{{exc.name}:-value}})"
        ) from None
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        loc, message = _validation_message(exc)
        raise CatalogError(f"{source}:{node_line(root, loc)}: {_where(loc)}: {message}") from None


def load_catalog(path: Path, variables: Mapping[str, str]) -> Catalog:
    """Read and validate the catalog file ``path``.

    Raises:
        CatalogError: the file cannot be read or is invalid (one line with file, line and reason).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read the service catalog: {exc.strerror or exc}") from None
    return parse_catalog(text, str(path), variables)
