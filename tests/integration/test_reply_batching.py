"""The evaluator's batched request path (issue 12) on the real broker, driven in this process.

A burst of requests already waiting is answered in batches (far fewer batches than requests),
each exactly once, on the partition the request named; the group's committed offsets reach the
end of every request partition once the loop stops (a batch is committed only after its outputs
are acknowledged). Every decision is the next link of the loop's one hash chain, in the order it
was produced, with checkpoints every ``checkpoint_every`` decisions and a final one at the clean
stop; a second loop (a restarted worker) writes a chain of its own. A loop whose consumer is
kept out of its group tells so from librdkafka's statistics and replaces the consumer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from harness import AGENT, GOOD_FACTS, LedgerStack, wait_for

import processors.request_loop as request_loop_module
from ledger.codec import default_codec
from ledger.core.chain import GENESIS, record_hash
from ledger.core.events import ChainCheckpoint, DecisionRecorded, EvaluationRequested
from ledger.core.state import EMPTY_STATE
from ledger.ids import new_id, utcnow
from ledger.kafka.acls import PROCESSOR_GROUPS
from ledger.kafka.clients import make_rdkafka_consumer, make_rdkafka_producer
from ledger.kafka.dedup import RELEASED
from ledger.kafka.reading import read_topic
from processors.evaluator import RequestHandler, RequestLoop
from processors.outputs import ProcessorStats

pytestmark = pytest.mark.integration

CODEC = default_codec()
BURST = 600
EVERY = 100


def _requests(n: int, partitions: int) -> list[EvaluationRequested]:
    return [
        EvaluationRequested(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor=AGENT,
            action="refund.issue",
            principal=AGENT,
            resource=f"order:{i}",
            facts=GOOD_FACTS,
            reply_partition=i % partitions,
        )
        for i in range(n)
    ]


def _publish(stack: LedgerStack, requests: list[EvaluationRequested]) -> None:
    producer = make_rdkafka_producer(stack.bootstrap, security=stack.security("agent"))
    for request in requests:
        producer.produce(
            stack.topics.evaluation_requests, CODEC.encode(request), request.event_id.encode()
        )
    assert producer.flush(30) == 0


def _loop(stack: LedgerStack, group: str) -> tuple[RequestLoop, RequestHandler]:
    settings = dataclasses.replace(stack.settings, security=stack.security("evaluator"))
    stats = ProcessorStats()
    handler = RequestHandler(
        settings=settings,
        codec=CODEC,
        evaluator_id="evaluator-test",
        stats=stats,
        checkpoint_every=EVERY,
    )
    loop = RequestLoop(
        bootstrap=stack.bootstrap,
        group_id=group,
        settings=settings,
        handler=handler,
        state=lambda: EMPTY_STATE,
        max_bytes=1_000_000,
        checkpoint_interval=3600.0,  # only the count and the final stop checkpoint here
    )
    return loop, handler


def _run(stack: LedgerStack, group: str, requests: list[EvaluationRequested]) -> RequestLoop:
    loop, handler = _loop(stack, group)
    loop.start()
    try:
        wait_for(
            lambda: handler.stats.processed >= len(requests),
            timeout=90,
            what=f"{len(requests)} requests answered",
        )
    finally:
        loop.stop(timeout=30)
    assert not loop.running
    return loop


def _commits(stack: LedgerStack, group: str) -> tuple[list[Any], dict[int, int]]:
    """The group's committed offsets on each request partition, and each partition's end."""
    from confluent_kafka import TopicPartition

    consumer = make_rdkafka_consumer(
        stack.bootstrap, security=stack.security("evaluator"), **{"group.id": group}
    )
    try:
        topic = stack.topics.evaluation_requests
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in parts}
        return consumer.committed(parts, timeout=10), ends
    finally:
        consumer.close()


def _committed(stack: LedgerStack, group: str) -> dict[int, int]:
    found, ends = _commits(stack, group)
    committed = {tp.partition: tp.offset for tp in found}
    assert committed == ends, (committed, ends)
    return committed


def _decisions(stack: LedgerStack) -> list[tuple[int, DecisionRecorded]]:
    out = []
    for record in read_topic(
        stack.bootstrap, [stack.topics.decisions], codec=CODEC, security=stack.security("auditor")
    ):
        assert isinstance(record.event, DecisionRecorded)
        out.append((record.partition, record.event))
    return out


def _checkpoints(stack: LedgerStack) -> list[ChainCheckpoint]:
    marks = []
    for record in read_topic(
        stack.bootstrap,
        [stack.topics.chain_checkpoints],
        codec=CODEC,
        security=stack.security("auditor"),
    ):
        assert isinstance(record.event, ChainCheckpoint)
        marks.append(record.event)
    return marks


def _assert_one_chain(decisions: list[DecisionRecorded]) -> str:
    """The decisions form one unbroken chain 1..n; returns its head hash."""
    chain_ids = {d.chain_id for d in decisions}
    assert len(chain_ids) == 1, chain_ids
    ordered = sorted(decisions, key=lambda d: d.chain_seq or 0)
    assert [d.chain_seq for d in ordered] == list(range(1, len(ordered) + 1))
    previous: str | None = GENESIS
    for d in ordered:
        assert d.prev_hash == previous
        assert d.hash == record_hash(d)
        previous = d.hash
    assert previous is not None
    return previous


def test_a_burst_is_answered_in_batches_once_each_on_its_partition_and_chained(
    stack_factory: Any,
) -> None:
    stack: LedgerStack = stack_factory(processors=(), evaluation_partitions=3)
    group = f"{stack.topics.prefix}{PROCESSOR_GROUPS['evaluator']}"  # the ACL names it
    first = _requests(BURST, partitions=3)
    _publish(stack, first)  # all waiting before the loop starts: a burst

    loop = _run(stack, group, first)
    assert loop.batches < BURST // 4, f"{loop.batches} batches for {BURST} requests"
    _committed(stack, group)

    decisions = _decisions(stack)
    by_request = {}
    for partition, decision in decisions:
        assert decision.request_id not in by_request, "answered twice"
        by_request[decision.request_id] = (partition, decision)
    assert set(by_request) == {r.event_id for r in first}
    for request in first:
        partition, decision = by_request[request.event_id]
        assert partition == request.reply_partition
        assert decision.resource == request.resource
    head = _assert_one_chain([d for _, d in decisions])

    marks = _checkpoints(stack)
    chain_id = decisions[0][1].chain_id
    assert {m.chain_id for m in marks} == {chain_id}
    # Every EVERY decisions, then the final one at the clean stop (the same head as the last
    # count checkpoint here, since the burst is a multiple of EVERY).
    counted = sorted(m.chain_seq for m in marks if not m.final)
    assert counted == list(range(EVERY, BURST + 1, EVERY))
    final = [m for m in marks if m.final]
    assert [(m.chain_seq, m.head_hash) for m in final] == [(BURST, head)]

    # New requests, to a second loop of the same group (a restarted worker): nothing already
    # committed is read again, and the new ones are answered in a chain of the second loop's.
    second = _requests(50, partitions=3)
    _publish(stack, second)
    _run(stack, group, second)
    _committed(stack, group)
    later = [d for _, d in _decisions(stack) if d.chain_id != chain_id]
    assert {d.request_id for d in later} == {r.event_id for r in second}
    _assert_one_chain(later)
    finals = [m for m in _checkpoints(stack) if m.final]
    assert len(finals) == 2 and {m.chain_id for m in finals} == {chain_id, later[0].chain_id}


def _metadata(stack: LedgerStack, group: str) -> dict[int, str]:
    """The metadata of the group's committed offset on each request partition."""
    return {tp.partition: tp.metadata for tp in _commits(stack, group)[0]}


