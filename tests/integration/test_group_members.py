"""Who holds what in a consumer group, asked of the broker (``ledger.kafka.groups``)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from ledger.kafka.clients import make_rdkafka_consumer
from ledger.kafka.groups import partitions_by_client
from ledger.settings import TopicNames

pytestmark = pytest.mark.integration


def test_the_broker_says_which_client_holds_how_many_partitions(
    kafka: Any, ledger_topics: TopicNames
) -> None:
    bootstrap, admin = kafka.bootstrap, kafka.security("admin")
    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = make_rdkafka_consumer(
        bootstrap, security=admin, **{"group.id": group, "client.id": "worker-1"}
    )
    try:
        consumer.subscribe([ledger_topics.evaluation_requests])
        deadline = time.monotonic() + 30
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(0.2)
        held = partitions_by_client(
            bootstrap, group, ledger_topics.evaluation_requests, security=admin
        )
        assert held == {"worker-1": 3}
        assert partitions_by_client(bootstrap, group, "other", security=admin) == {"worker-1": 0}
    finally:
        consumer.close()
    assert (
        partitions_by_client(bootstrap, f"none-{uuid.uuid4().hex[:8]}", "t", security=admin) == {}
    )


def test_the_broker_says_how_many_records_a_group_has_not_committed(
    kafka: Any, ledger_topics: TopicNames
) -> None:
    # An operator's walkthrough: nothing showed a 75,000-request backlog but agents' timeouts.
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    from ledger.kafka.clients import make_consumer, make_producer
    from ledger.kafka.groups import records_waiting

    bootstrap, admin = kafka.bootstrap, kafka.security("admin")
    topic = ledger_topics.evaluation_requests
    group = f"g-{uuid.uuid4().hex[:8]}"
    # Partition 0 only: nothing committed, so everything from its log start waits.
    before = records_waiting(bootstrap, group, topic, 1, security=admin)
    producer = make_producer(bootstrap, security=admin)
    try:
        for _ in range(5):
            producer.send(topic, b"x", partition=0)
        producer.flush()
    finally:
        producer.close()
    assert records_waiting(bootstrap, group, topic, 1, security=admin) == before + 5
    p0 = TopicPartition(topic, 0)
    consumer = make_consumer(bootstrap, security=admin, group_id=group, enable_auto_commit=False)
    try:
        end = consumer.end_offsets([p0])[p0]
        consumer.commit({p0: OffsetAndMetadata(end - 2, "", -1)})
    finally:
        consumer.close()
    assert records_waiting(bootstrap, group, topic, 1, security=admin) == 2
    # With no evaluator to say how many partitions the topic has, the broker says (a chaos
    # drill: `ps` showed no backlog while every evaluator was down): all of them are counted.
    every = records_waiting(bootstrap, group, topic, None, security=admin)
    others = sum(
        records_waiting(bootstrap, group, topic, n, security=admin)
        - records_waiting(bootstrap, group, topic, n - 1, security=admin)
        for n in range(2, ledger_topics_partitions(kafka, topic) + 1)
    )
    assert every == 2 + others and ledger_topics_partitions(kafka, topic) > 1


def ledger_topics_partitions(kafka: Any, topic: str) -> int:
    """How many partitions ``topic`` has, as a consumer's metadata says."""
    from ledger.kafka.clients import make_consumer

    consumer = make_consumer(kafka.bootstrap, security=kafka.security("admin"))
    try:
        return len(consumer.partitions_for_topic(topic) or ())
    finally:
        consumer.close()
