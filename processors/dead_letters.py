"""Dead letters: one envelope and one set of codes for every processor (DESIGN §12).

A record a processor cannot turn into an answer goes to ``ledger.dead-letters`` with a stable
code (:data:`DEAD_LETTER_CODES`) and a reason, and the processor carries on with the next record.
The same problem gets the same code whichever topic it was read from.

Writing a dead letter never fails for size: the letter carries the original key and value bytes
when they fit one Kafka record, and otherwise their size and SHA-256 instead (``truncated``); the
record itself stays on its source topic at the recorded offset.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final

from ledger.codec import Codec
from ledger.core.events import DeadLetter
from ledger.errors import CodecError
from ledger.ids import new_id, utcnow
from ledger.kafka.logs import DEAD_LETTER_LOGGER
from processors.outputs import Output, OutputLimit, ProcessorStats

__all__ = ["DEAD_LETTER_CODES", "DeadLetters", "decode_as"]

_letters = logging.getLogger(DEAD_LETTER_LOGGER)

DEAD_LETTER_CODES: Final[dict[str, str]] = {
    "codec_error": "not a ledger record: empty, bad magic, truncated or malformed body",
    "unknown_schema": "a ledger record written with a schema this processor does not know",
    "unexpected_event": "a ledger record of a type this topic does not carry (e.g. a decision on the request topic)",
    "handler_error": "the processor failed on the record (a bug: its log has the traceback)",
    "poison_record": "the processor died while handling the record, on every attempt: not handled again",
    "output_too_large": "even the smallest answer to the record would not fit a Kafka record",
    "id_too_long": "a request or command whose id is longer than the limit (request_id_chars): "
    "not answered, not remembered",
    "id_empty": "a request or command whose id is empty or only whitespace: not answered (its "
    "answer would be keyed by nothing), not remembered",
    "too_many_items": "a pre-evaluation with more items than the limit (batch_items): not "
    "evaluated",
}
"""Every ``code`` a dead letter can carry, with what it means."""

# A reason is for people; a sender must not be able to make a letter large through it.
_REASON_CHARS = 2_000
# A key longer than this is not repeated as the dead letter's own Kafka key (its digest is).
_KEY_BYTES = 1_024


def decode_as(codec: Codec, value: bytes | None, accepted: tuple[type, ...], what: str) -> Any:
    """The event in ``value`` if it is one of ``accepted`` (``what`` names them for a reason).

    Raises :class:`~ledger.errors.CodecError` whose ``code`` is the dead-letter code:
    ``codec_error`` or ``unknown_schema`` for bytes that do not decode, ``unexpected_event`` for
    a ledger record of another type.
    """
    if value is None:
        raise CodecError("not a ledger record: empty record (tombstone)")
    event = codec.decode(value)
    if not isinstance(event, accepted):
        raise CodecError(f"{type(event).__name__} is not {what}", code="unexpected_event")
    return event


def _digest(data: bytes | None) -> tuple[int | None, str | None]:
    if data is None:
        return None, None
    return len(data), hashlib.sha256(data).hexdigest()


class DeadLetters:
    """Builds the dead-letter record for a failed input; no I/O (the caller sends it)."""

    def __init__(
        self,
        *,
        codec: Codec,
        topic: str,
        actor: str,
        stats: ProcessorStats,
        limit: OutputLimit,
        new_id: Callable[[], str] = new_id,
    ) -> None:
        self._codec = codec
        self._topic = topic
        self._actor = actor
        self._stats = stats
        self._limit = limit
        self._new_id = new_id

    def of(self, msg: Any, code: str, reason: str) -> Output:
        """:meth:`letter` for a consumed record (anything with ``topic``, ``partition``,
        ``offset``, ``key`` and ``value``: a Faust event, a fetched request)."""
        return self.letter(
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key,
            value=msg.value,
            code=code,
            reason=reason,
        )

    def poison(self, msg: Any, deaths: int, process: str) -> Output:
        """The letter for a record ``process`` died on ``deaths`` times (see
        :class:`~processors.inflight.InFlight`): it is not handled again."""
        reason = (
            f"the {process} died {deaths} times while handling this record (a crash, a hang "
            "that got it killed, or memory): it is not handled again"
        )
        return self.of(msg, "poison_record", reason)

    def failure(self, msg: Any, exc: BaseException) -> Output:
        """The letter for a record its handler raised ``exc`` on (the batch goes on)."""
        text = str(exc)
        return self.of(
            msg, "handler_error", f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        )

    def undecompressible(self, message: Any, error: Any) -> Output:
        """The dead letter (``codec_error``, no bytes) of a librdkafka ``message`` whose record
        batch does not decompress (``error``), which the reader then passes."""
        return self.letter(
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            key=message.key(),
            value=None,
            code="codec_error",
            reason=f"its record batch does not decompress: {error.str()}",
        )

    def letter(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        code: str,
        reason: str,
    ) -> Output:
        """The dead letter for the record at ``topic[partition]@offset``, sure to fit."""
        assert code in DEAD_LETTER_CODES, code
        self._stats.dead_lettered += 1
        if len(reason) > _REASON_CHARS:
            reason = f"{reason[:_REASON_CHARS]}… ({len(reason)} characters)"
        reason = reason.encode("utf-8", "replace").decode("utf-8")  # always encodable
        _letters.warning(
            "dead-lettering %s[%s]@%s (%s): %s",
            topic,
            partition,
            offset,
            code,
            reason,
            extra={"ledger_facility": code},  # thinned per code (RepeatFilter)
        )
        value_size, value_sha256 = _digest(value)
        key_size, key_sha256 = _digest(key)
        if key is not None and len(key) > _KEY_BYTES:
            kafka_key = f"sha256:{key_sha256}".encode()
        else:
            kafka_key = key or b""
        letter = DeadLetter(
            event_id=self._new_id(),
            occurred_at=utcnow(),
            actor=self._actor,
            source_topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            code=code,
            reason=reason,
            value_size=value_size,
            value_sha256=value_sha256,
            key_size=key_size,
            key_sha256=key_sha256,
        )
        encoded = self._codec.encode(letter)
        # Leave out the value, then the key too, until the letter fits: the digests identify
        # them on the source topic. Without both, a letter is a few hundred bytes.
        if not self._limit.fits(kafka_key, encoded):
            letter = replace(letter, value=None, truncated=True)
            encoded = self._codec.encode(letter)
        if not self._limit.fits(kafka_key, encoded):
            letter = replace(letter, key=None)
            encoded = self._codec.encode(letter)
        return (self._topic, kafka_key, encoded)
