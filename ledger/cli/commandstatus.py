"""``ledger command status ID``: what became of a governance command, by its id.

A command whose answer did not come in time (exit 8, the command processor down or slow) may
still be applied: an operator needs to know whether it reached Kafka, whether it was applied
or refused, and so whether sending it again would do it twice. This reads the command answers
(``ledger.command-results``), and, with a credential that may (the auditor's, an operator's
machine), the commands themselves, and the dead letters written after the command, without a
consumer group; ``--wait`` reads on, only what came since, until the answer comes.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn

import click

from ledger.cli.common import bootstrap_option, connection, load_settings
from ledger.cli.output import HelpfulGroup, handle_errors, json_option, print_json, printable
from ledger.codec import default_codec
from ledger.core.events import (
    COMMAND_TYPES,
    CommandAccepted,
    CommandRejected,
    DeadLetter,
    Event,
)
from ledger.core.jsonform import format_timestamp
from ledger.core.lifecycle.commands import command_aggregate
from ledger.core.signing import CLOCK_SKEW, COMMAND_VALID_FOR
from ledger.core.text import clipped, quoted
from ledger.discovery import read_credentials
from ledger.errors import (
    CodecError,
    CommandRejectedError,
    KafkaAccessDenied,
    KafkaUnavailable,
    LedgerError,
    LedgerTimeout,
    TopicMissing,
    UsageError,
)
from ledger.ids import id_made_at, utcnow
from ledger.kafka.reading import read_raw
from ledger.kafka.topics import COMMANDS_KEPT
from ledger.settings import Role, Settings

__all__ = ["group"]

State = Literal[
    "accepted", "rejected", "dead_lettered", "waiting", "expired", "not_sent", "not_answered"
]

_POLL_EVERY = 0.5
"""Seconds between two reads of what came since, while ``--wait`` waits."""
_LONGEST_WAIT = 3600.0


@click.group("command", cls=HelpfulGroup)
def group() -> None:
    """Governance commands already sent: what became of one."""


_COPIES_KEPT = 4096
"""Copies of one id in ledger.commands whose digests are kept to match their dead letters (a
second review: with 16, a 17th dead-lettered copy read as one still waiting)."""


@dataclass(slots=True)
class _Seen:
    """What the topics hold of one command id: its copies in the commands topic (the first's
    where and what; anyone with the governance credential may write one under any id), its
    answers, and the dead letters of those copies."""

    command: Any = None
    sent_ms: int | None = None
    offset: int | None = None
    partition: int | None = None
    raw: bytes = b""  # the first copy's record as written
    answers: list[CommandAccepted | CommandRejected] = field(default_factory=list)
    letter: DeadLetter | None = None
    letters: dict[int, list[DeadLetter]] = field(default_factory=dict)  # by commands offset
    copies: int = 0  # how many copies of the id ledger.commands holds
    lettered: int = 0  # how many of them were dead-lettered
    # (partition, offset, SHA-256 of the bytes, signed at) of each copy, the first _COPIES_KEPT
    kept: list[tuple[int, int, str, datetime]] = field(default_factory=list)

    @property
    def answer(self) -> CommandAccepted | CommandRejected | None:
        """The answer that says what became of the command: an acceptance, if any (only the
        command processor writes answers, and it accepts only an authenticated command; a red
        team's unsigned copy, sent first under the id, made an applied command read "refused,
        never applied"), else the first refusal."""
        accepted = next((a for a in self.answers if isinstance(a, CommandAccepted)), None)
        return accepted or (self.answers[0] if self.answers else None)

    def state(self, commands_read: bool, now: datetime | None = None) -> State:
        answer = self.answer
        if isinstance(answer, CommandAccepted):
            return "accepted"
        # A copy neither answered nor dead-lettered waits: a refusal or a letter may be another
        # copy's (one written before it under its id).
        pending = self.copies > len(self.answers) + self.lettered
        if commands_read and self.command is not None and pending:
            return self._waiting(now)
        if answer is not None:
            return "rejected"
        if self.letter is not None:
            return "dead_lettered"
        if not commands_read:
            return "not_answered"
        return "not_sent" if self.command is None else self._waiting(now)

    def valid_until(self, now: datetime | None = None) -> datetime:
        """Until when a copy of the command may still be applied: 10 minutes after the latest
        signing time among its copies, leaving out one signed further ahead of ``now`` than a
        signer's clock may be, which the processor refuses (a second review: a copy forged a
        year ahead kept an expired command "waiting")."""
        latest = (now or utcnow()) + CLOCK_SKEW
        signed = [at for *_, at in self.kept if at <= latest] or [self.command.occurred_at]
        return max(signed) + COMMAND_VALID_FOR

    def _waiting(self, now: datetime | None) -> State:
        """Waiting, or past its validity, when the command processor refuses it stale_command
        as it runs (a review: after an outage of more than 10 minutes, this said to wait)."""
        now = now or utcnow()
        return "expired" if now >= self.valid_until(now) else "waiting"


def _letter_of(letter: DeadLetter, partition: int, offset: int, digest: str) -> bool:
    """Whether ``letter`` is the dead letter of the command record at ``partition``/``offset``
    whose bytes have the SHA-256 ``digest``: the same place, and the same bytes (or their
    digest, for a letter too large to hold them). A red team: letters written to
    ledger.commands by the governance credential, naming offsets commands would later take,
    made a waiting grant read "dead-lettered, never applied", and sent again, it was applied
    twice."""
    if letter.partition != partition or letter.offset != offset:
        return False
    if letter.value is not None:
        return hashlib.sha256(letter.value).hexdigest() == digest
    return letter.value_sha256 == digest


@group.command("status")
@click.argument("command_id")
@click.option(
    "--wait",
    "wait",
    type=click.FloatRange(0, _LONGEST_WAIT),
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="Wait up to this long for the answer of a command not answered yet.",
)
@bootstrap_option
@json_option
@handle_errors
def status_cmd(command_id: str, wait: float, bootstrap: str | None, as_json: bool) -> None:
    """Whether the command COMMAND_ID (the id a timed-out command printed) was applied,
    refused, is still waiting for the command processor, or never reached Kafka: before
    sending a command again, so it is not applied twice.

    \b
    exit 0  accepted (applied, or nothing to change)
    exit 4  refused, or dead-lettered: never applied
    exit 8  in ledger.commands and not answered yet (the command processor applies it when it
            runs: do not send it again), or not answered and this credential cannot read
            ledger.commands
    exit 1  not in ledger.commands: it never reached Kafka, and nothing will apply it; or
            waiting past its 10 minutes of validity (expired): it never will be applied

    Commands and their answers are kept 7 days. Reading ledger.commands needs the auditor's
    credential (an operator's machine has it); with the governance credential alone only the
    answers are read. --json prints the status document whatever it is.
    """
    if not command_id.strip() or len(command_id) > 256:
        raise UsageError("COMMAND_ID is the id a command printed (at most 256 characters)")
    settings = load_settings(bootstrap)
    role = _reading_role(settings)
    address, security = connection(settings, role)
    topics = settings.topics
    every = [topics.command_results]
    if role == "auditor":
        every.append(topics.commands)
    seen = _Seen()
    starts: dict[tuple[str, int], int] = {}
    letters_from: dict[tuple[str, int], int] = {}
    since_ms = int((time.time() - COMMANDS_KEPT.total_seconds()) * 1000)
    deadline = time.monotonic() + wait
    said_waiting = False
    while True:
        ends: dict[tuple[str, int], int] = {}
        try:
            _read(address, security, every, command_id, seen, starts, ends, since_ms, settings)
        except (KafkaAccessDenied, TopicMissing):
            if len(every) == 1:
                raise
            # A credential that may read the answers only (a cluster's own, for governance):
            # the answers are read, whether a command was sent is not known.
            every = [topics.command_results]
            continue
        except KafkaUnavailable as exc:
            _still_waiting(exc, command_id, seen, settings)
        starts.update(ends)
        if len(every) > 1 and seen.command is not None and seen.state(True) != "accepted":
            # Its dead letter, if any, was written after it: read from then only (the dead
            # letters hold every request's too, which a flood of bad requests makes many).
            ends = {}
            sent = (seen.sent_ms or 0) - 60_000
            try:
                with contextlib.suppress(KafkaAccessDenied, TopicMissing):
                    _read(
                        address,
                        security,
                        [topics.dead_letters],
                        command_id,
                        seen,
                        letters_from,
                        ends,
                        sent,
                        settings,
                    )
                    letters_from.update(ends)
            except KafkaUnavailable as exc:
                _still_waiting(exc, command_id, seen, settings)
        state = seen.state(commands_read=len(every) > 1)
        if state not in ("waiting", "not_answered") or time.monotonic() >= deadline:
            break
        if not said_waiting and not as_json:
            click.echo(
                f"waiting up to {wait:g} s for the command processor's answer (Ctrl-C stops "
                "waiting; it changes nothing)…",
                err=True,
            )
            said_waiting = True
        time.sleep(min(_POLL_EVERY, max(0.0, deadline - time.monotonic())))
    _report(command_id, seen, state, wait, settings, as_json)


def _reading_role(settings: Settings) -> Role:
    """The auditor's credential where there is one (it reads the commands and dead letters
    too), else the governance one, which reads the answers."""
    if settings.credentials_dir is None or settings.security is not None:
        return "auditor"
    return "auditor" if read_credentials(settings, "auditor") is not None else "governance"


def _still_waiting(
    exc: KafkaUnavailable, command_id: str, seen: _Seen, settings: Settings
) -> NoReturn:
    """Kafka stopped answering: said with what was known of the command (a red team: `--wait`
    on a waiting command, the broker then stopped, ended in a bare kafka_unavailable,
    forgetting that the command waits and must not be sent again)."""
    if seen.command is None or seen.state(commands_read=True) != "waiting":
        raise exc
    shown = clipped(command_id, 80)
    raise KafkaUnavailable(
        f"{exc}; {shown} was in {settings.topics.commands} since {_sent(seen) or '?'}, not "
        "answered, when Kafka stopped answering: do not send it again; ask again once Kafka "
        f"is back (`ledger command status {shown} --wait 60`)"
    ) from exc


def _read(
    address: str,
    security: Any,
    topics: list[str],
    command_id: str,
    seen: _Seen,
    starts: dict[tuple[str, int], int],
    ends: dict[tuple[str, int], int],
    since_ms: int,
    settings: Settings,
) -> None:
    """Read ``topics`` from ``starts`` (the first time: the last 7 days) to their ends now,
    noting in ``seen`` what concerns ``command_id``."""
    codec = default_codec()
    names = settings.topics
    for record in read_raw(
        address,
        topics,
        security=security,
        idle_timeout=0.5,
        patience=30.0,
        since_ms=None if starts else since_ms,
        starts=starts,
        ends=ends,
    ):
        try:
            event: Event = codec.decode(record.value)  # type: ignore[arg-type]  # None: CodecError
        except CodecError:
            continue
        # Each kind only from the topic only its writer may write (a red team: answers and
        # dead letters the governance credential wrote into ledger.commands were believed).
        if isinstance(event, (CommandAccepted, CommandRejected)):
            if record.topic == names.command_results and event.command_id == command_id:
                seen.answers.append(event)
        elif isinstance(event, DeadLetter):
            if record.topic == names.dead_letters and event.source_topic == names.commands:
                seen.letters.setdefault(event.offset, []).append(event)
        elif (
            isinstance(event, COMMAND_TYPES)
            and record.topic == names.commands
            and event.event_id == command_id
        ):
            raw = record.value or b""
            if seen.command is None:
                seen.command, seen.sent_ms = event, record.timestamp_ms
                seen.offset, seen.partition, seen.raw = record.offset, record.partition, raw
            seen.copies += 1
            if len(seen.kept) < _COPIES_KEPT:
                digest = hashlib.sha256(raw).hexdigest()
                seen.kept.append((record.partition, record.offset, digest, event.occurred_at))
    matched = [
        letter
        for partition, offset, digest, _ in seen.kept
        if (
            letter := next(
                (
                    x
                    for x in seen.letters.get(offset, ())
                    if _letter_of(x, partition, offset, digest)
                ),
                None,
            )
        )
        is not None
    ]
    seen.lettered = len(matched)
    seen.letter = matched[0] if matched else None
    held = {offset for _, offset, _, _ in seen.kept}
    seen.letters = {k: v for k, v in seen.letters.items() if k in held}


def _what(seen: _Seen) -> str:
    """The command in words: ``RollbackPolicy on 'refund' by human:bob``. With several copies
    of the id, the answer's words (the first copy may be anyone's, written before it)."""
    answer = seen.answer
    several = f" ({seen.copies} copies of the id were sent)" if seen.copies > 1 else ""
    if seen.command is None or (seen.copies > 1 and answer is not None):
        if answer is None:
            return ""
        # Its actor is the processor that answered: the sender unknown.
        return f"{answer.command_type} on {quoted(answer.aggregate, 80)}{several}"
    command = seen.command
    if several:  # which copy is whose is not known: the first may be anyone's (a review)
        return f"{type(command).__name__} on {quoted(command_aggregate(command), 80)}{several}"
    return (
        f"{type(command).__name__} on {quoted(command_aggregate(command), 80)} by "
        f"{clipped(command.actor, 80)}"
    )


def _report(
    command_id: str, seen: _Seen, state: State, wait: float, settings: Settings, as_json: bool
) -> None:
    shown = clipped(command_id, 80)
    what = _what(seen)
    answer = seen.answer
    if as_json:
        print_json(_document(command_id, seen, state))
    # By the state (a second review: a refusal of another copy, checked first, said "refused,
    # never applied" while the genuine copy waited, and it was applied twice).
    if state == "accepted" and isinstance(answer, CommandAccepted):
        if not as_json:
            version = f", version {answer.version}" if answer.version is not None else ""
            said = (
                f"accepted at {format_timestamp(answer.occurred_at)}: {what}{version} "
                f"({answer.message or 'no change'})"
            )
            click.echo(printable(said, None))  # a red team: an actor's \r and escapes
        return
    if state == "rejected" and isinstance(answer, CommandRejected):
        raise CommandRejectedError(
            f"refused at {format_timestamp(answer.occurred_at)}: {what}: {answer.reason}",
            code=answer.code,
        )
    keep = f"{COMMANDS_KEPT.days} days"
    commands = settings.topics.commands
    if state == "dead_lettered" and seen.letter is not None:
        raise CommandRejectedError(
            f"{shown} ({what}) was dead-lettered at "
            f"{format_timestamp(seen.letter.occurred_at)}, never applied: "
            f"{clipped(seen.letter.reason, 300)}"
            + (
                " (a command processor of an earlier release cannot read a newer command: "
                "`ledger ps`)"
                if seen.letter.code == "unknown_schema"
                else ""
            ),
            code=seen.letter.code,
        )
    waited = f"within {wait:g} s" if wait else "yet"
    if state == "waiting":
        until = format_timestamp(seen.valid_until())
        raise LedgerTimeout(
            f"{shown} ({what}) is in {commands} since {_sent(seen) or '?'} and not answered "
            f"{waited}: the command processor applies it when it runs (`ledger ps`) until "
            f"{until} (10 minutes after it was signed; after, it refuses it stale_command); do "
            f"not send it again meanwhile, wait for it (`ledger command status {shown} --wait "
            "60`)",
            request_id=command_id,
            sent=True,
        )
    if state == "expired":
        raise LedgerError(
            f"{shown} ({what}) is in {commands} since {_sent(seen) or '?'}, not answered, and "
            f"was signed at {format_timestamp(seen.command.occurred_at)}, more than 10 minutes "
            "ago: the command processor refuses it stale_command when it runs, so it will "
            "never be applied; send the command anew (it is signed again, under a new id)",
            code="expired",
        )
    if state == "not_answered":
        raise LedgerTimeout(
            f"no answer to {shown} in the last {keep} {waited}; whether it reached {commands} "
            "cannot be read with the governance credential (the auditor's can): if it did, the "
            "command processor applies it when it runs (`ledger ps`); check `ledger policy "
            "show` or `ledger grant list` before sending it again",
            request_id=command_id,
        )
    made = id_made_at(command_id)
    if made is not None and made < utcnow() - COMMANDS_KEPT:
        raise LedgerError(
            f"{shown} was made at {format_timestamp(made)} (by its id), more than {keep} ago: "
            f"{commands} and its answers keep {keep}, so what became of it cannot be read here; "
            "see `ledger policy show` / `ledger grant list`, or an export's commands and "
            "command_results",
            code="too_old",
        )
    raise LedgerError(
        f"{shown} is not in {commands} (it keeps {keep}) and has no answer: it never reached "
        "Kafka, and nothing will apply it (check the id: a mistyped one reads the same); send "
        "the command again",
        code="not_sent",
    )


def _document(command_id: str, seen: _Seen, state: State) -> dict[str, Any]:
    answer = seen.answer
    command = seen.command
    return {
        "command_id": command_id,
        "status": state,
        "command_type": type(command).__name__
        if command is not None
        else (answer.command_type if answer is not None else None),
        "aggregate": command_aggregate(command)
        if command is not None
        else (answer.aggregate if answer is not None else None),
        # An answer's actor is the processor; of several copies, which is whose is not known.
        "actor": command.actor if command is not None and seen.copies <= 1 else None,
        "sent_at": _sent(seen),
        "offset": seen.offset,
        "answered_at": format_timestamp(answer.occurred_at) if answer is not None else None,
        "code": answer.code
        if isinstance(answer, CommandRejected)
        else (seen.letter.code if seen.letter is not None else None),
        "reason": answer.reason
        if isinstance(answer, CommandRejected)
        else (seen.letter.reason if seen.letter is not None else None),
        "message": answer.message if isinstance(answer, CommandAccepted) else None,
        "version": answer.version if isinstance(answer, CommandAccepted) else None,
        "event_ids": list(answer.event_ids) if isinstance(answer, CommandAccepted) else [],
        "answers": len(seen.answers),
        "copies": seen.copies,
    }


def _sent(seen: _Seen) -> str | None:
    """When the command's copy was written to Kafka (its record's timestamp)."""
    if seen.sent_ms is None:
        return None
    return format_timestamp(datetime.fromtimestamp(seen.sent_ms / 1000, UTC))
