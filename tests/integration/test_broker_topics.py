"""The real broker: reachable, topics created as declared (idempotently), status reported."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ledger.cli.app import cli
from ledger.errors import LedgerError, TopicMismatch
from ledger.kafka.clients import make_consumer
from ledger.kafka.topics import create_topics, describe_topic_configs, topic_specs
from ledger.settings import Settings, TopicNames


def test_topics_are_created_with_declared_partitions_and_configs(kafka, topic_names):
    from kafka import KafkaConsumer

    specs = topic_specs(Settings(topics=topic_names), evaluation_partitions=4)
    first = create_topics(kafka.bootstrap, specs, security=kafka.security("admin"))
    assert {r.action for r in first} == {"created"}

    consumer = KafkaConsumer(**kafka.client_config("admin"))
    try:
        for spec in specs:
            assert consumer.partitions_for_topic(spec.name) == set(range(spec.partitions)), (
                spec.name
            )
    finally:
        consumer.close()

    configs = describe_topic_configs(
        kafka.bootstrap, [s.name for s in specs], security=kafka.security("admin")
    )
    for spec in specs:  # every declared config is on the topic itself
        assert {k: configs[spec.name].get(k) for k in spec.configs} == dict(spec.configs), spec.name
    assert configs[topic_names.decisions]["retention.ms"] == "-1"
    assert configs[topic_names.policy_events]["retention.ms"] == "-1"
    assert configs[topic_names.commands]["retention.ms"] == str(7 * 24 * 3600 * 1000)
    assert len({s.name for s in specs}) == 9
    checkpoints = next(s for s in specs if s.name == topic_names.chain_checkpoints)
    assert checkpoints.partitions == 1 and configs[checkpoints.name]["retention.ms"] == "-1"
    assert next(s for s in specs if s.name == topic_names.commands).partitions == 1


def test_topics_create_is_idempotent_and_repairs_drift(kafka, topic_names):
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    specs = topic_specs(Settings(topics=topic_names))
    create_topics(kafka.bootstrap, specs, security=kafka.security("admin"))
    admin = KafkaAdminClient(**kafka.client_config("admin"))
    try:
        admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC,
                    topic_names.decisions,
                    configs={"retention.ms": "1000"},
                )
            ]
        )
    finally:
        admin.close()
    # Config changes reach the broker's metadata asynchronously: wait until ours is visible.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = describe_topic_configs(
            kafka.bootstrap, [topic_names.decisions], security=kafka.security("admin")
        )
        if now[topic_names.decisions].get("retention.ms") == "1000":
            break
        time.sleep(0.1)
    again = {
        r.name: r.action
        for r in create_topics(kafka.bootstrap, specs, security=kafka.security("admin"))
    }
    assert again[topic_names.decisions] == "updated"
    assert again[topic_names.commands] == "exists"
    cfg = describe_topic_configs(
        kafka.bootstrap, [topic_names.decisions], security=kafka.security("admin")
    )[topic_names.decisions]
    assert cfg["retention.ms"] == "-1"


def test_topics_create_keeps_an_operators_retention_on_the_requests_only(kafka, topic_names):
    # The README tells operators to set a retention that suits them on the requests; every
    # `ledger up` set it back to forever, silently (an operator's walkthrough).
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    specs = topic_specs(Settings(topics=topic_names))
    create_topics(kafka.bootstrap, specs, security=kafka.security("admin"))
    requests, decisions = topic_names.evaluation_requests, topic_names.decisions
    mine = {"retention.ms": "3600000", "retention.bytes": "1073741824"}
    wanted = {
        requests: {**mine, "cleanup.policy": "compact"},  # the policy is the ledger's
        decisions: {"retention.ms": "3600000"},  # an export holds every decision
    }
    admin = KafkaAdminClient(**kafka.client_config("admin"))
    try:
        for name, configs in wanted.items():
            current = describe_topic_configs(
                kafka.bootstrap, [name], security=kafka.security("admin")
            )[name]
            admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name, configs={**current, **configs})]
            )
    finally:
        admin.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = describe_topic_configs(
            kafka.bootstrap, list(wanted), security=kafka.security("admin")
        )
        if all(now[n].get(k) == v for n, c in wanted.items() for k, v in c.items()):
            break
        time.sleep(0.1)

    reports = {
        r.name: r for r in create_topics(kafka.bootstrap, specs, security=kafka.security("admin"))
    }
    cfg = describe_topic_configs(kafka.bootstrap, list(wanted), security=kafka.security("admin"))
    assert {k: cfg[requests][k] for k in mine} == mine
    assert cfg[requests]["cleanup.policy"] == "delete"
    assert cfg[decisions]["retention.ms"] == "-1"
    assert reports[requests].action == "updated" and reports[requests].kept == mine
    assert reports[requests].kept_note() == (
        f"kept the operator's retention on {requests}: "
        "retention.bytes=1073741824, retention.ms=3600000"
    )
    assert reports[requests].configs["retention.ms"] == "3600000"
    assert reports[decisions].action == "updated" and not reports[decisions].kept
    assert all(r.kept_note() is None for n, r in reports.items() if n != requests)

    # Said on `ledger topics create`, one line.
    env = {
        "LEDGER_BOOTSTRAP": kafka.bootstrap,
        "LEDGER_TOPIC_PREFIX": topic_names.prefix,
        "LEDGER_CREDENTIALS": str(kafka.settings.credentials),
    }
    done = CliRunner().invoke(cli, ["topics", "create"], env=env)
    assert done.exit_code == 0, done.output
    assert f"kept the operator's retention on {requests}: retention.bytes=" in done.stderr


def test_topics_create_adds_partitions_and_refuses_to_break_an_ordered_topic(kafka, topic_names):
    from kafka import KafkaAdminClient
    from kafka.admin import NewPartitions

    settings = Settings(topics=topic_names)
    create_topics(
        kafka.bootstrap,
        topic_specs(settings, evaluation_partitions=2),
        security=kafka.security("admin"),
    )
    more = {
        r.name: r
        for r in create_topics(
            kafka.bootstrap,
            topic_specs(settings, evaluation_partitions=4),
            security=kafka.security("admin"),
        )
    }
    assert (more[topic_names.decisions].action, more[topic_names.decisions].partitions) == (
        "expanded",
        4,
    )
    assert more[topic_names.policy_events].action == "exists"
    fewer = {
        r.name: r
        for r in create_topics(
            kafka.bootstrap,
            topic_specs(settings, evaluation_partitions=2),
            security=kafka.security("admin"),
        )
    }
    assert (fewer[topic_names.decisions].action, fewer[topic_names.decisions].partitions) == (
        "exists",
        4,
    )

    admin = KafkaAdminClient(**kafka.client_config("admin"))
    try:  # someone grew the policy topic: its total order is gone, so the ledger must refuse it
        admin.create_partitions({topic_names.policy_events: NewPartitions(total_count=2)})
        # The broker's metadata shows the growth a moment after the controller commits it.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            (described,) = admin.describe_topics([topic_names.policy_events])
            if len(described["partitions"]) == 2:
                break
            time.sleep(0.1)
    finally:
        admin.close()
    with pytest.raises(TopicMismatch, match=f"{topic_names.policy_events} has 2 partitions"):
        create_topics(kafka.bootstrap, topic_specs(settings), security=kafka.security("admin"))


def test_a_replication_factor_beyond_the_cluster_is_a_one_line_usage_error(kafka, topic_names):
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["topics", "create", "--bootstrap", kafka.bootstrap, "--replication-factor", "3"],
        env={
            "LEDGER_TOPIC_PREFIX": topic_names.prefix,
            "LEDGER_CREDENTIALS": str(kafka.settings.credentials),
        },
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().count("\n") == 0
    assert (
        "replication factor 3 needs 3 brokers" in result.stderr
        and "--replication-factor 1" in result.stderr
    )


def test_cli_topics_create_json(kafka, topic_names, monkeypatch):
    monkeypatch.setenv("LEDGER_TOPIC_PREFIX", topic_names.prefix)
    monkeypatch.setenv("LEDGER_CREDENTIALS", str(kafka.settings.credentials))
    result = CliRunner().invoke(cli, ["topics", "create", "--bootstrap", kafka.bootstrap, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["name"] for r in rows} == set(topic_names.all())
    # Growing says what to do next; asking for fewer says Kafka cannot shrink (an operator's
    # walkthrough: "expanded" with no next steps, and a silent "exists" for --partitions 3).
    runner = CliRunner()
    grown = runner.invoke(
        cli, ["topics", "create", "--bootstrap", kafka.bootstrap, "--partitions", "8"]
    )
    assert grown.exit_code == 0, grown.output
    assert "expanded" in grown.stdout and "restart the processors" in grown.stderr
    fewer = runner.invoke(
        cli, ["topics", "create", "--bootstrap", kafka.bootstrap, "--partitions", "3"]
    )
    assert fewer.exit_code == 0, fewer.output
    assert "keep more than 3 partitions (8): Kafka cannot take partitions away" in fewer.stderr


def test_broker_status_start_idempotent(kafka, monkeypatch):
    if kafka.source != "local":
        pytest.skip(f"broker comes from {kafka.source}; the local-broker CLI is covered in CI")
    monkeypatch.setenv("LEDGER_HOME", str(kafka.settings.home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(kafka.settings.cache.parent))
    runner = CliRunner()
    status = runner.invoke(cli, ["broker", "status", "--json"])
    assert status.exit_code == 0, status.output
    doc = json.loads(status.stdout)
    assert doc["running"] is True and doc["bootstrap"] == kafka.bootstrap

    again = runner.invoke(cli, ["broker", "start", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["pid"] == doc["pid"]  # no second JVM


def test_a_stale_admin_credential_is_told_apart_from_a_hung_broker(kafka, monkeypatch, tmp_path):
    # A README check: a stale copy of the admin's credential (an old $LEDGER_CREDENTIALS) made
    # `broker status`, `ps` and `up` call a healthy broker hung and advise restarting it; the
    # restart then gave the broker that folder's passwords, and `up` wrote new role files into it.
    if kafka.source != "local":
        pytest.skip(f"broker comes from {kafka.source}; the local-broker CLI is covered in CI")
    monkeypatch.setenv("LEDGER_HOME", str(kafka.settings.home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(kafka.settings.cache.parent))
    stale = tmp_path / "stale"
    stale.mkdir(mode=0o700)
    admin = json.loads((kafka.settings.credentials / "admin.json").read_text())
    (stale / "admin.json").write_text(json.dumps({**admin, "sasl_plain_password": "not-it-x9"}))
    (stale / "admin.json").chmod(0o600)
    monkeypatch.setenv("LEDGER_CREDENTIALS", str(stale))
    runner = CliRunner()
    status = runner.invoke(cli, ["broker", "status", "--json"])
    assert status.exit_code == 1, status.output
    doc = json.loads(status.stdout)
    assert doc["running"] is True and doc["answering"] is True, doc
    assert (
        "uthentication failed" in doc["admin_refused"] or "_AUTHENTICATION" in doc["admin_refused"]
    )
    assert "answers, but refuses the admin credential in " + str(stale) in status.stderr
    assert "does not answer" not in status.stderr and "broker stop" not in status.stderr
    started = runner.invoke(cli, ["broker", "start"])
    assert started.exit_code == 6, started.output
    assert "refuses the admin credential" in started.stderr
    assert sorted(p.name for p in stale.iterdir()) == ["admin.json"]  # nothing written there
    # The review: a folder lacking some roles' files (no admin.json: nothing to be refused)
    # had `up` write them there and give the running broker's users new passwords.
    partial = tmp_path / "partial"
    partial.mkdir(mode=0o700)
    agent = (kafka.settings.credentials / "agent.json").read_text()
    (partial / "agent.json").write_text(agent)
    (partial / "agent.json").chmod(0o600)
    monkeypatch.setenv("LEDGER_CREDENTIALS", str(partial))
    refused = runner.invoke(cli, ["broker", "start"])
    assert refused.exit_code == 6, refused.output
    assert f"$LEDGER_CREDENTIALS ({partial}) lacks the credential of " in refused.stderr
    assert sorted(p.name for p in partial.iterdir()) == ["agent.json"]  # nothing written
    monkeypatch.delenv("LEDGER_CREDENTIALS")
    assert runner.invoke(cli, ["broker", "status"]).exit_code == 0  # the home's own: fine
    assert runner.invoke(cli, ["broker", "start"]).exit_code == 0  # and its own folder is fine


def _jvms_serving(home: Path) -> list[int]:
    """Pids of any process whose command line names this home's broker config."""
    marker = str(home / "broker" / "server.properties").encode()
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_broker_stop_is_clean_and_a_restart_keeps_address_and_data(kafka, tmp_path):
    if kafka.source != "local":
        pytest.skip(f"broker comes from {kafka.source}; the local broker is covered in CI")
    from ledger.local import broker
    from ledger.local.credentials import credential

    settings = Settings(
        home=tmp_path / "home", cache=kafka.settings.cache, topics=TopicNames(prefix="stopcheck.")
    )
    first = broker.start(settings)
    assert first.running and first.pid and _jvms_serving(settings.home) == [first.pid]
    admin = credential(settings, "admin")
    create_topics(first.bootstrap, topic_specs(settings), security=admin)

    assert broker.stop(settings) is True
    assert not broker.status(settings).running
    assert _jvms_serving(settings.home) == [], "the broker's JVM outlived `stop`"
    assert broker.stop(settings) is False  # stopping again is a no-op

    second = broker.start(settings)
    try:
        assert second.bootstrap == first.bootstrap and second.pid != first.pid
        again = {
            r.name: r.action
            for r in create_topics(second.bootstrap, topic_specs(settings), security=admin)
        }
        assert set(again.values()) == {"exists"}  # the log dir survived the restart

        # A role's credential file removed while the broker runs (an operator's walkthrough:
        # `ledger up` said "run `ledger up`", and did not help): a start writes a new one and
        # gives the broker its password.
        old_agent = credential(settings, "agent")
        (settings.credentials / "agent.json").unlink()
        assert broker.start(settings).pid == second.pid
        new_agent = credential(settings, "agent")
        assert new_agent.password != old_agent.password
        make_consumer(second.bootstrap, security=new_agent).close()  # authenticated
        with pytest.raises(LedgerError):
            make_consumer(second.bootstrap, security=old_agent)  # the old password is gone
        # The admin's own (a review: registering the new one as admin could not authenticate).
        (settings.credentials / "admin.json").unlink()
        assert broker.start(settings).pid == second.pid
        make_consumer(second.bootstrap, security=credential(settings, "admin")).close()

        # An operator's walkthrough: with broker.json garbled, `ledger up` took the broker for
        # stopped and started a second JVM on the same data, whose controller truncated the
        # metadata log and crashed the live broker. The live one is now found and recorded
        # again, and a second one never starts on data another process holds.
        record = settings.home / "broker" / "broker.json"
        record.write_text("{garbage")
        found = broker.status(settings)
        assert (found.running, found.pid, found.bootstrap) == (True, second.pid, first.bootstrap)
        record.write_text("{garbage")
        assert broker.start(settings).pid == second.pid
        assert _jvms_serving(settings.home) == [second.pid]
        assert broker._data_in_use(settings.home / "broker" / "data")
        record.unlink()
        assert broker.stop(settings) is True  # found, though nothing records it
    finally:
        broker.stop(settings)
    assert _jvms_serving(settings.home) == []
    assert not broker._data_in_use(settings.home / "broker" / "data")


