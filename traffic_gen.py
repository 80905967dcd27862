#!/usr/bin/env python3
"""Open-loop HTTP traffic generator for the demo stack (inventory through the load balancer, or payments).

Usage::

    python traffic_gen.py --url http://127.0.0.1:9000 --profile spike --rps 50 --duration 60
    python traffic_gen.py --url http://127.0.0.1:9000 --profile agentic \\
        --normal-rps 20 --normal-duration 20 --error-rps 40 --error-duration 60 --json out.json
    python traffic_gen.py --mix payments --url http://127.0.0.1:8201 --url http://127.0.0.1:8202 --rps 20

Rate profiles (t = seconds since the start, D = --duration in seconds, R = --rps in requests/s):

* ``constant``   rate(t) = R.
* ``spike``      rate(t) = 5R for D/3 <= t < 2D/3, else R (a 5x burst in the middle third).
* ``ramp``       rate(t) = R * t / D (linear from 0 to R).
* ``sine``       rate(t) = R * (1 + 0.5 sin(2 pi t / D)) (one period over the run, 0.5R .. 1.5R).
* ``ramp-spike`` first half: ramp 0 -> R over D/2; second half: the spike profile over the
  remaining D/2 (R, then 5R in its middle third, then R).
* ``agentic``    normal phase at --normal-rps for --normal-duration s, then an error phase at
  --error-rps for --error-duration s in which 80% of requests are the mix's error request
  (see the mixes below; the rest keep the normal mix). D defaults to normal + error duration.

Request mixes (--mix, stack contract):

* ``inventory`` (default): GET /items/{id 1..100} 75%, PUT /items/{id} 5%, GET /random-endpoint 20%;
  in the agentic error phase 80% of requests are GET /random-endpoint/error (null-dereference bug).
* ``payments``: POST /payments 80% (amount 1.00-500.00 in USD 50%, EUR 30%, GBP 20%; customer
  cus-1..cus-1000), GET /payments/{id 1..100} 20%; in the agentic error phase 80% of requests are
  POST /payments in JPY, which hits the service's currency-conversion bug.

--url may be given several times (e.g. every payments instance, which has no load balancer):
request i goes to URL i mod n (client-side round robin).

Measurement model (open loop, no coordinated omission): a scheduler computes the intended send
time of request i from the rate function (the time at which the integral of rate(t) reaches i)
and starts one task per request at that time, never waiting for responses. Latency is measured
from the *scheduled* send time, so queueing behind a slow server or a full connection pool
(TCPConnector limit, --connections) is part of the latency. Schedule lag (actual start of the
request task minus its scheduled time) is recorded separately and shows when the generator
itself falls behind. Percentiles come from HdrHistogram (1 us .. 60 s, 3 significant digits);
they cover requests that got an HTTP response (any status). Failures without a response are
counted by exception class (e.g. ``ClientConnectorError``) in the outcome breakdown.

The run is bounded: scheduling stops at D seconds (or at SIGINT/SIGTERM); in-flight requests
then get at most --grace seconds, after which they are cancelled and counted as
``timeout/cancelled``. The summary is always printed (and written with --json).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import aiohttp
import uvloop
from hdrh.histogram import HdrHistogram
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rich.console import Console
from rich.table import Table

Profile = Literal["constant", "spike", "ramp", "sine", "ramp-spike", "agentic"]
PROFILES: tuple[str, ...] = get_args(Profile)
Mix = Literal["inventory", "payments"]
MIXES: tuple[str, ...] = get_args(Mix)
Phase = Literal["normal", "error"]

SPIKE_FACTOR = 5.0
SINE_AMPLITUDE = 0.5
ERROR_PHASE_ERROR_SHARE = 0.8
ITEM_IDS = (1, 100)
PAYMENT_IDS = (1, 100)
CUSTOMER_IDS = (1, 1000)
# Charge currencies of the payments normal mix, with their cumulative shares.
PAYMENT_CURRENCIES = (("USD", 0.5), ("EUR", 0.8), ("GBP", 1.0))
BUGGY_CURRENCY = "JPY"
CANCELLED = "timeout/cancelled"
# HdrHistogram range in microseconds: 1 us .. 60 s, 3 significant digits.
HIST_MIN_US = 1
HIST_MAX_US = 60_000_000
HIST_DIGITS = 3
SCHEDULE_STEP_S = 0.001


class RunConfig(BaseModel):
    """One traffic run. Rates are requests/second, durations and timeouts seconds.

    Raises:
        pydantic.ValidationError: on a non-http(s) URL, unknown profile or out-of-range numbers.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    extra_urls: tuple[str, ...] = ()
    mix: Mix = "inventory"
    profile: Profile = "constant"
    rps: float = Field(50.0, gt=0, le=100_000)
    duration: float = Field(60.0, gt=0, le=86_400)
    normal_rps: float = Field(20.0, gt=0, le=100_000)
    normal_duration: float = Field(20.0, ge=0, le=86_400)
    error_rps: float = Field(40.0, gt=0, le=100_000)
    error_duration: float = Field(60.0, ge=0, le=86_400)
    seed: int | None = None
    connections: int = Field(1000, ge=1, le=100_000)
    timeout: float = Field(10.0, gt=0, le=600)
    grace: float = Field(3.0, ge=0, le=60)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _base_url(value)

    @field_validator("extra_urls")
    @classmethod
    def _http_urls(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_base_url(value) for value in values)

    @property
    def urls(self) -> tuple[str, ...]:
        """Every base URL requests rotate over: ``url`` first, then ``extra_urls``."""
        return (self.url, *self.extra_urls)


