"""De-duplication across workers: the request ids an evaluator group answered but may not have
committed (a crash between writing a decision and committing the request's offset).

For each request partition, the first uncommitted request's timestamp bounds how far back a
decision for it can be; the decisions written since (minus a clock-skew margin) are read and
their keys (request ids) returned. An evaluator seeds its memory of answered ids with them for
the partitions it is assigned, before it fetches any of their requests, so a re-delivered
request is not answered twice (one that crashed left its answers uncommitted; its own restart
is such an assignment too). Only at the assignment is it known which partitions a worker must
read: a read of every partition at start-up, before joining, read up to 60 s of decisions
(60,000 ids, 23-37 s under 1,000 requests/s on 2 cores) for partitions the running workers held
and kept, and was read again at the assignment for those it brought.

A worker that hands a partition back with every answer on it committed says so in that commit's
metadata (:data:`RELEASED`); the next owner then has nothing to read for it (it claims the
partition first, committing the same offset without the mark, so that its own answers are read
if it dies before its next commit). Reading 60 s of decisions per assignment cost a scale-out
13 s without answers under load (an agent engineer's walkthrough).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from ledger.errors import KafkaUnavailable
from ledger.kafka.clients import access_denied, kafka_failure, make_rdkafka_consumer
from ledger.kafka.reading import rdkafka_end_offset, rdkafka_partitions, read_raw
from ledger.settings import KafkaSecurity, TopicNames

__all__ = ["answered_since_last_commit", "WRITE_TIME_SLACK_MS", "RELEASED", "released"]

RELEASED = "ledger:released"
"""Metadata of a request partition's offset commit by a worker that gave the partition up with
every answer on it written and committed: no request at or after the offset was answered."""


def released(metadata: str | None) -> bool:
    """Whether a commit's ``metadata`` is :data:`RELEASED`. librdkafka stores the C string's
    terminating NUL with it, which kafka-python reads back; confluent-kafka drops it."""
    return metadata is not None and metadata.rstrip("\x00") == RELEASED


READ_PATIENCE = 10.0
"""Seconds a read waits for records it knows are there (below the end offsets it saw) before
it fails: a partial read must fail, so that its partitions wait until it is done again."""

WRITE_TIME_SLACK_MS = 60_000
"""How far before the oldest uncommitted request a decision for it may be stamped (Kafka's
record times, between the writers' clocks). Not the core's ``CLOCK_SKEW``, which is how far a
signed command's time may run ahead of the command processor's clock."""


def answered_since_last_commit(
    bootstrap: str,
    topics: TopicNames,
    group_id: str,
    *,
    security: KafkaSecurity | None = None,
    partitions: Iterable[int] | None = None,
    decided: Callable[[bytes, bytes | None, int], None] | None = None,
    corrected: set[bytes] | None = None,
) -> set[bytes]:
    """Request ids (decision keys) written since the group's oldest uncommitted request (of
    the request ``partitions`` only, when given: those a worker takes over). A partition
    committed :data:`RELEASED` has none, and is not read (all of them after a clean stop).
    Without ``partitions``, every request partition (tests, tools).

    With ``decided``, it is called with each decision's key, value and partition as it is
    read; with ``corrected``, the corrections topic is read over the same span and each of its
    records is added to it (its value, not its key: a request id anyone holding the agent
    credential may send again, a red team): a decision answered before a crash whose
    correction never reached the broker is owed one (:meth:`RequestHandler.owe
    <processors.request_handler.RequestHandler.owe>`).

    Records are read with librdkafka, which leaves their headers alone: a request whose header
    key is not UTF-8 (an agent can send one) made kafka-python fail this read, and so the
    evaluator's every restart, while it was the first uncommitted one."""
    oldest_ms = _oldest_uncommitted(bootstrap, topics, group_id, security, partitions)
    if oldest_ms is None:
        return set()
    since = max(0, oldest_ms - WRITE_TIME_SLACK_MS)
    # A part of the ids is no answer: the caller would decide the rest again (a review: a read
    # that went quiet returned what it had as if it were all), hence the patience.
    read = [topics.decisions] if corrected is None else [topics.decisions, topics.corrections]
    answered: set[bytes] = set()
    for record in read_raw(
        bootstrap, read, security=security, since_ms=since, patience=READ_PATIENCE
    ):
        if record.key is None:
            continue
        if corrected is not None and record.topic == topics.corrections:
            if record.value is not None:
                corrected.add(record.value)
            continue
        answered.add(record.key)
        if decided is not None:
            decided(record.key, record.value, record.partition)
    return answered


