"""Removal of secrets from text the agent stores, logs, shows or sends to the model.

Two kinds of secret are masked with ``***``:

- **known values**: every secret setting (``Settings.secret_values()``: API keys, tokens, the
  database password), also in their JSON-escaped and URL-encoded spellings;
- **secret-shaped strings**, whoever they belong to: the token formats of detect-secrets' detectors
  (AWS access key ids, GitHub, GitLab, Slack, Stripe, SendGrid, PyPI, Square, Discord, Twilio API keys,
  Mailchimp, Azure storage keys, JSON web tokens, legacy OpenAI keys; Yelp's
  ``detect_secrets.plugins``), plus patterns of our own for current OpenAI and Atlassian tokens,
  Google API keys, GitHub fine-grained tokens, PEM private key blocks, passwords in URLs,
  ``Authorization`` / ``Bearer`` credentials and ``password=...`` / ``"api_key": "..."`` assignments.

Where it is applied (see SECURITY.md): tool output before the model or the audit trail sees it,
every parameter written to the database (``oncall.store.database``), every log record
(``install_log_redaction``) and error texts.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any
from urllib.parse import quote

from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector
from pydantic import SecretStr

MASK = "***"
MIN_SECRET_CHARS = 8
"""Known values shorter than this are not masked (they would mask words and numbers); no real key is that short."""
REMEMBERED_TEXT_CHARS = 256
"""Texts up to this many characters are redacted once and remembered (ids, digests, group keys and label values
come back in every statement and notification)."""
REMEMBERED_TEXTS = 4096
"""How many short texts a ``Redactor`` remembers (at most about 1 MB)."""

_DETECTORS = (
    AWSKeyDetector,
    AzureStorageKeyDetector,
    DiscordBotTokenDetector,
    GitHubTokenDetector,
    GitLabTokenDetector,
    JwtTokenDetector,
    MailchimpDetector,
    OpenAIDetector,
    PypiTokenDetector,
    SendGridDetector,
    SlackDetector,
    SquareOAuthDetector,
    StripeDetector,
    TwilioKeyDetector,
)
"""detect-secrets detectors whose ``denylist`` regexes are used as they are (the AWS detector's first one only)."""
_DETECTOR_GATES: dict[type, tuple[str, ...]] = {
    MailchimpDetector: ("-us",),
    SlackDetector: ("xox", "hooks.slack.com"),
    StripeDetector: ("k_live_",),
}
"""Literals (lowercase) a text must hold before a slow detector regex is run over it."""
_VALUE = r"""[^\s"'`,;&<>\\]"""
"""One character of a credential value: stops at whitespace, quotes, separators and JSON escapes."""


@dataclass(frozen=True)
class SecretPattern:
    """A secret-shaped string.

    ``pattern`` finds it; with a ``secret`` group only that group is masked, else the whole match.
    ``gates``: lowercase literals, one of which a text must contain for the pattern to run (speed:
    most texts hold none); empty = always run. ``word_start``: the match must not follow a letter,
    digit or ``_`` (a ``\\b`` written here instead of in the pattern keeps the regex's fast literal search).
    """

    pattern: re.Pattern[str]
    gates: tuple[str, ...] = ()
    word_start: bool = False


def _own(pattern: str, gates: tuple[str, ...] = (), word_start: bool = False) -> SecretPattern:
    return SecretPattern(re.compile(pattern, re.DOTALL), gates, word_start)


_OWN_PATTERNS = (
    # a PEM private key block, or what is left of one when the text was cut
    _own(r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)"),
    _own(r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}", word_start=True),  # OpenAI API keys
    _own(r"ATAT[A-Za-z0-9_=-]{20,}", word_start=True),  # Atlassian API tokens
    _own(r"AIza[0-9A-Za-z_-]{35}", word_start=True),  # Google API keys
    _own(r"github_pat_[A-Za-z0-9_]{22,}", word_start=True),  # GitHub fine-grained tokens
    _own(rf"://[^\s:/@\"']+:(?P<secret>{_VALUE}+?)@"),  # the password of scheme://user:password@host
    _own(r"(?i)bearer\s+(?P<secret>[A-Za-z0-9._~+/=-]{16,})", ("bearer",), True),
    _own(r"(?i)basic\s+(?P<secret>(?=[A-Za-z0-9+/=]*[\d=])[A-Za-z0-9+/]{8,}={0,2})", ("basic",), True),
    # password=..., "api_key": "...", TWILIO_AUTH_TOKEN=...: values of 8+ characters with a digit, or 16+
    _own(
        r"(?i)(?:pass(?:word|wd)|pwd|secret|token|api[_-]?key|(?:access|private|auth)[_-]?key)"
        rf"[\"']?\s*[:=]\s*[\"']?(?P<secret>(?={_VALUE}*\d){_VALUE}{{8,}}|{_VALUE}{{16,}})",
        ("pass", "pwd", "secret", "token", "apikey", "api_key", "api-key", "access", "private", "auth"),
    ),
)


def _detector_patterns() -> list[SecretPattern]:
    found: list[SecretPattern] = []
    for detector in _DETECTORS:
        regexes = detector.denylist[:1] if detector is AWSKeyDetector else detector.denylist
        found.extend(SecretPattern(regex, _DETECTOR_GATES.get(detector, ())) for regex in regexes)
    return found


SECRET_PATTERNS = [*_OWN_PATTERNS, *_detector_patterns()]
"""Every secret-shaped string the redactor masks."""


def _mask(match: re.Match[str], word_start: bool) -> str:
    whole_start, whole_end = match.span()
    text = match.string
    if word_start and whole_start > 0 and (text[whole_start - 1].isalnum() or text[whole_start - 1] == "_"):
        return match.group()  # inside a longer word: not a token ("task-..." holds "sk-")
    if "secret" in match.re.groupindex and match.group("secret") is not None:
        start, end = match.span("secret")
        return text[whole_start:start] + MASK + text[end:whole_end]
    return MASK


def redact_shapes(text: str) -> str:
    """``text`` with every secret-shaped string (``SECRET_PATTERNS``) replaced by ``***``."""
    lowered = text.lower()
    for secret in SECRET_PATTERNS:
        if secret.gates and not any(gate in lowered for gate in secret.gates):
            continue
        text = secret.pattern.sub(partial(_mask, word_start=secret.word_start), text)
    return text


class Redacted(str):
    """A text that already went through a ``Redactor`` (the store does not scan it a second time)."""

    __slots__ = ()


class Redactor:
    """Replaces known secret values and secret-shaped strings in a text with ``***``.

    Args:
        secrets: the secret values (``Settings.secret_values()``) or ``SecretStr`` settings; None,
            empty and values shorter than ``MIN_SECRET_CHARS`` are ignored. No secrets: only the
            secret-shaped strings are masked.
    """

    def __init__(self, secrets: Iterable[SecretStr | str | None] = ()) -> None:
        values: set[str] = set()
        for secret in secrets:
            value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
            if value and len(value) >= MIN_SECRET_CHARS:
                values.update({value, json.dumps(value)[1:-1], quote(value, safe="")})
        # longest first, so a secret that contains another is masked whole
        self.values = sorted(values, key=len, reverse=True)
        self._short = lru_cache(maxsize=REMEMBERED_TEXTS)(self._redact)

    def __call__(self, text: str) -> Redacted:
        """``text`` with each known value and each secret-shaped string replaced by ``***``."""
        if isinstance(text, Redacted):
            return text
        return self._short(text) if len(text) <= REMEMBERED_TEXT_CHARS else self._redact(text)

    def _redact(self, text: str) -> Redacted:
        for value in self.values:
            text = text.replace(value, MASK)
        return Redacted(redact_shapes(text))

    def value(self, obj: Any) -> Any:
        """A copy of a JSON-like value (dicts, lists, strings, numbers) with every string redacted."""
        if isinstance(obj, str):
            return str(self(obj))
        if isinstance(obj, dict):
            return {key: self.value(item) for key, item in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.value(item) for item in obj]
        return obj


class _RecordRedaction:
    """The log record factory wrapper that ``install_log_redaction`` installs once per process."""

    def __init__(self, previous: Callable[..., logging.LogRecord]) -> None:
        self.previous = previous
        self.redact: Callable[[str], str] = redact_shapes

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is logging's own error to report
            return record
        clean = self.redact(message)
        if clean != message:
            _redact_record_message(record, clean, self.redact)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return record


def _redact_record_message(record: logging.LogRecord, clean: str, redact: Callable[[str], str]) -> None:
    """Redact a record's template and each string argument, so formatters that read ``record.args`` (uvicorn's
    access log takes the client, method, path ... from them) keep working; when that does not give the redacted
    message (a secret split across arguments), the message is stored already formatted and redacted."""
    if isinstance(record.args, tuple):
        msg = redact(str(record.msg))
        args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        try:
            if (msg % args if args else msg) == clean:
                record.msg, record.args = msg, args
                return
        except (TypeError, ValueError):
            pass
    record.msg, record.args = clean, ()


def install_log_redaction(redact: Callable[[str], str]) -> None:
    """Redact every log record of the process (any logger, any handler) with ``redact``.

    The message is formatted and redacted when the record is created, and so is the text of an
    attached exception (``exc_text``, which formatters print instead of formatting ``exc_info``
    again). Installing again replaces the redactor (the factory is wrapped only once).
    """
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _RecordRedaction):
        factory = _RecordRedaction(factory)
        logging.setLogRecordFactory(factory)
    factory.redact = redact
