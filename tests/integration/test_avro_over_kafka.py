"""Ledger events travel through a real broker as Avro single-object records, unchanged."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from ledger.codec import MAGIC, default_codec
from ledger.core.events import (
    DecisionRecorded,
    Determination,
    EvaluationRequested,
    PolicyVersionPromoted,
    ShadowResult,
    Stage,
)
from ledger.ids import new_id


def _events() -> list[object]:
    now = datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=UTC)
    request = EvaluationRequested(
        event_id=new_id(),
        occurred_at=now,
        actor="agent:refund-bot",
        action="refund.issue",
        principal="agent:refund-bot",
        resource="account:42",
        facts={
            "amount": Decimal("120.50"),
            "tenure_days": 120,
            "tags": ("vip", "eu"),
            "since": now,
            "standing": "good",
            "flag": True,
        },
    )
    decision = DecisionRecorded(
        event_id=new_id(),
        occurred_at=now,
        actor="service:evaluator",
        request_id=request.event_id,
        requested_at=now,
        action="refund.issue",
        principal="agent:refund-bot",
        resource="account:42",
        determination=Determination.ALLOW_WITH_CONSTRAINTS,
        constraints={"refund_method": "credit"},
        policy="refund",
        policy_version=3,
        stage=Stage.ACTIVE,
        rule="credit-only",
        facts=request.facts,
        governance_position={"ledger.policy-events/0": 7},
        shadow_results=(
            ShadowResult(
                policy="refund", version=4, stage=Stage.SHADOW, determination=Determination.DENY
            ),
        ),
    )
    promoted = PolicyVersionPromoted(
        event_id=new_id(),
        occurred_at=now,
        actor="human:bob",
        command_id=new_id(),
        policy="refund",
        sequence=5,
        version=3,
        stage=Stage.CANARY,
        percent=25,
    )
    return [request, decision, promoted]


def test_events_round_trip_through_the_broker(
    kafka, ledger_topics, producer_factory, consumer_factory
):
    codec = default_codec()
    events = _events()
    producer = producer_factory()
    for event in events:
        producer.send(
            ledger_topics.decisions, key=event.event_id.encode(), value=codec.encode(event)
        )
    producer.flush(timeout=10)

    consumer = consumer_factory(ledger_topics.decisions)
    received = {}
    for record in consumer:
        assert record.value[:2] == MAGIC  # self-describing single-object encoding on the wire
        received[record.key.decode()] = codec.decode(record.value)
        if len(received) == len(events):
            break
    assert received == {e.event_id: e for e in events}
    decoded_request = received[events[0].event_id]
    assert decoded_request.facts["amount"] == Decimal("120.50")
    assert str(decoded_request.facts["amount"]) == "120.50"  # scale kept, not just value
    assert decoded_request.facts["since"].tzinfo is not None
