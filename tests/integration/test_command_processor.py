"""The command processor across restarts (DESIGN §7, §12): its state comes from the ledger
alone, so a restarted (or killed) processor carries on where the ledger stands."""

from __future__ import annotations

from typing import Any

import pytest
from harness import ADMIN, AGENT, ALICE, BOB, GOOD_FACTS, policy_doc, wait_for

from ledger.codec import MAGIC
from ledger.core.events import (
    ApprovePolicyVersion,
    CommandRejected,
    PolicyVersionPromoted,
    PolicyVersionProposed,
    PromotePolicyVersion,
    ProposePolicyVersion,
    Stage,
)
from ledger.errors import CommandRejectedError
from ledger.ids import new_id, utcnow
from ledger.kafka.clients import rdkafka_config
from ledger.kafka.groups import members_holding
from ledger.local.stack import commands_held_elsewhere, processes
from ledger.settings import Settings
from processors.command_loop import consumer_config
from processors.command_processor import APP_ID as COMMAND_PROCESSOR_APP

pytestmark = pytest.mark.integration


def _group_members(stack: Any, group: str) -> list[Any]:
    """The members of consumer group ``group``, as the broker describes them."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(rdkafka_config(stack.bootstrap, {}, stack.security("admin")))
    [described] = admin.describe_consumer_groups([group]).values()
    return list(described.result(timeout=10).members)


def test_restarted_command_processor_rebuilds_its_state_from_the_ledger(stack_factory):
    stack = stack_factory()
    stack.grant_defaults()
    admin = stack.client(ADMIN)
    first = stack.propose(admin, policy_doc("refund", action="refund.issue"), by=ALICE)
    second = stack.propose(
        admin, policy_doc("refund", action="refund.issue", auto_below=200), by=ALICE
    )
    assert (first.version, second.version) == (1, 2)

    assert stack.stop("command-processor")  # SIGTERM: a clean stop
    stack.start("command-processor")

    # The author of v1 is still known: alice cannot approve it, bob can.
    with pytest.raises(CommandRejectedError) as own:
        stack.approve(admin, "refund", 1, by=ALICE)
    assert own.value.code == "self_approval"
    approved = stack.approve(admin, "refund", 1, by=BOB)
    assert approved.aggregate == "refund"
    stack.promote(admin, "refund", 1, Stage.ACTIVE)
    # v2 was never approved, before or after the restart.
    with pytest.raises(CommandRejectedError) as unapproved:
        stack.promote(admin, "refund", 2, Stage.ACTIVE)
    assert unapproved.value.code == "not_approved"

    third = stack.propose(
        admin, policy_doc("refund", action="refund.issue", auto_below=300), by=BOB
    )
    assert third.version == 3  # numbering continues from the ledger, not from 1

    # Killed without a clean leave this time: the next command still sees every version. The
    # processor is a static member of its group (this host and home), so the one started again
    # takes the dead one's place at once rather than after its 10 s session (a review of
    # concurrent governance: the CLI's 10 s wait ran out on the first command after a kill).
    assert stack.stop("command-processor", kill=True)
    stack.start("command-processor")
    fourth = stack.propose(
        admin, policy_doc("refund", action="refund.issue", auto_below=400), by=BOB, timeout=60
    )
    assert fourth.version == 4
    group = stack.settings.topics.group(COMMAND_PROCESSOR_APP)
    members = _group_members(stack, group)
    ours = consumer_config(stack.settings, group)["group.instance.id"]
    assert [m.group_instance_id for m in members] == [ours], members
    # What `ps` reads: this home's command processor holds the commands partition.
    held = members_holding(
        stack.bootstrap, group, stack.topics.commands, security=stack.security("admin")
    )
    assert held == [(group, ours, 1)], held
    settings = Settings.from_env(stack.cli_env())
    procs = processes(settings, bootstrap=stack.bootstrap)
    assert commands_held_elsewhere(settings, procs, bootstrap=stack.bootstrap) is None

    agent = stack.client(AGENT)
    decision = stack.evaluate_settled(
        agent, action="refund.issue", principal=AGENT, resource="account:1", facts=GOOD_FACTS
    )
    assert (decision.policy_version, decision.stage) == (1, Stage.ACTIVE)

    # One history, no gaps and nothing written twice across the two restarts.
    events = stack.records(stack.topics.policy_events)
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5, 6]
    proposals = [e for e in events if isinstance(e, PolicyVersionProposed)]
    assert [p.version for p in proposals] == [1, 2, 3, 4]


def test_a_command_delivered_twice_is_applied_once(stack_factory):
    stack = stack_factory(processors=("command-processor",))
    admin = stack.client(ADMIN)
    command = ProposePolicyVersion(
        event_id=new_id(), occurred_at=utcnow(), actor=ADMIN, document=policy_doc("refund")
    )
    first = admin.submit_command(command)
    again = admin.submit_command(command)  # same command id: a retry, or a re-delivery
    assert first.version == 1
    assert again.event_ids == first.event_ids
    assert again.message == "already applied"
    events = stack.records(stack.topics.policy_events)
    assert [type(e).__name__ for e in events] == ["PolicyVersionProposed"]


def test_a_rejected_command_sent_again_after_a_restart_gets_its_first_rejection(stack_factory):
    # A captured rejected command must not go through later, when the state would let it:
    # the restarted processor reads its recent answers back before it answers anything.
    stack = stack_factory(processors=("command-processor",))
    stack.grant_defaults()
    admin = stack.client(ADMIN)
    stack.propose(admin, policy_doc("refund", action="refund.issue"), by=ALICE)
    captured = stack.signed(admin, _promotion())
    with pytest.raises(CommandRejectedError) as first:
        admin.submit_command(captured)
    assert first.value.code == "not_approved"
    stack.approve(admin, "refund", 1, by=BOB)  # now the same promotion would be accepted

    assert stack.stop("command-processor")
    stack.start("command-processor")
    again = stack.client(ADMIN)
    with pytest.raises(CommandRejectedError) as replayed:
        again.submit_command(captured, timeout=60)
    assert replayed.value.code == "not_approved"

    answers = [
        r for r in stack.records(stack.topics.command_results) if r.command_id == captured.event_id
    ]
    assert [(type(a), a.code) for a in answers] == [(CommandRejected, "not_approved")] * 2
    events = stack.records(stack.topics.policy_events)
    assert not any(isinstance(e, PolicyVersionPromoted) for e in events)


def test_a_command_a_newer_release_answered_is_refused_by_an_earlier_one_after_a_restart(
    stack_factory,
):
    # Rolled back past the answers' form: an answer the processor cannot read (a newer
    # release's rejection) must not let a copy of its command be decided again, and accepted.
    stack = stack_factory(processors=("command-processor",))
    stack.grant_defaults()
    admin = stack.client(ADMIN)
    stack.propose(admin, policy_doc("refund", action="refund.issue"), by=ALICE)
    stack.approve(admin, "refund", 1, by=BOB)  # a promotion would be accepted
    captured = stack.signed(admin, _promotion())
    assert stack.stop("command-processor")
    producer = stack.producer("command-processor")
    try:  # the newer release's answer to it: a schema this release does not know
        newer = MAGIC + b"\xee" * 8 + b"\x00"
        producer.send(stack.topics.command_results, key=captured.event_id.encode(), value=newer)
        producer.flush(timeout=10)
    finally:
        producer.close(timeout=5)

    stack.start("command-processor")
    again = stack.client(ADMIN)
    with pytest.raises(CommandRejectedError) as refused:
        again.submit_command(captured, timeout=60)
    assert refused.value.code == "governance_unreadable", refused.value
    assert "a newer release answered this command id" in str(refused.value)
    assert "1 recent answer(s)" in stack.logs()
    events = stack.records(stack.topics.policy_events)
    assert not any(isinstance(e, PolicyVersionPromoted) for e in events)
    # Only that command: another promotion is decided.
    again.submit_command(stack.signed(again, _promotion()), timeout=30)


def _promotion() -> PromotePolicyVersion:
    return PromotePolicyVersion(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor=ADMIN,
        policy="refund",
        version=1,
        stage=Stage.ACTIVE,
    )


def test_a_commit_past_the_commands_end_answers_no_old_command_again(stack_factory):
    # A copy of a running home, restored (the broker's logs copied before its offsets topic),
    # left the group's commit past the commands' end: read from their beginning, every command
    # would be answered a second time (an operator's walkthrough, on the evaluators).
    import collections

    from kafka import TopicPartition
    from kafka.errors import CommitFailedError
    from kafka.structs import OffsetAndMetadata

    from ledger.kafka.acls import PROCESSOR_GROUPS

    stack = stack_factory(processors=("command-processor",))
    stack.grant_defaults()
    admin = stack.client(ADMIN)
    stack.propose(admin, policy_doc("refund", action="refund.issue"), by=ALICE)
    with pytest.raises(CommandRejectedError):
        stack.promote(admin, "refund", 1, Stage.ACTIVE)  # not approved
    before = collections.Counter(r.command_id for r in stack.records(stack.topics.command_results))
    assert before and set(before.values()) == {1}

    assert stack.stop("command-processor")
    group = stack.topics.group(PROCESSOR_GROUPS["command-processor"])
    consumer = stack.consumer("command-processor", group_id=group, enable_auto_commit=False)
    try:
        tp = TopicPartition(stack.topics.commands, 0)
        end = consumer.end_offsets([tp])[tp]

        def committed() -> bool:
            # The stopped processor was a static member: it did not leave, and the group takes
            # a commit from outside only once its session (10 s) has ended.
            try:
                consumer.commit({tp: OffsetAndMetadata(end + 100, "", -1)})
            except CommitFailedError:
                return False
            return True

        wait_for(committed, timeout=60, what="the stopped processor's session to end", poll=1)
    finally:
        consumer.close()
    stack.start("command-processor")

    again = stack.client(ADMIN)
    approval = ApprovePolicyVersion(
        event_id=new_id(), occurred_at=utcnow(), actor=BOB, policy="refund", version=1
    )
    approved = stack.submit(again, approval, timeout=60)  # a new command: answered
    answers = collections.Counter(r.command_id for r in stack.records(stack.topics.command_results))
    assert {c: n for c, n in answers.items() if n != 1} == {}, stack.logs()
    assert approved.aggregate == "refund"
    log = (stack.log_dir / "command-processor.log").read_text()
    assert "100 offsets answered before are not in the log" in log, log


def test_without_its_read_of_recent_answers_the_command_processor_stops_and_says_why(
    stack_factory,
):
    # A deployment upgraded without applying the ACL table again: answering commands without
    # the recent rejections would reopen the replay window, so the processor stops and says why.
    from kafka.admin import ACLFilter

    from ledger.errors import ProcessorError
    from ledger.kafka.acls import _acl, acl_table
    from ledger.kafka.clients import make_admin

    stack = stack_factory(processors=("command-processor",))
    admin_client = stack.client(ADMIN)
    with pytest.raises(CommandRejectedError):  # an answer for the restart to read back
        stack.approve(admin_client, "refund", 1, by=ADMIN)
    assert stack.stop("command-processor")

    (row,) = [
        p
        for p in acl_table(stack.topics)
        if (p.role, p.name, p.operation)
        == ("command-processor", stack.topics.command_results, "READ")
    ]
    acl = _acl(row)
    admin = make_admin(stack.bootstrap, security=stack.security("admin"))
    try:
        admin.delete_acls(
            [
                ACLFilter(
                    principal=acl.principal,
                    host=acl.host,
                    operation=acl.operation,
                    permission_type=acl.permission_type,
                    resource_pattern=acl.resource_pattern,
                )
            ]
        )
    finally:
        admin.close()
    with pytest.raises(ProcessorError, match="exited during start-up"):
        stack.start("command-processor")
    assert "is the ACL table applied?" in stack.logs()


def test_a_processor_refused_the_commands_topic_stops_itself_saying_why(stack_factory):
    # An operator's drill: with only its READ ACL on ledger.commands removed, the command
    # processor logged one warning (librdkafka says a refusal once, then retries in silence)
    # and `ledger ps` showed it healthy for four minutes while no command was answered.
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )

    from ledger.kafka.clients import rdkafka_config
    from ledger.local.stack import _running_pid, ended_unannounced

    stack = stack_factory(processors=("command-processor",))
    admin = AdminClient(rdkafka_config(stack.bootstrap, {}, stack.security("admin")))
    read = AclBindingFilter(
        ResourceType.TOPIC,
        stack.topics.commands,
        ResourcePatternType.ANY,
        "User:command-processor",
        None,
        AclOperation.READ,
        AclPermissionType.ANY,
    )
    for future in admin.delete_acls([read]).values():
        assert future.result(timeout=30), "no READ ACL to remove"
    wait_for(
        lambda: not _running_pid(stack.settings, "command-processor"),
        timeout=90,
        what="the command processor to stop itself",
    )
    log = (stack.log_dir / "command-processor.log").read_text()
    assert f"cannot read {stack.topics.commands} for " in log, log[-3000:]
    assert "so no command is answered" in log
    said = ended_unannounced(stack.log_dir / "command-processor.log")  # what `ps` shows
    assert said is not None and "ended on an error its log holds" in said, said
    assert "cannot read" in said and "so no command is answered" in said, said
