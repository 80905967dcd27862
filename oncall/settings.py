"""Agent configuration, read by pydantic-settings from the environment and ``.env``.

Every variable is documented in ``.env.example``. Invalid values fail at start with
pydantic's message; secrets are ``SecretStr`` so they never print in logs or reprs.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_replica_id() -> str:
    """``<hostname>-<pid>``: unique per agent process on a machine and across machines."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    """All agent settings. Durations are seconds, sizes are characters, URLs have no trailing slash."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Storage and HTTP surface
    database_path: Path = Field(default=REPO_ROOT / "data" / "oncall.db", alias="DATABASE_PATH")
    database_url: str | None = Field(default=None, alias="DATABASE_URL", pattern=r"^(sqlite|postgresql)(\+\w+)?://")
    public_base_url: str = Field(default="http://127.0.0.1:8088", alias="PUBLIC_BASE_URL")
    alerts_bearer_token: SecretStr | None = Field(default=None, alias="ALERTS_BEARER_TOKEN")
    log_level: str = Field(default="INFO", alias="LOG_LEVEL")

    # Replicas sharing one database: work claims and the outbox
    agent_replica_id: str = Field(
        default_factory=default_replica_id, alias="AGENT_REPLICA_ID", max_length=100, pattern=r"^[\w.@:-]+$"
    )
    lease_s: float = Field(default=30.0, ge=1, le=3600, alias="LEASE_S")
    work_poll_s: float = Field(default=2.0, gt=0, le=60, alias="WORK_POLL_S")
    outbox_expiry_s: float = Field(default=21600.0, ge=60, alias="OUTBOX_EXPIRY_S")
    outbox_backoff_max_s: float = Field(default=60.0, ge=1, le=3600, alias="OUTBOX_BACKOFF_MAX_S")
    outbox_warn_attempts: int = Field(default=5, ge=1, le=1000, alias="OUTBOX_WARN_ATTEMPTS")

    # The demo stack the agent investigates
    lb_url: str = Field(default="http://127.0.0.1:9000", alias="LB_URL")
    prometheus_url: str = Field(default="http://127.0.0.1:9090", alias="PROMETHEUS_URL")
    pm_url: str = Field(default="http://127.0.0.1:7070", alias="PM_URL")

    # Model (any OpenAI-compatible Chat Completions endpoint)
    openai_api_key: SecretStr | None = Field(default=None, alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(default=None, alias="OPENAI_BASE_URL")
    openai_model: str = Field(default="gpt-4o", alias="OPENAI_MODEL")
    openai_timeout_s: float = Field(default=60.0, gt=0, alias="OPENAI_TIMEOUT_S")
    llm_temperature: float = Field(default=0.1, ge=0, le=2, alias="LLM_TEMPERATURE")
    llm_max_rounds: int = Field(default=10, ge=1, le=30, alias="LLM_MAX_ROUNDS")
    reply_max_rounds: int = Field(default=5, ge=1, le=10, alias="REPLY_MAX_ROUNDS")
    tool_timeout_s: float = Field(default=10.0, gt=0, alias="TOOL_TIMEOUT_S")
    max_concurrent_investigations: int = Field(default=2, ge=1, le=32, alias="MAX_CONCURRENT_INVESTIGATIONS")
    investigation_timeout_s: float = Field(default=120.0, gt=0, alias="INVESTIGATION_TIMEOUT_S")
    tool_output_max_chars: int = Field(default=6000, ge=500, alias="TOOL_OUTPUT_MAX_CHARS")

    # Source code: GitHub contents API, else the local checkout
    github_token: SecretStr | None = Field(default=None, alias="GITHUB_TOKEN")
    github_repo: str | None = Field(default=None, alias="GITHUB_REPO", pattern=r"^[\w.-]+/[\w.-]+$")
    github_ref: str = Field(default="main", alias="GITHUB_REF")
    github_api_url: str = Field(default="https://api.github.com", alias="GITHUB_API_URL")
    code_root: Path = Field(default=REPO_ROOT, alias="CODE_ROOT")

    # WhatsApp through Twilio
    twilio_account_sid: str | None = Field(default=None, alias="TWILIO_ACCOUNT_SID")
    twilio_auth_token: SecretStr | None = Field(default=None, alias="TWILIO_AUTH_TOKEN")
    twilio_whatsapp_from: str | None = Field(default=None, alias="TWILIO_WHATSAPP_FROM")
    twilio_api_base_url: str | None = Field(default=None, alias="TWILIO_API_BASE_URL")
    oncall_whatsapp_numbers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="ONCALL_WHATSAPP_NUMBERS"
    )

    # Jira Cloud REST v3
    jira_base_url: str | None = Field(default=None, alias="JIRA_BASE_URL")
    jira_email: str | None = Field(default=None, alias="JIRA_EMAIL")
    jira_api_token: SecretStr | None = Field(default=None, alias="JIRA_API_TOKEN")
    jira_project_key: str | None = Field(default=None, alias="JIRA_PROJECT_KEY")
    jira_issue_type: str = Field(default="Task", alias="JIRA_ISSUE_TYPE")

    @field_validator("oncall_whatsapp_numbers", mode="before")
    @classmethod
    def _split_numbers(cls, value: object) -> object:
        """Accept ``whatsapp:+1555...,whatsapp:+4915...`` (comma separated) from the environment."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("oncall_whatsapp_numbers")
    @classmethod
    def _whatsapp_prefix(cls, numbers: list[str]) -> list[str]:
        """Twilio addresses WhatsApp users as ``whatsapp:+E164``; add the prefix when it is missing."""
        return [n if n.startswith("whatsapp:") else f"whatsapp:{n}" for n in numbers]

    @field_validator(
        "public_base_url",
        "lb_url",
        "prometheus_url",
        "pm_url",
        "github_api_url",
        "jira_base_url",
        "openai_base_url",
        "twilio_api_base_url",
    )
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        """Store URLs without a trailing slash so paths can be appended."""
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _complete_integrations(self) -> Settings:
        """An integration is either fully configured or not at all; half a configuration is an error."""
        # TWILIO_AUTH_TOKEN alone is valid: it verifies inbound webhooks while replies go to the console channel.
        groups = {
            "Twilio": {
                "TWILIO_ACCOUNT_SID": self.twilio_account_sid,
                "TWILIO_AUTH_TOKEN": self.twilio_auth_token,
                "TWILIO_WHATSAPP_FROM": self.twilio_whatsapp_from,
            }
            if (self.twilio_account_sid or self.twilio_whatsapp_from)
            else {},
            "Jira": {
                "JIRA_BASE_URL": self.jira_base_url,
                "JIRA_EMAIL": self.jira_email,
                "JIRA_API_TOKEN": self.jira_api_token,
                "JIRA_PROJECT_KEY": self.jira_project_key,
            },
        }
        for name, fields in groups.items():
            present = [key for key, value in fields.items() if value]
            if present and len(present) != len(fields):
                missing = sorted(set(fields) - set(present))
                raise ValueError(
                    f"{name} is partly configured: set {', '.join(missing)} too, or unset {', '.join(present)}"
                )
        if self.twilio_enabled and not self.oncall_whatsapp_numbers:
            raise ValueError("Twilio is configured but ONCALL_WHATSAPP_NUMBERS is empty: nobody would be paged")
        return self

    @property
    def store_url(self) -> str:
        """The database: ``DATABASE_URL`` when set, else the SQLite file ``DATABASE_PATH``."""
        return self.database_url or f"sqlite:///{self.database_path}"

    @property
    def llm_enabled(self) -> bool:
        """True when a model endpoint is configured (an API key, or a base URL for a local server)."""
        return bool(self.openai_api_key or self.openai_base_url)

    @property
    def twilio_enabled(self) -> bool:
        """True when WhatsApp messages go through Twilio rather than the console channel.

        ``TWILIO_AUTH_TOKEN`` alone (no SID, no sender) only verifies inbound webhook signatures.
        """
        return bool(self.twilio_account_sid and self.twilio_auth_token and self.twilio_whatsapp_from)

    @property
    def jira_enabled(self) -> bool:
        """True when tickets can be created in Jira Cloud."""
        return bool(self.jira_base_url and self.jira_email and self.jira_api_token and self.jira_project_key)

    @property
    def github_enabled(self) -> bool:
        """True when source files are read through the GitHub contents API."""
        return bool(self.github_repo)

    def integration_report(self) -> dict[str, str]:
        """Return ``{integration: "enabled"|"disabled (...)"}`` for the start-up log; never includes secrets."""
        return {
            "openai": f"enabled (model {self.openai_model})" if self.llm_enabled else "disabled (offline engine)",
            "twilio": "enabled" if self.twilio_enabled else "disabled (console WhatsApp channel)",
            "jira": f"enabled (project {self.jira_project_key})"
            if self.jira_enabled
            else "disabled (ticket drafts kept on the incident)",
            "github": f"enabled ({self.github_repo}@{self.github_ref})"
            if self.github_enabled
            else f"disabled (local checkout {self.code_root})",
            "alerts_bearer_token": "required" if self.alerts_bearer_token else "not required",
        }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment and the env file.

    The env file is ``.env`` in the working directory, or the path in ``ONCALL_ENV_FILE``
    (a missing file is ignored). Raises ``pydantic.ValidationError`` on invalid values.
    """
    return Settings(_env_file=os.environ.get("ONCALL_ENV_FILE", ".env"))