def _base_url(value: str) -> str:
    """``value`` without a trailing slash. Raises ValueError unless it is an http(s) URL."""
    if not value.startswith(("http://", "https://")):
        raise ValueError("url must start with http:// or https://")
    return value.rstrip("/")


@dataclass(frozen=True)
class RequestSpec:
    """One request to send: method, concrete path, route template (for counting), JSON body."""

    method: str
    path: str
    route: str
    body: dict[str, Any] | None = None


def _spike_rate(t: float, length: float, rps: float) -> float:
    """Spike shape over [0, length): rps, 5x rps in the middle third, rps."""
    return rps * SPIKE_FACTOR if length / 3 <= t < 2 * length / 3 else rps


def rate_at(profile: str, t: float, config: RunConfig) -> float:
    """Intended request rate (requests/s) of ``profile`` at ``t`` seconds since the start.

    Uses ``config.rps`` and ``config.duration`` (and the agentic phase settings); returns 0
    outside [0, duration) and, for agentic, after the error phase.

    Raises:
        ValueError: for an unknown profile.
    """
    duration, rps = config.duration, config.rps
    if t < 0 or t >= duration:
        return 0.0
    if profile == "constant":
        return rps
    if profile == "spike":
        return _spike_rate(t, duration, rps)
    if profile == "ramp":
        return rps * t / duration
    if profile == "sine":
        return rps * (1 + SINE_AMPLITUDE * math.sin(2 * math.pi * t / duration))
    if profile == "ramp-spike":
        half = duration / 2
        return rps * t / half if t < half else _spike_rate(t - half, half, rps)
    if profile == "agentic":
        if t < config.normal_duration:
            return config.normal_rps
        if t < config.normal_duration + config.error_duration:
            return config.error_rps
        return 0.0
    raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")


def phase_at(config: RunConfig, t: float) -> Phase:
    """Request-mix phase at ``t`` seconds: "error" only in the agentic error phase."""
    if config.profile == "agentic" and t >= config.normal_duration:
        return "error"
    return "normal"


def send_offsets(config: RunConfig, step: float = SCHEDULE_STEP_S) -> Iterator[float]:
    """Yield the scheduled send time (seconds since start) of request 0, 1, 2, ... in order.

    Request i is due when the integral of ``rate_at`` from 0 reaches i (trapezoid rule on
    ``step``-second slices, linear interpolation inside a slice); only times < duration.
    """
    t, cumulative, next_index = 0.0, 0.0, 0
    rate_start = rate_at(config.profile, 0.0, config)
    while t < config.duration:
        t_end = min(t + step, config.duration)
        rate_end = rate_at(config.profile, t_end - 1e-12, config)
        added = (rate_start + rate_end) / 2 * (t_end - t)
        while next_index <= cumulative + added:
            fraction = (next_index - cumulative) / added if added > 0 else 0.0
            offset = t + max(fraction, 0.0) * (t_end - t)
            if offset >= config.duration:
                return
            yield offset
            next_index += 1
        cumulative += added
        t, rate_start = t_end, rate_at(config.profile, t_end, config)


