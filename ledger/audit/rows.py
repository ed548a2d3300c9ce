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

- the fast path, for records written with a current schema, or with an older form a governance
  event or command is written in (:meth:`~ledger.codec.Codec.older_forms`; the fields it
  lacks NULL): a function compiled once per schema and topic reads the Avro body straight
  into the row (timestamps as integers, nested fields into their JSON form, then their
  canonical text);
- the reference path, for everything else (records written with another older schema, and
  anything the fast path finds malformed): the codec decodes the event, and each field is rendered from
  the Python value.

A record neither path can decode still gets a row: ``event_type`` and every field NULL, the
bytes kept in ``record``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import struct
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import pyarrow as pa
from fastavro import parse_schema

from ledger.audit.columns import column_name
from ledger.avro import INSTANTS, read_long_tail
from ledger.codec import MAGIC, Codec, default_codec
from ledger.contract import contract_dir
from ledger.core import events as _events
from ledger.core.events import (
    COMMAND_TYPES,
    GRANT_EVENT_TYPES,
    POLICY_EVENT_TYPES,
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
)
from ledger.core.jsonform import canonical_json, format_timestamp, json_float
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
    "policy_events": POLICY_EVENT_TYPES,
    "grant_events": GRANT_EVENT_TYPES,
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
            name = column_name(f.name)  # one rule with the verifier's (ledger.audit.columns)
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


# The C encoder behind _ENCODER, made once: ``JSONEncoder.encode`` makes a new one per call
# (about 1 µs of the ~2 µs a small dict took; rows have up to three such values).
_make_c_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODE: Final[Any] = (
    None
    if _make_c_encoder is None
    else _make_c_encoder(
        None,  # no circular check: values here are trees just read from a record
        _ENCODER.default,
        json.encoder.encode_basestring,  # ensure_ascii=False
        None,  # no indent
        ":",
        ",",
        True,  # sort_keys
        False,  # skipkeys
        False,  # allow_nan
    )
)


def _dumps(value: Any) -> str:
    """``canonical_json`` of a value already in its JSON form (one encoder, built once)."""
    if not value:
        if value == {}:
            return "{}"
        if value == []:
            return "[]"
    if _C_ENCODE is not None:
        return "".join(_C_ENCODE(value, 0))
    return _ENCODER.encode(value)


def _micros_text(micros: int) -> str:
    return format_timestamp(_EPOCH + timedelta(microseconds=micros))


_float_json = json_float  # the JSON form's rule, by the name the generated readers use


_Convert = Callable[[Any], Any]


def _is_value(hint: Any) -> bool:
    return set(typing.get_args(hint)) == set(typing.get_args(_events.Value))


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


# --------------------------------------------------------------------------- compiled decoding

# Each current schema is compiled, once, into one straight-line function reading a record's
# Avro body into its row: varints, strings, unions, arrays and maps inline, no dict per record
# (but for nested values), no converter pass, no file object. For the benchmark's decision
# fastavro took ~30 µs and the converter from its dict ~13 µs more. Nested fields are read
# straight into their JSON form (what ``canonical_json`` renders the Python value as).
# Anything malformed raises; ``row`` then takes the reference path, which says whether the
# record decodes at all.

_unpack_double = struct.Struct("<d").unpack_from
_unpack_float = struct.Struct("<f").unpack_from
_PRIMITIVES: Final = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "string", "bytes"}
)


def _decimal_text(text: str) -> str:
    number = Decimal(text)
    if not number.is_finite():
        raise ValueError(f"decimal value {number} is not finite")
    return str(number)


class _Malformed(Exception):
    """A record body the compiled decoder cannot read (the reference path then decides)."""


