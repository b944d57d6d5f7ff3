"""Policy errors: every problem in a policy file becomes a `Diagnostic` with a position.

Operators read these messages, not Python tracebacks, so each one names the file, line and column,
the text that is wrong, what would have been right, and, for a misspelled name, the nearest valid
one. The loader collects all the type errors of a file before raising, so one run of
``dlm policy check`` shows every mistake instead of one per edit.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem at one place in a policy file.

    ``text`` is the offending source text, ``expected`` a short phrase saying what would have been
    valid, ``suggestion`` the closest valid spelling when the text looks like a typo.
    """

    file: str
    line: int
    column: int
    message: str
    text: str = ""
    expected: str = ""
    suggestion: str = ""

    def __str__(self) -> str:
        out = f"{self.file}:{self.line}:{self.column}: {self.message}"
        if self.expected:
            out += f"; expected {self.expected}"
        if self.suggestion:
            out += f"; did you mean '{self.suggestion}'?"
        return out


class PolicyError(Exception):
    """A policy file that cannot be used; carries one or more diagnostics, sorted by position."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics: tuple[Diagnostic, ...] = tuple(
            sorted(diagnostics, key=lambda d: (d.file, d.line, d.column))
        )
        super().__init__("\n".join(str(d) for d in self.diagnostics))

    @property
    def first(self) -> Diagnostic:
        return self.diagnostics[0]


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """The candidate closest to ``word`` ('' when none is close): a case-insensitive match first,
    then difflib's ratio, which catches dropped, doubled and swapped letters."""
    options = [c for c in candidates if c]
    lowered = word.lower()
    for option in options:
        if option.lower() == lowered:
            return option
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(lowered, [o.lower() for o in options], n=1, cutoff=0.6)
        if close:
            return next(o for o in options if o.lower() == close[0])
    return close[0] if close else ""


def one_of(names: Iterable[str], quote: bool = True, limit: int = 12) -> str:
    """'one of a, b, c' for an expected-list, shortened past ``limit`` names."""
    items = [f"'{n}'" if quote else n for n in names]
    if len(items) == 1:
        return items[0]
    if len(items) > limit:
        items = [*items[:limit], f"... ({len(items) - limit} more)"]
    return "one of " + ", ".join(items)
