"""The command processor's claim of a commit past the commands' end (ledger/kafka/offsets.py),
against a fake group: it never rewinds a commit another worker made meanwhile, and a broker that
does not answer is one line, not a traceback."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.structs import TopicPartition

import ledger.kafka.offsets as offsets
from ledger.errors import KafkaUnavailable

TP = TopicPartition("ledger.commands", 0)


class Group:
    """The group's commit of one partition whose log ends at 10."""

    def __init__(self, committed: int, *, refusals: int = 0) -> None:
        self.stored = committed
        self.refusals = refusals
        self.commits: list[int] = []
        self.on_refusal: Any = None

    def end_offsets(self, parts: list[Any]) -> dict[Any, int]:
        return {TP: 10}

    def committed(self, tp: Any) -> int:
        return self.stored

    def commit(self, claims: dict[Any, Any]) -> None:
        if self.refusals:
            self.refusals -= 1
            if self.on_refusal is not None:
                self.on_refusal(self)
            raise KafkaError("the group is rebalancing")
        self.commits.append(claims[TP].offset)
        self.stored = claims[TP].offset

    def close(self) -> None:
        pass


def claim(monkeypatch: pytest.MonkeyPatch, group: Group) -> dict[int, tuple[int, int]]:
    monkeypatch.setattr(offsets, "make_consumer", lambda *a, **k: group)
    monkeypatch.setattr(offsets, "topic_partitions", lambda *a, **k: [TP])
    monkeypatch.setattr(offsets.time, "sleep", lambda s: None)
    return offsets.claim_commits_past_end("x:1", "ledger.commands", "g", patience=60)


def test_a_commit_past_the_end_is_put_back_to_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    group = Group(110)
    assert claim(monkeypatch, group) == {0: (110, 10)} and group.commits == [10]
    assert claim(monkeypatch, Group(10)) == {}  # at the end: left alone


def test_a_commit_another_worker_made_meanwhile_is_not_rewound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A review: the claim was computed once and retried; a worker that started meanwhile
    # committed further (its own handling), and the retry put the commit back to the old end.
    group = Group(110, refusals=1)

    def another_worker_commits(g: Group) -> None:
        g.stored = 14  # it claimed the end, handled 4 commands and committed past them

    group.on_refusal = another_worker_commits
    claim(monkeypatch, group)
    assert group.commits == [] and group.stored == 14


def test_a_broker_that_does_not_answer_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    group = Group(110)

    def slow(parts: list[Any]) -> dict[Any, int]:
        raise KafkaTimeoutError("Failed to get offsets by times in 305000 ms")

    group.end_offsets = slow  # type: ignore[method-assign]
    with pytest.raises(KafkaUnavailable, match="could not read where group g stands"):
        claim(monkeypatch, group)
