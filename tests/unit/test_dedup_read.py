"""The read of what a group answered since its last commit (:mod:`ledger.kafka.dedup`) fails
rather than answer in part: a partial answer would let an evaluator decide the rest again. And
the topic reader under it (:func:`ledger.kafka.reading.read_raw`) on librdkafka's answers."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

import ledger.kafka.dedup as dedup
import ledger.kafka.reading as reading
from ledger.errors import KafkaUnavailable
from ledger.settings import TopicNames

TOPICS = TopicNames(prefix="")
REQUESTS, DECISIONS = TOPICS.evaluation_requests, TOPICS.decisions


class _Message:
    """A consumed librdkafka message (a record, or an error at an offset)."""

    def __init__(
        self, topic: str, offset: int, key: bytes | None, *, error: KafkaError | None = None
    ) -> None:
        self._topic, self._offset, self._key, self._error = topic, offset, key, error

    def error(self) -> KafkaError | None:
        return self._error

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_000 + self._offset)

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes:
        return b"v%d" % self._offset


class _Consumer:
    """A librdkafka consumer over one request partition (3 records, none committed, or
    ``committed`` with its metadata) and one decisions partition holding ``decided`` keys, of
    which it hands out ``served`` at most; the offsets in ``broken`` do not decompress."""

    def __init__(
        self,
        *,
        request_answers: bool = True,
        decided: int = 5,
        served: int = 5,
        committed: tuple[int, str | None] | None = None,
        broken: frozenset[int] = frozenset(),
    ) -> None:
        self.request_answers, self.decided, self.served = request_answers, decided, served
        self.commit, self.broken = committed, broken
        self.positions: dict[str, int] = {}
        self.read: list[str] = []

    def end(self, topic: str) -> int:
        return 3 if topic == REQUESTS else self.decided

    def committed(self, parts: list[Any], timeout: float = 0) -> list[Any]:
        offset, metadata = self.commit or (-1001, None)
        if metadata is None:
            return [TopicPartition(tp.topic, tp.partition, offset) for tp in parts]
        return [TopicPartition(tp.topic, tp.partition, offset, metadata) for tp in parts]

    def offsets_for_times(self, parts: list[Any], timeout: float = 0) -> list[Any]:
        return [TopicPartition(tp.topic, tp.partition, 0) for tp in parts]

    def assign(self, parts: list[Any]) -> None:
        self.positions = {tp.topic: tp.offset for tp in parts}
        self.read.extend(tp.topic for tp in parts)

    def seek(self, tp: Any) -> None:
        self.positions[tp.topic] = tp.offset

    def consume(self, num_messages: int = 1, timeout: float = 0) -> list[_Message]:
        out: list[_Message] = []
        for topic, at in self.positions.items():
            last = self.served if topic == DECISIONS else self.end(topic)
            if topic == REQUESTS and not self.request_answers:
                last = at
            while at < last and len(out) < num_messages:
                error = KafkaError(KafkaError._BAD_COMPRESSION) if at in self.broken else None
                out.append(_Message(topic, at, b"d%d" % at, error=error))
                at += 1
            self.positions[topic] = at
        return out

    def close(self) -> None:
        pass


@pytest.fixture
def patched(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setattr(dedup, "READ_PATIENCE", 0.05)
    monkeypatch.setattr(dedup, "rdkafka_partitions", lambda *a, **k: [0])
    monkeypatch.setattr(reading, "rdkafka_partitions", lambda *a, **k: [0])
    return monkeypatch


def _using(monkeypatch: pytest.MonkeyPatch, consumer: _Consumer) -> None:
    monkeypatch.setattr(dedup, "make_rdkafka_consumer", lambda *a, **k: consumer)
    monkeypatch.setattr(reading, "make_rdkafka_consumer", lambda *a, **k: consumer)
    monkeypatch.setattr(dedup, "rdkafka_end_offset", lambda c, tp, **k: consumer.end(tp.topic))
    monkeypatch.setattr(
        reading, "rdkafka_watermarks", lambda c, tp, **k: (0, consumer.end(tp.topic))
    )


def _read(monkeypatch: pytest.MonkeyPatch, consumer: _Consumer) -> set[bytes]:
    _using(monkeypatch, consumer)
    return dedup.answered_since_last_commit("127.0.0.1:1", TOPICS, "g")


def test_a_whole_read_returns_every_id(patched: pytest.MonkeyPatch) -> None:
    assert _read(patched, _Consumer()) == {b"d%d" % i for i in range(5)}


def test_a_read_cut_short_fails_rather_than_answer_in_part(patched: pytest.MonkeyPatch) -> None:
    # A review: a decisions read that went quiet for a second returned the ids it had, as if
    # they were all, and the partition was answered.
    with pytest.raises(KafkaUnavailable, match=rf"{DECISIONS} partition 0 were not read"):
        _read(patched, _Consumer(served=3))


def test_a_request_partition_that_does_not_answer_fails(patched: pytest.MonkeyPatch) -> None:
    # ... and an uncommitted request partition whose first record did not come within a poll
    # counted as one with nothing to read.
    with pytest.raises(KafkaUnavailable, match=r"request partition 0 did not answer"):
        _read(patched, _Consumer(request_answers=False))


def test_a_partition_released_with_its_answers_is_not_read(patched: pytest.MonkeyPatch) -> None:
    consumer = _Consumer(committed=(1, dedup.RELEASED))
    assert _read(patched, consumer) == set()
    assert consumer.read == []


def test_a_first_request_that_does_not_decompress_is_passed(patched: pytest.MonkeyPatch) -> None:
    # Never answered (only dead-lettered): the next request bounds what may have been.
    consumer = _Consumer(broken=frozenset({0}))
    assert _read(patched, consumer) == {b"d%d" % i for i in range(5)}


def test_read_raw_fills_the_ends_first_and_hands_over_what_does_not_decompress(
    patched: pytest.MonkeyPatch,
) -> None:
    consumer = _Consumer(decided=4, served=4, broken=frozenset({1}))
    _using(patched, consumer)
    ends: dict[tuple[str, int], int] = {}
    raw = reading.read_raw("127.0.0.1:1", [DECISIONS], ends=ends)
    first = next(raw)
    assert ends == {(DECISIONS, 0): 4}
    records = [first, *raw]
    assert [(r.offset, r.value) for r in records] == [(0, b"v0"), (1, None), (2, b"v2"), (3, b"v3")]
    assert (records[0].timestamp_ms, records[0].log_append, records[0].key) == (1_000, False, b"d0")
