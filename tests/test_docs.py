"""The configuration documentation matches the code: every setting is in .env.example and the README."""

from __future__ import annotations

import re

from oncall.settings import Settings
from tests.support import REPO_ROOT

ENV_EXAMPLE = (REPO_ROOT / ".env.example").read_text()
README = (REPO_ROOT / "README.md").read_text()


def example_variables() -> set[str]:
    return set(re.findall(r"^#?\s?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE, flags=re.MULTILINE))


def test_every_agent_setting_is_documented_in_env_example():
    aliases = {field.alias for field in Settings.model_fields.values()}
    assert aliases <= example_variables(), sorted(aliases - example_variables())


def test_readme_configuration_table_matches_env_example():
    in_readme = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)`", README, flags=re.MULTILINE))
    assert example_variables() <= in_readme, sorted(example_variables() - in_readme)


def test_readme_starts_with_the_two_commands():
    head = README[:1500]
    assert "make demo" in head and "make test" in head
