"""The one dead-letter helper of both processors: same problem, same code; a letter always fits."""

from __future__ import annotations

import hashlib
import os

import pytest

from ledger.codec import default_codec
from ledger.core.events import (
    COMMAND_TYPES,
    BatchEvaluationRequested,
    DeadLetter,
    DecisionRecorded,
    Determination,
    EvaluationRequested,
)
from ledger.errors import CodecError
from ledger.ids import new_id, utcnow
from processors.dead_letters import DEAD_LETTER_CODES, DeadLetters, decode_as
from processors.outputs import OutputLimit, ProcessorStats

CODEC = default_codec()
LIMIT = OutputLimit(1_000_000)


def letters(limit: OutputLimit = LIMIT) -> DeadLetters:
    return DeadLetters(
        codec=CODEC, topic="dead", actor="service:test", stats=ProcessorStats(), limit=limit
    )


def stray_decision() -> bytes:
    return CODEC.encode(
        DecisionRecorded(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor="service:evaluator",
            request_id=new_id(),
            requested_at=utcnow(),
            action="a",
            principal="agent:a",
            resource="r",
            determination=Determination.ALLOW,
        )
    )


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (None, "codec_error"),
        (b"", "codec_error"),
        (b"garbage", "codec_error"),
        (b"\xc3\x01" + b"\x00" * 8 + b"body", "unknown_schema"),
        (stray_decision(), "unexpected_event"),
    ],
)
def test_the_same_record_gets_the_same_code_on_either_topic(value: bytes | None, code: str) -> None:
    requests = (EvaluationRequested, BatchEvaluationRequested)
    codes = []
    for accepted, what in ((requests, "an evaluation request"), (COMMAND_TYPES, "a command")):
        with pytest.raises(CodecError) as failed:
            decode_as(CODEC, value, accepted, what)
        codes.append(failed.value.code)
    assert codes == [code, code]
    assert code in DEAD_LETTER_CODES


def test_a_letter_that_fits_keeps_the_bytes_and_their_digest() -> None:
    helper = letters()
    topic, key, value = helper.letter(
        topic="in", partition=2, offset=7, key=b"k", value=b"junk", code="codec_error", reason="bad"
    )
    letter = CODEC.decode(value)
    assert topic == "dead" and key == b"k"
    assert isinstance(letter, DeadLetter)
    assert (letter.key, letter.value, letter.truncated) == (b"k", b"junk", False)
    assert letter.value_size == 4 and letter.value_sha256 == hashlib.sha256(b"junk").hexdigest()
    assert (letter.source_topic, letter.partition, letter.offset) == ("in", 2, 7)


def test_a_letter_that_would_not_fit_carries_size_and_digest_instead() -> None:
    original = os.urandom(1_048_301)
    _, key, value = letters().letter(
        topic="in",
        partition=0,
        offset=1,
        key=b"k",
        value=original,
        code="codec_error",
        reason="bad",
    )
    assert LIMIT.fits(key, value)
    letter = CODEC.decode(value)
    assert isinstance(letter, DeadLetter)
    assert (letter.value, letter.key, letter.truncated) == (None, b"k", True)
    assert letter.value_size == len(original)
    assert letter.value_sha256 == hashlib.sha256(original).hexdigest()


def test_a_huge_key_is_left_out_too_and_never_reused_as_the_letters_key() -> None:
    huge_key = b"k" * 999_000
    _, key, value = letters().letter(
        topic="in",
        partition=0,
        offset=1,
        key=huge_key,
        value=b"v" * 900_000,
        code="codec_error",
        reason="r" * 50_000,
    )
    assert LIMIT.fits(key, value)
    assert key == f"sha256:{hashlib.sha256(huge_key).hexdigest()}".encode()
    letter = CODEC.decode(value)
    assert isinstance(letter, DeadLetter)
    assert (letter.key, letter.value, letter.truncated) == (None, None, True)
    assert letter.key_size == len(huge_key)
    assert len(letter.reason) < 2_100  # a sender cannot grow the letter through the reason


def test_unknown_codes_are_a_bug() -> None:
    with pytest.raises(AssertionError):
        letters().letter(
            topic="in", partition=0, offset=1, key=None, value=None, code="something_new", reason=""
        )
