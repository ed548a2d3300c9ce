"""Records near Kafka's 1 MB limit are never lost (issue 8, item 3), and one problem has one
dead-letter code on every topic (item 5). Against the real broker, as the report found them:

- a 1,048,301-byte garbage record on the request topic: its dead letter, with the original bytes,
  was over the topic limit, the agent restarted, the offset was committed, nothing was written;
- a valid 1,048,289-byte request among 40 normal ones: it and the 18 after it got no decision
  and the committed offset reached the end of the partition;
- the same on ``ledger.commands``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from harness import ADMIN, AGENT, GOOD_FACTS, LedgerStack, policy_doc, wait_for

from ledger.codec import default_codec
from ledger.core.events import (
    CommandAccepted,
    CommandRejected,
    DeadLetter,
    DecisionRecorded,
    Determination,
    EvaluationRequested,
    IssueGrant,
)
from ledger.ids import new_id, utcnow
from processors import command_processor, evaluator

pytestmark = pytest.mark.integration

CODEC = default_codec()
GARBAGE_BYTES = 1_048_301
VALID_BYTES = 1_048_289


@pytest.fixture(scope="module")
def stack(stack_factory: Callable[..., LedgerStack]) -> Iterator[LedgerStack]:
    """A stack of this module's own: a lost output here stops its processors."""
    stack = stack_factory(evaluation_partitions=1)
    stack.grant_defaults()
    admin = stack.client(ADMIN)
    stack.deploy(admin, policy_doc("refund", action="refund.issue"))
    stack.release(admin)
    yield stack


def sized(build: Callable[[str], Any], size: int) -> tuple[Any, bytes]:
    """The event ``build(filler)`` whose encoding is exactly ``size`` bytes."""
    filler = "x" * size
    for _ in range(5):
        event = build(filler)
        data = CODEC.encode(event)
        if len(data) == size:
            return event, data
        filler = "x" * (len(filler) + size - len(data))
    raise AssertionError(f"cannot size the record to {size} bytes")


def request(resource: str = "account:1", **facts: Any) -> EvaluationRequested:
    return EvaluationRequested(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor=AGENT,
        action="refund.issue",
        principal=AGENT,
        resource=resource,
        facts={**GOOD_FACTS, **facts},
    )


def grant(n: int, note: str | None = None) -> IssueGrant:
    return IssueGrant(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor=ADMIN,
        grant_id=f"g-{new_id()}",
        principal=f"agent:bot-{n}",
        actions=("refund.issue",),
        resource="account:*",
        note=note,
    )


def produce(stack: LedgerStack, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    # The producer's own cap is Kafka's default 1 MiB: these records are all under it.
    producer = stack_producer(stack)
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)


def stack_producer(stack: LedgerStack) -> Any:
    return stack.producer("admin")


def letters(stack: LedgerStack) -> list[DeadLetter]:
    return [e for e in stack.records(stack.topics.dead_letters) if isinstance(e, DeadLetter)]


def committed_to_the_end(stack: LedgerStack, topic: str, app_id: str) -> bool:
    """Has the processor's group committed ``topic``'s partition 0 up to its end?"""
    from kafka import TopicPartition

    tp = TopicPartition(topic, 0)
    consumer = stack.consumer("admin", group_id=f"{stack.topics.prefix}{app_id}")
    try:
        return bool(consumer.committed(tp) == consumer.end_offsets([tp])[tp])
    finally:
        consumer.close()


def pids(stack: LedgerStack) -> dict[str, str]:
    run = stack.settings.home / "run"
    return {p.stem: p.read_text() for p in run.glob("*.pid")}


def test_a_garbage_record_of_1mb_on_the_request_topic_is_dead_lettered_by_digest(
    stack: LedgerStack,
) -> None:
    before = pids(stack)
    garbage = b"\x00" + os.urandom(GARBAGE_BYTES - 1)
    key = f"account:garbage-{new_id()}".encode()
    produce(stack, stack.topics.evaluation_requests, [(key, garbage)])

    def found() -> DeadLetter | None:
        return next((d for d in letters(stack) if d.key == key), None)

    letter = wait_for(found, timeout=30, what="the dead letter of the 1 MB garbage record")
    assert letter.code == "codec_error"
    assert letter.truncated and letter.value is None
    assert letter.value_size == GARBAGE_BYTES
    assert letter.value_sha256 == hashlib.sha256(garbage).hexdigest()
    assert letter.source_topic == stack.topics.evaluation_requests
    # And the evaluator carries on, the same process.
    agent = stack.client(AGENT)
    decision = stack.evaluate_settled(
        agent,
        action="refund.issue",
        principal=AGENT,
        resource="account:after-garbage",
        facts=GOOD_FACTS,
    )
    assert decision.determination is Determination.ALLOW
    assert pids(stack) == before, stack.logs()


