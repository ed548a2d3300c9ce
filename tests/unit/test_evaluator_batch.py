"""RequestHandler.handle_batch: per-record semantics kept across a batch."""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta
from types import SimpleNamespace

from ledger.codec import default_codec
from ledger.core.events import DeadLetter, DecisionRecorded, EvaluationRequested
from ledger.core.state import EMPTY_STATE
from ledger.ids import new_id, utcnow
from ledger.settings import Settings
from processors.evaluator import RequestHandler
from processors.outputs import ProcessorStats


def _msg(offset: int, value: bytes | None) -> SimpleNamespace:
    return SimpleNamespace(topic="requests", partition=0, offset=offset, key=b"k", value=value)


def test_a_batch_answers_each_request_once_and_dead_letters_garbage() -> None:
    codec = default_codec()
    settings = Settings.from_env()
    handler = RequestHandler(
        settings=settings, codec=codec, evaluator_id="test", stats=ProcessorStats()
    )
    request = EvaluationRequested(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor="agent:a",
        action="refund.issue",
        principal="agent:a",
        resource="account:1",
        facts={},
    )
    raw = codec.encode(request)
    out = handler.handle_batch(EMPTY_STATE, [_msg(0, raw), _msg(1, b"garbage"), _msg(2, raw)])
    topics = settings.topics
    assert [topic for topic, _, _ in out] == [topics.decisions, topics.dead_letters]
    decision = codec.decode(out[0][2])
    assert isinstance(decision, DecisionRecorded) and decision.request_id == request.event_id
    assert isinstance(codec.decode(out[1][2]), DeadLetter)
    assert handler.stats.processed == 1 and handler.stats.duplicates == 1
    assert handler.stats.dead_lettered == 1


def test_a_correction_a_crash_left_unwritten_is_written_when_its_request_comes_again() -> None:
    # An asynchronous decision and its correction go to two topics: a worker killed after the
    # broker took the decision and before it took the correction left the request uncommitted,
    # and the worker after it found the request answered and wrote nothing: the agent that went
    # ahead on its default was never told.
    from ledger.core.events import DecisionCorrected, Determination, Mode

    codec = default_codec()
    settings = Settings.from_env()
    topics = settings.topics

    def handler() -> RequestHandler:
        return RequestHandler(
            settings=settings, codec=codec, evaluator_id="test", stats=ProcessorStats()
        )

    request = EvaluationRequested(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor="agent:a",
        action="refund.issue",  # governed by nothing: deny, where the agent went ahead on allow
        principal="agent:a",
        resource="account:1",
        facts={},
        mode=Mode.ASYNC,
        default=Determination.ALLOW,
        reply_partition=2,
    )
    raw = codec.encode(request)
    first = handler()
    out = first.handle_batch(EMPTY_STATE, [_msg(0, raw)])
    assert [topic for topic, _, _ in out] == [topics.decisions, topics.corrections]
    (_, rid, decided), (_, _, written) = out
    # The decision reached the broker, its correction did not; the next worker reads both
    # topics since the last commit and finds the decision owes one.
    after = handler()
    owed = after.correction_owed(decided)
    assert owed == written  # the same correction, id and all
    assert after.correction_owed(b"garbage") is None
    assert after.correction_owed(codec.encode(request)) is None  # not a decision
    after.recent.update({rid})
    assert after.owe({rid: {(owed, 2)}}, set()) == 1  # its decision went to partition 2
    # A review: a copy under the id, sent first with another reply partition by a holder of
    # the agent credential, took the correction to a partition the agent does not read.
    copy = codec.encode(dataclasses.replace(request, reply_partition=5))
    again = after.handle_batch(EMPTY_STATE, [_msg(0, copy)])
    assert again == [(topics.corrections, rid, written)]
    correction = codec.decode(again[0][2])
    assert isinstance(correction, DecisionCorrected)
    assert correction.decision_id == codec.decode(decided).event_id
    assert after.reply_partitions[written] == 2  # where its decision went: its caller reads there
    assert after.handle_batch(EMPTY_STATE, [_msg(0, raw)]) == []  # owed once
    assert after.stats.duplicates == 2 and after.stats.processed == 0
    # A review: one owed at a read (a live worker's correction acknowledged after the read's
    # end) is owed no more once a later read finds the correction, else written twice.
    assert after.owe({rid: {(owed, 2)}}, set()) == 1
    assert after.owe({}, {owed}) == 0 and rid not in after.owed
    assert after.handle_batch(EMPTY_STATE, [_msg(0, raw)]) == []
    # ... and owed for OWED_FOR at most: a retry under the id much later is no crash's.
    import processors.request_handler as request_handler

    assert after.owe({rid: {(owed, 2)}}, set()) == 1
    real = time.monotonic
    try:
        request_handler.time.monotonic = lambda: real() + request_handler.OWED_FOR + 1  # type: ignore[method-assign]
        assert after.handle_batch(EMPTY_STATE, [_msg(0, raw)]) == []
        assert after.owe({}, set()) == 0 and after.owed == {}
    finally:
        request_handler.time.monotonic = real  # type: ignore[method-assign]
    # A red team: a copy under the id, decided by another worker with a correction of its own
    # (on its own partition), made the one a crash left unwritten read as written. A correction
    # is known by its record and partition: the copy's is not the victim's.
    first = codec.decode(decided)
    copy_decided = codec.encode(  # decided by another worker, at another instant
        dataclasses.replace(
            first,
            action="copy.thing",
            reasons=("copied",),
            occurred_at=first.occurred_at + timedelta(milliseconds=3),
        )
    )
    copy_owed = after.correction_owed(copy_decided)
    assert copy_owed is not None and copy_owed != owed
    both = {(owed, 2), (copy_owed, 0)}
    assert after.owe({rid: both}, {copy_owed}) == 1  # the copy's was written, not ours
    assert after.handle_batch(EMPTY_STATE, [_msg(0, raw)]) == [(topics.corrections, rid, written)]
    assert after.reply_partitions[written] == 2
    assert after.owe({rid: both}, set()) == 2  # each owes its own
    assert sorted(after.handle_batch(EMPTY_STATE, [_msg(0, raw)])) == sorted(
        [(topics.corrections, rid, written), (topics.corrections, rid, copy_owed)]
    )
    assert after.owe({rid: both}, {owed, copy_owed}) == 0 and after.owed == {}
    # A review: an older evaluator's correction (no constraints in its schema) is another
    # record for the same correction: found by its id and time, it is owed no more.
    import json
    from io import BytesIO

    from fastavro import parse_schema, schemaless_writer

    from ledger.codec import MAGIC, _load_schema
    from ledger.contract import contract_dir

    v1 = contract_dir("schemas") / "history" / "DecisionCorrected.v1.avsc"
    record = codec._current[DecisionCorrected].to_avro(codec.decode(written))
    record.pop("constraints")
    older = BytesIO(MAGIC + _load_schema(v1)[1])
    older.seek(0, 2)
    schemaless_writer(older, parse_schema(json.loads(v1.read_text())), record)
    assert older.getvalue() != written and codec.decode(older.getvalue()) == codec.decode(written)
    assert after.owe({rid: {(owed, 2)}}, {older.getvalue()}) == 0 and after.owed == {}
    # A sync decision, or one that agrees with its default, owes nothing.
    sync = codec.encode(dataclasses.replace(request, mode=Mode.SYNC, default=None))
    (_, _, plain) = handler().handle_batch(EMPTY_STATE, [_msg(1, sync)])[0]
    assert after.correction_owed(plain) is None
