"""The evaluator's work per request, with no I/O: decode → core ``evaluate`` → link into the
worker's hash chain → encode, within the record limit (DESIGN §6, §8, §9, §12).

:class:`RequestHandler` answers a request record with the records to write: the decision (a
link of the worker's chain), a correction for an async request the decision contradicts, a chain
checkpoint every :data:`CHECKPOINT_EVERY` decisions, a dead letter for a record it cannot answer
(undecodable, an id over its limit, an answer no record can hold) and an ``error`` decision for a
bad request. It answers a request id once (:class:`RecentIds`, seeded by the request loop for
each partition it is assigned). :mod:`processors.request_loop` feeds it batches from Kafka;
:mod:`processors.evaluator` wires the two into the Faust app.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any, TypeVar

from ledger.codec import Codec
from ledger.core.answering import answer_record
from ledger.core.chain import ChainHead, checkpoint
from ledger.core.evaluate import correction_for, unanswerable
from ledger.core.events import (
    EVALUATOR,
    BatchEvaluationRequested,
    DecisionCorrected,
    DecisionRecorded,
    EvaluationRequested,
)
from ledger.core.limits import DEFAULT_LIMITS
from ledger.errors import CodecError
from ledger.ids import new_id, utcnow
from ledger.settings import Settings
from processors.dead_letters import DeadLetters, decode_as
from processors.inflight import InFlight
from processors.outputs import Output, OutputLimit, ProcessorStats

__all__ = ["RequestHandler", "RecentIds", "Owed", "CHECKPOINT_EVERY"]

log = logging.getLogger("ledger.evaluator")

_REQUEST_TYPES = (EvaluationRequested, BatchEvaluationRequested)

OWED_FOR = 600.0
"""Seconds a correction a crash left unwritten stays owed: its request comes again at once,
from where the crashed worker's group commit left it; one owed for longer (a live worker's,
acknowledged just after the read, whose partition was handed over released) would be a second
copy if a retry brought its id again (a review)."""

E = TypeVar("E")

Owed = tuple[bytes, int]
"""A correction (its encoded record) and the partition of the corrections topic it goes to."""

CHECKPOINT_EVERY = 1000
"""A chain checkpoint follows at the latest this many decisions after the previous one."""


class RecentIds:
    """The requests recently answered (oldest forgotten first), each remembered as its record
    was sent, so that a re-delivered record is a repeat but another request under an answered
    id is not: a copy an attacker sent first under a genuine request's id (reading new requests
    with one credential, writing with the agent's) made the genuine one a "repeat", never
    answered (a red team). Ids answered since the last commit by whoever held the partitions
    (:meth:`update`, after a crash) are known by id only, and any request under one is a
    repeat.

    Each is kept as a 16-byte digest: a million records at full size held ~285 MB.
    """

    def __init__(self, capacity: int = 1_000_000) -> None:
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._capacity = capacity
        self._by_id = False  # no id known by id only: one digest a request, not two

    def repeats(self, request_id: bytes, request: bytes) -> bool:
        """Was ``request`` (a record's value) answered, or its id, when known by id only?"""
        seen = self._seen
        return _digest(request, _AS_SENT) in seen or (
            self._by_id and _digest(request_id, _BY_ID) in seen
        )

    def add(self, request: bytes) -> None:
        """Remember ``request`` (a record's value) as answered."""
        self._put(_digest(request, _AS_SENT))

    def update(self, ids: Iterable[bytes]) -> None:
        """Remember request ids answered since the last commit: any request under one repeats."""
        for key in ids:
            self._by_id = True
            self._put(_digest(key, _BY_ID))

    def _put(self, digest: bytes) -> None:
        self._seen[digest] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)


_AS_SENT, _BY_ID = b"request", b"request id"


