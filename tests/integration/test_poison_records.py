"""A record that hangs or crashes a processor is handled once, never re-read for ever (issue 8).

The report: a command that blocked the command processor was re-read after ``kill -9`` and a
restart, and blocked it again, endlessly. Here real workers with a test-only fault (see
``faulty_worker``) hang on a marked record; they are killed the way an operator or a liveness
check would, and restarted. One death proves nothing (the record is handled again); at the
second the record is dead-lettered (``poison_record``) and the records after it are answered.
A record the handler raises on is dead-lettered at once, without a restart.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import ADMIN, AGENT, GOOD_FACTS, LedgerStack, agent_request, policy_doc, wait_for

from ledger.codec import default_codec
from ledger.core.events import (
    CommandAccepted,
    DeadLetter,
    DecisionRecorded,
    Determination,
    GrantIssued,
    IssueGrant,
)
from ledger.ids import new_id, utcnow
from ledger.local import stack as stack_module
from processors import command_processor, evaluator
from processors.common import state_dir

pytestmark = pytest.mark.integration

CODEC = default_codec()
HERE = Path(__file__).resolve().parent


@pytest.fixture
def faulty(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``stack.start(name)`` starts the faulty worker instead of the real one."""
    for name in ("evaluator", "command-processor"):
        monkeypatch.setitem(stack_module.PROCESSORS, name, "faulty_worker")
    paths = [str(HERE), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    yield


def marker(stack: LedgerStack, app_id: str, topic: str) -> tuple[int, int] | None:
    """(offset, attempt) of the record the processor has in flight on ``topic`` partition 0."""
    path = state_dir(stack.settings, app_id) / "inflight" / f"{topic}.0"
    try:
        offset, attempt = (int(x) for x in path.read_text().split())
    except (FileNotFoundError, ValueError):
        return None
    return (offset, attempt) if offset >= 0 else None


def produce(stack: LedgerStack, topic: str, records: list[tuple[bytes, bytes]]) -> list[int]:
    producer = stack.producer("admin")
    try:
        futures = [producer.send(topic, key=key, value=value) for key, value in records]
        return [f.get(timeout=30).offset for f in futures]
    finally:
        producer.close(timeout=5)


def kill_while_stuck_on(
    stack: LedgerStack, name: str, app_id: str, topic: str, offset: int, attempt: int
) -> None:
    """Wait until ``name`` is stuck handling ``offset`` (its ``attempt``-th try), then SIGKILL."""
    wait_for(
        lambda: marker(stack, app_id, topic) == (offset, attempt),
        timeout=60,
        what=f"{name} to be handling offset {offset} (attempt {attempt})",
    )
    assert stack.stop(name, kill=True)


def grant(principal: str) -> IssueGrant:
    return IssueGrant(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor=ADMIN,
        grant_id=f"g-{new_id()}",
        principal=principal,
        actions=("refund.issue",),
        resource="account:*",
    )


def letters_at(stack: LedgerStack, topic: str, offset: int) -> list[DeadLetter]:
    return [
        d
        for d in stack.records(stack.topics.dead_letters)
        if isinstance(d, DeadLetter) and d.source_topic == topic and d.offset == offset
    ]


def test_a_request_that_hangs_the_evaluator_is_dead_lettered_after_two_deaths(
    stack_factory: Any, faulty: None
) -> None:
    stack = stack_factory(processors=("command-processor",), evaluation_partitions=1)
    stack.grant_defaults()
    admin = stack.client(ADMIN)
    stack.deploy(admin, policy_doc("refund", action="refund.issue"))
    stack.start("evaluator")
    agent = stack.client(AGENT)
    stack.evaluate_settled(agent, action="refund.issue", principal=AGENT, resource="account:0")

    topic = stack.topics.evaluation_requests
    poison = agent_request("account:hang")
    after = [agent_request(f"account:{n}") for n in range(5)]
    offsets = produce(stack, topic, [(b"k", CODEC.encode(r)) for r in (poison, *after)])

    for attempt in (1, 2):  # stuck, killed, restarted: stuck again, killed again
        kill_while_stuck_on(stack, "evaluator", evaluator.APP_ID, topic, offsets[0], attempt)
        stack.start("evaluator")

    wanted = {r.event_id for r in after}

    def answered() -> dict[str, DecisionRecorded] | None:
        found = {
            d.request_id: d
            for d in stack.records(stack.topics.decisions)
            if isinstance(d, DecisionRecorded) and d.request_id in wanted | {poison.event_id}
        }
        return found if wanted <= set(found) else None

    found = wait_for(answered, timeout=60, what="the requests after the poison to be answered")
    assert poison.event_id not in found  # never handled to the end
    assert all(found[r.event_id].determination is Determination.ALLOW for r in after)
    (letter,) = letters_at(stack, topic, offsets[0])
    assert letter.code == "poison_record" and letter.value == CODEC.encode(poison)
    assert "died 2 times" in letter.reason
    assert marker(stack, evaluator.APP_ID, topic) is None  # nothing left in flight

    # The same worker goes on answering; a request it raises on is dead-lettered at once.
    broken = agent_request("account:raise")
    (broken_offset,) = produce(stack, topic, [(b"k", CODEC.encode(broken))])
    decision = agent.evaluate(
        action="refund.issue", principal=AGENT, resource="account:9", facts=GOOD_FACTS
    )
    assert decision.determination is Determination.ALLOW
    (raised,) = wait_for(
        lambda: letters_at(stack, topic, broken_offset),
        timeout=20,
        what="the dead letter of the record the evaluator raised on",
    )
    assert raised.code == "handler_error" and "test fault" in raised.reason


def test_a_command_that_hangs_the_command_processor_is_dead_lettered_after_two_deaths(
    stack_factory: Any, faulty: None
) -> None:
    stack = stack_factory(processors=())
    stack.start("command-processor")
    topic = stack.topics.commands
    poison = stack.sign(grant("agent:poison-hang"))
    after = [stack.sign(grant(f"agent:bot-{n}")) for n in range(3)]
    offsets = produce(
        stack, topic, [(c.principal.encode(), CODEC.encode(c)) for c in (poison, *after)]
    )

    for attempt in (1, 2):
        kill_while_stuck_on(
            stack, "command-processor", command_processor.APP_ID, topic, offsets[0], attempt
        )
        stack.start("command-processor")

    wanted = {c.event_id for c in after}

    def answered() -> set[str] | None:
        found = {
            r.command_id
            for r in stack.records(stack.topics.command_results)
            if isinstance(r, CommandAccepted)
        }
        return found if wanted <= found else None

    found = wait_for(answered, timeout=60, what="the commands after the poison to be answered")
    assert poison.event_id not in found
    (letter,) = letters_at(stack, topic, offsets[0])
    assert letter.code == "poison_record"
    # Grants only: the processor's first start also recorded its trust anchor (ActorKeyRegistered).
    grant_events = stack.records(stack.topics.grant_events)
    issued = {e.command_id for e in grant_events if isinstance(e, GrantIssued)}
    assert issued == wanted  # the poison appended nothing


def test_a_request_past_year_9999_is_dead_lettered_exported_as_undecodable_and_verified(
    shared_stack: LedgerStack, tmp_path: Path
) -> None:
    """A red team: one request sent with the agent's credential, occurred_at 2**63-1 µs. The
    evaluator dead-letters it; the export filled its columns, and `ledger audit verify` then
    stopped on an OverflowError traceback before checking any chain, for every export after
    it (the topic keeps the record forever)."""
    import json
    from datetime import UTC, datetime

    from click.testing import CliRunner
    from export_format import export_from_kafka

    from ledger.avro import write_long
    from ledger.cli.app import cli

    asked = agent_request("account:far")
    at = datetime(2026, 1, 1, tzinfo=UTC)
    honest = CODEC.encode(dataclasses.replace(asked, occurred_at=at))
    varint = write_long(int(at.timestamp()) * 1_000_000)
    hostile = honest[:10] + honest[10:].replace(varint, write_long(2**63 - 1), 1)
    assert hostile != honest
    producer = shared_stack.producer("agent")
    try:
        sent = producer.send(
            shared_stack.topics.evaluation_requests, key=asked.event_id.encode(), value=hostile
        ).get(timeout=30)
    finally:
        producer.close(timeout=5)
    topic = shared_stack.topics.evaluation_requests
    [letter] = wait_for(
        lambda: [
            d
            for d in shared_stack.records(shared_stack.topics.dead_letters)
            if isinstance(d, DeadLetter)
            and (d.source_topic, d.partition, d.offset) == (topic, sent.partition, sent.offset)
        ],
        timeout=60,
        what="the request past year 9999 dead-lettered",
    )
    assert letter.code == "codec_error" and "out of range" in letter.reason

    out = tmp_path / "export"
    export_from_kafka(
        shared_stack.bootstrap, shared_stack.topics, out, security=shared_stack.security("exporter")
    )
    import duckdb

    con = duckdb.connect()
    try:
        row = con.execute(
            "SELECT event_type, event_id, occurred_at, record FROM read_parquet(?) "
            'WHERE "partition" = ? AND "offset" = ?',
            [str(out / f"topic={topic}" / "**" / "*.parquet"), sent.partition, sent.offset],
        ).fetchone()
    finally:
        con.close()
    assert row == (None, None, None, hostile)  # the row of a record that does not decode

    env = shared_stack.cli_env()
    verified = CliRunner().invoke(cli, ["audit", "verify", "--from", str(out), "--json"], env=env)
    assert verified.exit_code in (0, 11) and "Traceback" not in verified.output, verified.output
    problems = json.loads(verified.stdout)["problems"]
    where = (topic, sent.partition, sent.offset)
    assert not [p for p in problems if (p["topic"], p["partition"], p["offset"]) == where]
    said = CliRunner().invoke(cli, ["decisions", "--request", asked.event_id], env=env)
    assert said.exit_code == 0 and said.exception is None, said.output
    assert (
        "a record keyed by that id" in said.stderr and "dead-lettered (codec_error" in said.stderr
    )
