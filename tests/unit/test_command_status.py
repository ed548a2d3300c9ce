"""``ledger command status``: which status a command's records amount to, and what it says
(the reads themselves run against the broker in tests/integration/test_cli_governance.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from ledger.cli.commandstatus import _report, _Seen
from ledger.core.events import CommandRejected, DeadLetter, RollbackPolicy
from ledger.errors import CommandRejectedError, LedgerError, LedgerTimeout
from ledger.settings import Settings

AT = datetime(2026, 12, 7, 21, 0, tzinfo=UTC)
SETTINGS = Settings(home=Path("/nonexistent"))
ROLLBACK = RollbackPolicy(
    event_id="cmd-1", occurred_at=AT, actor="human:bob", policy="refund", reason="bad"
)


def _letter(offset: int) -> DeadLetter:
    return DeadLetter(
        event_id="dl-1",
        occurred_at=AT,
        actor="command-processor",
        source_topic=SETTINGS.topics.commands,
        partition=0,
        offset=offset,
        key=None,
        value=None,
        code="unknown_schema",
        reason="a command of a newer release",
    )


def _refused() -> CommandRejected:
    return CommandRejected(
        event_id="r-1",
        occurred_at=AT,
        actor="command-processor",
        command_id="cmd-1",
        command_type="RollbackPolicy",
        aggregate="refund",
        code="deployment_changed",
        reason="refund's deployment changed",
    )


def test_a_dead_lettered_command_was_never_applied_and_says_why() -> None:
    seen = _Seen(command=ROLLBACK, sent_ms=0, offset=7, letter=_letter(7))
    assert seen.state(commands_read=True) == "dead_lettered"
    with pytest.raises(CommandRejectedError) as refused:
        _report("cmd-1", seen, "dead_lettered", 0, SETTINGS, as_json=False)
    assert refused.value.code == "unknown_schema" and refused.value.exit_code == 4
    assert "RollbackPolicy on 'refund' by human:bob" in str(refused.value)
    assert "never applied: a command of a newer release" in str(refused.value)


def test_the_first_answer_counts_before_a_dead_letter_and_the_record_itself() -> None:
    seen = _Seen(command=ROLLBACK, offset=7, letter=_letter(7), answers=[_refused()])
    assert seen.state(commands_read=True) == "rejected"
    with pytest.raises(CommandRejectedError) as refused:
        _report("cmd-1", seen, "rejected", 0, SETTINGS, as_json=False)
    assert refused.value.code == "deployment_changed"


@pytest.mark.parametrize(
    ("seen", "commands_read", "state", "error"),
    [
        (_Seen(command=ROLLBACK, sent_ms=0, offset=3), True, "waiting", LedgerTimeout),
        (_Seen(), True, "not_sent", LedgerError),
        (_Seen(), False, "not_answered", LedgerTimeout),
    ],
)
def test_without_an_answer_it_tells_waiting_from_never_sent(
    seen: _Seen, commands_read: bool, state: str, error: type[LedgerError]
) -> None:
    assert seen.state(commands_read=commands_read) == state
    with pytest.raises(error) as said:
        _report("cmd-1", seen, seen.state(commands_read=commands_read), 5, SETTINGS, False)
    assert type(said.value) is error
    assert ("do not send it again" in str(said.value)) == (state == "waiting")
    assert ("send the command again" in str(said.value)) == (state == "not_sent")
