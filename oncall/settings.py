"""Agent configuration, read by pydantic-settings from the environment and ``.env``.

Every variable is documented in ``.env.example``. Invalid values fail at start with
pydantic's message; secrets are ``SecretStr`` so they never print in logs or reprs.
"""

from __future__ import annotations

import os
import re
import socket
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

import argon2
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from oncall.roster.config import load_roster
from oncall.roster.models import Roster

REPO_ROOT = Path(__file__).resolve().parent.parent

ConsoleRole = Literal["viewer", "responder"]
"""Roles of the incident console (``/ui``): a viewer reads, a responder also acknowledges, resolves, approves."""


class ConsoleUser(BaseModel):
    """One console account of ``CONSOLE_USERS``: a name, a role and an Argon2 password hash (PHC string,
    ``$argon2id$v=19$m=...,t=...,p=...$salt$hash``, made by ``python -m oncall.console.passwords``)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9._@-]{1,64}$")
    role: ConsoleRole
    password_hash: SecretStr

    @field_validator("password_hash")
    @classmethod
    def _argon2_hash(cls, value: SecretStr) -> SecretStr:
        """Only Argon2 PHC strings are accepted (argon2-cffi parses their parameters)."""
        try:
            argon2.extract_parameters(value.get_secret_value())
        except (argon2.exceptions.InvalidHashError, ValueError):
            raise ValueError(
                "not an Argon2 hash (make one with: python -m oncall.console.passwords NAME ROLE)"
            ) from None
        return value


def parse_console_users(text: str) -> list[dict[str, str]]:
    """Split ``CONSOLE_USERS`` (``name:role:hash`` entries separated by ``;`` or new lines) into dicts.

    Argon2 hashes contain ``$``, ``,`` and ``=`` but never ``:`` or ``;``. Raises ValueError for an
    entry without three parts (the message never contains the hash).
    """
    users = []
    for number, entry in enumerate((part.strip() for part in re.split(r"[;\n]", text)), 1):
        if not entry:
            continue
        name, sep1, rest = entry.partition(":")
        role, sep2, password_hash = rest.partition(":")
        if not (sep1 and sep2 and password_hash):
            raise ValueError(f"CONSOLE_USERS entry {number} is not name:role:argon2-hash")
        users.append({"name": name, "role": role, "password_hash": password_hash})
    return users


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
    oncall_api_token: SecretStr | None = Field(default=None, alias="ONCALL_API_TOKEN", min_length=16)
    raw_alert_retention_days: float = Field(default=14.0, gt=0, alias="RAW_ALERT_RETENTION_DAYS")
    confirmation_ttl_s: float = Field(default=600.0, gt=0, le=86400, alias="CONFIRMATION_TTL_S")
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

    # The services the agent investigates: the catalog, and the demo stack's URLs it may name
    services_file: Path = Field(default=REPO_ROOT / "services.yaml", alias="SERVICES_FILE")
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
    code_read_globs: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*.py"], alias="CODE_READ_GLOBS", min_length=1
    )

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
    jira_done_status: str = Field(default="Done", min_length=1, alias="JIRA_DONE_STATUS")
    jira_reopen_status: str = Field(default="To Do", min_length=1, alias="JIRA_REOPEN_STATUS")
    jira_reopen_window_s: float = Field(default=86400.0, ge=0, alias="JIRA_REOPEN_WINDOW_S")

    # On-call roster (people, rotations, escalation policies, service ownership)
    oncall_file: Path | None = Field(default=None, alias="ONCALL_FILE")
    _roster: Roster | None = PrivateAttr(default=None)

    # Incident console in the browser (/ui)
    console_users: Annotated[list[ConsoleUser], NoDecode] = Field(default_factory=list, alias="CONSOLE_USERS")
    console_token: SecretStr | None = Field(default=None, alias="CONSOLE_TOKEN")
    console_token_role: ConsoleRole = Field(default="viewer", alias="CONSOLE_TOKEN_ROLE")
    console_session_secret: SecretStr | None = Field(default=None, alias="CONSOLE_SESSION_SECRET")
    console_session_ttl_s: float = Field(default=28800.0, ge=60, le=604800, alias="CONSOLE_SESSION_TTL_S")
    console_live_interval_s: float = Field(default=2.0, ge=0.2, le=60, alias="CONSOLE_LIVE_INTERVAL_S")

    @field_validator("oncall_whatsapp_numbers", "code_read_globs", mode="before")
    @classmethod
    def _split_numbers(cls, value: object) -> object:
        """Accept comma-separated lists from the environment (``whatsapp:+1555...,whatsapp:+49...``, ``*.py,*.go``)."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("oncall_whatsapp_numbers")
    @classmethod
    def _whatsapp_prefix(cls, numbers: list[str]) -> list[str]:
        """Twilio addresses WhatsApp users as ``whatsapp:+E164``; add the prefix when it is missing."""
        return [n if n.startswith("whatsapp:") else f"whatsapp:{n}" for n in numbers]

    @field_validator("console_users", mode="before")
    @classmethod
    def _split_console_users(cls, value: object) -> object:
        """Accept ``name:role:hash;name:role:hash`` from the environment."""
        return parse_console_users(value) if isinstance(value, str) else value

    @field_validator("console_users")
    @classmethod
    def _unique_console_users(cls, users: list[ConsoleUser]) -> list[ConsoleUser]:
        """Each console account name appears once."""
        names = [user.name for user in users]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"CONSOLE_USERS names appear more than once: {', '.join(duplicates)}")
        return users

    @field_validator("console_token")
    @classmethod
    def _long_console_token(cls, value: SecretStr | None) -> SecretStr | None:
        """A login token must be hard to guess: at least 16 characters."""
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("CONSOLE_TOKEN must be at least 16 characters")
        return value

    @field_validator("console_session_secret")
    @classmethod
    def _long_session_secret(cls, value: SecretStr | None) -> SecretStr | None:
        """The key that signs console session cookies: at least 32 characters."""
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("CONSOLE_SESSION_SECRET must be at least 32 characters")
        return value

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
        if self.twilio_enabled and not self.oncall_whatsapp_numbers and self.oncall_file is None:
            raise ValueError(
                "Twilio is configured but neither ONCALL_FILE nor ONCALL_WHATSAPP_NUMBERS is set: nobody would be paged"
            )
        return self

    @model_validator(mode="after")
    def _load_roster(self) -> Settings:
        """Read and validate ``ONCALL_FILE`` at start; a problem stops the agent with file, line and reason."""
        self._roster = load_roster(self.oncall_file) if self.oncall_file is not None else None
        return self

    @property
    def roster(self) -> Roster | None:
        """The validated on-call roster, or None when ``ONCALL_FILE`` is unset (``ONCALL_WHATSAPP_NUMBERS`` only)."""
        return self._roster

    @property
    def store_url(self) -> str:
        """The database: ``DATABASE_URL`` when set, else the SQLite file ``DATABASE_PATH``."""
        return self.database_url or f"sqlite:///{self.database_path}"

    def secret_values(self) -> list[str]:
        """Every configured secret: the ``SecretStr`` settings and the password in ``DATABASE_URL``.

        The redactor masks these values wherever text leaves the agent (``oncall.redaction``).
        """
        values = [
            value.get_secret_value()
            for name in type(self).model_fields
            if isinstance(value := getattr(self, name), SecretStr)
        ]
        if self.database_url and (password := urlsplit(self.database_url).password):
            values.append(unquote(password))
        return [value for value in values if value]

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

    @property
    def console_enabled(self) -> bool:
        """True when someone can log in to the console (an account in ``CONSOLE_USERS`` or ``CONSOLE_TOKEN``)."""
        return bool(self.console_users or self.console_token)

    def console_report(self) -> str:
        """The console's line of ``integration_report`` (accounts and token login, never a secret)."""
        if not self.console_enabled:
            return "disabled (set CONSOLE_USERS or CONSOLE_TOKEN)"
        logins = [f"{len(self.console_users)} account(s)"]
        if self.console_token:
            logins.append(f"token login as {self.console_token_role}")
        return f"enabled at /ui ({', '.join(logins)})"

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
            "api_token": "required" if self.oncall_api_token else "not set (the /incidents API answers 403)",
            "oncall_roster": f"enabled ({self.oncall_file}: {len(self._roster.people)} people, "
            f"{len(self._roster.teams)} teams)"
            if self._roster is not None
            else "disabled (ONCALL_WHATSAPP_NUMBERS are paged)",
            "console": self.console_report(),
            "services_file": str(self.services_file),
        }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment and the env file.

    The env file is ``.env`` in the working directory, or the path in ``ONCALL_ENV_FILE``
    (a missing file is ignored). Raises ``pydantic.ValidationError`` on invalid values.
    """
    return Settings(_env_file=os.environ.get("ONCALL_ENV_FILE", ".env"))
