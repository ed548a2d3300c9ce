"""The export format's rows: one ledger record → one row of typed columns (the export spec).

Every topic has a fixed column list: the Kafka coordinates (``topic``, ``partition``,
``offset``, ``kafka_timestamp``, ``key``), ``event_type`` and the raw ``record`` bytes, then one
column per top-level field of the event types the topic carries (their union, in order of first
appearance). A field's column type follows its Python type: ``datetime`` → timestamp with time
zone (µs), ``int`` → BIGINT, ``bool`` → BOOLEAN, ``float`` → DOUBLE, ``str``/enums/``Decimal`` →
VARCHAR, ``bytes`` → BLOB, anything nested → JSON holding exactly
``canonical_json(value)`` of :mod:`ledger.core.jsonform`. A field named like a coordinate column
(only :class:`~ledger.core.events.DeadLetter` has such fields: ``partition``, ``offset``,
``key``) is exported as ``event_<name>``.

Two ways to a row, with the same result (a test holds them to that):

- the fast path, for records written with a current schema: fastavro decodes the body straight
  to dicts against the schema with its logical types removed (timestamps stay integers), and a
  converter generated once per event type turns the dict into the row;
- the reference path, for everything else (records written with an older schema): the codec
  decodes the event, and each field is rendered from the Python value.

A record neither path can decode still gets a row: ``event_type`` and every field NULL, the
bytes kept in ``record``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from io import BytesIO
from typing import Any, Final

import pyarrow as pa
from fastavro import parse_schema, schemaless_reader

from ledger.codec import MAGIC, Codec, default_codec
from ledger.contract import contract_dir
from ledger.core import events as _events
from ledger.core.events import (
    COMMAND_TYPES,
    ActorKeyRegistered,
    ActorKeyRevoked,
    BatchDecisionRecorded,
    BatchEvaluationRequested,
    ChainCheckpoint,
    CommandAccepted,
    CommandRejected,
    DeadLetter,
    DecisionCorrected,
    DecisionRecorded,
    EvaluationRequested,
    Event,
    GrantIssued,
    GrantRevoked,
    PolicyRetired,
    PolicyRolledBack,
    PolicyVersionApproved,
    PolicyVersionPromoted,
    PolicyVersionProposed,
    RoleAssigned,
    RoleRevoked,
)
from ledger.core.jsonform import canonical_json, format_timestamp
from ledger.errors import CodecError
from ledger.settings import TopicNames

__all__ = [
    "COORDINATES",
    "TOPIC_TYPES",
    "Column",
    "TopicFormat",
    "topic_formats",
    "RowMaker",
    "key_text",
]

COORDINATES: Final = (
    "topic",
    "partition",
    "offset",
    "kafka_timestamp",
    "key",
    "event_type",
    "record",
)
"""The columns every topic's rows start with, in this order."""

_COORDINATE_TYPES: Final = (
    pa.string(),
    pa.int32(),
    pa.int64(),
    pa.timestamp("ms", tz="UTC"),
    pa.string(),
    pa.string(),
    pa.binary(),
)

TOPIC_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "commands": COMMAND_TYPES,
    "command_results": (CommandAccepted, CommandRejected),
    "policy_events": (
        PolicyVersionProposed,
        PolicyVersionApproved,
        PolicyVersionPromoted,
        PolicyRolledBack,
        PolicyRetired,
    ),
    "grant_events": (
        GrantIssued,
        GrantRevoked,
        RoleAssigned,
        RoleRevoked,
        ActorKeyRegistered,
        ActorKeyRevoked,
    ),
    "evaluation_requests": (EvaluationRequested, BatchEvaluationRequested),
    "decisions": (DecisionRecorded, BatchDecisionRecorded),
    "corrections": (DecisionCorrected,),
    "dead_letters": (DeadLetter,),
    "chain_checkpoints": (ChainCheckpoint,),
}
"""The event types each topic carries (DESIGN §4), by its :class:`TopicNames` attribute."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

Kind = typing.Literal["timestamp", "int", "bool", "float", "text", "bytes", "json"]
_ARROW: Final[dict[str, pa.DataType]] = {
    "timestamp": pa.timestamp("us", tz="UTC"),
    "int": pa.int64(),
    "bool": pa.bool_(),
    "float": pa.float64(),
    "text": pa.string(),
    "bytes": pa.binary(),
    "json": pa.json_(),
}


@dataclasses.dataclass(frozen=True, slots=True)
class Column:
    """One event-field column: its name, the field it holds and the field's kind."""

    name: str
    field: str
    kind: Kind

    @property
    def arrow_type(self) -> pa.DataType:
        return _ARROW[self.kind]


