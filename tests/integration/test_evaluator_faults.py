"""Faults of DESIGN §12 on the real broker: re-delivered requests, a SIGKILLed evaluator, and
records that are not evaluation requests. Every check reads what the ledger actually holds."""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import threading
import time
import uuid
from typing import Any

import pytest
from click.testing import CliRunner
from harness import ADMIN, AGENT, GOOD_FACTS, LedgerStack, agent_request, policy_doc, wait_for

from ledger.cli.app import cli
from ledger.codec import default_codec
from ledger.core.events import (
    CommandAccepted,
    DeadLetter,
    DecisionRecorded,
    Determination,
)
from ledger.errors import CodecError
from ledger.ids import new_id, utcnow

pytestmark = pytest.mark.integration

CODEC = default_codec()


def _decisions_per_request(stack: LedgerStack) -> collections.Counter[str]:
    return collections.Counter(
        d.request_id
        for d in stack.records(stack.topics.decisions)
        if isinstance(d, DecisionRecorded)
    )


def test_a_request_delivered_twice_is_decided_once(
    shared_stack: LedgerStack, admin, agent, policy_name, producer_factory
):
    stack = shared_stack
    action = f"{policy_name}.issue"
    stack.deploy(admin, policy_doc(policy_name))
    stack.evaluate_settled(agent, action=action, principal=AGENT, resource="account:dup")

    request = agent_request("account:dup", action=action)
    value = CODEC.encode(request)
    producer = producer_factory()
    for _ in range(2):  # the same record twice, as a producer retry or a replay would
        producer.send(stack.topics.evaluation_requests, key=b"account:dup", value=value)
    producer.flush(timeout=10)

    # Same key, same partition: once this later request is answered, both copies were handled.
    after = agent.evaluate(action=action, principal=AGENT, resource="account:dup", facts=GOOD_FACTS)
    assert after.determination is Determination.ALLOW

    counts = _decisions_per_request(stack)
    assert counts[request.event_id] == 1, stack.logs()
    assert counts[after.request_id] == 1


def test_records_that_are_not_requests_are_dead_lettered_and_the_next_is_answered(
    shared_stack: LedgerStack, admin, agent, policy_name, producer_factory
):
    stack = shared_stack
    action = f"{policy_name}.issue"
    stack.deploy(admin, policy_doc(policy_name))
    resource = f"account:dl-{uuid.uuid4().hex[:6]}"
    key = resource.encode()

    junk = b"\x00not avro at all" + os.urandom(32)
    wrong_type = CODEC.encode(
        CommandAccepted(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor="service:command-processor",
            command_id=new_id(),
            command_type="IssueGrant",
            aggregate=AGENT,
        )
    )
    valid = CODEC.encode(agent_request(resource, action=action))
    truncated = valid[: len(valid) // 2]
    producer = producer_factory()
    for value in (junk, wrong_type, truncated):
        producer.send(stack.topics.evaluation_requests, key=key, value=value)
    producer.flush(timeout=10)

    # A valid request after the bad ones (same key, same partition) is still answered.
    decision = stack.evaluate_settled(
        agent, action=action, principal=AGENT, resource=resource, facts=GOOD_FACTS
    )
    assert decision.determination is Determination.ALLOW

    letters = {
        bytes(d.value or b""): d
        for d in stack.records(stack.topics.dead_letters)
        if isinstance(d, DeadLetter) and d.key == key
    }
    assert set(letters) == {junk, wrong_type, truncated}, stack.logs()
    for value in (junk, truncated):
        with pytest.raises(CodecError) as expected:
            CODEC.decode(value)
        letter = letters[value]
        assert (letter.code, letter.reason) == (expected.value.code, str(expected.value))
    assert "truncated" in letters[truncated].reason
    letter = letters[wrong_type]
    assert letter.code == "unexpected_event"
    assert letter.reason == "CommandAccepted is not an evaluation request"
    for letter in letters.values():
        assert letter.source_topic == stack.topics.evaluation_requests
        assert letter.offset >= 0 and letter.actor.startswith("service:")
    offsets = sorted(letters[v].offset for v in (junk, wrong_type, truncated))
    assert offsets == list(range(offsets[0], offsets[0] + 3))  # kept in log order, none lost


def test_evaluator_killed_mid_stream_answers_every_request_exactly_once(
    stack_factory, producer_factory
):
    stack = stack_factory()
    topics = stack.topics
    stack.grant_defaults()
    admin = stack.client(ADMIN)
    stack.deploy(admin, policy_doc("refund", action="refund.issue"))
    agent = stack.client(AGENT)
    stack.evaluate_settled(agent, action="refund.issue", principal=AGENT, resource="account:0")
    stack.release(agent)

    total = 2000
    requests = [agent_request(f"account:{n}") for n in range(total)]
    wanted = {r.event_id for r in requests}
    producer = producer_factory()

    def publish() -> None:
        # Paced, so the kill lands while requests are still arriving (about 2 s in all).
        for n, request in enumerate(requests):
            producer.send(
                topics.evaluation_requests,
                key=request.resource.encode(),
                value=CODEC.encode(request),
            )
            if n % 100 == 99:
                time.sleep(0.1)
        producer.flush(timeout=30)

    answered: collections.Counter[str] = collections.Counter()
    consumer = stack.consumer("auditor")
    try:
        from kafka import TopicPartition

        parts = [
            TopicPartition(topics.decisions, p)
            for p in consumer.partitions_for_topic(topics.decisions)
        ]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)

        def drain() -> int:
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    event: Any = CODEC.decode(record.value)
                    if isinstance(event, DecisionRecorded) and event.request_id in wanted:
                        answered[event.request_id] += 1
            return len(answered)

        sender = threading.Thread(target=publish, name="publish-requests")
        sender.start()
        wait_for(lambda: drain() >= 300, timeout=60, what="the first 300 decisions", poll=0)
        assert stack.stop("evaluator", kill=True)  # SIGKILL: no commit, no clean leave
        killed_at = len(answered)
        sender.join(timeout=60)
        assert not sender.is_alive()
        assert killed_at < total, "the evaluator answered everything before the kill"

        stack.start("evaluator")
        wait_for(
            lambda: drain() >= total,
            timeout=120,
            what=f"decisions for all {total} requests",
            poll=0,
        )
    finally:
        consumer.close()

    counts = _decisions_per_request(stack)
    mine = {rid: n for rid, n in counts.items() if rid in wanted}
    assert set(mine) == wanted
    twice = {rid: n for rid, n in mine.items() if n != 1}
    assert not twice, f"{len(twice)} requests decided more than once\n{stack.logs()}"


