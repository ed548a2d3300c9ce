"""Issue 11's attacks, tried against the session's secured broker and real processors; each fails
with the documented error.

- an anonymous (PLAINTEXT) client, or one with a wrong password, gets nothing: ``KafkaUnavailable``
  (the broker drops it during authentication);
- each role writes only the topics the ACL table gives it (an ``agent`` credential cannot write
  ``grant-events``, ``policy-events`` or ``decisions``); nobody but ``admin`` deletes records or
  topics: ``TopicAuthorizationFailedError`` from the broker;
- a forged decision written with an agent credential is refused by the broker, and the guarded
  tool of a principal with no grant does not run;
- governance commands: unsigned → ``unsigned_command``; signed by a key nobody registered, or by
  another actor's key (``--by human:admin`` without the admin key) → ``unknown_actor_key``;
  altered after signing → ``bad_signature``; the CLI without the actor's key → one line, exit 2;
- the accepted history proves offline who did what (``ledger actor verify``), from Kafka or from
  an export (a record rewritten in the export is ``tamper_detected``, exit 11);
- what the stack writes under ``$LEDGER_HOME`` is 0700/0600.
"""

from __future__ import annotations

import gc
import json
import os
import stat
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import ADMIN, AGENT, GOOD_FACTS, LedgerStack

from ledger.cli.app import cli
from ledger.client import ClientConfig, LedgerClient
from ledger.codec import default_codec
from ledger.core.events import (
    DecisionRecorded,
    Determination,
    GrantIssued,
    IssueGrant,
)
from ledger.core.signing import verify_event, verify_history
from ledger.core.state import replay
from ledger.enforce import DecisionDenied, enforce
from ledger.errors import CommandRejectedError, KafkaAccessDenied, KafkaUnavailable
from ledger.ids import new_id, utcnow
from ledger.kafka.acls import acl_table
from ledger.kafka.clients import make_admin, make_producer
from ledger.kafka.governance import load_history
from ledger.keys import sign
from ledger.settings import ROLES

pytestmark = pytest.mark.integration

CODEC = default_codec()
STRANGER = "agent:stranger"  # holds no grant


@pytest.fixture(autouse=True)
def _secured(kafka: Any) -> None:
    if not kafka.secured:
        pytest.skip(f"needs the project's secured broker; this session's is {kafka.source}")


@pytest.fixture(scope="module")
def bare(stack_factory: Any) -> LedgerStack:
    """Topics and ACLs, no processors: junk written here bothers nobody."""
    stack: LedgerStack = stack_factory(processors=())
    return stack


# --------------------------------------------------------------------------- authentication


# A refused client leaves nothing open: kafka-python abandons the network client of a
# constructor that fails, and ledger.kafka.clients closes it (the collection below would warn,
# and warnings are errors here, if its wake-up socket pair were still open).


def test_an_anonymous_client_is_refused(kafka: Any) -> None:
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable, match="requires authentication") as refused:
        make_admin(kafka.bootstrap)  # PLAINTEXT, no credential
    assert time.monotonic() - started < 30  # refused, not hung
    del refused
    gc.collect()


def test_a_wrong_password_is_refused(kafka: Any) -> None:
    agent = kafka.security("agent")
    with pytest.raises((KafkaAccessDenied, KafkaUnavailable)) as refused:
        make_producer(kafka.bootstrap, security=replace(agent, password="guessed"))
    del refused
    gc.collect()