def _kind(hint: Any) -> Kind:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return _kind(args[0])
        return "json"
    if hint is datetime:
        return "timestamp"
    if hint is bool:
        return "bool"
    if hint is int:
        return "int"
    if hint is float:
        return "float"
    if hint is bytes:
        return "bytes"
    if hint is str or hint is Decimal:
        return "text"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "text"
    return "json"


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(_events))


@dataclasses.dataclass(frozen=True, slots=True)
class TopicFormat:
    """The export format of one topic: its name, event types, columns and Arrow schema."""

    attribute: str  # the TopicNames attribute ("decisions")
    topic: str  # the full topic name (with any prefix)
    types: tuple[type, ...]
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return (*COORDINATES, *(c.name for c in self.columns))

    @property
    def schema(self) -> pa.Schema:
        return pa.schema(
            [
                *(pa.field(n, t) for n, t in zip(COORDINATES, _COORDINATE_TYPES, strict=True)),
                *(pa.field(c.name, c.arrow_type) for c in self.columns),
            ]
        )

    def column_of(self, cls: type) -> dict[str, Column]:
        """The columns of ``cls``'s fields, by field name."""
        by_field = {c.field: c for c in self.columns}
        return {f.name: by_field[f.name] for f in dataclasses.fields(cls)}


def _columns(event_types: Iterable[type]) -> tuple[Column, ...]:
    found: dict[str, Column] = {}
    for cls in event_types:
        hints = _hints(cls)
        for f in dataclasses.fields(cls):
            name = f"event_{f.name}" if f.name in COORDINATES else f.name
            column = Column(name, f.name, _kind(hints[f.name]))
            seen = found.setdefault(f.name, column)
            if seen != column:  # a field of one name with two types on one topic
                raise TypeError(f"{cls.__name__}.{f.name} is {column.kind}, elsewhere {seen.kind}")
    return tuple(found.values())


def topic_formats(topics: TopicNames) -> dict[str, TopicFormat]:
    """Every ledger topic's format, by full topic name, in ``topics.all()`` order."""
    out = {}
    for attribute, event_types in TOPIC_TYPES.items():
        name = getattr(topics, attribute)
        out[name] = TopicFormat(attribute, name, event_types, _columns(event_types))
    return {name: out[name] for name in topics.all()}


def key_text(key: bytes | None) -> str | None:
    """A record key as the ``key`` column holds it: UTF-8 text, else ``hex:`` and its hex."""
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return "hex:" + key.hex()


# --------------------------------------------------------------------------- JSON form of values


_ENCODER: Final = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def _dumps(value: Any) -> str:
    """``canonical_json`` of a value already in its JSON form (one encoder, built once)."""
    if not value:
        if value == {}:
            return "{}"
        if value == []:
            return "[]"
    return _ENCODER.encode(value)


def _micros_text(micros: int) -> str:
    return format_timestamp(_EPOCH + timedelta(microseconds=micros))


