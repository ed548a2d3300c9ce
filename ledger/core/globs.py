"""Globs, the one pattern language of names: grants' actions and resources (``refund.*``,
``account:*``) and policies' ``governs``. Shell-style (``*``, ``?``, ``[…]``), matched against
the whole name, as :func:`fnmatch.fnmatchcase` would, compiled once per process.

Names are matched on every request, and the patterns come from whoever may issue a grant or
propose a policy, so matching must not cost what a pattern's author chooses. A backtracking
regular expression does (a red team held an evaluator 110 ms a request with one grant of long
patterns, and a glob of 500 ``*`` took 3 s to compile). So a name is looked up, a glob of
``*`` and text only is matched with string searches (the first part must begin the name, the
last end it, and each part between is found, leftmost, after the one before, which is all
``*`` needs: no backtracking, at most the name's length times the pattern's, in C), and only a
glob holding ``?`` or ``[…]`` is a regular expression, fnmatch's own;
:data:`ledger.core.limits.Limits` bounds them where patterns are written (``glob_wildcards``,
``glob_chars``, ``glob_class_chars``).
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable
from typing import Final, Literal

__all__ = [
    "GlobPlace",
    "Globs",
    "compile_globs",
    "glob_matches",
    "glob_problems",
    "is_pattern",
    "wildcards",
]

_GLOB_CHARS: Final = frozenset("*?[")

_Stars = tuple[str, tuple[str, ...], str, int]
"""A glob of ``*`` and text: its first part, the parts between, its last part, and the
shortest name it matches."""


class Globs:
    """Whether a name matches any of some globs (none: no name does): :meth:`matches`."""

    __slots__ = ("_names", "_prefixes", "_regex", "_stars", "patterns", "searched")

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.patterns = patterns
        # The characters of globs a name is matched against: matching one costs at most about
        # the name's length times this (a name is looked up); the evaluation budget counts it.
        self.searched = sum(len(p) for p in patterns if is_pattern(p))
        self._names = frozenset(p for p in patterns if not is_pattern(p))
        prefixes: list[str] = []  # `refund.*`, the common case: one startswith for them all
        stars: list[_Stars] = []
        rest: list[str] = []
        for p in dict.fromkeys(patterns):
            if not is_pattern(p):
                continue
            if "?" in p or "[" in p:
                rest.append(p)
                continue
            first, *between, last = p.split("*")
            middle = tuple(part for part in between if part)
            if not middle and not last:
                prefixes.append(first)
                continue
            stars.append((first, middle, last, len(first) + len(last) + sum(map(len, middle))))
        self._prefixes = tuple(prefixes) if prefixes else None
        self._stars = tuple(stars)
        self._regex = (
            re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in rest)) if rest else None
        )

    def matches(self, name: str) -> bool:
        """Does ``name`` match one of the globs?"""
        if name in self._names:
            return True
        if self._prefixes is not None and name.startswith(self._prefixes):
            return True
        for first, middle, last, shortest in self._stars:
            if len(name) < shortest or not name.startswith(first) or not name.endswith(last):
                continue
            at, end = len(first), len(name) - len(last)
            for part in middle:
                found = name.find(part, at, end)
                if found < 0:
                    break
                at = found + len(part)
            else:
                return True
        return self._regex is not None and self._regex.match(name) is not None

    def __reduce__(self) -> tuple[object, tuple[tuple[str, ...]]]:
        return compile_globs, (self.patterns,)

    def __repr__(self) -> str:
        return f"Globs({self.patterns!r})"


@functools.lru_cache(maxsize=16_384)
def _compiled(patterns: tuple[str, ...]) -> Globs:
    # Cached: many grants share their patterns, a state read whole builds every grant, and the
    # governance index is rebuilt at every change (recompiling each time stalled evaluators).
    return Globs(patterns)


def compile_globs(patterns: Iterable[str]) -> Globs:
    """What says whether a name matches any of ``patterns`` (none: no name matches)."""
    return _compiled(tuple(patterns))


def glob_matches(pattern: str, value: str) -> bool:
    """Does ``value`` match the glob ``pattern`` (``refund.*``), as grants and ``governs`` match?"""
    return _compiled((pattern,)).matches(value)


def is_pattern(text: str) -> bool:
    """Is ``text`` a glob rather than one name (it holds ``*``, ``?`` or ``[``)?"""
    return not _GLOB_CHARS.isdisjoint(text)


def wildcards(pattern: str) -> int:
    """How many wildcards ``pattern`` holds (each ``*``, ``?`` and ``[``), for the limits."""
    return pattern.count("*") + pattern.count("?") + pattern.count("[")


GlobPlace = Literal["governs", "grant action", "grant resource"]
"""Where a pattern is written: what its limit messages may advise (a ``governs`` entry takes
no ``[…]`` and names no resource; a grant's pattern is authority, which advice must not widen)."""


def glob_problems(
    pattern: str,
    *,
    place: GlobPlace,
    most_wildcards: int,
    longest_glob: int,
    longest_class_glob: int,
) -> tuple[str, ...]:
    """Every reason ``pattern`` may not be written at ``place`` (limits ``glob_wildcards``,
    ``glob_chars``, ``glob_class_chars``, and a class read the shell's or a regex's way), none
    when it may: what matching it may cost every request is bounded where it is written, and
    all of a pattern's problems are told at once, so that one edit fixes them."""
    if place == "governs":  # no classes there, and no resource
        wild, classed, names = "* ?", "?", "actions"
    else:
        wild, classed = "* ? [ ]", "? or [...]"
        names = "actions" if place == "grant action" else "resources"
    problems = []
    count = wildcards(pattern)
    if count > most_wildcards:
        problems.append(
            f"{count:,} wildcards in one pattern; at most {most_wildcards} (glob_wildcards): "
            f"use fewer {wild}"
        )
    if count and len(pattern) > longest_glob:
        problems.append(
            f"{len(pattern):,} characters with wildcards; at most {longest_glob} (glob_chars): "
            f"shorten the pattern, or list exact {names}"
        )
    if ("?" in pattern or "[" in pattern) and len(pattern) > longest_class_glob:
        problems.append(
            f"{len(pattern):,} characters with {classed}; at most "
            f"{longest_class_glob} (glob_class_chars): shorten the fixed part, or list exact "
            f"{names}"
        )
    if _caret_class(pattern):
        problems.append("[^…] matches ^ itself here; write [!…] to match any character but those")
    return tuple(problems)


def _caret_class(pattern: str) -> bool:
    """Does ``pattern`` hold a class whose first character is ``^`` (``[^0-9]``)? fnmatch reads
    it as ``^`` or a digit, the inverse of what a shell's or a regex's reader means (``[!0-9]``
    negates): a grant of it hands on what its author meant to keep back. Classes end as
    :func:`fnmatch.translate` ends them (an unclosed ``[`` is a literal)."""
    at = pattern.find("[")
    while at >= 0:
        start = skip = at + 1
        if pattern[skip : skip + 1] == "!":
            skip += 1
        if pattern[skip : skip + 1] == "]":
            skip += 1  # a ] first is one of the class's characters
        end = pattern.find("]", skip)
        if end < 0:
            return False  # an unclosed [: a literal, and so is each one after it
        if pattern[start : start + 1] == "^":
            return True
        at = pattern.find("[", end + 1)
    return False