def test_an_evaluator_reads_what_was_answered_once_for_each_partition_it_is_given(
    stack_factory, producer_factory
):
    # `ledger up --evaluators 2` under load took 20-35 s to answer: before joining, the new
    # worker read every request partition's answers since the last commit (60 s of decisions),
    # then read again, at its assignment, those of the partitions it was given. Only the
    # assignment knows which those are; what a dead worker answered is read there, once.
    stack = stack_factory(processors=("evaluator",))
    topics = stack.topics

    def publish(n: int) -> set[str]:
        requests = [agent_request(f"account:{i}") for i in range(n)]
        producer = producer_factory()
        for request in requests:
            value = CODEC.encode(request)
            producer.send(topics.evaluation_requests, key=request.resource.encode(), value=value)
        producer.flush(timeout=30)
        return {r.event_id for r in requests}

    answered = publish(200)
    wait_for(
        lambda: answered <= set(_decisions_per_request(stack)),
        timeout=60,
        what="the first 200 decisions",
    )
    assert stack.stop("evaluator", kill=True)  # no commit, no clean leave
    waiting = publish(50)  # its partitions' commits now lag their ends: a read finds them

    stack.start("evaluator", instance=2)  # assigned once the dead one's session times out
    wanted = answered | waiting
    wait_for(
        lambda: wanted <= set(_decisions_per_request(stack)),
        timeout=90,
        what="decisions for all 250 requests",
    )
    counts = _decisions_per_request(stack)
    assert {rid: counts[rid] for rid in wanted if counts[rid] != 1} == {}, stack.logs()

    log = (stack.log_dir / "evaluator-2.log").read_text()
    reads = [line for line in log.splitlines() if "request ids answered since" in line]
    assert reads and all("assigned request partitions [" in line for line in reads), reads
    found = [re.search(r"partitions \[([\d, ]*)\]: (\d+) request ids", line) for line in reads]
    assert all(found), reads
    read = sorted(int(p) for m in found if m for p in m.group(1).split(","))
    assert read == [0, 1, 2], reads  # each once, when it was assigned
    ids = sum(int(m.group(2)) for m in found if m)
    assert ids >= len(answered), reads