def _float_json(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _value_json(raw: Any) -> Any:
    """One fact/context/constraint value as fastavro read it (logical types off) → JSON form."""
    kind = type(raw)
    if kind is dict:
        if "micros" in raw:
            return _micros_text(raw["micros"])
        try:
            number = Decimal(raw["value"])
        except (InvalidOperation, KeyError, TypeError) as exc:
            raise CodecError(f"malformed decimal value {raw!r}") from exc
        if not number.is_finite():
            raise CodecError(f"decimal value {number} is not finite")
        return str(number)
    if kind is float:
        return _float_json(raw)
    return raw  # str, bool, int, None, list of str


def _values_json(raw: dict[str, Any]) -> dict[str, Any]:
    for value in raw.values():
        kind = type(value)
        if kind is dict or kind is float:
            return {key: _value_json(value) for key, value in raw.items()}
    return raw


_Convert = Callable[[Any], Any]


def _is_value(hint: Any) -> bool:
    return set(typing.get_args(hint)) == set(typing.get_args(_events.Value))


def _json_converter(hint: Any) -> _Convert | None:
    """fastavro value of type ``hint`` (logical types off) → its JSON form; None: as it is."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if _is_value(hint):
            return _value_json
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = _json_converter(inner)
        if optional is None:
            return None
        return lambda value: None if value is None else optional(value)
    if hint is datetime:
        return _micros_text
    if hint is float:
        return _float_json
    if hint is bytes:
        return lambda value: value.hex()
    if hint in (str, int, bool) or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
        return None
    if origin is tuple:
        (item,) = [a for a in typing.get_args(hint) if a is not Ellipsis]
        each = _json_converter(item)
        if each is None:
            return None
        return lambda values: [each(v) for v in values]
    if origin is Mapping or origin is dict:
        _, value_hint = typing.get_args(hint)
        if _is_value(value_hint):
            return _values_json
        convert = _json_converter(value_hint)
        if convert is None:
            return None
        return lambda values: {k: convert(v) for k, v in values.items()}
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        hints = _hints(hint)
        parts = [(f.name, _json_converter(hints[f.name])) for f in dataclasses.fields(hint)]
        if all(convert is None for _, convert in parts):
            return None

        def record(value: dict[str, Any]) -> dict[str, Any]:
            return {
                name: value[name] if convert is None else convert(value[name])
                for name, convert in parts
            }

        return record
    raise TypeError(f"no JSON form for field type {hint}")


def _fast_column(hint: Any, kind: Kind) -> _Convert | None:
    """fastavro value → column value, for the fast path; None: as it is."""
    if kind == "json":
        convert = _json_converter(hint)
        if convert is None:
            return lambda value: None if value is None else _dumps(value)
        return lambda value: None if value is None else _dumps(convert(value))
    return None  # timestamps stay µs integers, enums are their symbols, text and bytes as they are


def _slow_column(kind: Kind) -> _Convert:
    """Python field value → column value, for the reference path."""
    if kind == "timestamp":
        return lambda v: None if v is None else (v - _EPOCH) // timedelta(microseconds=1)
    if kind == "text":
        return lambda v: None if v is None else (v.value if isinstance(v, enum.Enum) else str(v))
    if kind == "json":
        return lambda v: None if v is None else canonical_json(v).decode("utf-8")
    return lambda v: v


def _strip_logical(schema: Any) -> Any:
    """``schema`` (a parsed Avro schema) without logical types: timestamps read as integers."""
    if isinstance(schema, dict):
        return {k: _strip_logical(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_strip_logical(s) for s in schema]
    return schema


_HEADER_LEN: Final = len(MAGIC) + 8


class RowMaker:
    """Makes export rows (tuples in :attr:`TopicFormat.column_names` order) from records.

    Build one per export and reuse it: construction loads the schemas and generates a converter
    per event type. ``row`` is the hot path of ``ledger export``.
    """

    def __init__(self, topics: TopicNames, *, codec: Codec | None = None) -> None:
        self.codec = codec or default_codec()
        self.formats = topic_formats(topics)
        # fingerprint -> (reader schema, {topic: converter}) for the current schemas.
        self._fast: dict[bytes, tuple[str, Any, dict[str, _Convert]]] = {}
        self._slow: dict[tuple[str, type], _Convert] = {}
        schemas = contract_dir("schemas")
        by_name = {
            cls.__name__: (topic, fmt) for topic, fmt in self.formats.items() for cls in fmt.types
        }
        for name in by_name:
            raw = json.loads((schemas / f"{name}.avsc").read_text(encoding="utf-8"))
            cls = next(c for c in _events.EVENT_TYPES if c.__name__ == name)
            header = self.codec.fingerprint_of(cls).to_bytes(8, "little")
            reader = parse_schema(_strip_logical(raw), named_schemas={})
            converters = {
                topic: self._fast_converter(cls, fmt)
                for topic, fmt in self.formats.items()
                if cls in fmt.types
            }
            self._fast[header] = (name, reader, converters)

    # ----------------------------------------------------------------------- generated converters

    @staticmethod
    def _fast_converter(cls: type, fmt: TopicFormat) -> _Convert:
        hints = _hints(cls)
        names: dict[str, Any] = {}
        own = fmt.column_of(cls)
        items = []
        for index, column in enumerate(fmt.columns):
            if column.field not in own or own[column.field] is not column:
                items.append("None")
                continue
            convert = _fast_column(hints[column.field], column.kind)
            item = f"d[{column.field!r}]"
            if convert is not None:
                names[f"_c{index}"] = convert
                item = f"_c{index}({item})"
            items.append(item)
        # One tuple display per record: no per-field loop at run time (as the codec does).
        source = f"def convert(d):\n    return ({', '.join(items)},)\n"
        exec(compile(source, f"<ledger.audit.rows {cls.__name__}>", "exec"), names)
        return typing.cast(_Convert, names["convert"])

    def _slow_converter(self, topic: str, cls: type) -> _Convert:
        found = self._slow.get((topic, cls))
        if found is not None:
            return found
        fmt = self.formats[topic]
        own = {f.name for f in dataclasses.fields(cls)}
        parts = [
            (column.field, _slow_column(column.kind)) if column.field in own else None
            for column in fmt.columns
        ]

        def convert(event: Any) -> tuple[Any, ...]:
            return tuple(
                None if part is None else part[1](getattr(event, part[0])) for part in parts
            )

        self._slow[(topic, cls)] = convert
        return convert

    # ----------------------------------------------------------------------- rows

    def row(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int | None,
        key: bytes | None,
        value: bytes | None,
    ) -> tuple[Any, ...]:
        """The export row of one record (``topic`` is a full topic name of this ledger)."""
        head = (topic, partition, offset, timestamp_ms, key_text(key))
        fmt = self.formats[topic]
        if value is not None and value[:2] == MAGIC:
            fast = self._fast.get(bytes(value[2:_HEADER_LEN]))
            if fast is not None and fast[2].get(topic) is not None:
                name, reader, converters = fast
                stream = BytesIO(value)
                stream.seek(_HEADER_LEN)
                try:
                    record = schemaless_reader(stream, reader, None)
                    if stream.tell() == len(value):
                        return (*head, name, value, *converters[topic](record))
                except Exception:  # malformed: the reference path says what it is
                    pass
        try:
            if value is None:
                raise CodecError("empty record")
            event = self.codec.decode(value)
        except CodecError:
            return (*head, None, value, *([None] * len(fmt.columns)))
        return self.event_row(topic, partition, offset, timestamp_ms, key, value, event)

    def event_row(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int | None,
        key: bytes | None,
        value: bytes | None,
        event: Event,
    ) -> tuple[Any, ...]:
        """The row of an already decoded ``event`` (the reference path)."""
        fmt = self.formats[topic]
        head = (topic, partition, offset, timestamp_ms, key_text(key))
        if type(event) not in fmt.types:  # a ledger event this topic does not carry
            return (*head, type(event).__name__, value, *([None] * len(fmt.columns)))
        fields = self._slow_converter(topic, type(event))(event)
        return (*head, type(event).__name__, value, *fields)

    def table(self, topic: str, rows: list[tuple[Any, ...]]) -> pa.Table:
        """``rows`` of ``topic`` as an Arrow table of the topic's schema."""
        schema = self.formats[topic].schema
        if not rows:
            return schema.empty_table()
        columns = list(zip(*rows, strict=True))
        return pa.Table.from_arrays(
            [pa.array(column, type=f.type) for column, f in zip(columns, schema, strict=True)],
            schema=schema,
        )
