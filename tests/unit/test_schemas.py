"""The ``.avsc`` files are the contract: they stay in step with the event dataclasses, and every
historic writer schema still decodes into the current types (STYLE 9, DESIGN §4)."""

from __future__ import annotations

import dataclasses
import enum
import io
import json
import types
import typing
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.schema import to_parsing_canonical_form

from ledger.codec import MAGIC, Codec
from ledger.core import events
from ledger.core.events import EVENT_TYPES

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas"
HISTORY_DIRS = (SCHEMAS / "history", REPO / "tests" / "fixtures" / "schemas")
NAMESPACE = "ledger.v1"
VALUE_BRANCHES = [
    "null",
    "boolean",
    "long",
    "double",
    "string",
    f"{NAMESPACE}.DecimalValue",
    f"{NAMESPACE}.TimestampValue",
    "array",
]


def load(path: Path) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


def historic_schema_paths() -> list[Path]:
    return sorted(p for d in HISTORY_DIRS if d.is_dir() for p in d.rglob("*.avsc"))


# --------------------------------------------------------------------------- in step with dataclasses


class SchemaWalker:
    """Resolves named-type references within one self-contained schema file."""

    def __init__(self) -> None:
        self.named: dict[str, dict[str, Any]] = {}

    def resolve(self, avro: Any) -> Any:
        if isinstance(avro, dict) and avro.get("type") in ("record", "enum"):
            name = avro["name"] if "." in avro["name"] else f"{NAMESPACE}.{avro['name']}"
            self.named[name] = avro
            return avro
        if isinstance(avro, str) and avro in self.named:
            return self.named[avro]
        return avro


def branch_name(avro: Any) -> str:
    if isinstance(avro, str):
        return avro
    if avro["type"] in ("record", "enum"):
        return f"{NAMESPACE}.{avro['name']}"
    return str(avro["type"])


def check_type(hint: Any, avro: Any, walker: SchemaWalker, where: str) -> None:
    """Assert that Avro type ``avro`` is the documented mapping of Python type ``hint``."""
    avro = walker.resolve(avro)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        assert set(args) != set(typing.get_args(events.Value)), f"{where}: bare Value"
        (inner,) = [a for a in args if a is not type(None)]
        assert isinstance(avro, list), f"{where}: optional field must be a union"
        assert avro[0] == "null" and len(avro) == 2, f"{where}: expected ['null', X]"
        check_type(inner, avro[1], walker, where)
    elif hint is str:
        assert avro == "string", where
    elif hint is int:
        assert avro in ("long", "int"), where
    elif hint is bytes:
        assert avro == "bytes", where
    elif hint is bool:
        assert avro == "boolean", where
    elif hint is datetime:
        assert avro == {"type": "long", "logicalType": "timestamp-micros"}, where
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        assert avro["type"] == "enum" and avro["name"] == hint.__name__, where
        assert avro["symbols"] == [m.value for m in hint], f"{where}: enum symbols out of step"
        assert avro["default"] in avro["symbols"], f"{where}: enum needs a default symbol"
    elif origin is tuple:
        assert avro["type"] == "array", where
        check_type(typing.get_args(hint)[0], avro["items"], walker, f"{where}[]")
    elif origin is Mapping:
        assert avro["type"] == "map", where
        value_hint = typing.get_args(hint)[1]
        if set(typing.get_args(value_hint)) == set(typing.get_args(events.Value)):
            branches = [walker.resolve(b) for b in avro["values"]]
            assert [branch_name(b) for b in branches] == VALUE_BRANCHES, where
            assert branches[-1] == {"type": "array", "items": "string"}, where
        else:
            check_type(value_hint, avro["values"], walker, f"{where}{{}}")
    elif dataclasses.is_dataclass(hint):
        assert isinstance(hint, type)
        check_record(hint, avro, walker)
    else:
        raise AssertionError(f"{where}: no mapping for {hint}")


def default_of(field: dataclasses.Field[Any]) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def check_record(cls: type, avro: dict[str, Any], walker: SchemaWalker) -> None:
    assert avro["type"] == "record"
    assert avro["name"] == cls.__name__
    assert avro.get("doc"), f"{cls.__name__}: record needs a doc"
    hints = typing.get_type_hints(cls, vars(events))
    fields = dataclasses.fields(cls)
    assert [f["name"] for f in avro["fields"]] == [f.name for f in fields], (
        f"{cls.__name__}: field names or order differ from the dataclass"
    )
    for field, avro_field in zip(fields, avro["fields"], strict=True):
        where = f"{cls.__name__}.{field.name}"
        check_type(hints[field.name], avro_field["type"], walker, where)
        has_default = (
            field.default is not dataclasses.MISSING
            or field.default_factory is not dataclasses.MISSING
        )
        assert ("default" in avro_field) == has_default, f"{where}: default out of step"
        if has_default:
            expected = default_of(field)
            if isinstance(expected, enum.Enum):
                expected = expected.value
            if isinstance(expected, tuple):
                expected = list(expected)
            assert avro_field["default"] == expected, f"{where}: default value differs"


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_schema_in_step_with_dataclass(cls: type) -> None:
    path = SCHEMAS / f"{cls.__name__}.avsc"
    assert path.is_file(), f"missing {path}"
    schema = load(path)
    assert schema["namespace"] == NAMESPACE
    check_record(cls, schema, SchemaWalker())
    fastavro.parse_schema(schema, named_schemas={})  # valid Avro, defaults included


def test_no_schema_without_an_event_type() -> None:
    names = {cls.__name__ for cls in EVENT_TYPES}
    assert {p.stem for p in SCHEMAS.glob("*.avsc")} == names


