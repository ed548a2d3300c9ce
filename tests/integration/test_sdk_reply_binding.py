"""A waiting call acts only on a decision that answers what it asked, against the real broker
and evaluator.

Red team (HIGH): with the auditor's credential (which reads the requests) and the agent's (which
writes them), an attacker copies each new request under its id, with its reply partition, but
another resource and harmless facts. The evaluator decides the copy first and takes the genuine
request for a repeat; the victim's ``@enforce`` took the copy's ``allow`` and the guarded body
ran ("asked account:40 amount 100000 standing suspended, got allow on account:1 amount 1.00").

Here the copy is written before the genuine request, ahead of it on its partition and on every
other request partition, while no evaluator runs; the evaluator is started once the genuine
request is written, so it decides the copy first, while the victim waits. The victim never gets
the copy's decision; and the genuine request is not taken for a repeat of it (only a record that
comes again as it was sent is): it is decided too, as asked, and the victim gets that answer.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from harness import AGENT, GOOD_FACTS, LedgerStack, policy_doc, wait_for

import ledger.client
from ledger.cli.app import cli
from ledger.codec import default_codec
from ledger.core.events import DecisionRecorded, Determination, EvaluationRequested
from ledger.enforce import DecisionDenied, enforce
from ledger.ids import new_id, utcnow

pytestmark = pytest.mark.integration

CODEC = default_codec()
ASKED = {**GOOD_FACTS, "amount": "100000", "standing": "suspended"}  # the policy denies it
HARMLESS = {**GOOD_FACTS, "amount": "1.00"}  # auto-refund: allowed
WAIT = 40.0  # the victim's timeout: the evaluator starts well within it


def test_a_copy_under_the_request_id_decided_first_is_never_taken(
    stack_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stack: LedgerStack = stack_factory(processors=("command-processor",))
    stack.grant_defaults()
    admin = stack.client("human:admin")
    stack.deploy(admin, policy_doc("bound"))
    action = "bound.issue"
    victim = stack.client(AGENT, timeout=WAIT)
    transport: Any = victim._transport
    chosen = new_id()
    copy = EvaluationRequested(
        event_id=chosen,
        occurred_at=utcnow(),
        actor=AGENT,
        requested_by=AGENT,
        action=action,
        principal=AGENT,
        resource="account:1",
        facts=HARMLESS,
        reply_partition=transport.reply_partition,
    )
    attacker = stack.producer("agent")
    try:
        # Keyed as the genuine request will be (its resource): ahead of it on its partition.
        attacker.send(
            stack.topics.evaluation_requests, key=b"account:40", value=CODEC.encode(copy)
        ).get(timeout=30)
        for partition in attacker.partitions_for(stack.topics.evaluation_requests):
            attacker.send(
                stack.topics.evaluation_requests,
                key=b"account:1",
                value=CODEC.encode(copy),
                partition=partition,
            ).get(timeout=30)
    finally:
        attacker.close()

    def start_the_evaluator_once_the_request_is_written() -> None:
        wait_for(
            lambda: getattr(transport._pending.get(chosen.encode()), "written", False),
            timeout=WAIT,
            what="the victim's request written",
        )
        stack.start("evaluator")

    starter = threading.Thread(target=start_the_evaluator_once_the_request_is_written)
    ran: list[str] = []

    @enforce(victim, action=action, principal=AGENT, resource="account:40", facts=ASKED)
    def issue_refund() -> None:
        ran.append("refunded")

    ids = iter([chosen])
    monkeypatch.setattr(ledger.client, "new_id", lambda: next(ids, None) or new_id())
    starter.start()
    try:
        with pytest.raises(DecisionDenied) as denied:
            issue_refund()
    finally:
        starter.join(timeout=120)
    assert denied.value.decision.rule == "suspended" and ran == []
    decided = [
        d
        for d in stack.records(stack.topics.decisions)
        if isinstance(d, DecisionRecorded) and d.request_id == chosen
    ]
    # The copy was decided first (allowed, once: its copies on other partitions are repeats),
    # and the genuine request after it, as asked.
    assert [(d.resource, d.determination) for d in decided] == [
        ("account:1", Determination.ALLOW),
        ("account:40", Determination.DENY),
    ], stack.logs()
    # One decision id for both (it comes from the request id): reproducing it from Kafka names
    # both, and takes neither for the other (a red team: the copy's allow "reproduced" for the
    # victim's deny, as Kafka's partition order gave it first).
    assert decided[0].event_id == decided[1].event_id
    replayed = CliRunner().invoke(
        cli, ["replay", "--decision", decided[0].event_id], env=stack.cli_env()
    )
    assert replayed.exit_code == 2, replayed.output
    assert "names several decisions: its request was decided again" in replayed.stderr
    assert ": allow (" in replayed.stderr and ": deny (suspended" in replayed.stderr
    # `audit verify` says so too (a red team: 939 such ids, "intact", and no word).
    out = tmp_path / "export"
    exported = CliRunner().invoke(cli, ["export", "--out", str(out)], env=stack.cli_env())
    assert exported.exit_code == 0, exported.output
    verified = CliRunner().invoke(cli, ["audit", "verify", "--from", str(out)], env=stack.cli_env())
    assert "1 request id(s) answered more than once" in verified.stdout, verified.output
