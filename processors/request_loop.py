"""The evaluator's request path on Kafka, in batches end to end (DESIGN §12).

:class:`RequestLoop` runs on a thread of its own: a librdkafka consumer in the evaluator group
fetches up to :data:`BATCH_MAX` requests, the :class:`~processors.request_handler.RequestHandler`
answers them all against one governance state, the answers are produced (many per produce
request), and once every one of them is acknowledged by the broker (``acks=all``) the batch's
offsets are committed, asynchronously and at most once per :data:`COMMIT_INTERVAL`. Answers go
to the decisions/corrections partition a request names (``reply_partition``), so a client reads
one partition, not every decision of the ledger. Chain checkpoints are held until the batches
before them are settled.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Collection
from typing import Any

from ledger.ids import utcnow
from ledger.kafka.clients import make_rdkafka_consumer, make_rdkafka_producer
from ledger.kafka.dedup import RELEASED, answered_since_last_commit, released
from ledger.kafka.offsets import past_end_note
from ledger.settings import Settings
from processors.common import (
    DELIVERY_FAILED_EXIT,
    HANDLING_FAILED_EXIT,
    die,
)
from processors.outputs import Output
from processors.request_handler import Owed, RequestHandler

__all__ = [
    "RequestLoop",
    "Record",
    "BATCH_MAX",
    "COMMIT_INTERVAL",
    "SETTLE_WAIT",
    "CHECKPOINT_INTERVAL",
    "REJOIN_AFTER",
]

log = logging.getLogger("ledger.evaluator")

# Requests fetched and answered per batch at most. A batch is whatever has arrived: nothing
# waits for a batch to fill, so a request that arrives alone is answered alone, at once.
BATCH_MAX = 2000

COMMIT_INTERVAL = 0.1
"""Seconds between the request loop's asynchronous offset commits, at most."""
SETTLE_WAIT = 0.05
"""Seconds the idle request loop waits for a request while outputs are in flight (their
acknowledgements are settled after at most this)."""
CLAIM_RETRY = 1.0
"""Seconds between attempts to claim request partitions that wait, paused, to be claimed."""
PAUSED = 5.0
"""Seconds of this process not running (stopped, or starved) past which its group may have
handed its partitions on (its session times out after 10 s without a heartbeat): what it fetched
before is not answered (:meth:`RequestLoop._stand_down`). Its waits for records are 0.2 s."""
STAND_DOWN = 3.0
"""Seconds a stood-down loop answers nothing: three heartbeats, in which the consumer learns
whether its partitions are still its own."""
CHECKPOINT_INTERVAL = 1.0
"""Seconds between the evaluator's checkpoint ticks: a chain that grew since its last checkpoint
gets one, so its newest records are vouched for within about a second."""
LOOP_STUCK = 120.0
"""Seconds the loop may take to come round once (a rebalance callback flushing and committing,
an assignment's read, a retried claim: each bounded well below this) before ``alive()`` is
false: a call into Kafka that never returns leaves it holding partitions it answers nothing on,
and neither its batch timer nor its group membership would tell."""
STATS_INTERVAL_MS = 5000
"""Milliseconds between librdkafka's statistics of the request consumer, which say where its
group membership stands (:meth:`RequestLoop.out_of_group`); an assignment says so at once."""
REJOIN_AFTER = 30.0
"""Seconds out of its group (no request partition held, the consumer not a settled member)
after which the loop replaces its consumer with a new one, which joins the group anew; again
as long after each replacement while it stays out. Half of
:data:`~processors.heartbeat.OUT_OF_GROUP_AFTER`, after which it is not healthy."""


