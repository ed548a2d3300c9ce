"""``ledger command status``: which status a command's records amount to, and what it says
(the reads themselves run against the broker in tests/integration/test_cli_governance.py)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import replace
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
    assert "an earlier release cannot read a newer command" in str(refused.value)  # its code
    other = replace(_letter(7), code="id_too_long", reason="its id is over 256 characters")
    with pytest.raises(CommandRejectedError) as long_id:
        _report("cmd-1", _Seen(command=ROLLBACK, letter=other), "dead_lettered", 0, SETTINGS, False)
    assert "earlier release" not in str(long_id.value)  # a review: said of every letter


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


def _records(*records: tuple[str, int, object]) -> list[object]:
    """RawRecords of ``(topic, offset, event or bytes)``, on partition 0."""
    from ledger.codec import default_codec
    from ledger.kafka.reading import RawRecord

    codec = default_codec()
    return [
        RawRecord(
            topic=topic,
            partition=0,
            offset=offset,
            timestamp_ms=0,
            value=value if isinstance(value, bytes) else codec.encode(value),  # type: ignore[arg-type]
        )
        for topic, offset, value in records
    ]


def _read_from(monkeypatch: pytest.MonkeyPatch, records: list[object]) -> _Seen:
    import ledger.cli.commandstatus as commandstatus

    monkeypatch.setattr(commandstatus, "read_raw", lambda *a, **k: iter(records))
    seen = _Seen()
    topics = SETTINGS.topics
    every = [topics.command_results, topics.commands, topics.dead_letters]
    commandstatus._read("h:9", None, every, "cmd-1", seen, {}, {}, 0, SETTINGS)
    return seen


def test_answers_and_dead_letters_count_only_from_their_own_topics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A red team: with the governance credential alone, dead letters written into
    # ledger.commands naming offsets later commands took made a waiting grant read
    # "dead-lettered, never applied" (sent again: two grants), and a CommandAccepted written
    # there made a waiting revocation read "accepted" until it expired unapplied.
    from dataclasses import replace

    from ledger.codec import default_codec
    from ledger.core.events import CommandAccepted

    topics = SETTINGS.topics
    accepted = CommandAccepted(
        event_id="a-1", occurred_at=AT, actor="command-processor", command_id="cmd-1",
        command_type="RollbackPolicy", aggregate="refund", event_ids=("e-1",),
    )  # fmt: skip
    forged = [(topics.commands, 3, _letter(5)), (topics.commands, 4, accepted)]
    seen = _read_from(monkeypatch, _records(*forged, (topics.commands, 5, ROLLBACK)))
    assert (seen.offset, seen.letter, seen.answers) == (5, None, [])
    assert seen.state(commands_read=True, now=AT) == "waiting"

    raw = default_codec().encode(ROLLBACK)
    other = replace(_letter(5), value=b"another record's bytes")
    genuine = replace(_letter(5), value=raw)
    seen = _read_from(
        monkeypatch,
        _records(
            (topics.dead_letters, 0, other),
            (topics.commands, 5, ROLLBACK),
        ),
    )
    assert seen.letter is None  # names its offset, holds other bytes
    seen = _read_from(
        monkeypatch,
        _records((topics.commands, 5, ROLLBACK), (topics.dead_letters, 1, genuine)),
    )
    assert seen.letter == genuine and seen.state(commands_read=True) == "dead_lettered"
    digest = replace(
        _letter(5), value=None, truncated=True, value_sha256=hashlib.sha256(raw).hexdigest()
    )
    seen = _read_from(
        monkeypatch, _records((topics.dead_letters, 2, digest), (topics.commands, 5, ROLLBACK))
    )
    assert seen.letter == digest  # a letter too large for the bytes, by their SHA-256
    seen = _read_from(
        monkeypatch, _records((topics.command_results, 9, accepted), (topics.commands, 5, ROLLBACK))
    )
    assert seen.answers == [accepted] and seen.state(commands_read=True) == "accepted"


def test_an_accepted_answer_is_printed_with_its_control_characters_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ledger.core.events import CommandAccepted

    accepted = CommandAccepted(
        event_id="a-1", occurred_at=AT, actor="command-processor", command_id="cmd-1",
        command_type="RollbackPolicy", aggregate="refund", event_ids=("e-1",),
        message="done\r\x1b[2K\x1b[32mOK",
    )  # fmt: skip
    seen = _Seen(command=ROLLBACK, offset=5, answers=[accepted])
    _report("cmd-1", seen, "accepted", 0, SETTINGS, as_json=False)
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "done" in out, repr(out)


def test_kafka_going_away_while_a_command_waits_says_it_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ledger.cli.commandstatus as commandstatus
    from ledger.errors import KafkaUnavailable
    from ledger.ids import utcnow

    seen = _Seen(command=replace(ROLLBACK, occurred_at=utcnow()), sent_ms=0, offset=5, copies=1)
    with pytest.raises(KafkaUnavailable) as gone:
        commandstatus._still_waiting(
            KafkaUnavailable("cannot reach Kafka"), "cmd-1", seen, SETTINGS
        )
    said = str(gone.value)
    assert said.startswith("cannot reach Kafka; cmd-1 was in ") and "do not send it again" in said
    with pytest.raises(KafkaUnavailable) as bare:
        commandstatus._still_waiting(
            KafkaUnavailable("cannot reach Kafka"), "cmd-1", _Seen(), SETTINGS
        )
    assert str(bare.value) == "cannot reach Kafka"


def test_an_applied_command_reads_accepted_whatever_copies_of_its_id_came_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Red team 15: an unsigned copy written under the id before the genuine command (an SDK
    # caller's id can be known in advance) was answered first, refused, and an applied
    # command read "refused, never applied" (exit 4): sent again, it was applied twice.
    from dataclasses import replace

    from ledger.core.events import CommandAccepted

    topics = SETTINGS.topics
    forged = replace(ROLLBACK, reason="forged")
    accepted = CommandAccepted(
        event_id="a-1", occurred_at=AT, actor="command-processor", command_id="cmd-1",
        command_type="RollbackPolicy", aggregate="refund", event_ids=("e-1",),
    )  # fmt: skip
    records = _records(
        (topics.commands, 4, forged),
        (topics.commands, 5, ROLLBACK),
        (topics.command_results, 0, _refused()),
        (topics.command_results, 1, accepted),
    )
    seen = _read_from(monkeypatch, records)
    assert (seen.copies, seen.answer) == (2, accepted)
    assert seen.state(commands_read=True, now=AT) == "accepted"
    assert _what_of(seen) == "RollbackPolicy on 'refund' (2 copies of the id were sent)"
    # The genuine one not answered yet (the processor down): it waits, whatever the first
    # copy's refusal says.
    seen = _read_from(monkeypatch, records[:3])
    assert seen.state(commands_read=True, now=AT) == "waiting"
    # Every copy answered, none accepted: refused.
    refused_again = (topics.command_results, 2, replace(_refused(), event_id="r-2"))
    seen = _read_from(monkeypatch, [*records[:3], *_records(refused_again)])
    assert seen.state(commands_read=True, now=AT) == "rejected"


def _what_of(seen: _Seen) -> str:
    from ledger.cli.commandstatus import _what

    return _what(seen)


def test_a_copy_refused_before_the_genuine_one_waits_in_what_is_said_and_its_exit_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A second review: state() said waiting, but the report checked the other copy's refusal
    # first: "refused, never applied" (exit 4), sent again, applied twice.
    from ledger.ids import utcnow

    topics = SETTINGS.topics
    now = utcnow()
    genuine = replace(ROLLBACK, occurred_at=now)
    forged = replace(genuine, actor="human:mallory", reason="forged")
    seen = _read_from(
        monkeypatch,
        _records(
            (topics.commands, 4, forged),
            (topics.commands, 5, genuine),
            (topics.command_results, 0, _refused()),
        ),
    )
    state = seen.state(commands_read=True)
    assert state == "waiting"
    with pytest.raises(LedgerTimeout) as waits:
        _report("cmd-1", seen, state, 0, SETTINGS, as_json=False)
    assert waits.value.exit_code == 8 and "do not send it again" in str(waits.value)
    assert "mallory" not in str(waits.value)  # which copy is whose is not known
    from ledger.cli.commandstatus import _document

    assert _document("cmd-1", seen, state)["actor"] is None


def test_a_copy_signed_far_ahead_does_not_keep_an_expired_command_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A second review: a copy forged a year ahead kept an expired command "waiting … until" a
    # time already past; the processor refuses a copy signed that far ahead.
    from ledger.ids import utcnow

    topics = SETTINGS.topics
    now = utcnow()
    old = replace(ROLLBACK, occurred_at=now - timedelta(minutes=11))
    ahead = replace(old, occurred_at=now + timedelta(days=365), reason="forged")
    seen = _read_from(monkeypatch, _records((topics.commands, 5, old), (topics.commands, 6, ahead)))
    assert seen.state(commands_read=True, now=now) == "expired"


def test_every_dead_lettered_copy_counts_past_sixteen(monkeypatch: pytest.MonkeyPatch) -> None:
    # A second review: with the bytes of 16 copies kept, a 17th dead-lettered copy read as one
    # still waiting (--json) while the text said dead-lettered.
    from ledger.codec import default_codec

    topics = SETTINGS.topics
    raw = default_codec().encode(ROLLBACK)
    copies = [(topics.commands, n, ROLLBACK) for n in range(20)]
    letters = [(topics.dead_letters, 100 + n, replace(_letter(n), value=raw)) for n in range(20)]
    seen = _read_from(monkeypatch, _records(*copies, *letters))
    assert (seen.copies, seen.lettered) == (20, 20)
    assert seen.state(commands_read=True) == "dead_lettered"
