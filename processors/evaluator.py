"""The evaluator: answers evaluation requests with decision traces (DESIGN §6, §8, §12).

Agent body: decode → core ``evaluate`` → encode → send. Everything else is here to make that
safe: the governance follower (state from the ledger, caught up before the first answer), one
decision per request id (a bounded memory of answered ids, seeded at start-up from the decisions
written after the group's last commit, so a crash-restart does not answer twice), dead-letters
for undecodable records, an ``error`` decision for a bad request.

Tamper evidence (DESIGN §9): each worker keeps one hash chain (:mod:`ledger.core.chain`), named
by its evaluator id and a start-up nonce, and every record it writes to the decisions topic is
the chain's next link; the chain's head is published on ``ledger.chain-checkpoints`` every
:data:`CHECKPOINT_EVERY` records, after each second with decisions, and at a clean shutdown.

Run it: ``python -m processors.evaluator`` (reads ``LEDGER_*`` from the environment), or let
``ledger up`` do it. Scale with more workers (same group) and more request partitions.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any, Final

from ledger.codec import Codec, default_codec
from ledger.core.chain import ChainHead, checkpoint, link
from ledger.core.evaluate import correction_for, evaluate, evaluate_batch
from ledger.core.events import (
    BatchDecisionRecorded,
    BatchEvaluationRequested,
    BatchItemDecision,
    DecisionRecorded,
    Determination,
    EvaluationRequested,
)
from ledger.core.limits import DEFAULT_LIMITS
from ledger.errors import CodecError
from ledger.ids import new_id, utcnow
from ledger.kafka.dedup import answered_since_last_commit
from ledger.kafka.governance import GovernanceFollower
from ledger.settings import Settings
from processors.common import (
    HANDLING_FAILED_EXIT,
    Output,
    OutputLimit,
    Processor,
    ProcessorStats,
    create_faust_app,
    die,
    send_all,
    state_dir,
)
from processors.dead_letters import DeadLetters, decode_as
from processors.inflight import InFlight

__all__ = [
    "create_app",
    "RequestHandler",
    "RecentIds",
    "main",
    "APP_ID",
    "TRACE_TOO_LARGE",
    "CHECKPOINT_EVERY",
    "CHECKPOINT_INTERVAL",
]

log = logging.getLogger("ledger.evaluator")
APP_ID = "ledger-evaluator"

_REQUEST_TYPES = (EvaluationRequested, BatchEvaluationRequested)

# Requests handled per agent step, and how long a step waits for a batch to fill. The wait is
# the most latency batching can add to a request that arrives alone.
BATCH_MAX = 1000
BATCH_WITHIN = 0.001

CHECKPOINT_EVERY = 1000
"""A chain checkpoint follows at the latest this many decisions after the previous one."""
CHECKPOINT_INTERVAL = 1.0
"""Seconds between the evaluator's checkpoint ticks: a chain that grew since its last checkpoint
gets one, so its newest records are vouched for within about a second."""


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


_ACTOR: Final = "service:evaluator"

TRACE_TOO_LARGE: Final = "trace_too_large"
"""``reason_code`` of an ``error`` decision whose full trace would not fit a Kafka record
(its meaning is in :data:`ledger.core.evaluate.REASON_CODES`)."""


class RequestHandler:
    """Turns request records into the records to publish. No Kafka: easy to test and reuse.

    Every record gets an outcome that fits a Kafka record: a decision (an ``error`` decision
    without facts when the full trace would be too large), or a dead letter. With ``inflight``,
    a record that was being handled each time the process died is dead-lettered, not handled.

    Every decision it returns is the next link of its hash chain (``chain``, one per handler:
    one per worker process), stamped as its last step so the chain advances only for records
    that are written. Checkpoints of the chain's head come out as outputs too: after every
    ``checkpoint_every`` decisions, from :meth:`tick` (called on a timer) and :meth:`close`.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        codec: Codec,
        evaluator_id: str,
        stats: ProcessorStats,
        limit: OutputLimit | None = None,
        inflight: InFlight | None = None,
        chain_id: str | None = None,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> None:
        self.topics = settings.topics
        self.codec = codec
        self.evaluator_id = evaluator_id
        self.stats = stats
        self.recent = RecentIds()
        self.limit = limit or OutputLimit(DEFAULT_LIMITS.record_bytes)
        self.inflight = inflight
        self.letters = DeadLetters(
            codec=codec,
            topic=settings.topics.dead_letters,
            actor=f"service:{evaluator_id}",
            stats=stats,
            limit=self.limit,
        )
        # A fresh nonce per handler: a restarted or second worker starts a chain of its own.
        self.chain = ChainHead(chain_id or f"{evaluator_id}/{new_id()}")
        self.checkpoint_every = checkpoint_every
        self._checkpointed = 0  # chain_seq of the last checkpoint returned

    def handle(
        self,
        state: Any,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
    ) -> list[Output]:
        started = time.perf_counter_ns()
        try:
            request = decode_as(self.codec, value, _REQUEST_TYPES, "an evaluation request")
        except CodecError as exc:
            return [self._dead_letter(topic, partition, offset, key, value, exc.code, str(exc))]
        rid = request.event_id.encode()
        if rid in self.recent:
            self.stats.duplicates += 1
            return []
        now = utcnow()
        out: list[Output]
        chain = self.chain
        if isinstance(request, EvaluationRequested):
            decision = evaluate(state, request, now=now, evaluator_id=self.evaluator_id)
            latency = {"latency_us": (time.perf_counter_ns() - started) // 1000}
            stamped, head = link(decision, chain, latency)
            encoded = self.codec.encode(stamped)
            if not self.limit.fits(rid, encoded):
                reduced = _without_trace(decision, value, self.limit.max_bytes)
                stamped, head = link(reduced, chain, latency)
                encoded = self.codec.encode(stamped)
            out = [(self.topics.decisions, rid, encoded)]
            correction = correction_for(stamped)
            if correction is not None:
                out.append((self.topics.corrections, rid, self.codec.encode(correction)))
        else:
            answer = evaluate_batch(state, request, now=now, evaluator_id=self.evaluator_id)
            stamped_batch, head = link(answer, chain)
            encoded = self.codec.encode(stamped_batch)
            if not self.limit.fits(rid, encoded):
                stamped_batch, head = link(_batch_without_trace(answer), chain)
                encoded = self.codec.encode(stamped_batch)
            out = [(self.topics.decisions, rid, encoded)]
        if not all(self.limit.fits(k, v) for _, k, v in out):
            reason = f"the smallest answer would be over the {self.limit.max_bytes}-byte limit"
            return [
                self._dead_letter(topic, partition, offset, key, value, "output_too_large", reason)
            ]
        self.chain = head  # only now: a record that is not written is not in the chain
        self.recent.add(rid)
        self.stats.processed += 1
        if head.seq - self._checkpointed >= self.checkpoint_every:
            out.append(self._checkpoint(now))
        return out

    def tick(self, now: datetime) -> list[Output]:
        """The chain's checkpoint if it grew since the last one (the agent's timer calls this)."""
        if self.chain.seq > self._checkpointed:
            return [self._checkpoint(now)]
        return []

    def close(self, now: datetime) -> list[Output]:
        """The chain's final checkpoint, at a clean shutdown: nothing follows it."""
        if self.chain.seq == 0:
            return []
        return [self._checkpoint(now, final=True)]

    def _checkpoint(self, now: datetime, *, final: bool = False) -> Output:
        head = self.chain
        mark = checkpoint(head, now=now, actor=_ACTOR, evaluator_id=self.evaluator_id, final=final)
        self._checkpointed = head.seq
        return (self.topics.chain_checkpoints, head.chain_id.encode(), self.codec.encode(mark))

    def handle_batch(self, state: Any, messages: Iterable[Any]) -> list[Output]:
        """The outputs of several records (Faust messages) in order, all against one state.

        Each record is marked in flight while it is handled; a record the processor died on
        (see :class:`~processors.inflight.InFlight`) is dead-lettered instead, and one the
        handler fails on is dead-lettered with the failure: the batch goes on either way.
        """
        out: list[Output] = []
        handle, inflight = self.handle, self.inflight
        try:
            for msg in messages:
                topic, partition, offset = msg.topic, msg.partition, msg.offset
                if inflight is not None:
                    deaths = inflight.begin(topic, partition, offset)
                    if deaths:
                        out.append(self._poison(msg, deaths))
                        continue
                try:
                    out += handle(
                        state,
                        topic=topic,
                        partition=partition,
                        offset=offset,
                        key=msg.key,
                        value=msg.value,
                    )
                except Exception as exc:  # one record's failure, not the batch's
                    log.exception("evaluator failed on %s[%s]@%s", topic, partition, offset)
                    out.append(
                        self._dead_letter(
                            topic,
                            partition,
                            offset,
                            msg.key,
                            msg.value,
                            "handler_error",
                            _failure(exc),
                        )
                    )
        finally:
            if inflight is not None:
                inflight.clear()
        return out

    def _poison(self, msg: Any, deaths: int) -> Output:
        reason = (
            f"the evaluator died {deaths} times while handling this record (a crash, a hang "
            "that got it killed, or memory): it is not handled again"
        )
        return self._dead_letter(
            msg.topic, msg.partition, msg.offset, msg.key, msg.value, "poison_record", reason
        )

    def _dead_letter(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        code: str,
        reason: str,
    ) -> Output:
        return self.letters.letter(
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            code=code,
            reason=reason,
        )


def _failure(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _without_trace(
    decision: DecisionRecorded, request: bytes | None, limit: int
) -> DecisionRecorded:
    """An ``error`` decision that fits: the trace's bulky parts left out, the request named."""
    size, digest = (len(request), hashlib.sha256(request).hexdigest()) if request else (0, "")
    reason = (
        f"the full decision trace would be over the {limit}-byte record limit: its facts, context, "
        f"constraints and shadow results are left out (request record: {size} bytes, sha256 "
        f"{digest}); treat this as error"
    )
    return replace(
        decision,
        determination=Determination.ERROR,
        constraints={},
        reasons=(reason,),
        reason_code=TRACE_TOO_LARGE,
        rule=None,
        facts={},
        context={},
        shadow_results=(),
    )


def _batch_without_trace(answer: BatchDecisionRecorded) -> BatchDecisionRecorded:
    """Every item an ``error`` that says why, and nothing else that could be large."""
    return replace(
        answer,
        decisions=tuple(
            BatchItemDecision(
                item_id=d.item_id,
                action=d.action,
                resource=d.resource,
                determination=Determination.ERROR,
                reason_code=TRACE_TOO_LARGE,
            )
            for d in answer.decisions
        ),
    )


def create_app(settings: Settings, *, bootstrap: str, evaluator_id: str | None = None) -> Processor:
    """Build an evaluator app. Several workers of the same app share the request partitions."""
    evaluator_id = evaluator_id or f"evaluator-{socket.gethostname()}-{os.getpid()}"
    app = create_faust_app(settings, app_id=APP_ID, bootstrap=bootstrap)
    codec = default_codec()
    stats = ProcessorStats()
    follower = GovernanceFollower(
        bootstrap=bootstrap, topics=settings.topics, codec=codec, security=settings.security
    )
    inflight = InFlight(state_dir(settings, APP_ID) / "inflight")
    handler = RequestHandler(
        settings=settings,
        codec=codec,
        evaluator_id=evaluator_id,
        stats=stats,
        limit=OutputLimit.for_app(app),
        inflight=inflight,
    )
    deduplicated = asyncio.Event()

    processor = Processor(app=app, follower=follower, stats=stats, gates=(deduplicated,))

    @app.task
    async def follow_governance() -> None:
        await follower.run()

    @app.task
    async def remember_answered() -> None:
        seen = await asyncio.to_thread(
            answered_since_last_commit,
            bootstrap,
            settings.topics,
            app.conf.id,
            security=settings.security,
        )
        handler.recent.update(seen)
        log.info("start-up: %d request ids answered since the last commit", len(seen))
        log.info("decisions are chained in %s", handler.chain.chain_id)
        deduplicated.set()

    @app.agent(app.topic(settings.topics.evaluation_requests))
    async def answer(stream: Any) -> None:
        # Outputs go straight to the app's producer: Faust's Topic.send adds a FutureMessage,
        # sensors and a debug log per record (about a quarter of the agent's CPU). Durability is
        # the same: Faust flushes this producer before it commits input offsets.
        # Requests are taken in batches: a batch's outputs are all queued before the producer's
        # sender runs, so they leave in one produce request instead of one or two per decision.
        # take_events acks a batch only after this body has queued all of its outputs; if the
        # body raised, it would ack the batch anyway, so nothing may raise out of it: a record
        # that fails becomes a dead letter, and anything else stops the process uncommitted.
        producer = app.producer
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN):
            if not (follower.ready.is_set() and deduplicated.is_set()):
                await processor.ready()
            try:
                outputs = handler.handle_batch(follower.state, [e.message for e in events])
            except Exception:  # see above
                die(HANDLING_FAILED_EXIT, "evaluator failed outside any one record")
            await send_all(producer, outputs)

    @app.timer(interval=CHECKPOINT_INTERVAL)
    async def checkpoint_chain() -> None:
        await send_all(app.producer, handler.tick(utcnow()))

    @app.on_before_shutdown.connect
    async def final_checkpoint(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Faust sends this after the agents stopped and before it flushes the producer: the
        # chain's last head is written with the last decisions.
        await send_all(app.producer, handler.close(utcnow()))
        log.info("chain %s closed at %d records", handler.chain.chain_id, handler.chain.seq)

    @app.timer(interval=30.0)
    async def report() -> None:
        log.info(
            "evaluator stats: %s, governance events %d (%d undecodable)",
            stats,
            follower.applied,
            follower.undecodable,
        )

    return processor


def main() -> None:
    """Entry point of ``python -m processors.evaluator``."""
    from processors.run import run_worker

    run_worker(create_app, name="evaluator")


if __name__ == "__main__":
    main()