class _DecoderSource:
    """Python source reading values of one schema (see the section comment). ``raw`` reads a
    value as fastavro does with logical types off (the typed columns); ``json`` reads a value of
    Python type ``hint`` into its JSON form (the JSON columns)."""

    def __init__(self, named: dict[str, Any]) -> None:
        self.named = named
        self.names: dict[str, Any] = {
            "_tail": read_long_tail,
            "_double": _unpack_double,
            "_float": _unpack_float,
            "_Malformed": _Malformed,
            "_micros_text": _micros_text,
            "_float_json": _float_json,
            "_decimal_text": _decimal_text,
            "_dumps": _dumps,
            "_FIRST_US": INSTANTS[0],
            "_LAST_US": INSTANTS[1],
        }
        self.lines: list[str] = []
        self._count = 0

    def var(self) -> str:
        self._count += 1
        return f"v{self._count}"

    def constant(self, value: Any) -> str:
        self._count += 1
        name = f"_k{self._count}"
        self.names[name] = value
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def resolve(self, schema: Any) -> Any:
        if isinstance(schema, str):
            return schema if schema in _PRIMITIVES else self.resolve(self.named[schema])
        if isinstance(schema, dict):
            kind = schema["type"]
            if not isinstance(kind, str) or kind in _PRIMITIVES:
                return self.resolve(kind)  # {"type": "long"}, {"type": [...]}, {"type": {...}}
            if kind not in ("record", "enum", "array", "map"):
                return self.resolve(kind)  # {"type": "<a named type>"}
        return schema

    # ----------------------------------------------------------------------- primitives

    def long(self, to: str, at: int) -> None:
        self.emit(at, "b = d[p]")
        self.emit(at, "if b < 128:")
        self.emit(at + 1, f"{to} = (b >> 1) ^ -(b & 1)")
        self.emit(at + 1, "p += 1")
        self.emit(at, "else:")
        self.emit(at + 1, f"{to}, p = _tail(d, p + 1, b)")

    def _sized(self, to: str, at: int, *, text: bool) -> None:
        self.long("n", at)
        self.emit(at, "e = p + n")
        self.emit(at, "if n < 0 or e > L:")
        self.emit(at + 1, "raise _Malformed('runs past the end of the record')")
        self.emit(at, f"{to} = d[p:e].decode()" if text else f"{to} = d[p:e]")
        self.emit(at, "p = e")

    def primitive(self, kind: str, to: str, at: int) -> None:
        if kind in ("long", "int"):
            self.long(to, at)
        elif kind == "string":
            self._sized(to, at, text=True)
        elif kind == "bytes":
            self._sized(to, at, text=False)
        elif kind == "null":
            self.emit(at, f"{to} = None")
        elif kind == "boolean":
            self.emit(at, "b = d[p]")
            self.emit(at, "if b > 1:")
            self.emit(at + 1, "raise _Malformed('not a boolean')")
            self.emit(at, f"{to} = b == 1")
            self.emit(at, "p += 1")
        elif kind in ("double", "float"):
            size = 8 if kind == "double" else 4
            self.emit(at, f"if p + {size} > L:")
            self.emit(at + 1, "raise _Malformed('runs past the end of the record')")
            self.emit(at, f"{to} = _{kind}(d, p)[0]")
            self.emit(at, f"p += {size}")
        else:  # pragma: no cover - _PRIMITIVES lists every kind above
            raise TypeError(kind)

    def _count_of(self, to: str, at: int) -> None:
        """An array/map block count (a negative count is followed by the block's byte size)."""
        self.long(to, at)
        self.emit(at, f"if {to} < 0:")
        self.emit(at + 1, f"{to} = -{to}")
        self.long("_", at + 1)
        self.emit(at, f"if {to} > L - p:")  # every item takes at least one byte
        self.emit(at + 1, "raise _Malformed('block count larger than the bytes left')")

    def _index(self, to: str, at: int, count: int) -> None:
        """A union branch or enum symbol index, below ``count``, as its varint byte: indexes up
        to 63 take one byte, ``2 * index`` (an overlong or negative one is left to the
        reference path, which reads any valid varint)."""
        if count > 64:
            raise TypeError(f"{count} union branches or enum symbols")
        self.emit(at, f"{to} = d[p]")
        self.emit(at, "p += 1")

    # ----------------------------------------------------------------------- values

    def raw(self, schema: Any, to: str, at: int) -> None:
        """Read ``schema``'s value into ``to`` as fastavro does (logical types off)."""
        self.value(schema, None, to, at, json=False)

    def instant(self, schema: Any, to: str, at: int) -> None:
        """Read a timestamp column's micros into ``to``: malformed outside what the codec
        reads (:data:`ledger.avro.INSTANTS`), so that such a record is one that does not
        decode here too, not a row no reader can take."""
        self.raw(schema, to, at)
        self.emit(at, f"if {to} is not None and not _FIRST_US <= {to} <= _LAST_US:")
        self.emit(at + 1, "raise _Malformed('an instant outside year 1 to 9999')")

    def value(self, schema: Any, hint: Any, to: str, at: int, *, json: bool) -> None:
        schema = self.resolve(schema)
        origin = typing.get_origin(hint)
        if json and origin in (typing.Union, types.UnionType):
            if _is_value(hint):
                self._fact_value(schema, to, at)
                return
            (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
            hint = inner
        convert = None
        if json:
            if hint is datetime:
                convert = "_micros_text"
            elif hint is float:
                convert = "_float_json"
            elif hint is bytes:
                convert = "bytes.hex"
        if isinstance(schema, list):
            self._union(schema, hint, to, at, json=json)
            return
        if isinstance(schema, str):
            self.primitive(schema, to, at)
        else:
            self._complex(schema, hint, to, at, json=json)
        if convert is not None:
            self.emit(at, f"{to} = {convert}({to})")

    def _union(self, branches: list[Any], hint: Any, to: str, at: int, *, json: bool) -> None:
        index = self.var()
        self._index(index, at, len(branches))
        for number, branch in enumerate(branches):
            self.emit(at, f"{'if' if number == 0 else 'elif'} {index} == {2 * number}:")
            if self.resolve(branch) == "null":
                self.emit(at + 1, f"{to} = None")
            else:
                self.value(branch, hint, to, at + 1, json=json)
        self.emit(at, "else:")
        self.emit(at + 1, "raise _Malformed('no such union branch')")

    def _complex(self, schema: dict[str, Any], hint: Any, to: str, at: int, *, json: bool) -> None:
        kind = schema["type"]
        origin = typing.get_origin(hint)
        if kind == "enum":
            index, symbols = self.var(), tuple(schema["symbols"])
            self._index(index, at, len(symbols))
            self.emit(at, f"if {index} & 1:")
            self.emit(at + 1, "raise _Malformed('negative enum index')")
            self.emit(at, f"{to} = {self.constant(symbols)}[{index} >> 1]")
        elif kind in ("array", "map"):
            item_hint: Any = None
            if json and kind == "array":
                if origin is not tuple:
                    raise TypeError(f"{hint} is not an array")
                (item_hint,) = [a for a in typing.get_args(hint) if a is not Ellipsis]
            elif json:
                if origin not in (Mapping, dict):
                    raise TypeError(f"{hint} is not a map")
                _, item_hint = typing.get_args(hint)
            count, item = self.var(), self.var()
            self.emit(at, f"{to} = {'[]' if kind == 'array' else '{}'}")
            self.emit(at, "while True:")
            self._count_of(count, at + 1)
            self.emit(at + 1, f"if not {count}:")
            self.emit(at + 2, "break")
            self.emit(at + 1, f"for _ in range({count}):")
            if kind == "array":
                self.value(schema["items"], item_hint, item, at + 2, json=json)
                self.emit(at + 2, f"{to}.append({item})")
            else:
                key = self.var()
                self.primitive("string", key, at + 2)
                self.value(schema["values"], item_hint, item, at + 2, json=json)
                self.emit(at + 2, f"{to}[{key}] = {item}")
        elif kind == "record":
            hints: dict[str, Any] = {}
            if json:
                if not (dataclasses.is_dataclass(hint) and isinstance(hint, type)):
                    raise TypeError(f"{hint} is not a record")
                hints = _hints(hint)
            fields = []
            for f in schema["fields"]:
                field = self.var()
                self.value(f["type"], hints.get(f["name"]), field, at, json=json)
                fields.append(f"{f['name']!r}: {field}")
            self.emit(at, f"{to} = {{{', '.join(fields)}}}")
        else:
            raise TypeError(f"no compiled reader for Avro type {kind!r}")

    def _fact_value(self, schema: Any, to: str, at: int) -> None:
        """The fact value union (:data:`ledger.core.events.Value`), each branch in its JSON
        form: decimals as their string, instants as their text, non-finite floats as text."""
        index = self.var()
        self._index(index, at, len(schema))
        for number, branch in enumerate(schema):
            resolved = self.resolve(branch)
            self.emit(at, f"{'if' if number == 0 else 'elif'} {index} == {2 * number}:")
            if isinstance(resolved, dict) and resolved["type"] == "record":
                names = [f["name"] for f in resolved["fields"]]
                if names == ["micros"]:
                    self.long(to, at + 1)
                    self.emit(at + 1, f"{to} = _micros_text({to})")
                elif names == ["value"]:
                    self.primitive("string", to, at + 1)
                    self.emit(at + 1, f"{to} = _decimal_text({to})")
                else:
                    raise TypeError(f"unknown fact value record {resolved.get('name')}")
            elif resolved == "double":
                self.primitive("double", to, at + 1)
                self.emit(at + 1, f"{to} = _float_json({to})")
            else:
                self.raw(resolved, to, at + 1)
        self.emit(at, "else:")
        self.emit(at + 1, "raise _Malformed('no such fact value branch')")


_Decode = Callable[[bytes, int, tuple[Any, ...]], tuple[Any, ...]]


def _compile_decoder(
    schema: dict[str, Any], named: dict[str, Any], cls: type, fmt: TopicFormat
) -> tuple[_Decode, str]:
    """``decode(data, pos, head)``: the row of a ``cls`` record whose body starts at ``pos``
    and takes the rest of ``data``: ``head`` (the five Kafka columns), the event type, the
    record, then the event columns of ``fmt`` (NULL for those of other event types). Raises on
    anything malformed. Returns the function and its source (for whoever debugs it)."""
    source = _DecoderSource(named)
    hints = _hints(cls)
    own = fmt.column_of(cls)
    source.names["_name"] = cls.__name__
    by_field: dict[str, str] = {}
    for f in schema["fields"]:
        column = own[f["name"]]
        to = by_field[f["name"]] = source.var()
        if column.kind == "json":
            source.value(f["type"], hints[f["name"]], to, 1, json=True)
            kind = source.resolve(f["type"])
            empty = {"map": "'{}'", "array": "'[]'"}.get(
                kind.get("type", "") if isinstance(kind, dict) else ""
            )
            if empty is not None:  # never null, and often empty: no call for an empty one
                source.emit(1, f"{to} = _dumps({to}) if {to} else {empty}")
            else:
                source.emit(1, f"if {to} is not None:")
                source.emit(2, f"{to} = _dumps({to})")
        elif column.kind == "timestamp":
            source.instant(f["type"], to, 1)
        else:
            source.raw(f["type"], to, 1)
    source.emit(1, "if p != L:")
    source.emit(2, "raise _Malformed('bytes after the body')")
    items = [  # a field an older schema lacks (added since): NULL
        by_field[c.field] if c.field in by_field and own[c.field] is c else "None"
        for c in fmt.columns
    ]
    source.emit(1, f"return (*h, _name, d, {', '.join(items)})")
    text = "def decode(d, p, h):\n    L = len(d)\n" + "\n".join(source.lines) + "\n"
    exec(compile(text, f"<ledger.audit.rows decode {cls.__name__}>", "exec"), source.names)
    return typing.cast(_Decode, source.names["decode"]), text


# --------------------------------------------------------------------------- the native decoder

# ledger._avrovm (built from _avrovm.pyx when the package is installed with a C compiler)
# runs the same reading as the generated decoders above, in C: a program of nodes per event type
# and topic, made here from the same schema walk. Without it, the generated decoders are used.
_vm: types.ModuleType | None
try:
    import ledger._avrovm as _vm
except ImportError:  # pragma: no cover - installed without a C compiler
    _vm = None

NATIVE: Final = _vm is not None
"""Whether the export's row decoder in C is installed (else rows are read in Python)."""


class _Program:
    """The native decoder's nodes for values of one schema: the reading of
    :class:`_DecoderSource`, as a tree instead of source lines."""

    def __init__(self, named: dict[str, Any]) -> None:
        self.source = _DecoderSource(named)  # for resolve and the conversions' functions
        self.kinds: dict[str, int] = _vm.KINDS if _vm is not None else {}

    def node(self, kind: str, kids: Iterable[Any] = (), **extra: Any) -> Any:
        assert _vm is not None
        return _vm.Node(self.kinds[kind], kids, **extra)

    def value(self, schema: Any, hint: Any, *, json: bool) -> Any:
        schema = self.source.resolve(schema)
        origin = typing.get_origin(hint)
        if json and origin in (typing.Union, types.UnionType):
            if _is_value(hint):
                return self._fact_value(schema)
            (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
            hint = inner
        convert: Callable[[Any], Any] | None = None
        if json:
            if hint is datetime:
                convert = _micros_text
            elif hint is float:
                convert = _float_json
            elif hint is bytes:
                convert = bytes.hex
        if isinstance(schema, list):
            return self._union(schema, hint, json=json)
        if isinstance(schema, str):
            made = self._primitive(schema)
        else:
            made = self._complex(schema, hint, json=json)
        return made if convert is None else self.node("convert", [made], arg=convert)

    def instant(self, schema: Any) -> Any:
        """A timestamp column's micros, malformed outside what the codec reads (see
        :meth:`_DecoderSource.instant`)."""
        schema = self.source.resolve(schema)
        if isinstance(schema, list):
            return self.node(
                "union",
                [
                    self.node("null") if self.source.resolve(b) == "null" else self.instant(b)
                    for b in schema
                ],
            )
        if schema != "long":  # pragma: no cover - timestamp-micros is a long
            raise TypeError(f"a timestamp column of Avro type {schema!r}")
        return self.node("instant")

    def _primitive(self, kind: str) -> Any:
        if kind not in _PRIMITIVES:  # pragma: no cover - resolve gives primitives by name
            raise TypeError(kind)
        return self.node("long" if kind == "int" else kind)

    def _union(self, branches: list[Any], hint: Any, *, json: bool) -> Any:
        if len(branches) > 64:
            raise TypeError(f"{len(branches)} union branches")
        return self.node(
            "union",
            [
                self.node("null")
                if self.source.resolve(branch) == "null"
                else self.value(branch, hint, json=json)
                for branch in branches
            ],
        )

    def _complex(self, schema: dict[str, Any], hint: Any, *, json: bool) -> Any:
        kind = schema["type"]
        origin = typing.get_origin(hint)
        if kind == "enum":
            if len(schema["symbols"]) > 64:
                raise TypeError(f"{len(schema['symbols'])} enum symbols")
            return self.node("enum", arg=tuple(schema["symbols"]))
        if kind in ("array", "map"):
            item_hint: Any = None
            if json and kind == "array":
                if origin is not tuple:
                    raise TypeError(f"{hint} is not an array")
                (item_hint,) = [a for a in typing.get_args(hint) if a is not Ellipsis]
            elif json:
                if origin not in (Mapping, dict):
                    raise TypeError(f"{hint} is not a map")
                _, item_hint = typing.get_args(hint)
            items = schema["items"] if kind == "array" else schema["values"]
            return self.node(kind, [self.value(items, item_hint, json=json)])
        if kind == "record":
            hints: dict[str, Any] = {}
            if json:
                if not (dataclasses.is_dataclass(hint) and isinstance(hint, type)):
                    raise TypeError(f"{hint} is not a record")
                hints = _hints(hint)
            fields = schema["fields"]
            return self.node(
                "record",
                [self.value(f["type"], hints.get(f["name"]), json=json) for f in fields],
                keys=[f["name"] for f in fields],
            )
        raise TypeError(f"no compiled reader for Avro type {kind!r}")

    def _fact_value(self, schema: Any) -> Any:
        """The fact value union, each branch in its JSON form (see ``_DecoderSource``)."""
        if len(schema) > 64:
            raise TypeError(f"{len(schema)} union branches")
        branches = []
        for branch in schema:
            resolved = self.source.resolve(branch)
            if isinstance(resolved, dict) and resolved["type"] == "record":
                names = [f["name"] for f in resolved["fields"]]
                if names == ["micros"]:
                    branches.append(self.node("convert", [self.node("long")], arg=_micros_text))
                elif names == ["value"]:
                    branches.append(self.node("convert", [self.node("string")], arg=_decimal_text))
                else:
                    raise TypeError(f"unknown fact value record {resolved.get('name')}")
            elif resolved == "double":
                branches.append(self.node("convert", [self.node("double")], arg=_float_json))
            else:
                branches.append(self.value(resolved, None, json=False))
        return self.node("union", branches)


def _python_decoder(
    schema: dict[str, Any], named: dict[str, Any], cls: type, fmt: TopicFormat
) -> _Decode:
    return _compile_decoder(schema, named, cls, fmt)[0]


def _native_decoder(
    schema: dict[str, Any], named: dict[str, Any], cls: type, fmt: TopicFormat
) -> _Decode:
    """The native decoder of ``cls`` records on the topic of ``fmt``: the same rows as
    :func:`_compile_decoder`'s."""
    assert _vm is not None
    program = _Program(named)
    hints = _hints(cls)
    own = fmt.column_of(cls)
    fields = []
    for f in schema["fields"]:
        column = own[f["name"]]
        if column.kind == "json":
            value = program.value(f["type"], hints[f["name"]], json=True)
            kind = program.source.resolve(f["type"])
            empty = {"map": "{}", "array": "[]"}.get(
                kind.get("type", "") if isinstance(kind, dict) else ""
            )
            fields.append(program.node("dumps", [value], arg=_dumps, empty=empty))
        elif column.kind == "timestamp":
            fields.append(program.instant(f["type"]))
        else:
            fields.append(program.value(f["type"], None, json=False))
    index = {f["name"]: i for i, f in enumerate(schema["fields"])}
    columns = [  # a field an older schema lacks (added since): NULL
        index[c.field] if c.field in index and own[c.field] is c else -1 for c in fmt.columns
    ]
    row = _vm.Row(cls.__name__, fields, columns)
    return typing.cast(_Decode, row.decode)


_HEADER_LEN: Final = len(MAGIC) + 8


class RowMaker:
    """Makes export rows (tuples in :attr:`TopicFormat.column_names` order) from records.

    Build one per export and reuse it: construction loads the schemas and generates a converter
    per event type. ``row`` is the hot path of ``ledger export``.
    """

    def __init__(
        self, topics: TopicNames, *, codec: Codec | None = None, native: bool | None = None
    ) -> None:
        if native and not NATIVE:
            raise RuntimeError("the native row decoder (ledger._avrovm) is not installed")
        self.native = NATIVE if native is None else native
        """Whether current records are read by the decoder in C (else by generated Python)."""
        self.codec = codec or default_codec()
        self.formats = topic_formats(topics)
        # fingerprint -> {topic: compiled row decoder} for the current schemas.
        self._fast: dict[bytes, dict[str, _Decode]] = {}
        self._slow: dict[tuple[str, type], _Convert] = {}
        schemas = contract_dir("schemas")
        by_name = {
            cls.__name__: (topic, fmt) for topic, fmt in self.formats.items() for cls in fmt.types
        }
        # The current schemas, and the older forms governance events and commands are written
        # in (Codec.older_forms: nearly every governance record since 2026-12-07).
        forms = [
            (
                cls,
                self.codec.fingerprint_of(cls).to_bytes(8, "little"),
                schemas / f"{cls.__name__}.avsc",
            )
            for cls in _events.EVENT_TYPES
            if cls.__name__ in by_name
        ]
        forms += [form for form in self.codec.older_forms() if form[0].__name__ in by_name]
        make = _native_decoder if self.native else _python_decoder
        for cls, header, path in forms:
            raw = json.loads(path.read_text(encoding="utf-8"))
            named: dict[str, Any] = {}
            parsed = typing.cast(
                dict[str, Any], parse_schema(_strip_logical(raw), named_schemas=named)
            )
            self._fast[header] = {
                topic: make(parsed, named, cls, fmt)
                for topic, fmt in self.formats.items()
                if cls in fmt.types
            }

    # ----------------------------------------------------------------------- the reference path

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
        if value is not None and value[:2] == MAGIC:
            fast = self._fast.get(bytes(value[2:_HEADER_LEN]))
            if fast is not None:
                decode = fast.get(topic)
                if decode is not None:
                    try:
                        return decode(value, _HEADER_LEN, head)
                    except Exception:  # malformed: the reference path says what it is
                        pass
        fmt = self.formats[topic]
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
