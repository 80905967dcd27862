"""Shared pytest fixtures: a per-test process group that is always cleaned up."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from oncall.store.database import Store
from tests.rig import Rig, make_settings
from tests.support import ProcessGroup, migrated_store


@pytest.fixture
def procs(tmp_path: Path):
    """A ProcessGroup whose processes are stopped by PID when the test ends."""
    group = ProcessGroup(tmp_path / "proc-logs")
    try:
        yield group
    finally:
        group.stop_all()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A migrated SQLite store in the test's folder, closed afterwards."""
    database = migrated_store(tmp_path / "oncall.db")
    yield database
    await database.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No model, GitHub or code root settings leak in from the environment."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL", "GITHUB_REPO", "GITHUB_TOKEN", "CODE_ROOT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def rig_factory(tmp_path: Path, clean_env: None) -> AsyncIterator[Callable[..., Rig]]:
    """Build Rigs (settings overrides as keyword arguments) sharing one migrated store; closed at the end."""
    store = migrated_store(tmp_path / "oncall.db")
    made: list[Rig] = []

    def make(**overrides: Any) -> Rig:
        rig = Rig(make_settings(tmp_path, **overrides), store, httpx.AsyncClient())
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.tasks.drain(5)
        await rig.http.aclose()
    await store.close()
