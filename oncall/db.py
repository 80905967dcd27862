"""SQLite storage for the agent: one file (WAL mode), one schema, a thread-safe connection.

Tables (all times are Unix epoch seconds, REAL):
- ``raw_alerts``: every body POSTed to /alerts, stored before anything else, valid or not.
- ``incidents``: one per Alertmanager group key; status ``firing``/``resolved``; investigation state.
- ``incident_alerts``: alerts of an incident by fingerprint, with their latest status.
- ``timeline``: what happened to an incident, in order.
- ``investigations``: one row per investigation run (engine, rounds, tokens, outcome).
- ``tool_calls``: audit trail of every tool call (arguments, capped result, timing).
- ``messages``: WhatsApp conversation and outbox (direction ``out``/``in``).
- ``tickets``: Jira issues created, or drafts kept when Jira is not configured.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS raw_alerts (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    body_sha256 TEXT NOT NULL,
    body TEXT NOT NULL,
    valid INTEGER NOT NULL,
    error TEXT,
    group_key TEXT,
    incident_id INTEGER
);
CREATE INDEX IF NOT EXISTS raw_alerts_sha ON raw_alerts(body_sha256);

CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY,
    group_key TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL DEFAULT 'firing',
    title TEXT NOT NULL,
    service TEXT,
    severity TEXT,
    group_labels TEXT NOT NULL DEFAULT '{}',
    common_labels TEXT NOT NULL DEFAULT '{}',
    common_annotations TEXT NOT NULL DEFAULT '{}',
    external_url TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    resolved_at REAL,
    acknowledged_at REAL,
    acknowledged_by TEXT,
    investigation_status TEXT NOT NULL DEFAULT 'pending',
    diagnosis TEXT,
    diagnosed_at REAL,
    last_notified_digest TEXT
);

CREATE TABLE IF NOT EXISTS incident_alerts (
    incident_id INTEGER NOT NULL REFERENCES incidents(id),
    fingerprint TEXT NOT NULL,
    alertname TEXT NOT NULL,
    status TEXT NOT NULL,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    starts_at TEXT,
    ends_at TEXT,
    generator_url TEXT,
    first_seen_at REAL NOT NULL,
    last_seen_at REAL NOT NULL,
    resolved_at REAL,
    PRIMARY KEY (incident_id, fingerprint)
);

CREATE TABLE IF NOT EXISTS timeline (
    id INTEGER PRIMARY KEY,
    incident_id INTEGER NOT NULL REFERENCES incidents(id),
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS timeline_incident ON timeline(incident_id, id);

CREATE TABLE IF NOT EXISTS investigations (
    id INTEGER PRIMARY KEY,
    incident_id INTEGER NOT NULL REFERENCES incidents(id),
    started_at REAL NOT NULL,
    finished_at REAL,
    status TEXT NOT NULL DEFAULT 'running',
    engine TEXT,
    rounds INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
CREATE INDEX IF NOT EXISTS investigations_incident ON investigations(incident_id);

CREATE TABLE IF NOT EXISTS tool_calls (
    id INTEGER PRIMARY KEY,
    incident_id INTEGER NOT NULL,
    investigation_id INTEGER,
    round INTEGER NOT NULL DEFAULT 0,
    call_id TEXT,
    tool TEXT NOT NULL,
    arguments TEXT NOT NULL,
    ok INTEGER NOT NULL,
    result TEXT,
    error TEXT,
    started_at REAL NOT NULL,
    duration_s REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tool_calls_incident ON tool_calls(incident_id, id);

CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    incident_id INTEGER,
    direction TEXT NOT NULL,
    channel TEXT NOT NULL,
    to_number TEXT,
    from_number TEXT,
    body TEXT NOT NULL,
    message_sid TEXT UNIQUE,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_incident ON messages(incident_id, id);

CREATE TABLE IF NOT EXISTS tickets (
    id INTEGER PRIMARY KEY,
    incident_id INTEGER NOT NULL REFERENCES incidents(id),
    status TEXT NOT NULL,
    jira_key TEXT,
    url TEXT,
    summary TEXT NOT NULL,
    assignee_query TEXT,
    assignee_account_id TEXT,
    payload TEXT NOT NULL,
    error TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tickets_incident ON tickets(incident_id);
"""


class Database:
    """A single SQLite connection in WAL mode guarded by a lock, usable from threads and the event loop.

    Queries are short (milliseconds), so async code calls them directly.

    Args:
        path: database file; its parent folder is created. ``":memory:"`` works for tests.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.executescript(SCHEMA)

    def execute(self, sql: str, params: tuple | dict = ()) -> sqlite3.Cursor:
        """Run one statement in autocommit mode (or inside an open ``transaction()``)."""
        with self._lock:
            return self._conn.execute(sql, params)

    def query(self, sql: str, params: tuple | dict = ()) -> list[dict[str, Any]]:
        """Run a SELECT and return rows as dicts."""
        with self._lock:
            return [dict(row) for row in self._conn.execute(sql, params).fetchall()]

    def query_one(self, sql: str, params: tuple | dict = ()) -> dict[str, Any] | None:
        """Run a SELECT and return the first row as a dict, or None."""
        rows = self.query(sql, params)
        return rows[0] if rows else None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock and run the block in one IMMEDIATE transaction (commit, or roll back on error)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


def dumps(value: Any) -> str:
    """JSON-encode for a TEXT column (compact, non-ASCII kept)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def add_timeline(db: Database, incident_id: int, kind: str, detail: dict[str, Any] | None = None) -> None:
    """Append an event to an incident's timeline (kinds: ``alert_firing``, ``alert_resolved``,
    ``investigation_started``, ``diagnosis``, ``notified``, ``reply``, ``ticket``, ``resolved``, ...)."""
    db.execute(
        "INSERT INTO timeline (incident_id, at, kind, detail) VALUES (?, ?, ?, ?)",
        (incident_id, time.time(), kind, dumps(detail or {})),
    )


def get_incident(db: Database, incident_id: int) -> dict[str, Any] | None:
    """Return the incident row with JSON columns decoded (``diagnosis`` is a dict or None), or None."""
    row = db.query_one("SELECT * FROM incidents WHERE id = ?", (incident_id,))
    if row is None:
        return None
    for key in ("group_labels", "common_labels", "common_annotations"):
        row[key] = json.loads(row[key])
    row["diagnosis"] = json.loads(row["diagnosis"]) if row["diagnosis"] else None
    return row


def get_incident_alerts(db: Database, incident_id: int) -> list[dict[str, Any]]:
    """Return the incident's alerts (labels and annotations decoded), oldest first."""
    rows = db.query(
        "SELECT * FROM incident_alerts WHERE incident_id = ? ORDER BY first_seen_at, fingerprint", (incident_id,)
    )
    for row in rows:
        row["labels"] = json.loads(row["labels"])
        row["annotations"] = json.loads(row["annotations"])
    return rows