def _digest(data: bytes, person: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16, person=person).digest()


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
        self.owed: dict[bytes, dict[Owed, float]] = {}
        """Request id -> each correction a decision under it, answered before a crash, still
        owes (the encoded correction and the partition that decision went to) and until when
        it is owed (monotonic; :meth:`owe`): written when the request comes again."""

        self.reply_partitions: dict[bytes, int] = {}
        """An answer (its record's value) -> the partition it goes to, for requests that name
        one (the sender of the outputs clears them; outputs stay ``(topic, key, value)``). By
        the answer, not its key: two requests under one id, both answered in a batch, may name
        different partitions, and each answer goes to its own request's."""
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
        refused = unanswerable(request)  # before it is answered, or remembered
        if refused is not None:
            code, reason = refused
            return [self._dead_letter(topic, partition, offset, key, value, code, reason)]
        rid = request.event_id.encode()
        sent = value or b""  # decoded: a record, never a tombstone
        if self.recent.repeats(rid, sent):
            self.stats.duplicates += 1
            return self._still_owed(rid)
        now = utcnow()
        made = answer_record(
            state,
            request,
            now=now,
            evaluator_id=self.evaluator_id,
            chain=self.chain,
            encode=self.codec.encode,
            max_bytes=self.limit.max_bytes,
            sent=value,
            latency=lambda: {"latency_us": (time.perf_counter_ns() - started) // 1000},
        )
        head = made.head
        out: list[Output] = [(self.topics.decisions, rid, made.encoded)]
        counted: Iterable[Any]
        if isinstance(made.record, DecisionRecorded):
            counted = (made.record,)
            correction = correction_for(made.record)
            if correction is not None:
                out.append((self.topics.corrections, rid, self.codec.encode(correction)))
        else:
            counted = made.record.decisions
        if not all(self.limit.fits(k, v) for _, k, v in out):
            reason = f"the smallest answer would be over the {self.limit.max_bytes}-byte limit"
            return [
                self._dead_letter(topic, partition, offset, key, value, "output_too_large", reason)
            ]
        self.chain = head  # only now: a record that is not written is not in the chain
        self.recent.add(sent)
        self.stats.processed += 1
        count = self.stats.decisions.count  # a dictionary increment each: the operator's signal
        for d in counted:
            count(d.determination, d.reason_code, d.policy, d.policy_version)
        if request.reply_partition is not None:
            for _topic, _key, record in out:
                self.reply_partitions[record] = request.reply_partition
        if head.seq - self._checkpointed >= self.checkpoint_every:
            out.append(self._checkpoint(now))
        return out

    def correction_owed(self, decision: bytes | None) -> bytes | None:
        """The encoded correction a recorded decision (a record's value) calls for, if any:
        an asynchronous decision that differs from its caller's default (the core's
        :func:`~ledger.core.evaluate.correction_for`). ``None`` for anything else, a record
        that does not decode included."""
        recorded = self._decoded(decision, DecisionRecorded)
        if recorded is None:
            return None
        correction = correction_for(recorded)
        return None if correction is None else self.codec.encode(correction)

    def owe(self, corrections: dict[bytes, set[Owed]], corrected: Collection[bytes]) -> int:
        """From one read of what was answered since the last commit: ``corrections`` (request
        id -> each correction its decisions call for, from :meth:`correction_owed`, with the
        partition each decision went to) and ``corrected``, the corrections the read found (their
        records). Those of the first that are not in the second were answered before a crash
        that kept their correction from the broker: each is written when its request is
        delivered again (not committed: a batch's offsets are committed only once all its
        outputs are written). A correction is known by its id and time
        (:meth:`_correction_key`), not by its request id (a red team: a copy under the id,
        decided by another worker with a correction of its own, made the one a crash left
        unwritten read as written). One owed
        at an earlier read whose correction this read found is owed no more (a review: a live
        worker's correction acknowledged after an earlier read's end, owed then, was written a
        second time). Returns how many are owed now."""
        now = time.monotonic()
        found = {self._correction_key(value) for value in corrected}
        for rid, owed in list(self.owed.items()):
            kept = {
                c: until
                for c, until in owed.items()
                if until > now and self._correction_key(c[0]) not in found
            }
            if kept:
                self.owed[rid] = kept
            else:
                del self.owed[rid]
        until, fresh = now + OWED_FOR, 0
        for rid, wanted in corrections.items():
            for owed_one in wanted:
                if self._correction_key(owed_one[0]) not in found:
                    self.owed.setdefault(rid, {})[owed_one] = until
                    fresh += 1
        return fresh

    def _correction_key(self, value: bytes) -> object:
        """A correction as :meth:`owe` knows it: its id and time (its decision's, which no
        copy under the request id shares), not its bytes, which differ by the schema form an
        evaluator wrote (a review: an older evaluator's correction, without constraints, read
        as unwritten, and was written again)."""
        correction = self._decoded(value, DecisionCorrected)
        return value if correction is None else (correction.event_id, correction.occurred_at)

    def _decoded(self, value: bytes | None, kind: type[E]) -> E | None:
        """``value`` decoded, when it is a record of ``kind``; else ``None``."""
        if not value:
            return None
        try:
            event = self.codec.decode(value)
        except CodecError:
            return None
        return event if isinstance(event, kind) else None

    def _still_owed(self, rid: bytes) -> list[Output]:
        """A repeated request's outputs: none, or the corrections its decisions still owe,
        each to the partition its decision went to (a review: to the repeat's own reply
        partition, a copy sent first under the id by a holder of the agent credential took the
        correction to a partition the agent does not read)."""
        owed = self.owed.pop(rid, None)
        if not owed:
            return []
        now, out = time.monotonic(), []
        for (correction, partition), until in owed.items():
            if until > now:
                self.reply_partitions[correction] = partition
                out.append((self.topics.corrections, rid, correction))
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
        mark = checkpoint(
            head, now=now, actor=EVALUATOR, evaluator_id=self.evaluator_id, final=final
        )
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
                        out.append(self.letters.poison(msg, deaths, "evaluator"))
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
                    out.append(self.letters.failure(msg, exc))
        finally:
            if inflight is not None:
                inflight.clear()
        return out

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