def test_a_correction_a_crash_left_unwritten_is_written_by_the_worker_after_it(
    stack_factory, producer_factory
):
    # An asynchronous decision and its correction go to two topics: a worker killed after the
    # broker took the decision and before it took the correction left the request uncommitted,
    # and the worker after it found the request answered and wrote nothing, so the agent that
    # went ahead on its default was never told. The next worker reads the corrections too.
    from ledger.core.events import DecisionCorrected, Mode
    from ledger.core.state import EMPTY_STATE
    from processors.outputs import ProcessorStats
    from processors.request_handler import RequestHandler

    stack = stack_factory(processors=("evaluator",))
    topics = stack.topics
    producer = producer_factory()
    warm = agent_request("account:warm")
    producer.send(topics.evaluation_requests, key=b"account:warm", value=CODEC.encode(warm))
    producer.flush(timeout=30)
    wait_for(lambda: warm.event_id in _decisions_per_request(stack), timeout=60, what="a decision")
    assert stack.stop("evaluator", kill=True)  # its partitions' commits are not released

    # Governed by nothing: deny, where the agent went ahead on allow.
    request = agent_request(
        "account:late", action="unheard.of", mode=Mode.ASYNC, default=Determination.ALLOW
    )
    value = CODEC.encode(request)
    producer.send(topics.evaluation_requests, key=b"account:late", value=value)
    # What the killed worker wrote of its answer: the decision, not the correction.
    dead = RequestHandler(
        settings=stack.settings, codec=CODEC, evaluator_id="dead", stats=ProcessorStats()
    )
    out = dead.handle(
        EMPTY_STATE, topic=topics.evaluation_requests, partition=0, offset=0, key=None, value=value
    )
    assert [topic for topic, _, _ in out] == [topics.decisions, topics.corrections]
    (_, rid, decided), (_, _, owed) = out
    producer.send(topics.decisions, key=rid, value=decided)
    # And one it answered whole, decision and correction: it owes nothing (the read finds the
    # correction: without the evaluator's READ on ledger.corrections a review found the read
    # failed, and every partition after a crash stayed paused).
    whole = agent_request(
        "account:late", action="unheard.of", mode=Mode.ASYNC, default=Determination.ALLOW
    )
    whole_value = CODEC.encode(whole)
    producer.send(topics.evaluation_requests, key=b"account:late", value=whole_value)

    def answered_whole(handler: RequestHandler, value: bytes, partition: int, offset: int) -> Any:
        """What ``handler`` writes for a request, all of it written, as a worker would."""
        out = handler.handle(
            EMPTY_STATE,
            topic=topics.evaluation_requests,
            partition=partition,
            offset=offset,
            key=None,
            value=value,
        )
        for topic, key, record in out:
            producer.send(topic, key=key, value=record)
        return out

    answered_whole(dead, whole_value, 0, 1)
    # A red team: a copy under the first request's id, answered whole by another worker, its
    # correction keyed by the same id, made the one the crash left unwritten read as written.
    copy = dataclasses.replace(request, action="copy.thing", resource="account:attacker")
    other = RequestHandler(
        settings=stack.settings, codec=CODEC, evaluator_id="other", stats=ProcessorStats()
    )
    copied = answered_whole(other, CODEC.encode(copy), 1, 0)
    assert [topic for topic, _, _ in copied] == [topics.decisions, topics.corrections]
    producer.flush(timeout=30)

    stack.start("evaluator", instance=2)  # assigned once the dead one's session times out

    def corrections() -> list[DecisionCorrected]:
        return [
            c
            for c in stack.records(topics.corrections)
            if isinstance(c, DecisionCorrected) and c.request_id == request.event_id
        ]

    wait_for(
        lambda: len(corrections()) == 2, timeout=90, what="the correction the crash left unwritten"
    )
    later = agent_request("account:late")  # same partition: once answered, the first was handled
    producer.send(topics.evaluation_requests, key=b"account:late", value=CODEC.encode(later))
    producer.flush(timeout=30)
    wait_for(lambda: later.event_id in _decisions_per_request(stack), timeout=60, what="a decision")
    copy_correction, correction = corrections()
    assert copy_correction == CODEC.decode(copied[1][2])
    assert correction == CODEC.decode(owed)  # the decision's own correction, id and all
    assert correction.decision_id == CODEC.decode(decided).event_id
    assert _decisions_per_request(stack)[request.event_id] == 2  # its and the copy's: no more
    again = [
        c
        for c in stack.records(topics.corrections)
        if isinstance(c, DecisionCorrected) and c.request_id == whole.event_id
    ]
    assert len(again) == 1 and _decisions_per_request(stack)[whole.event_id] == 1, again
    log = (stack.log_dir / "evaluator-2.log").read_text()
    assert "1 of them owed the correction a crash left unwritten" in log, log


