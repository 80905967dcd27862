"""Helpers for the payments tests: real payments_service.py instances and a rotation-safe log reader.

The log reader parses the service's plain-text format (``payments_service.LOG_FORMAT``): one header
line per record, ``<UTC timestamp> <LEVEL> <instance> <logger>: <message>``, then, for exceptions,
the traceback lines until the next header. Rotated files (``<instance>.log.N``, N = 1 newest) are
read oldest first, so the records come out in the order they were written.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from tests.support import PYTHON, REPO_ROOT, ProcessGroup, free_port, wait_http_ok

SERVICE_FILE = REPO_ROOT / "payments_service.py"
HEADER = re.compile(
    r"^(?P<timestamp>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z) (?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"(?P<instance>\S+) (?P<logger>payments(?:\.\w+)?): (?P<message>.*)$"
)


def bug_line() -> int:
    """Line (1-based) of payments_service.py that raises KeyError for JPY: the ``MINOR_UNIT_EXPONENTS[...]``
    lookup inside ``to_minor_units`` (found in the syntax tree, so the source carries no answer key)."""
    tree = ast.parse(SERVICE_FILE.read_text())
    function = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "to_minor_units")
    lookups = [
        n.lineno
        for n in ast.walk(function)
        if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) and n.value.id == "MINOR_UNIT_EXPONENTS"
    ]
    assert len(lookups) == 1, lookups
    return lookups[0]


@dataclass
class LogRecord:
    """One parsed log record: the header fields and the lines after it (the traceback, if any)."""

    timestamp: str
    level: str
    instance: str
    logger: str
    message: str
    continuation: list[str] = field(default_factory=list)

    @property
    def traceback(self) -> str:
        """The continuation lines joined ("" when the record has no traceback)."""
        return "\n".join(self.continuation)


def log_files(log_dir: Path, instance: str) -> list[Path]:
    """The instance's log files, oldest first: ``.log.N`` ... ``.log.1``, then the current ``.log``."""
    rotated = [path for path in log_dir.glob(f"{instance}.log.*") if path.suffix[1:].isdigit()]
    rotated.sort(key=lambda path: int(path.suffix[1:]), reverse=True)
    current = log_dir / f"{instance}.log"
    return rotated + ([current] if current.exists() else [])


def parse_records(text: str) -> list[LogRecord]:
    """Parse log text into records. Raises AssertionError on text before the first header line."""
    records: list[LogRecord] = []
    for line in text.splitlines():
        match = HEADER.match(line)
        if match:
            timestamp, level, instance, logger, message = match.group(
                "timestamp", "level", "instance", "logger", "message"
            )
            records.append(LogRecord(timestamp, level, instance, logger, message))
        else:
            assert records, f"continuation line before any record: {line!r}"
            records[-1].continuation.append(line)
    return records


def read_records(log_dir: Path, instance: str) -> list[LogRecord]:
    """Every record of the instance's current and rotated log files, in the order written."""
    return [
        record for path in log_files(log_dir, instance) for record in parse_records(path.read_text(encoding="utf-8"))
    ]


class PaymentsInstance:
    """One started payments_service.py process: name, base URL, log folder and an HTTP client."""

    def __init__(self, name: str, port: int, log_dir: Path) -> None:
        self.name = name
        self.url = f"http://127.0.0.1:{port}"
        self.log_dir = log_dir
        self.http = httpx.Client(base_url=self.url, timeout=15.0)

    def set_fault(self, **body: object) -> dict:
        """POST /admin/faults; asserts 200 and returns the new fault state."""
        response = self.http.post("/admin/faults", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def records(self) -> list[LogRecord]:
        """Every log record of this instance so far (rotation-safe)."""
        return read_records(self.log_dir, self.name)

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        """Scrape /metrics: {(sample name, frozenset(labels.items())): value}."""
        response = self.http.get("/metrics")
        assert response.status_code == 200
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }


def metric(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels`` (0 when none)."""
    wanted = set(labels.items())
    return sum(
        value for (sample, sample_labels), value in samples.items() if sample == name and wanted <= sample_labels
    )


def label_values(samples: dict[tuple[str, frozenset], float], name: str, label: str) -> set[str]:
    """Values of ``label`` over the samples called ``name``."""
    return {dict(labels)[label] for sample, labels in samples if sample == name}


def label_sets(samples: dict[tuple[str, frozenset], float], name: str) -> set[frozenset[str]]:
    """The distinct label-name sets of the samples called ``name``."""
    return {frozenset(dict(labels)) for sample, labels in samples if sample == name}


def label_names(family: Metric) -> set[str]:
    """Every label name used by the samples of ``family``."""
    return {label for sample in family.samples for label in sample.labels}


def start_instances(procs: ProcessGroup, tmp_path: Path, names: list[str], **env: str) -> list[PaymentsInstance]:
    """Start one payments process per name at once (shared PAYMENTS_DB and LOG_DIR); wait until all are healthy."""
    log_dir = tmp_path / "payments-logs"
    instances = []
    for name in names:
        port = free_port()
        procs.start(
            name,
            [PYTHON, str(SERVICE_FILE), "--port", str(port)],
            env={"INSTANCE": name, "PAYMENTS_DB": str(tmp_path / "payments.db"), "LOG_DIR": str(log_dir), **env},
        )
        instances.append(PaymentsInstance(name, port, log_dir))
    for instance in instances:
        try:
            wait_http_ok(f"{instance.url}/healthz", timeout=20)
        except TimeoutError:
            pytest.fail(f"{instance.name} did not start:\n{procs.log_text(instance.name)}")
    return instances