def test_partitions_given_up_cleanly_are_taken_over_without_reading_their_answers(
    stack_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A scale-out under load stalled every decision for 4 to 13 s: each worker read 60 s of
    # decisions for partitions just handed over with every answer committed (an agent
    # engineer's walkthrough). A clean hand-over now says so in its commit.
    stack: LedgerStack = stack_factory(processors=(), evaluation_partitions=3)
    group = f"{stack.topics.prefix}{PROCESSOR_GROUPS['evaluator']}"
    reads: list[list[int]] = []
    real = request_loop_module.answered_since_last_commit

    def reading(*args: Any, **kw: Any) -> set[bytes]:
        reads.append(sorted(kw["partitions"]))
        return real(*args, **kw)

    monkeypatch.setattr(request_loop_module, "answered_since_last_commit", reading)
    first = _requests(60, partitions=3)
    _publish(stack, first)
    _run(stack, group, first)
    assert reads == [[0, 1, 2]]  # a group nothing was released by: read
    assert _metadata(stack, group) == dict.fromkeys(range(3), RELEASED)

    second = _requests(30, partitions=3)
    _publish(stack, second)  # waiting, uncommitted: a read of them all has nothing to read still
    settings = stack.settings
    security = stack.security("evaluator")
    assert real(stack.bootstrap, settings.topics, group, security=security) == set()

    loop, handler = _loop(stack, group)
    loop.start()
    try:
        wait_for(lambda: loop._assignments > 0, timeout=60, what="the partitions assigned")
        # Claimed before anything is fetched: a crash now leaves them to be read.
        assert RELEASED not in _metadata(stack, group).values()
        wait_for(lambda: handler.stats.processed >= 30, timeout=60, what="30 answered")
    finally:
        loop.stop(timeout=30)
    assert reads == [[0, 1, 2]]  # nothing read on the clean take-over
    _committed(stack, group)
    answered = [d.request_id for _, d in _decisions(stack)]
    assert sorted(answered) == sorted(r.event_id for r in first + second)  # each once
    assert _metadata(stack, group) == dict.fromkeys(range(3), RELEASED)


def test_a_consumer_kept_out_of_its_group_is_replaced_and_the_new_one_answers(
    stack_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's walkthrough: after two broker restarts in a row an evaluator's consumer
    # never joined its group again, healthy by its heartbeat, every request timing out. Here a
    # member of the group with no assignor in common keeps the loop's consumer out (its joins
    # are refused): the loop says so from librdkafka's own statistics, replaces its consumer,
    # and once the group lets it in, the new consumer is assigned and answers each request once.
    stack: LedgerStack = stack_factory(processors=(), evaluation_partitions=3)
    group = f"{stack.topics.prefix}{PROCESSOR_GROUPS['evaluator']}"
    monkeypatch.setattr(request_loop_module, "STATS_INTERVAL_MS", 200, raising=False)
    monkeypatch.setattr(request_loop_module, "REJOIN_AFTER", 2.0, raising=False)
    blocker = make_rdkafka_consumer(
        stack.bootstrap,
        security=stack.security("evaluator"),
        **{"group.id": group, "partition.assignment.strategy": "cooperative-sticky"},
    )
    blocker.subscribe([stack.topics.evaluation_requests])
    wait_for(
        lambda: blocker.poll(0.2) is None and blocker.assignment(),
        timeout=30,
        what="the other member assigned",
    )
    requests = _requests(30, partitions=3)
    _publish(stack, requests)
    loop, handler = _loop(stack, group)
    loop.start()
    try:
        wait_for(lambda: getattr(loop, "rejoins", 0), timeout=30, what="the consumer replaced")
        out = loop.out_of_group()
        assert out is not None and out[1] != "up/steady", out
        assert handler.stats.processed == 0
        blocker.close()  # the group lets the loop in now
        wait_for(lambda: handler.stats.processed >= 30, timeout=60, what="30 answered")
        assert loop.out_of_group() is None and loop.holding() == (3, 3)
    finally:
        loop.stop(timeout=30)
    answered = [d.request_id for _, d in _decisions(stack)]
    assert sorted(answered) == sorted(r.event_id for r in requests)  # each once
