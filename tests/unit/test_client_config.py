"""``ClientConfig.from_env``: the client finds the ledger the way every ``ledger`` command does.

Every test passes an explicit environment: the process's own must not leak in. No broker is
started here; the case "the local broker is running" is in ``tests/integration/test_sdk_enforce``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ledger.client import ClientConfig
from ledger.errors import KafkaUnavailable, LedgerError
from ledger.settings import TopicNames

ACTOR = "agent:refund-bot"


@pytest.fixture(autouse=True)
def misleading_process_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process environment that would give other answers, were it read instead of ``env``."""
    monkeypatch.setenv("LEDGER_BOOTSTRAP", "from-process-env:9092")
    monkeypatch.setenv("LEDGER_TOPIC_PREFIX", "process.")


def test_bootstrap_comes_from_ledger_bootstrap(tmp_path: Path) -> None:
    config = ClientConfig.from_env(
        actor=ACTOR,
        env={"LEDGER_BOOTSTRAP": "kafka-1:9092,kafka-2:9092", "LEDGER_HOME": str(tmp_path)},
    )
    assert config.bootstrap == "kafka-1:9092,kafka-2:9092"
    assert config.actor == ACTOR
    assert config.topics == TopicNames()
    assert config.topics.decisions == "ledger.decisions"
    assert config.timeout == ClientConfig(bootstrap="x:1").timeout == 5.0


def test_topic_prefix_comes_from_ledger_topic_prefix() -> None:
    config = ClientConfig.from_env(
        actor=ACTOR, env={"LEDGER_BOOTSTRAP": "kafka:9092", "LEDGER_TOPIC_PREFIX": "acme."}
    )
    assert config.topics == TopicNames(prefix="acme.")
    assert config.topics.evaluation_requests == "acme.ledger.evaluation-requests"
    assert config.topics.corrections == "acme.ledger.corrections"


def test_arguments_win_over_the_environment(tmp_path: Path) -> None:
    config = ClientConfig.from_env(
        actor=ACTOR,
        env={"LEDGER_BOOTSTRAP": "kafka:9092", "LEDGER_TOPIC_PREFIX": "acme."},
        bootstrap="elsewhere:19092",
        topics=TopicNames(prefix="test."),
        timeout=0.5,
    )
    assert (config.bootstrap, config.topics.commands, config.timeout) == (
        "elsewhere:19092",
        "test.ledger.commands",
        0.5,
    )
    # An explicit address needs no environment, and no local broker.
    alone = ClientConfig.from_env(actor=ACTOR, env={"LEDGER_HOME": str(tmp_path)}, bootstrap="k:1")
    assert alone.bootstrap == "k:1"


def test_no_bootstrap_and_no_local_broker_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(KafkaUnavailable) as raised:
        ClientConfig.from_env(actor=ACTOR, env={"LEDGER_HOME": str(tmp_path)})
    error = raised.value
    assert isinstance(error, LedgerError)
    assert (error.code, error.exit_code) == ("kafka_unavailable", 7)
    message = str(error)
    assert "\n" not in message
    assert message.startswith("no Kafka to talk to:")
    for remedy in ("bootstrap=", "$LEDGER_BOOTSTRAP", "`ledger up`"):
        assert remedy in message, message
    # An agent engineer's walkthrough: the home it looked in went unsaid, and `ledger up` there
    # would have started a second ledger.
    assert f"{tmp_path} holds no running local broker (is $LEDGER_HOME the home" in message


def test_a_recorded_broker_that_is_not_running_is_not_used(tmp_path: Path) -> None:
    # The state file of a broker that is gone; its pid is now some other process (this one).
    state = tmp_path / "broker" / "broker.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"pid": os.getpid(), "port": 1}))
    with pytest.raises(KafkaUnavailable) as raised:
        ClientConfig.from_env(actor=ACTOR, env={"LEDGER_HOME": str(tmp_path)})
    # An agent engineer's walkthrough: "no Kafka to talk to" of a home whose broker stopped.
    said = str(raised.value)
    assert said.startswith(f"the local broker of {tmp_path} (127.0.0.1:1) is not running: run")
    assert "`ledger up`" in said and "$LEDGER_BOOTSTRAP" in said


def test_the_cli_gives_the_same_advice_as_ps_and_the_sdk_for_a_stopped_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A chaos drill: with the broker killed, governance commands said `ledger broker start`,
    # while `ps`, the SDK and the README's table say `ledger up` (which starts the processors
    # the command needs as well).
    from click.testing import CliRunner

    from ledger.cli.app import cli

    state = tmp_path / "broker" / "broker.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"pid": os.getpid(), "port": 1}))
    monkeypatch.setenv("LEDGER_HOME", str(tmp_path))
    monkeypatch.delenv("LEDGER_BOOTSTRAP", raising=False)
    said = CliRunner().invoke(cli, ["grant", "list"])
    assert said.exit_code == 7, said.output
    assert "is not running: run `ledger up`, or pass --bootstrap" in said.stderr, said.stderr
