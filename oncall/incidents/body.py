"""A webhook body read and parsed while it arrives, without blocking the event loop.

Alertmanager groups can be large (10,000 alerts make ~6 MB); ``json.loads`` and one pydantic
validation of such a group hold the event loop for hundreds of milliseconds, and a body nested
thousands of levels deep makes recursive parsers fail. So ``receive_notification``:

- reads the request stream up to ``MAX_ALERT_BODY_BYTES`` (64 MiB, far above any real group;
  larger -> ``BodyTooLarge``, HTTP 413), hashing it (SHA-256) as it comes;
- feeds it in slices of ``FEED_BYTES`` to ijson's C (yajl2) parser, which builds the document
  incrementally, yielding to the event loop between slices;
- refuses JSON nested deeper than ``MAX_JSON_DEPTH``, or holding a string longer than
  ``MAX_JSON_STRING_BYTES``, before the parser sees it (``JsonGuard``; a v4 payload is 4 levels deep,
  ijson's memory grows with the square of the depth, and yajl re-reads a string that spans pieces
  each time a piece arrives, so one huge string costs quadratic time);
- validates the alerts in batches of ``VALIDATE_BATCH`` (yielding between batches), then the rest.

Lone UTF-16 surrogates (``"\\ud800"``) come out of yajl as ``?``, so no unstorable text reaches the
store. Invalid bodies are not kept whole: ``ReceivedBody.head`` is their first ``KEPT_INVALID_BYTES``;
valid ones are kept up to ``KEPT_VALID_BYTES`` (16 MiB).
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import ijson
from pydantic import TypeAdapter, ValidationError

from oncall.incidents.payload import PayloadError, WebhookAlert, WebhookNotification, validation_errors
from oncall.store.database import StorableText, storable

MAX_ALERT_BODY_BYTES = 64 * 1024 * 1024
"""Largest accepted ``/alerts`` body, bytes (documented in the README)."""
MAX_JSON_DEPTH = 32
"""Deepest JSON nesting accepted (objects and arrays); an Alertmanager v4 payload has 4 levels."""
MAX_JSON_STRING_BYTES = 1024 * 1024
"""Longest JSON string accepted, bytes (annotations are templated texts of a few hundred bytes)."""
FEED_BYTES = 256 * 1024
"""Bytes parsed between two yields to the event loop (~2-4 ms of parsing)."""
VALIDATE_BATCH = 500
"""Alerts validated between two yields to the event loop (~1 ms)."""
TEXT_SLICE_BYTES = 256 * 1024
"""Bytes decoded and redacted between two yields when a valid body is prepared for storage."""
KEPT_INVALID_BYTES = 1024
"""How much of an invalid body is stored (with its hash, size and the reason)."""
KEPT_VALID_BYTES = 16 * 1024 * 1024
"""How much of a valid body is stored as its raw text (a 10,000-alert group is ~6 MB; every alert of a
larger one is stored in its incident anyway). Building one text of 50 MB would hold the loop ~70 ms."""
_ALERTS = TypeAdapter(list[WebhookAlert])
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_PAIRS = (b"[]", b"{}", b"[}", b"{]")


class BodyTooLarge(Exception):
    """The body exceeds ``MAX_ALERT_BODY_BYTES``."""


class GuardError(ValueError):
    """The JSON is nested deeper, or holds a longer string, than allowed."""


class JsonGuard:
    """Tracks the nesting depth and string lengths of a JSON text fed in pieces, with C-speed bytes
    operations only.

    Escapes are dropped, then complete strings (a string of ``max_string`` bytes or more is refused),
    then everything but brackets; adjacent opener-closer pairs are removed pass by pass. The bound
    checked is conservative (it may count up to twice the true depth, still far below ``limit`` for any
    real payload). State between pieces: inside a string (and its length so far), a pending
    backslash, the openers still open.
    """

    def __init__(self, limit: int = MAX_JSON_DEPTH, max_string: int = MAX_JSON_STRING_BYTES) -> None:
        self.limit = limit
        self.max_string = max_string
        self.long_string = re.compile(rb'"[^"]{%d}' % max_string)
        self.in_string = False
        self.string_run = 0
        self.pending_escape = False
        self.open = b""

    def feed(self, piece: bytes) -> None:
        """Account for the next piece of the text; raises ``GuardError``."""
        if self.pending_escape:
            piece, self.pending_escape = piece[1:], False
        piece = _ESCAPE.sub(b"", piece)
        if piece.endswith(b"\\"):
            piece, self.pending_escape = piece[:-1], True
        if self.in_string:
            end = piece.find(b'"')
            self._string_grows(len(piece) if end < 0 else end)
            if end < 0:
                return
            piece, self.in_string = piece[end + 1 :], False
        if self.long_string.search(piece):
            raise GuardError(f"a JSON string is longer than {self.max_string} bytes")
        piece = _STRING.sub(b"", piece)
        if piece.count(b'"') % 2:
            start = piece.rfind(b'"')
            tail = len(piece) - start - 1
            piece, self.in_string, self.string_run = piece[:start], True, 0
            self._string_grows(tail)
        self._brackets(piece.translate(None, _NOT_BRACKETS))

    def _string_grows(self, by: int) -> None:
        self.string_run += by
        if self.string_run >= self.max_string:
            raise GuardError(f"a JSON string is longer than {self.max_string} bytes")

    def _brackets(self, brackets: bytes) -> None:
        """Account for one piece's brackets. Its depth is at most the openers carried in, plus the passes
        that remove its matched pairs (one nesting level each), plus the openers it leaves open."""
        passes = 0
        while any(pair in brackets for pair in _PAIRS):
            passes += 1
            if len(self.open) + passes > self.limit:
                raise GuardError(f"JSON nested deeper than {self.limit} levels")
            for pair in _PAIRS:
                brackets = brackets.replace(pair, b"")
        openers = brackets.lstrip(b"]}")
        closers = len(brackets) - len(openers)  # they close carried openers (more: the parser reports it)
        if len(self.open) + passes + len(openers) > self.limit:
            raise GuardError(f"JSON nested deeper than {self.limit} levels")
        self.open = self.open[: max(0, len(self.open) - closers)] + openers


@dataclass(frozen=True)
class ReceivedBody:
    """One ``/alerts`` body: SHA-256 (hex) and size (bytes) of the exact bytes, and either the
    validated ``notification`` (``raw`` kept) or the ``error`` (``head``: the first KiB)."""

    sha256: str
    size: int
    raw: bytes
    notification: WebhookNotification | None = None
    error: PayloadError | None = None

    @property
    def head(self) -> bytes:
        """The first ``KEPT_INVALID_BYTES`` of the body."""
        return self.raw[:KEPT_INVALID_BYTES]


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__


async def _parse(raw: bytes) -> Any:
    """The JSON document of the body ``raw``, parsed slice by slice; raises ``PayloadError``."""
    documents: Any = ijson.sendable_list()
    builder = ijson.items_coro(documents, "", use_float=True)
    guard = JsonGuard()
    try:
        for start in range(0, len(raw), FEED_BYTES):
            piece = raw[start : start + FEED_BYTES]
            guard.feed(piece)
            builder.send(piece)
            await asyncio.sleep(0)
        builder.close()
    except GuardError as exc:
        raise PayloadError(f"body is not valid JSON: {exc}") from exc
    except (ijson.JSONError, UnicodeDecodeError, ValueError) as exc:
        raise PayloadError(f"body is not valid JSON: {_first_line(exc)}") from exc
    if not documents:
        raise PayloadError("body is not valid JSON: empty body")
    return documents[0]


async def _validate(document: Any) -> WebhookNotification:
    """Validate a parsed document, the alerts in batches; raises ``PayloadError`` with per-field errors."""
    alerts = document.get("alerts") if isinstance(document, dict) else None
    if not isinstance(alerts, list) or len(alerts) <= VALIDATE_BATCH:
        return _validated(document)
    checked: list[WebhookAlert] = []
    for start in range(0, len(alerts), VALIDATE_BATCH):
        try:
            checked.extend(_ALERTS.validate_python(alerts[start : start + VALIDATE_BATCH]))
        except ValidationError as exc:
            raise _payload_error(exc, offset=start) from exc
        await asyncio.sleep(0)
    return _validated({**document, "alerts": checked})


def _validated(document: Any) -> WebhookNotification:
    try:
        return WebhookNotification.model_validate(document)
    except ValidationError as exc:
        raise _payload_error(exc) from exc


def _payload_error(exc: ValidationError, offset: int | None = None) -> PayloadError:
    """A PayloadError for a validation failure; ``offset`` places an alert batch's errors under ``alerts.N``."""
    errors = validation_errors(exc)
    if offset is not None:
        for error in errors:
            index, _, rest = error["loc"].partition(".")
            error["loc"] = f"alerts.{int(index) + offset}" + (f".{rest}" if rest else "")
    reason = "; ".join(f"{err['loc']}: {err['msg']}" for err in errors)
    return PayloadError(f"not an Alertmanager webhook v4 payload: {reason}", errors)


