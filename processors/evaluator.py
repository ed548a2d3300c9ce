"""The evaluator: answers evaluation requests with decision traces (DESIGN §6, §8, §12).

Agent body: decode → core ``evaluate`` → encode → send. Everything else is here to make that
safe: the governance follower (state from the ledger, caught up before the first answer), one
decision per request id (a bounded memory of answered ids, seeded at start-up from the decisions
written after the group's last commit, so a crash-restart does not answer twice), dead-letters
for undecodable records, an ``error`` decision for a bad request.

Run it: ``python -m processors.evaluator`` (reads ``LEDGER_*`` from the environment), or let
``ledger up`` do it. Scale with more workers (same group) and more request partitions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import faust

from ledger.codec import Codec, default_codec
from ledger.core.evaluate import correction_for, evaluate, evaluate_batch
from ledger.core.events import BatchEvaluationRequested, DeadLetter, EvaluationRequested
from ledger.errors import CodecError
from ledger.kafka_io import new_id, utcnow
from ledger.settings import Settings
from processors.common import GovernanceFollower, ProcessorStats, create_faust_app, send_or_die

__all__ = ["create_app", "RequestHandler", "RecentIds", "main", "APP_ID"]

log = logging.getLogger("ledger.evaluator")
APP_ID = "ledger-evaluator"

Output = tuple[str, bytes, bytes]  # (topic, key, value)

# Requests handled per agent step, and how long a step waits for a batch to fill. The wait is
# the most latency batching can add to a request that arrives alone.
BATCH_MAX = 1000
BATCH_WITHIN = 0.001


class RecentIds:
    """A bounded set of recently answered request ids (oldest forgotten first)."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        self._ids: OrderedDict[bytes, None] = OrderedDict()
        self._capacity = capacity

    def __contains__(self, key: bytes) -> bool:
        return key in self._ids

    def add(self, key: bytes) -> None:
        self._ids[key] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)

    def update(self, keys: Iterable[bytes]) -> None:
        for key in keys:
            self.add(key)

    def __len__(self) -> int:
        return len(self._ids)