def choose_request(rng: random.Random, phase: Phase, mix: Mix = "inventory") -> RequestSpec:
    """Draw one request of ``mix`` (``inventory`` or ``payments``) in ``phase`` using ``rng``."""
    if mix == "payments":
        return choose_payments_request(rng, phase)
    return choose_inventory_request(rng, phase)


def choose_inventory_request(rng: random.Random, phase: Phase) -> RequestSpec:
    """Draw one inventory request of ``phase`` using ``rng``.

    normal: GET /items/{id} 75%, PUT /items/{id} 5%, GET /random-endpoint 20% (id uniform 1..100).
    error:  GET /random-endpoint/error 80%, otherwise the normal mix.
    """
    if phase == "error" and rng.random() < ERROR_PHASE_ERROR_SHARE:
        return RequestSpec("GET", "/random-endpoint/error", "/random-endpoint/error")
    draw = rng.random()
    item_id = rng.randint(*ITEM_IDS)
    if draw < 0.75:
        return RequestSpec("GET", f"/items/{item_id}", "/items/{item_id}")
    if draw < 0.80:
        body = {"name": f"item-{item_id}", "quantity": rng.randint(0, 1000), "price": round(rng.uniform(1, 500), 2)}
        return RequestSpec("PUT", f"/items/{item_id}", "/items/{item_id}", body)
    return RequestSpec("GET", "/random-endpoint", "/random-endpoint")


def _payment_body(rng: random.Random, currency: str) -> dict[str, Any]:
    """POST /payments body: amount 1.00-500.00 (2 decimals, sent as a string), ``currency``, a customer id."""
    amount = f"{rng.randint(100, 50_000) / 100:.2f}"
    return {"amount": amount, "currency": currency, "customer_id": f"cus-{rng.randint(*CUSTOMER_IDS)}"}


def choose_payments_request(rng: random.Random, phase: Phase) -> RequestSpec:
    """Draw one payments request of ``phase`` using ``rng``.

    normal: POST /payments 80% (USD 50%, EUR 30%, GBP 20%), GET /payments/{id} 20% (id uniform 1..100).
    error:  POST /payments in JPY (the currency-conversion bug) 80%, otherwise the normal mix.
    """
    if phase == "error" and rng.random() < ERROR_PHASE_ERROR_SHARE:
        return RequestSpec("POST", "/payments", "/payments", _payment_body(rng, BUGGY_CURRENCY))
    if rng.random() < 0.80:
        draw = rng.random()
        currency = next(code for code, cumulative in PAYMENT_CURRENCIES if draw < cumulative)
        return RequestSpec("POST", "/payments", "/payments", _payment_body(rng, currency))
    payment_id = rng.randint(*PAYMENT_IDS)
    return RequestSpec("GET", f"/payments/{payment_id}", "/payments/{payment_id}")


def _new_histogram() -> HdrHistogram:
    return HdrHistogram(HIST_MIN_US, HIST_MAX_US, HIST_DIGITS)


def _record(hist: HdrHistogram, seconds: float) -> None:
    """Record a duration in microseconds, clamped into the histogram's range."""
    hist.record_value(min(max(int(seconds * 1_000_000), 0), HIST_MAX_US))


def is_error(outcome: str) -> bool:
    """True for a 5xx status or any outcome without an HTTP response (exception, cancelled)."""
    return not outcome.isdigit() or int(outcome) >= 500


class LatencyMs(BaseModel):
    """Latency percentiles in milliseconds (HdrHistogram, 3 significant digits)."""

    p50: float
    p95: float
    p99: float
    max: float
    mean: float


