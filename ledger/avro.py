"""Compiled Avro binary encoders and decoders between the ledger's event types and bytes.

:func:`compile_event` reads one parsed record schema together with the dataclass that mirrors
it and generates two straight-line Python functions: ``encode(event, out)`` appends the Avro
binary body of ``event`` to a ``bytearray``; ``decode(data, pos)`` reads a body starting at
``pos`` and returns ``(event, end)``. No intermediate dicts, no walk over the schema or the type
hints per record: the schema is interpreted once, when the codec is built. The bytes are exactly
what a generic Avro writer produces for the same schema (a test holds them to fastavro's), so
any Avro reader reads them.

Only what the ledger's schemas use is supported (records, strings, longs and ints, booleans,
doubles, bytes, enums, ``timestamp-micros``, ``null`` unions, arrays, maps, and the fact value
union of :data:`ledger.core.events.Value`); anything else is a ``TypeError`` when compiling, so
a schema change that needs more is caught by the codec tests, not at run time.

Decoding reads the writer's schema when it is the current one. A record written with an older
schema needs Avro schema resolution, which the codec leaves to fastavro (that path is rare).
"""

from __future__ import annotations

import dataclasses
import enum
import struct
import sys
import types
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from ledger.core.builders import builder, field_names

__all__ = [
    "CompiledEvent",
    "compile_event",
    "native_reader",
    "native_writer",
    "write_long",
    "instant_micros",
    "read_long_tail",
    "VALUE_BRANCHES",
    "INSTANTS",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
INSTANTS: Final = (
    (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _MICRO,
    (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _MICRO,
)
"""The first and last ``timestamp-micros`` the codec reads (a datetime's range: year 1 to 9999):
a record holding another instant does not decode, and the export's rows agree
(:mod:`ledger.audit.rows`)."""
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_pack_double = struct.Struct("<d").pack
_unpack_double = struct.Struct("<d").unpack_from

_NAMESPACE = "ledger.v1"
VALUE_BRANCHES: tuple[Any, ...] = (
    "null",
    "boolean",
    "long",
    "double",
    "string",
    f"{_NAMESPACE}.DecimalValue",
    f"{_NAMESPACE}.TimestampValue",
    "array<string>",
)
"""The fact value union's branches, in schema order (see :mod:`ledger.codec`)."""


# --------------------------------------------------------------------------- varints


def _zigzag_slow(n: int) -> bytes:
    if not _LONG_MIN <= n <= _LONG_MAX:
        raise OverflowError(f"{n} does not fit a 64-bit long")
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_SMALL = 1 << 12
# Zigzag varints of 0 .. _SMALL-1: string lengths, counts, enum indexes, small longs.
_ZZ: tuple[bytes, ...] = tuple(_zigzag_slow(n) for n in range(_SMALL))


def write_long(n: int) -> bytes:
    """The zigzag varint of ``n`` (an Avro ``long``); ``OverflowError`` outside 64 bits."""
    if 0 <= n < _SMALL:
        return _ZZ[n]
    if type(n) is not int:
        n = n.__index__()  # bool / IntEnum pass as ints; floats and strings raise TypeError
    return _zigzag_slow(n)


def _write_int(n: int) -> bytes:
    if 0 <= n < _SMALL:
        return _ZZ[n]
    if not _INT_MIN <= n <= _INT_MAX:
        raise OverflowError(f"{n} does not fit a 32-bit int")
    return write_long(n)


def read_long_tail(data: bytes, pos: int, first: int) -> tuple[int, int]:
    """The rest of a varint whose first byte ``first`` (continuation bit set) was at ``pos-1``."""
    n = first & 0x7F
    shift = 7
    while True:
        b = data[pos]
        pos += 1
        if shift == 63 and b > 1:  # the tenth byte holds the 64th bit, nothing more
            raise ValueError("varint larger than 64 bits")
        n |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")
    return (n >> 1) ^ -(n & 1), pos


def _read_count(data: bytes, pos: int) -> tuple[int, int]:
    """An array/map block count (a negative count is followed by the block's byte size)."""
    b = data[pos]
    pos += 1
    if b < 0x80:
        n = (b >> 1) ^ -(b & 1)
    else:
        n, pos = read_long_tail(data, pos, b)
    if n < 0:
        n = -n
        b = data[pos]
        pos += 1
        if b >= 0x80:
            _, pos = read_long_tail(data, pos, b)
    if n > len(data) - pos:  # every item takes at least one byte
        raise ValueError(f"block count {n} is larger than the bytes left")
    return n, pos


_FIRST_MICROS: Final = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _MICRO
_LAST_MICROS: Final = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _MICRO


def _timestamp(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def instant_micros(value: datetime) -> int:
    """An aware datetime as microseconds since the epoch; ``OverflowError`` for an instant no
    reader can hold as a datetime (outside the years 1-9999 in UTC), ``TypeError`` for a naive
    one."""
    # Subtracting the aware epoch from a naive datetime raises TypeError: the naive check.
    micros = (value - _EPOCH) // _MICRO
    if not _FIRST_MICROS <= micros <= _LAST_MICROS:
        # 9999-12-31T23:59-05:00 is past the last UTC datetime: written, no reader decodes it
        # (a red team's fact: the evaluator dead-lettered it, and the SDK's caller timed out).
        raise OverflowError(f"{value.isoformat()} is outside the years 1-9999 in UTC")
    return micros


# --------------------------------------------------------------------------- fact values


def _write_value(out: bytearray, value: Any) -> None:
    """One :data:`~ledger.core.events.Value` as its union branch (the codec's branch rules)."""
    kind = type(value)
    if kind is str:
        b = value.encode()
        out += b"\x08"
        out += write_long(len(b))
        out += b
    elif kind is bool:
        out += b"\x02\x01" if value else b"\x02\x00"
    elif kind is int:
        out += b"\x04"
        out += write_long(value)
    elif kind is float:
        out += b"\x06"
        out += _pack_double(value)
    elif value is None:
        out += b"\x00"
    elif kind is Decimal:
        if not value.is_finite():
            raise ValueError(f"decimal value {value} is not finite")
        b = str(value).encode()
        out += b"\x0a"
        out += write_long(len(b))
        out += b
    elif kind is datetime:
        out += b"\x0c"
        out += write_long(instant_micros(value))
    elif kind is tuple or kind is list:
        out += b"\x0e"
        if value:
            out += write_long(len(value))
            for item in value:
                if type(item) is not str:
                    raise TypeError("list values may only hold strings")
                b = item.encode()
                out += write_long(len(b))
                out += b
        out += b"\x00"
    else:
        # Subclasses (a StrEnum member, an IntEnum, a Decimal or datetime subclass) and
        # unsupported types: the codec's general rule decides, and explains refusals.
        raise _Fallback


class _Fallback(Exception):
    """A value the fast path leaves to the codec's general conversion."""


def _read_string(data: bytes, pos: int) -> tuple[str, int]:
    b = data[pos]
    pos += 1
    if b < 0x80:
        n = (b >> 1) ^ -(b & 1)
    else:
        n, pos = read_long_tail(data, pos, b)
    end = pos + n
    if n < 0 or end > len(data):
        raise EOFError("string runs past the end of the record")
    return data[pos:end].decode(), end


def _read_value(data: bytes, pos: int) -> tuple[Any, int]:
    branch = data[pos]
    pos += 1
    if branch == 8:
        return _read_string(data, pos)
    if branch == 4:
        b = data[pos]
        if b < 0x80:
            return (b >> 1) ^ -(b & 1), pos + 1
        return read_long_tail(data, pos + 1, b)
    if branch == 2:
        return data[pos] != 0, pos + 1
    if branch == 0:
        return None, pos
    if branch == 10:
        text, pos = _read_string(data, pos)
        number = Decimal(text)
        if not number.is_finite():
            raise ValueError(f"decimal value {number} is not finite")
        return number, pos
    if branch == 6:
        if pos + 8 > len(data):
            raise EOFError("double runs past the end of the record")
        return _unpack_double(data, pos)[0], pos + 8
    if branch == 12:
        b = data[pos]
        if b < 0x80:
            return _timestamp((b >> 1) ^ -(b & 1)), pos + 1
        micros, pos = read_long_tail(data, pos + 1, b)
        return _timestamp(micros), pos
    if branch == 14:
        items: list[str] = []
        while True:
            count, pos = _read_count(data, pos)
            if not count:
                return tuple(items), pos
            for _ in range(count):
                item, pos = _read_string(data, pos)
                items.append(item)
    raise ValueError(f"fact value union branch {branch} does not exist")


# --------------------------------------------------------------------------- the compiler


@dataclasses.dataclass(frozen=True, slots=True)
class CompiledEvent:
    """The compiled body encoder and decoder of one event type (see the module docstring)."""

    encode: Callable[[Any, bytearray], None]
    decode: Callable[[bytes, int], tuple[Any, int]]
    source: str  # the generated code, for whoever debugs it


def _branch_name(schema: Any) -> Any:
    if isinstance(schema, dict):
        if schema.get("type") == "array" and schema.get("items") == "string":
            return "array<string>"
        return schema.get("name", schema.get("type"))
    return schema


def _is_value_union(schema: Any) -> bool:
    return isinstance(schema, list) and tuple(map(_branch_name, schema)) == VALUE_BRANCHES


def _optional_of(hint: Any) -> Any | None:
    """``X`` for a hint ``X | None`` (``None`` for anything else)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0]
    return None


class _Compiler:
    def __init__(
        self, hints_of: Callable[[type], dict[str, Any]], *, older: type | None = None
    ) -> None:
        self._hints_of = hints_of
        self._older = older  # a class read from an older schema lacking some of its fields
        self._named: dict[str, Any] = {}  # full name -> schema, as parse_schema defines them
        self.globals: dict[str, Any] = {
            "_ZZ": _ZZ,
            "_SMALL": _SMALL,
            "_wl": write_long,
            "_wi": _write_int,
            "_micros": instant_micros,
            "_ts": _timestamp,
            "_pd": _pack_double,
            "_ud": _unpack_double,
            "_tail": read_long_tail,
            "_count": _read_count,
            "_rs": _read_string,
            "_wv": _write_value,
            "_rv": _read_value,
            "_Fallback": _Fallback,
            "EOFError": EOFError,
        }
        self.functions: list[str] = []
        self._done: dict[type, str] = {}
        self._n = 0

    def _name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def _resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema in self._named:
            return self._named[schema]
        if isinstance(schema, dict) and schema.get("type") in ("record", "enum", "fixed"):
            self._named.setdefault(schema["name"], schema)
        return schema

    def record(self, schema: dict[str, Any], cls: type) -> str:
        """Generate the encoder and decoder of ``cls``; returns their name suffix."""
        schema = self._resolve(schema)
        if cls in self._done:
            return self._done[cls]
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls!r} is not a dataclass")
        suffix = cls.__name__
        self._done[cls] = suffix
        self.globals[f"_cls_{suffix}"] = cls
        hints = self._hints_of(cls)
        fields = {f.name for f in dataclasses.fields(cls)}
        schema_fields = [f["name"] for f in schema["fields"]]
        missing: list[str] = []
        if cls is self._older and set(schema_fields) < fields:
            # An older schema of the class: the fields added since take their default, which
            # must be None (the fields a release adds are optional).
            missing = [f.name for f in dataclasses.fields(cls) if f.name not in schema_fields]
            if any(f.default is not None for f in dataclasses.fields(cls) if f.name in missing):
                raise TypeError(
                    f"{cls.__name__}: a field added since {schema['name']} has no None default"
                )
        elif set(schema_fields) != fields:
            raise TypeError(f"schema {schema['name']} and {cls.__name__} have different fields")
        enc = [f"def _enc_{suffix}(o, out):"]
        dec = [f"def _dec_{suffix}(d, p):"]
        args = []
        for f in schema["fields"]:
            name = f["name"]
            var = f"f_{name}"
            enc.append(f"    v = o.{name}")
            self._encode(f["type"], hints[name], "v", enc, 1)
            self._decode(f["type"], hints[name], var, dec, 1)
            args.append(f"{name}={var}")
        for name in missing:
            dec.append(f"    f_{name} = None")
            args.append(f"{name}=f_{name}")
        try:  # straight into the slots, no __init__ (ledger.core.builders)
            self.globals[f"_new_{suffix}"] = builder(cls)
            ordered = ", ".join(f"f_{name}" for name in field_names(cls))
            dec.append(f"    return _new_{suffix}({ordered}), p")
        except TypeError:  # not a frozen, slotted dataclass: its own __init__
            dec.append(f"    return _cls_{suffix}({', '.join(args)}), p")
        self.functions.append("\n".join(enc))
        self.functions.append("\n".join(dec))
        return suffix

    # ------------------------------------------------------------------ encode

    def _encode(self, schema: Any, hint: Any, v: str, lines: list[str], depth: int) -> None:
        pad = "    " * depth
        schema = self._resolve(schema)
        if isinstance(schema, list):
            inner = _optional_of(hint)
            if len(schema) == 2 and schema[0] == "null" and inner is not None:
                lines.append(f"{pad}if {v} is None:")
                lines.append(f"{pad}    out += b'\\x00'")
                lines.append(f"{pad}else:")
                lines.append(f"{pad}    out += b'\\x02'")
                self._encode(schema[1], inner, v, lines, depth + 1)
                return
            raise TypeError(f"unsupported union {schema} for {hint}")
        kind = schema if isinstance(schema, str) else schema["type"]
        logical = schema.get("logicalType") if isinstance(schema, dict) else None
        if kind == "string":
            b = self._name("b")
            lines.append(f"{pad}{b} = {v}.encode()")
            lines.append(f"{pad}out += _ZZ[len({b})] if len({b}) < _SMALL else _wl(len({b}))")
            lines.append(f"{pad}out += {b}")
        elif kind == "bytes":
            lines.append(f"{pad}out += _wl(len({v}))")
            lines.append(f"{pad}out += {v}")
        elif kind == "long" and logical == "timestamp-micros":
            lines.append(f"{pad}out += _wl(_micros({v}))")
        elif kind == "long":
            lines.append(f"{pad}out += _wl({v})")
        elif kind == "int":
            lines.append(f"{pad}out += _wi({v})")
        elif kind == "boolean":
            lines.append(f"{pad}out += b'\\x01' if {v} else b'\\x00'")
        elif kind == "double":
            lines.append(f"{pad}out += _pd({v})")
        elif kind == "enum":
            if not (isinstance(hint, type) and issubclass(hint, enum.Enum)):
                raise TypeError(f"enum {schema['name']} needs an Enum field, not {hint}")
            table = self._name("_enum")
            self.globals[table] = {
                symbol: _ZZ[index] for index, symbol in enumerate(schema["symbols"])
            }
            lines.append(f"{pad}out += {table}[{v}]")
        elif kind == "array":
            item_hint = _tuple_item(hint)
            x = self._name("x")
            lines.append(f"{pad}if {v}:")
            lines.append(f"{pad}    out += _wl(len({v}))")
            lines.append(f"{pad}    for {x} in {v}:")
            self._encode(schema["items"], item_hint, x, lines, depth + 2)
            lines.append(f"{pad}out += b'\\x00'")
        elif kind == "map":
            value_hint = _mapping_value(hint)
            k, x, b = self._name("k"), self._name("x"), self._name("b")
            lines.append(f"{pad}if {v}:")
            lines.append(f"{pad}    out += _wl(len({v}))")
            lines.append(f"{pad}    for {k}, {x} in {v}.items():")
            lines.append(f"{pad}        {b} = {k}.encode()")
            lines.append(f"{pad}        out += _wl(len({b}))")
            lines.append(f"{pad}        out += {b}")
            if _is_value_union(schema["values"]):
                lines.append(f"{pad}        _wv(out, {x})")
            else:
                self._encode(schema["values"], value_hint, x, lines, depth + 2)
            lines.append(f"{pad}out += b'\\x00'")
        elif kind == "record":
            if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
                raise TypeError(f"record {schema['name']} needs a dataclass field, not {hint}")
            suffix = self.record(schema, hint)
            lines.append(f"{pad}_enc_{suffix}({v}, out)")
        else:
            raise TypeError(f"unsupported Avro type {schema!r}")

    # ------------------------------------------------------------------ decode

    def _varint(self, target: str, lines: list[str], pad: str) -> None:
        c = self._name("c")
        lines.append(f"{pad}{c} = d[p]")
        lines.append(f"{pad}if {c} < 0x80:")
        lines.append(f"{pad}    {target} = ({c} >> 1) ^ -({c} & 1); p += 1")
        lines.append(f"{pad}else:")
        lines.append(f"{pad}    {target}, p = _tail(d, p + 1, {c})")

    def _decode(self, schema: Any, hint: Any, target: str, lines: list[str], depth: int) -> None:
        pad = "    " * depth
        schema = self._resolve(schema)
        if isinstance(schema, list):
            inner = _optional_of(hint)
            if len(schema) == 2 and schema[0] == "null" and inner is not None:
                # The branch index is a varint like any other: written in more bytes than it
                # needs (``80 00`` for 0) it is read as the C reader and fastavro read it (a
                # fuzzer: this reader alone refused it, so a record was dead-lettered or
                # decided depending on which reader a processor had).
                u = self._name("u")
                self._varint(u, lines, pad)
                lines.append(f"{pad}if {u} == 0:")
                lines.append(f"{pad}    {target} = None")
                lines.append(f"{pad}elif {u} == 1:")
                self._decode(schema[1], inner, target, lines, depth + 1)
                lines.append(f"{pad}else:")
                lines.append(f"{pad}    raise ValueError('union branch out of range')")
                return
            raise TypeError(f"unsupported union {schema} for {hint}")
        kind = schema if isinstance(schema, str) else schema["type"]
        logical = schema.get("logicalType") if isinstance(schema, dict) else None
        if kind == "string":
            n = self._name("n")
            self._varint(n, lines, pad)
            # A length past the end shows later (an IndexError, or an end past the data).
            lines.append(f"{pad}if {n} < 0: raise ValueError('negative length')")
            lines.append(f"{pad}{target} = d[p:p + {n}].decode(); p += {n}")
        elif kind == "bytes":
            n = self._name("n")
            self._varint(n, lines, pad)
            lines.append(f"{pad}if {n} < 0: raise ValueError('negative length')")
            lines.append(f"{pad}{target} = d[p:p + {n}]; p += {n}")
        elif kind == "long" and logical == "timestamp-micros":
            n = self._name("n")
            self._varint(n, lines, pad)
            lines.append(f"{pad}{target} = _ts({n})")
        elif kind in ("long", "int"):
            self._varint(target, lines, pad)
        elif kind == "boolean":
            lines.append(f"{pad}{target} = d[p] != 0; p += 1")
        elif kind == "double":
            lines.append(f"{pad}if p + 8 > len(d): raise EOFError('double')")
            lines.append(f"{pad}{target} = _ud(d, p)[0]; p += 8")
        elif kind == "enum":
            table = self._name("_sym")
            members = {member.value: member for member in hint}
            self.globals[table] = tuple(members[symbol] for symbol in schema["symbols"])
            n = self._name("n")
            self._varint(n, lines, pad)
            last = len(schema["symbols"])
            lines.append(
                f"{pad}if not 0 <= {n} < {last}: raise ValueError('enum index out of range')"
            )
            lines.append(f"{pad}{target} = {table}[{n}]")
        elif kind == "array":
            item_hint = _tuple_item(hint)
            acc, count, i, x = self._name("a"), self._name("n"), self._name("i"), self._name("x")
            lines.append(f"{pad}{acc} = []")
            lines.append(f"{pad}while True:")
            lines.append(f"{pad}    {count}, p = _count(d, p)")
            lines.append(f"{pad}    if not {count}: break")
            lines.append(f"{pad}    for {i} in range({count}):")
            self._decode(schema["items"], item_hint, x, lines, depth + 2)
            lines.append(f"{pad}        {acc}.append({x})")
            lines.append(f"{pad}{target} = tuple({acc})")
        elif kind == "map":
            value_hint = _mapping_value(hint)
            acc, count, i = self._name("m"), self._name("n"), self._name("i")
            k, x = self._name("k"), self._name("x")
            lines.append(f"{pad}{acc} = {{}}")
            lines.append(f"{pad}while True:")
            lines.append(f"{pad}    {count}, p = _count(d, p)")
            lines.append(f"{pad}    if not {count}: break")
            lines.append(f"{pad}    for {i} in range({count}):")
            lines.append(f"{pad}        {k}, p = _rs(d, p)")
            if _is_value_union(schema["values"]):
                lines.append(f"{pad}        {acc}[{k}], p = _rv(d, p)")
            else:
                self._decode(schema["values"], value_hint, x, lines, depth + 2)
                lines.append(f"{pad}        {acc}[{k}] = {x}")
            lines.append(f"{pad}{target} = {acc}")
        elif kind == "record":
            suffix = self.record(schema, hint)
            lines.append(f"{pad}{target}, p = _dec_{suffix}(d, p)")
        else:
            raise TypeError(f"unsupported Avro type {schema!r}")


def _tuple_item(hint: Any) -> Any:
    if typing.get_origin(hint) is not tuple:
        raise TypeError(f"an Avro array needs a tuple[X, ...] field, not {hint}")
    return typing.get_args(hint)[0]


def _mapping_value(hint: Any) -> Any:
    if typing.get_origin(hint) not in (Mapping, dict):
        raise TypeError(f"an Avro map needs a Mapping field, not {hint}")
    return typing.get_args(hint)[1]


def compile_event(
    schema: dict[str, Any],
    cls: type,
    hints_of: Callable[[type], dict[str, Any]],
    *,
    older: bool = False,
) -> CompiledEvent:
    """Compile the body encoder/decoder of ``cls`` for its parsed ``schema``.

    ``hints_of(cls)`` gives a dataclass's resolved type hints (the codec resolves them in the
    events module's namespace). Raises ``TypeError`` for a schema or field type the compiler
    does not support. ``older``: ``schema`` is an older one of ``cls``, lacking fields added
    since (each None when read); only its decoder may be used (its encoder would leave them
    out).
    """
    compiler = _Compiler(hints_of, older=cls if older else None)
    suffix = compiler.record(schema, cls)
    source = "\n\n".join(compiler.functions) + "\n"
    names = dict(compiler.globals)
    exec(compile(source, f"<ledger.avro {cls.__name__}>", "exec"), names)
    return CompiledEvent(
        encode=names[f"_enc_{suffix}"], decode=names[f"_dec_{suffix}"], source=source
    )


# --------------------------------------------------------------------------- the reader in C

_vm: types.ModuleType | None
try:
    import ledger._avrovm as _vm
except ImportError:  # pragma: no cover - installed without a C compiler
    _vm = None


def _decimal_value(text: str) -> Decimal:
    number = Decimal(text)
    if not number.is_finite():
        raise ValueError(f"decimal value {number} is not finite")
    return number


class _Program:
    """The nodes of :mod:`ledger._avrovm` reading one record type into its dataclass: the
    reading of :meth:`_Compiler._decode`, as a tree."""

    def __init__(
        self, hints_of: Callable[[type], dict[str, Any]], *, older: type | None = None
    ) -> None:
        assert _vm is not None
        self._older = older  # as _Compiler's: its fields added since are left unset
        self.vm = _vm
        self.kinds: dict[str, int] = _vm.KINDS
        self._hints_of = hints_of
        self._named: dict[str, Any] = {}

    def node(self, kind: str, kids: list[Any] | tuple[Any, ...] = (), **extra: Any) -> Any:
        return self.vm.Node(self.kinds[kind], kids, **extra)

    def _resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema in self._named:
            return self._named[schema]
        if isinstance(schema, dict) and schema.get("type") in ("record", "enum", "fixed"):
            self._named.setdefault(schema["name"], schema)
        return schema

    def record(self, schema: dict[str, Any], cls: type) -> Any:
        """An ``object`` node: the record's fields in schema order, each stored through the
        class's slot (the reader builds the instance, the writer reads the fields)."""
        schema = self._resolve(schema)
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls!r} is not a dataclass")
        hints = self._hints_of(cls)
        names = [f["name"] for f in schema["fields"]]
        if not (cls is self._older and set(names) < set(field_names(cls))) and set(names) != set(
            field_names(cls)
        ):
            raise TypeError(f"schema {schema['name']} and {cls.__name__} have different fields")
        builder(cls)  # the builder's checks: a frozen, slotted dataclass, nothing but fields
        kids = [self.value(f["type"], hints[f["name"]]) for f in schema["fields"]]
        return self.node("object", kids, keys=[sys.intern(name) for name in names], arg=cls)

    def value(self, schema: Any, hint: Any) -> Any:
        schema = self._resolve(schema)
        if isinstance(schema, list):
            inner = _optional_of(hint)
            if len(schema) == 2 and schema[0] == "null" and inner is not None:
                return self.node("union", [self.node("null"), self.value(schema[1], inner)])
            raise TypeError(f"unsupported union {schema} for {hint}")
        kind = schema if isinstance(schema, str) else schema["type"]
        logical = schema.get("logicalType") if isinstance(schema, dict) else None
        if kind in ("string", "bytes", "double"):
            return self.node(kind)
        if kind == "long" and logical == "timestamp-micros":
            return self.node("timestamp", arg=_timestamp)
        if kind in ("long", "int"):
            return self.node("long")
        if kind == "boolean":
            return self.node("truthy")
        if kind == "enum":
            members = {member.value: member for member in hint}
            return self.node("enum", arg=tuple(members[symbol] for symbol in schema["symbols"]))
        if kind == "array":
            return self.node("tuple", [self.value(schema["items"], _tuple_item(hint))])
        if kind == "map":
            values = schema["values"]
            if _is_value_union(values):
                item = self._fact_value()
            else:
                item = self.value(values, _mapping_value(hint))
            return self.node("map", [item])
        if kind == "record":
            return self.record(schema, hint)
        raise TypeError(f"unsupported Avro type {schema!r}")

    def _fact_value(self) -> Any:
        """The fact value union, branch by branch as :func:`_read_value` reads it."""
        return self.node(
            "union",
            [
                self.node("null"),
                self.node("truthy"),
                self.node("long"),
                self.node("double"),
                self.node("string"),
                self.node("convert", [self.node("string")], arg=_decimal_value),
                self.node("timestamp", arg=_timestamp),
                self.node("tuple", [self.node("string")]),
            ],
        )


def native_reader(
    schema: dict[str, Any],
    cls: type,
    hints_of: Callable[[type], dict[str, Any]],
    *,
    older: bool = False,
) -> Callable[[bytes, int], tuple[Any, int]] | None:
    """``read(data, pos) -> (event, end)`` in C for ``cls`` records of ``schema``, reading
    what :func:`compile_event`'s decoder reads; ``None`` when :mod:`ledger._avrovm` is not
    installed. Raises ``TypeError`` as :func:`compile_event` does. ``older``: as
    :func:`compile_event`'s, the fields added since are set to None after the read."""
    if _vm is None:
        return None
    program = _Program(hints_of, older=cls if older else None)
    reader = _vm.Reader(program.record(schema, cls))
    read: Callable[[bytes, int], tuple[Any, int]] = reader.read
    if not older:
        return read
    present = {f["name"] for f in schema["fields"]}
    unset = tuple(vars(cls)[name] for name in field_names(cls) if name not in present)
    if any(f.default is not None for f in dataclasses.fields(cls) if f.name not in present):
        raise TypeError(f"{cls.__name__}: a field added since {schema['name']} has no None default")

    def read_older(data: bytes, pos: int) -> tuple[Any, int]:
        event, end = read(data, pos)
        for slot in unset:  # each a slot's member descriptor
            slot.__set__(event, None)
        return event, end

    return read_older


def _decimal_text(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"decimal value {value} is not finite")
    return str(value)


class _WriteProgram(_Program):
    """The nodes of :mod:`ledger._avrovm` writing one record type: the writing of
    :meth:`_Compiler._encode`, as a tree."""

    def value(self, schema: Any, hint: Any) -> Any:
        schema = self._resolve(schema)
        if isinstance(schema, list):
            inner = _optional_of(hint)
            if len(schema) == 2 and schema[0] == "null" and inner is not None:
                return self.node("union", [self.node("null"), self.value(schema[1], inner)])
            raise TypeError(f"unsupported union {schema} for {hint}")
        kind = schema if isinstance(schema, str) else schema["type"]
        logical = schema.get("logicalType") if isinstance(schema, dict) else None
        if kind in ("string", "bytes", "double", "int"):
            return self.node(kind)
        if kind == "long" and logical == "timestamp-micros":
            return self.node("timestamp", arg=instant_micros)
        if kind == "long":
            return self.node("long")
        if kind == "boolean":
            return self.node("truthy")
        if kind == "enum":
            if not (isinstance(hint, type) and issubclass(hint, enum.Enum)):
                raise TypeError(f"enum {schema['name']} needs an Enum field, not {hint}")
            return self.node("enum", arg={s: i for i, s in enumerate(schema["symbols"])})
        if kind == "array":
            return self.node("tuple", [self.value(schema["items"], _tuple_item(hint))])
        if kind == "map":
            values = schema["values"]
            if _is_value_union(values):
                item = self.node("value", arg=(_decimal_text, instant_micros))
            else:
                item = self.value(values, _mapping_value(hint))
            return self.node("map", [item])
        if kind == "record":
            if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
                raise TypeError(f"record {schema['name']} needs a dataclass field, not {hint}")
            return self.record(schema, hint)
        raise TypeError(f"unsupported Avro type {schema!r}")


def native_writer(
    schema: dict[str, Any], cls: type, hints_of: Callable[[type], dict[str, Any]], header: bytes
) -> Callable[[Any], bytes] | None:
    """``write(event) -> header + body`` in C for ``cls`` events of ``schema``: the bytes of
    :func:`compile_event`'s encoder; ``None`` when :mod:`ledger._avrovm` is not installed.
    It raises for what it leaves to the Python writers (subclasses of plain values, mappings
    that are not dicts ...). Raises ``TypeError`` as :func:`compile_event` does."""
    if _vm is None:
        return None
    program = _WriteProgram(hints_of)
    writer = _vm.Writer(program.record(schema, cls), header)
    write: Callable[[Any], bytes] = writer.write
    return write