class RequestHandler:
    """Turns one request record into the records to publish. No I/O: easy to test and reuse."""

    def __init__(
        self, *, settings: Settings, codec: Codec, evaluator_id: str, stats: ProcessorStats
    ) -> None:
        self.topics = settings.topics
        self.codec = codec
        self.evaluator_id = evaluator_id
        self.stats = stats
        self.recent = RecentIds()

    def handle(self, state: Any, *, topic: str, partition: int, offset: int,
               key: bytes | None, value: bytes | None) -> list[Output]:  # fmt: skip
        started = time.perf_counter_ns()
        try:
            if value is None:
                raise CodecError("empty record (tombstone) on the request topic")
            request = self.codec.decode(value)
        except CodecError as exc:
            return [self._dead_letter(topic, partition, offset, key, value, exc.code, str(exc))]
        if isinstance(request, EvaluationRequested):
            rid = request.event_id.encode()
            if rid in self.recent:
                self.stats.duplicates += 1
                return []
            now = utcnow()
            decision = evaluate(state, request, now=now, evaluator_id=self.evaluator_id)
            decision = replace(decision, latency_us=(time.perf_counter_ns() - started) // 1000)
            out: list[Output] = [(self.topics.decisions, rid, self.codec.encode(decision))]
            correction = correction_for(decision)
            if correction is not None:
                out.append((self.topics.corrections, rid, self.codec.encode(correction)))
            self.recent.add(rid)
            self.stats.processed += 1
            return out
        if isinstance(request, BatchEvaluationRequested):
            rid = request.event_id.encode()
            if rid in self.recent:
                self.stats.duplicates += 1
                return []
            answer = evaluate_batch(state, request, now=utcnow(), evaluator_id=self.evaluator_id)
            self.recent.add(rid)
            self.stats.processed += 1
            return [(self.topics.decisions, rid, self.codec.encode(answer))]
        reason = f"{type(request).__name__} is not an evaluation request"
        return [self._dead_letter(topic, partition, offset, key, value, "unexpected_event", reason)]

    def handle_batch(self, state: Any, messages: Iterable[Any]) -> list[Output]:
        """The outputs of several records (Faust messages) in order, all against one state."""
        out: list[Output] = []
        handle = self.handle
        for msg in messages:
            out += handle(state, topic=msg.topic, partition=msg.partition, offset=msg.offset,
                          key=msg.key, value=msg.value)  # fmt: skip
        return out

    def _dead_letter(self, topic: str, partition: int, offset: int, key: bytes | None,
                     value: bytes | None, code: str, reason: str) -> Output:  # fmt: skip
        self.stats.dead_lettered += 1
        log.warning("dead-lettering %s[%s]@%s: %s", topic, partition, offset, reason)
        letter = DeadLetter(
            event_id=new_id(), occurred_at=utcnow(), actor=f"service:{self.evaluator_id}",
            source_topic=topic, partition=partition, offset=offset, key=key, value=value,
            code=code, reason=reason,
        )  # fmt: skip
        return (self.topics.dead_letters, key or b"", self.codec.encode(letter))


def answered_since_last_commit(bootstrap: str, settings: Settings, group_id: str) -> set[bytes]:
    """Request ids already answered but possibly not committed (a crash between the two).

    For each request partition, the first uncommitted request's timestamp bounds how far back a
    decision for it can be; the decisions written since (minus a clock-skew margin) are read.
    """
    from kafka import TopicPartition

    from ledger.kafka_io import make_consumer

    # A consumer carrying the group id can read the group's committed offsets without joining.
    consumer = make_consumer(bootstrap, group_id=group_id, consumer_timeout_ms=1000)
    try:
        req_parts = [TopicPartition(settings.topics.evaluation_requests, p)
                     for p in consumer.partitions_for_topic(settings.topics.evaluation_requests) or ()]  # fmt: skip
        ends = consumer.end_offsets(req_parts) if req_parts else {}
        oldest_ms: int | None = None
        for tp in req_parts:
            committed = consumer.committed(tp)
            start = committed if committed is not None and committed >= 0 else 0
            if start >= ends[tp]:
                continue
            consumer.assign([tp])
            consumer.seek(tp, start)
            records = consumer.poll(timeout_ms=2000, max_records=1).get(tp, [])
            if records:
                ts = records[0].timestamp
                oldest_ms = ts if oldest_ms is None else min(oldest_ms, ts)
        if oldest_ms is None:
            return set()
        dec_parts = [TopicPartition(settings.topics.decisions, p)
                     for p in consumer.partitions_for_topic(settings.topics.decisions) or ()]  # fmt: skip
        consumer.assign(dec_parts)
        starts = consumer.offsets_for_times({tp: max(0, oldest_ms - 60_000) for tp in dec_parts})
        dec_ends = consumer.end_offsets(dec_parts)
        live = []
        for tp in dec_parts:
            found = starts.get(tp)
            if found is None:
                continue
            consumer.seek(tp, found.offset)
            live.append(tp)
        seen: set[bytes] = set()
        remaining = {tp for tp in live if dec_ends[tp] > 0}
        while remaining:
            batch = consumer.poll(timeout_ms=1000)
            if not batch:
                break
            for tp, records in batch.items():
                seen.update(r.key for r in records if r.key is not None)
                if consumer.position(tp) >= dec_ends[tp]:
                    remaining.discard(tp)
        return seen
    finally:
        consumer.close()


def create_app(settings: Settings, *, bootstrap: str, evaluator_id: str | None = None) -> faust.App:
    """Build an evaluator app. Several workers of the same app share the request partitions."""
    evaluator_id = evaluator_id or f"evaluator-{socket.gethostname()}-{os.getpid()}"
    app = create_faust_app(settings, app_id=APP_ID, bootstrap=bootstrap)
    codec = default_codec()
    stats = ProcessorStats()
    follower = GovernanceFollower(bootstrap=bootstrap, settings=settings, codec=codec, stats=stats)
    handler = RequestHandler(settings=settings, codec=codec, evaluator_id=evaluator_id, stats=stats)
    deduplicated = asyncio.Event()
    app.ledger_stats = stats  # type: ignore[attr-defined]
    app.ledger_follower = follower  # type: ignore[attr-defined]
    app.ledger_deduplicated = deduplicated  # type: ignore[attr-defined]

    @app.task
    async def follow_governance() -> None:
        await follower.run()

    @app.task
    async def remember_answered() -> None:
        seen = await asyncio.to_thread(answered_since_last_commit, bootstrap, settings, app.conf.id)
        handler.recent.update(seen)
        log.info("start-up: %d request ids answered since the last commit", len(seen))
        deduplicated.set()

    @app.agent(app.topic(settings.topics.evaluation_requests))
    async def answer(stream: Any) -> None:
        # Outputs go straight to the app's producer: Faust's Topic.send adds a FutureMessage,
        # sensors and a debug log per record (about a quarter of the agent's CPU). Durability is
        # the same: Faust flushes this producer before it commits input offsets.
        # Requests are taken in batches: a batch's outputs are all queued before the producer's
        # sender runs, so they leave in one produce request instead of one or two per decision.
        # take_events acks a batch only after this body has queued all of its outputs.
        producer = app.producer
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN):
            if not (follower.ready.is_set() and deduplicated.is_set()):
                await follower.ready.wait()
                await deduplicated.wait()
            for topic, key, value in handler.handle_batch(
                follower.state, [event.message for event in events]
            ):
                await send_or_die(producer, topic, key, value)

    @app.timer(interval=30.0)
    async def report() -> None:
        log.info("evaluator stats: %s", stats)

    return app


def main() -> None:
    """Entry point of ``python -m processors.evaluator``."""
    from processors.run import run_worker

    run_worker(create_app, name="evaluator")


if __name__ == "__main__":
    main()
