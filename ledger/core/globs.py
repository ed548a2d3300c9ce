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
from typing import Final

__all__ = ["Globs", "compile_globs", "glob_matches", "glob_problem", "is_pattern", "wildcards"]

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


def glob_problem(
    pattern: str, *, most_wildcards: int, longest_glob: int, longest_class_glob: int
) -> str | None:
    """Why ``pattern`` may not be written into a grant or a ``governs`` (limits
    ``glob_wildcards``, ``glob_chars``, ``glob_class_chars``), or ``None``: what matching it may
    cost every request is bounded where it is written."""
    count = wildcards(pattern)
    if count > most_wildcards:
        return (
            f"{count:,} wildcards in one pattern; at most {most_wildcards} (glob_wildcards): "
            "use fewer * ? [ ]"
        )
    if count and len(pattern) > longest_glob:
        return (
            f"a pattern with wildcards of {len(pattern):,} characters; at most {longest_glob} "
            "(glob_chars): name the action or resource, or use a shorter pattern"
        )
    if ("?" in pattern or "[" in pattern) and len(pattern) > longest_class_glob:
        return (
            f"a pattern with ? or [...] of {len(pattern):,} characters; at most "
            f"{longest_class_glob} (glob_class_chars): use * there, or a shorter pattern"
        )
    return None