class Record:
    """One fetched request: what :meth:`RequestHandler.handle_batch` reads of a message."""

    __slots__ = ("key", "offset", "partition", "topic", "value")

    def __init__(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset
        self.key, self.value = key, value


class _Batch:
    """One fetched batch whose outputs are in flight: settled when all are acknowledged."""

    __slots__ = ("failure", "offsets", "pending", "settled")

    def __init__(self, records: list[Record]) -> None:
        self.pending = 0
        self.failure: Any = None
        self.settled = False  # every output acknowledged, and every batch before it
        self.offsets = {(r.topic, r.partition): r.offset + 1 for r in records}

    def delivered(self, error: Any, message: Any) -> None:
        self.pending -= 1
        if error is not None and self.failure is None:
            self.failure = error


class RequestLoop:
    """The batched request path on its own thread (see the module docstring).

    Per batch: fetch what has arrived (up to :data:`BATCH_MAX`), answer it against the current
    governance state (``state()``) and queue every output to the producer; the next batch is
    fetched while those are in flight. A batch's offsets are committed once the broker has
    acknowledged all of its outputs (``acks=all``), batches in the order they were fetched. An
    output the broker refuses, or any failure outside one record's handling, stops the process
    before that commit (the batch is re-delivered on restart, and request ids make that
    idempotent). When the group takes partitions away, every output in flight is awaited and
    their offsets committed synchronously before they go, so another worker never re-answers
    what this one answered.

    ``alive()`` is false while a batch has been in hand for longer than ``stuck_after`` seconds
    (a record hanging the handler): the heartbeat stops, so a supervisor sees it.
    ``out_of_group()`` says since when the loop has held no request partition while its
    consumer was not a settled member of its group (librdkafka's statistics say where the
    membership stands): out for :data:`REJOIN_AFTER` seconds, the consumer is replaced by a new
    one that joins anew (:meth:`_rejoin`); out for longer, the heartbeat says it is not healthy.

    The handler's hash chain is only touched on this thread: its checkpoints are made when a
    batch reaches :data:`CHECKPOINT_EVERY`, every ``checkpoint_interval`` seconds when the chain
    grew (:meth:`RequestHandler.tick`), and once after the last batch when the loop is stopped
    (:meth:`stop`: the final checkpoint, :meth:`RequestHandler.close`). A checkpoint vouches for
    every decision up to its sequence number, so it is *held* until the batches before it are
    settled (all their outputs acknowledged): a decision that never reached the broker — the
    process stops on it — is never vouched for, and ``audit verify`` does not report it missing.
    A loop that dies writes no final checkpoint (nor one while anything is unacknowledged); the
    restarted process starts a chain of its own.
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        settings: Settings,
        handler: RequestHandler,
        state: Callable[[], Any],
        max_bytes: int,
        stuck_after: float = 10.0,
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
        consumer_config: dict[str, Any] | None = None,
        producer_config: dict[str, Any] | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._group_id = group_id
        self._topics = settings.topics
        self._security = settings.security
        self._handler = handler
        self._state = state
        self._max_bytes = max_bytes
        self._stuck_after = stuck_after
        self._checkpoint_interval = checkpoint_interval
        self._consumer_config = consumer_config or {}
        self._producer_config = producer_config or {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ledger-requests", daemon=True)
        self._busy_since: float | None = None
        self._turn_at: float | None = None  # when the loop last came round (monotonic)
        self._open: collections.deque[_Batch] = collections.deque()  # outputs in flight
        # Chain checkpoints waiting for the batch they follow to settle.
        self._held: collections.deque[tuple[_Batch, list[Output]]] = collections.deque()
        self._producer: Any = None
        self._committed: dict[tuple[str, int], int] = {}  # next offset, last committed
        self._handled: dict[tuple[str, int], int] = {}  # next offset, handled and durable
        # Partitions the group took away: a batch of theirs that settles late (a revoke whose
        # flush timed out) must not commit for the partition's next owner.
        self._gone: set[tuple[str, int]] = set()
        # Per partition held, the offset its handled offset must reach before a revoke may mark
        # it RELEASED: where this worker began when the last owner released it, else the end of
        # the partition when this worker took it (a dead owner answered nothing after that).
        self._clean_from: dict[tuple[str, int], int] = {}
        self._partitions: dict[str, int] = {}  # reply and request topic -> partition count
        self._holding: set[tuple[str, int]] = set()  # the request partitions assigned to it
        self._unclaimed: list[Any] = []  # assigned, but not yet safe to answer: paused
        # Claimed at their end, their commit having lain past it: fetched from there.
        self._starts: dict[tuple[str, int], int] = {}
        self._said_past_end: set[tuple[str, int, int]] = set()  # said once, not every retry
        self._metadata_at = 0.0
        self._unsaved = False  # offsets handled since the last commit
        self._assignments = 0  # partition assignments so far
        self._consumer: Any = None  # the request consumer in use
        self._group = "not joined"  # librdkafka's group and join state, from its statistics
        self._out_at: float | None = None  # out of the group since (monotonic)
        self._joined_at = 0.0  # when the consumer in use was made (monotonic)
        self.rejoins = 0
        """How many times the loop replaced a consumer that stayed out of its group."""
        self._called_back = 0.0  # when a rebalance callback last returned (monotonic)
        self._commit_at = 0.0
        self.batches = 0
        self.stopped = False
        """True once :meth:`stop` was called: the loop ends because it was told to."""
        self.started = threading.Event()
        """Set once the consumer has subscribed (tests, and the log)."""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the batch in hand: its outputs and the chain's final checkpoint are
        written and its offsets committed before the thread ends."""
        self.stopped = True
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def holding(self) -> tuple[int, int]:
        """How many request partitions this loop holds, of how many there are (0: unknown
        yet): what ``ledger up``/``ps`` add up over the evaluators."""
        waiting = {(tp.topic, tp.partition) for tp in self._unclaimed}
        held = len(self._holding - waiting)  # one paused until claimed answers nothing yet
        return held, self._partitions.get(self._topics.evaluation_requests, 0)

    def alive(self) -> bool:
        """False while one batch has been in hand for longer than ``stuck_after`` seconds, or
        the loop has not come round for :data:`LOOP_STUCK` seconds."""
        since, turn, now = self._busy_since, self._turn_at, time.monotonic()
        if turn is not None and now - turn > LOOP_STUCK:
            return False
        return since is None or now - since < self._stuck_after

    def out_of_group(self) -> tuple[float, str] | None:
        """Since when (Unix time) this loop has held no request partition while its consumer
        was not a settled member of its group, with where librdkafka's membership stands
        (``up/wait-join``); ``None`` while it holds some, or is a member holding none (more
        workers than partitions), or has no consumer yet. What the heartbeat carries: out for
        long, the worker is not healthy (:meth:`~processors.heartbeat.Heartbeat.problem`)."""
        at = self._out_at
        if at is None:
            return None
        return time.time() - (time.monotonic() - at), self._group

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException:  # the request path is the evaluator: without it, stop
            if not self._stop.is_set():
                die(HANDLING_FAILED_EXIT, "the evaluator's request loop failed")

    def _serve(self) -> None:
        from confluent_kafka import KafkaError, KafkaException

        self._open.clear()
        self._held.clear()
        consumer = self._new_consumer()
        producer = self._producer = make_rdkafka_producer(
            self._bootstrap,
            security=self._security,
            **{"message.max.bytes": self._max_bytes, **self._producer_config},
        )
        try:
            self._subscribe(consumer)
            self._refresh_partitions(producer)
            self.started.set()
            handler, state = self._handler, self._state
            interval = self._checkpoint_interval
            next_tick, next_claim = time.monotonic() + interval, 0.0
            while not self._stop.is_set():
                # Time this process did not run (wall time less its CPU time, every thread's: a
                # thread waiting for the GIL is not a stopped process) is a pause its group may
                # have acted on; the consumer's heartbeats run on librdkafka's own thread. Timed
                # from the top of each turn, since a stop anywhere in it (settling, dispatching
                # the turn before) leaves fetched records queued; restarted after what blocks.
                turn, spent = time.monotonic(), time.process_time()
                self._turn_at = turn
                self._settle(consumer, producer)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + interval
                    self._hold(producer, handler.tick(utcnow()))
                if self._unclaimed and time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + CLAIM_RETRY
                    self._retry_claims(consumer)
                    turn, spent = time.monotonic(), time.process_time()  # it waits on Kafka
                if self._stays_out():
                    consumer = self._rejoin(consumer)
                    turn, spent = time.monotonic(), time.process_time()
                # consume() waits until it has all it asked for: take what is there, and when
                # nothing is, wait for one record only (a record ends the wait at once). While
                # outputs are in flight the wait is shorter, so their acknowledgements are
                # settled within SETTLE_WAIT — they only gate commits (at most one per
                # COMMIT_INTERVAL) and checkpoints, never an answer: waking every millisecond for
                # them cost the evaluator CPU and the round trip its tail at low rates.
                messages = consumer.consume(num_messages=BATCH_MAX, timeout=0)
                if not messages:
                    first = consumer.poll(SETTLE_WAIT if self._open else 0.2)
                    if first is None:
                        continue
                    messages = [first, *consumer.consume(num_messages=BATCH_MAX - 1, timeout=0)]
                got, worked = time.monotonic(), time.process_time()
                stopped = (got - max(turn, self._called_back)) - (worked - spent)
                if stopped > PAUSED:  # its wait for records is 0.2 s at most
                    self._stand_down(consumer, messages, stopped)
                    continue
                self._busy_since = got
                records, broken = [], []
                for message in messages:
                    error = message.error()
                    if error is not None:
                        if error.fatal() or error.code() == KafkaError._FATAL:  # as commands'
                            raise KafkaException(error)
                        offset = message.offset()
                        if (
                            error.code() == KafkaError._BAD_COMPRESSION
                            and offset is not None
                            and offset >= 0
                        ):
                            # Fetched again forever otherwise, the partition's requests after
                            # it never answered (a red team's zstd record inflating past
                            # librdkafka's limit): dead-lettered with no bytes, and passed.
                            broken.append((message, error))
                            continue
                        log.warning("request consumer: %s", error)
                        continue
                    records.append(
                        Record(
                            message.topic(),
                            message.partition(),
                            message.offset(),
                            message.key(),
                            message.value(),
                        )
                    )
                if records:
                    # Not checked again after handling: the handler has recorded these answers
                    # (ids, chain) by then, so dropping them would leave them unanswered.
                    self._dispatch(producer, handler.handle_batch(state(), records), records)
                passed = set()
                for message, error in broken:  # one letter per offset, fetched twice or not
                    where = (message.topic(), message.partition(), message.offset())
                    if where not in passed:
                        passed.add(where)
                        self._pass_undecompressible(consumer, producer, message, error)
                self.batches += 1
                self._busy_since = None
        finally:
            self._busy_since = None
            with contextlib.suppress(Exception):
                for _ in range(2):  # settling releases held checkpoints: flush those too
                    producer.flush(10)
                    self._settle(consumer, producer, asynchronous=False)
            if self._stop.is_set():
                self._close_chain(producer)
            with contextlib.suppress(Exception):
                consumer.close()
            with contextlib.suppress(Exception):
                producer.close()

    def _new_consumer(self) -> Any:
        made: list[Any] = []

        def stats(raw: str) -> None:  # one replaced, closing on another thread, is not heard
            if made and made[0] is self._consumer:
                self._stats(raw)

        consumer = make_rdkafka_consumer(
            self._bootstrap,
            security=self._security,
            **{
                "group.id": self._group_id,
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1_000,
                "max.poll.interval.ms": 300_000,
                "statistics.interval.ms": STATS_INTERVAL_MS,
                "stats_cb": stats,
                # Where a held partition's fetch lands outside its log: at its beginning, so a
                # partition that fell behind its log start (retention under a long backlog)
                # goes on from there, not from its end past every retained request unanswered
                # (a review; "latest" did that). A log that lost its tail while held is read
                # again from its beginning: what this worker answered is known as repeats
                # (RecentIds, its last million records). Where each starts when assigned is
                # set explicitly (_claim_released), whatever this says.
                "auto.offset.reset": "earliest",
                **self._consumer_config,
            },
        )
        made.append(consumer)
        self._consumer, self._joined_at = consumer, time.monotonic()
        if self._out_at is None and not self._holding:  # out until it is a member
            self._out_at, self._group = time.monotonic(), "not joined"
        return consumer

    def _subscribe(self, consumer: Any) -> None:
        consumer.subscribe(
            [self._topics.evaluation_requests],
            on_assign=self._assigned,
            on_revoke=self._revoked,
            on_lost=self._lost,
        )

    def _stats(self, raw: str) -> None:
        """librdkafka's statistics of the request consumer (served on this thread by consume
        and poll): whether it is a settled member of its group, holding partitions or not."""
        try:
            group = json.loads(raw).get("cgrp") or {}
        except (ValueError, AttributeError):
            return
        state, join = group.get("state"), group.get("join_state")
        self._group = f"{state}/{join}"
        if (state == "up" and join == "steady") or self._holding:
            self._out_at = None
        elif self._out_at is None:
            self._out_at = time.monotonic()

    def _stays_out(self) -> bool:
        """Out of its group for :data:`REJOIN_AFTER` seconds, with this consumer as long (one
        that holds partitions is never replaced: their revoke must run, see :meth:`_revoked`)."""
        out, now = self._out_at, time.monotonic()
        return (
            out is not None and not self._holding and now - max(out, self._joined_at) > REJOIN_AFTER
        )

    def _rejoin(self, consumer: Any) -> Any:
        """A new consumer, subscribed, in place of ``consumer``, which stayed out of its group
        (an operator's walkthrough: after two broker restarts in a row an evaluator logged its
        session timing out, then held nothing for good, its group EMPTY, while it reported
        itself healthy; a new process joined at once). Reproduced once in 14 rounds of broker
        hangs (SIGSTOP) and restarts, that time a 25 s SIGSTOP ended by SIGCONT (librdkafka
        2.16.0): its lost assignment served (``_lost``) and the loop polling, librdkafka stayed
        in ``query-coord/wait-unassign-to-complete`` for good, its GroupCoordinator connection
        never up again after an ApiVersion request timed out on the hung broker (``REQTMOUT …
        GroupCoordinator … 1 out-queue`` every minute). Nothing the loop can call on that
        consumer mends it; a new one has connections of its own.

        The old one holds no partition, so nothing of it is committed or answered any more; the
        new one reads each partition it is assigned first, as every assignment does. The old
        one is closed on a thread of its own (its rebalance callbacks are ignored, see
        :meth:`_ours`): a consumer stuck in its group may not close promptly. ``consumer``
        itself when no new one can be made (the broker away): tried again
        :data:`REJOIN_AFTER` seconds later."""
        log.warning(
            "this evaluator has held no request partition for %.0f s, its consumer not a member "
            "of its group (librdkafka: %s): joining the group anew with a new consumer",
            time.monotonic() - (self._out_at or 0.0),
            self._group,
        )
        try:
            fresh = self._new_consumer()
            self._subscribe(fresh)
        except Exception as exc:
            log.warning("could not make a new request consumer (%s): trying again later", exc)
            if self._consumer is not consumer:  # made, but not subscribed
                _close_quietly(self._consumer)
            self._consumer, self._joined_at = consumer, time.monotonic()
            return consumer
        threading.Thread(
            target=_close_quietly, args=(consumer,), name="ledger-requests-close", daemon=True
        ).start()
        self.rejoins += 1
        return fresh

    def _ours(self, consumer: Any) -> bool:
        """Whether a rebalance callback comes from the consumer in use (one replaced by
        :meth:`_rejoin` calls them while it closes, on another thread)."""
        return self._consumer is None or consumer is self._consumer

    def _pass_undecompressible(
        self, consumer: Any, producer: Any, message: Any, error: Any
    ) -> None:
        """Dead-letter a request whose batch does not decompress (``codec_error``, no bytes)
        and fetch on from the offset after it."""
        from confluent_kafka import KafkaException, TopicPartition

        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if (topic, partition) in self._gone:
            return  # revoked within this batch's fetch: its new owner passes it
        log.error(
            "request %s[%s]@%s does not decompress (%s): dead-lettered, and its partition "
            "goes on past it",
            topic,
            partition,
            offset,
            error.str(),
        )
        letter = self._handler.letters.undecompressible(message, error)
        self._dispatch(producer, [letter], [Record(topic, partition, offset, message.key(), None)])
        try:
            consumer.seek(TopicPartition(topic, partition, offset + 1))
        except KafkaException as exc:  # not fetching it now: it is fetched again, and passed
            log.warning("could not seek past %s[%s]@%s: %s", topic, partition, offset, exc)

    def _dispatch(self, producer: Any, outputs: list[Output], records: list[Record]) -> None:
        """Queue the outputs of one fetched batch; its chain checkpoints wait (see :meth:`_hold`)."""
        marks = self._topics.chain_checkpoints
        held = [o for o in outputs if o[0] == marks]
        batch = _Batch(records)
        self._produce(producer, [o for o in outputs if o[0] != marks] if held else outputs, batch)
        self._open.append(batch)
        if held:
            self._held.append((batch, held))

    def _hold(self, producer: Any, checkpoints: list[Output]) -> None:
        """Queue chain checkpoints once every batch fetched so far is settled: at once when
        nothing is in flight, else after the newest open batch (see :meth:`_settle`)."""
        if not checkpoints:
            return
        if self._open:
            self._held.append((self._open[-1], checkpoints))
        else:
            self._produce_extra(producer, checkpoints)

    def _produce_extra(self, producer: Any, outputs: list[Output]) -> None:
        """Queue outputs that answer no fetched record (chain checkpoints): settled in order
        with the batches, a failed delivery stops the process like any other."""
        if outputs:
            batch = _Batch([])
            self._produce(producer, outputs, batch)
            self._open.append(batch)

    def _close_chain(self, producer: Any) -> None:
        """The chain's final checkpoint, after every decision of this loop is written."""
        handler = self._handler
        if self._open or self._held:  # something unacknowledged: vouch for nothing more
            log.warning(
                "chain %s left without a final checkpoint: %d batch(es) unacknowledged",
                handler.chain.chain_id,
                len(self._open),
            )
            return
        try:
            outputs = handler.close(utcnow())
            if outputs:
                batch = _Batch([])
                self._produce(producer, outputs, batch)
                producer.flush(10)
                if batch.pending or batch.failure is not None:
                    log.warning("final chain checkpoint not written: %r", batch.failure)
                    return
            log.info("chain %s closed at %d records", handler.chain.chain_id, handler.chain.seq)
        except Exception:
            log.exception("final chain checkpoint failed")

    def _settle(self, consumer: Any, producer: Any, *, asynchronous: bool = True) -> None:
        """Commit the offsets of the oldest batches whose outputs are all acknowledged.

        Batches are settled in the order they were fetched, so a committed offset never passes
        a record whose outputs are still in flight.
        """
        producer.poll(0)  # runs the delivery callbacks
        while self._open and self._open[0].pending == 0:
            batch = self._open.popleft()
            if batch.failure is not None:
                die(
                    DELIVERY_FAILED_EXIT,
                    "output could not be written, stopping before any offset is committed: %r",
                    batch.failure,
                )
            batch.settled = True
            if self._gone:
                gone = self._gone
                self._handled.update((k, v) for k, v in batch.offsets.items() if k not in gone)
            else:
                self._handled.update(batch.offsets)
            self._unsaved = True
        while self._held and self._held[0][0].settled:  # what they vouch for is all written
            self._produce_extra(producer, self._held.popleft()[1])
        # At most one asynchronous commit per COMMIT_INTERVAL: a commit per small batch cost the
        # broker more than answering it. What is answered but not yet committed is re-delivered
        # after a crash and recognised by its next owner's assignment read; a rebalance and a stop
        # commit synchronously.
        now = time.monotonic()
        if not asynchronous or (self._unsaved and now - self._commit_at >= COMMIT_INTERVAL):
            self._commit(consumer, asynchronous=asynchronous)
            self._unsaved, self._commit_at = False, now

    def _produce(self, producer: Any, outputs: list[Output], batch: _Batch) -> None:
        """Queue ``outputs`` for the broker (each acknowledgement settles one of ``batch``)."""
        routes = self._handler.reply_partitions
        replies = (self._topics.decisions, self._topics.corrections)
        produce, delivered = producer.produce, batch.delivered
        batch.pending = len(outputs)
        for topic, key, value in outputs:
            partition = -1  # the partitioner's choice (by key)
            if topic in replies:
                wanted = routes.get(value)
                if wanted is not None:
                    partition = self._reply_partition(producer, topic, wanted)
            while True:
                try:
                    produce(topic, value, key, partition=partition, on_delivery=delivered)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    producer.poll(0.05)
                except Exception as exc:  # refused on the spot (too large, unknown topic …)
                    die(
                        DELIVERY_FAILED_EXIT,
                        "output to %s was refused, stopping before any offset is committed: %r",
                        topic,
                        exc,
                    )
        routes.clear()

    def _reply_partition(self, producer: Any, topic: str, wanted: int) -> int:
        """``wanted`` when ``topic`` has that partition, else the key's (-1): a request cannot
        make the evaluator produce to a partition that does not exist."""
        count = self._partitions.get(topic, 0)
        if wanted >= count and time.monotonic() - self._metadata_at > 10.0:
            self._refresh_partitions(producer)  # partitions may have been added since
            count = self._partitions.get(topic, 0)
        return wanted if 0 <= wanted < count else -1

    def _refresh_partitions(self, producer: Any) -> None:
        self._metadata_at = time.monotonic()
        topics = self._topics
        for topic in (topics.decisions, topics.corrections, topics.evaluation_requests):
            with contextlib.suppress(Exception):
                meta = producer.list_topics(topic, timeout=10).topics.get(topic)
                if meta is not None and meta.error is None:
                    self._partitions[topic] = len(meta.partitions)

    def _commit(
        self,
        consumer: Any,
        *,
        asynchronous: bool,
        only: set[tuple[str, int]] | None = None,
        force: bool = False,
        marking: Collection[tuple[str, int]] = (),
    ) -> None:
        from confluent_kafka import TopicPartition

        due = [
            TopicPartition(topic, partition, offset, metadata=RELEASED)
            if (topic, partition) in marking
            else TopicPartition(topic, partition, offset)
            for (topic, partition), offset in self._handled.items()
            if (force or self._committed.get((topic, partition)) != offset)
            and (only is None or (topic, partition) in only)
        ]
        if not due:
            return
        consumer.commit(offsets=due, asynchronous=asynchronous)
        for tp in due:
            self._committed[(tp.topic, tp.partition)] = tp.offset

    def _stand_down(self, consumer: Any, messages: list[Any], paused: float) -> None:
        """After this process was stopped for ``paused`` seconds (SIGSTOP, a frozen VM, a
        starved host) its group may have handed its partitions to another worker, who answered
        them: answering what was fetched before would decide them again (an operator's
        walkthrough: 2 requests of 3 freezes, decided twice up to 52 s apart). So answer
        nothing of it: seek back to it, and wait :data:`STAND_DOWN` seconds, fetching nothing
        into an answer, while the consumer's heartbeat learns whether the partitions are still
        ours (its rebalance callbacks run meanwhile). Ours, they are fetched again from there;
        another's, its new owner answers them, and ours again, the assignment reads what was
        answered on them first (:meth:`_assigned`)."""
        log.warning(
            "this evaluator was stopped for %.1f s: not answering the %d requests fetched "
            "before, until the group says whose their partitions are",
            paused,
            len(messages),
        )
        self._busy_since = None
        self._seek_back(consumer, messages)
        deadline = time.monotonic() + STAND_DOWN
        while time.monotonic() < deadline and not self._stop.is_set():
            self._seek_back(consumer, consumer.consume(num_messages=BATCH_MAX, timeout=0.1))

    @staticmethod
    def _seek_back(consumer: Any, messages: list[Any]) -> None:
        """Fetch each partition of ``messages`` again from the first of them (a partition no
        longer ours raises: its new owner fetches it from the committed offset)."""
        from confluent_kafka import KafkaException, TopicPartition

        first: dict[tuple[str, int], int] = {}
        for message in messages:
            offset = message.offset()
            if offset is not None and offset >= 0:
                where = (message.topic(), message.partition())
                first[where] = min(first.get(where, offset), offset)
        for (topic, partition), offset in first.items():
            with contextlib.suppress(KafkaException):
                consumer.seek(TopicPartition(topic, partition, offset))

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        if not self._ours(consumer):
            return
        # librdkafka assigns them when this returns; ours again, their offsets count again.
        self._gone.difference_update((tp.topic, tp.partition) for tp in partitions)
        self._holding.update((tp.topic, tp.partition) for tp in partitions)
        self._out_at = None  # a member: its group assigned it these (perhaps none)
        # Every assignment, the first too: it is the evaluator's only read of what the group
        # answered (one at start-up, before joining, was stale once a worker died in between: a
        # red team had 4 requests decided twice so). Only a partition its last owner released
        # cleanly needs no reading.
        if partitions:
            unclaimed = self._take(consumer, partitions)
            # Assigned here, not by librdkafka on return: it keeps a partition paused across a
            # revoke and a re-assignment (a review: one revoked while waiting to be claimed came
            # back paused for good), so each is resumed, then those that must wait paused.
            # One whose commit lay past its end starts where it was claimed (_claim_released).
            starts, self._starts = self._starts, {}
            for tp in partitions:
                start = starts.get((tp.topic, tp.partition))
                if start is not None:
                    tp.offset = start
            consumer.assign(partitions)
            consumer.resume(partitions)
            if unclaimed:
                consumer.pause(unclaimed)
                self._unclaimed += unclaimed
        self._assignments += 1
        self._called_back = time.monotonic()  # its reading is not a pause (see _serve)

    def _take(self, consumer: Any, partitions: list[Any]) -> list[Any]:
        """Make ``partitions`` safe to answer: claim those released, read what was answered on
        the others since their last commit. Returns those that are neither (a claim refused, a
        read that failed): they must wait, paused, until a retry takes them."""
        unread, unclaimed = self._claim_released(consumer, partitions)
        if unread:
            if self._remember_answered(sorted(tp.partition for tp in unread)):
                self._note_ends(consumer, unread)
            else:
                unclaimed += unread
        return unclaimed

    def _retry_claims(self, consumer: Any) -> None:
        """Try again to take the partitions that wait, paused; resume those taken."""
        from confluent_kafka import TopicPartition

        waiting = self._unclaimed
        self._unclaimed = self._take(consumer, waiting)
        still = {(tp.topic, tp.partition) for tp in self._unclaimed}
        ready = []
        for tp in waiting:
            where = (tp.topic, tp.partition)
            if where in still:
                continue
            start = self._starts.get(where)
            if start is not None:
                try:  # from there: librdkafka may hold the commit that lay past the end
                    consumer.seek(TopicPartition(tp.topic, tp.partition, start))
                except Exception as exc:  # paused until a seek succeeds
                    log.warning("could not seek request partition %s to %d: %s", where, start, exc)
                    self._unclaimed.append(tp)
                    continue
                del self._starts[where]
            ready.append(tp)
        if ready:
            consumer.resume(ready)

    def _claim_released(self, consumer: Any, partitions: list[Any]) -> tuple[list[Any], list[Any]]:
        """Split ``partitions`` into those whose answers since their last commit must be read
        (their last owner did not release them), and those that must wait.

        One committed :data:`RELEASED` needs no reading, but is claimed first (its offset
        committed again, unmarked): were this worker to answer on it and die before its next
        commit, the mark would tell the next owner that nothing was answered after it. One
        whose mark cannot be read, or that cannot be claimed (the coordinator away, another
        rebalance begun), waits paused until a claim succeeds (:meth:`_retry_claims`)."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        try:
            committed = consumer.committed(
                [TopicPartition(tp.topic, tp.partition) for tp in partitions], timeout=10
            )
        except Exception as exc:
            log.warning("could not read the commits of request partitions %s: %s", partitions, exc)
            return [], list(partitions)
        unknown = {(tp.topic, tp.partition) for tp in committed if tp.error is not None}
        for tp in committed:  # never committed: from the beginning, as a new group starts
            if tp.error is None and tp.offset < 0:
                self._starts[(tp.topic, tp.partition)] = OFFSET_BEGINNING
        ends = self._past_end(consumer, [tp for tp in committed if tp.error is None])
        marked = [
            TopicPartition(tp.topic, tp.partition, ends.get((tp.topic, tp.partition), tp.offset))
            for tp in committed
            if tp.error is None
            and tp.offset >= 0
            and (released(tp.metadata) or (tp.topic, tp.partition) in ends)
        ]
        unknown |= {where for where, end in ends.items() if end < 0}
        marked = [tp for tp in marked if tp.offset >= 0]
        try:
            claimed = consumer.commit(offsets=marked, asynchronous=False) if marked else []
        except Exception as exc:
            log.warning("could not claim request partitions %s: %s", marked, exc)
            claimed = []
        ours = set()
        for tp in claimed or []:
            if tp.error is None:
                where = (tp.topic, tp.partition)
                ours.add(where)
                self._handled[where] = self._committed[where] = self._clean_from[where] = tp.offset
                if where in ends:
                    self._starts[where] = tp.offset
        unknown |= {(tp.topic, tp.partition) for tp in marked} - ours
        if ours:
            log.info(
                "assigned request partitions %s: handed over cleanly, nothing to read",
                sorted(partition for _, partition in ours),
            )
        if unknown:
            log.warning(
                "request partitions %s wait, paused, until they can be claimed",
                sorted(partition for _, partition in unknown),
            )
        unread = [tp for tp in partitions if (tp.topic, tp.partition) not in ours | unknown]
        return unread, [tp for tp in partitions if (tp.topic, tp.partition) in unknown]

    def _past_end(self, consumer: Any, committed: list[Any]) -> dict[tuple[str, int], int]:
        """The partitions of ``committed`` whose committed offset lies past their end, each with
        its end now (-1: unknown, so the partition waits). librdkafka would start such a
        partition from its beginning (``auto.offset.reset`` as it was), deciding every request
        on it again; it starts at the end instead, claimed there (:meth:`_claim_released`), as
        :mod:`ledger.kafka.offsets` says. One committed before its log's start (the requests
        after its commit deleted by retention before they were answered) starts at the log's
        start, said at WARNING: ``auto.offset.reset`` would skip the rest of it."""
        from confluent_kafka import TopicPartition

        found: dict[tuple[str, int], int] = {}
        for tp in committed:
            if tp.offset < 0:
                continue  # never committed: from the beginning, as a new group starts
            where = (tp.topic, tp.partition)
            try:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=5
                )
            except Exception as exc:
                log.warning("could not read where request partition %s ends: %s", where, exc)
                found[where] = -1
                continue
            if tp.offset < low:
                log.warning(
                    "request partition %s was committed at offset %d, before its log's start "
                    "%d: requests in between were deleted (retention) before they were "
                    "answered; starting at %d",
                    where,
                    tp.offset,
                    low,
                    low,
                )
                self._starts[where] = low
            elif tp.offset > high:
                if (tp.topic, tp.partition, tp.offset) not in self._said_past_end:
                    self._said_past_end.add((tp.topic, tp.partition, tp.offset))
                    log.error(past_end_note(tp.topic, tp.partition, tp.offset, high))
                found[where] = high
        return found

    def _note_ends(self, consumer: Any, partitions: list[Any]) -> None:
        """Remember where ``partitions`` end now: what a dead owner answered on them lies
        before, so once this worker has handled that far it may release them marked."""
        from confluent_kafka import TopicPartition

        for tp in partitions:
            where = (tp.topic, tp.partition)
            try:
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=5
                )
            except Exception:  # unknown: released unmarked, its next owner reads it
                self._clean_from.pop(where, None)
            else:
                self._clean_from[where] = high

    def _remember_answered(self, partitions: list[int]) -> bool:
        """Before records of ``partitions`` are fetched: the request ids answered on them since
        their last commit. A worker that crashed between writing decisions and committing left
        them to be re-delivered to whoever takes its partitions, who would decide them again
        (an operator's walkthrough: 4 and 10 requests decided twice after a kill -9 of one of
        two workers), as would a worker restarted after its own crash. The evaluator's only such
        read: False when it failed, and the partitions are not answered until one succeeds.

        The corrections written since are read with them: a decision whose correction never
        reached the broker (the worker died between the two) is owed it, written when its
        request comes again (:meth:`RequestHandler.owe`), else the agent that went ahead on
        its default would never be told."""
        owing: dict[bytes, set[Owed]] = {}
        corrected: set[bytes] = set()

        def decided(key: bytes, value: bytes | None, partition: int) -> None:
            correction = self._handler.correction_owed(value)
            if correction is not None:  # to the partition its decision went to: its caller's
                owing.setdefault(key, set()).add((correction, partition))

        try:
            seen = answered_since_last_commit(
                self._bootstrap,
                self._topics,
                self._group_id,
                security=self._security,
                partitions=partitions,
                decided=decided,
                corrected=corrected,
            )
        except Exception as exc:  # a broker hiccup must not stop the evaluator
            log.warning(
                "could not read what was answered on request partitions %s since their last "
                "commit (%s): they wait, paused, until it can be read",
                partitions,
                exc,
            )
            return False
        self._handler.recent.update(seen)
        owed = self._handler.owe(owing, corrected)
        log.info(
            "assigned request partitions %s: %d request ids answered since their last commit%s",
            partitions,
            len(seen),
            f", {owed} of them owed the correction a crash left unwritten" if owed else "",
        )
        return True

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        if not self._ours(consumer):
            return
        # Called inside consume(), between batches: wait until every output in flight is
        # acknowledged, and make the commits of the partitions that leave durable, before
        # another worker reads them.
        leaving = {(tp.topic, tp.partition) for tp in partitions}
        if self._producer is not None:
            self._producer.flush(30)
            self._settle(consumer, self._producer)
        try:  # again, and synchronously, even what an asynchronous commit already sent
            self._commit(
                consumer,
                asynchronous=False,
                only=leaving,
                force=True,
                marking=self._releasable(leaving),
            )
        except Exception as exc:  # the next owner re-delivers, and its assignment read covers it
            log.warning("could not commit revoked partitions: %s", exc)
        self._forget(leaving)
        self._called_back = time.monotonic()

    def _releasable(self, leaving: set[tuple[str, int]]) -> set[tuple[str, int]]:
        """The ``leaving`` partitions with every answer on them acknowledged and handled past
        what anyone else may have answered: their commit says so (:data:`RELEASED`)."""
        unsettled = {where for batch in self._open for where in batch.offsets}
        return {
            where
            for where in leaving
            if where not in unsettled
            and where in self._handled
            and self._handled[where] >= self._clean_from.get(where, self._handled[where] + 1)
        }

    def _lost(self, consumer: Any, partitions: list[Any]) -> None:
        if not self._ours(consumer):
            return
        self._forget({(tp.topic, tp.partition) for tp in partitions})
        self._called_back = time.monotonic()

    def _forget(self, leaving: set[tuple[str, int]]) -> None:
        self._gone |= leaving
        self._holding -= leaving
        self._unclaimed = [tp for tp in self._unclaimed if (tp.topic, tp.partition) not in leaving]
        for where in leaving:
            self._starts.pop(where, None)
            self._handled.pop(where, None)
            self._committed.pop(where, None)
            self._clean_from.pop(where, None)


def _close_quietly(consumer: Any) -> None:
    with contextlib.suppress(Exception):
        consumer.close()