def test_a_valid_1mb_request_among_40_is_answered_and_so_is_every_one_after_it(
    stack: LedgerStack,
) -> None:
    before = pids(stack)
    requests = [request(f"account:{n}") for n in range(40)]
    big, big_bytes = sized(lambda filler: request("account:big", note=filler), VALID_BYTES)
    requests.insert(20, big)
    key = b"one-partition"  # all in one partition, in this order
    produce(
        stack,
        stack.topics.evaluation_requests,
        [(key, big_bytes if r is big else CODEC.encode(r)) for r in requests],
    )
    wanted = {r.event_id for r in requests}

    def outcomes() -> dict[str, Any] | None:
        found: dict[str, Any] = {
            d.request_id: d
            for d in stack.records(stack.topics.decisions)
            if isinstance(d, DecisionRecorded) and d.request_id in wanted
        }
        return found if set(found) == wanted else None

    found = wait_for(outcomes, timeout=60, what="a decision for each of the 41 requests")
    assert all(
        found[r.event_id].determination is Determination.ALLOW for r in requests if r is not big
    )
    answer = found[big.event_id]
    assert answer.determination is Determination.ERROR
    assert not answer.facts  # left out: the trace with them would not fit
    assert hashlib.sha256(big_bytes).hexdigest() in " ".join(answer.reasons)
    assert len(CODEC.encode(answer)) < 1_000_000
    # Everything was answered, so the group may commit to the end, and it does.
    wait_for(
        lambda: committed_to_the_end(stack, stack.topics.evaluation_requests, evaluator.APP_ID),
        timeout=20,
        what="the evaluator's commit to reach the end",
    )
    assert pids(stack) == before, stack.logs()


def test_1mb_records_on_the_commands_topic_are_each_answered_or_dead_lettered(
    stack: LedgerStack,
) -> None:
    before = pids(stack)
    commands = [stack.sign(grant(n)) for n in range(10)]
    big, big_bytes = sized(lambda filler: stack.sign(grant(99, note=filler)), VALID_BYTES)
    commands.insert(5, big)
    garbage = b"\x00" + os.urandom(GARBAGE_BYTES - 1)
    records = [(c.principal.encode(), big_bytes if c is big else CODEC.encode(c)) for c in commands]
    records.insert(3, (b"garbage", garbage))
    produce(stack, stack.topics.commands, records)
    wanted = {c.event_id for c in commands}

    def results() -> dict[str, Any] | None:
        found = {
            r.command_id: r
            for r in stack.records(stack.topics.command_results)
            if isinstance(r, CommandAccepted | CommandRejected) and r.command_id in wanted
        }
        return found if set(found) == wanted else None

    found = wait_for(results, timeout=60, what="a result for each of the 11 commands")
    for command in commands:
        if command is not big:
            assert isinstance(found[command.event_id], CommandAccepted), found[command.event_id]
    refused = found[big.event_id]
    assert isinstance(refused, CommandRejected) and refused.code == "too_large", refused
    (letter,) = [d for d in letters(stack) if d.key == b"garbage"]
    assert (letter.code, letter.truncated, letter.value) == ("codec_error", True, None)
    assert letter.value_sha256 == hashlib.sha256(garbage).hexdigest()
    assert letter.value_size == GARBAGE_BYTES
    # Nothing of the refused command was appended; the others' grants all were.
    issued = {e.command_id for e in stack.records(stack.topics.grant_events)}
    assert big.event_id not in issued and wanted - {big.event_id} <= issued
    wait_for(
        lambda: committed_to_the_end(stack, stack.topics.commands, command_processor.APP_ID),
        timeout=20,
        what="the command processor's commit to reach the end",
    )
    assert pids(stack) == before, stack.logs()


def test_a_record_of_the_wrong_type_has_one_code_on_both_topics(stack: LedgerStack) -> None:
    stray = CODEC.encode(
        DecisionRecorded(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor="service:evaluator",
            request_id=new_id(),
            requested_at=utcnow(),
            action="refund.issue",
            principal=AGENT,
            resource="account:1",
            determination=Determination.ALLOW,
        )
    )
    key = f"stray-{new_id()}".encode()
    topics = (stack.topics.evaluation_requests, stack.topics.commands)
    produce(stack, topics[0], [(key, stray)])
    produce(stack, topics[1], [(key, stray)])

    def both() -> list[DeadLetter] | None:
        found = [d for d in letters(stack) if d.key == key]
        return found if len(found) == 2 else None

    found = wait_for(both, timeout=30, what="a dead letter from each processor")
    assert {d.source_topic for d in found} == set(topics)
    assert {d.code for d in found} == {"unexpected_event"}
    for letter in found:
        assert letter.reason.startswith("DecisionRecorded is not ")
        assert letter.value == stray and not letter.truncated
