"""A small rich-text document (sections of paragraphs and bullet lists of inline runs) and its Markdown.

Inline runs carry their kind, so untrusted text (alert annotations, log messages, diagnoses) is
escaped once, here: it cannot become a link, an image, HTML or a heading in the Markdown, and it
becomes plain text nodes in ADF (``oncall.channels.jira.comments``). Links are only made from URLs
the agent built itself (its incident page, Jira's browse URL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

InlineKind = Literal["text", "code", "strong", "link"]
MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&])")
"""Characters that start inline markup anywhere in a line (GFM adds ``~`` strikethrough and ``|`` tables)."""
BLOCK_START = re.compile(r"^(\d{1,9})([.)])|^([-+=#>])")
"""What turns the start of a line into a list item, heading, block quote or setext underline (CommonMark 4-5)."""


@dataclass(frozen=True)
class Inline:
    """A run of inline content: ``text`` (escaped), ``code`` (a code span), ``strong``, or ``link``
    (``value`` is the URL and its text)."""

    kind: InlineKind
    value: str


def text(value: str) -> Inline:
    """Plain (untrusted-safe) text; whitespace runs and newlines become one space."""
    return Inline("text", re.sub(r"\s+", " ", value))


def code(value: str) -> Inline:
    """A code span (file:line, PromQL, a log line)."""
    return Inline("code", " ".join(value.split()))


def strong(value: str) -> Inline:
    """Bold text."""
    return Inline("strong", " ".join(value.split()))


def link(url: str) -> Inline:
    """A link to ``url`` (only URLs the agent built)."""
    return Inline("link", url)


Runs = list[Inline]


@dataclass
class Section:
    """A titled section: ``paragraphs`` then ``bullets``, each a list of inline runs."""

    title: str
    paragraphs: list[Runs] = field(default_factory=list)
    bullets: list[Runs] = field(default_factory=list)


@dataclass
class Document:
    """A titled document of sections."""

    title: str
    sections: list[Section] = field(default_factory=list)


def escape(value: str) -> str:
    """Markdown text with every character that could start markup backslash-escaped (CommonMark
    backslash escapes: any ASCII punctuation may be escaped)."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", value)


def code_span(value: str) -> str:
    """A CommonMark code span holding ``value``: fenced by one backtick more than its longest run."""
    longest = max((len(run) for run in re.findall(r"`+", value)), default=0)
    fence = "`" * (longest + 1)
    padded = f" {value} " if value.startswith("`") or value.endswith("`") or longest else value
    return f"{fence}{padded}{fence}"


def inline_markdown(runs: Runs) -> str:
    """The Markdown of inline runs (empty runs skipped)."""
    parts = []
    for run in runs:
        if not run.value:
            continue
        if run.kind == "code":
            parts.append(code_span(run.value))
        elif run.kind == "strong":
            parts.append(f"**{escape(run.value)}**")
        elif run.kind == "link":
            parts.append(f"<{run.value}>" if re.fullmatch(r"https?://[^\s<>]+", run.value) else escape(run.value))
        else:
            parts.append(escape(run.value))
    return "".join(parts)


def block_markdown(runs: Runs) -> str:
    """``inline_markdown`` with a leading block marker (``-``, ``+``, ``1.``, ``#``, ``>``) escaped so it stays text."""
    line = inline_markdown(runs)
    return BLOCK_START.sub(lambda m: f"{m[1]}\\{m[2]}" if m[1] else f"\\{m[3]}", line, count=1)


def to_markdown(document: Document) -> str:
    """CommonMark: ``# title``, then ``## section`` with paragraphs and ``-`` bullet lists."""
    blocks = [f"# {escape(document.title)}"]  # after "# " a "#" is text
    for section in document.sections:
        blocks.append(f"## {escape(section.title)}")
        blocks += [block_markdown(runs) for runs in section.paragraphs if inline_markdown(runs)]
        bullets = [f"- {block_markdown(runs)}" for runs in section.bullets if inline_markdown(runs)]
        if bullets:
            blocks.append("\n".join(bullets))
    return "\n\n".join(blocks) + "\n"
