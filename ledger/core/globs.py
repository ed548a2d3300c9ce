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

Whether two globs can match one name (:func:`globs_share`: may two ``governs`` entries share an
action?) is decided exactly, by a walk over pairs of positions in the two patterns, never by
trying names.
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
    "globs_share",
    "is_pattern",
    "match_units",
    "wildcards",
]

_GLOB_CHARS: Final = frozenset("*?[")

_Stars = tuple[str, tuple[str, ...], str, int]
"""A glob of ``*`` and text: its first part, the parts between, its last part, and the
shortest name it matches."""


_CALL_UNITS: Final = 1
"""A match's call, its name looked up among the exact names and its prefixes tried (C code)."""
_PATTERN_UNITS: Final = 4
"""Each glob tried on its own (one holding ``*`` inside or at its start, ``?`` or ``[…]``; each
``governs`` glob): measured ~0.1 µs against a name shorter than the glob, ~0.45 µs against a
30-character name it is searched in (128,000 such globs took 58 ms), about twice that on a
host with 3-4 runnable processes a core."""
_SEARCH_CHARS_PER_UNIT: Final = 256
"""Characters of name times characters of glob per unit (a red team measured ~20 ms for 67
million, 256 patterns of 256 characters against a 1,024-character action: ~0.3 ns each)."""


def match_units(tried: int, searched: int, name_chars: int) -> int:
    """Units of the evaluation budget (:class:`~ledger.core.cel.Meter`, ~0.1 µs each at most)
    that matching a name of ``name_chars`` characters against globs may cost: a call, each of
    the ``tried`` globs tried one by one, and the name's length times the ``searched``
    characters of the globs. The one rule for what matching costs a request, for grants'
    patterns and policies' ``governs`` alike."""
    return _CALL_UNITS + tried * _PATTERN_UNITS + name_chars * searched // _SEARCH_CHARS_PER_UNIT


