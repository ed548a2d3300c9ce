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
