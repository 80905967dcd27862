"""Loopback fake of Twilio's REST Messages API (``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``).

A real HTTP server on 127.0.0.1 (in a thread) so the twilio SDK is exercised over the wire: form body
``To``/``From``/``Body``, HTTP basic auth (AccountSid, AuthToken) checked, 201 with a Message resource
shaped like Twilio's (docs: "Message resource" properties), errors as Twilio's JSON error body
``{"code", "message", "more_info", "status"}``. Failures are scripted with ``fail_next`` (the next N
requests), ``fail_for`` (every request for a while, then it recovers) and ``hang_for`` (requests hang
for a while, past the client's timeout, and create nothing).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>AC[0-9a-fA-F]{32})/Messages\.json$")


@dataclass
class ScriptedFailure:
    """An error answer: HTTP ``status`` with Twilio error ``code`` and ``message``."""

    status: int
    code: int
    message: str


@dataclass
class FakeTwilio:
    """The fake server. ``base_url`` goes into ``TWILIO_API_BASE_URL``; ``messages`` holds accepted sends."""

    account_sid: str
    auth_token: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    _failures: list[ScriptedFailure] = field(default_factory=list)
    _failing_until: float = 0.0
    _failing_with: ScriptedFailure | None = None
    _hanging_until: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the running server."""
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_next(self, status: int, code: int, message: str, times: int = 1) -> None:
        """Answer the next ``times`` requests with this error instead of 201."""
        with self._lock:
            self._failures.extend([ScriptedFailure(status, code, message)] * times)

    def fail_for(
        self, seconds: float, status: int = 500, code: int = 20500, message: str = "Internal Server Error"
    ) -> None:
        """Answer every request with this error for the next ``seconds`` seconds, then recover."""
        with self._lock:
            self._failing_until = time.monotonic() + seconds
            self._failing_with = ScriptedFailure(status, code, message)

    def hang_for(self, seconds: float) -> None:
        """For the next ``seconds`` seconds, hold every request until that time is over, then answer 503
        (the client has timed out by then) without creating a message."""
        with self._lock:
            self._hanging_until = time.monotonic() + seconds

    def start(self) -> FakeTwilio:
        """Listen on a free loopback port and serve in a daemon thread."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                return

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode(), keep_blank_values=True).items()}
                status, payload = fake.handle(self.path, self.headers.get("Authorization", ""), form)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-twilio", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def handle(self, path: str, authorization: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Answer one request: (HTTP status, JSON body)."""
        with self._lock:
            self.requests.append({"path": path, "form": form})
        match = MESSAGES_PATH.match(path)
        if match is None:
            return 404, _error(404, 20404, f"The requested resource {path} was not found")
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if authorization != expected or match["sid"] != self.account_sid:
            return 401, _error(401, 20003, "Authenticate")
        if not form.get("To") or not (form.get("Body") or form.get("MediaUrl")):
            return 400, _error(
                400,
                21604 if not form.get("To") else 21602,
                "A 'To' phone number is required." if not form.get("To") else "Message body is required.",
            )
        with self._lock:
            hang = self._hanging_until - time.monotonic()
        if hang > 0:
            time.sleep(hang)
            return 503, _error(503, 20503, "Service Unavailable")
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
            if failure is None and self._failing_with is not None and time.monotonic() < self._failing_until:
                failure = self._failing_with
            if failure is not None:
                return failure.status, _error(failure.status, failure.code, failure.message)
            message = self._message_resource(form)
            self.messages.append(message)
        return 201, message

    def _message_resource(self, form: dict[str, str]) -> dict[str, Any]:
        """A Message resource as Twilio returns it right after creation (status ``queued``)."""
        sid = "SM" + uuid.uuid4().hex
        now = formatdate(usegmt=False).replace("-0000", "+0000")
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": form.get("Body", ""),
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": form["To"],
            "uri": f"{uri}.json",
        }


def _error(status: int, code: int, message: str) -> dict[str, Any]:
    """Twilio's REST error body."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
