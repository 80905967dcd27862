"""The streaming webhook body reader: depth and string guards, batched validation, slice-wise storage text."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from oncall.incidents.body import (
    MAX_JSON_DEPTH,
    MAX_JSON_STRING_BYTES,
    GuardError,
    JsonGuard,
    receive_notification,
    storable_text,
)
from oncall.redaction import Redactor
from tests.test_ingest import capture


async def pieces(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def feed(text: bytes, size: int, guard: JsonGuard | None = None) -> JsonGuard:
    guard = guard or JsonGuard()
    for start in range(0, len(text), size):
        guard.feed(text[start : start + size])
    return guard


@pytest.mark.parametrize("size", [1, 3, 7, 64, 10_000])
def test_guard_counts_depth_across_pieces_and_ignores_brackets_in_strings(size: int) -> None:
    deep_ok = b'{"a":' * (MAX_JSON_DEPTH - 1) + b'"[[[[{{{{\\"]]"' + b"}" * (MAX_JSON_DEPTH - 1)
    feed(deep_ok, size)
    sibling_arrays = b"[" + b"[[]]," * 5000 + b"[]]"  # wide, 3 levels deep
    feed(sibling_arrays, size)
    for too_deep in (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), b'{"x":' * 40 + b"1" + b"}" * 40):
        with pytest.raises(GuardError, match="nested deeper"):
            feed(too_deep, size)


@pytest.mark.parametrize("size", [7, 4096, 300_000])
def test_guard_refuses_a_huge_string_within_or_across_pieces(size: int) -> None:
    feed(b'{"a": "' + b"x" * (MAX_JSON_STRING_BYTES - 10) + b'"}', size)
    with pytest.raises(GuardError, match="string is longer"):
        feed(b'{"a": "' + b"x" * (MAX_JSON_STRING_BYTES + 10) + b'"}', size)


async def test_large_group_is_validated_in_batches_with_alert_positions() -> None:
    body = capture(1)["body"]
    body["alerts"] = [dict(body["alerts"][0], fingerprint=f"{n:016x}") for n in range(1200)]
    received = await receive_notification(pieces(json.dumps(body).encode(), 65536))
    assert received.notification is not None and len(received.notification.alerts) == 1200
    body["alerts"][1100]["status"] = "pending"
    bad = await receive_notification(pieces(json.dumps(body).encode(), 65536))
    assert bad.error is not None and bad.error.errors[0]["loc"] == "alerts.1100.status"


async def test_storage_text_is_redacted_slice_by_slice_without_cutting_a_value() -> None:
    secret = "sk-proj-" + "Q" * 40
    body = json.dumps({"values": [f"filler {n} " * 30 for n in range(20_000)] + [f"key {secret}"] * 3}).encode()
    text = await storable_text(body, Redactor())
    assert secret not in text and text.count("key ***") == 3
    assert text.replace("key ***", f"key {secret}") == body.decode()