@dataclass(frozen=True)
class BodyBytes:
    """The exact bytes of one ``/alerts`` body as read: SHA-256 (hex) and size (bytes) of ``raw``."""

    sha256: str
    size: int
    raw: bytes


async def read_body(chunks: AsyncIterator[bytes], limit: int = MAX_ALERT_BODY_BYTES) -> BodyBytes:
    """Read and hash a webhook body from its stream.

    Raises:
        BodyTooLarge: more than ``limit`` bytes.
    """
    digest = hashlib.sha256()
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body larger than {limit} bytes")
        digest.update(chunk)
        parts.append(chunk)
    return BodyBytes(digest.hexdigest(), size, b"".join(parts))


async def parse_body(body: BodyBytes) -> ReceivedBody:
    """Parse and validate a body read by ``read_body`` (see the module docstring); an invalid body is reported
    in ``ReceivedBody.error``."""
    try:
        notification = await _validate(await _parse(body.raw))
    except PayloadError as exc:
        return ReceivedBody(body.sha256, body.size, body.raw, error=exc)
    return ReceivedBody(body.sha256, body.size, body.raw, notification=notification)


async def receive_notification(chunks: AsyncIterator[bytes], limit: int = MAX_ALERT_BODY_BYTES) -> ReceivedBody:
    """Read, hash, parse and validate a webhook body from its stream (``read_body``, then ``parse_body``).

    Raises:
        BodyTooLarge: more than ``limit`` bytes. An invalid body is reported in ``ReceivedBody.error``.
    """
    return await parse_body(await read_body(chunks, limit))


