"""The export format's rows (the export spec): typed columns, the JSON form of nested fields,
and the fast decoding path equal to the reference path for every event type."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.audit.rows import TOPIC_TYPES, RowMaker, key_text
from ledger.codec import Codec, default_codec
from ledger.core.events import (
    DeadLetter,
    DecisionRecorded,
    Determination,
    EvaluationRequested,
    ShadowResult,
    Stage,
)
from ledger.core.jsonform import canonical_json
from ledger.errors import CodecError
from ledger.settings import TopicNames

sys.path.insert(0, str(Path(__file__).parent))
from test_codec import AT, FACTS, build  # the codec tests' example events, one per type

TOPICS = TopicNames(prefix="x.")
ROWS = RowMaker(TOPICS)
CODEC = default_codec()
CURRENT_FORM = Codec(older_forms=False)  # governance records in their current form too


def _cases() -> list[tuple[str, type, bool]]:
    return [
        (getattr(TOPICS, attribute), cls, full)
        for attribute, types in TOPIC_TYPES.items()
        for cls in types
        for full in (True, False)
    ]


@pytest.mark.parametrize(
    ("topic", "cls", "full"), _cases(), ids=lambda v: getattr(v, "__name__", str(v))
)
def test_fast_path_equals_reference_path_for_every_event_type(
    topic: str, cls: type, full: bool
) -> None:
    event = build(cls, full=full)
    value = CODEC.encode(event)
    fast = ROWS.row(topic, 2, 40, 1_700_000_000_000, b"k", value)
    reference = ROWS.event_row(topic, 2, 40, 1_700_000_000_000, b"k", value, CODEC.decode(value))
    assert fast == reference
    table = ROWS.table(topic, [fast])
    assert table.num_rows == 1 and table.schema == ROWS.formats[topic].schema


def test_columns_hold_the_json_form_and_typed_values() -> None:
    at = datetime(2026, 11, 26, 16, 48, 26, 123456, tzinfo=UTC)
    decision = DecisionRecorded(
        event_id="d1",
        occurred_at=at,
        actor="service:evaluator",
        request_id="r1",
        requested_at=at,
        action="refund.issue",
        principal="agent:bot",
        resource="account:42",
        determination=Determination.ALLOW_WITH_CONSTRAINTS,
        constraints={"refund_method": "credit"},
        facts={"amount": Decimal("120.50"), "when": at, "tags": ("a", "b"), "x": float("nan")},
        shadow_results=(
            ShadowResult(
                policy="refund", version=2, stage=Stage.SHADOW, determination=Determination.DENY
            ),
        ),
        policy_version=3,
        governance_position={"t/0": 4},
    )
    fmt = ROWS.formats[TOPICS.decisions]
    row = dict(
        zip(
            fmt.column_names,
            ROWS.row(TOPICS.decisions, 0, 7, 5, None, CODEC.encode(decision)),
            strict=True,
        )
    )
    assert row["event_type"] == "DecisionRecorded" and row["key"] is None
    assert row["determination"] == "allow_with_constraints" and row["policy_version"] == 3
    assert row["occurred_at"] == 1_795_711_706_123_456  # µs since the epoch
    assert row["facts"] == canonical_json(decision.facts).decode()
    assert json.loads(row["facts"]) == {
        "amount": "120.50",
        "when": "2026-11-26T16:48:26.123456Z",
        "tags": ["a", "b"],
        "x": "NaN",
    }
    assert row["shadow_results"] == canonical_json(decision.shadow_results).decode()
    assert row["decisions"] is None  # the batch field: NULL for a single decision
    assert row["record"] == CODEC.encode(decision)


def test_an_undecodable_record_still_gets_a_row_with_its_bytes() -> None:
    for value in (b"", b"\xc3\x01garbage", b"not avro at all", None):
        row = ROWS.row(TOPICS.decisions, 1, 9, 5, b"\xff\xfe", value)
        fmt = ROWS.formats[TOPICS.decisions]
        named = dict(zip(fmt.column_names, row, strict=True))
        assert named["event_type"] is None and named["record"] == value
        assert named["key"] == "hex:fffe" and named["offset"] == 9
        assert all(named[c.name] is None for c in fmt.columns)


def test_a_record_with_bytes_after_the_body_is_undecodable_on_both_paths() -> None:
    value = CODEC.encode(build(EvaluationRequested, full=False)) + b"\x00"
    row = ROWS.row(TOPICS.evaluation_requests, 0, 1, 5, None, value)
    assert row[5] is None


def test_dead_letter_fields_named_like_coordinates_get_an_event_prefix() -> None:
    fmt = ROWS.formats[TOPICS.dead_letters]
    names = fmt.column_names
    assert {"event_partition", "event_offset", "event_key"} <= set(names)
    assert len(names) == len(set(names))
    letter = build(DeadLetter, full=True)
    named = dict(
        zip(names, ROWS.row(TOPICS.dead_letters, 0, 3, 5, None, CODEC.encode(letter)), strict=True)
    )
    assert named["partition"] == 0 and named["event_partition"] == letter.partition
    assert named["event_key"] == letter.key and named["offset"] == 3


def test_key_text() -> None:
    assert key_text(None) is None
    assert key_text("é".encode()) == "é"
    assert key_text(b"\xff") == "hex:ff"


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.text(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.datetimes(timezones=st.just(UTC)),
    st.lists(st.text(), max_size=3).map(tuple),
)


@settings(max_examples=150, deadline=None)
@given(
    facts=st.dictionaries(st.text(), values, max_size=6), reasons=st.lists(st.text(), max_size=3)
)
def test_property_fast_rows_equal_reference_rows(
    facts: dict[str, object], reasons: list[str]
) -> None:
    at = datetime(2026, 1, 2, tzinfo=UTC)
    decision = DecisionRecorded(
        event_id="d",
        occurred_at=at,
        actor="a",
        request_id="r",
        requested_at=at,
        action="x",
        principal="p",
        resource="r",
        determination=Determination.DENY,
        facts=facts,  # type: ignore[arg-type]
        context=facts,  # type: ignore[arg-type]
        reasons=tuple(reasons),
    )
    value = CODEC.encode(decision)
    fast = ROWS.row(TOPICS.decisions, 0, 1, 5, None, value)
    assert fast == ROWS.event_row(TOPICS.decisions, 0, 1, 5, None, value, CODEC.decode(value))


@pytest.mark.parametrize("codec", [CURRENT_FORM, CODEC], ids=["current form", "as written"])
@pytest.mark.parametrize(
    ("topic", "cls", "full"), _cases(), ids=lambda v: getattr(v, "__name__", str(v))
)
def test_the_compiled_decoder_reads_every_current_event_type(
    topic: str, cls: type, full: bool, codec: Codec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path does not quietly fall back to the reference path (which would keep the
    rows equal, and ``ledger export`` several times slower): for records in their current
    form, and as the codec writes them (governance events and commands in the oldest form
    that holds them)."""
    event = build(cls, full=full)
    value = codec.encode(event)
    _read_fast(topic, value, event, monkeypatch)


