"""The compiled codec (:mod:`ledger.avro`) writes and reads exactly what the generic path does.

The generic path (``Codec(compiled=False)``: dataclass -> dict -> fastavro) is the reference: for
every event type, and for random decisions and requests, the compiled encoder's bytes are
byte-for-byte fastavro's, and each path decodes the other's bytes to the same event.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_codec import assert_same_values, aware, build, value_maps

from ledger.codec import Codec
from ledger.core.events import (
    EVENT_TYPES,
    DecisionRecorded,
    Determination,
    EvaluationRequested,
    Mode,
    ShadowResult,
    Stage,
)
from ledger.errors import CodecError


@pytest.fixture(scope="module")
def compiled() -> Codec:
    return Codec()


@pytest.fixture(scope="module")
def generic() -> Codec:
    return Codec(compiled=False)


_COMPILED = Codec()
_GENERIC = Codec(compiled=False)


def test_every_current_schema_is_compiled(compiled: Codec) -> None:
    slow = [cls.__name__ for cls in EVENT_TYPES if compiled._current[cls].compiled is None]
    assert not slow, f"served by the generic path only: {slow}"


def _same_both_ways(event: Any, compiled: Codec, generic: Codec) -> None:
    fast, slow = compiled.encode(event), generic.encode(event)
    assert fast == slow
    for decoded in (compiled.decode(slow), generic.decode(fast)):
        assert decoded == event
        assert_same_values(decoded, event)


@pytest.mark.parametrize("full", [True, False], ids=["full", "minimal"])
@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_same_bytes_and_events_as_the_generic_path(
    compiled: Codec, generic: Codec, cls: type, full: bool
) -> None:
    _same_both_ways(build(cls, full=full), compiled, generic)


class Colour(enum.StrEnum):
    RED = "red"


class Small(enum.IntEnum):
    ONE = 1


def test_subclasses_of_plain_values_take_the_generic_conversion(compiled: Codec) -> None:
    event = dataclasses.replace(
        build(EvaluationRequested, full=False),
        facts={"colour": Colour.RED, "n": Small.ONE, "big": 2**62, "neg": -(2**63)},
    )
    decoded = compiled.decode(compiled.encode(event))
    assert decoded.facts == {"colour": "red", "n": 1, "big": 2**62, "neg": -(2**63)}
    assert type(decoded.facts["colour"]) is str


def test_a_length_past_the_end_is_a_truncated_record(compiled: Codec) -> None:
    event = build(EvaluationRequested, full=False)
    data = compiled.encode(event)
    # The last field read is a string-ish map; cut inside the first string instead.
    with pytest.raises(CodecError, match="truncated record: EvaluationRequested") as caught:
        compiled.decode(data[:14])
    assert caught.value.__cause__ is not None


@settings(max_examples=100, deadline=None)
@given(
    st.builds(
        DecisionRecorded,
        event_id=st.uuids().map(str),
        occurred_at=aware,
        actor=st.text(),
        request_id=st.text(),
        requested_at=aware,
        action=st.text(),
        principal=st.text(),
        resource=st.text(),
        determination=st.sampled_from(Determination),
        constraints=value_maps,
        reasons=st.lists(st.text(), max_size=3).map(tuple),
        policy_version=st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1),
        stage=st.none() | st.sampled_from(Stage),
        facts=value_maps,
        context=value_maps,
        shadow_results=st.lists(
            st.builds(
                ShadowResult,
                policy=st.text(),
                version=st.integers(min_value=-(2**31), max_value=2**31 - 1),
                stage=st.sampled_from(Stage),
                determination=st.sampled_from(Determination),
                constraints=value_maps,
            ),
            max_size=2,
        ).map(tuple),
        bucket=st.none() | st.integers(min_value=-(2**31), max_value=2**31 - 1),
        mode=st.sampled_from(Mode),
        default=st.none() | st.sampled_from(Determination),
        latency_us=st.integers(min_value=-(2**63), max_value=2**63 - 1),
        governance_position=st.dictionaries(st.text(), st.integers(-(2**63), 2**63 - 1)),
        prev_hash=st.none() | st.text(),
        hash=st.none() | st.text(),
    )
)
def test_property_decisions_match_the_generic_path(event: DecisionRecorded) -> None:
    _same_both_ways(event, _COMPILED, _GENERIC)


@settings(max_examples=100, deadline=None)
@given(
    st.builds(
        EvaluationRequested,
        event_id=st.text(),
        occurred_at=st.datetimes(
            min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
        ),
        actor=st.text(),
        action=st.text(),
        principal=st.text(),
        resource=st.text(),
        facts=value_maps,
        context=st.dictionaries(
            st.text(), st.decimals(allow_nan=False, allow_infinity=False).map(Decimal)
        ),
    )
)
def test_property_requests_match_the_generic_path(event: EvaluationRequested) -> None:
    _same_both_ways(event, _COMPILED, _GENERIC)
