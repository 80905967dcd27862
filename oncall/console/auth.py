"""Console login: accounts from the settings, Argon2 password checks, signed session cookies, CSRF tokens.

Design (see the README, "Incident console"):

- Accounts are ``CONSOLE_USERS`` entries (name, role, Argon2 hash verified with argon2-cffi) and an
  optional ``CONSOLE_TOKEN`` that logs in as ``token`` with ``CONSOLE_TOKEN_ROLE``.
- The session is a cookie signed with itsdangerous (HMAC-SHA1 over a key derived from
  ``CONSOLE_SESSION_SECRET``): user name, login method, a fingerprint of the credential, a CSRF token,
  the login time and an optional one-shot notice. It expires ``CONSOLE_SESSION_TTL_S`` seconds after
  the login; the role is read from the current settings on every request, and changing a user's
  password hash (or the token) ends that user's sessions.
- CSRF: the synchronizer-token pattern. Every form carries the session's random token in a hidden
  field and every POST compares it with the session's (constant time). Before login, the login form
  carries a token that is also in a short-lived signed cookie (signed double submit), so a forged
  login is refused too.
- Failed logins are counted per client address: after ``MAX_FAILURES`` within ``FAILURE_WINDOW_S``
  further attempts get 429 until the window has passed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import argon2
from itsdangerous import BadSignature, URLSafeTimedSerializer

from oncall.settings import ConsoleRole, Settings

log = logging.getLogger("oncall.console.auth")

SESSION_COOKIE = "oncall_console"
LOGIN_COOKIE = "oncall_console_login"
COOKIE_PATH = "/ui"
LOGIN_FORM_TTL_S = 3600
"""Seconds a login form (its CSRF token) stays valid."""
MAX_FAILURES = 10
FAILURE_WINDOW_S = 300.0
TOKEN_USER = "token"  # noqa: S105 - the user name of a token login, not a secret
Method = Literal["password", "token"]


@dataclass(frozen=True)
class Session:
    """A logged-in browser: ``user`` and ``role`` (viewer or responder), the CSRF ``csrf`` token of its
    forms, ``issued_at`` (epoch seconds of the login) and a one-shot ``notice`` to show on the next page."""

    user: str
    role: ConsoleRole
    method: Method
    fingerprint: str
    csrf: str
    issued_at: float
    notice: str | None = None

    @property
    def is_responder(self) -> bool:
        """True when this user may acknowledge, resolve and approve."""
        return self.role == "responder"

    @property
    def actor(self) -> str:
        """Who the audit trail names for this user's actions: ``<user> via console``."""
        return f"{self.user} via console"


def fingerprint(secret: str) -> str:
    """A short SHA-256 fingerprint of a credential (the password hash or the token), kept in the session."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


class LoginThrottle:
    """Counts failed logins per client address in a sliding window (this process only).

    Args:
        max_failures: failures allowed within ``window_s`` seconds before logins are refused.
        window_s: the window, seconds.
        clock: the time source (epoch seconds).
    """

    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window_s: float = FAILURE_WINDOW_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, client: str) -> int:
        """Seconds until ``client`` may try again; 0 when it may now."""
        now = self.clock()
        failures = self._failures.get(client)
        if not failures:
            return 0
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        if len(failures) < self.max_failures:
            if not failures:
                del self._failures[client]
            return 0
        return max(1, int(failures[0] + self.window_s - now + 1))

    def failed(self, client: str) -> None:
        """Record one failed login of ``client``."""
        self._failures.setdefault(client, deque()).append(self.clock())

    def succeeded(self, client: str) -> None:
        """Forget ``client``'s failures after a successful login."""
        self._failures.pop(client, None)