class Globs:
    """Whether a name matches any of some globs (none: no name does): :meth:`matches`."""

    __slots__ = ("_names", "_prefixes", "_regex", "_stars", "patterns", "searched", "tried")

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
        self.tried = len(stars) + len(rest)  # one by one: not looked up, nor the prefix test

    def units(self, name: str) -> int:
        """What matching ``name`` against these may cost, in units of the evaluation budget
        (:func:`match_units`)."""
        return match_units(self.tried, self.searched, len(name))

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
    negates): a grant of it hands on what its author meant to keep back."""
    at = pattern.find("[")
    while at >= 0:
        end = _class_end(pattern, at)
        if end < 0:
            return False  # an unclosed [: a literal, and so is each one after it
        if pattern[at + 1 : at + 2] == "^":
            return True
        at = pattern.find("[", end)
    return False


def _class_end(pattern: str, at: int) -> int:
    """Where the class that ``pattern[at]`` (a ``[``) opens ends (the index after its ``]``), or
    -1 when it is not a class but a literal ``[``: as :func:`fnmatch.translate` reads it (a
    ``!`` first negates, a ``]`` first, after it, is one of the class's characters)."""
    skip = at + 1
    if pattern[skip : skip + 1] == "!":
        skip += 1
    if pattern[skip : skip + 1] == "]":
        skip += 1
    end = pattern.find("]", skip)
    return end + 1 if end >= 0 else -1


@functools.lru_cache(maxsize=8192)
def _tokens(pattern: str) -> tuple[str, ...]:
    """``pattern`` as what each matches of a name: ``*`` (a run of ``*``, which matches what one
    does), ``?``, a class's text (``[!0-9]``), or one literal character (``*`` and ``?`` are
    never literals outside a class, and an unclosed ``[`` is one)."""
    tokens: list[str] = []
    at, closed = 0, True
    while at < len(pattern):
        char = pattern[at]
        end = _class_end(pattern, at) if char == "[" and closed else -1
        if end >= 0:
            tokens.append(pattern[at:end])
            at = end
            continue
        # No ] follows an unclosed [, so each [ after it is a literal too: not looked for again.
        closed = closed and char != "["
        if char != "*" or not tokens or tokens[-1] != "*":
            tokens.append(char)
        at += 1
    return tuple(tokens)


@functools.lru_cache(maxsize=4096)
def _class_regex(text: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(text))


def _meet(x: str, y: str) -> bool:
    """Does some one character match both tokens ``x`` and ``y`` (neither ``*``)? A class's
    characters are ranges whose ends it writes (fnmatch escapes nothing else), negated or not,
    so where two classes meet, one of them begins a shared run: the character ``\\x00``, one
    written in either, or one after such a character. Those are tried on fnmatch's own regexes."""
    if x == "?":
        x, y = y, x
    if y == "?":
        return len(x) == 1 or _meet(x, x)  # a literal, ``?``, or a class matching something
    if len(x) == 1 and len(y) == 1:
        return x == y
    if len(x) == 1 or len(y) == 1:
        char, text = (x, y) if len(x) == 1 else (y, x)
        return _class_regex(text).match(char) is not None
    rx, ry = _class_regex(x), _class_regex(y)
    written = {ord(c) for c in x + y}
    tried = {0} | written | {c + 1 for c in written if c < 0x10FFFF}
    return any(rx.match(chr(c)) and ry.match(chr(c)) for c in sorted(tried))


class _Columns:
    """A pattern as the columns of :func:`globs_share`'s walk: bit ``j`` of each mask stands for
    its ``j``-th token (bit ``len(tokens)``: its end)."""

    __slots__ = (
        "classes",
        "end",
        "every",
        "literals",
        "ones",
        "stars",
        "tokens",
        "void",
        "wild",
    )

    def __init__(self, pattern: str) -> None:
        self.tokens = _tokens(pattern)
        self.end = 1 << len(self.tokens)
        self.every = (self.end << 1) - 1
        self.stars = self.ones = self.wild = 0  # ``*``; any one character; ``?``
        self.literals: dict[str, int] = {}
        self.classes: list[tuple[int, str]] = []
        for j, token in enumerate(self.tokens):
            bit = 1 << j
            if token == "*":
                self.stars |= bit
                continue
            self.ones |= bit
            if token == "?":
                self.wild |= bit
            elif len(token) == 1:
                self.literals[token] = self.literals.get(token, 0) | bit
            else:
                self.classes.append((j, token))
        # A class that matches no character (``[z-a]``): the pattern matches no name.
        self.void = any(not _meet(text, text) for _, text in self.classes)

    def meeting(self, token: str) -> int:
        """The columns whose one-character token matches some character ``token`` (not
        ``*``) matches too."""
        if token == "?":
            return self.ones
        found = self.wild
        if len(token) == 1:
            found |= self.literals.get(token, 0)
        else:
            for char, bits in self.literals.items():
                if _meet(token, char):
                    found |= bits
        for j, text in self.classes:
            if _meet(token, text):
                found |= 1 << j
        return found


@functools.lru_cache(maxsize=8192)
def _columns(pattern: str) -> _Columns:
    return _Columns(pattern)


def globs_share(a: str, b: str) -> bool:
    """Does some name match both globs ``a`` and ``b`` (either may be a name)? Exact:
    ``crm.*.read`` and ``crm.*.write`` share nothing, nor do ``*.read`` and ``*.write``, nor
    ``a?`` and ``ab*c``; ``*.read`` and ``crm.*`` share ``crm.x.read``.

    A walk over the pairs of positions ``(i, j)`` in the two patterns' tokens: a name read so
    far can leave ``a`` at ``i`` and ``b`` at ``j``. From a pair, a ``*`` may match nothing (it
    moves on) or one character more (it stays while the other side's one-character token takes
    the character), and two one-character tokens may take one character they both match. Every
    move goes forward in ``i`` or ``j``, so the pairs are reached row by row of ``a``'s tokens,
    each row a bit mask over ``b``'s: no backtracking and no name tried, about ``len(a)`` steps
    of integer operations on ``len(b)`` bits (:meth:`GlobWork.overlap
    <ledger.core.globwork.GlobWork.overlap>` charges it)."""
    if a == b:
        return not _columns(a).void
    if len(a) > len(b):
        a, b = b, a  # fewer rows, each of more bits: the cheaper way round
    lines, cols = _columns(a), _columns(b)
    if lines.void or cols.void:
        return False
    rows, stars, every = lines.tokens, cols.stars, cols.every
    meetings: dict[str, int] = {}  # a token's columns, asked once per token
    reached = 1  # (0, 0): nothing read
    for token in (*rows, ""):  # "": past a's end
        # Along the row, by moves of b alone: past a star of b that matches nothing (no two
        # stars are adjacent); where a's token is a star, past any token (the star takes it).
        if token == "*":
            reached = every & -(reached & -reached)  # all from the first reached on
        else:
            reached |= (reached & stars) << 1
        # Down a row: a's star matches nothing more; or b's star takes a's one character, or
        # both take one.
        if token and token != "*":
            meets = meetings.get(token)
            if meets is None:
                meets = meetings[token] = cols.meeting(token)
            reached = (reached & stars) | ((reached & meets) << 1)
            if not reached:
                return False
    return bool(reached & cols.end)
