"""The read of what a group answered since its last commit (:mod:`ledger.kafka.dedup`) fails
rather than answer in part: a partial answer would let an evaluator decide the rest again."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import pytest

import ledger.kafka.dedup as dedup
from ledger.errors import KafkaUnavailable
from ledger.settings import TopicNames

TP = namedtuple("TP", "topic partition")
Record = namedtuple("Record", "key timestamp")
Committed = namedtuple("Committed", "offset metadata")


class _Consumer:
    """A kafka-python consumer over one request partition (3 records, none committed) and one
    decisions partition holding ``decided`` keys, of which it hands out ``served`` at most."""

    def __init__(self, *, request_answers: bool, decided: int, served: int) -> None:
        self.request_answers, self.served, self.decided = request_answers, served, decided
        self.positions: dict[Any, int] = {}

    def end_offsets(self, parts: list[Any]) -> dict[Any, int]:
        return {tp: (3 if tp.topic == "requests" else self.decided) for tp in parts}

    def committed(self, tp: Any, metadata: bool = False) -> Any:
        return None

    def assign(self, parts: list[Any]) -> None:
        self.assigned = list(parts)

    def seek(self, tp: Any, offset: int) -> None:
        self.positions[tp] = offset

    def offsets_for_times(self, times: dict[Any, int]) -> dict[Any, Any]:
        return {tp: Committed(0, None) for tp in times}

    def position(self, tp: Any) -> int:
        return self.positions.get(tp, 0)

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Any]]:
        tp = self.assigned[0]
        if tp.topic == "requests":
            return {tp: [Record(b"r0", 1_000)]} if self.request_answers else {}
        start = self.positions.get(tp, 0)
        if start >= self.served:
            return {}
        self.positions[tp] = self.served
        return {tp: [Record(f"d{i}".encode(), 1_000) for i in range(start, self.served)]}

    def close(self) -> None:
        pass


def _read(monkeypatch: pytest.MonkeyPatch, consumer: _Consumer) -> set[bytes]:
    topics = TopicNames(prefix="")
    names = {topics.evaluation_requests: "requests", topics.decisions: "decisions"}
    monkeypatch.setattr(dedup, "make_consumer", lambda *a, **k: consumer)
    monkeypatch.setattr(
        dedup, "topic_partitions", lambda c, topic, bootstrap=None: [TP(names[topic], 0)]
    )
    monkeypatch.setattr(dedup, "READ_PATIENCE", 0.05)
    return dedup.answered_since_last_commit("127.0.0.1:1", topics, "g")


def test_a_whole_read_returns_every_id(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = _Consumer(request_answers=True, decided=5, served=5)
    assert _read(monkeypatch, consumer) == {f"d{i}".encode() for i in range(5)}


def test_a_read_cut_short_fails_rather_than_answer_in_part(monkeypatch: pytest.MonkeyPatch) -> None:
    # A review: a decisions read that went quiet for a second returned the ids it had, as if
    # they were all, and the partition was answered.
    consumer = _Consumer(request_answers=True, decided=5, served=3)
    with pytest.raises(KafkaUnavailable, match=r"decisions partitions \[0\] were not read"):
        _read(monkeypatch, consumer)


def test_a_request_partition_that_does_not_answer_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    # ... and an uncommitted request partition whose first record did not come within a poll
    # counted as one with nothing to read.
    consumer = _Consumer(request_answers=False, decided=5, served=5)
    with pytest.raises(KafkaUnavailable, match=r"request partition 0 did not answer"):
        _read(monkeypatch, consumer)