def test_the_topics_outsiders_write_take_the_brokers_time(kafka, topic_names):
    """A sender's clock must not steer retention or an export's date folders: a record sent to
    the request or command topic with a timestamp of its choosing is stamped by the broker."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    specs = topic_specs(Settings(topics=topic_names), evaluation_partitions=1)
    create_topics(kafka.bootstrap, specs, security=kafka.security("admin"))
    producer = KafkaProducer(**kafka.client_config("admin"))
    consumer = KafkaConsumer(**kafka.client_config("admin"))
    try:
        sent = time.time() * 1000
        for topic in (topic_names.evaluation_requests, topic_names.commands, topic_names.decisions):
            producer.send(topic, value=b"x", partition=0, timestamp_ms=86_400_000)  # 1970-01-02
        producer.flush(timeout=10)
        stamped = {}
        for topic in (topic_names.evaluation_requests, topic_names.commands, topic_names.decisions):
            part = TopicPartition(topic, 0)
            consumer.assign([part])
            consumer.seek_to_beginning(part)
            found: list[Any] = []
            deadline = time.monotonic() + 15
            while not found and time.monotonic() < deadline:
                found = [r for rs in consumer.poll(timeout_ms=500).values() for r in rs]
            (record,) = found
            stamped[topic] = record.timestamp
    finally:
        producer.close()
        consumer.close()
    assert stamped[topic_names.evaluation_requests] >= sent - 60_000
    assert stamped[topic_names.commands] >= sent - 60_000
    assert stamped[topic_names.decisions] == 86_400_000  # the ledger's own writers keep theirs


def test_cli_topics_retention_sets_the_requests_retention_and_create_keeps_it(kafka, topic_names):
    # An operator's walkthrough: the README said `kafka-configs.sh`, which a `ledger up`
    # install does not have; they wrote an admin client by hand.
    create_topics(
        kafka.bootstrap, topic_specs(Settings(topics=topic_names)), security=kafka.security("admin")
    )
    env = {
        "LEDGER_BOOTSTRAP": kafka.bootstrap,
        "LEDGER_TOPIC_PREFIX": topic_names.prefix,
        "LEDGER_CREDENTIALS": str(kafka.settings.credentials),
    }
    requests = topic_names.evaluation_requests
    done = CliRunner().invoke(
        cli, ["topics", "retention", "--time", "12h", "--bytes", "1073741824", "--json"], env=env
    )
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == {
        "topic": requests,
        "retention.ms": str(12 * 3_600_000),
        "retention.bytes": "1073741824",
    }
    kept = CliRunner().invoke(cli, ["topics", "create"], env=env)
    assert kept.exit_code == 0, kept.output
    assert f"kept the operator's retention on {requests}" in kept.stderr
    cfg = describe_topic_configs(kafka.bootstrap, [requests], security=kafka.security("admin"))
    assert cfg[requests]["retention.ms"] == str(12 * 3_600_000)
    shown = CliRunner().invoke(cli, ["topics", "retention", "--time", "forever", "--json"], env=env)
    assert json.loads(shown.stdout)["retention.ms"] == "-1"
    short = CliRunner().invoke(cli, ["topics", "retention", "--time", "0s"], env=env)
    assert short.exit_code == 2 and "keep requests from 10 minutes" in short.output
    bad = CliRunner().invoke(cli, ["topics", "retention", "--time", "a week"], env=env)
    assert bad.exit_code == 2 and "give a number and a unit (7d, 12h, 30m, 90s) or forever" in (
        bad.output
    )
