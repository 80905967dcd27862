"""In-process API fuzzing with schemathesis 4.x: every operation of an ASGI app's OpenAPI schema.

``fuzz_asgi_app(app)`` loads the app's schema through schemathesis' ASGI transport (no socket, no
network), then for EVERY operation draws ``max_examples`` positive cases (valid by the schema) and
``max_examples`` negative cases (invalid by the schema) with Hypothesis from a fixed seed, sends each
to the app and runs the checks: by default "no server error" (no 5xx; an exception escaping the app,
which a real server answers with 500, counts too) and "response conforms to the documented schema".
It does not stop at the first failure: it reports each distinct failure once, with the request that
reproduces it as a curl command (secret headers such as ``Authorization`` are shown as ``[Filtered]``;
``http://testserver`` stands for the app's address). Shrinking is off, so the run time is bounded by
``max_examples`` and ``time_budget_s``.

Usage::

    from tests.api_fuzz import fuzz_asgi_app

    def test_every_operation_survives_fuzzing():
        report = fuzz_asgi_app(create_app(settings), headers={"Authorization": f"Bearer {token}"})
        assert report.ok, report.format()

It uses schemathesis' public Python API only (``schemathesis.openapi.from_asgi``,
``BaseSchema.get_all_operations``, ``APIOperation.as_strategy``, ``Case.call``, ``Case.validate_response``,
``schemathesis.errors.FailureGroup``), see https://schemathesis.readthedocs.io/en/stable/reference/python/.
Synchronous: call it from a plain ``def`` test (schemathesis runs the app on its own event loop thread).
"""

from __future__ import annotations

import hashlib
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.core.result import Err
from schemathesis.errors import FailureGroup, SchemathesisError
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import response_schema_conformance

DEFAULT_CHECKS: tuple[CheckFunction, ...] = (not_a_server_error, response_schema_conformance)
DEFAULT_MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
DEFAULT_SEED = 1729
DEFAULT_MAX_EXAMPLES = 25
DEFAULT_TIME_BUDGET_S = 120.0
UNHANDLED_EXCEPTION = "Unhandled exception"
_EXCERPT_CHARS = 300


@dataclass(frozen=True)
class FuzzFailure:
    """One distinct failure: which operation, which kind, what happened, and the request that shows it.

    ``operation`` is schemathesis' label (``"POST /incidents/{incident_id}/acknowledge"``), ``mode``
    ``"positive"`` or ``"negative"``, ``kind`` the check's title (``"Server error"``, ``"Response
    violates schema"``) or ``"Unhandled exception"``, ``code`` schemathesis' failure code (``ST101`` ...,
    empty for an unhandled exception), ``detail`` the check's message or the exception and where it was
    raised, ``reproduce`` a curl command with secret headers filtered.
    """

    operation: str
    mode: str
    kind: str
    code: str
    status_code: int | None
    detail: str
    reproduce: str


@dataclass
class FuzzReport:
    """What one ``fuzz_asgi_app`` run did: operations, cases sent, distinct failures, what it could not run.

    ``statuses`` counts the HTTP status codes each operation answered (an unhandled exception counts
    as 500): ``{"POST /incidents/{incident_id}/resolve": Counter({200: 20, 422: 25})}``; an operation
    that only ever answered 401 was not exercised (pass ``headers``). ``cases_digest`` is a SHA-256 over
    every generated request (method, path, query, headers, body) in order: equal digests mean the same
    cases were sent (the seed makes runs repeatable).
    ``skipped`` maps ``"<operation> [<mode>]"`` to why it was not fuzzed (no invalid input exists for an
    operation without parameters; time budget spent); ``errors`` are operations schemathesis could not
    build cases for (schema problems). ``elapsed_s`` is wall time in seconds.
    """

    seed: int
    max_examples: int
    operations: list[str] = field(default_factory=list)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    failures: list[FuzzFailure] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    cases_digest: str = ""

    @property
    def cases(self) -> int:
        """How many cases were sent to the app in total."""
        return sum(sum(counts.values()) for counts in self.statuses.values())

    @property
    def ok(self) -> bool:
        """True when every operation was fuzzed (nothing cut by the time budget) and nothing failed."""
        out_of_time = any(reason.startswith("time budget") for reason in self.skipped.values())
        return not self.failures and not self.errors and not out_of_time

    def format(self) -> str:
        """A readable report for an assert message: summary line, then each failure with its curl command."""
        lines = [
            f"schemathesis {schemathesis.__version__}: {len(self.operations)} operations, {self.cases} cases "
            f"(max {self.max_examples} per operation and mode), seed {self.seed}, {self.elapsed_s:.1f} s, "
            f"{len(self.failures)} failures, {len(self.errors)} errors"
        ]
        for failure in self.failures:
            status = f" HTTP {failure.status_code}" if failure.status_code is not None else ""
            lines.append(f"FAIL {failure.operation} [{failure.mode}] {failure.kind} {failure.code}{status}")
            lines.extend(f"    {line}" for line in failure.detail.splitlines() if line.strip())
            lines.append(f"    reproduce: {failure.reproduce}")
        for operation in self.operations:
            counts = self.statuses.get(operation, Counter())
            lines.append(
                f"  {operation}: " + (", ".join(f"{code} x{n}" for code, n in sorted(counts.items())) or "none")
            )
        lines.extend(f"ERROR {error}" for error in self.errors)
        lines.extend(f"SKIPPED {name}: {reason}" for name, reason in self.skipped.items())
        return "\n".join(lines)


class _OutOfTime(Exception):
    """Raised inside a Hypothesis run to stop it when the run's time budget is spent."""