class ConsoleAuth:
    """Checks credentials and issues, reads and updates session cookies.

    Args:
        settings: the agent settings (accounts, token, secret, session lifetime, public URL).
        clock: the time source (epoch seconds), replaceable in tests.
    """

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        secret = settings.console_session_secret.get_secret_value() if settings.console_session_secret else None
        if secret is None:
            secret = secrets.token_urlsafe(32)
            if settings.console_enabled:
                log.warning(
                    "CONSOLE_SESSION_SECRET is unset: console sessions are valid on this process only, "
                    "until it restarts (set it to share sessions between agent replicas)"
                )
        self.settings = settings
        self.clock = clock
        self.ttl_s = settings.console_session_ttl_s
        self.secure_cookies = settings.public_base_url.startswith("https://")
        self.throttle = LoginThrottle(clock=clock)
        self._sessions = URLSafeTimedSerializer(secret, salt="oncall-console-session")
        self._login_forms = URLSafeTimedSerializer(secret, salt="oncall-console-login")
        self._hasher = argon2.PasswordHasher()
        self._users = {user.name: user for user in settings.console_users}
        # Verified instead of a missing user's hash, so a wrong name costs as long as a wrong password.
        self._dummy_hash: str | None = None

    @property
    def enabled(self) -> bool:
        """True when at least one way to log in is configured."""
        return self.settings.console_enabled

    async def check_password(self, name: str, password: str) -> Session | None:
        """A new session when ``password`` matches ``name``'s Argon2 hash, else None (verified off the event loop)."""
        user = self._users.get(name)
        if user is None and self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(self._hasher.hash, secrets.token_urlsafe(16))
        stored = user.password_hash.get_secret_value() if user else str(self._dummy_hash)
        try:
            await asyncio.to_thread(self._hasher.verify, stored, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return None
        if user is None:
            return None
        return self._new_session(user.name, user.role, "password", fingerprint(stored))

    def check_token(self, token: str) -> Session | None:
        """A new session when ``token`` equals ``CONSOLE_TOKEN`` (constant-time), else None."""
        expected = self.settings.console_token
        if expected is None or not secrets.compare_digest(token.encode(), expected.get_secret_value().encode()):
            return None
        return self._new_session(TOKEN_USER, self.settings.console_token_role, "token", fingerprint(token))

    def _new_session(self, user: str, role: ConsoleRole, method: Method, print_: str) -> Session:
        return Session(user, role, method, print_, secrets.token_urlsafe(32), self.clock())

    def dump(self, session: Session) -> str:
        """The signed cookie value of ``session``."""
        payload: dict[str, Any] = {
            "u": session.user,
            "m": session.method,
            "f": session.fingerprint,
            "c": session.csrf,
            "t": session.issued_at,
        }
        if session.notice:
            payload["n"] = session.notice
        return self._sessions.dumps(payload)

    def load(self, cookie: str | None) -> Session | None:
        """The session of a cookie value; None when missing, forged, expired, or its account changed."""
        if not cookie:
            return None
        try:
            payload = self._sessions.loads(cookie, max_age=math.ceil(self.ttl_s))
            user, method, print_, csrf, issued_at = (payload[k] for k in ("u", "m", "f", "c", "t"))
        except (BadSignature, KeyError, TypeError, ValueError):
            return None
        if not isinstance(issued_at, int | float) or self.clock() - issued_at > self.ttl_s:
            return None
        role = self._current_role(user, method, print_)
        if role is None:
            return None
        return Session(user, role, method, print_, str(csrf), float(issued_at), payload.get("n"))

    def _current_role(self, user: str, method: str, print_: str) -> ConsoleRole | None:
        """The account's role now, or None when the account or its credential changed since the login."""
        if method == "token":
            token = self.settings.console_token
            if user == TOKEN_USER and token is not None and fingerprint(token.get_secret_value()) == print_:
                return self.settings.console_token_role
            return None
        account = self._users.get(user)
        if method == "password" and account and fingerprint(account.password_hash.get_secret_value()) == print_:
            return account.role
        return None

    def with_notice(self, session: Session, notice: str | None) -> Session:
        """The same session carrying ``notice`` (shown once on the next page), or none."""
        return replace(session, notice=notice)

    def expires_in(self, session: Session) -> int:
        """Whole seconds until ``session`` expires (at least 0)."""
        return max(0, math.ceil(session.issued_at + self.ttl_s - self.clock()))

    def new_login_form(self) -> tuple[str, str]:
        """A login form's CSRF token and the signed cookie value that carries the same token."""
        token = secrets.token_urlsafe(32)
        return token, self._login_forms.dumps(token)

    def login_form_ok(self, cookie: str | None, token: str) -> bool:
        """True when the login form's ``token`` matches the one signed into its (unexpired) cookie."""
        if not cookie or not token:
            return False
        try:
            signed = self._login_forms.loads(cookie, max_age=LOGIN_FORM_TTL_S)
        except BadSignature:
            return False
        return isinstance(signed, str) and secrets.compare_digest(signed.encode(), token.encode())


def csrf_ok(session: Session, token: str) -> bool:
    """True when a form's CSRF ``token`` is the session's (constant-time compare)."""
    return bool(token) and secrets.compare_digest(session.csrf.encode(), token.encode())
