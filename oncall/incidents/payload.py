"""Pydantic models of the Alertmanager webhook payload, version 4.

Protocol source: Alertmanager's ``webhook_config`` documentation (prometheus.io/docs/alerting/latest/
configuration/#webhook_config) and ``notify/webhook`` in Alertmanager 0.25 (the captured fixtures in
``tests/fixtures/alertmanager``). Unknown fields are ignored so a newer Alertmanager that adds fields
is still accepted; ``version`` must be ``"4"``.

Facts the ingest relies on:
- ``groupKey`` identifies the alert group (route + group labels); one incident per group key.
- ``fingerprint`` identifies one alert (its label set) inside the group.
- ``truncatedAlerts > 0`` (``max_alerts`` on the webhook) means ``alerts`` is cut, and the top-level
  ``status`` is computed from the listed alerts only, so it can say ``resolved`` while a cut alert fires.
- Firing alerts carry Go's zero time ``0001-01-01T00:00:00Z`` as ``endsAt``.

Sizes are bounded so one huge value cannot make every later statement, prompt and page huge (the
raw body keeps it whole): a label or annotation value, a URL or the receiver longer than
``MAX_VALUE_CHARS`` is cut with a visible marker; a group key or fingerprint longer than
``MAX_KEY_CHARS`` is replaced by its head and SHA-256, which keeps it unique and stable.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

AlertStatus = Literal["firing", "resolved"]
MAX_VALUE_CHARS = 16 * 1024
"""Longest label or annotation value, URL or receiver kept, characters (longer ones are cut)."""
MAX_KEY_CHARS = 1024
"""Longest group key or fingerprint kept as is, characters (longer ones become head + SHA-256)."""


def cut_value(value: str) -> str:
    """``value``, or its first ``MAX_VALUE_CHARS`` characters and ``...[cut N chars]``."""
    if len(value) <= MAX_VALUE_CHARS:
        return value
    return f"{value[:MAX_VALUE_CHARS]}...[cut {len(value) - MAX_VALUE_CHARS} chars]"


def bounded_key(value: str) -> str:
    """``value``, or its head and the SHA-256 of the whole (unique and stable) when it is longer than
    ``MAX_KEY_CHARS``."""
    if len(value) <= MAX_KEY_CHARS:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{value[: MAX_KEY_CHARS - 80]}...sha256:{digest}"


Value = Annotated[str, AfterValidator(cut_value)]
Key = Annotated[str, AfterValidator(bounded_key)]


class WebhookAlert(BaseModel):
    """One alert of a notification: its own status, label set, annotations and times (RFC 3339)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    status: AlertStatus
    labels: dict[Key, Value] = Field(min_length=1)
    annotations: dict[Key, Value] = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: Value = Field(default="", alias="generatorURL")
    fingerprint: Key = Field(min_length=1)

    @property
    def alertname(self) -> str:
        """The ``alertname`` label (every Prometheus alert has one), or ``"unknown"``."""
        return self.labels.get("alertname", "unknown")

    @property
    def ends_at_known(self) -> datetime | None:
        """``endsAt``, or None when Alertmanager sent Go's zero time (a firing alert)."""
        if self.ends_at is None or self.ends_at.year <= 1:
            return None
        return self.ends_at


class WebhookNotification(BaseModel):
    """The body Alertmanager POSTs to a webhook receiver (payload version 4)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    version: Literal["4"]
    group_key: Key = Field(alias="groupKey", min_length=1)
    truncated_alerts: int = Field(default=0, ge=0, alias="truncatedAlerts")
    status: AlertStatus
    receiver: Value
    group_labels: dict[Key, Value] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[Key, Value] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[Key, Value] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: Value = Field(default="", alias="externalURL")
    alerts: list[WebhookAlert] = Field(min_length=1)

    @property
    def truncated(self) -> bool:
        """True when Alertmanager cut the alert list (``max_alerts``): a partial view of the group."""
        return self.truncated_alerts > 0


class PayloadError(ValueError):
    """A webhook body that is not valid JSON or not an Alertmanager v4 payload.

    ``reason`` is a one-line human-readable explanation; ``errors`` lists ``{"loc", "msg", "type"}``
    items (empty for JSON syntax errors).
    """

    def __init__(self, reason: str, errors: list[dict] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.errors = errors or []


def parse_notification(raw_body: bytes) -> WebhookNotification:
    """Decode and validate a webhook body.

    Args:
        raw_body: the exact bytes Alertmanager sent (UTF-8 JSON).
    Raises:
        PayloadError: invalid UTF-8/JSON, or a JSON document that is not a v4 payload.
    """
    try:
        document = json.loads(raw_body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"body is not valid JSON: {exc}") from exc
    try:
        return WebhookNotification.model_validate(document)
    except ValidationError as exc:
        errors = validation_errors(exc)
        reason = "; ".join(f"{err['loc']}: {err['msg']}" for err in errors)
        raise PayloadError(f"not an Alertmanager webhook v4 payload: {reason}", errors) from exc


def validation_errors(exc: ValidationError) -> list[dict]:
    """``[{"loc": "alerts.0.labels", "msg", "type"}]`` of a validation failure (no input values: they may be huge
    or secret)."""
    return [
        {"loc": ".".join(str(part) for part in err["loc"]) or "body", "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
