"""The work of comparing globs pair by pair, counted against a budget; and a request's work
matching its names against globs, counted against its evaluation budget (:class:`MatchWork`).

Three places compare many globs with many names or globs: the delegation check
(:func:`~ledger.core.authority.not_held`), the note on policies that govern the same actions
(:func:`~ledger.core.governing.overlapping_governs`) and the note on what a promoted version no
longer governs (``ledger.core.lifecycle.answers``). A pair's cost is not a constant: a glob's
regex tries each literal run after a ``*`` at every position of the name, up to ~1 ns for each
character of the glob times each of the name (a red team's pair of ~500 and ~1,000 characters
took 0.5 ms, an ordinary pair ~1 us), and compiling a glob costs ~2-8 us a character. So a
budget counts that work, in ~nanoseconds, not pairs: ordinary policies and grants stay far
inside it, and crafted long globs stop after bounded work.
"""

from __future__ import annotations

import functools
import re
from typing import Final

from ledger.core.cel import Meter

__all__ = ["MATCH_FREE", "GlobWork", "MatchWork", "fixed_start"]

_PAIR_NS: Final = 500
"""A pair looked at: the loop and the cheap tests that rule most pairs out (measured ~0.2-0.5
us in CPython)."""
_MATCH_NS: Final = 1_000
"""A match's call, before its characters."""
_COMPILE_NS: Final = 4_000
"""A glob's character, compiled (the first time one budget meets the glob)."""
_ROW_NS: Final = 500
"""A row of :func:`~ledger.core.globs.globs_share`'s walk (one character of the shorter glob),
before its bits: measured ~0.2 us a row of 256 bits, ~0.6 us of 4,096, up to twice that on a
busy host."""
_ROW_BITS_PER_NS: Final = 4
"""A row's bits (one per character of the longer glob) charged for each ns."""
_TOKENS_NS: Final = 1_000
"""A glob's character read into :func:`~ledger.core.globs.globs_share`'s tokens (the first
time one budget meets the glob; measured ~0.3 us)."""
_FIXED: Final = re.compile(r"[^*?\[]*")


@functools.lru_cache(maxsize=8192)
def fixed_start(glob: str) -> str:
    """The text before ``glob``'s first wildcard (all of a name): every name it matches begins
    with it (so do the names of each glob it covers or matches), a cheap test that rules most
    pairs out. Cached: the comparisons ask it of one pattern once per pair."""
    match = _FIXED.match(glob)
    assert match is not None  # the pattern matches the empty text
    return match.group()


class GlobWork:
    """What is left of a budget of glob work, in ~nanoseconds. Each method charges some work
    and says whether the budget still holds; once it does not, the caller stops and says so
    (a note that it is incomplete, a check that it could not prove what it was asked)."""

    __slots__ = ("_compiled", "_tokenized", "left")

    def __init__(self, budget: int) -> None:
        self.left = budget
        self._compiled: set[str] = set()
        self._tokenized: set[str] = set()

    @property
    def spent(self) -> bool:
        """Has the work gone past the budget?"""
        return self.left < 0

    def pairs(self, count: int) -> bool:
        """Charge looking at ``count`` pairs (the work before any match), charged a row at a
        time before it is looked at."""
        self.left -= count * _PAIR_NS
        return self.left >= 0

    def charge(self, units: int) -> bool:
        """Charge ``units`` of other work (~ns each), and say whether the budget still holds."""
        self.left -= units
        return self.left >= 0

    def match(self, glob: str, text: str) -> bool:
        """Charge matching ``text`` against ``glob``, and compiling ``glob`` the first time."""
        if glob not in self._compiled:
            self._compiled.add(glob)
            self.left -= len(glob) * _COMPILE_NS
        self.left -= _MATCH_NS + len(glob) * len(text)
        return self.left >= 0

    def overlap(self, a: str, b: str) -> bool:
        """Charge asking whether globs ``a`` and ``b`` share a name
        (:func:`~ledger.core.globs.globs_share`: a row of bits as long as the longer glob for
        each character of the shorter), and reading each into tokens the first time, when the
        budget holds it; else charge nothing and say False, and the caller answers without
        the walk (:func:`~ledger.core.governing.governs_may_share`: two globs whose fixed beginnings
        agree may share), so asking never leaves a look incomplete. Two ``governs`` globs of 256
        characters (``glob_chars``) cost ~0.05 ms, are charged ~0.65 ms the first time and
        ~0.15 ms after."""
        short, long = sorted((len(a), len(b)))
        cost = _MATCH_NS + short * (_ROW_NS + long // _ROW_BITS_PER_NS)
        fresh = [glob for glob in dict.fromkeys((a, b)) if glob not in self._tokenized]
        cost += sum(len(glob) for glob in fresh) * _TOKENS_NS
        if cost > self.left:
            return False
        self._tokenized.update(fresh)
        self.left -= cost
        return True


MATCH_FREE: Final = 1_024
"""Units of matching one request (one item of a pre-evaluation) does before any is charged:
a principal's few dozen ordinary grants and an ordinary ledger's ``governs`` never touch the
budget (~0.1 ms at most; 100 grants of two short patterns measured ~25 µs)."""


class MatchWork:
    """A request's work matching its names against patterns (its principal's grants, then the
    deployed policies' ``governs``), in units of its evaluation budget
    (:func:`~ledger.core.globs.match_units`). Up to :data:`MATCH_FREE` of it is free; past
    that all of it is charged to ``meter`` (made on first use, of ``limit`` units, unless
    given), which the request's grant conditions share.

    A pre-evaluation's items share one: each item has the allowance again (:meth:`next_item`),
    the meter is the items' one budget, and the ``governs`` of an action is charged once for
    all its items (:meth:`charge_lookup`)."""

    __slots__ = ("_free", "_looked_up", "_meter", "limit")

    def __init__(self, meter: Meter | None, limit: int) -> None:
        self._meter = meter
        self.limit = limit
        self._free = MATCH_FREE
        self._looked_up: str | set[str] | None = None  # the actions looked up

    @property
    def meter(self) -> Meter:
        """The request's budget (made now if it was not given nor needed before)."""
        if self._meter is None:
            self._meter = Meter(self.limit)
        return self._meter

    @property
    def metered(self) -> Meter | None:
        """The budget if one was given or made, else ``None``."""
        return self._meter

    def next_item(self) -> None:
        """A pre-evaluation's next item: the allowance again, the budget as it is."""
        self._free = MATCH_FREE

    def charge(self, units: int) -> bool:
        """Charge ``units`` of matching, and say whether the budget still holds. A spent shared
        budget stops only the item whose own matching goes past its allowance."""
        if self._free >= 0:
            self._free -= units
            if self._free >= 0:
                return True
            units = MATCH_FREE - self._free  # past the allowance: all of it counts
        meter = self.meter
        meter.left -= units
        return meter.left >= 0

    def charge_lookup(self, action: str, units: int) -> bool:
        """Charge finding which policy governs ``action`` (``units``), once per action for
        the whole request (a pre-evaluation's items asking the same action pay it once)."""
        looked_up = self._looked_up
        if looked_up is None:  # the request's one action (a set only for a pre-evaluation's
            self._looked_up = action  # several: building one cost every request ~0.3 µs)
        elif isinstance(looked_up, str):
            if looked_up == action:
                return True
            self._looked_up = {looked_up, action}
        elif action in looked_up:
            return True
        else:
            looked_up.add(action)
        return self.charge(units)
