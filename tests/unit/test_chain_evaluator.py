"""The evaluator's RequestHandler keeps one hash chain: every record it writes to the decisions
topic is the chain's next link (the trace-too-large path and batches included), records that
are not written leave no gap, and checkpoints of the head come out every N decisions, on a
tick and at close."""

from __future__ import annotations

import itertools
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ledger.codec import default_codec
from ledger.core.chain import record_hash
from ledger.core.evaluate import TRACE_TOO_LARGE
from ledger.core.events import (
    BatchDecisionRecorded,
    BatchEvaluationRequested,
    BatchItem,
    ChainCheckpoint,
    DecisionRecorded,
    Determination,
    EvaluationRequested,
    Mode,
)
from ledger.core.state import EMPTY_STATE
from ledger.ids import new_id, utcnow
from ledger.settings import Settings
from processors.evaluator import RequestHandler
from processors.outputs import OutputLimit, ProcessorStats

CODEC = default_codec()
SETTINGS = Settings(home=Path("/nonexistent"))
TOPICS = SETTINGS.topics
_offsets = itertools.count()


def msg(value: bytes | None) -> Any:
    return SimpleNamespace(
        topic="requests", partition=0, offset=next(_offsets), key=b"k", value=value
    )


def request(**kw: Any) -> bytes:
    fields: dict[str, Any] = {
        "event_id": new_id(),
        "occurred_at": utcnow(),
        "actor": "agent:a",
        "action": "refund.issue",
        "principal": "agent:a",
        "resource": "account:1",
    }
    fields.update(kw)
    return CODEC.encode(EvaluationRequested(**fields))


def batch_request(n: int = 2) -> bytes:
    items = tuple(
        BatchItem(item_id=f"i{k}", action="refund.issue", resource=f"r{k}") for k in range(n)
    )
    return CODEC.encode(
        BatchEvaluationRequested(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor="agent:a",
            principal="agent:a",
            items=items,
        )
    )


def handler(*, every: int = 1000, limit: int = 8_000) -> RequestHandler:
    return RequestHandler(
        settings=SETTINGS,
        codec=CODEC,
        evaluator_id="evaluator-t",
        stats=ProcessorStats(),
        limit=OutputLimit(limit),
        checkpoint_every=every,
    )


def chained(out: list[tuple[str, bytes, bytes]]) -> list[Any]:
    return [CODEC.decode(v) for topic, _, v in out if topic == TOPICS.decisions]


def checkpoints(out: list[tuple[str, bytes, bytes]]) -> list[ChainCheckpoint]:
    found = []
    for topic, key, value in out:
        if topic == TOPICS.chain_checkpoints:
            mark = CODEC.decode(value)
            assert isinstance(mark, ChainCheckpoint) and key == mark.chain_id.encode()
            found.append(mark)
    return found


def assert_one_chain(records: list[Any]) -> None:
    assert records, "no decisions"
    assert len({r.chain_id for r in records}) == 1
    assert [r.chain_seq for r in records] == list(range(1, len(records) + 1))
    assert records[0].prev_hash is None
    for before, after in itertools.pairwise(records):
        assert after.prev_hash == before.hash
    for record in records:
        assert record.hash == record_hash(record)


def test_every_record_written_to_the_decisions_topic_is_a_link() -> None:
    h = handler()
    big = request(facts={"note": "x" * 20_000}, mode=Mode.ASYNC, default=Determination.ALLOW)
    out = h.handle_batch(
        EMPTY_STATE,
        [msg(request()), msg(big), msg(batch_request()), msg(request())],
    )
    records = chained(out)
    assert [type(r) for r in records] == [
        DecisionRecorded,
        DecisionRecorded,
        BatchDecisionRecorded,
        DecisionRecorded,
    ]
    assert records[1].reason_code == TRACE_TOO_LARGE  # the reduced trace is what is chained
    assert_one_chain(records)
    assert h.chain.seq == 4 and h.chain.hash == records[-1].hash
    assert records[0].chain_id.startswith("evaluator-t/")


def test_a_batch_too_large_is_chained_in_its_reduced_form() -> None:
    h = handler(limit=3_000)
    records = chained(h.handle_batch(EMPTY_STATE, [msg(batch_request(40)), msg(request())]))
    assert isinstance(records[0], BatchDecisionRecorded)
    assert {d.reason_code for d in records[0].decisions} == {TRACE_TOO_LARGE}
    assert_one_chain(records)


def test_records_not_written_leave_no_gap() -> None:
    h = handler()
    first = request()
    huge = CODEC.encode(
        EvaluationRequested(
            event_id="r" * 10_000,  # not even the smallest answer fits: a dead letter
            occurred_at=utcnow(),
            actor="agent:a",
            action="a",
            principal="agent:a",
            resource="x",
        )
    )
    out = h.handle_batch(
        EMPTY_STATE, [msg(first), msg(b"garbage"), msg(huge), msg(first), msg(request())]
    )
    records = chained(out)
    assert len(records) == 2  # the duplicate of `first` is not answered again
    assert_one_chain(records)
    assert h.stats.dead_lettered == 2 and h.stats.duplicates == 1