def test_a_wrong_password_is_access_denied_on_the_kafka_python_paths_too(
    shared_stack: LedgerStack,
) -> None:
    # An operator's walkthrough: `ledger decisions`, `topics retention` and `policy list` with
    # a wrong password said "cannot reach Kafka … is it running?" (kafka-python retries a
    # refused login until its bootstrap times out); `ledger evaluate` said what it was.
    import subprocess
    import sys

    agent = shared_stack.security("agent")
    assert agent is not None
    env = {
        **os.environ,
        **replace(agent, password="guessed").to_env(),
        "LEDGER_BOOTSTRAP": shared_stack.bootstrap,
        "LEDGER_TOPIC_PREFIX": shared_stack.topics.prefix,
    }
    ledger = [str(Path(sys.executable).parent / "ledger"), "decisions", "--limit", "1"]
    done = subprocess.run(ledger, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 7, done.stderr
    # One wording whichever client library met the refusal (a README check found two).
    said = f"Kafka at {shared_stack.bootstrap} refused to authenticate user 'agent': "
    assert said in done.stderr, done.stderr
    assert done.stderr.rstrip().endswith("[kafka_access_denied]"), done.stderr
    # When kafka-python heard no refusal (the broker closed first: a CI run), librdkafka is
    # asked, whose error callback hears it.
    from ledger.kafka.clients import _refused_by_librdkafka

    refused = _refused_by_librdkafka(shared_stack.bootstrap, replace(agent, password="guessed"))
    assert refused is not None and str(refused).startswith(said), refused
    assert _refused_by_librdkafka(shared_stack.bootstrap, agent) is None  # a good login


def test_the_sdk_with_a_wrong_password_is_one_ledger_error(shared_stack: LedgerStack) -> None:
    # The SDK's request path is librdkafka, which reports a refused SASL login as a transport
    # failure: it must still be one ledger error naming the credentials, never a raw
    # KafkaException.
    agent = shared_stack.security("agent")
    assert agent is not None
    config = ClientConfig(
        bootstrap=shared_stack.bootstrap,
        topics=shared_stack.topics,
        actor=AGENT,
        timeout=10,
        security=replace(agent, password="guessed"),
    )
    started = time.monotonic()
    # An agent engineer's walkthrough: it was KafkaUnavailable after 5 s, so code branching
    # on the error retried "broker down" instead of fixing its configuration.
    with pytest.raises(KafkaAccessDenied) as refused:
        LedgerClient(config)
    said = f"Kafka at {shared_stack.bootstrap} refused to authenticate user 'agent': "
    assert str(refused.value).startswith(said) and "(check the credentials" in str(refused.value)
    assert time.monotonic() - started < 4.5


# --------------------------------------------------------------------------- authorization


def _writers(stack: LedgerStack) -> dict[str, set[str]]:
    """topic → the roles the ACL table lets write it."""
    writers: dict[str, set[str]] = {topic: set() for topic in stack.topics.all()}
    for p in acl_table(stack.topics):
        if p.kind == "topic" and p.operation == "WRITE":
            writers[p.name].add(p.role)
    return writers


def _authorization_failure(exc: BaseException) -> bool:
    """The broker refused an operation by its ACLs (a topic's; or, for a role allowed to write
    nothing, the cluster's: an idempotent producer cannot even get a producer id)."""
    from kafka.errors import AuthorizationError

    return isinstance(exc, AuthorizationError) or "AuthorizationFailed" in str(exc)


def test_each_role_writes_only_what_the_acl_table_gives_it(bare: LedgerStack) -> None:
    from kafka.errors import KafkaError

    writers = _writers(bare)
    # The issue's table, by name: one writer of each governance and decision topic.
    t = bare.topics
    assert writers[t.policy_events] == writers[t.grant_events] == {"command-processor"}
    assert writers[t.command_results] == {"command-processor"}
    assert writers[t.decisions] == writers[t.corrections] == {"evaluator"}
    assert writers[t.chain_checkpoints] == {"evaluator"}
    assert writers[t.evaluation_requests] == {"agent"} and writers[t.commands] == {"governance"}

    refused: dict[str, set[str]] = {}
    for role in ROLES:
        if role == "admin":
            continue
        for topic, allowed in writers.items():
            # A producer per attempt: an idempotent producer refused once stays failed.
            producer = bare.producer(role, max_block_ms=5000)
            try:
                producer.send(topic, key=b"k", value=b"junk").get(timeout=10)
                assert role in allowed, f"{role} wrote {topic}"
            except KafkaError as exc:
                assert _authorization_failure(exc), exc
                refused.setdefault(role, set()).add(topic)
            finally:
                producer.close(timeout=5)
    for role in ROLES:
        if role != "admin":
            assert refused.get(role, set()) == {t for t, w in writers.items() if role not in w}
    # The attacks of the issue, named.
    assert {t.grant_events, t.policy_events, t.decisions} <= refused["agent"]


def test_an_agent_cannot_read_other_agents_requests(bare: LedgerStack) -> None:
    from kafka import TopicPartition
    from kafka.errors import TopicAuthorizationFailedError

    consumer = bare.consumer("agent", consumer_timeout_ms=2000)
    try:
        consumer.assign([TopicPartition(bare.topics.evaluation_requests, 0)])
        with pytest.raises(TopicAuthorizationFailedError):
            consumer.poll(timeout_ms=5000)
            consumer.poll(timeout_ms=5000)
    finally:
        consumer.close()


def test_a_read_the_acls_refuse_is_one_line_kafka_access_denied(shared_stack: LedgerStack) -> None:
    # An operator's check: `ledger policy list` with the agent's credential (it may see the
    # governance topics listed, not read them) ended in a kafka-python traceback, exit 1.
    agent = shared_stack.security("agent")
    env = {
        **shared_stack.cli_env(),
        "LEDGER_SASL_USERNAME": "agent",
        "LEDGER_SASL_PASSWORD": str(agent.password),
    }
    for args in (["policy", "list"], ["grant", "list"]):
        result = CliRunner().invoke(cli, args, env=env)
        assert result.exit_code == 7, result.output
        assert "Traceback" not in result.output and "[kafka_access_denied]" in result.output
        assert "Kafka's ACLs do not allow user 'agent' this" in result.output


@pytest.mark.parametrize("role", [r for r in ROLES if r != "admin"])
def test_only_the_admin_deletes_records_or_topics(bare: LedgerStack, role: str) -> None:
    from kafka import TopicPartition
    from kafka.errors import TopicAuthorizationFailedError, UnknownTopicOrPartitionError

    # Refused by the ACLs; a role that may not even describe the topic is not shown it at all.
    refused = (TopicAuthorizationFailedError, UnknownTopicOrPartitionError)
    topic = bare.topics.decisions
    admin = make_admin(bare.bootstrap, security=bare.security(role))  # type: ignore[arg-type]
    try:
        with pytest.raises(refused):
            admin.delete_records({TopicPartition(topic, 0): 0})
        with pytest.raises(refused):
            admin.delete_topics([topic])
    finally:
        admin.close()
    checker = make_admin(bare.bootstrap, security=bare.security("admin"))
    try:
        assert topic in checker.list_topics()
    finally:
        checker.close()


# --------------------------------------------------------------------------- forged decisions


def test_a_forged_decision_is_refused_and_the_guarded_tool_does_not_run(
    shared_stack: LedgerStack,
) -> None:
    from kafka.errors import TopicAuthorizationFailedError

    victim = shared_stack.client(STRANGER)
    request = victim.request(
        action="refund.issue", principal=STRANGER, resource="account:99", facts=GOOD_FACTS
    )
    forged = DecisionRecorded(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor="service:evaluator",
        request_id=request.event_id,
        requested_at=request.occurred_at,
        action=request.action,
        principal=STRANGER,
        resource=request.resource,
        determination=Determination.ALLOW,
        reason_code="rule_matched",
    )
    forger = shared_stack.producer("agent", max_block_ms=5000)
    refusals: list[BaseException] = []
    stop = threading.Event()

    def forge() -> None:  # keeps trying while the real request is in flight
        while not stop.is_set():
            try:
                forger.send(
                    shared_stack.topics.decisions,
                    key=request.event_id.encode(),
                    value=CODEC.encode(forged),
                ).get(timeout=10)
            except TopicAuthorizationFailedError as exc:
                refusals.append(exc)
            time.sleep(0.01)

    racer = threading.Thread(target=forge, daemon=True)
    racer.start()
    try:
        decision = victim.send_request(request).result(timeout=30)
    finally:
        stop.set()
        racer.join(timeout=20)
        forger.close(timeout=5)
    assert refusals, "the broker took a decision written with an agent credential"
    assert decision.determination is Determination.DENY and decision.reason_code == "no_authority"
    assert decision.event_id != forged.event_id and decision.requested_by == STRANGER

    ran: list[str] = []

    @enforce(
        victim, action="refund.issue", principal=STRANGER, resource="account:99", facts=GOOD_FACTS
    )
    def issue_refund(*, constraints: dict[str, Any]) -> None:
        ran.append("refunded")

    with pytest.raises(DecisionDenied) as denied:
        issue_refund()
    assert ran == [] and denied.value.decision.reason_code == "no_authority"
    written = [
        d
        for d in shared_stack.records(shared_stack.topics.decisions)
        if d.request_id == request.event_id
    ]
    assert [d.event_id for d in written] == [decision.event_id]  # only the evaluator's


# --------------------------------------------------------------------------- signed commands


def _grant(actor: str = ADMIN, *, principal: str = "agent:mallory") -> IssueGrant:
    return IssueGrant(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor=actor,
        grant_id=f"g-{new_id()}",
        principal=principal,
        actions=("*",),
        resource="*",
    )


def _rejected(stack: LedgerStack, command: IssueGrant) -> str:
    """The code the command processor rejects ``command`` with (sent as it is)."""
    client = stack.client(ADMIN)  # it signs only what is unsigned: these go as they are
    with pytest.raises(CommandRejectedError) as raised:
        if command.signature is None:
            raw = stack.producer("governance")
            try:  # straight to the topic, as an attacker would: no client signs it
                raw.send(
                    stack.topics.commands, key=b"agent:mallory", value=CODEC.encode(command)
                ).get(timeout=10)
            finally:
                raw.close(timeout=5)
            _wait_result(stack, command.event_id)
        else:
            client.submit_command(command)
    stack.release(client)
    return raised.value.code


def _wait_result(stack: LedgerStack, command_id: str) -> None:
    from ledger.core.events import CommandRejected

    give_up = time.monotonic() + 30
    while time.monotonic() < give_up:
        for r in stack.records(stack.topics.command_results):
            if getattr(r, "command_id", None) == command_id:
                if isinstance(r, CommandRejected):
                    raise CommandRejectedError(r.reason, code=r.code)
                return
        time.sleep(0.2)
    raise AssertionError(f"no result for {command_id}")


def test_an_unsigned_command_is_rejected(shared_stack: LedgerStack) -> None:
    assert _rejected(shared_stack, _grant()) == "unsigned_command"


def test_a_command_signed_by_an_unregistered_key_is_rejected(shared_stack: LedgerStack) -> None:
    assert _rejected(shared_stack, sign(_grant(), Ed25519PrivateKey.generate())) == (
        "unknown_actor_key"
    )


def test_by_admin_without_the_admin_key_is_rejected(shared_stack: LedgerStack) -> None:
    # Mallory is a registered actor: her own key is genuine, it just is not the admin's.
    admin = shared_stack.client(ADMIN)
    if not shared_stack.keys.has_private("human:mallory"):
        shared_stack.register_key(admin, "human:mallory")
    mallorys = shared_stack.keys.private_key("human:mallory")
    assert _rejected(shared_stack, sign(_grant(ADMIN), mallorys)) == "unknown_actor_key"


def test_a_tampered_command_has_a_bad_signature(shared_stack: LedgerStack) -> None:
    genuine = shared_stack.sign(_grant(principal="agent:modest"))
    tampered = replace(genuine, principal="agent:mallory")  # the signature stays
    assert _rejected(shared_stack, tampered) == "bad_signature"


def test_the_cli_without_the_actors_key_says_so_in_one_line(
    shared_stack: LedgerStack, tmp_path: Path
) -> None:
    env = {**shared_stack.cli_env(), "LEDGER_KEYS": str(tmp_path / "no-keys")}
    result = CliRunner().invoke(
        cli,
        ["grant", "issue", "--to", "agent:x", "--actions", "*", "--resource", "*", "--by", ADMIN],
        env=env,
    )
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert "no signing key for human:admin" in line and "[no_signing_key]" in line


def test_the_accepted_history_proves_who_did_what(shared_stack: LedgerStack) -> None:
    admin = shared_stack.client(ADMIN)
    accepted = shared_stack.submit(admin, _grant(principal="agent:proven"))
    history = load_history(
        shared_stack.bootstrap, shared_stack.topics, security=shared_stack.security("auditor")
    )
    events = [entry.event for entry in history]
    verdicts = {v.event_id: v for v in verify_history(events)}
    assert all(v.ok for v in verdicts.values()), [v for v in verdicts.values() if not v.ok]
    (grant,) = [e for e in events if e.event_id in accepted.event_ids]
    assert isinstance(grant, GrantIssued) and not verdicts[grant.event_id].anchor
    assert json.loads(str(grant.signed_command))["command"]["principal"] == "agent:proven"
    assert any(v.anchor and v.actor == "service:command-processor" for v in verdicts.values())

    # Someone with the processor's credential rewrites the grant: the proof no longer holds.
    forged = replace(grant, principal="agent:mallory")
    verdict = verify_event(replay(events), forged)
    assert not verdict.ok and "principal" in str(verdict.problem)

    result = CliRunner().invoke(cli, ["actor", "verify", "--json"], env=shared_stack.cli_env())
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["unproven"] == [] and report["proven"] >= 1 and report["anchors"] >= 1
    # Each event whose signed command is still on the commands topic is held to when the
    # broker received it: the grant just issued is among them.
    assert report["witnessed"] >= 1, report


def test_an_export_proves_who_did_what_offline(shared_stack: LedgerStack, tmp_path: Path) -> None:
    """The proof travels with the export: signatures and key ids are columns SQL can join to the
    registered keys, and ``ledger actor verify --from`` checks each event's record bytes."""
    from export_format import export_from_kafka, files_of, rewrite

    from ledger.audit.sql import connect

    admin = shared_stack.client(ADMIN)
    accepted = shared_stack.submit(admin, _grant(principal="agent:exported"))
    (grant_id,) = accepted.event_ids
    out = tmp_path / "export"
    export_from_kafka(
        shared_stack.bootstrap, shared_stack.topics, out, security=shared_stack.security("exporter")
    )
    con = connect(out, read_only=True)
    try:
        row = con.execute(
            """
            SELECT g.actor, g.command_key_id, octet_length(g.command_signature), k.event_type
            FROM grant_events g
            JOIN grant_events k
              ON k.event_type = 'ActorKeyRegistered'
             AND k.principal = g.actor AND k.actor_key_id = g.command_key_id
            WHERE g.event_id = ?
            """,
            [grant_id],
        ).fetchone()
    finally:
        con.close()
    assert row is not None and row[0] == ADMIN and row[1] and row[2] == 64, row

    env = shared_stack.cli_env()
    result = CliRunner().invoke(cli, ["actor", "verify", "--from", str(out), "--json"], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["unproven"] == [] and report["proven"] >= 1 and report["anchors"] >= 1
    assert report["witnessed"] >= 1, report  # from the export's commands, too

    # The grant's record rewritten in the export (its principal changed): no longer proven.
    def forge(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for r in rows:
            if r["event_id"] == grant_id:
                event = CODEC.decode(r["record"])
                r["record"] = CODEC.encode(replace(event, principal="agent:mallory"))
        return rows

    for path in files_of(out, shared_stack.topics.grant_events):
        rewrite(path, forge)
    result = CliRunner().invoke(cli, ["actor", "verify", "--from", str(out)], env=env)
    assert result.exit_code == 11, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert "[tamper_detected]" in last and grant_id in last, result.stderr


def test_damaged_governance_topics_are_reported_from_kafka(stack_factory: Any) -> None:
    """Someone holding the processor's credential writes junk to a governance topic, and the
    admin deletes a record from the start of one: ``ledger actor verify`` (from Kafka) names
    both, exit 11, where reading the history for state skips them."""
    from kafka import TopicPartition

    stack: LedgerStack = stack_factory(processors=())
    t = stack.topics
    producer = stack.producer("command-processor")
    try:
        for value in (b"junk at 0", b"junk at 1"):
            producer.send(t.grant_events, key=b"k", value=value).get(timeout=10)
        producer.send(t.policy_events, key=b"k", value=None).get(timeout=10)
    finally:
        producer.close(timeout=5)
    admin = make_admin(stack.bootstrap, security=stack.security("admin"))
    try:
        admin.delete_records({TopicPartition(t.grant_events, 0): 1})
    finally:
        admin.close()

    assert load_history(stack.bootstrap, t, security=stack.security("auditor")) == []
    result = CliRunner().invoke(cli, ["actor", "verify", "--json"], env=stack.cli_env())
    assert result.exit_code == 11, result.output
    damaged = json.loads(result.stdout)["damaged_rows"]
    assert sorted(damaged) == sorted(
        [
            f"{t.policy_events} partition 0 offset 0: its record is not a governance event "
            "(empty record (tombstone) on a governance topic)",
            f"{t.grant_events} partition 0 offset 1: its record is not a governance event "
            "(not a ledger record: bad magic 0x6a75 (expected C3 01))",
            f"{t.grant_events} partition 0: offsets 0-0 are missing",
        ]
    ), damaged

    result = CliRunner().invoke(cli, ["actor", "verify"], env=stack.cli_env())
    assert result.exit_code == 11
    lines = result.stderr.strip().splitlines()
    assert sum(line.startswith("DAMAGED ") for line in lines) == 3, result.stderr
    assert "3 problems with the governance topics" in result.stdout
    assert "[tamper_detected]" in lines[-1] and "the governance topics" in lines[-1]


# --------------------------------------------------------------------------- files


def _loose(root: Path) -> list[str]:
    """Paths under ``root`` that group or others may read, write or enter."""
    found = []
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            found.append(f"{path} {oct(mode)}")
    return found


def test_what_the_stack_writes_is_private(kafka: Any, shared_stack: LedgerStack) -> None:
    broker_home = kafka.settings.home
    assert not _loose(broker_home / "broker"), _loose(broker_home / "broker")
    assert not _loose(broker_home / "credentials")
    keys = shared_stack.keys.path
    assert not _loose(keys)
    assert stat.S_IMODE(shared_stack.keys.private_path(ADMIN).stat().st_mode) == 0o600
    for role in ROLES:
        credential = broker_home / "credentials" / f"{role}.json"
        assert stat.S_IMODE(credential.stat().st_mode) == 0o600
        assert json.loads(credential.read_text())["sasl_plain_username"] == role


def test_role_credentials_are_distinct(kafka: Any) -> None:
    passwords = {str(kafka.security(role).password) for role in ROLES}
    assert len(passwords) == len(ROLES) and all(len(p) >= 32 for p in passwords)


def test_a_home_formatted_without_authentication_starts_secured(kafka: Any, tmp_path: Path) -> None:
    """A home from before authentication existed (or run with --insecure) gets its SCRAM users
    through the admin API on its next secured start; then anonymous clients are refused."""
    from ledger.kafka.topics import create_topics, topic_specs
    from ledger.local import broker
    from ledger.local.credentials import credential
    from ledger.settings import Settings

    settings = Settings(home=tmp_path / "old-home", cache=kafka.settings.cache)
    old = broker.start(settings, insecure=True)
    try:
        assert old.bootstrap and not old.secured
        create_topics(old.bootstrap, topic_specs(settings))  # anyone could, then
    finally:
        broker.stop(settings)
    assert not (settings.home / "credentials").exists()

    new = broker.start(settings)
    try:
        assert new.secured and new.bootstrap == old.bootstrap
        admin = make_admin(new.bootstrap, security=credential(settings, "admin"))
        try:
            assert settings.topics.decisions in admin.list_topics()  # the data survived
        finally:
            admin.close()
        with pytest.raises(KafkaUnavailable) as refused:
            make_admin(new.bootstrap)
        del refused
        gc.collect()
    finally:
        broker.stop(settings)


def test_a_decision_records_who_asked(shared_stack: LedgerStack) -> None:
    client = shared_stack.client(AGENT)
    decision = client.evaluate(
        action="refund.issue", principal=STRANGER, resource="account:1", facts=GOOD_FACTS
    )
    assert decision.requested_by == AGENT and decision.principal == STRANGER


def test_ledger_decisions_reads_with_the_agent_credential_alone(
    shared_stack: LedgerStack, agent: LedgerClient, tmp_path: Path
) -> None:
    # A red team: on a developer's machine holding only agent.json, every SDK and CLI hint
    # pointed at `ledger decisions --request`, which then asked for the auditor's password; the
    # agent role reads ledger.decisions (not the requests or dead letters).
    import shutil

    decision = agent.evaluate(
        action="refund.issue", principal=AGENT, resource="account:1", facts=GOOD_FACTS
    )
    only = tmp_path / "agent-only"
    only.mkdir(mode=0o700)
    shutil.copy2(shared_stack.settings.credentials / "agent.json", only / "agent.json")
    env = {**shared_stack.cli_env(), "LEDGER_CREDENTIALS": str(only)}
    shown = CliRunner().invoke(
        cli, ["decisions", "--request", decision.request_id, "--json"], env=env
    )
    assert shown.exit_code == 0, shown.output
    assert [d["event_id"] for d in json.loads(shown.stdout)] == [decision.event_id]
    assert "no auditor credential in $LEDGER_CREDENTIALS" in shown.stderr
    unknown = CliRunner().invoke(cli, ["decisions", "--request", "no-such-request"], env=env)
    assert "no decision for request 'no-such-request' (yet)" in unknown.stderr, unknown.output
    assert "Traceback" not in unknown.output
