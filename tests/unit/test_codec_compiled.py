"""The compiled codec (:mod:`ledger.avro`) writes and reads exactly what the generic path does.

The generic path (``Codec(compiled=False)``: dataclass -> dict -> fastavro) is the reference: for
every event type, and for random decisions and requests, the compiled encoder's bytes are
byte-for-byte fastavro's, and each path decodes the other's bytes to the same event.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_codec import assert_same_values, aware, build, value_maps

from ledger.codec import OLDEST_FORM_TYPES, Codec
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
    return Codec(older_forms=False)  # the current writers, held to each other


@pytest.fixture(scope="module")
def generic() -> Codec:
    return Codec(compiled=False, older_forms=False)


_COMPILED = Codec(older_forms=False)
_GENERIC = Codec(compiled=False, older_forms=False)


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


def test_a_union_branch_written_in_more_bytes_than_it_needs_is_read_by_every_reader(
    compiled: Codec, generic: Codec
) -> None:
    # A fuzzer: `80 00` (a varint 0 in two bytes) as an optional field's branch was read by the
    # reader in C and by fastavro, refused by this one: whether a record was dead-lettered or
    # decided depended on the reader a processor had.
    from ledger.core.events import RevokeRole

    event = RevokeRole(
        event_id="e", occurred_at=datetime(2026, 1, 1, tzinfo=UTC), actor="admin:a",
        principal="agent:x", role="role:r",
    )  # fmt: skip
    data = compiled.encode(event)
    assert data.endswith(b"\x00\x00")  # key_id and signature: null
    longer = data[:-1] + b"\x80\x00"
    in_python = Codec(native=False, older_forms=False)  # where the reader in C is not built
    for reader in (compiled, in_python, generic):
        assert reader.decode(longer) == event
    with pytest.raises(CodecError, match="union branch out of range"):
        in_python.decode(data[:-1] + b"\x04")  # branch 2 of two


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


# --------------------------------------------------------------------------- the reader in C

_PYTHON_READER = Codec(native=False, older_forms=False)


def test_the_reader_in_c_is_installed_and_reads_every_current_type() -> None:
    from ledger import avro

    assert avro._vm is not None  # `make install` builds it
    python_reads = {
        cls: _PYTHON_READER._writers[_COMPILED._current[cls].header[2:]].compiled
        for cls in EVENT_TYPES
    }
    for cls in EVENT_TYPES:
        native = _COMPILED._writers[_COMPILED._current[cls].header[2:]].compiled
        assert native is not None and native is not python_reads[cls]
        assert isinstance(getattr(native, "__self__", None), avro._vm.Reader), cls.__name__


@pytest.mark.parametrize("full", [True, False], ids=["full", "minimal"])
@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_the_reader_in_c_reads_what_the_python_reader_reads(cls: type, full: bool) -> None:
    event = build(cls, full=full)
    data = _COMPILED.encode(event)
    native, python = _COMPILED.decode(data), _PYTHON_READER.decode(data)
    assert native == python == event
    assert_same_values(native, python)


def _outcome(codec: Codec, data: bytes) -> Any:
    """The event, or that the record does not decode. (Which words say so may differ: a
    string running past the end is "truncated" at once in C, while the Python reader notices
    a few values later, or finds something "malformed" first.)"""
    try:
        return codec.decode(data)
    except CodecError:
        return CodecError


@settings(max_examples=300, deadline=None)
@given(
    facts=value_maps,
    cut=st.integers(min_value=0, max_value=600),
    junk=st.binary(max_size=12),
    at=st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
)
def test_property_the_reader_in_c_agrees_even_on_damaged_records(
    facts: Any, cut: int, junk: bytes, at: datetime
) -> None:
    decision = dataclasses.replace(
        build(DecisionRecorded, full=True), facts=facts, occurred_at=at, requested_at=at
    )
    data = _COMPILED.encode(decision)
    assert _COMPILED.decode(data) == decision
    for record in (data[:cut] + junk + data[cut:], data[: min(cut, len(data))]):
        assert _outcome(_COMPILED, record) == _outcome(_PYTHON_READER, record)


@pytest.mark.parametrize(
    "micros",
    [
        0,
        -1,
        1,
        86_400_000_000 - 1,
        -86_400_000_000,
        951_782_400_000_000,  # 2000-02-29
        -62_135_596_800_000_000,
        253_402_300_799_999_999,
        -62_135_596_800_000_001,
        253_402_300_800_000_000,
        -(2**63),
        2**63 - 1,
    ],
)
def test_the_reader_in_c_reads_every_instant_the_python_reader_does(micros: int) -> None:
    from ledger.avro import write_long

    event = build(DecisionRecorded, full=False)
    data = _COMPILED.encode(event)
    head = _COMPILED.encode(
        dataclasses.replace(event, occurred_at=datetime(2026, 1, 1, tzinfo=UTC))
    )
    # occurred_at follows event_id: swap its varint for this one.
    start = 10 + 1 + len(event.event_id.encode())
    old_len = len(
        write_long(
            int((event.occurred_at - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1_000_000)
        )
    )
    assert head[:start] == data[:start]
    record = data[:start] + write_long(micros) + data[start + old_len :]
    assert _outcome(_COMPILED, record) == _outcome(_PYTHON_READER, record)


@pytest.mark.parametrize("full", [True, False], ids=["full", "minimal"])
@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_the_writer_in_c_writes_every_current_type_itself(cls: type, full: bool) -> None:
    """Byte for byte the Python writer's, and not by quietly leaving the event to it."""
    event = build(cls, full=full)
    native = _COMPILED._current[cls].native
    assert native is not None
    assert native(event) == _PYTHON_READER.encode(event) == _GENERIC.encode(event)


@settings(max_examples=300, deadline=None)
@given(
    facts=value_maps,
    at=st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
    ),
    version=st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
def test_property_the_writer_in_c_writes_the_python_writers_bytes(
    facts: Any, at: datetime, version: int
) -> None:
    decision = dataclasses.replace(
        build(DecisionRecorded, full=True),
        facts=facts,
        constraints=MappingProxyType(dict(facts)),
        occurred_at=at,
        policy_version=version,
    )
    assert _COMPILED.encode(decision) == _PYTHON_READER.encode(decision)
    assert _COMPILED.decode(_COMPILED.encode(decision)) == decision


@pytest.mark.parametrize("full", [True, False], ids=["full", "minimal"])
@pytest.mark.parametrize(
    "cls",
    sorted(OLDEST_FORM_TYPES, key=lambda c: c.__name__),
    ids=lambda cls: cls.__name__,
)
def test_governance_records_in_their_older_forms_are_read_alike_by_every_reader(
    cls: type, full: bool
) -> None:
    """Governance events and commands are written in the oldest form that holds them (an
    upgrade drill); a processor's start decodes a million, so those forms have the compiled
    readers too (Avro's schema resolution read them ~10 times slower), held to it here."""
    event = build(cls, full=full)
    if hasattr(event, "note"):
        event = dataclasses.replace(event, note=None)
    data = Codec().encode(event)
    assert data == Codec(compiled=False).encode(event)  # the compiled writer, byte for byte
    readers = (Codec(), Codec(native=False), Codec(compiled=False))
    for reader in readers:
        assert_same_values(reader.decode(data), event)  # types too: `==` takes True for 1
    writer = readers[0]._writers[data[2:10]]
    assert writer.compiled is not None  # not left to schema resolution
