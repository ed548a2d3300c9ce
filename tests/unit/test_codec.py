"""Single-object Avro codec: round trips, exact values, and clear errors for bad bytes."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import shutil
import types
import typing
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import codec as codec_module
from ledger.codec import MAGIC, Codec, default_codec
from ledger.core import events
from ledger.core.events import (
    EVENT_TYPES,
    BatchDecisionRecorded,
    BatchItem,
    BatchItemDecision,
    DecisionRecorded,
    Determination,
    EvaluationRequested,
    Mode,
    PolicyVersionPromoted,
    PromotePolicyVersion,
    RollbackPolicy,
    ShadowResult,
    Stage,
)
from ledger.errors import CodecError, UnknownSchemaError

AT = datetime(2026, 3, 1, 12, 30, 45, 123456, tzinfo=UTC)
FACTS: Mapping[str, events.Value] = {
    "amount": Decimal("120.50"),
    "currency": "EUR",
    "order_age_days": 12,
    "first_refund": True,
    "score": 0.875,
    "ordered_at": AT - timedelta(days=12, microseconds=1),
    "tags": ("vip", "eu"),
    "coupon": None,
    "no_tags": (),
}


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec(older_forms=False)  # every event in its current form (older forms: below)


# --------------------------------------------------------------------------- example events


def full_value(hint: Any, name: str) -> Any:
    """A realistic value of type ``hint`` for field ``name``, with every optional part set."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return full_value(inner, name)
    if hint is str:
        return f"{name}-0190a3b4-7000-8000"
    if hint is int:
        return {"percent": 25, "bucket": 42, "reply_partition": 5}.get(name, 2**40 + 3)
    if hint is bytes:
        return b"\xc3\x01\x00not-avro"
    if hint is bool:
        return True  # every default is False: set, it shows the field really travels
    if hint is datetime:
        return AT
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return list(hint)[-1]
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return (full_value(item, name), full_value(item, name + "2"))
    if origin is Mapping:
        if typing.get_args(hint)[1] is int:
            return {"ledger.policy-events/0": 17, "ledger.grant-events/3": 2**40}
        return FACTS
    if dataclasses.is_dataclass(hint):
        assert isinstance(hint, type)
        return build(hint, full=True)
    raise AssertionError(hint)


def build(cls: type, *, full: bool) -> Any:
    """``cls`` with every field set (``full``) or only the required ones (defaults, None)."""
    hints = typing.get_type_hints(cls, vars(events))
    kwargs = {}
    for field in dataclasses.fields(cls):
        required = (
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        )
        if full:
            kwargs[field.name] = full_value(hints[field.name], field.name)
        elif required:
            optional = type(None) in typing.get_args(hints[field.name])
            kwargs[field.name] = None if optional else full_value(hints[field.name], field.name)
    return cls(**kwargs)


@pytest.mark.parametrize("full", [True, False], ids=["full", "minimal"])
@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_round_trip_every_event_type(codec: Codec, cls: type, full: bool) -> None:
    event = build(cls, full=full)
    data = codec.encode(event)
    assert data[:2] == MAGIC
    assert int.from_bytes(data[2:10], "little") == codec.fingerprint_of(cls)
    assert codec.type_of(data) == cls.__name__
    decoded = codec.decode(data)
    assert type(decoded) is cls
    assert decoded == event
    assert_same_values(decoded, event)


def assert_same_values(left: Any, right: Any) -> None:
    """Stricter than ``==``: same types, decimal scale kept, datetimes aware UTC."""
    if dataclasses.is_dataclass(left):
        for field in dataclasses.fields(left):
            assert_same_values(getattr(left, field.name), getattr(right, field.name))
    elif isinstance(left, Mapping):
        assert set(left) == set(right)
        for key in left:
            assert_same_values(left[key], right[key])
    elif isinstance(left, tuple):
        assert type(right) is tuple and len(left) == len(right)
        for a, b in zip(left, right, strict=True):
            assert_same_values(a, b)
    else:
        assert type(left) is type(right), (left, right)
        assert left == right
        if isinstance(left, Decimal):
            assert left.as_tuple() == right.as_tuple()  # digits and scale, not just value
        if isinstance(left, datetime):
            assert left.utcoffset() == timedelta(0)


