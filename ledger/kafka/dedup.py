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
from collections.abc import Iterable
from typing import Any

from ledger.errors import KafkaUnavailable
from ledger.kafka.clients import make_consumer
from ledger.kafka.reading import topic_partitions
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
) -> set[bytes]:
    """Request ids (decision keys) written since the group's oldest uncommitted request (of
    the request ``partitions`` only, when given: those a worker takes over). A partition
    committed :data:`RELEASED` has none, and is not read (all of them after a clean stop).
    Without ``partitions``, every request partition (tests, tools)."""
    # A consumer carrying the group id can read the group's committed offsets without joining.
    consumer = make_consumer(
        bootstrap, security=security, group_id=group_id, consumer_timeout_ms=1000
    )
    try:
        requests = topic_partitions(consumer, topics.evaluation_requests, bootstrap=bootstrap)
        if partitions is not None:
            wanted = set(partitions)
            requests = [tp for tp in requests if tp.partition in wanted]
        if not requests:
            return set()
        ends = consumer.end_offsets(requests)
        oldest_ms: int | None = None
        for tp in requests:
            committed = consumer.committed(tp, metadata=True)
            if committed is not None and released(committed.metadata):
                continue  # given up with every answer committed: nothing answered after it
            start = committed.offset if committed is not None and committed.offset >= 0 else 0
            if start >= ends[tp]:
                continue
            consumer.assign([tp])
            consumer.seek(tp, start)
            deadline = time.monotonic() + READ_PATIENCE
            records: list[Any] = []
            while not records and time.monotonic() < deadline:
                records = consumer.poll(timeout_ms=1000, max_records=1).get(tp, [])
            if not records:  # a record is there: an empty answer is a read not done, not none
                raise KafkaUnavailable(
                    f"request partition {tp.partition} did not answer from offset {start} "
                    f"within {READ_PATIENCE:.0f} s"
                )
            ts = records[0].timestamp
            oldest_ms = ts if oldest_ms is None else min(oldest_ms, ts)
        if oldest_ms is None:
            return set()
        decisions = topic_partitions(consumer, topics.decisions, bootstrap=bootstrap)
        consumer.assign(decisions)
        since = max(0, oldest_ms - WRITE_TIME_SLACK_MS)
        starts = consumer.offsets_for_times({tp: since for tp in decisions})
        dec_ends = consumer.end_offsets(decisions)
        live: list[Any] = []
        for tp in decisions:
            found = starts.get(tp)
            if found is None:
                continue
            consumer.seek(tp, found.offset)
            live.append(tp)
        seen: set[bytes] = set()
        remaining = {tp for tp in live if consumer.position(tp) < dec_ends[tp]}
        quiet_since = time.monotonic()
        while remaining:
            batch = consumer.poll(timeout_ms=1000)
            if not batch:
                remaining = {tp for tp in remaining if consumer.position(tp) < dec_ends[tp]}
                if remaining and time.monotonic() - quiet_since > READ_PATIENCE:
                    # A part of the ids is no answer: the caller would decide the rest again
                    # (a review: this returned what it had as if it were all).
                    raise KafkaUnavailable(
                        f"decisions partitions {sorted(tp.partition for tp in remaining)} were "
                        f"not read to their end within {READ_PATIENCE:.0f} s"
                    )
                continue
            quiet_since = time.monotonic()
            for tp, records in batch.items():
                seen.update(r.key for r in records if r.key is not None)
                if consumer.position(tp) >= dec_ends[tp]:
                    remaining.discard(tp)
        return seen
    finally:
        consumer.close()