def test_checkpoints_every_n_decisions_on_ticks_and_at_close() -> None:
    h = handler(every=3)
    out = h.handle_batch(EMPTY_STATE, [msg(request()) for _ in range(7)])
    records = chained(out)
    marks = checkpoints(out)
    assert [m.chain_seq for m in marks] == [3, 6]
    for mark in marks:
        assert mark.head_hash == records[mark.chain_seq - 1].hash
        assert mark.chain_id == records[0].chain_id and not mark.final
    # A checkpoint follows its record in the outputs (written after it).
    topics = [topic for topic, _, _ in out]
    assert topics.index(TOPICS.chain_checkpoints) == 3

    now = utcnow()
    (ticked,) = checkpoints(h.tick(now))
    assert (ticked.chain_seq, ticked.head_hash, ticked.occurred_at) == (7, records[-1].hash, now)
    assert h.tick(now + timedelta(seconds=1)) == []  # nothing new: nothing to vouch for
    (final,) = checkpoints(h.close(now))
    assert final.final and final.chain_seq == 7


def test_an_idle_handler_publishes_nothing() -> None:
    h = handler()
    assert h.tick(utcnow()) == [] and h.close(utcnow()) == []


def test_each_handler_starts_a_chain_of_its_own() -> None:
    a, b = handler(), handler()
    assert a.chain.chain_id != b.chain.chain_id
    raw = request()
    (ra,) = chained(a.handle_batch(EMPTY_STATE, [msg(raw)]))
    (rb,) = chained(b.handle_batch(EMPTY_STATE, [msg(raw)]))
    assert ra.chain_seq == rb.chain_seq == 1 and ra.hash != rb.hash


def long_reason_state(reason_chars: int) -> Any:
    """refund.issue governed by a version recorded before policy_reason_chars: its default's
    reason is ``reason_chars`` long; agent:a is granted it."""
    from dataclasses import replace

    from ledger.core import decide, fold
    from ledger.core.events import (
        ApprovePolicyVersion,
        GrantIssued,
        PromotePolicyVersion,
        ProposePolicyVersion,
        Stage,
    )
    from ledger.core.limits import DEFAULT_LIMITS

    then = replace(DEFAULT_LIMITS, policy_reason_chars=DEFAULT_LIMITS.policy_document_bytes)
    document = (
        "policy: p\ngoverns: [refund.issue]\nowner: o\n"
        f"default: {{effect: deny, reason: {'x' * reason_chars}}}\n"
    )
    now = utcnow()
    ids = (f"e{i}" for i in itertools.count())
    state = EMPTY_STATE
    for command in (
        ProposePolicyVersion(
            event_id="c1", occurred_at=now, actor="human:a", document=document, policy="p"
        ),
        ApprovePolicyVersion(
            event_id="c2", occurred_at=now, actor="human:b", policy="p", version=1
        ),
        PromotePolicyVersion(
            event_id="c3",
            occurred_at=now,
            actor="human:b",
            policy="p",
            version=1,
            stage=Stage.ACTIVE,
        ),
    ):
        outcome = decide(
            state,
            command,
            now=now,
            new_id=lambda: next(ids),
            admins={"human:a", "human:b"},
            limits=then,
        )
        for event in outcome:  # type: ignore[union-attr]
            state = fold(state, event)
    grant = GrantIssued(
        event_id="eg",
        occurred_at=now,
        actor="human:a",
        command_id="cg",
        principal="agent:a",
        sequence=1,
        grant_id="g1",
        actions=("refund.issue",),
        resource="*",
    )
    return fold(state, grant)


def test_a_batch_whose_reasons_alone_are_over_the_limit_is_never_hashed_or_encoded_whole(
    monkeypatch: Any,
) -> None:
    # A red team: 500 items of a 261,000-character reason (a version recorded before
    # policy_reason_chars) were hashed and encoded whole, 130 MB each, before the answer was
    # found too large: +250 MB per request. The items' reasons alone say it cannot fit.
    import ledger.core.answering as answering_module

    linked: list[Any] = []
    real_link = answering_module.link

    def spy(record: Any, head: Any, changes: Any = None) -> Any:
        linked.append(record)
        return real_link(record, head, changes)

    monkeypatch.setattr(answering_module, "link", spy)
    state = long_reason_state(5_000)
    h = handler(limit=20_000)
    (record,) = chained(h.handle_batch(state, [msg(batch_request(10))]))
    assert {d.reason_code for d in record.decisions} == {TRACE_TOO_LARGE}
    assert all(  # only the reduced answer was ever hashed (and so encoded)
        {d.reason_code for d in r.decisions} == {TRACE_TOO_LARGE} for r in linked
    )
    assert_one_chain([record])
    # Within the limit, the same policy's answer is written whole.
    (whole,) = chained(handler(limit=60_000).handle_batch(state, [msg(batch_request(10))]))
    assert {d.reason_code for d in whole.decisions} == {"default_applied"}
