"""Governance history and the state at an instant: the pure half of replay.

A history is the governance events in log order, each with where it was read (its position key
``"topic/partition"`` and offset), from Kafka or from an export. Governance events are appended
by one writer in time order, so the events up to T (by ``occurred_at``) are a prefix of each
governance topic; :func:`state_at` folds that prefix with the same pure fold the processors use,
so "which policy was active at T" is answered by the code that decided then.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from ledger.core.events import POLICY_EVENT_TYPES, GovernanceEvent
from ledger.core.state import EMPTY_STATE, LedgerState, aggregate_of, replay, with_positions

__all__ = [
    "HistoryEntry",
    "OffsetGap",
    "PositionFolder",
    "log_gaps",
    "offset_gaps",
    "state_at",
    "state_at_position",
]


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One governance event and where it was read."""

    position_key: str
    offset: int
    event: GovernanceEvent


def state_at(history: Iterable[HistoryEntry], at: datetime | None = None) -> LedgerState:
    """Fold the history up to and including instant ``at`` (everything when ``None``).

    The state, positions included, equals folding each entry with ``fold`` and recording it
    with ``with_position``; the core's batch :func:`~ledger.core.state.replay` does the folding,
    and each key's last applied offset is recorded once at the end.
    """
    if at is None:
        entries = history if isinstance(history, (list, tuple)) else list(history)
    else:
        entries = [entry for entry in history if entry.event.occurred_at <= at]
    return _replayed(entries)


def state_at_position(history: Iterable[HistoryEntry], position: Mapping[str, int]) -> LedgerState:
    """The state a decision recorded at governance ``position`` was made against: every entry
    at or before its key's offset (keys absent from ``position`` contribute nothing)."""
    return _replayed(
        [entry for entry in history if entry.offset <= position.get(entry.position_key, -1)]
    )


class PositionFolder:
    """The states at many governance positions of one history (a batch of decisions to
    reproduce), each equal to :func:`state_at_position`'s, folding the history once when the
    positions come in order (each at or after the one before on every key).

    From one position to the next only the entries between them are folded onto the state
    (:class:`~ledger.core.state.Replay` from it): the same state as folding the prefix, because
    the fold changes an event's own aggregate only and each aggregate's events come from one
    key (its Kafka partition) in offset order, so entries of different keys commute. A history
    where they do not (an aggregate on two keys, a key's offsets out of order) has every state
    folded from the beginning, as does a position behind the one before on some key
    (:attr:`full_folds` counts them): sort the positions first (:meth:`order`).
    """

    __slots__ = ("_by_key", "_entries", "_exact", "_next", "_state", "full_folds")

    def __init__(self, history: Iterable[HistoryEntry]) -> None:
        self._entries = list(history)
        self._by_key: dict[str, list[HistoryEntry]] = {}
        keys_of: dict[tuple[str, str], str] = {}
        exact = False
        for entry in self._entries:
            same_key = self._by_key.setdefault(entry.position_key, [])
            if same_key and same_key[-1].offset > entry.offset:
                exact = True  # a key's entries out of offset order
            same_key.append(entry)
            aggregate = (_kind(entry.event), aggregate_of(entry.event))
            if keys_of.setdefault(aggregate, entry.position_key) != entry.position_key:
                exact = True  # one aggregate on two keys: their order matters
        self._exact = exact
        self._next = dict.fromkeys(self._by_key, 0)
        self._state = EMPTY_STATE
        self.full_folds = 0
        """How many states were folded from the beginning (the first is one)."""

    @staticmethod
    def order(position: Mapping[str, int]) -> tuple[int, tuple[tuple[str, int], ...]]:
        """A sort key putting a position after every position at or before it on each key."""
        return sum(offset + 1 for offset in position.values()), tuple(sorted(position.items()))

    def state_at(self, position: Mapping[str, int]) -> LedgerState:
        """The state at governance ``position``: :func:`state_at_position` of the history."""
        if self._exact:
            self.full_folds += 1
            return state_at_position(self._entries, position)
        behind = any(
            self._next[key] and entries[self._next[key] - 1].offset > position.get(key, -1)
            for key, entries in self._by_key.items()
        )
        if behind or not self.full_folds:
            self._state, self._next = EMPTY_STATE, dict.fromkeys(self._by_key, 0)
            self.full_folds += 1
        new: list[HistoryEntry] = []
        for key, entries in self._by_key.items():
            start = end = self._next[key]
            limit = position.get(key, -1)
            while end < len(entries) and entries[end].offset <= limit:
                end += 1
            new.extend(entries[start:end])
            self._next[key] = end
        if new:
            state = replay([entry.event for entry in new], self._state)
            self._state = with_positions(state, {entry.position_key: entry.offset for entry in new})
        return self._state


def _kind(event: GovernanceEvent) -> str:
    """Which map of the state an event's aggregate lives in (a policy and a principal may share
    a name): the fold's own split."""
    return "policy" if isinstance(event, POLICY_EVENT_TYPES) else "principal"


def _replayed(entries: Sequence[HistoryEntry]) -> LedgerState:
    """The selected ``entries`` folded, and each key's last offset among them recorded.

    Two comprehensions over the list, then the fold over a list of events: a generator
    selecting and recording as the fold pulled each event (a frame resumed per event) cost a
    1M-entry replay ~0.3 s more, a tenth of the whole (``benchmarks.replay``).
    """
    state = replay([entry.event for entry in entries], EMPTY_STATE)
    return with_positions(state, {entry.position_key: entry.offset for entry in entries})


@dataclass(frozen=True, slots=True)
class OffsetGap:
    """Offsets ``first`` to ``last`` of a governance partition are missing; or, when
    ``repeated``, offset ``first`` (= ``last``) appears more than once. ``at_end``: the missing
    offsets are the partition's newest (before the end offset given, after every one seen),
    the only gap a log read less far leaves; any other has records after it."""

    first: int
    last: int
    repeated: bool = False
    at_end: bool = False


def log_gaps(seen: Iterable[int], end: int) -> list[OffsetGap]:
    """The gaps in one governance partition's offsets ``seen``, which must run 0, 1, …
    ``end`` - 1, each once: governance topics keep every record and are written without
    transactions, so an honest log has no gap. The one rule ``actor verify``, ``audit verify``
    and ``replay --decision`` hold a governance log to."""
    gaps = []
    previous = -1
    for offset in sorted(seen):
        if offset == previous:
            gaps.append(OffsetGap(offset, offset, repeated=True))
        elif offset > previous + 1:
            gaps.append(OffsetGap(previous + 1, offset - 1))
        previous = max(previous, offset)
    if previous + 1 < end:
        gaps.append(OffsetGap(previous + 1, end - 1, at_end=True))
    return gaps


def offset_gaps(
    topic: str, partition: int, seen: Iterable[int], end: int, why_end: str
) -> list[str]:
    """What is wrong with one governance partition's offsets (:func:`log_gaps`), one line
    each. ``why_end`` says where ``end`` comes from."""
    problems = []
    for gap in log_gaps(seen, end):
        where = f"{topic} partition {partition}"
        if gap.repeated:
            problems.append(f"{where}: offset {gap.first} appears twice")
        else:
            because = f" ({why_end})" if gap.at_end else ""
            problems.append(f"{where}: offsets {gap.first}-{gap.last} are missing{because}")
    return problems
