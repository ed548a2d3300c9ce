"""Replay: the governance state at any instant, rebuilt from the ledger with the core's ``fold``.

The same pure fold the processors use, so "which policy was active at T" is answered by the
code that decided then. Governance events are appended by one writer in time order, so the
events up to T (by ``occurred_at``) are a prefix of each governance topic.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from ledger.codec import Codec
from ledger.core.events import GovernanceEvent
from ledger.core.state import EMPTY_STATE, LedgerState, replay, with_positions
from ledger.kafka_io import read_governance
from ledger.settings import TopicNames

__all__ = ["HistoryEntry", "load_history", "state_at"]


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    position_key: str
    offset: int
    event: GovernanceEvent


def load_history(
    bootstrap: str, topics: TopicNames, *, codec: Codec | None = None
) -> list[HistoryEntry]:
    """Every governance event in the ledger, in log order."""
    return [HistoryEntry(k, o, e) for k, o, e in read_governance(bootstrap, topics, codec=codec)]


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