def test_realistic_decision_keeps_exact_values(codec: Codec) -> None:
    decision = DecisionRecorded(
        event_id="0190a3b4-1111-7000-8000-000000000001",
        occurred_at=AT,
        actor="service:evaluator",
        request_id="0190a3b4-1111-7000-8000-000000000000",
        requested_at=AT - timedelta(microseconds=900),
        action="refund.issue",
        principal="agent:refund-bot",
        resource="order:12345",
        determination=Determination.ALLOW_WITH_CONSTRAINTS,
        constraints={"max_amount": Decimal("150.00"), "expires": AT + timedelta(hours=1)},
        reasons=("rule small_refund matched",),
        policy="refund",
        policy_version=3,
        stage=Stage.CANARY,
        facts=FACTS,
        shadow_results=(
            ShadowResult(
                policy="refund",
                version=4,
                stage=Stage.SHADOW,
                determination=Determination.DENY,
                reasons=("amount over 100.00",),
            ),
        ),
        bucket=7,
        mode=Mode.ASYNC,
        default=Determination.ALLOW,
        governance_position={"ledger.policy-events/0": 17},
        prev_hash="0" * 64,
        hash="f" * 64,
    )
    decoded = codec.decode(codec.encode(decision))
    assert decoded == decision
    assert_same_values(decoded, decision)
    assert isinstance(decoded, DecisionRecorded)
    assert str(decoded.facts["amount"]) == "120.50"
    assert decoded.facts["first_refund"] is True  # not 1


def test_non_utc_aware_datetime_reads_back_as_same_instant_in_utc(codec: Codec) -> None:
    paris = timezone(timedelta(hours=1))
    event = build(EvaluationRequested, full=False)
    local = dataclasses.replace(event, occurred_at=datetime(2026, 3, 1, 13, 0, tzinfo=paris))
    decoded = codec.decode(codec.encode(local))
    assert decoded.occurred_at == local.occurred_at
    assert decoded.occurred_at.tzinfo == UTC


def test_nested_batches_round_trip(codec: Codec) -> None:
    batch = events.BatchEvaluationRequested(
        event_id="b1",
        occurred_at=AT,
        actor="agent:planner",
        principal="agent:planner",
        items=(
            BatchItem(item_id="1", action="refund.issue", resource="order:1", facts=FACTS),
            BatchItem(item_id="2", action="email.send", resource="customer:9"),
        ),
    )
    assert codec.decode(codec.encode(batch)) == batch
    decided = events.BatchDecisionRecorded(
        event_id="d1",
        occurred_at=AT,
        actor="service:evaluator",
        request_id="b1",
        principal="agent:planner",
        decisions=(
            BatchItemDecision(
                item_id="1",
                action="refund.issue",
                resource="order:1",
                determination=Determination.ALLOW,
            ),
        ),
    )
    assert codec.decode(codec.encode(decided)) == decided


# --------------------------------------------------------------------------- property tests

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.datetimes(timezones=st.just(UTC)),
    st.lists(st.text(), max_size=4).map(tuple),
)
value_maps = st.dictionaries(st.text(), values, max_size=6)
aware = st.datetimes(timezones=st.just(UTC))


@settings(max_examples=150, deadline=None)
@given(
    st.builds(
        EvaluationRequested,
        event_id=st.uuids().map(str),
        occurred_at=aware,
        actor=st.text(),
        action=st.text(),
        principal=st.text(),
        resource=st.text(),
        facts=value_maps,
        context=value_maps,
        mode=st.sampled_from(Mode),
        default=st.none() | st.sampled_from(Determination),
    )
)
def test_property_evaluation_requested_round_trips(event: EvaluationRequested) -> None:
    decoded = default_codec().decode(default_codec().encode(event))
    assert decoded == event
    assert_same_values(decoded, event)


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
        policy_version=st.none() | st.integers(min_value=0, max_value=2**63 - 1),
        stage=st.none() | st.sampled_from(Stage),
        facts=value_maps,
        context=value_maps,
        shadow_results=st.lists(
            st.builds(
                ShadowResult,
                policy=st.text(),
                version=st.integers(min_value=0, max_value=2**31),
                stage=st.sampled_from(Stage),
                determination=st.sampled_from(Determination),
                constraints=value_maps,
            ),
            max_size=2,
        ).map(tuple),
        bucket=st.none() | st.integers(min_value=0, max_value=99),
        latency_us=st.integers(min_value=0, max_value=2**40),
        governance_position=st.dictionaries(st.text(), st.integers(0, 2**63 - 1), max_size=3),
        hash=st.none() | st.text(),
    )
)
def test_property_decision_recorded_round_trips(event: DecisionRecorded) -> None:
    decoded = default_codec().decode(default_codec().encode(event))
    assert decoded == event
    assert_same_values(decoded, event)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=64))
def test_any_body_after_a_valid_header_decodes_or_raises_codec_error(body: bytes) -> None:
    codec = default_codec()
    header = MAGIC + codec.fingerprint_of(DecisionRecorded).to_bytes(8, "little")
    with contextlib.suppress(CodecError):  # decoding may succeed; any other error fails
        codec.decode(header + body)


# --------------------------------------------------------------------------- malformed input


