"""Every input record gets an outcome that fits a Kafka record, and nothing raises out of a batch.

The handlers of both processors, without Kafka: an oversized decision becomes an ``error``
decision that fits, an oversized governance event a ``too_large`` rejection, anything that still
would not fit a dead letter; a record the handler fails on, or that the process died on twice,
is dead-lettered and the records after it are answered. And a send the producer refuses on the
spot stops the process instead of raising into Faust (which would commit past the input).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.codec import default_codec
from ledger.core import answering
from ledger.core.evaluate import TRACE_TOO_LARGE
from ledger.core.events import (
    BatchDecisionRecorded,
    BatchEvaluationRequested,
    BatchItem,
    CommandAccepted,
    CommandRejected,
    DeadLetter,
    DecisionCorrected,
    DecisionRecorded,
    Determination,
    EvaluationRequested,
    IssueGrant,
    Mode,
    RevokeActorKey,
)
from ledger.core.lifecycle import register_anchors
from ledger.core.limits import DEFAULT_LIMITS
from ledger.core.signing import key_id_of
from ledger.core.state import EMPTY_STATE, fold
from ledger.ids import new_id, utcnow
from ledger.keys import public_bytes, sign
from ledger.settings import Settings
from processors.command_handler import CommandHandler
from processors.evaluator import RequestHandler
from processors.inflight import InFlight
from processors.outputs import OutputLimit, ProcessorStats

CODEC = default_codec()
SETTINGS = Settings(home=Path("/nonexistent"))
TOPICS = SETTINGS.topics
SMALL = OutputLimit(8_000)


def msg(offset: int, value: bytes | None, *, topic: str = "requests", key: bytes = b"k") -> Any:
    return SimpleNamespace(topic=topic, partition=0, offset=offset, key=key, value=value)


def request(
    request_id: str | None = None, *, resource: str = "account:1", **kw: Any
) -> EvaluationRequested:
    return EvaluationRequested(
        event_id=request_id or new_id(),
        occurred_at=utcnow(),
        actor="agent:a",
        action="refund.issue",
        principal="agent:a",
        resource=resource,
        **kw,
    )


def batch_request(request_id: str) -> BatchEvaluationRequested:
    return BatchEvaluationRequested(
        event_id=request_id,
        occurred_at=utcnow(),
        actor="agent:a",
        principal="agent:a",
        items=(BatchItem(item_id="1", action="refund.issue", resource="account:1"),),
    )


def requests_handler(
    limit: OutputLimit = SMALL, inflight: InFlight | None = None
) -> RequestHandler:
    return RequestHandler(
        settings=SETTINGS,
        codec=CODEC,
        evaluator_id="test",
        stats=ProcessorStats(),
        limit=limit,
        inflight=inflight,
    )


def decoded(out: list[tuple[str, bytes, bytes]]) -> list[tuple[str, Any]]:
    return [(topic, CODEC.decode(value)) for topic, _, value in out]


# --------------------------------------------------------------------------- evaluator


def test_a_decision_too_large_to_write_becomes_an_error_decision_that_fits() -> None:
    big = request(facts={"note": "x" * 20_000}, context={"trace": "y" * 5_000})
    raw = CODEC.encode(big)
    out = requests_handler().handle_batch(
        EMPTY_STATE, [msg(0, raw), msg(1, CODEC.encode(request()))]
    )
    ((topic, decision), (_, after)) = decoded(out)
    assert topic == TOPICS.decisions and isinstance(decision, DecisionRecorded)
    assert decision.request_id == big.event_id
    assert decision.determination is Determination.ERROR
    assert decision.reason_code == TRACE_TOO_LARGE
    assert not decision.facts and not decision.context
    assert hashlib.sha256(raw).hexdigest() in decision.reasons[0]
    assert all(SMALL.fits(key, value) for _, key, value in out)
    assert isinstance(after, DecisionRecorded) and after.reason_code == "no_authority"


def test_an_async_request_whose_trace_is_too_large_is_corrected_to_error() -> None:
    big = request(facts={"note": "x" * 20_000}, mode=Mode.ASYNC, default=Determination.ALLOW)
    out = decoded(requests_handler().handle_batch(EMPTY_STATE, [msg(0, CODEC.encode(big))]))
    assert [type(event) for _, event in out] == [DecisionRecorded, DecisionCorrected]
    assert out[1][1].determination is Determination.ERROR


def test_a_batch_answer_too_large_keeps_each_item_as_an_error() -> None:
    items = tuple(
        BatchItem(item_id=f"i{n}", action="refund.issue", resource=f"r{n}") for n in range(40)
    )
    batch = BatchEvaluationRequested(
        event_id=new_id(), occurred_at=utcnow(), actor="agent:a", principal="agent:a", items=items
    )
    out = decoded(
        requests_handler(OutputLimit(3_000)).handle_batch(
            EMPTY_STATE, [msg(0, CODEC.encode(batch))]
        )
    )
    ((_, answer),) = out
    assert isinstance(answer, BatchDecisionRecorded)
    assert [d.item_id for d in answer.decisions] == [i.item_id for i in items]
    assert {(d.determination, d.reason_code) for d in answer.decisions} == {
        (Determination.ERROR, TRACE_TOO_LARGE)
    }


def test_an_answer_no_record_can_hold_becomes_an_error_decision_not_a_dead_letter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A red team: a constraint's integer beyond 64 bits (in a shadow version, or stored before
    # proposals were refused it) could not be encoded, and every request it decided was
    # dead-lettered handler_error, unanswered, with the pre-evaluation items beside it.
    from ledger.core.evaluate import evaluate, evaluate_batch

    def huge(*a: Any, **k: Any) -> Any:
        return dataclasses.replace(evaluate(*a, **k), constraints={"cap": 10**20})

    def huge_items(*a: Any, **k: Any) -> Any:
        answer = evaluate_batch(*a, **k)
        items = [dataclasses.replace(d, constraints={"cap": 10**20}) for d in answer.decisions]
        return dataclasses.replace(answer, decisions=tuple(items))

    monkeypatch.setattr(answering, "evaluate", huge)
    monkeypatch.setattr(answering, "evaluate_batch", huge_items)
    asked = request()
    out = decoded(
        requests_handler(OutputLimit(DEFAULT_LIMITS.record_bytes)).handle_batch(
            EMPTY_STATE, [msg(0, CODEC.encode(asked)), msg(1, CODEC.encode(batch_request("b-1")))]
        )
    )
    ((_, decision), (_, batch)) = out
    assert isinstance(decision, DecisionRecorded) and decision.request_id == asked.event_id
    assert (decision.determination, decision.reason_code) == (Determination.ERROR, TRACE_TOO_LARGE)
    assert "could not be recorded (" in decision.reasons[0] and "64-bit" in decision.reasons[0]
    assert isinstance(batch, BatchDecisionRecorded)
    assert {(d.determination, d.reason_code) for d in batch.decisions} == {
        (Determination.ERROR, TRACE_TOO_LARGE)
    }
    assert "could not be recorded (" in batch.decisions[0].reasons[0]  # a review: it named none


def test_when_not_even_the_smallest_answer_fits_the_request_is_dead_lettered() -> None:
    huge = EvaluationRequested(  # names within their limits, together over this small limit
        event_id=new_id(),
        occurred_at=utcnow(),
        actor="agent:a",
        action="a" * 1_000,
        principal="agent:" + "p" * 1_000,
        resource="x" * 1_000,
    )
    out = requests_handler(OutputLimit(2_500)).handle_batch(
        EMPTY_STATE, [msg(0, CODEC.encode(huge)), msg(1, CODEC.encode(request()))]
    )
    ((topic, letter), (_, after)) = decoded(out)
    assert topic == TOPICS.dead_letters and isinstance(letter, DeadLetter)
    assert letter.code == "output_too_large"
    assert isinstance(after, DecisionRecorded)


def test_a_request_id_over_its_limit_is_dead_lettered_and_never_remembered() -> None:
    # Ids are remembered for a million requests: their size must be bounded before that.
    handler = requests_handler()
    long_id = "r" * (DEFAULT_LIMITS.request_id_chars + 1)
    for n, kind in enumerate((request, batch_request)):
        out = decoded(handler.handle_batch(EMPTY_STATE, [msg(n, CODEC.encode(kind(long_id)))]))
        ((topic, letter),) = out
        assert topic == TOPICS.dead_letters and isinstance(letter, DeadLetter)
        assert letter.code == "id_too_long" and "longer than 128" in letter.reason
    assert len(handler.recent) == 0
    edge = "r" * DEFAULT_LIMITS.request_id_chars
    sent = CODEC.encode(request(edge))
    ((_, decision),) = decoded(handler.handle_batch(EMPTY_STATE, [msg(9, sent)]))
    assert isinstance(decision, DecisionRecorded) and handler.recent.repeats(edge.encode(), sent)


def test_a_pre_evaluation_over_the_item_limit_is_dead_lettered_unevaluated() -> None:
    items = tuple(
        BatchItem(item_id=str(n), action="refund.issue", resource="r")
        for n in range(DEFAULT_LIMITS.batch_items + 1)
    )
    batch = replace(batch_request(new_id()), items=items)
    handler = requests_handler(OutputLimit(1_000_000))
    ((topic, letter),) = decoded(handler.handle_batch(EMPTY_STATE, [msg(0, CODEC.encode(batch))]))
    assert topic == TOPICS.dead_letters and isinstance(letter, DeadLetter)
    assert letter.code == "too_many_items" and "501 items" in letter.reason
    assert len(handler.recent) == 0
    at_limit = replace(batch, event_id=new_id(), items=items[:-1])
    ((_, answer),) = decoded(handler.handle_batch(EMPTY_STATE, [msg(1, CODEC.encode(at_limit))]))
    assert isinstance(answer, BatchDecisionRecorded) and len(answer.decisions) == 500


def test_a_record_the_evaluator_fails_on_is_dead_lettered_and_the_batch_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = answering.evaluate

    def failing(state: Any, req: EvaluationRequested, **kw: Any) -> DecisionRecorded:
        if req.resource == "account:bug":
            raise RecursionError("maximum recursion depth exceeded")
        return real(state, req, **kw)

    monkeypatch.setattr(answering, "evaluate", failing)
    records = [
        msg(0, CODEC.encode(request(resource="account:bug"))),
        msg(1, CODEC.encode(request())),
    ]
    out = decoded(requests_handler().handle_batch(EMPTY_STATE, records))
    assert [type(event) for _, event in out] == [DeadLetter, DecisionRecorded]
    letter = out[0][1]
    assert (letter.code, letter.offset) == ("handler_error", 0)
    assert letter.reason.startswith("RecursionError")


def test_a_record_in_flight_at_two_deaths_is_dead_lettered_unread(tmp_path: Path) -> None:
    poison, good = CODEC.encode(request(resource="account:poison")), CODEC.encode(request())
    for _ in range(2):  # two processes die while handling offset 1
        process = InFlight(tmp_path)
        process.begin("requests", 0, 1)
        process.close()
    handler = requests_handler(inflight=InFlight(tmp_path))
    out = decoded(handler.handle_batch(EMPTY_STATE, [msg(1, poison), msg(2, good)]))
    assert [type(event) for _, event in out] == [DeadLetter, DecisionRecorded]
    letter = out[0][1]
    assert (letter.code, letter.offset, letter.value) == ("poison_record", 1, poison)
    assert "died 2 times" in letter.reason
    # The batch's end cleared the markers: a later restart suspects nothing.
    assert InFlight(tmp_path).begin("requests", 0, 3) == 0


# --------------------------------------------------------------------------- command processor


def command_handler(limit: OutputLimit = SMALL) -> CommandHandler:
    settings = Settings(home=Path("/nonexistent"), admins=frozenset({"human:admin"}))
    return CommandHandler(settings=settings, codec=CODEC, stats=ProcessorStats(), limit=limit)


ADMIN_KEY = Ed25519PrivateKey.generate()
# The state a command processor starts from: the bootstrap administrator's key registered.
(_ANCHOR,) = register_anchors(
    EMPTY_STATE, {"human:admin": public_bytes(ADMIN_KEY)}, now=utcnow(), new_id=new_id
)
KEYED = fold(EMPTY_STATE, _ANCHOR)


def grant(note: str | None = None, principal: str = "agent:bot") -> IssueGrant:
    return sign(
        IssueGrant(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor="human:admin",
            grant_id=f"g-{new_id()}",
            principal=principal,
            actions=("a",),
            resource="*",
            note=note,
        ),
        ADMIN_KEY,
    )


def test_a_command_whose_event_would_not_fit_is_refused_whole() -> None:
    handler = command_handler()
    command = grant(note="n" * 7_950)  # its event, with more fields, is over the 8,000 bytes
    step = handler.handle(KEYED, msg(0, CODEC.encode(command), topic="commands"))
    assert step.events == []
    ((topic, result),) = decoded(step.outputs)
    assert topic == TOPICS.command_results
    assert isinstance(result, CommandRejected) and result.code == "too_large"
    ok = handler.handle(KEYED, msg(1, CODEC.encode(grant()), topic="commands"))
    assert len(ok.events) == 1 and isinstance(decoded(ok.outputs)[0][1], CommandAccepted)


class _PickyLimit:
    """An output limit (duck-typed) that refuses the records ``refuse`` picks out: an
    oversized later event, an answer too large to write."""

    max_bytes = 1_000_000

    def __init__(self, refuse: Any) -> None:
        self._refuse = refuse

    def fits(self, key: bytes | None, value: bytes | None) -> bool:
        return not self._refuse(value)


def test_a_command_of_several_events_is_refused_whole_when_a_later_one_would_not_fit() -> None:
    # Revoking every key of an actor with two is two events; the second over the limit must
    # take the first with it (nothing half-applied).
    keys = [Ed25519PrivateKey.generate() for _ in range(2)]
    state = KEYED
    for key in keys:
        (registered,) = register_anchors(
            state, {"human:alice": public_bytes(key)}, now=utcnow(), new_id=new_id
        )
        state = fold(state, registered)
    second = key_id_of(public_bytes(keys[1])).encode()

    def revoke() -> RevokeActorKey:
        command = RevokeActorKey(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor="human:admin",
            principal="human:alice",
            reason="rotation",
        )
        return sign(command, ADMIN_KEY)

    refusing = _PickyLimit(lambda value: second in value)
    handler = CommandHandler(
        settings=Settings(home=Path("/nonexistent"), admins=frozenset({"human:admin"})),
        codec=CODEC,
        stats=ProcessorStats(),
        limit=cast(OutputLimit, refusing),
    )
    step = handler.handle(state, msg(0, CODEC.encode(revoke()), topic="commands"))
    assert step.events == []
    ((_, result),) = decoded(step.outputs)
    assert isinstance(result, CommandRejected) and result.code == "too_large"
    whole = command_handler(OutputLimit(1_000_000)).handle(
        state, msg(1, CODEC.encode(revoke()), topic="commands")
    )
    assert len(whole.events) == 2  # the same command, with room: both keys revoked


def test_a_command_whose_answer_cannot_be_written_applies_nothing() -> None:
    def is_answer(value: bytes | None) -> bool:
        return isinstance(CODEC.decode(value or b""), CommandAccepted | CommandRejected)

    handler = CommandHandler(
        settings=Settings(home=Path("/nonexistent"), admins=frozenset({"human:admin"})),
        codec=CODEC,
        stats=ProcessorStats(),
        limit=cast(OutputLimit, _PickyLimit(is_answer)),
    )
    step = handler.handle(KEYED, msg(0, CODEC.encode(grant()), topic="commands"))
    assert step.events == []
    ((topic, letter),) = decoded(step.outputs)
    assert topic == TOPICS.dead_letters and isinstance(letter, DeadLetter)
    assert letter.code == "output_too_large"


def test_who_asked_over_its_limit_is_answered_request_too_large_not_copied_whole() -> None:
    # A red team: requested_by (or actor) took 900 KB of any text, copied into the decision:
    # 998,000 characters made a ~1 MB decision, 999,500 a request dead-lettered
    # output_too_large and never answered (trace_too_large keeps these fields).
    handler = requests_handler(OutputLimit(1_000_000))
    odd = "human:admin\u202e\u0000"
    for n, asked in enumerate(
        (
            request(requested_by=odd * (999_500 // len(odd))),
            replace(request(), actor=odd * (998_000 // len(odd)), requested_by="agent:a"),
        )
    ):
        out = handler.handle_batch(EMPTY_STATE, [msg(n, CODEC.encode(asked))])
        ((topic, decision),) = decoded(out)
        assert topic == TOPICS.decisions and isinstance(decision, DecisionRecorded), decision
        assert decision.reason_code == "request_too_large"
        name = "requested_by" if n == 0 else "actor"
        assert decision.reasons == (
            f"the request's {name} is longer than 1,024 characters (request_name_chars)",
        )
        assert len(out[0][2]) < 4_000  # not as large as the request
        assert len(decision.requested_by or "") < 1_100


def test_a_name_over_its_limit_is_answered_request_too_large_with_the_name_cut() -> None:
    # A red team: an action (principal, resource) of ~1 MB was copied whole into its
    # request_too_large decision: 990,000 characters made a 990 KB decision on a topic kept
    # forever, in every export and in the agent's answer.
    handler = requests_handler(OutputLimit(1_000_000))
    for n, field in enumerate(("action", "principal", "resource")):
        asked = replace(request(), **{field: "p." + "x" * 990_000})
        out = handler.handle_batch(EMPTY_STATE, [msg(n, CODEC.encode(asked))])
        ((topic, decision),) = decoded(out)
        assert topic == TOPICS.decisions and isinstance(decision, DecisionRecorded), decision
        assert decision.reason_code == "request_too_large"
        assert len(out[0][2]) < 4_000
        assert getattr(decision, field).endswith("… (990002 characters)")


def test_a_requested_by_that_is_no_principal_gets_an_error_decision_not_silence() -> None:
    handler = requests_handler()
    asked = request(requested_by="human:admin\u202e\u0000")
    ((topic, decision),) = decoded(handler.handle_batch(EMPTY_STATE, [msg(0, CODEC.encode(asked))]))
    assert topic == TOPICS.decisions and isinstance(decision, DecisionRecorded)
    assert (decision.determination, decision.reason_code) == (
        Determination.ERROR,
        "invalid_request",
    )
    assert "requested_by 'human:admin\\u202e\\x00' is not a principal" in decision.reasons[0]


def test_an_empty_request_id_is_dead_lettered_and_never_remembered() -> None:
    # An id no client sends (the SDK's are 36 characters), and whose answer no client could
    # tell from another's: refused as an id over its limit is.
    handler = requests_handler()
    for n, empty in enumerate((replace(request(), event_id=""), batch_request(""))):
        out = decoded(handler.handle_batch(EMPTY_STATE, [msg(n, CODEC.encode(empty))]))
        ((topic, letter),) = out
        assert topic == TOPICS.dead_letters and isinstance(letter, DeadLetter)
        assert (letter.code, letter.reason) == ("id_empty", "the request id is empty")
    assert len(handler.recent) == 0


def test_a_command_id_over_its_limit_is_dead_lettered_and_never_remembered() -> None:
    handler = command_handler()
    command = sign(
        replace(grant(), event_id="c" * (DEFAULT_LIMITS.request_id_chars + 1)), ADMIN_KEY
    )
    step = handler.handle(KEYED, msg(0, CODEC.encode(command), topic="commands"))
    assert step.events == []
    ((topic, letter),) = decoded(step.outputs)
    assert topic == TOPICS.dead_letters and isinstance(letter, DeadLetter)
    assert letter.code == "id_too_long"
    assert letter.reason == "the command id is longer than 128 characters"
    assert handler.first_answer(command.event_id) is None and not handler.rejected


def test_an_empty_or_blank_command_id_is_dead_lettered_and_never_remembered() -> None:
    # The CLI makes ids itself; a command hand-built with an administrator's key took "" and
    # was applied, its answer keyed by nothing and remembered: the next command with that id,
    # whatever it held, was answered as already applied.
    handler = command_handler()
    for n, (event_id, said) in enumerate(
        (("", "the command id is empty"), (" \t\n", "the command id is only whitespace"))
    ):
        for copy in range(2):  # a second command with that id is refused alike
            command = sign(replace(grant(), event_id=event_id), ADMIN_KEY)
            step = handler.handle(KEYED, msg(2 * n + copy, CODEC.encode(command), topic="commands"))
            assert step.events == []
            ((topic, letter),) = decoded(step.outputs)
            assert topic == TOPICS.dead_letters and isinstance(letter, DeadLetter)
            assert (letter.code, letter.reason) == ("id_empty", said)
            assert handler.first_answer(event_id) is None
    assert not handler.rejected and handler.applied.event_ids("") == ()


def test_a_blank_request_id_is_dead_lettered_as_an_empty_one_is() -> None:
    handler = requests_handler()
    blank = replace(request(), event_id="  ")
    ((topic, letter),) = decoded(handler.handle_batch(EMPTY_STATE, [msg(0, CODEC.encode(blank))]))
    assert topic == TOPICS.dead_letters and isinstance(letter, DeadLetter)
    assert (letter.code, letter.reason) == ("id_empty", "the request id is only whitespace")
    assert len(handler.recent) == 0


def test_an_answer_repeating_huge_sender_text_is_cut_to_fit() -> None:
    # Refused as not kind:name, with the principal in both the reason and the aggregate.
    command = grant(principal="p" * 7_000)
    step = command_handler(OutputLimit(7_200)).handle(
        KEYED, msg(0, CODEC.encode(command), topic="commands")
    )
    ((_, result),) = decoded(step.outputs)
    assert isinstance(result, CommandRejected) and result.code == "invalid_principal"
    assert len(result.aggregate) < 1_100 and len(result.reason) < 1_100
    assert result.command_id == command.event_id


def test_a_remembered_rejection_never_holds_a_senders_megabyte(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Rejections are remembered for minutes; one quoting a 960 KB principal at full length (4x
    # as a repr) filled memory at ~70 MB/s from any principal with a key.
    from processors import command_handler as handler_module

    handler = command_handler(OutputLimit(2_000_000))
    for i in range(3):
        command = grant(principal="\x00" * 500_000)
        handler.handle(KEYED, msg(i, CODEC.encode(command), topic="commands"))
        (_, rejection) = handler.rejected[command.event_id]
        assert rejection.code == "invalid_principal" and len(rejection.message) < 1_100
    handler.rejected.clear()
    monkeypatch.setattr(handler_module, "REMEMBER_MOST", 3)
    sent = [grant(principal="bad") for _ in range(5)]  # and at most so many of them
    for i, command in enumerate(sent):
        handler.handle(KEYED, msg(i, CODEC.encode(command), topic="commands"))
    assert list(handler.rejected) == [c.event_id for c in sent[2:]]  # the newest kept


def test_a_command_the_processor_fails_on_is_dead_lettered(monkeypatch: pytest.MonkeyPatch) -> None:
    from processors import command_handler as handler_module

    def failing(*args: Any, **kw: Any) -> Any:
        raise ValueError("boom")

    monkeypatch.setattr(handler_module, "decide_signed", failing)
    step = command_handler().handle(KEYED, msg(4, CODEC.encode(grant()), topic="commands"))
    ((topic, letter),) = decoded(step.outputs)
    assert topic == TOPICS.dead_letters and isinstance(letter, DeadLetter)
    assert (letter.code, letter.reason, letter.offset) == ("handler_error", "ValueError: boom", 4)
    assert step.events == []


# --------------------------------------------------------------------------- sending


def test_fits_never_passes_what_the_producer_would_refuse_and_errs_by_little() -> None:
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    from ledger.core.limits import RECORD_FRAMING

    limit = OutputLimit(1_000_000)
    for size in range(999_700, 1_000_001, 7):
        value = b"v" * size
        measured = DefaultRecordBatchBuilder.estimate_size_in_bytes(b"key", value, [])
        if limit.fits(b"key", value):  # sound: what fits, the producer takes
            assert measured <= 1_000_000, size
        else:  # and tight: refused only within the framing bound of the limit
            assert measured > 1_000_000 - RECORD_FRAMING, size
    assert not limit.fits(None, b"v" * 1_000_000)  # the value alone at the limit: framing too


def test_recent_ids_forget_the_oldest_and_hold_digests_only() -> None:
    from processors.evaluator import RecentIds

    recent = RecentIds(capacity=2)
    long_ids = [bytes([65 + i]) * 128 for i in range(3)]
    recent.update(long_ids)
    assert [recent.repeats(i, b"any") for i in long_ids] == [False, True, True]
    assert len(recent) == 2
    assert all(len(kept) == 16 for kept in recent._seen)  # 128-character ids, 16 bytes each
    recent.add(b"x" * 100_000)  # a request as sent: 16 bytes too
    assert recent.repeats(b"other", b"x" * 100_000) and len(recent) == 2
