"""``ledger command status``: which status a command's records amount to, and what it says
(the reads themselves run against the broker in tests/integration/test_cli_governance.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
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
    now = AT + timedelta(minutes=9)  # within the command's 10 minutes of validity
    assert seen.state(commands_read=commands_read, now=now) == state
    with pytest.raises(error) as said:
        _report("cmd-1", seen, state, 5, SETTINGS, False)
    assert type(said.value) is error
    assert ("do not send it again" in str(said.value)) == (state == "waiting")
    assert ("send the command again" in str(said.value)) == (state == "not_sent")
    if state == "waiting":
        assert "until 2026-12-07T21:10:00.000000Z (10 minutes after it was signed" in str(
            said.value
        )


def test_a_command_waiting_past_its_validity_will_never_be_applied_and_says_so() -> None:
    # A review: after an outage of more than 10 minutes, a waiting command was said to be
    # applied when the command processor runs; it refused it stale_command.
    seen = _Seen(command=ROLLBACK, sent_ms=0, offset=3)
    assert seen.state(commands_read=True, now=AT + timedelta(minutes=10)) == "expired"
    with pytest.raises(LedgerError) as said:
        _report("cmd-1", seen, "expired", 0, SETTINGS, as_json=False)
    assert said.value.code == "expired" and said.value.exit_code == 1
    assert "it will never be applied; send the command anew" in str(said.value)


def test_an_id_older_than_what_kafka_keeps_is_not_called_never_sent() -> None:
    old = str(uuid.UUID(int=(1_700_000_000_000 << 80) | (0x7 << 76) | (0b10 << 62)))
    with pytest.raises(LedgerError) as said:
        _report(old, _Seen(), "not_sent", 0, SETTINGS, as_json=False)
    assert said.value.code == "too_old" and "was made at 2023-11-14T22:13:20" in str(said.value)


def test_with_the_answers_alone_the_sender_is_not_the_processor_that_answered() -> None:
    # A review: with the governance credential, the answer's actor (the command processor)
    # was named as the command's sender.
    seen = _Seen(answers=[_refused()])
    with pytest.raises(CommandRejectedError) as refused:
        _report("cmd-1", seen, "rejected", 0, SETTINGS, as_json=False)
    assert "RollbackPolicy on 'refund':" in str(refused.value)
    assert "command-processor" not in str(refused.value)


def test_a_new_id_says_when_it_was_made_and_another_id_says_nothing() -> None:
    from ledger.ids import id_made_at, new_id, utcnow

    before = utcnow()
    made = id_made_at(new_id())
    assert made is not None and abs((made - before).total_seconds()) < 60
    assert id_made_at("cmd-1") is None and id_made_at(str(uuid.uuid4())) is None