class Summary(BaseModel):
    """Result of one run. Counts are requests; ratios 0-1; rates requests/s; times as named.

    Invariant: ``sent == sum(outcomes.values())`` (each sent request has exactly one outcome:
    an HTTP status code as a string, an exception class name, or "timeout/cancelled").
    """

    url: str
    urls: list[str]
    mix: str
    profile: str
    duration_s: float
    elapsed_s: float
    interrupted: bool
    sent: int
    completed: int
    achieved_rps: float
    errors: int
    error_ratio: float
    latency_ms: LatencyMs
    schedule_lag_ms: LatencyMs
    outcomes: dict[str, int]
    routes: dict[str, int]
    phases: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of the summary."""
        return self.model_dump()


def _percentiles_ms(hist: HdrHistogram) -> LatencyMs:
    if hist.get_total_count() == 0:
        return LatencyMs(p50=0.0, p95=0.0, p99=0.0, max=0.0, mean=0.0)
    return LatencyMs(
        p50=hist.get_value_at_percentile(50) / 1000,
        p95=hist.get_value_at_percentile(95) / 1000,
        p99=hist.get_value_at_percentile(99) / 1000,
        max=hist.get_max_value() / 1000,
        mean=round(hist.get_mean_value() / 1000, 3),
    )


@dataclass
class Recorder:
    """Counters and histograms of one run, plus a per-second window for live progress."""

    latency: HdrHistogram = field(default_factory=_new_histogram)
    lag: HdrHistogram = field(default_factory=_new_histogram)
    window_latency: HdrHistogram = field(default_factory=_new_histogram)
    outcomes: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    phases: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    window_sent: int = 0
    window_done: int = 0
    window_errors: int = 0

    def on_send(self, spec: RequestSpec, phase: Phase, lag_s: float) -> None:
        """Count a sent request (its task started ``lag_s`` seconds after its scheduled time)."""
        self.sent += 1
        self.window_sent += 1
        self.routes[f"{spec.method} {spec.route}"] += 1
        self.phases[phase] += 1
        _record(self.lag, lag_s)

    def on_outcome(self, outcome: str, latency_s: float | None) -> None:
        """Count an outcome; ``latency_s`` (from the scheduled time) when a response arrived."""
        self.outcomes[outcome] += 1
        self.window_done += 1
        self.window_errors += is_error(outcome)
        if latency_s is not None:
            _record(self.latency, latency_s)
            _record(self.window_latency, latency_s)

    def take_window(self) -> tuple[int, int, int, LatencyMs]:
        """Return (sent, done, errors, latency) of the window since the last call and reset it."""
        result = (self.window_sent, self.window_done, self.window_errors, _percentiles_ms(self.window_latency))
        self.window_latency.reset()
        self.window_sent = self.window_done = self.window_errors = 0
        return result

    def summary(self, config: RunConfig, elapsed_s: float, interrupted: bool) -> Summary:
        """Build the final Summary (achieved_rps = completed / elapsed_s)."""
        completed = sum(n for outcome, n in self.outcomes.items() if outcome.isdigit())
        errors = sum(n for outcome, n in self.outcomes.items() if is_error(outcome))
        return Summary(
            url=config.url,
            urls=list(config.urls),
            mix=config.mix,
            profile=config.profile,
            duration_s=config.duration,
            elapsed_s=round(elapsed_s, 3),
            interrupted=interrupted,
            sent=self.sent,
            completed=completed,
            achieved_rps=round(completed / elapsed_s, 2) if elapsed_s > 0 else 0.0,
            errors=errors,
            error_ratio=round(errors / self.sent, 4) if self.sent else 0.0,
            latency_ms=_percentiles_ms(self.latency),
            schedule_lag_ms=_percentiles_ms(self.lag),
            outcomes=dict(sorted(self.outcomes.items())),
            routes=dict(sorted(self.routes.items())),
            phases=dict(sorted(self.phases.items())),
        )


async def _send_one(
    session: aiohttp.ClientSession, base_url: str, spec: RequestSpec, phase: Phase, scheduled: float, recorder: Recorder
) -> None:
    """Send one request and record its outcome; latency counts from ``scheduled`` (perf_counter s)."""
    recorder.on_send(spec, phase, time.perf_counter() - scheduled)
    try:
        async with session.request(spec.method, base_url + spec.path, json=spec.body) as response:
            await response.read()
            status = response.status
    except asyncio.CancelledError:
        recorder.on_outcome(CANCELLED, None)
        raise
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        recorder.on_outcome(type(exc).__name__, None)
        return
    recorder.on_outcome(str(status), time.perf_counter() - scheduled)


async def _schedule(
    config: RunConfig,
    session: aiohttp.ClientSession,
    recorder: Recorder,
    start: float,
    stop: asyncio.Event,
    inflight: set[asyncio.Task[None]],
) -> None:
    """Start one task per request at its scheduled time until the duration ends or ``stop`` is set.

    Every offset < duration is dispatched: a request that is already due (the generator fell
    behind) is sent at once and its lateness shows as schedule lag, never silently dropped.
    Request i goes to ``config.urls[i % len(config.urls)]``.
    """
    loop = asyncio.get_running_loop()
    rng = random.Random(config.seed)  # noqa: S311 - a reproducible request mix, not security
    urls = config.urls
    for index, offset in enumerate(send_offsets(config)):
        due = start + offset
        while (delay := due - time.perf_counter()) > 0 and not stop.is_set():
            await asyncio.sleep(min(delay, 0.1))
        if stop.is_set():
            return
        phase = phase_at(config, offset)
        spec = choose_request(rng, phase, config.mix)
        task = loop.create_task(_send_one(session, urls[index % len(urls)], spec, phase, due, recorder))
        inflight.add(task)
        task.add_done_callback(inflight.discard)


async def _report_progress(
    recorder: Recorder, start: float, console: Console, inflight: set[asyncio.Task[None]]
) -> None:
    """Print one line per second: sent, achieved responses/s, window p50/p95/p99 (ms), error %."""
    second = 1
    while True:
        await asyncio.sleep(max(start + second - time.perf_counter(), 0))
        sent, done, errors, lat = recorder.take_window()
        error_pct = 100 * errors / done if done else 0.0
        colour = "red" if error_pct >= 20 else "yellow" if error_pct > 0 else "green"
        console.print(
            f"t={second:>4}s sent {sent:>5}/s done {done:>5}/s p50 {lat.p50:7.1f} p95 {lat.p95:7.1f} "
            f"p99 {lat.p99:7.1f} ms [{colour}]err {error_pct:5.1f}%[/{colour}] in-flight {len(inflight)}",
            highlight=False,
            soft_wrap=True,
        )
        second += 1


async def run(config: RunConfig, stop: asyncio.Event | None = None, console: Console | None = None) -> Summary:
    """Run the traffic described by ``config`` against ``config.url`` and return its Summary.

    Args:
        config: the run; its duration bounds scheduling (a hard stop).
        stop: optional event; when set, scheduling stops early and Summary.interrupted is True.
        console: when given, a progress line is printed to it every second.
    In-flight requests get ``config.grace`` seconds after scheduling ends, then are cancelled and
    counted as "timeout/cancelled". Never raises for HTTP or connection failures (they are outcomes).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    recorder = Recorder()
    inflight: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=config.connections)
    timeout = aiohttp.ClientTimeout(total=config.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        progress = loop.create_task(_report_progress(recorder, start, console, inflight)) if console else None
        await _schedule(config, session, recorder, start, stop, inflight)
        if inflight:
            if console:
                console.print(
                    f"scheduling ended; waiting up to {config.grace:g}s for {len(inflight)} in-flight requests"
                )
            _, pending = await asyncio.wait(set(inflight), timeout=config.grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if progress:
            progress.cancel()
            await asyncio.gather(progress, return_exceptions=True)
        elapsed = time.perf_counter() - start
    return recorder.summary(config, elapsed, interrupted=stop.is_set())


def print_summary(summary: Summary, console: Console) -> None:
    """Render ``summary`` as rich tables on ``console``."""
    targets = ", ".join(summary.urls)
    table = Table(title=f"traffic_gen summary: {summary.mix} {summary.profile} -> {targets}", show_header=False)
    latency, lag = summary.latency_ms, summary.schedule_lag_ms
    rows = [
        ("elapsed", f"{summary.elapsed_s:.2f} s" + (" (interrupted)" if summary.interrupted else "")),
        ("sent", str(summary.sent)),
        ("completed (HTTP response)", str(summary.completed)),
        ("achieved rps", f"{summary.achieved_rps:.1f}"),
        ("errors / error ratio", f"{summary.errors} / {summary.error_ratio:.2%}"),
        (
            "latency p50 / p95 / p99 / max",
            f"{latency.p50:.1f} / {latency.p95:.1f} / {latency.p99:.1f} / {latency.max:.1f} ms",
        ),
        ("schedule lag p99 / max", f"{lag.p99:.1f} / {lag.max:.1f} ms"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    breakdown = Table(title="outcomes")
    breakdown.add_column("status / exception")
    breakdown.add_column("count", justify="right")
    for outcome, count in summary.outcomes.items():
        breakdown.add_row(outcome, str(count), style="red" if is_error(outcome) else None)
    console.print(breakdown)


def build_parser() -> argparse.ArgumentParser:
    """The CLI parser (profiles are documented in the module docstring, shown as the epilog)."""
    parser = argparse.ArgumentParser(
        description="Open-loop HTTP traffic generator (aiohttp + uvloop, HdrHistogram latencies "
        "measured from the scheduled send time).",
        epilog="Rate profiles" + __doc__.split("Rate profiles", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--url",
        required=True,
        action="append",
        help="base URL, e.g. http://127.0.0.1:9000; repeat it to spread requests round-robin over several",
    )
    parser.add_argument("--mix", choices=MIXES, default="inventory", help="request mix (default inventory)")
    parser.add_argument("--profile", choices=PROFILES, default="constant", help="rate profile (see below)")
    parser.add_argument("--rps", type=float, default=50.0, help="base rate R in requests/s (default 50)")
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="run length D in seconds, a hard stop (default 60; agentic: normal+error duration)",
    )
    parser.add_argument("--normal-rps", type=float, default=20.0, help="agentic normal-phase rate (default 20)")
    parser.add_argument("--normal-duration", type=float, default=20.0, help="agentic normal-phase seconds (default 20)")
    parser.add_argument("--error-rps", type=float, default=40.0, help="agentic error-phase rate (default 40)")
    parser.add_argument("--error-duration", type=float, default=60.0, help="agentic error-phase seconds (default 60)")
    parser.add_argument("--connections", type=int, default=1000, help="max concurrent connections (default 1000)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout in seconds (default 10)")
    parser.add_argument(
        "--grace",
        type=float,
        default=3.0,
        help="seconds in-flight requests get after the end before being cancelled (default 3)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the request-mix RNG")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the summary as JSON to PATH")
    parser.add_argument("--quiet", action="store_true", help="no per-second progress (the summary is still printed)")
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Build a RunConfig from parsed CLI args (resolving the default duration).

    Raises:
        pydantic.ValidationError: on invalid values.
    """
    duration = args.duration
    if duration is None:
        duration = args.normal_duration + args.error_duration if args.profile == "agentic" else 60.0
    return RunConfig(
        url=args.url[0],
        extra_urls=tuple(args.url[1:]),
        mix=args.mix,
        profile=args.profile,
        rps=args.rps,
        duration=duration,
        normal_rps=args.normal_rps,
        normal_duration=args.normal_duration,
        error_rps=args.error_rps,
        error_duration=args.error_duration,
        seed=args.seed,
        connections=args.connections,
        timeout=args.timeout,
        grace=args.grace,
    )


async def _main_async(config: RunConfig, progress: Console | None) -> Summary:
    """Run with SIGINT/SIGTERM wired to a clean early stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return await run(config, stop=stop, console=progress)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the process exit code (0, or 2 for invalid arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValidationError as exc:
        parser.error(str(exc))
    summary = uvloop.run(_main_async(config, None if args.quiet else Console(stderr=True)))
    print_summary(summary, Console())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(summary.model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
