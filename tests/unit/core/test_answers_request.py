"""A decision answers the request a client sent, not another request sent under its id.

Red team (HIGH): an attacker holding the auditor and agent credentials tails new requests and,
for each, sends a copy under the same request id (same reply partition) asking about another
resource, with harmless facts or another principal. The evaluator that decides the copy first
takes the genuine request for a repeat, and the victim's ``evaluate`` took the copy's decision:
"asked account:40 amount 100000 standing suspended, got allow on account:1 amount 1.00".
:func:`answers_request` is the rule the SDK now holds every reply to: the decision's fields are
the request's, and its recorded facts are what the sent ones became under the policy's types.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from ledger.codec import default_codec
from ledger.core import EMPTY_STATE, LedgerState, Rejection, decide, evaluate, fold
from ledger.core.answering import answers_batch, answers_request, without_trace
from ledger.core.evaluate import evaluate_batch
from ledger.core.events import (
    ApprovePolicyVersion,
    BatchEvaluationRequested,
    BatchItem,
    Command,
    DecisionRecorded,
    Determination,
    EvaluationRequested,
    GrantIssued,
    Mode,
    PromotePolicyVersion,
    ProposePolicyVersion,
    Stage,
)
from ledger.core.facts import facts_recorded_as, same_value

CODEC = default_codec()
T0 = datetime(2025, 1, 1, tzinfo=UTC)
BOT = "agent:refund-bot"
ADMINS = frozenset({"human:alice", "human:bob"})
EVERY_TYPE = """\
policy: typed
governs: [typed.act]
owner: o
facts:
  i: {type: int, optional: true}
  d: {type: decimal, optional: true}
  f: {type: float, optional: true}
  b: {type: bool, optional: true}
  s: {type: string, optional: true}
  e: {type: enum, values: [good, suspended], optional: true}
  t: {type: timestamp, optional: true}
  l: {type: list<string>, optional: true}
rules:
  - id: suspended
    when: has(e) && e == "suspended"
    effect: deny
