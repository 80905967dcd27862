"""Shared pytest fixtures: a per-test process group that is always cleaned up."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import ProcessGroup


@pytest.fixture
def procs(tmp_path: Path):
    """A ProcessGroup whose processes are stopped by PID when the test ends."""
    group = ProcessGroup(tmp_path / "proc-logs")
    try:
        yield group
    finally:
        group.stop_all()
