"""Governance history and the state at an instant: the pure half of replay.

A history is the governance events in log order, each with where it was read (its position key
``"topic/partition"`` and offset), from Kafka or from an export. Governance events are appended
by one writer in time order, so the events up to T (by ``occurred_at``) are a prefix of each
governance topic; :func:`state_at` folds that prefix with the same pure fold the processors use,
so "which policy was active at T" is answered by the code that decided then.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from ledger.core.events import GovernanceEvent
from ledger.core.state import EMPTY_STATE, LedgerState, replay, with_positions

__all__ = ["HistoryEntry", "state_at", "state_at_position"]


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
    position: dict[str, int] = {}

    def selected() -> Iterator[GovernanceEvent]:
        for entry in history:
            if at is not None and entry.event.occurred_at > at:
                continue
            position[entry.position_key] = entry.offset
            yield entry.event

    state = replay(selected(), EMPTY_STATE)
    return with_positions(state, position)


def state_at_position(history: Iterable[HistoryEntry], position: Mapping[str, int]) -> LedgerState:
    """The state a decision recorded at governance ``position`` was made against: every entry
    at or before its key's offset (keys absent from ``position`` contribute nothing)."""
    applied: dict[str, int] = {}

    def selected() -> Iterator[GovernanceEvent]:
        for entry in history:
            last = position.get(entry.position_key)
            if last is None or entry.offset > last:
                continue
            applied[entry.position_key] = entry.offset
            yield entry.event

    state = replay(selected(), EMPTY_STATE)
    return with_positions(state, applied)
