"""An asynchronous request's correction is bound to its decision, against the real broker.

Anyone holding the agent credential reads every decision, so they learn other agents' request
ids; re-sent under such an id to a worker that has not seen it, a request with facts of their
choosing is decided again, and its correction lands on the victim's reply partition. A victim
that proceeded on ``default="deny"`` for a request rightly denied was handed an ``allow``
(red team). The client now takes the first decision recorded for its request as final: only
the correction that decision calls for is delivered.

No processor runs here: the test writes what evaluators would write, with the evaluator's
credential, so it controls which record comes first.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from harness import AGENT, LedgerStack

from ledger.codec import default_codec
from ledger.core.evaluate import correction_for, evaluate
from ledger.core.events import DecisionCorrected, Determination, EvaluationRequested
from ledger.core.state import EMPTY_STATE
from ledger.ids import utcnow

pytestmark = pytest.mark.integration

LONG = 30.0


def _decided(request: EvaluationRequested, **changes: Any) -> Any:
    """The decision an evaluator records for ``request`` (no policy: ``deny``), changed."""
    decision = evaluate(EMPTY_STATE, request, now=utcnow(), evaluator_id="test-evaluator")
    return replace(decision, **changes) if changes else decision


def _publish(stack: LedgerStack, client: Any, records: list[tuple[str, Any]]) -> None:
    """Write ``(topic, event)`` records to the client's reply partition, in order, as the
    evaluator does."""
    codec = default_codec()
    producer = stack.producer("evaluator")
    try:
        for topic, event in records:
            producer.send(
                topic,
                key=event.request_id.encode(),
                value=codec.encode(event),
                partition=client._transport.reply_partition,
            ).get(timeout=LONG)
    finally:
        producer.close()


def test_a_second_decision_under_a_request_id_never_reaches_the_client(stack_factory):
    stack: LedgerStack = stack_factory(processors=())
    client = stack.client(AGENT, timeout=LONG)
    topics = stack.topics
    victim = client.submit_async(
        action="refund.issue", principal=AGENT, resource="account:666", default="deny"
    )
    genuine = _decided(victim)
    assert genuine.determination is Determination.DENY
    assert correction_for(genuine) is None  # the default was right: no correction
    # The attacker's copy: same id, harmless facts of their choosing, decided allow.
    forged = _decided(victim, resource="account:1", determination=Determination.ALLOW)
    forged_correction = correction_for(forged)
    assert forged_correction is not None and forged_correction.determination is Determination.ALLOW
    # A request whose correction is genuine, written after: it proves the listener read past
    # the forged one (corrections are delivered in the order they are read).
    control = client.submit_async(
        action="refund.issue", principal=AGENT, resource="account:7", default="allow"
    )
    control_decision = _decided(control)
    control_correction = correction_for(control_decision)
    assert control_correction is not None
    _publish(
        stack,
        client,
        [
            (topics.decisions, genuine),
            (topics.decisions, forged),
            (topics.corrections, forged_correction),
            (topics.decisions, control_decision),
            (topics.corrections, control_correction),
        ],
    )
    arrived = next(client.corrections(timeout=LONG), None)
    assert arrived is not None
    assert (arrived.request_id, arrived.determination) == (control.event_id, Determination.DENY)
    assert client.take_correction() is None


def test_only_the_correction_its_decision_calls_for_is_delivered_whenever_it_is_read(
    stack_factory,
):
    stack: LedgerStack = stack_factory(processors=())
    client = stack.client(AGENT, timeout=LONG)
    topics = stack.topics
    # A: its genuine correction written before its decision (two topics, read side by side):
    # held until the decision is read, then delivered.
    first = client.submit_async(
        action="refund.issue", principal=AGENT, resource="account:1", default="allow"
    )
    first_decision = _decided(first)
    first_correction = correction_for(first_decision)
    # B: a forged correction (another determination) before its decision and its genuine one.
    second = client.submit_async(
        action="refund.issue", principal=AGENT, resource="account:2", default="allow"
    )
    second_decision = _decided(second)
    second_correction = correction_for(second_decision)
    assert first_correction is not None and second_correction is not None
    forged = replace(second_correction, determination=Determination.ALLOW_WITH_CONSTRAINTS)
    # A decision under B's id that answers another question comes first: it is not B's.
    not_asked = _decided(second, resource="account:9", determination=Determination.ALLOW)
    _publish(
        stack,
        client,
        [
            (topics.corrections, first_correction),
            (topics.decisions, first_decision),
            (topics.corrections, forged),
            (topics.decisions, not_asked),
            (topics.decisions, second_decision),
            (topics.corrections, second_correction),
        ],
    )
    delivered: list[DecisionCorrected] = []
    for correction in client.corrections(timeout=LONG):
        delivered.append(correction)
        if len(delivered) == 2:
            break
    assert [(c.request_id, c.determination) for c in delivered] == [
        (first.event_id, Determination.DENY),
        (second.event_id, Determination.DENY),
    ]
    assert delivered == [first_correction, second_correction]