def test_a_commit_past_a_partitions_end_decides_nothing_again_and_answers_what_comes(
    stack_factory, producer_factory
):
    # A copy of a running home, restored (the broker's logs copied before its offsets topic),
    # left the group's commits past their partitions' ends: librdkafka started them from the
    # beginning and the evaluators decided 28,429 requests a second time (an operator's
    # walkthrough). Here the commit is put there by hand while no evaluator runs.
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    from ledger.kafka.acls import PROCESSOR_GROUPS
    from ledger.kafka.dedup import RELEASED

    stack = stack_factory(processors=("evaluator",))
    topics = stack.topics

    def publish(n: int) -> set[str]:
        requests = [agent_request(f"account:{i}") for i in range(n)]
        producer = producer_factory()
        for request in requests:
            value = CODEC.encode(request)
            producer.send(topics.evaluation_requests, key=request.resource.encode(), value=value)
        producer.flush(timeout=30)
        return {r.event_id for r in requests}

    old = publish(200)
    wait_for(
        lambda: old <= set(_decisions_per_request(stack)),
        timeout=60,
        what="the first 200 decisions",
    )
    assert stack.stop("evaluator")

    group = topics.group(PROCESSOR_GROUPS["evaluator"])
    consumer = stack.consumer("evaluator", group_id=group, enable_auto_commit=False)
    try:
        parts = [
            TopicPartition(topics.evaluation_requests, p)
            for p in sorted(consumer.partitions_for_topic(topics.evaluation_requests))
        ]
        ends = consumer.end_offsets(parts)
        assert all(ends[tp] > 0 for tp in parts), ends  # each partition holds old requests
        # Past each end; one marked as a clean hand-over, as a copy may hold it.
        consumer.commit(
            {
                tp: OffsetAndMetadata(ends[tp] + 1000, RELEASED if tp.partition == 0 else "", -1)
                for tp in parts
            }
        )
    finally:
        consumer.close()

    log_file = stack.log_dir / "evaluator.log"
    before = log_file.read_text().count("assigned request partitions")
    stack.start("evaluator")
    wait_for(
        lambda: log_file.read_text().count("assigned request partitions") > before,
        timeout=60,
        what="the restarted evaluator's assignment",
    )
    time.sleep(1)  # its fetches begun: what comes now is after where it starts
    new = publish(30)
    wait_for(
        lambda: new <= set(_decisions_per_request(stack)),
        timeout=90,
        what="decisions for the 30 requests written after the commit",
    )
    counts = _decisions_per_request(stack)
    assert {rid: counts[rid] for rid in old | new if counts[rid] != 1} == {}, stack.logs()
    log = log_file.read_text()
    lost = set(re.findall(r"\[(\d+)\]: the group's committed offset \d+ lies past", log))
    assert lost == {str(tp.partition) for tp in parts}, log
    assert "1000 offsets answered before are not in the log" in log


def test_ledger_decisions_says_why_a_request_has_no_decision(
    shared_stack: LedgerStack, admin, agent, policy_name, producer_factory
):
    """`ledger decisions --request ID` with nothing found tells a mistyped id from a request
    that was asked and dead-lettered; a pre-evaluation item is found by REQUEST#ITEM."""
    stack = shared_stack
    action = f"{policy_name}.issue"
    stack.deploy(admin, policy_doc(policy_name))
    refused = agent_request("account:no-decision", action=action)
    refused = dataclasses.replace(refused, event_id="r" * 200)  # over the 128-character limit
    producer = producer_factory()
    producer.send(stack.topics.evaluation_requests, key=b"account:nd", value=CODEC.encode(refused))
    producer.flush(timeout=10)
    wait_for(
        lambda: [
            d
            for d in stack.records(stack.topics.dead_letters)
            if isinstance(d, DeadLetter) and d.key == b"account:nd"
        ],
        timeout=30,
        what="the over-long request id dead-lettered",
    )
    runner = CliRunner()
    env = stack.cli_env()

    done = runner.invoke(cli, ["decisions", "--request", refused.event_id, "--json"], env=env)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == []
    assert "was dead-lettered (id_too_long" in done.stderr, done.stderr
    assert "will never be decided" in done.stderr

    done = runner.invoke(cli, ["decisions", "--request", "no-such-request"], env=env)
    assert done.exit_code == 0, done.output
    assert "note: no request 'no-such-request' in " in done.stderr, done.stderr

    batch = agent.preevaluate(
        AGENT,
        [
            {"action": action, "resource": "account:i1", "facts": GOOD_FACTS, "item_id": "one"},
            {"action": action, "resource": "account:i2", "facts": GOOD_FACTS, "item_id": "two"},
        ],
    )
    done = runner.invoke(cli, ["decisions", "--request", f"{batch.request_id}#two"], env=env)
    assert done.exit_code == 0, done.output
    assert f"{batch.request_id}#two" in done.stdout and "#one" not in done.stdout
    assert "note:" not in done.stderr
    # Decided, but left out by another filter: said so, not "not decided yet".
    args = ["decisions", "--request", batch.request_id, "--determination", "deny"]
    done = runner.invoke(cli, args, env=env)
    assert done.exit_code == 0, done.output
    assert "was decided, but not as the other filters ask" in done.stderr, done.stderr