default: {effect: allow}
"""


def _deployed() -> LedgerState:
    """``typed`` active, and a grant of every action on ``account:*`` to the bot."""
    ids = (f"e{i}" for i in itertools.count())
    commands: list[Command] = [
        ProposePolicyVersion(
            event_id="c1", occurred_at=T0, actor="human:alice", document=EVERY_TYPE, policy="typed"
        ),
        ApprovePolicyVersion(
            event_id="c2", occurred_at=T0, actor="human:bob", policy="typed", version=1
        ),
        PromotePolicyVersion(
            event_id="c3",
            occurred_at=T0,
            actor="human:bob",
            policy="typed",
            version=1,
            stage=Stage.ACTIVE,
        ),
    ]
    state = EMPTY_STATE
    for command in commands:
        outcome = decide(state, command, now=T0, new_id=lambda: next(ids), admins=ADMINS)
        assert not isinstance(outcome, Rejection), outcome
        for event in outcome:
            state = fold(state, event)
    return fold(
        state,
        GrantIssued(
            event_id="e-grant",
            occurred_at=T0,
            actor="human:admin",
            command_id="c-grant",
            principal=BOT,
            sequence=1,
            grant_id="g1",
            actions=("typed.act",),
            resource="account:*",
        ),
    )


STATE = _deployed()


def _sent(facts: dict[str, Any] | None = None, **changes: Any) -> EvaluationRequested:
    """A request as its evaluator reads it: encoded, then decoded (what the SDK compares)."""
    request = EvaluationRequested(
        event_id="req-1",
        occurred_at=T0,
        actor=BOT,
        requested_by=BOT,
        action="typed.act",
        principal=BOT,
        resource="account:40",
        facts=facts if facts is not None else {"d": "100000", "e": "suspended"},
        context={"channel": "chat", "risk": Decimal("0.2")},
    )
    decoded = CODEC.decode(CODEC.encode(replace(request, **changes)))
    assert isinstance(decoded, EvaluationRequested)
    return decoded


def _decided(request: EvaluationRequested, state: LedgerState = STATE) -> DecisionRecorded:
    return evaluate(state, request, now=T0, evaluator_id="e")


def test_the_red_teams_copy_does_not_answer_the_request_it_was_sent_under() -> None:
    genuine = _sent()
    copy = _sent({"d": "1.00", "e": "good"}, resource="account:1")
    assert _decided(genuine).determination is Determination.DENY
    forged = _decided(copy)
    assert forged.determination is Determination.ALLOW and forged.request_id == genuine.event_id
    assert answers_request(genuine, _decided(genuine))
    assert not answers_request(genuine, forged)
    # The same resource, harmless facts: the async path compared no facts, and took it.
    assert not answers_request(genuine, _decided(_sent({"d": "1.00", "e": "good"})))


@pytest.mark.parametrize(
    "change",
    [
        {"event_id": "req-2"},
        {"occurred_at": T0 + timedelta(microseconds=1)},
        {"principal": "agent:other"},
        {"action": "typed.other"},
        {"resource": "account:41"},
        {"mode": Mode.ASYNC, "default": Determination.DENY},
        {"default": Determination.ALLOW},
        {"requested_by": "agent:someone-else"},
        {"requested_by": None, "actor": "agent:someone-else"},
        {"context": {"channel": "email", "risk": Decimal("0.2")}},
        {"context": {"channel": "chat", "risk": Decimal("0.20")}},
        {"context": {"channel": "chat"}},
        {"context": {"channel": "chat", "risk": Decimal("0.2"), "extra": 1}},
        {"context": {"channel": "chat", "risk": 0.2}},
    ],
    ids=lambda change: "+".join(change),
)
def test_a_decision_for_a_request_that_differs_in_one_field_does_not_answer(
    change: dict[str, Any],
) -> None:
    genuine = _sent()
    other = _decided(_sent(**change))
    if "event_id" not in change:
        assert other.request_id == genuine.event_id
    assert not answers_request(genuine, other)
    assert answers_request(genuine, _decided(genuine))


# Each fact type: forms a sender may use, recorded as the declared type converts them.
CONVERTED = [
    ("i", 7, 7),
    ("d", 100000, Decimal("100000")),
    ("d", "120.50", Decimal("120.50")),
    ("d", " 120.50\n", Decimal("120.50")),
    ("d", 120.5, Decimal("120.5")),
    ("d", Decimal("1.00"), Decimal("1.00")),
    ("f", 3, 3.0),
    ("f", Decimal("2.5"), 2.5),
    ("f", 0.25, 0.25),
    ("b", True, True),
    ("s", "text", "text"),
    ("e", "good", "good"),
    ("t", "2025-01-01T02:00:00+02:00", T0),
    ("t", datetime(2025, 1, 1, 2, tzinfo=timezone(timedelta(hours=2))), T0),
    ("l", ["a", "b"], ("a", "b")),
]


@pytest.mark.parametrize(("name", "sent", "recorded"), CONVERTED)
def test_facts_are_compared_as_the_policys_types_convert_them(
    name: str, sent: Any, recorded: Any
) -> None:
    request = _sent({name: sent})
    decision = _decided(request)
    assert decision.determination is Determination.ALLOW, decision.reasons
    assert same_value(decision.facts[name], recorded)
    assert answers_request(request, decision)


# Each fact type: a value the genuine request did not send, in the form recorded for it.
DIFFERENT = [
    ("i", 7, 8),
    ("i", 1, True),
    ("d", "100000", "1.00"),
    ("d", "100000", 100000.5),
    ("d", "1.0", "1.00"),
    ("f", 3, 3.5),
    ("b", True, False),
    ("s", "text", "Text"),
    ("e", "suspended", "good"),
    ("t", "2025-01-01T02:00:00+02:00", "2025-01-01T02:00:00+01:00"),
    ("l", ["a", "b"], ["b", "a"]),
    ("l", ["a", "b"], ["a"]),
]


@pytest.mark.parametrize(("name", "sent", "other"), DIFFERENT)
def test_a_decision_recording_another_value_of_a_fact_does_not_answer(
    name: str, sent: Any, other: Any
) -> None:
    request = _sent({name: sent})
    copy = _decided(_sent({name: other}))
    assert copy.request_id == request.event_id
    assert not answers_request(request, copy)


def test_a_fact_added_or_dropped_does_not_answer() -> None:
    request = _sent({"i": 1, "s": "x"})
    for facts in ({"i": 1}, {"i": 1, "s": "x", "b": False}, {}):
        copy = _decided(_sent(facts))
        assert copy.determination is Determination.ALLOW
        assert not answers_request(request, copy), facts


def test_facts_recorded_as_sent_are_compared_as_sent() -> None:
    # No grant: the facts are recorded as sent (no policy converted them), text stays text.
    request = _sent({"d": "120.50", "i": 5})
    decision = _decided(request, EMPTY_STATE)
    assert decision.reason_code == "no_authority" and decision.facts["d"] == "120.50"
    assert answers_request(request, decision)
    assert not answers_request(_sent({"d": Decimal("120.50"), "i": 5}), decision)
    assert not answers_request(_sent({"d": "120.5", "i": 5}), decision)
    # Refused facts are recorded as sent too.
    bad = _sent({"i": "seven", "x": 1})
    refused = _decided(bad)
    assert refused.reason_code == "invalid_facts" and answers_request(bad, refused)
    assert not answers_request(_sent({"i": "seven"}), refused)


def test_strict_values() -> None:
    assert not same_value(True, 1) and not same_value(1, 1.0)
    assert not same_value(Decimal(1), 1) and not same_value(Decimal("1.0"), Decimal("1.00"))
    assert same_value(float("nan"), float("nan")) and same_value(("a",), ("a",))
    assert not same_value(("a",), ["a"]) and not same_value(("a", "b"), ("a",))
    assert facts_recorded_as({"d": "1.00"}, {"d": Decimal("1.00")})
    assert not facts_recorded_as({"d": "1.00"}, {"d": Decimal("100000")})
    assert not facts_recorded_as({"d": 1}, {"d": "1"})  # text is never converted to
    assert not facts_recorded_as({"d": "1", "e": 2}, {"d": Decimal("1")})
    assert not facts_recorded_as({"d": "1"}, {"d": Decimal("1"), "e": 2})
    assert not facts_recorded_as({"d": "1"}, {"x": Decimal("1")})


def test_an_answer_without_facts_is_taken_only_as_an_error() -> None:
    request = _sent()
    # The trace would not fit a record: facts and context left out, error.
    reduced = without_trace(_decided(request), CODEC.encode(request), 1000)
    assert reduced.facts == {} and reduced.context == {}
    assert answers_request(request, reduced)
    # Names over their limits: answered before anything, without facts or context.
    long = _sent(resource="account:" + "9" * 5000)
    too_large = _decided(long)
    assert too_large.reason_code == "request_too_large" and too_large.facts == {}
    assert too_large.resource.endswith("… (5008 characters)")  # recorded cut
    assert answers_request(long, too_large)
    # A cut name answers only the name it was cut from, and only as an error.
    other = _sent(resource="account:" + "8" * 5000)
    assert not answers_request(other, too_large)
    assert not answers_request(long, replace(too_large, determination=Determination.ALLOW))
    # Nothing without facts is a permission.
    for determination in (Determination.ALLOW, Determination.ALLOW_WITH_CONSTRAINTS):
        assert not answers_request(request, replace(reduced, determination=determination))
    # An error without facts still answers only its own principal, action and resource.
    assert not answers_request(request, replace(reduced, resource="account:1"))
    assert not answers_request(request, replace(reduced, principal="agent:other"))


def test_a_decision_by_an_evaluator_older_than_requested_by_is_compared_on_the_rest() -> None:
    request = _sent()
    decision = replace(_decided(request), requested_by=None)
    assert answers_request(request, decision)
    assert not answers_request(request, replace(decision, resource="account:1"))


def _batch(**changes: Any) -> BatchEvaluationRequested:
    batch = BatchEvaluationRequested(
        event_id="batch-1",
        occurred_at=T0,
        actor=BOT,
        principal=BOT,
        items=(
            BatchItem(item_id="a", action="typed.act", resource="account:40", facts={"i": 1}),
            BatchItem(item_id="b", action="typed.act", resource="account:41"),
        ),
    )
    decoded = CODEC.decode(CODEC.encode(replace(batch, **changes)))
    assert isinstance(decoded, BatchEvaluationRequested)
    return decoded


def test_a_batch_answer_answers_its_principal_and_items_in_order() -> None:
    batch = _batch()
    assert answers_batch(batch, evaluate_batch(STATE, batch, now=T0, evaluator_id="e"))
    one = BatchItem(item_id="a", action="typed.act", resource="account:1")
    two = BatchItem(item_id="b", action="typed.act", resource="account:41")
    for change in (
        {"event_id": "batch-2"},
        {"principal": "agent:other"},
        {"items": (one, two)},
        {"items": tuple(reversed(batch.items))},
        {"items": batch.items[:1]},
        {"items": (*batch.items, replace(one, item_id="c"))},
        {"items": (replace(batch.items[0], action="typed.other"), two)},
    ):
        copy = evaluate_batch(STATE, _batch(**change), now=T0, evaluator_id="e")
        assert not answers_batch(batch, copy), change
