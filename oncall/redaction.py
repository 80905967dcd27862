"""Removal of known secret values from text the agent stores, logs or sends."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import SecretStr

MASK = "***"


class Redactor:
    """Replaces every configured secret value in a text with ``***``.

    Args:
        secrets: the secret settings (None and empty values are ignored).
    """

    def __init__(self, secrets: Iterable[SecretStr | None]) -> None:
        values = {secret.get_secret_value() for secret in secrets if secret is not None}
        # longest first, so a secret that contains another is masked whole
        self.values = sorted((value for value in values if value), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        """``text`` with each secret value replaced by ``***``."""
        for value in self.values:
            text = text.replace(value, MASK)
        return text