async def storable_text(raw: bytes, redact: Callable[[str], str], limit: int = KEPT_VALID_BYTES) -> StorableText:
    """The body as text for the ``raw_alerts`` row: its first ``limit`` bytes (then ``...[cut N bytes]``),
    decoded (undecodable bytes as ``\\xNN``), made storable and redacted slice by slice, yielding
    between slices. Slices end after a ``",`` (between two JSON members), so a secret inside a string
    value is never cut in two."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="backslashreplace")
    done: list[str] = []
    carry = ""
    kept, raw = raw, raw[:limit]
    for start in range(0, len(raw), TEXT_SLICE_BYTES):
        text = carry + decoder.decode(raw[start : start + TEXT_SLICE_BYTES])
        cut = text.rfind('",')
        cut = len(text) if cut < 0 else cut + 2
        done.append(redact(storable(text[:cut])))
        carry = text[cut:]
        await asyncio.sleep(0)
    done.append(redact(storable(carry + decoder.decode(b"", final=True))))
    if len(kept) > limit:
        done.append(f"...[cut {len(kept) - limit} bytes]")
    return StorableText("".join(done))


async def receive_stored(raw: bytes) -> ReceivedBody:
    """``receive_notification`` of a body already in memory (a stored ``raw_alerts`` text, a test fixture)."""

    async def one_chunk() -> AsyncIterator[bytes]:
        yield raw

    return await receive_notification(one_chunk())