def test_value_union_is_documented() -> None:
    text = (SCHEMAS / "DecisionRecorded.avsc").read_text(encoding="utf-8")
    assert "DecimalValue" in text and "exact" in text


# --------------------------------------------------------------------------- fingerprints


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO as the Avro specification defines it, written independently of fastavro."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_crc64_reference_vector() -> None:
    # Avro's own test vector: the fingerprint of the schema "null".
    assert crc64_avro(b'"null"') == 7195948357588979594


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_fingerprint_is_crc64_of_canonical_form(cls: type) -> None:
    canonical = to_parsing_canonical_form(load(SCHEMAS / f"{cls.__name__}.avsc"))
    assert Codec().fingerprint_of(cls) == crc64_avro(canonical.encode())


def test_fingerprints_are_distinct() -> None:
    codec = Codec()
    assert len({codec.fingerprint_of(cls) for cls in EVENT_TYPES}) == len(EVENT_TYPES)


# --------------------------------------------------------------------------- history


def sample(avro: Any, named: dict[str, Any], namespace: str = NAMESPACE) -> Any:
    """A valid, non-trivial datum for Avro type ``avro`` (every optional set, every map full)."""
    if isinstance(avro, str):
        if avro in named:
            return sample(named[avro], named)
        return {
            "string": "s",
            "long": 7,
            "int": 3,
            "boolean": True,
            "double": 1.5,
            "bytes": b"\x00\xff",
            "null": None,
        }[avro]
    if isinstance(avro, list):
        non_null = [b for b in avro if b != "null"]
        # Exercise the exact-decimal branch of Value unions; else the first non-null branch.
        for branch in non_null:
            if isinstance(branch, dict) and branch.get("name") == "DecimalValue":
                named[f"{namespace}.DecimalValue"] = branch
            if branch_name(branch).endswith("DecimalValue"):
                return sample(branch, named)
        return sample(non_null[0], named)
    kind = avro["type"]
    if avro.get("logicalType") == "timestamp-micros":
        return datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    if kind == "record":
        named[f"{namespace}.{avro['name']}"] = avro
        if avro["name"] == "DecimalValue":
            return {"value": "120.50"}
        return {f["name"]: sample(f["type"], named) for f in avro["fields"]}
    if kind == "enum":
        named[f"{namespace}.{avro['name']}"] = avro
        return avro["symbols"][-1]
    if kind == "array":
        return [sample(avro["items"], named)]
    if kind == "map":
        return {"k": sample(avro["values"], named)}
    return sample(kind, named)


def single_object(schema: dict[str, Any], datum: dict[str, Any]) -> bytes:
    """Encode ``datum`` with ``schema`` as a foreign producer would, without the ledger codec."""
    fp = crc64_avro(to_parsing_canonical_form(schema).encode())
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema, named_schemas={}), datum)
    return MAGIC + fp.to_bytes(8, "little") + body.getvalue()


def test_history_is_not_empty() -> None:
    assert historic_schema_paths(), "the evolution tests need at least one historic schema"


@pytest.mark.parametrize("path", historic_schema_paths(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_historic_schema_decodes_into_current_type(path: Path) -> None:
    writer = load(path)
    codec = Codec(history_dirs=HISTORY_DIRS)
    datum = sample(writer, {})
    event = codec.decode(single_object(writer, datum))
    cls = {c.__name__: c for c in EVENT_TYPES}[writer["name"]]
    assert type(event) is cls
    written = {f["name"] for f in writer["fields"]}
    for field in dataclasses.fields(cls):
        if field.name not in written:
            # A field the writer did not know: the reader's default, as the dataclass has it.
            assert getattr(event, field.name) == default_of(field), field.name
    assert getattr(event, "event_id") == "s"  # noqa: B009 - Event has no common base


def test_old_writer_fixtures_fill_current_defaults() -> None:
    fixtures = REPO / "tests" / "fixtures" / "schemas"
    codec = Codec(history_dirs=[fixtures])
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    old_request = load(fixtures / "EvaluationRequested.v0.avsc")
    data = single_object(
        old_request,
        {
            "event_id": "req-1",
            "occurred_at": at,
            "actor": "agent:refund-bot",
            "action": "refund.issue",
            "principal": "agent:refund-bot",
            "resource": "order:1",
            "facts": {"amount": ("ledger.v1.DecimalValue", {"value": "120.50"})},
        },
    )
    assert codec.type_of(data) == "EvaluationRequested"
    assert codec.decode(data) == events.EvaluationRequested(
        event_id="req-1",
        occurred_at=at,
        actor="agent:refund-bot",
        action="refund.issue",
        principal="agent:refund-bot",
        resource="order:1",
        facts={"amount": Decimal("120.50")},
        context={},
        mode=events.Mode.SYNC,
        default=None,
    )

    old_decision = load(fixtures / "DecisionRecorded.v0.avsc")
    datum = sample(old_decision, {})
    decoded = codec.decode(single_object(old_decision, datum))
    assert isinstance(decoded, events.DecisionRecorded)
    assert decoded.prev_hash is None and decoded.hash is None
    assert decoded.facts == {"k": Decimal("120.50")}


def test_current_codec_without_history_rejects_old_writer() -> None:
    old = load(REPO / "tests" / "fixtures" / "schemas" / "DecisionRecorded.v0.avsc")
    data = single_object(old, sample(old, {}))
    with pytest.raises(Exception, match="unknown schema fingerprint"):
        Codec(history_dirs=[]).decode(data)
