"""A missing topic gets one treatment everywhere: TopicMissing, exit 7, one line saying what to do.

Reported: the same situation was a UsageError in the SDK, KafkaUnavailable in replay, a
RuntimeError in the processors' follower and a silent empty list elsewhere; with a topic prefix
naming no topics, `ledger evaluate` gave a ValueError traceback.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ledger.cli.app import cli
from ledger.client import ClientConfig, LedgerClient
from ledger.errors import TopicMissing
from ledger.kafka.governance import load_history
from ledger.settings import TopicNames

pytestmark = pytest.mark.integration

NOWHERE = TopicNames(prefix="no-such-ledger.")


def test_the_sdk_and_replay_raise_topic_missing(kafka) -> None:
    with pytest.raises(TopicMissing, match="ledger topics create"):
        LedgerClient(
            ClientConfig(
                bootstrap=kafka.bootstrap,
                topics=NOWHERE,
                actor="agent:a",
                security=kafka.security("agent"),
            )
        )
    with pytest.raises(TopicMissing, match=r"no-such-ledger\.ledger\.policy-events"):
        load_history(kafka.bootstrap, NOWHERE, security=kafka.security("auditor"))


@pytest.mark.parametrize(
    "args",
    [
        ["policy", "list"],
        ["replay"],
        ["decisions"],
        ["evaluate", "--action", "a", "--principal", "agent:a", "--resource", "r"],
    ],
)
def test_the_cli_says_so_in_one_line_with_exit_7(kafka, args: list[str], tmp_path) -> None:
    env = {
        "LEDGER_BOOTSTRAP": kafka.bootstrap,
        "LEDGER_TOPIC_PREFIX": NOWHERE.prefix,
        "LEDGER_HOME": str(tmp_path),
        "LEDGER_CREDENTIALS": str(kafka.settings.credentials),
    }
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 7, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "[topic_missing]" in lines[0], result.stderr
    assert "Traceback" not in result.output