@dataclass
class _Run:
    """State shared by the cases of one fuzz run."""

    report: FuzzReport
    headers: dict[str, str]
    path_parameters: dict[str, Any]
    checks: list[CheckFunction]
    deadline: float
    digest: Any = field(default_factory=hashlib.sha256)
    seen: set[tuple[str, str, str, str]] = field(default_factory=set)

    def add(self, failure: FuzzFailure, key_detail: str) -> None:
        key = (failure.operation, failure.code, failure.kind, key_detail)
        if key not in self.seen:
            self.seen.add(key)
            self.report.failures.append(failure)


def fuzz_asgi_app(
    app: Any,
    *,
    schema_path: str = "/openapi.json",
    headers: Mapping[str, str] | None = None,
    path_parameters: Mapping[str, Any] | None = None,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    seed: int = DEFAULT_SEED,
    checks: Iterable[CheckFunction] = DEFAULT_CHECKS,
    modes: Iterable[GenerationMode] = DEFAULT_MODES,
    time_budget_s: float = DEFAULT_TIME_BUDGET_S,
    include: Callable[[APIOperation], bool] | None = None,
) -> FuzzReport:
    """Fuzz every operation of ``app``'s OpenAPI schema in-process and report what failed.

    ``app`` is an ASGI app (FastAPI); its lifespan starts on the first request and is shut down before
    this returns. ``schema_path`` is where the app serves its schema. ``headers`` are sent with every
    case and win over generated ones: pass ``{"Authorization": "Bearer <token>"}`` so protected
    operations are exercised beyond 401. ``path_parameters`` pins path parameters by name (e.g.
    ``{"incident_id": 1}``, an incident that exists) in every operation whose path has them, so cases
    get past 404 and fuzz the query and body of an existing resource. ``max_examples`` cases per
    operation and generation mode (``modes``: positive = valid input, negative = invalid input, which
    must get a 4xx, never a 5xx), drawn from ``seed``. ``checks`` are schemathesis check functions
    (``schemathesis.checks``, ``schemathesis.specs.openapi.checks``). ``time_budget_s`` (seconds) cuts
    the run short; operations not reached are listed in ``skipped`` and make ``ok`` false. ``include``
    selects operations (default all).

    Raises ``schemathesis.errors.LoaderError`` when the schema cannot be loaded.
    """
    started = time.monotonic()
    report = FuzzReport(seed=seed, max_examples=max_examples)
    run = _Run(report, dict(headers or {}), dict(path_parameters or {}), list(checks), started + time_budget_s)
    try:
        schema = schemathesis.openapi.from_asgi(schema_path, app)
        for result in schema.get_all_operations():
            if isinstance(result, Err):
                report.errors.append(f"schema: {result.err()}")
                continue
            operation = result.ok()
            if include is None or include(operation):
                report.operations.append(operation.label)
                for mode in modes:
                    _fuzz_operation(run, operation, mode, max_examples, seed)
    finally:
        shutdown_lifespans()
    report.cases_digest = run.digest.hexdigest()
    report.elapsed_s = time.monotonic() - started
    return report


def _fuzz_operation(run: _Run, operation: APIOperation, mode: GenerationMode, max_examples: int, seed: int) -> None:
    name = f"{operation.label} [{mode.value}]"
    if time.monotonic() > run.deadline:
        run.report.skipped[name] = "time budget spent before this operation"
        return

    pinned = {key: value for key, value in run.path_parameters.items() if f"{{{key}}}" in operation.path}

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=pinned or None))
    @settings(
        max_examples=max_examples,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time, first failing case reported
        deadline=None,
        database=None,
        derandomize=False,
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.seed(seed)
    def exercise(case: Case) -> None:
        if time.monotonic() > run.deadline:
            raise _OutOfTime
        _send_and_check(run, case, mode)

    try:
        exercise()
    except Unsatisfiable:
        run.report.skipped[name] = f"no {mode.value} input can be generated for this operation"
    except _OutOfTime:
        run.report.skipped[name] = "time budget spent during this operation (partly fuzzed)"
    except SchemathesisError as exc:
        run.report.errors.append(f"{name}: {type(exc).__name__}: {exc}")


def _send_and_check(run: _Run, case: Case, mode: GenerationMode) -> None:
    statuses = run.report.statuses.setdefault(case.operation.label, Counter())
    run.digest.update(repr((case.method, case.formatted_path, case.query, case.headers, case.body)).encode())
    try:
        response = case.call(headers=run.headers)
    except Exception as exc:  # escaped the app: a real server answers 500
        statuses[500] += 1
        where = _raised_at(exc)
        detail = f"{type(exc).__name__}: {exc}\nraised at {where}"
        reproduce = case.as_curl_command(headers=run.headers)
        failure = FuzzFailure(case.operation.label, mode.value, UNHANDLED_EXCEPTION, "", None, detail, reproduce)
        run.add(failure, f"{type(exc).__name__} {where}")
        return
    statuses[response.status_code] += 1
    try:
        case.validate_response(response, checks=run.checks, headers=run.headers)
    except FailureGroup as group:
        reproduce = case.as_curl_command(headers=run.headers)
        for found in group.exceptions:
            detail = "\n".join(part for part in (found.message, _excerpt(response.text)) if part)
            failure = FuzzFailure(
                case.operation.label, mode.value, found.title, found.code, response.status_code, detail, reproduce
            )
            run.add(failure, str(response.status_code))


def _raised_at(exc: BaseException) -> str:
    """``file:line in function`` of the innermost frame of the exception's traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{last.filename}:{last.lineno} in {last.name}"


def _excerpt(text: str) -> str:
    text = text.strip()
    if not text:
        return ""
    body = text if len(text) <= _EXCERPT_CHARS else text[:_EXCERPT_CHARS] + " ..."
    return f"response body: {body}"
