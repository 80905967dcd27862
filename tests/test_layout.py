"""The code keeps its shape: rooms that import only downwards, small modules and functions, SQL only in
the store, and a composition root that only composes."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from radon.complexity import cc_visit

from tests.support import REPO_ROOT

PACKAGE = REPO_ROOT / "oncall"
MAX_MODULE_LINES = 400
MAX_COMPLEXITY = 15
LAYERS = [
    {"settings", "diagnosis", "metrics", "redaction", "tasks", "roster", "catalog"},
    {"store"},
    {"history", "paging"},
    {"sources"},
    {"channels"},
    {"investigate"},
    {"incidents"},
    {"conversation"},
    {"api", "console"},
]
"""The rooms of ``oncall/`` from the bottom up: a module imports only from its own layer or below."""
SQL = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+TABLE)\b", re.I | re.S)


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def room(path: Path) -> str:
    """``oncall/store/incidents.py`` -> ``store``; ``oncall/settings.py`` -> ``settings``."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def layer(name: str) -> int:
    return next(index for index, rooms in enumerate(LAYERS) if name in rooms)


def oncall_imports(path: Path) -> set[str]:
    """The rooms of ``oncall`` that a module imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "oncall" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_room_is_placed_in_a_layer() -> None:
    rooms = {room(path) for path in modules() if path.name != "__init__.py" or path.parent != PACKAGE}
    assert rooms <= set().union(*LAYERS), sorted(rooms - set().union(*LAYERS))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_imports_go_downwards_only(path: Path) -> None:
    if path == PACKAGE / "__init__.py":
        return
    own = layer(room(path))
    upwards = {name for name in oncall_imports(path) if layer(name) > own}
    assert not upwards, f"{path.relative_to(REPO_ROOT)} (room {room(path)}) imports higher rooms {sorted(upwards)}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_modules_are_small_and_functions_simple(path: Path) -> None:
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES
    complex_blocks = [(b.name, b.complexity) for b in cc_visit(source) if b.complexity > MAX_COMPLEXITY]
    assert not complex_blocks, complex_blocks


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_sql_lives_in_the_store_only(path: Path) -> None:
    if room(path) == "store":
        return
    tree = ast.parse(path.read_text())
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert not [s for s in strings if SQL.search(s)], "SQL text outside oncall/store"
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    sqlalchemy = {name for name in imported if name.startswith("sqlalchemy")}
    assert sqlalchemy <= {"sqlalchemy.ext.asyncio"}, f"SQLAlchemy used outside oncall/store: {sqlalchemy}"


def test_composition_root_only_composes() -> None:
    tree = ast.parse((REPO_ROOT / "on_call_agent.py").read_text())
    decorated = [
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and any(isinstance(d, ast.Call) and getattr(d.func, "attr", "") in {"get", "post"} for d in node.decorator_list)
    ]
    assert decorated == [], "routes belong in oncall/api"
    assert len((REPO_ROOT / "on_call_agent.py").read_text().splitlines()) <= 220
