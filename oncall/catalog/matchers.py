"""Alertmanager-style label matchers: ``name="value"``, ``name!="value"``, ``name=~"regex"``, ``name!~"regex"``.

Syntax: Alertmanager docs, "Configuration - <matcher>": the value may be quoted (double quotes, with
``\\"`` escapes) or bare; regular expressions are fully anchored, as in Prometheus.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|([^"\s]*))\s*$')


@dataclass(frozen=True)
class Matcher:
    """One label matcher; ``op`` is ``=``, ``!=``, ``=~`` or ``!~``; a missing label matches as ``""``."""

    name: str
    op: str
    value: str

    def matches(self, labels: dict[str, str]) -> bool:
        """True when ``labels`` satisfy the matcher."""
        actual = labels.get(self.name, "")
        if self.op in ("=", "!="):
            return (actual == self.value) == (self.op == "=")
        return (re.fullmatch(self.value, actual) is not None) == (self.op == "=~")


@functools.lru_cache(maxsize=1024)
def parse_matcher(text: str) -> Matcher:
    """Parse ``text`` into a Matcher (cached: a catalog's few matchers are matched against every alert).

    Raises:
        ValueError: not a matcher, or an invalid regular expression.
    """
    found = _MATCHER.match(text)
    if found is None:
        raise ValueError(f'{text!r} is not a label matcher (expected e.g. service="inventory" or alertname=~"Api.*")')
    name, op, quoted, bare = found.groups()
    value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression in {text!r}: {exc}") from None
    return Matcher(name, op, value)


def distinct_cuts(label_sets: Iterable[dict[str, str]], names: Iterable[str]) -> list[dict[str, str]]:
    """The distinct label sets among ``label_sets`` each cut to the labels in ``names``: matchers naming only
    those labels match a cut exactly when they match the whole set (a missing label stays missing)."""
    kept = sorted(set(names))
    cuts = {tuple((name, labels[name]) for name in kept if name in labels) for labels in label_sets}
    return [dict(cut) for cut in cuts]
