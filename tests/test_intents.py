"""The deterministic reading of engineer replies: a labelled corpus read at 100 % (tests/fixtures/replies)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from oncall.conversation.intents import SIDE_EFFECTS, Intent, Understanding, understand
from tests.support import fixture_path

CORPUS: list[dict[str, Any]] = yaml.safe_load(fixture_path("replies/corpus.yaml").read_text())


def expected(case: dict[str, Any]) -> Understanding:
    return Understanding(
        Intent(case["intent"]),
        incident_ref=case.get("incident"),
        assignee=case.get("assignee"),
        force_new=case.get("force_new", False),
        needs_confirmation=case.get("confirm", False),
        negated=case.get("negated", False),
    )


def test_the_corpus_covers_what_the_issue_names() -> None:
    intents = [Intent(case["intent"]) for case in CORPUS]
    assert len(CORPUS) >= 60
    assert {Intent.confirm, Intent.decline, Intent.unclear} <= set(intents)
    assert sum(case.get("negated", False) for case in CORPUS) >= 5
    assert sum(" " in (case.get("assignee") or "") for case in CORPUS) >= 4


@pytest.mark.parametrize("case", CORPUS, ids=lambda case: repr(case["text"]))
def test_reply_is_read_as_labelled(case: dict[str, Any]) -> None:
    got = understand(case["text"])
    assert (got.intent, got.incident_ref, got.assignee, got.force_new, got.needs_confirmation, got.negated) == (
        expected(case).intent,
        expected(case).incident_ref,
        expected(case).assignee,
        expected(case).force_new,
        expected(case).needs_confirmation,
        expected(case).negated,
    )


@pytest.mark.parametrize("case", CORPUS, ids=lambda case: repr(case["text"]))
def test_only_commands_are_executable(case: dict[str, Any]) -> None:
    got = understand(case["text"])
    commanded = got.intent in SIDE_EFFECTS and not case.get("confirm") and not case.get("negated")
    assert got.executable is commanded
    if got.intent is Intent.unclear:
        assert not got.executable