def _read_fast(topic: str, value: bytes, event: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """``value``'s row is the reference row of ``event``, read with the codec's decoding (the
    reference path) made to fail."""
    reference = ROWS.event_row(topic, 2, 40, 1_700_000_000_000, b"k", value, event)  # type: ignore[arg-type]
    rows = RowMaker(TOPICS)

    def no_reference_path(data: bytes) -> object:
        raise AssertionError("the reference path decoded a record the fast path should read")

    monkeypatch.setattr(rows.codec, "decode", no_reference_path)
    assert rows.row(topic, 2, 40, 1_700_000_000_000, b"k", value) == reference


def test_every_truncation_of_a_record_is_undecodable_and_says_so_quickly() -> None:
    decision = build(DecisionRecorded, full=True)
    value = CODEC.encode(decision)
    for cut in range(len(value)):
        row = ROWS.row(TOPICS.decisions, 0, 1, 5, None, value[:cut])
        assert row[5] is None and row[6] == value[:cut], cut


def test_a_hostile_block_count_is_refused_before_it_is_looped_over() -> None:
    # A DecisionRecorded whose `constraints` map claims 2**62 entries (zig-zag varint).
    decision = build(DecisionRecorded, full=False)
    value = CODEC.encode(decision)
    count = (2**62) << 1
    varint = bytearray()
    while count >= 0x80:
        varint.append((count & 0x7F) | 0x80)
        count >>= 7
    varint.append(count)
    fields = ROWS.formats[TOPICS.decisions]
    assert fields.column_names.index("constraints") > 0
    # Every byte position: wherever the count lands, the row is made at once.
    for at in range(10, len(value)):
        hostile = value[:at] + bytes(varint) + value[at:]
        assert len(ROWS.row(TOPICS.decisions, 0, 1, 5, None, hostile)) == len(fields.column_names)


# --------------------------------------------------------------------------- the decoder in C

PYTHON_ROWS = RowMaker(TOPICS, native=False)


def test_the_native_row_decoder_is_installed_and_used() -> None:
    """`make install` builds it (a C compiler and Cython are on every machine this runs on):
    without it `ledger export` quietly runs at a fraction of its speed."""
    from ledger.audit import rows

    assert rows.NATIVE and ROWS.native and not PYTHON_ROWS.native


@pytest.mark.parametrize(
    ("topic", "cls", "full"), _cases(), ids=lambda v: getattr(v, "__name__", str(v))
)
def test_native_rows_equal_python_rows_for_every_event_type(
    topic: str, cls: type, full: bool
) -> None:
    value = CODEC.encode(build(cls, full=full))
    native = ROWS.row(topic, 2, 40, 1_700_000_000_000, b"k", value)
    assert native == PYTHON_ROWS.row(topic, 2, 40, 1_700_000_000_000, b"k", value)
    assert [type(v) for v in native] == [
        type(v) for v in PYTHON_ROWS.row(topic, 2, 40, 1_700_000_000_000, b"k", value)
    ]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_the_native_json_text_is_the_python_encoders(value: object) -> None:
    """The decoder in C writes the JSON columns' canonical text itself (sorted keys, escapes,
    float and integer forms): the very text of the Python encoder, or it defers to it."""
    from ledger import _avrovm as _rowvm
    from ledger.audit.rows import _dumps

    program = _rowvm.Node(_rowvm.KINDS["long"])  # reads the one byte below, then becomes value
    convert = _rowvm.Node(_rowvm.KINDS["convert"], [program], arg=lambda _: value)
    dumps = _rowvm.Node(_rowvm.KINDS["dumps"], [convert], arg=_dumps)
    row = _rowvm.Row("T", [dumps], [0])
    try:
        expected: object = _dumps(value)
    except ValueError:  # NaN and infinities have no JSON text: neither path writes one
        with pytest.raises(ValueError):
            row.decode(b"\x00", 0, ())
        return
    assert row.decode(b"\x00", 0, ()) == ("T", b"\x00", None if value is None else expected)


@settings(max_examples=200, deadline=None)
@given(
    facts=st.dictionaries(st.text(), values, max_size=6),
    reasons=st.lists(st.text(), max_size=3),
    cut=st.integers(min_value=0, max_value=400),
    junk=st.binary(max_size=12),
)
def test_property_native_rows_equal_python_rows_even_for_damaged_records(
    facts: dict[str, object], reasons: list[str], cut: int, junk: bytes
) -> None:
    at = datetime(2026, 1, 2, tzinfo=UTC)
    decision = DecisionRecorded(
        event_id="d",
        occurred_at=at,
        actor="a",
        request_id="r",
        requested_at=at,
        action="x",
        principal="p",
        resource="r",
        determination=Determination.DENY,
        facts=facts,  # type: ignore[arg-type]
        constraints=facts,  # type: ignore[arg-type]
        reasons=tuple(reasons),
    )
    value = CODEC.encode(decision)
    for record in (value, value[:cut] + junk + value[cut:], value[: min(cut, len(value))]):
        assert ROWS.row(TOPICS.decisions, 0, 1, 5, None, record) == PYTHON_ROWS.row(
            TOPICS.decisions, 0, 1, 5, None, record
        )


# --------------------------------------------------------------------------- instants out of range

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIRST_US = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
_LAST_US = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
_OUT_OF_RANGE = (2**63 - 1, -(2**63), _LAST_US + 1, _FIRST_US - 1)


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)


