"""A record whose header key is not UTF-8 on the requests topic: every reader passes over it.

A red team's High: kafka-python decodes header keys as UTF-8 while it parses a fetch, so one
such record (any agent may write one) made every kafka-python read of the requests topic raise
before ledger code saw it: ``replay`` and ``policy simulate`` failed for good, and an evaluator
whose first uncommitted request it was failed its read of what it had answered at every start.
The readers use librdkafka now, which leaves headers alone. (The record stays on the stack's
topic: the module has a stack of its own.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from click.testing import CliRunner
from harness import AGENT, LedgerStack, agent_request, policy_doc

from ledger.cli.app import cli
from ledger.codec import default_codec
from ledger.core.events import DecisionRecorded
from ledger.kafka.dedup import answered_since_last_commit
from ledger.kafka.reading import read_topic

pytestmark = pytest.mark.integration

CODEC = default_codec()
NOT_UTF8 = b"\xff\xfe\xc0"


class _RawKey(str):
    """A header key kafka-python's producer writes as these bytes (it calls ``encode``): how
    the red team wrote one (confluent-kafka's producer writes a bytes key as its ``str``)."""

    def encode(self, *args: Any, **kwargs: Any) -> bytes:  # type: ignore[override]
        return NOT_UTF8


@dataclass
class Setup:
    stack: LedgerStack
    bad_offset: int
    bad_request_id: str
    after: DecisionRecorded


@pytest.fixture(scope="module")
def setup(stack_factory: Any) -> Iterator[Setup]:
    stack = stack_factory()
    stack.grant_defaults()
    admin, agent = stack.client("human:admin"), stack.client(AGENT)
    stack.deploy(admin, policy_doc("refund", action="refund.issue"))
    stack.evaluate_settled(agent, action="refund.issue", principal=AGENT, resource="account:1")
    bad = agent_request("account:bad-header")
    producer = stack.producer("agent")
    try:
        sent = producer.send(
            stack.topics.evaluation_requests,
            value=CODEC.encode(bad),
            key=bad.resource.encode(),
            partition=0,
            headers=[(_RawKey("h"), b"v")],
        )
        bad_offset = sent.get(timeout=30).offset
    finally:
        producer.close(timeout=5)
    after = agent.evaluate(action="refund.issue", principal=AGENT, resource="account:after")
    assert isinstance(after, DecisionRecorded)
    yield Setup(stack, bad_offset, bad.event_id, after)


def test_read_topic_reads_the_records_after_it(setup: Setup) -> None:
    stack = setup.stack
    read = list(
        read_topic(
            stack.bootstrap,
            [stack.topics.evaluation_requests],
            idle_timeout=1.0,
            security=stack.security("auditor"),
        )
    )
    ids = {p.event.event_id for p in read}
    assert {setup.bad_request_id, setup.after.request_id} <= ids
    [bad] = [p for p in read if p.event.event_id == setup.bad_request_id]
    assert (bad.partition, bad.offset) == (0, setup.bad_offset)


def test_a_decision_made_after_it_reproduces(setup: Setup) -> None:
    result = CliRunner().invoke(
        cli, ["replay", "--decision", setup.after.event_id, "--json"], env=setup.stack.cli_env()
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["reproduces"] is True


def test_answered_since_last_commit_reads_past_it_as_the_first_uncommitted_request(
    setup: Setup,
) -> None:
    from confluent_kafka import TopicPartition

    from ledger.kafka.clients import make_rdkafka_consumer

    stack = setup.stack
    group = f"{stack.topics.prefix}dedup-test"
    admin = stack.security("admin")
    consumer = make_rdkafka_consumer(stack.bootstrap, security=admin, group_id=group)
    try:  # the group committed up to the bad record: it is the first uncommitted request
        where = TopicPartition(stack.topics.evaluation_requests, 0, setup.bad_offset)
        consumer.commit(offsets=[where], asynchronous=False)
    finally:
        consumer.close()
    seen = answered_since_last_commit(
        stack.bootstrap, stack.topics, group, security=admin, partitions=[0]
    )
    assert setup.after.request_id.encode() in seen
