"""Globs, the one pattern language of names: grants' actions and resources (``refund.*``,
``account:*``) and policies' ``governs``. Shell-style (``*``, ``?``, ``[…]``), matched against
the whole name, as :func:`fnmatch.fnmatchcase` would, compiled once per process."""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable
from typing import Final

__all__ = ["compile_globs", "glob_matches", "is_pattern"]

_NEVER: Final = re.compile(r"(?!)")
_GLOB_CHARS: Final = frozenset("*?[")


@functools.lru_cache(maxsize=16_384)
def _compiled(patterns: tuple[str, ...]) -> re.Pattern[str]:
    # Cached: many grants share their patterns, a state read whole builds every grant, and the
    # governance index is rebuilt at every change (recompiling each time stalled evaluators).
    if not patterns:
        return _NEVER
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


def compile_globs(patterns: Iterable[str]) -> re.Pattern[str]:
    """One regex whose ``match`` says whether a name matches any of ``patterns`` (none: no
    name matches)."""
    return _compiled(tuple(patterns))


def glob_matches(pattern: str, value: str) -> bool:
    """Does ``value`` match the glob ``pattern`` (``refund.*``), as grants and ``governs`` match?"""
    return _compiled((pattern,)).match(value) is not None


def is_pattern(text: str) -> bool:
    """Is ``text`` a glob rather than one name (it holds ``*``, ``?`` or ``[``)?"""
    return not _GLOB_CHARS.isdisjoint(text)
