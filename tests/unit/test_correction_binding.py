"""The Kafka transport binds an async request's correction to its first decision, record by
record, without a broker: the listener's dispatch is fed the records in the orders they can be
read in (two topics, read side by side). The same on the real broker is in
``tests/integration/test_sdk_correction_binding.py``."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from typing import Any

import pytest

import ledger.kafka.transport as transport_module
from ledger.codec import default_codec
from ledger.core.evaluate import correction_for, evaluate
from ledger.core.events import (
    DecisionCorrected,
    DecisionRecorded,
    Determination,
    EvaluationRequested,
    Mode,
)
from ledger.core.state import EMPTY_STATE
from ledger.ids import new_id, utcnow
from ledger.kafka.transport import KafkaTransport, watch
from ledger.settings import TopicNames

CODEC = default_codec()
TOPICS = TopicNames()


class Listener:
    """A transport's listener side, without its consumer: what it delivers, and its watches."""

    def __init__(self) -> None:
        self.transport = object.__new__(KafkaTransport)
        self.transport._codec = CODEC  # type: ignore[attr-defined]
        self.transport._topics = TOPICS  # type: ignore[attr-defined]
        self.transport._lock = threading.Lock()  # type: ignore[attr-defined]
        self.transport._pending = {}  # type: ignore[attr-defined]
        self.transport._watching = OrderedDict()  # type: ignore[attr-defined]
        self.delivered: list[DecisionCorrected] = []

    @property
    def watching(self) -> Any:
        return self.transport._watching  # type: ignore[attr-defined]

    def submit(
        self, default: str = "allow", resource: str = "account:1", facts: Any = None
    ) -> EvaluationRequested:
        request = EvaluationRequested(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor="agent:a",
            principal="agent:a",
            action="refund.issue",
            resource=resource,
            mode=Mode.ASYNC,
            default=Determination(default),
            facts=facts or {},
        )
        asked = CODEC.decode(CODEC.encode(request))  # as the transport keeps it
        assert isinstance(asked, EvaluationRequested)
        watch(
            self.watching, request.event_id.encode(), self.delivered.append, time.monotonic(), asked
        )
        return request

    def read(self, topic: str, event: Any, *, raw: bytes | None = None) -> None:
        self.transport._dispatch(topic, event.request_id.encode(), raw or CODEC.encode(event))


def decided(request: EvaluationRequested, **changes: Any) -> DecisionRecorded:
    decision = evaluate(EMPTY_STATE, request, now=utcnow(), evaluator_id="e")  # no policy: deny
    return replace(decision, **changes) if changes else decision


def test_a_decision_that_agrees_with_the_default_ends_the_watch() -> None:
    # The red team's case: denied as the default said, then an "allow" for the same id.
    listener = Listener()
    request = listener.submit("deny")
    decision = decided(request)
    listener.read(TOPICS.decisions, decision)
    assert len(listener.watching) == 0
    forged = DecisionCorrected(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor="service:evaluator",
        request_id=request.event_id,
        decision_id=decision.event_id,
        default=Determination.DENY,
        determination=Determination.ALLOW,
    )
    listener.read(
        TOPICS.decisions, decided(request, resource="account:1", determination=Determination.ALLOW)
    )
    listener.read(TOPICS.corrections, forged)
    assert listener.delivered == []


def test_a_correction_read_before_its_decision_is_held_then_delivered() -> None:
    listener = Listener()
    request = listener.submit("allow")
    decision = decided(request)
    correction = correction_for(decision)
    assert correction is not None
    listener.read(TOPICS.corrections, correction)
    assert listener.delivered == []
    listener.read(TOPICS.decisions, decision)
    assert listener.delivered == [correction] and len(listener.watching) == 0


def test_only_so_many_early_corrections_are_held_and_none_that_does_not_answer() -> None:
    listener = Listener()
    request = listener.submit("allow")
    decision = decided(request)
    correction = correction_for(decision)
    assert correction is not None
    forged = replace(correction, determination=Determination.ALLOW_WITH_CONSTRAINTS)
    for _ in range(transport_module.EARLY_MOST + 3):
        listener.read(TOPICS.corrections, forged)
    (watched,) = listener.watching.values()
    assert len(watched.early) == transport_module.EARLY_MOST
    listener.read(TOPICS.decisions, decided(request, resource="account:9"))  # not what was asked
    assert watched.expected is None
    listener.read(TOPICS.decisions, decision)
    assert listener.delivered == [] and watched.early == []
    listener.read(TOPICS.corrections, forged)
    assert listener.delivered == []
    listener.read(TOPICS.corrections, correction)
    assert listener.delivered == [correction]
    assert all(w.asked is None for w in listener.watching.values())  # bound: not held