@pytest.fixture(scope="module")
def valid(codec: Codec) -> bytes:
    return codec.encode(build(DecisionRecorded, full=True))


@pytest.mark.parametrize(
    ("data", "cause"),
    [
        (b"", "empty input"),
        (b'{"event_id": 1}', "bad magic 0x7b22 (expected C3 01)"),
        (b"\x00", "bad magic 0x00"),
        (b"\xc3\x01\x01", "truncated record: 3 bytes"),
    ],
)
def test_bad_header(codec: Codec, data: bytes, cause: str) -> None:
    with pytest.raises(CodecError, match=cause.replace("(", r"\(").replace(")", r"\)")):
        codec.decode(data)
    with pytest.raises(CodecError):
        codec.type_of(data)


def test_unknown_fingerprint(codec: Codec) -> None:
    data = MAGIC + (0x1234).to_bytes(8, "little") + b"\x00"
    with pytest.raises(UnknownSchemaError, match=r"unknown schema fingerprint 0x0000000000001234"):
        codec.decode(data)
    with pytest.raises(UnknownSchemaError, match="newer producer"):
        codec.type_of(data)


def test_truncated_body(codec: Codec, valid: bytes) -> None:
    with pytest.raises(CodecError, match="truncated record: DecisionRecorded") as caught:
        codec.decode(valid[:-20])
    assert caught.value.__cause__ is not None


def test_trailing_bytes(codec: Codec, valid: bytes) -> None:
    with pytest.raises(CodecError, match="2 bytes after the record"):
        codec.decode(valid + b"\x00\x00")


def test_garbage_body(codec: Codec, valid: bytes) -> None:
    with pytest.raises(CodecError, match="DecisionRecorded body") as caught:
        codec.decode(valid[:10] + b"\xff" * 40)
    assert caught.value.__cause__ is not None


def test_not_bytes(codec: Codec) -> None:
    with pytest.raises(CodecError, match="expected bytes"):
        codec.decode("C3 01")  # type: ignore[arg-type]


def test_decodes_memoryview_and_bytearray(codec: Codec, valid: bytes) -> None:
    assert codec.decode(memoryview(valid)) == codec.decode(bytearray(valid))


# --------------------------------------------------------------------------- encoding errors


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"occurred_at": datetime(2026, 3, 1)}, r"DecisionRecorded\.occurred_at: naive datetime"),
        ({"facts": {"when": datetime(2026, 3, 1)}}, r"facts: key 'when': naive datetime"),
        # A red team: an aware datetime whose instant lies past 9999 in UTC was sent, then
        # dead-lettered by the evaluator, and its caller timed out.
        (
            {"facts": {"s": datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-5)))}},
            r"facts: key 's': 9999-12-31T23:59:00-05:00 is outside the years 1-9999 in UTC",
        ),
        (
            {"occurred_at": datetime(1, 1, 1, 0, 1, tzinfo=timezone(timedelta(hours=5)))},
            r"occurred_at: 0001-01-01T00:01:00\+05:00 is outside the years 1-9999 in UTC",
        ),
        ({"facts": {"ids": {1, 2}}}, r"facts: key 'ids': unsupported value type set; a value is "),
        # An agent engineer's walkthrough: a nested object was refused without the way out.
        (
            {"facts": {"customer": {"a": 1}}},
            r"unsupported value type dict: values are flat \(give each field its own name, e\.g\. "
            r"customer_tier\); a value is null, a bool, an int, a float, a Decimal, a str",
        ),
        # A README check: numpy's bool_ (its class named `bool`) read "unsupported value type bool"
        (
            {"facts": {"ok": type("bool", (), {"item": bool, "__module__": "numpy"})()}},
            r"facts: key 'ok': unsupported value type numpy\.bool: pass value\.item\(\) for a ",
        ),
        ({"facts": {"x": Decimal("NaN")}}, r"facts: key 'x': decimal value NaN is not finite"),
        ({"facts": {"n": 2**64}}, r"facts: key 'n': integer .* does not fit a 64-bit long"),
        ({"facts": {"l": ("a", 1)}}, r"facts: key 'l': list values may only hold strings"),
        ({"action": 5}, r"DecisionRecorded\.action .* expected string"),
        ({"bucket": 2**40}, r"DecisionRecorded\.bucket"),
        (
            {"shadow_results": (dataclasses.replace(build(ShadowResult, full=False), rule=3),)},
            r"ShadowResult\.rule .* expected string",
        ),
    ],
)
def test_encoding_an_event_that_does_not_fit_names_the_field(
    codec: Codec, change: dict[str, Any], message: str
) -> None:
    event = dataclasses.replace(build(DecisionRecorded, full=False), **change)
    with pytest.raises(CodecError, match=message) as caught:
        codec.encode(event)
    assert caught.value.__cause__ is not None


