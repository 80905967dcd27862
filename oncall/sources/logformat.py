"""Log lines -> the ERROR records the investigation summarises (the demo tail's entry shape).

A record has ``ts`` (epoch s), ``timestamp``, ``level``, ``replica``, ``message`` and, when known,
``exception_type``, ``file``, ``line``, ``function``, ``traceback``, ``frames`` (every traceback frame,
outermost first, as ``[file, line, function]``), ``route``, ``method``, ``status`` and ``version``.

Python traceback format: ``File "<path>", line <n>, in <function>`` per frame, the exception
(``<Type>: <message>``) on the last line (CPython ``traceback`` module).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from oncall.catalog.models import LineFormat

_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<function>\S+)')
_EXCEPTION = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<message>.*))?$")
RECORD_FIELDS = (
    "ts",
    "timestamp",
    "level",
    "replica",
    "message",
    "exception_type",
    "file",
    "line",
    "function",
    "traceback",
    "route",
    "method",
    "status",
    "version",
)


def parse_time(value: Any) -> float | None:
    """Epoch seconds from a number (s, ms or ns by magnitude) or an ISO 8601 text; None when unreadable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        number = float(value)
        return number / 1e9 if number > 1e17 else number / 1e3 if number > 1e11 else number
    try:
        return datetime.fromisoformat(str(value).strip().replace(" ", "T", 1)).timestamp()
    except ValueError:
        try:
            return parse_time(float(value))
        except ValueError:
            return None


def parse_traceback(text: str) -> dict[str, Any]:
    """``frames``, ``exception_type`` and ``exception_message`` of a Python traceback text ({} if none)."""
    lines = text.rstrip().splitlines()
    frames = [[m["file"], int(m["line"]), m["function"]] for m in map(_FRAME.match, lines) if m]
    if not frames:
        return {}
    out: dict[str, Any] = {"frames": frames}
    last = next((line for line in reversed(lines) if line and not line[0].isspace()), "")
    found = _EXCEPTION.match(last)
    if found and not last.startswith("Traceback"):
        out["exception_type"] = found["type"].rsplit(".", 1)[-1]
        out["exception_message"] = found["message"] or ""
    return out


def _extract(record: dict[str, Any], fmt: LineFormat, message: str) -> None:
    """Add the named groups of ``fmt.extract`` found in ``message`` (never overriding a field) and an int status."""
    for pattern in fmt.extract:
        found = re.search(pattern, message)
        if found:
            record.update({k: v for k, v in found.groupdict().items() if v is not None and not record.get(k)})
    if record.get("status") is not None:
        try:
            record["status"] = int(record["status"])
        except (TypeError, ValueError):
            record["status"] = None


def _exception(record: dict[str, Any], message: str) -> None:
    """Take the exception and innermost frame from the record's traceback when the record does not name them."""
    parsed = parse_traceback(str(record.get("traceback") or ""))
    if not parsed:
        return
    record["frames"] = parsed["frames"]
    if not record.get("exception_type") and parsed.get("exception_type"):
        record["exception_type"] = parsed["exception_type"]
        record["message"] = parsed["exception_message"] or message
    if not record.get("file"):
        record["file"], record["line"], record["function"] = parsed["frames"][-1]


def _complete(record: dict[str, Any], fmt: LineFormat) -> dict[str, Any] | None:
    """Fill exception, frame, extracted and classified fields; None when the level is not read."""
    level = str(record.get("level") or "").upper()
    if level not in {lv.upper() for lv in fmt.levels}:
        return None
    record["level"] = level
    message = str(record.get("message") or "")
    _extract(record, fmt, message)
    _exception(record, message)
    if not record.get("exception_type"):
        record["exception_type"] = next((t for t, p in fmt.classify.items() if re.search(p, message)), None)
    if record.get("ts") is None:
        record["ts"] = parse_time(record.get("timestamp"))
    return record


def parse_text(lines: Iterable[str], fmt: LineFormat, defaults: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Records of plain-text log ``lines`` (oldest first): a line matching ``fmt.pattern`` starts a record,
    other lines continue it (its traceback). ``defaults`` fill fields the line does not give (``replica``,
    ``level``, ``ts``)."""
    pattern = re.compile(fmt.pattern or r"(?P<message>.*)")
    records: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    continuation: list[str] = []

    def close() -> None:
        if current is not None:
            current["traceback"] = "\n".join(continuation)
            done = _complete(current, fmt)
            if done is not None:
                records.append(done)

    for line in lines:
        found = pattern.match(line.rstrip("\n"))
        if found is None:
            if current is not None:
                continuation.append(line.rstrip("\n"))
            continue
        close()
        current = {**(defaults or {}), **{k: v for k, v in found.groupdict().items() if v is not None}}
        continuation = []
    close()
    return records


def parse_json_line(line: str, fmt: LineFormat, defaults: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """One JSON-lines record (``fmt.fields`` maps record fields to the line's keys, ``defaults`` fill the
    fields the line does not give); None when not read."""
    try:
        raw = json.loads(line)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    record = {name: raw.get(fmt.fields.get(name, name)) for name in RECORD_FIELDS}
    record.update({k: v for k, v in (defaults or {}).items() if record.get(k) is None and k != "ts"})
    stamps = (
        record.get("ts"),
        record.get("timestamp"),
        raw.get("time"),
        raw.get("@timestamp"),
        (defaults or {}).get("ts"),
    )
    record["ts"] = next((t for t in map(parse_time, stamps) if t is not None), None)
    return _complete(record, fmt)


def parse_lines(lines: Iterable[str], fmt: LineFormat, defaults: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Records of ``lines`` in either format, oldest first (``defaults`` as in ``parse_text``)."""
    if fmt.format == "text":
        return parse_text(lines, fmt, defaults)
    return [r for r in (parse_json_line(line, fmt, defaults) for line in lines if line.strip()) if r is not None]
