"""Replies on the requester's partition (issue 12), against the real broker.

A request names the decisions/corrections partition its sender reads (``reply_partition``); the
evaluator writes the decision there, and the SDK's listener reads only that partition. Many
clients share each partition, so every listener also sees the others' decisions: with a few
hundred concurrent clients, nobody may get someone else's answer. A request naming a partition
that does not exist is still answered (on its key's partition), never a crash.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest
from harness import AGENT, GOOD_FACTS, LedgerStack, agent_request, policy_doc

from ledger.client import ClientConfig, LedgerClient
from ledger.codec import default_codec
from ledger.core.events import DecisionRecorded, Determination, EvaluationRequested
from ledger.kafka.clients import make_consumer, make_rdkafka_producer

pytestmark = pytest.mark.integration

CODEC = default_codec()
CLIENTS = 240
REQUESTS_EACH = 4


def _decision_partitions(stack: LedgerStack, request_ids: set[str]) -> dict[str, int]:
    """request id -> the decisions partition its decision was written to."""
    from kafka import TopicPartition

    consumer = make_consumer(
        stack.bootstrap, security=stack.security("auditor"), consumer_timeout_ms=2000
    )
    try:
        topic = stack.topics.decisions
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        found: dict[str, int] = {}
        for record in consumer:
            key = record.key.decode() if record.key else ""
            if key in request_ids:
                found[key] = record.partition
        return found
    finally:
        consumer.close()


def test_hundreds_of_concurrent_clients_each_get_exactly_their_own_answers(
    shared_stack: LedgerStack, admin: LedgerClient, policy_name: str
) -> None:
    stack = shared_stack
    action = f"{policy_name}.issue"
    stack.deploy(admin, policy_doc(policy_name))
    config = ClientConfig(
        bootstrap=stack.bootstrap,
        topics=stack.topics,
        actor=AGENT,
        timeout=60,
        security=stack.security("agent"),
    )
    with ThreadPoolExecutor(max_workers=32) as pool:
        clients = list(pool.map(lambda _: LedgerClient(config), range(CLIENTS)))
    try:
        partitions = {c._transport.reply_partition for c in clients}  # type: ignore[attr-defined]
        assert len(partitions) > 1  # clients spread over the partitions: they share them
        stack.evaluate_settled(clients[0], action=action, principal=AGENT, resource="account:0")
        start = threading.Barrier(CLIENTS)

        def ask(n: int) -> list[tuple[EvaluationRequested, DecisionRecorded]]:
            client = clients[n]
            requests = [
                client.request(
                    action=action,
                    principal=AGENT,
                    resource=f"account:c{n}-r{i}",
                    facts={**GOOD_FACTS, "amount": f"{n}.{i:02d}"},
                )
                for i in range(REQUESTS_EACH)
            ]
            start.wait(timeout=120)  # every client asks at the same moment
            futures = [client.send_request(r) for r in requests]
            return [(r, f.result(timeout=60)) for r, f in zip(requests, futures, strict=True)]

        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            answers = list(pool.map(ask, range(CLIENTS)))
    finally:
        with ThreadPoolExecutor(max_workers=32) as pool:
            list(pool.map(lambda c: c.close(), clients))

    total = 0
    for n, pairs in enumerate(answers):
        for request, decision in pairs:
            total += 1
            assert decision.request_id == request.event_id, f"client {n} got another's answer"
            assert decision.resource == request.resource
            assert str(decision.facts["amount"]) == request.facts["amount"]
            assert decision.determination is Determination.ALLOW
    assert total == CLIENTS * REQUESTS_EACH
    # Each decision was written to the partition its sender reads.
    where = _decision_partitions(stack, {r.event_id for pairs in answers for r, _ in pairs})
    for n, pairs in enumerate(answers):
        wanted = clients[n]._transport.reply_partition  # type: ignore[attr-defined]
        assert {where[r.event_id] for r, _ in pairs} == {wanted}


def test_a_request_naming_a_partition_that_does_not_exist_is_answered_on_its_key(
    shared_stack: LedgerStack, admin: LedgerClient, agent: LedgerClient, policy_name: str
) -> None:
    stack = shared_stack
    action = f"{policy_name}.issue"
    stack.deploy(admin, policy_doc(policy_name))
    stack.evaluate_settled(agent, action=action, principal=AGENT, resource="account:0")
    named = replace(agent_request("account:named", reply_partition=2), action=action)
    absent = replace(agent_request("account:absent", reply_partition=9999), action=action)
    negative = replace(agent_request("account:negative", reply_partition=-5), action=action)
    producer = make_rdkafka_producer(stack.bootstrap, security=stack.security("agent"))
    for request in (named, absent, negative):
        producer.produce(
            stack.topics.evaluation_requests, CODEC.encode(request), request.resource.encode()
        )
    assert producer.flush(30) == 0
    wanted = {named.event_id, absent.event_id, negative.event_id}

    def answered() -> dict[str, int] | None:
        found = _decision_partitions(stack, wanted)
        return found if set(found) == wanted else None

    from harness import wait_for

    found = wait_for(answered, timeout=60, what="the three decisions")
    assert found[named.event_id] == 2
    # Not a partition of the topic: the decision is on its key's partition, and the evaluator
    # goes on answering.
    assert 0 <= found[absent.event_id] < 6 and 0 <= found[negative.event_id] < 6
    again = agent.evaluate(
        action=action, principal=AGENT, resource="account:after", facts=GOOD_FACTS
    )
    assert again.determination is Determination.ALLOW


PROCESSES = 4
CLIENTS_PER_PROCESS = 30


def _clients_in_a_process(
    bootstrap: str, topics: Any, action: str, process: int, security: Any
) -> list[tuple[str, str, str, str, str, int]]:
    """Run in a spawned process: its clients all ask at once, synchronously (``evaluate``).

    Returns, per answer: the resource asked about (unique per request) and the decision's, the
    amount sent and the one decided on, the determination and the client's reply partition.
    """
    config = ClientConfig(
        bootstrap=bootstrap, topics=topics, actor=AGENT, timeout=60, security=security
    )
    clients = [LedgerClient(config) for _ in range(CLIENTS_PER_PROCESS)]
    start = threading.Barrier(CLIENTS_PER_PROCESS)

    def ask(n: int) -> list[tuple[str, str, str, str, str, int]]:
        client = clients[n]
        resource = f"account:p{process}-c{n}"
        amount = f"{process * 100 + n + 1}.25"  # unique per client, under the auto limit
        start.wait(timeout=120)
        out = []
        for i in range(2):
            decision = client.evaluate(
                action=action,
                principal=AGENT,
                resource=f"{resource}-{i}",
                facts={**GOOD_FACTS, "amount": amount},
            )
            out.append(
                (
                    f"{resource}-{i}",
                    decision.resource,
                    amount,
                    str(decision.facts["amount"]),
                    decision.determination.value,
                    client._transport.reply_partition,  # type: ignore[attr-defined]
                )
            )
        return out

    try:
        with ThreadPoolExecutor(max_workers=CLIENTS_PER_PROCESS) as pool:
            return [
                answer
                for answers in pool.map(ask, range(CLIENTS_PER_PROCESS))
                for answer in answers
            ]
    finally:
        for client in clients:
            client.close()


def test_clients_in_several_processes_sharing_partitions_get_their_own_answers(
    shared_stack: LedgerStack, admin: LedgerClient, agent: LedgerClient, policy_name: str
) -> None:
    import multiprocessing

    stack = shared_stack
    action = f"{policy_name}.issue"
    stack.deploy(admin, policy_doc(policy_name))
    stack.evaluate_settled(agent, action=action, principal=AGENT, resource="account:0")
    spawn = multiprocessing.get_context("spawn")  # librdkafka's threads do not survive fork
    with spawn.Pool(PROCESSES) as pool:
        results = pool.starmap(
            _clients_in_a_process,
            [
                (stack.bootstrap, stack.topics, action, p, stack.security("agent"))
                for p in range(PROCESSES)
            ],
        )
    answers = [answer for per_process in results for answer in per_process]
    assert len(answers) == PROCESSES * CLIENTS_PER_PROCESS * 2
    for asked, answered, sent, decided_on, determination, _ in answers:
        assert answered == asked, "a client got another's answer"
        assert decided_on == sent
        assert determination == Determination.ALLOW.value
    # The clients of different processes shared reply partitions.
    assert len({partition for *_, partition in answers}) > 1


def test_the_readmes_pinned_partition_transport_works_as_written(
    shared_stack: LedgerStack,
    admin: LedgerClient,
    policy_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # An agent engineer's walkthrough: the README's snippet (without a group.id) made
    # librdkafka log "Group authorization failed" on a secured broker.
    from ledger.kafka.transport import KafkaTransport

    stack = shared_stack
    action = f"{policy_name}.issue"
    stack.deploy(admin, policy_doc(policy_name))
    config = ClientConfig(
        bootstrap=stack.bootstrap, topics=stack.topics, actor=AGENT, timeout=60,
        security=stack.security("agent"),
    )  # fmt: skip
    caplog.set_level("DEBUG", logger="ledger.kafka.librdkafka")
    transport = KafkaTransport(
        config.bootstrap,
        config.topics,
        security=config.security,
        replies=(config.topics.decisions, config.topics.corrections),
        reply_partition=2,
        listener_config={
            "group.id": config.topics.group("agent.sdk-replies"),
            "fetch.wait.max.ms": 100,
        },
    )
    with LedgerClient(config, transport=transport) as client:
        decided = stack.evaluate_settled(
            client, action=action, principal=AGENT, resource="account:pinned", facts=GOOD_FACTS
        )
        assert decided.determination is Determination.ALLOW
        assert transport.reply_partition == 2
    refused = [r.getMessage() for r in caplog.records if "authorization" in r.getMessage().lower()]
    assert refused == []
