"""The redactor: known secret values and secret-shaped strings are masked, also when a short text is remembered."""

from __future__ import annotations

from oncall.redaction import MASK, REMEMBERED_TEXT_CHARS, REMEMBERED_TEXTS, Redacted, Redactor

SECRET = "s3cr3t-value-of-the-twilio-token"
OPENAI_SHAPED = "sk-proj-" + "A" * 40


def test_short_texts_are_masked_every_time_they_come_back() -> None:
    redact = Redactor([SECRET])
    text = f"token {SECRET} and {OPENAI_SHAPED}"
    assert len(text) <= REMEMBERED_TEXT_CHARS
    first, again = redact(text), redact(text)
    assert first == again == f"token {MASK} and {MASK}"
    assert isinstance(again, Redacted)
    assert redact("agent-1") == "agent-1"


def test_long_texts_are_masked_without_being_remembered() -> None:
    redact = Redactor([SECRET])
    text = "x" * REMEMBERED_TEXT_CHARS + f" {SECRET} {OPENAI_SHAPED}"
    assert redact(text) == "x" * REMEMBERED_TEXT_CHARS + f" {MASK} {MASK}"
    assert redact._short.cache_info().currsize == 0


def test_the_remembered_texts_are_bounded() -> None:
    redact = Redactor([SECRET])
    for n in range(REMEMBERED_TEXTS + 100):
        assert redact(f"group {n} {SECRET}") == f"group {n} {MASK}"
    assert redact._short.cache_info().currsize == REMEMBERED_TEXTS
    assert redact(f"group 0 {SECRET}") == f"group 0 {MASK}"  # forgotten, masked again
