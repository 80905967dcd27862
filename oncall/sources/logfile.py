"""ERROR records from log files on this machine, rotation-safe (``logs.type: file`` in the catalog).

A glob names the current files (``logs/payments/*.log``). Each file's rotated copies follow Python's
``RotatingFileHandler`` and logrotate's numbering (``<file>.1`` newest ... ``<file>.N``); they are read
newest first until the look-back window is covered, each from its end (at most ``max_bytes``). A
file rotated away between listing and reading is skipped; a record seen twice (rotated mid-read) is
kept once.
"""

from __future__ import annotations

import asyncio
import glob
import re
import time
from pathlib import Path
from typing import Any

from oncall.catalog.models import FileLogs
from oncall.sources.http import SourceError
from oncall.sources.logformat import parse_lines

_ROTATED = re.compile(r"\.\d+$")


def rotated_chain(current: Path) -> list[Path]:
    """``current`` and its existing rotated copies, newest first (``.1``, ``.2`` ... in order)."""
    chain = [current]
    number = 1
    while (candidate := current.with_name(f"{current.name}.{number}")).exists():
        chain.append(candidate)
        number += 1
    return chain


def read_tail(path: Path, max_bytes: int) -> list[str]:
    """The last ``max_bytes`` of ``path`` as lines (a line cut at the start is dropped); [] when gone."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            start = max(0, size - max_bytes)
            fh.seek(start)
            data = fh.read(max_bytes)
    except FileNotFoundError:
        return []
    text = data.decode("utf-8", errors="replace")
    if start > 0:
        text = text.split("\n", 1)[1] if "\n" in text else ""
    return text.splitlines()


def replica_of(path: Path) -> str:
    """The replica a log file belongs to when its lines do not say: the file name without ``.log``."""
    return path.name.removesuffix(".log")


class FileLogSource:
    """ERROR records of the files matching ``spec.path`` (relative to ``base_dir``).

    Args:
        spec: the catalog's ``logs`` section (``type: file``).
        base_dir: folder relative paths are resolved against (the catalog file's).
    """

    name = "file"

    def __init__(self, spec: FileLogs, base_dir: Path) -> None:
        self.spec = spec
        pattern = Path(spec.path)
        self.pattern = str(pattern if pattern.is_absolute() else base_dir / pattern)

    @property
    def where(self) -> str:
        """The glob read, for tool descriptions and evidence."""
        return self.pattern

    def current_files(self) -> list[Path]:
        """Files the glob matches, rotated copies excluded (they are read with their current file)."""
        return sorted(Path(p) for p in glob.glob(self.pattern) if not _ROTATED.search(p) and Path(p).is_file())

    def _file_records(self, current: Path, since: float) -> list[dict[str, Any]]:
        """Records of ``current`` and its rotated copies back to ``since`` (epoch s), oldest first."""
        records: list[dict[str, Any]] = []
        budget = self.spec.max_bytes
        for path in rotated_chain(current):
            if budget <= 0:
                break
            lines = read_tail(path, budget)
            budget -= sum(len(line) + 1 for line in lines)
            older = parse_lines(lines, self.spec, {"replica": replica_of(current)})
            records = older + records
            first = next((r["ts"] for r in older if r.get("ts") is not None), None)
            if first is not None and first < since:
                break
        return records

    def read(self, since: float, limit: int, replica: str | None) -> list[dict[str, Any]]:
        """ERROR records since ``since`` (epoch s), newest first, at most ``limit`` (one replica's when given)."""
        seen: set[tuple[Any, ...]] = set()
        found: list[dict[str, Any]] = []
        for current in self.current_files():
            for record in self._file_records(current, since):
                key = (record.get("replica"), record.get("ts"), record.get("message"), record.get("traceback"))
                ts = record.get("ts")
                if key in seen or ts is None or ts < since or (replica and record.get("replica") != replica):
                    continue
                seen.add(key)
                found.append(record)
        # newest first; records of one millisecond keep their written order reversed
        ordered = sorted(enumerate(found), key=lambda pair: (-pair[1]["ts"], -pair[0]))
        return [record for _, record in ordered[:limit]]

    async def errors(self, seconds: int, limit: int, replica: str | None = None) -> list[dict[str, Any]]:
        """ERROR records of the last ``seconds``, newest first, at most ``limit``.

        Raises:
            SourceError: no file matches the glob.
        """
        records = await asyncio.to_thread(self.read, time.time() - seconds, limit, replica)
        if not records and not self.current_files():
            raise SourceError(f"no log file matches {self.pattern}")
        return records