def _oldest_uncommitted(
    bootstrap: str,
    topics: TopicNames,
    group_id: str,
    security: KafkaSecurity | None,
    partitions: Iterable[int] | None,
) -> int | None:
    """The timestamp of the oldest first uncommitted request of the group's request
    ``partitions`` (all when ``None``), or ``None`` when none has one."""
    from confluent_kafka import KafkaError, KafkaException, TopicPartition

    # A consumer carrying the group id reads the group's committed offsets without joining.
    consumer = make_rdkafka_consumer(bootstrap, security=security, group_id=group_id)
    try:
        topic = topics.evaluation_requests
        numbers = rdkafka_partitions(consumer, topic, bootstrap=bootstrap)
        if partitions is not None:
            wanted = set(partitions)
            numbers = [p for p in numbers if p in wanted]
        if not numbers:
            return None
        committed = consumer.committed(
            [TopicPartition(topic, p) for p in numbers], timeout=READ_PATIENCE
        )
        # The first uncommitted offset and the end offset of each partition to read.
        spans: dict[int, tuple[int, int]] = {}
        for tp in committed:
            if tp.error is not None:
                raise KafkaException(tp.error)
            if released(tp.metadata):
                continue  # given up with every answer committed: nothing answered after it
            start = max(tp.offset, 0)  # no commit yet: OFFSET_INVALID
            end = rdkafka_end_offset(consumer, TopicPartition(topic, tp.partition))
            if start < end:
                spans[tp.partition] = (start, end)
        if not spans:
            return None
        consumer.assign([TopicPartition(topic, p, start) for p, (start, _) in spans.items()])
        firsts: dict[int, int] = {}
        deadline = time.monotonic() + READ_PATIENCE
        while len(firsts) < len(spans) and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=len(spans), timeout=1.0):
                partition, offset = message.partition(), message.offset()
                span = spans.get(partition)
                error = message.error()
                if error is not None:
                    _fail_on(error, bootstrap, security)  # else transient: librdkafka retries
                if span is None or partition in firsts or offset < span[0]:
                    continue
                if error is None:
                    firsts[partition] = message.timestamp()[1]
                elif error.code() == KafkaError._BAD_COMPRESSION:
                    # A request that does not decompress was never answered, only
                    # dead-lettered: the next one bounds what may have been.
                    if offset + 1 >= span[1]:
                        del spans[partition]
                    else:
                        spans[partition] = (offset + 1, span[1])
                        consumer.seek(TopicPartition(topic, partition, offset + 1))
        missing = sorted(set(spans) - set(firsts))
        if missing:  # a record is there: an empty answer is a read not done, not none
            raise KafkaUnavailable(
                f"request partition {missing[0]} did not answer from offset "
                f"{spans[missing[0]][0]} within {READ_PATIENCE:.0f} s"
            )
        return min(firsts.values()) if firsts else None
    except KafkaException as exc:
        doing = f"reading the request partitions of group {group_id} at {bootstrap}"
        raise kafka_failure(exc, security, bootstrap, doing) from exc
    finally:
        consumer.close()


def _fail_on(error: Any, bootstrap: str, security: KafkaSecurity | None) -> None:
    """Raise for a consumed error that is not transient (a refusal, a fatal error)."""
    from confluent_kafka import KafkaException

    if access_denied(error, security, bootstrap) is not None or error.fatal():
        raise KafkaException(error)