def test_a_decision_this_client_cannot_decode_does_not_lose_the_correction(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A review: a decision written with a newer schema (a rolling upgrade) left its correction
    # held for 24 hours, without a word.
    listener = Listener()
    request = listener.submit("allow")
    decision = decided(request)
    correction = correction_for(decision)
    assert correction is not None
    encoded = CODEC.encode(decision)
    unknown = encoded[:2] + b"\xff" * 8 + encoded[10:]  # another writer schema's fingerprint
    listener.read(TOPICS.corrections, correction)
    with caplog.at_level(logging.WARNING, logger="ledger.client"):
        listener.read(TOPICS.decisions, decision, raw=unknown)
    assert listener.delivered == [correction]
    assert "does not decode" in caplog.text and request.event_id in caplog.text


def test_a_decision_for_other_facts_under_the_id_does_not_settle_the_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Red team: the asynchronous path compared principal, action, resource and default, not
    # the facts: a copy under the victim's id with harmless facts, decided as the default said,
    # ended the watch, and the genuine decision's correction never reached the victim.
    listener = Listener()
    request = listener.submit("allow", facts={"amount": "100000", "standing": "suspended"})
    copy = decided(
        request, facts={"amount": "1.00", "standing": "good"}, determination=Determination.ALLOW
    )
    assert correction_for(copy) is None  # agrees with the default: it would end the watch
    with caplog.at_level(logging.WARNING, logger="ledger.client"):
        listener.read(TOPICS.decisions, copy)
        listener.read(TOPICS.decisions, copy)  # said once
    assert len(listener.watching) == 1
    # A review: nothing said so, and the genuine request may never be decided.
    [said] = [r.getMessage() for r in caplog.records if "another request" in r.getMessage()]
    assert request.event_id in said and "no correction of its default may come" in said
    decision = decided(request)
    correction = correction_for(decision)
    assert correction is not None
    listener.read(TOPICS.decisions, decision)
    listener.read(TOPICS.corrections, correction)
    assert listener.delivered == [correction]


def test_a_copys_correction_under_the_same_ids_is_not_delivered() -> None:
    # A red team: the ids of a decision and of its correction come from the request id alone,
    # so a copy sent under the victim's id, decided otherwise, has a correction under the same
    # ids; compared by ids, default and determination, it reached the victim's on_correction
    # with the copy's reasons and constraints (when a crash left the genuine one unwritten).
    listener = Listener()
    request = listener.submit("deny")
    decision = decided(request, determination=Determination.ALLOW, reasons=("allowed",))
    correction = correction_for(decision)
    assert correction is not None
    copy = decided(
        request,
        determination=Determination.ALLOW,
        resource="account:attacker",
        reasons=("the copy's",),
        occurred_at=utcnow(),
    )
    copied = correction_for(copy)
    assert copied is not None
    assert (copied.event_id, copied.decision_id) == (correction.event_id, correction.decision_id)
    listener.read(TOPICS.decisions, decision)
    listener.read(TOPICS.corrections, copied)
    listener.read(TOPICS.corrections, replace(correction, constraints={"max_refund": "1"}))
    assert listener.delivered == []
    listener.read(TOPICS.corrections, correction)  # as the wire gives it back
    assert listener.delivered == [correction] and len(listener.watching) == 0


def test_an_older_evaluators_correction_without_constraints_is_still_delivered() -> None:
    # A review: a correction written before corrections carried constraints (2026-12-04) reads
    # back with none; compared whole with what the decision calls for, it was dropped in silence.
    listener = Listener()
    request = listener.submit("deny")
    decision = decided(
        request,
        determination=Determination.ALLOW_WITH_CONSTRAINTS,
        constraints={"max_refund": "50.00"},
    )
    correction = correction_for(decision)
    assert correction is not None and correction.constraints
    older = replace(correction, constraints={})
    copy = replace(older, occurred_at=utcnow(), reasons=("the copy's",))
    listener.read(TOPICS.decisions, decision)
    listener.read(TOPICS.corrections, copy)  # a copy's, under the same ids: not this one
    assert listener.delivered == []
    listener.read(TOPICS.corrections, older)
    assert listener.delivered == [older]
