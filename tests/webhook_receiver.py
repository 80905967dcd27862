"""A small HTTP server on 127.0.0.1 that records every Alertmanager webhook notification it receives."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY_BYTES = 1 << 20


@dataclass(frozen=True)
class Notification:
    """One POST: its path, the decoded JSON body (webhook payload v4) and when it arrived (time.monotonic())."""

    path: str
    body: dict[str, Any]
    received_at: float


class WebhookReceiver:
    """Records POSTs in a background thread; answers 200 (or 400 for a body that is not JSON).

    Use as a context manager; ``url`` is ``http://127.0.0.1:<free port>``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._notifications: list[Notification] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY_BYTES)
                try:
                    body = json.loads(self.rfile.read(length))
                except ValueError:
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver._notifications.append(Notification(self.path, body, time.monotonic()))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test output
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)

    @property
    def url(self) -> str:
        """Base URL of the receiver."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def port(self) -> int:
        """Its TCP port."""
        return int(self._server.server_address[1])

    def notifications(self) -> list[Notification]:
        """Every notification received so far, oldest first."""
        with self._lock:
            return list(self._notifications)

    def matching(self, alertname: str) -> list[Notification]:
        """The notifications whose group carries ``alertname`` in ``groupLabels`` or ``commonLabels``."""
        return [
            n
            for n in self.notifications()
            if alertname
            in (n.body.get("groupLabels", {}).get("alertname"), n.body.get("commonLabels", {}).get("alertname"))
        ]

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
