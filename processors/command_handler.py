"""The command processor's handler: one command record in, what to write out. No Kafka, no
Faust: :class:`CommandHandler` decides with the core (``decide_signed``, ``decide_again``),
remembers which events each command appended (:class:`AppliedCommands`) and the rejections of
authenticated commands (:data:`REMEMBER_REJECTIONS`), and holds every output to a record's size.
:mod:`processors.command_processor` is the Faust app around it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from ledger.codec import Codec
from ledger.core.events import (
    COMMAND_PROCESSOR,
    COMMAND_TYPES,
    Command,
    CommandAccepted,
    CommandRejected,
    GovernanceEvent,
)
from ledger.core.lifecycle import (
    AUTHENTICATION_CODES,
    CLOCK_SKEW,
    COMMAND_VALID_FOR,
    FirstAnswer,
    KeyTrust,
    Rejection,
    already_applied,
    clipped,
    command_result,
    decide_again,
    decide_signed,
    event_stream,
    finish_again,
)
from ledger.core.limits import DEFAULT_LIMITS, id_refusal
from ledger.core.state import LedgerState, aggregate_of
from ledger.errors import CodecError, UnknownSchemaError
from ledger.ids import new_id, utcnow
from ledger.settings import Settings
from processors.dead_letters import DeadLetters, decode_as
from processors.inflight import InFlight
from processors.outputs import Output, OutputLimit, ProcessorStats

if TYPE_CHECKING:
    from ledger.kafka.reading import RawRecord

__all__ = [
    "ACTOR",
    "AppliedCommands",
    "CommandHandler",
    "REMEMBER_MOST",
    "REMEMBER_REJECTIONS",
    "SIGNATURE_BYTES",
    "Step",
]

log = logging.getLogger("ledger.command-processor")
ACTOR = COMMAND_PROCESSOR
# Text a sender supplied, repeated in an answer that would otherwise not fit, is cut to this.
_ANSWER_TEXT_CHARS = 1_000


REMEMBER_REJECTIONS: Final = COMMAND_VALID_FOR + CLOCK_SKEW + timedelta(minutes=1)
"""How long a rejection is remembered against its command id (and how far back the processor
reads its answers at start): longer than any command stays valid."""
REMEMBER_MOST: Final = 200_000
"""Rejections remembered at most (each with its reason cut to 1,000 bytes of UTF-8: ~300 MB at
the very worst); beyond, the oldest are forgotten early, and a copy of one re-sent within its
validity is decided again."""
_UNREAD_ANSWER: Final = Rejection(
    code="governance_unreadable",
    message="a newer release answered this command id (its answer is of a schema this command "
    "processor cannot read): it is not decided again on an earlier release; run that release's "
    "command processor (`ledger ps` names this one)",
)


@dataclass
class Step:
    """What one command record leads to, in order: governance events to append (each with its
    record), then the answer or dead letter."""

    events: list[tuple[GovernanceEvent, Output]] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)


SIGNATURE_BYTES: Final = 64
"""The size of an Ed25519 signature: every signature a command the ledger accepted carries."""


class AppliedCommands:
    """Which events each command appended, and the signature they carry: the command
    processor's memory of every governance event (the follower tells it of each, and keeps it
    in the governance snapshot with the state: a
    :class:`~ledger.kafka.snapshots.SnapshotMemory`).

    Kept compact, as a million commands' memory is loaded at every start: a command's first
    event id, the rare further ones apart, and the signature of its first event when it has
    one. Signatures are saved end to end in one string of bytes beside the ids of their
    commands, and after a restore stay so until one is asked for (a command sent again): a
    million of them as separate objects cost a start half a second more."""

    memory_kind: Final = "applied commands: first event, more events, signatures packed"
    """What :meth:`saved` returns, as the governance snapshot names it."""

    def __init__(self) -> None:
        self._first: dict[str, str] = {}  # command id -> the id of its first event
        self._more: dict[str, list[str]] = {}  # command id -> the ids of its other events
        self._signed: dict[str, bytes] = {}  # command id -> the signature on its first event
        # Restored and not looked at yet: the ids of signed commands, and their signatures
        # (SIGNATURE_BYTES each) end to end, in the same order.
        self._packed: tuple[tuple[str, ...], bytes] = ((), b"")

    def __len__(self) -> int:
        return len(self._first)

    def remember(self, event: GovernanceEvent) -> None:
        """Note an applied event's command (the follower calls this for every event, and again
        for one this process applied before reading it back: that changes nothing)."""
        command, event_id = event.command_id, event.event_id
        first = self._first.get(command)
        if first is None:
            self._first[command] = event_id
            signature = getattr(event, "command_signature", None)
            if signature is not None:
                self._signed[command] = signature
        elif first != event_id:
            more = self._more.setdefault(command, [])
            if event_id not in more:
                more.append(event_id)

    def event_ids(self, command_id: str) -> tuple[str, ...]:
        """The ids of the events ``command_id`` appended, in order (none: not applied)."""
        first = self._first.get(command_id)
        if first is None:
            return ()
        return (first, *self._more.get(command_id, ()))

    def signature(self, command_id: str) -> bytes | None:
        """The command signature on the first event ``command_id`` appended, if any."""
        if self._packed[0]:
            self._unpack()
        return self._signed.get(command_id)

    def _unpack(self) -> None:
        ids, packed = self._packed
        width = SIGNATURE_BYTES
        signed = {command: packed[i * width : (i + 1) * width] for i, command in enumerate(ids)}
        signed.update(self._signed)  # those remembered since (other commands)
        self._signed, self._packed = signed, ((), b"")

    def saved(self) -> tuple[Any, ...]:
        """All of it, for the governance snapshot: a copy (it is written while the processor
        remembers more): first event ids, further event ids, the ids of the commands with a
        signature of the usual size and those signatures end to end, any others apart."""
        width = SIGNATURE_BYTES
        ids, packed = self._packed
        usual = [command for command, signature in self._signed.items() if len(signature) == width]
        other = {c: signature for c, signature in self._signed.items() if len(signature) != width}
        more = {command: list(events) for command, events in self._more.items()}
        return (
            dict(self._first),
            more,
            (*ids, *usual),
            packed + b"".join([self._signed[command] for command in usual]),
            other,
        )

    def restore(self, saved: Any) -> None:
        """Take back what :meth:`saved` returned (from a snapshot, before any event is
        remembered); :class:`ValueError`, nothing changed, for anything else."""
        if not (
            type(saved) is tuple
            and len(saved) == 5
            and tuple(map(type, saved)) == (dict, dict, tuple, bytes, dict)
            and len(saved[3]) == SIGNATURE_BYTES * len(saved[2])
            and saved[1].keys() <= saved[0].keys()
            and saved[4].keys() <= saved[0].keys()
        ):
            raise ValueError("not the command ids and events a command processor remembers")
        first, more, ids, packed, other = saved
        self._first, self._more, self._signed, self._packed = first, more, other, (ids, packed)


class CommandHandler:
    """Turns one command record into what to write. No Kafka: easy to test.

    Every record gets an outcome that fits a Kafka record: an answer (a ``too_large`` rejection
    when an event it would append does not fit), or a dead letter. With ``inflight``, a record
    that was being handled each time the process died is dead-lettered, not handled.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        codec: Codec,
        stats: ProcessorStats,
        limit: OutputLimit | None = None,
        inflight: InFlight | None = None,
        new_id: Callable[[], str] = new_id,
        anchors: Mapping[str, bytes] | None = None,
        known: Mapping[str, bytes | Collection[bytes]] | None = None,
        left_out: Mapping[str, str] | None = None,
    ) -> None:
        self.topics = settings.topics
        # Retired keys the key store holds but that could not be trusted (actor: why): named
        # in an unknown_actor_key refusal, which is what their leaving out causes.
        self.left_out = dict(left_out or {})
        # The configured trust anchors: a key the log holds as an anchor signs only if it is
        # one of these (None: any, as in tests that configure none).
        # The key store's public keys (known): an anchor among them still roots the keys it
        # registered. Keys proven once are remembered (trust.proven).
        self.trust = KeyTrust(anchors=anchors, known=known, admins=settings.admins)
        self.streams = {
            "policy": settings.topics.policy_events,
            "grant": settings.topics.grant_events,
        }
        self.admins = settings.admins
        self.codec = codec
        self.stats = stats
        self.limit = limit or OutputLimit(DEFAULT_LIMITS.record_bytes)
        self.inflight = inflight
        self.new_id = new_id
        self.applied = AppliedCommands()  # the follower tells it of every event
        # command id -> (when it was answered, the rejection): authenticated commands' only.
        self.rejected: OrderedDict[str, tuple[datetime, Rejection]] = OrderedDict()
        self._forgetting = False  # warned that rejections are forgotten early
        self.letters = DeadLetters(
            codec=codec,
            topic=settings.topics.dead_letters,
            actor=ACTOR,
            stats=stats,
            limit=self.limit,
            new_id=new_id,
        )

    def remember_answer(self, result: CommandAccepted | CommandRejected, now: datetime) -> None:
        """Note an answer (the start-up read of recent answers calls this, and every rejection
        the handler writes): the rejection of an authenticated command is remembered for
        :data:`REMEMBER_REJECTIONS` after it was answered (but ``governance_unreadable``: no
        decision)."""
        if (
            isinstance(result, CommandRejected)
            and result.code not in AUTHENTICATION_CODES
            # Not decided, for records this processor could not read: the one that reads them
            # decides a copy afresh (a review: the newer release, run as told, answered a copy
            # with the older one's refusal, naming itself as the release to run).
            and result.code != "governance_unreadable"
        ):
            rejection = Rejection(code=result.code, message=_cut_bytes(result.reason))
            self._remember(result.command_id, result.occurred_at, rejection, now)

    def recall(self, records: Iterable[RawRecord], now: datetime) -> int:
        """Remember the recent answers ``records`` hold (the start-up read of the answers
        topic): each as :meth:`remember_answer` does, and each of a schema this release does
        not know (a newer release's, whose rejection it cannot read) as a
        ``governance_unreadable`` refusal of its command id, so a copy is not decided again on
        an earlier release (where the newer one rejected it, the earlier one could accept a
        copy sent again). Returns how many answers it could not read and keeps."""
        unread = 0
        for record in records:
            try:
                answer = self.codec.decode(record.value)  # type: ignore[arg-type]  # None: a CodecError
            except UnknownSchemaError:
                command_id = (record.key or b"").decode("utf-8", "replace")
                if id_refusal(command_id, "command") is None:
                    # Its writer's clock, not later than now (a review: one running a day ahead
                    # had the id refused at every start for a day).
                    at = min(datetime.fromtimestamp(record.timestamp_ms / 1000, UTC), now)
                    unread += self._remember(command_id, at, _UNREAD_ANSWER, now)
                continue
            except CodecError:  # damaged: only the command processor writes answers
                continue
            if isinstance(answer, CommandAccepted | CommandRejected):
                self.remember_answer(answer, now)
        return unread

    def _remember(self, command_id: str, at: datetime, rejection: Rejection, now: datetime) -> bool:
        """Keep ``rejection`` as ``command_id``'s answer, given at ``at``, for
        :data:`REMEMBER_REJECTIONS` after it (forgetting those older, and the oldest past
        :data:`REMEMBER_MOST`); whether it is kept (not too old)."""
        cutoff = now - REMEMBER_REJECTIONS
        rejected = self.rejected
        while rejected and next(iter(rejected.values()))[0] < cutoff:
            rejected.popitem(last=False)
        if at >= cutoff:
            if command_id not in rejected and len(rejected) >= REMEMBER_MOST:
                # A flood of refused commands: keep the newest.
                rejected.popitem(last=False)
                if not self._forgetting:
                    self._forgetting = True
                    log.warning(
                        "over %d rejections in %s: the oldest are forgotten early (a re-sent "
                        "one is decided again); is someone flooding ledger.commands?",
                        REMEMBER_MOST,
                        REMEMBER_REJECTIONS,
                    )
            rejected[command_id] = (at, rejection)
            return True
        return False

    def first_answer(self, command_id: str) -> FirstAnswer | None:
        """What the ledger answered ``command_id`` first, if it remembers."""
        event_ids = self.applied.event_ids(command_id)
        if event_ids:
            return FirstAnswer(event_ids=event_ids, signature=self.applied.signature(command_id))
        found = self.rejected.get(command_id)
        return None if found is None else FirstAnswer(rejection=found[1])

    def handle(self, state: LedgerState, msg: Any) -> Step:
        """The step for ``msg`` (a fetched record: ``topic``, ``partition``, ``offset``,
        ``key``, ``value``), decided against ``state``."""
        where = (msg.topic, msg.partition, msg.offset)
        if self.inflight is not None:
            deaths = self.inflight.begin(*where)
            if deaths:
                return Step(outputs=[self.letters.poison(msg, deaths, "command processor")])
        try:
            return self._handle(state, msg)
        except Exception as exc:  # one record's failure, not the processor's
            log.exception("command processor failed on %s[%s]@%s", *where)
            return Step(outputs=[self.letters.failure(msg, exc)])
        finally:
            if self.inflight is not None:
                self.inflight.clear()

    def _handle(self, state: LedgerState, msg: Any) -> Step:
        try:
            command: Command = decode_as(
                self.codec, msg.value, COMMAND_TYPES, "a governance command"
            )
        except CodecError as exc:
            return self._letter(msg, exc.code, str(exc))
        refused = id_refusal(command.event_id, "command")
        if refused is not None:  # not decided, and above all not remembered
            return self._letter(msg, *refused)
        now = utcnow()
        step = Step()
        first = self.first_answer(command.event_id)
        result: CommandAccepted | CommandRejected
        if first is not None:  # decided before: its first answer again, nothing applied
            again = decide_again(state, command, first, trust=self.trust)
            if not isinstance(again, Rejection):
                more = self._finish(state, command, first, now, step)
                again = more if isinstance(more, Rejection) else (*again, *more)
            if isinstance(again, Rejection):
                result = command_result(command, again, event_id=self.new_id(), now=now)
            else:
                self.stats.duplicates += 1
                result = already_applied(
                    command, again, event_id=self.new_id(), now=now, actor=ACTOR,
                    written=len(step.events),
                )  # fmt: skip
        else:
            outcome = decide_signed(
                state, command, now=now, new_id=self.new_id, admins=self.admins,
                anchors=self.trust.anchors, known=self.trust.known, proven=self.trust.proven,
            )  # fmt: skip
            if not isinstance(outcome, Rejection):
                outcome = self._append(outcome, step)
            elif outcome.code == "unknown_actor_key" and self.left_out:
                outcome = dataclasses.replace(outcome, message=outcome.message + self._left_out())
            result = command_result(command, outcome, event_id=self.new_id(), now=now, state=state)
            if isinstance(result, CommandRejected):
                self.remember_answer(result, now)
        answer = self._answer(command, result)
        if answer is None:
            step.events.clear()  # no answer could be written: apply nothing either
            reason = f"its answer would be over the {self.limit.max_bytes}-byte record limit"
            return self._letter(msg, "output_too_large", reason)
        self.stats.processed += 1
        step.outputs.append(answer)
        return step

    def _left_out(self) -> str:
        """A note that retired keys were left out (a README check: every key a rotated
        administrator's anchor had registered stopped signing, and the refusal read as
        tampering), naming nothing: every governance client reads the answers (a review: the
        key store's path and which folder others may write went to any refused sender)."""
        return (
            " (note: the command processor left out retired keys of its key store when it "
            "started, which may be why: `ledger up` and its log say which)"
        )

    def _append(
        self, events: tuple[GovernanceEvent, ...], step: Step
    ) -> tuple[GovernanceEvent, ...] | Rejection:
        """Put ``events`` in ``step`` with their records; if any does not fit a record, none
        (nothing is half-applied: the command is refused as a whole)."""
        for gov in events:
            topic = self.streams[event_stream(gov)]
            key, value = aggregate_of(gov).encode(), self.codec.encode(gov)
            if not self.limit.fits(key, value):
                step.events.clear()
                return Rejection(
                    code="too_large",
                    message=f"its {type(gov).__name__} event would be over the "
                    f"{self.limit.max_bytes}-byte record limit",
                )
            step.events.append((gov, (topic, key, value)))
        return events

    def _finish(
        self, state: LedgerState, command: Command, first: FirstAnswer, now: datetime, step: Step
    ) -> tuple[str, ...] | Rejection:
        """The ids of the events an applied command left unwritten, now put in ``step``
        (:func:`finish_again`; nearly always none)."""
        rest = finish_again(state, command, first, now=now, new_id=self.new_id, trust=self.trust)
        if not isinstance(rest, Rejection) and rest:
            log.warning(
                "command %s was cut short before: writing its %d remaining events",
                command.event_id, len(rest),
            )  # fmt: skip
            rest = self._append(rest, step)
        if isinstance(rest, Rejection):
            log.error("command %s was cut short before: %s", command.event_id, rest.message)
            return rest
        return tuple(e.event_id for e in rest)

    def _answer(self, command: Command, result: CommandAccepted | CommandRejected) -> Output | None:
        key = command.event_id.encode()
        value = self.codec.encode(result)
        if self.limit.fits(key, value):
            return (self.topics.command_results, key, value)
        # The sender's own text (a huge name, a reason quoting it) made it large: cut it.
        short = replace(result, aggregate=_cut(result.aggregate))
        if isinstance(short, CommandRejected):
            short = replace(short, reason=_cut(short.reason))
        value = self.codec.encode(short)
        if self.limit.fits(key, value):
            return (self.topics.command_results, key, value)
        return None

    def _letter(self, msg: Any, code: str, reason: str) -> Step:
        return Step(outputs=[self.letters.of(msg, code, reason)])


def _cut_bytes(text: str, limit: int = _ANSWER_TEXT_CHARS) -> str:
    """``text`` within ``limit`` bytes of UTF-8 (what a remembered rejection keeps: a character
    cut let 1,000 emoji hold 4 KB each)."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return f"{data[:limit].decode('utf-8', 'ignore')}… ({len(text)} characters)"


def _cut(text: str) -> str:
    return clipped(text, _ANSWER_TEXT_CHARS)