def with_instants(value: bytes, micros: int) -> list[bytes]:
    """``value`` with each of its instants (the example events' times: ``AT`` and the fact
    ``ordered_at``), one at a time, replaced by ``micros``: what an agent's hand-made record
    holds (a red team: one such request blinded ``ledger audit verify`` for good)."""
    from ledger.avro import write_long

    out = []
    for at in (AT, FACTS["ordered_at"]):
        assert isinstance(at, datetime)
        varint = write_long(_micros(at))
        start = value.find(varint, 10)
        while start >= 0:
            out.append(value[:start] + write_long(micros) + value[start + len(varint) :])
            start = value.find(varint, start + 1)
    return out


@pytest.mark.parametrize("micros", [*_OUT_OF_RANGE, _LAST_US, _FIRST_US])
@pytest.mark.parametrize(
    ("topic", "cls"),
    [(t, c) for t, c, full in _cases() if full],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_a_record_the_codec_refuses_for_its_time_has_the_row_of_an_undecodable_one(
    topic: str, cls: type, micros: int
) -> None:
    """The exporter and the codec agree on what decodes: an instant no datetime holds (year 1
    to 9999) makes a row of NULLs with the record's bytes, as any record that does not decode,
    on both paths; not columns of a record replay, verification and simulation cannot read."""
    records = with_instants(CODEC.encode(build(cls, full=True)), micros)
    assert records
    refused = 0
    for record in records:
        native = ROWS.row(topic, 0, 1, 5, None, record)
        assert native == PYTHON_ROWS.row(topic, 0, 1, 5, None, record)
        try:
            event = CODEC.decode(record)
        except CodecError:
            refused += 1
            assert native[5] is None and native[6] == record
            assert all(v is None for v in native[7:]), native
        else:
            assert native == ROWS.event_row(topic, 0, 1, 5, None, record, event)
            ROWS.table(topic, [native]).to_pylist()  # every value a Python one
    assert refused == (len(records) if micros in _OUT_OF_RANGE else 0)


def test_the_decoder_in_c_reads_the_instants_the_codec_reads() -> None:
    from ledger import _avrovm
    from ledger.avro import INSTANTS

    assert _avrovm.INSTANTS == INSTANTS == (_FIRST_US, _LAST_US)


@pytest.mark.parametrize(
    ("cls", "header", "path"), CODEC.older_forms(), ids=lambda v: getattr(v, "name", None)
)
def test_every_older_form_is_read_by_the_compiled_decoder(
    cls: type, header: bytes, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A review: build(full=…) sets every field or none, so the forms between the oldest and
    # the current one were never written here. Each one: its own fields set, the later ones
    # unset, as a release between them wrote it.
    import dataclasses
    import json

    held = {f["name"] for f in json.loads(path.read_text())["fields"]}
    event = build(cls, full=True)
    event = dataclasses.replace(
        event, **{f.name: None for f in dataclasses.fields(cls) if f.name not in held}
    )
    value = CODEC.encode(event)
    assert value[2:10] == header, path.name  # written in that form
    topic = next(getattr(TOPICS, a) for a, types in TOPIC_TYPES.items() if cls in types)
    _read_fast(topic, value, event, monkeypatch)
    reference = ROWS.event_row(topic, 2, 40, 1_700_000_000_000, b"k", value, event)
    assert PYTHON_ROWS.row(topic, 2, 40, 1_700_000_000_000, b"k", value) == reference