def test_encoding_a_non_event(codec: Codec) -> None:
    with pytest.raises(CodecError, match="not a ledger event type: BatchItem"):
        codec.encode(build(BatchItem, full=False))


# --------------------------------------------------------------------------- construction


def test_default_codec_is_built_once() -> None:
    assert default_codec() is default_codec()


def test_missing_schema_directory(tmp_path: Path) -> None:
    with pytest.raises(CodecError, match=r"schema directory .* not found"):
        Codec(tmp_path / "nope")


def test_missing_schema_for_an_event_type(tmp_path: Path) -> None:
    source = Path(codec_module.__file__).resolve().parents[1] / "schemas"
    for path in source.glob("*.avsc"):
        if path.name != "DeadLetter.avsc":
            shutil.copy(path, tmp_path / path.name)
    with pytest.raises(CodecError, match="no schema for DeadLetter"):
        Codec(tmp_path)


def test_invalid_schema_file(tmp_path: Path) -> None:
    source = Path(codec_module.__file__).resolve().parents[1] / "schemas"
    for path in source.glob("*.avsc"):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "RoleRevoked.avsc").write_text("{not json", encoding="utf-8")
    with pytest.raises(CodecError, match=r"cannot load schema .*RoleRevoked\.avsc"):
        Codec(tmp_path)


def test_a_governance_event_is_written_in_the_oldest_form_that_holds_it_whole() -> None:
    # An operator's upgrade drill: `note` added to promotions made every promotion a record of
    # the new schema, which the release before cannot read; its processors, beside the new
    # ones or after a rollback, skipped every promotion and decided on a stale state.
    from ledger.codec import _load_schema
    from ledger.contract import contract_dir

    history = contract_dir("schemas") / "history"

    def fingerprint(name: str) -> bytes:
        return _load_schema(history / f"{name}.avsc")[1]

    codec = default_codec()
    signed = dataclasses.replace(build(PolicyVersionPromoted, full=True), note=None)
    unsigned = build(PolicyVersionPromoted, full=False)
    noted = build(PolicyVersionPromoted, full=True)
    for event, header in (
        (unsigned, fingerprint("PolicyVersionPromoted.v1")),  # before signatures
        (signed, fingerprint("PolicyVersionPromoted.v2")),  # before notes
        (noted, codec.fingerprint_of(PolicyVersionPromoted).to_bytes(8, "little")),
    ):
        data = codec.encode(event)
        assert data[:10] == MAGIC + header, event
        assert codec.decode(data) == event
        assert_same_values(codec.decode(data), event)
    # Commands too (an older command processor dead-lettered a newer CLI's every promotion).
    command = dataclasses.replace(
        build(PromotePolicyVersion, full=True), note=None, previous_version=None
    )
    assert codec.encode(command)[:10] == MAGIC + fingerprint("PromotePolicyVersion.v2")
    assert codec.decode(codec.encode(command)) == command
    # A promotion with a note but without --replacing, and a rollback without --from: the forms
    # a command processor of the release before them reads.
    noted = dataclasses.replace(build(PromotePolicyVersion, full=True), previous_version=None)
    assert noted.note is not None
    assert codec.encode(noted)[:10] == MAGIC + fingerprint("PromotePolicyVersion.v3")
    rollback = dataclasses.replace(build(RollbackPolicy, full=True), from_version=None)
    assert codec.encode(rollback)[:10] == MAGIC + fingerprint("RollbackPolicy.v2")
    seen = dataclasses.replace(rollback, from_version=3)
    assert codec.encode(seen)[2:10] == codec.fingerprint_of(RollbackPolicy).to_bytes(8, "little")
    assert codec.decode(codec.encode(seen)) == seen
    # A pre-evaluation's answer without stale_after: the form an SDK of the release before it
    # reads (a review: every pre-evaluation of such an agent failed on the unknown schema).
    batch = dataclasses.replace(
        build(BatchDecisionRecorded, full=True), stale_after=None, chain_id="c", chain_seq=1
    )
    assert codec.encode(batch)[:10] == MAGIC + fingerprint("BatchDecisionRecorded.v2")
    assert codec.decode(codec.encode(batch)) == batch
    ahead = dataclasses.replace(batch, stale_after=datetime(2031, 1, 1, tzinfo=UTC))
    current = codec.fingerprint_of(BatchDecisionRecorded).to_bytes(8, "little")
    assert codec.encode(ahead)[:10] == MAGIC + current
    # Not the sync path's records: those are always written in their current form.
    decision = build(DecisionRecorded, full=False)
    assert codec.encode(decision)[2:10] == codec.fingerprint_of(DecisionRecorded).to_bytes(
        8, "little"
    )
