"""The ledger's wire format: Avro single-object encoding of the events in :mod:`ledger.core.events`.

Every record on every ledger topic is::

    C3 01 | CRC-64-AVRO fingerprint of the writer schema (8 bytes, little-endian) | Avro binary body

so a record names the exact schema it was written with. :class:`Codec` knows the current schema of
every event type (``schemas/<Name>.avsc``, the contract) and any older writer versions
(``schemas/history/**.avsc``); it decodes a record written with an older version by Avro schema
resolution into the current dataclass, with the current schema's defaults for fields the writer
did not have.

The fingerprint covers the schema's Parsing Canonical Form, which drops docs, defaults and logical
types. That is why the codec keeps the full parsed schema per fingerprint instead of rebuilding a
schema from the canonical form.

Each current schema is compiled, when the codec is built, into a straight-line encoder and
decoder between its dataclass and Avro binary (:mod:`ledger.avro`): no dicts in between, no walk
over schemas or type hints per record (the evaluator decodes a request and encodes a decision per
answer, tens of thousands a second). The generic path — dataclass <-> dict converters generated
once per type, and fastavro — remains for what the compiled code leaves to it: records written
with an older schema (Avro schema resolution), values of subclasses of the plain types, and
explaining why an event does not encode.

Fact, context and constraint values (:data:`ledger.core.events.Value`) travel as one Avro union per
value: ``null | boolean | long | double | string | DecimalValue | TimestampValue | array<string>``.
Each Python type has exactly one branch, chosen by type on encode (fastavro's tuple notation, so the
writer never tries branches) and restored on decode: decimals stay exact with their scale, datetimes
come back aware UTC, string lists come back as tuples.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from io import BytesIO
from pathlib import Path
from typing import Any, Final

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as _avro_fingerprint
from fastavro.schema import to_parsing_canonical_form
from fastavro.validation import ValidationError, validate

from ledger.avro import CompiledEvent, compile_event, instant_micros, native_reader, native_writer
from ledger.contract import contract_dir
from ledger.core import events as _events
from ledger.core.events import (
    COMMAND_TYPES,
    EVENT_TYPES,
    GOVERNANCE_EVENT_TYPES,
    BatchDecisionRecorded,
    Event,
    Value,
)
from ledger.errors import CodecError, UnknownSchemaError

__all__ = ["MAGIC", "Codec", "default_codec"]

MAGIC = b"\xc3\x01"
"""The two marker bytes that open every Avro single-object encoded record."""

OLDEST_FORM_TYPES: frozenset[type] = frozenset(
    (*GOVERNANCE_EVENT_TYPES, *COMMAND_TYPES, BatchDecisionRecorded)
)
"""Types written in the oldest of their schemas that holds the event whole (governance events
and commands, which every processor of a ledger must read, are rare enough to pay for the
check; so is a pre-evaluation's answer, which an agent's SDK of the release before
``stale_after`` must read while the evaluators are upgraded first (a review: every one of
its pre-evaluations failed on the unknown schema). The sync path's records are always written
in their current form)."""

_HEADER_LEN = len(MAGIC) + 8

# Union branch names as fastavro's tuple notation spells them (named types by full name).
_NAMESPACE = "ledger.v1"
_DECIMAL_BRANCH = f"{_NAMESPACE}.DecimalValue"
_TIMESTAMP_BRANCH = f"{_NAMESPACE}.TimestampValue"

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1

_Converter = Callable[[Any], Any]


def _schema_dir() -> Path:
    return contract_dir("schemas")


# --------------------------------------------------------------------------- Value <-> Avro union


def _encode_value(value: Any) -> tuple[str, Any]:
    """One fact/context/constraint value as an explicit union branch.

    Typed ``Any``, not ``Value``: it is also the run-time check of values the type checker never
    saw (facts arrive from callers), and ``type(x) is int`` does not narrow for mypy.
    """
    kind = type(value)
    # bool before int: bool is an int subclass, and True must not travel as 1.
    if kind is str:
        return ("string", value)
    if kind is bool:
        return ("boolean", value)
    if kind is int:
        if not _LONG_MIN <= value <= _LONG_MAX:
            raise CodecError(
                f"integer {value} does not fit a 64-bit long: for a fact the policy declares "
                "decimal, send it as a JSON string, or a Decimal from Python; an int fact "
                "cannot hold it"
            )
        return ("long", value)
    if kind is float:
        return ("double", value)
    if value is None:
        return ("null", None)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise CodecError(f"decimal value {value} is not finite")
        return (_DECIMAL_BRANCH, {"value": str(value)})
    if isinstance(value, datetime):
        return (_TIMESTAMP_BRANCH, {"micros": _check_aware(value)})
    if isinstance(value, (tuple, list)):
        if not all(type(item) is str for item in value):
            raise CodecError("list values may only hold strings")
        return ("array", list(value))
    # Subclasses of the plain types (a StrEnum member, an IntEnum) travel as their base type.
    if isinstance(value, str):
        return ("string", str(value))
    if isinstance(value, bool):
        return ("boolean", bool(value))
    if isinstance(value, int):
        return _encode_value(int(value))
    if isinstance(value, float):
        return ("double", float(value))
    # Named with its module (numpy's bool_ is named `bool`: a README check read "unsupported
    # value type bool"), and the way out for a numpy or pandas scalar.
    module = getattr(kind, "__module__", "builtins")
    name = kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
    hint = ": pass value.item() for a numpy or pandas scalar" if hasattr(value, "item") else ""
    if isinstance(value, dict):  # an agent engineer's walkthrough: a nested object
        hint = ": values are flat (give each field its own name, e.g. customer_tier)"
    raise CodecError(f"unsupported value type {name}{hint}; {_VALUE_TYPES}")


_VALUE_TYPES: Final = (
    "a value is null, a bool, an int, a float, a Decimal, a str, an aware datetime or a list of str"
)


def _decode_value(raw: Any) -> Value:
    if type(raw) is dict:
        if "micros" in raw:
            micros: datetime = raw["micros"]
            return micros
        try:
            number = Decimal(raw["value"])
        except (InvalidOperation, KeyError, TypeError) as exc:
            raise CodecError(f"malformed decimal value {raw!r}") from exc
        if not number.is_finite():
            raise CodecError(f"decimal value {number} is not finite")
        return number
    if type(raw) is list:
        return tuple(raw)
    value: Value = raw
    return value


def _encode_values(values: Mapping[str, Value]) -> dict[str, tuple[str, Any]]:
    out = {}
    for key, value in values.items():
        try:
            out[key] = _encode_value(value)
        except CodecError as exc:
            raise CodecError(f"key {key!r}: {exc}") from exc
    return out


def _decode_values(raw: dict[str, Any]) -> Mapping[str, Value]:
    # Most maps hold only scalars, which fastavro already returns as the right Python type.
    for value in raw.values():
        if type(value) is dict or type(value) is list:
            return {key: _decode_value(value) for key, value in raw.items()}
    return raw


def _check_aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise CodecError(f"naive datetime {value.isoformat()} (use an aware UTC datetime)")
    if value.utcoffset():  # another zone: its instant may lie past what any reader can hold
        try:
            instant_micros(value)
        except OverflowError as exc:
            raise CodecError(f"{exc}: no reader could decode it (send datetimes in UTC)") from None
    return value


# --------------------------------------------------------------------------- per-type converters


@dataclasses.dataclass(frozen=True, slots=True)
class _Converters:
    to_avro: _Converter
    from_avro: _Converter
    # (field name, encode converter or None) in field order; used to locate encoding errors.
    field_encoders: tuple[tuple[str, _Converter | None], ...]


def _optional(convert: _Converter) -> _Converter:
    def convert_optional(value: Any) -> Any:
        return None if value is None else convert(value)

    return convert_optional


def _plain_dict(value: Mapping[str, Any]) -> dict[str, Any]:
    return value if type(value) is dict else dict(value)


def _is_value_type(hint: Any) -> bool:
    return set(typing.get_args(hint)) == set(typing.get_args(Value))


class _ConverterFactory:
    """Builds dataclass <-> Avro dict functions from a dataclass's fields and type hints."""

    def __init__(self) -> None:
        self._built: dict[type, _Converters] = {}

    def for_class(self, cls: type) -> _Converters:
        built = self._built.get(cls)
        if built is None:
            built = self._build(cls)
            self._built[cls] = built
        return built

    def _field_converters(self, hint: Any) -> tuple[_Converter | None, _Converter | None]:
        """(encode, decode) for one field type; ``None`` where the value passes as is."""
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType):
            if _is_value_type(hint):
                # A bare Value field (none exists today) travels as the union itself.
                return _encode_value, _decode_value
            args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
            if len(args) != 1:
                raise TypeError(f"unsupported union field type {hint}")
            encode, decode = self._field_converters(args[0])
            return (
                _optional(encode) if encode is not None else None,
                _optional(decode) if decode is not None else None,
            )
        if hint is datetime:
            # fastavro reads timestamp-micros as aware UTC datetimes: nothing to do on decode.
            return _check_aware, None
        if hint in (str, int, float, bool, bytes):
            return None, None
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            # StrEnum members are their own symbol strings for the writer; the reader's symbol is
            # looked up in a dict because calling the enum class is several times slower.
            members = {member.value: member for member in hint}
            return None, members.__getitem__
        if origin is tuple:
            (item,) = [arg for arg in typing.get_args(hint) if arg is not Ellipsis]
            if item is str:
                return list, tuple
            if dataclasses.is_dataclass(item) and isinstance(item, type):
                nested = self.for_class(item)
                to_avro, from_avro = nested.to_avro, nested.from_avro
                return (
                    lambda values: [to_avro(value) for value in values],
                    lambda values: tuple([from_avro(value) for value in values]),
                )
            raise TypeError(f"unsupported tuple field type {hint}")
        if origin is Mapping or origin is dict:
            _, value_hint = typing.get_args(hint)
            if _is_value_type(value_hint):
                return _encode_values, _decode_values
            if value_hint in (str, int, float, bool):
                return _plain_dict, None
            raise TypeError(f"unsupported mapping field type {hint}")
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            nested = self.for_class(hint)
            return nested.to_avro, nested.from_avro
        raise TypeError(f"unsupported field type {hint}")

    def _build(self, cls: type) -> _Converters:
        hints = typing.get_type_hints(cls, vars(_events))
        names: dict[str, Any] = {"_cls": cls}
        encode_items: list[str] = []
        field_encoders: list[tuple[str, _Converter | None]] = []
        decode_items: list[str] = []
        for index, field in enumerate(dataclasses.fields(cls)):
            encode, decode = self._field_converters(hints[field.name])
            field_encoders.append((field.name, encode))
            attribute = f"o.{field.name}"
            item = f"d[{field.name!r}]"
            if encode is not None:
                names[f"_e{index}"] = encode
                attribute = f"_e{index}({attribute})"
            if decode is not None:
                names[f"_d{index}"] = decode
                item = f"_d{index}({item})"
            encode_items.append(f"{field.name!r}: {attribute}")
            decode_items.append(f"{field.name}={item}")
        # Generated straight-line code: one dict display / one constructor call per record, no
        # per-field loop or branch at run time. Field names come from the dataclass, not input.
        source = (
            f"def to_avro(o):\n    return {{{', '.join(encode_items)}}}\n"
            f"def from_avro(d):\n    return _cls({', '.join(decode_items)})\n"
        )
        exec(compile(source, f"<ledger.codec {cls.__name__}>", "exec"), names)
        return _Converters(
            to_avro=names["to_avro"],
            from_avro=names["from_avro"],
            field_encoders=tuple(field_encoders),
        )


# --------------------------------------------------------------------------- schemas


@dataclasses.dataclass(frozen=True, slots=True)
class _Writer:
    """One known writer schema: how to read records that carry its fingerprint."""

    name: str  # record name (short), e.g. "DecisionRecorded"
    schema: dict[str, Any]  # parsed writer schema
    reader: dict[str, Any] | None  # parsed current schema when it differs from the writer
    event_type: type
    from_avro: _Converter
    compiled: Callable[[bytes, int], tuple[Any, int]] | None = None  # when reader is None


@dataclasses.dataclass(frozen=True, slots=True)
class _Older:
    """An older schema of a governance type, to write events that leave its later fields
    unset (``lacks``: their names) in a form earlier releases read."""

    header: bytes
    schema: dict[str, Any]
    lacks: tuple[str, ...]
    compiled: Callable[[Any, bytearray], None] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class _Current:
    """Everything needed to encode one event type with its current schema."""

    header: bytes
    fingerprint: int
    schema: dict[str, Any]
    to_avro: _Converter
    field_encoders: tuple[tuple[str, _Converter | None], ...]
    compiled: Callable[[Any, bytearray], None] | None = None
    native: Callable[[Any], bytes] | None = None  # the writer in C, tried first


def _load_schema(path: Path) -> tuple[dict[str, Any], bytes]:
    """Parse one self-contained ``.avsc``; return it with its 8-byte fingerprint (wire order)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        # Each file defines its own nested named types, so each gets its own name registry.
        parsed = parse_schema(raw, named_schemas={})
        canonical = to_parsing_canonical_form(raw)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CodecError(f"cannot load schema {path}: {exc}") from exc
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise CodecError(f"schema {path} is not a record schema")
    # fastavro spells CRC-64-AVRO as the hex of the little-endian bytes: exactly the wire order.
    return parsed, bytes.fromhex(_avro_fingerprint(canonical, "CRC-64-AVRO"))


def _short_name(parsed: Mapping[str, Any]) -> str:
    return str(parsed["name"]).rsplit(".", 1)[-1]


class Codec:
    """Encodes ledger events to Avro single-object bytes and decodes them back.

    Build one per process (see :func:`default_codec`) and share it: construction parses every
    schema and generates the converters; ``encode``/``decode`` are then cheap and thread-safe.

    ``schema_dir`` holds the current schema of every type in
    :data:`~ledger.core.events.EVENT_TYPES` (default: the repository's ``schemas/``).
    ``history_dirs`` hold older writer versions, searched recursively (default:
    ``<schema_dir>/history``); records written with them decode into the current types.
    ``compiled=False`` serves every type by the generic path (fastavro over dicts): the same
    bytes and events, slower; the tests hold the two paths to each other. ``native`` (default:
    when installed) reads current records with :mod:`ledger._avrovm`, the reader in C; with
    ``native=False`` the compiled Python reader does (the same events, slower).
    ``older_forms=False`` writes every event in its current form (tests of the current writers).
    """

    def __init__(
        self,
        schema_dir: Path | str | None = None,
        *,
        history_dirs: Iterable[Path | str] | None = None,
        compiled: bool = True,
        native: bool | None = None,
        older_forms: bool = True,
    ) -> None:
        directory = Path(schema_dir) if schema_dir is not None else _schema_dir()
        if not directory.is_dir():
            raise CodecError(f"schema directory {directory} not found")
        histories = (
            [directory / "history"]
            if history_dirs is None
            else [Path(history) for history in history_dirs]
        )
        compiled_codecs = compiled
        factory = _ConverterFactory()
        types_by_name = {cls.__name__: cls for cls in EVENT_TYPES}

        self._current: dict[type, _Current] = {}
        self._writers: dict[bytes, _Writer] = {}
        self._older: dict[type, list[_Older]] = {}
        self._older_files: list[tuple[type, bytes, Path]] = []
        current_by_name: dict[str, dict[str, Any]] = {}
        for cls in EVENT_TYPES:
            path = directory / f"{cls.__name__}.avsc"
            if not path.is_file():
                raise CodecError(f"no schema for {cls.__name__}: {path} is missing")
            parsed, header_fp = _load_schema(path)
            if _short_name(parsed) != cls.__name__:
                raise CodecError(f"{path} defines record {parsed['name']}, not {cls.__name__}")
            converters = factory.for_class(cls)
            fast = _compile(parsed, cls) if compiled_codecs else None
            use_native = fast is not None and native is not False
            read = _native(parsed, cls) if use_native else None
            write = _native_writer(parsed, cls, MAGIC + header_fp) if use_native else None
            if native and fast is not None and (read is None or write is None):
                raise CodecError("the Avro reader in C (ledger._avrovm) is not installed")
            self._current[cls] = _Current(
                header=MAGIC + header_fp,
                fingerprint=int.from_bytes(header_fp, "little"),
                schema=parsed,
                to_avro=converters.to_avro,
                field_encoders=converters.field_encoders,
                compiled=fast.encode if fast is not None else None,
                native=write,
            )
            self._writers[header_fp] = _Writer(
                cls.__name__,
                parsed,
                None,
                cls,
                converters.from_avro,
                read or (fast.decode if fast is not None else None),
            )
            current_by_name[cls.__name__] = parsed

        for history in histories:
            if not history.is_dir():
                continue
            for path in sorted(history.rglob("*.avsc"), key=_version_order):
                parsed, header_fp = _load_schema(path)
                if header_fp in self._writers:
                    continue  # same canonical form as a known schema (e.g. only docs changed)
                name = _short_name(parsed)
                if name not in current_by_name:
                    raise CodecError(f"historic schema {path} has no current schema {name}")
                cls = types_by_name[name]
                # An older form to write in, and to read fast: only one that lacks fields added
                # since and types every field it has as today (a review: an event's `==` does
                # not tell `True` from `1`, so a changed type must not pass the written check).
                older = cls in OLDEST_FORM_TYPES and _only_lacks(parsed, current_by_name[name])
                if older:
                    self._older_files.append((cls, header_fp, path))
                fast_older, write_older = (
                    _compile_older(parsed, cls) if compiled_codecs and older else (None, None)
                )
                self._writers[header_fp] = _Writer(
                    name,
                    parsed,
                    None if fast_older is not None else current_by_name[name],
                    cls,
                    factory.for_class(cls).from_avro,
                    fast_older,
                )
                if older_forms and older:
                    present = {f["name"] for f in parsed["fields"]}
                    lacks = tuple(f.name for f in dataclasses.fields(cls) if f.name not in present)
                    self._older.setdefault(cls, []).append(
                        _Older(MAGIC + header_fp, parsed, lacks, write_older)
                    )

    # ----------------------------------------------------------------------- public API

    def encode(self, event: Event) -> bytes:
        """The event as single-object encoded bytes, written with its current schema (a
        governance event or command: with the oldest of its schemas that holds it whole, so a
        release before a field was added reads every record that leaves the field unset).

        Raises :class:`~ledger.errors.CodecError` naming the field when the event does not fit
        its schema (a naive datetime, an unsupported fact value, an out-of-range integer ...).
        """
        current = self._current.get(type(event))
        if current is None:
            raise CodecError(f"not a ledger event type: {type(event).__name__}")
        older = self._older.get(type(event))
        if older is not None:
            for form in older:
                written = self._in_older_form(event, current, form)
                if written is not None:
                    return written
        if current.native is not None:
            try:
                return current.native(event)
            except Exception:  # left to the Python writers, which write it or explain why not
                pass
        if current.compiled is not None:
            buffer = bytearray(current.header)
            try:
                current.compiled(event, buffer)
                return bytes(buffer)
            except Exception:  # the general path below converts it, or explains why not
                pass
        try:
            record = current.to_avro(event)
            out = BytesIO()
            out.write(current.header)
            schemaless_writer(out, current.schema, record)
        except Exception as exc:  # translated at the boundary; the cause is located below
            raise CodecError(self._explain_encode_failure(event, current, exc)) from exc
        return out.getvalue()

    def _in_older_form(self, event: Event, current: _Current, form: _Older) -> bytes | None:
        """``event`` written with an older schema of its type, when that loses nothing: every
        field the older one lacks is unset, and the record decodes to ``event`` again. An
        operator's upgrade drill: a release that added an optional field wrote every event of
        the type in the new form, which the release before cannot read, so a processor of it,
        beside the new ones or after a rollback, skipped every promotion and decided on a stale
        state (and its command processor numbered events anew)."""
        if any(getattr(event, name) is not None for name in form.lacks):
            return None
        try:
            if form.compiled is not None:  # what it lacks is None: nothing is left out
                buffer = bytearray(form.header)
                form.compiled(event, buffer)
                written = bytes(buffer)
            else:
                out = BytesIO()
                out.write(form.header)
                schemaless_writer(out, form.schema, current.to_avro(event))
                written = out.getvalue()
            return written if self.decode(written) == event else None
        except Exception:  # the current form, then, which writes it or explains why not
            return None

    def decode(self, data: bytes | bytearray | memoryview) -> Event:
        """The event in ``data``, as the current dataclass of its type.

        Raises :class:`~ledger.errors.UnknownSchemaError` for a fingerprint this codec does not
        know and :class:`~ledger.errors.CodecError` for anything else that is not a ledger record.
        """
        if type(data) is bytes and data[:2] == MAGIC:  # the common case, without the checks
            found = self._writers.get(data[2:_HEADER_LEN])
            if found is not None and found.compiled is not None:
                try:
                    quick, end = found.compiled(data, _HEADER_LEN)
                except Exception:
                    pass  # the full path below says what is wrong
                else:
                    if end == len(data):
                        decoded: Event = quick
                        return decoded
        writer = self._writer_of(data)
        if writer.compiled is not None:
            return self._decode_compiled(writer, writer.compiled, data)
        stream = BytesIO(data)
        stream.seek(_HEADER_LEN)
        try:
            record = schemaless_reader(stream, writer.schema, writer.reader)
        except EOFError as exc:
            raise CodecError(
                f"truncated record: {writer.name} body ends early ({len(data)} bytes)"
            ) from exc
        except Exception as exc:
            raise CodecError(f"malformed {writer.name} body: {_describe(exc)}") from exc
        if stream.tell() != len(data):
            raise CodecError(
                f"malformed {writer.name} body: {len(data) - stream.tell()} bytes after the record"
            )
        try:
            event: Event = writer.from_avro(record)
        except CodecError as exc:
            raise CodecError(f"malformed {writer.name} body: {exc}") from exc
        except (KeyError, ValueError, TypeError) as exc:
            raise CodecError(f"malformed {writer.name} body: {_describe(exc)}") from exc
        return event

    def type_of(self, data: bytes | bytearray | memoryview) -> str:
        """The record name (e.g. ``"DecisionRecorded"``) of ``data``, from its header alone."""
        return self._writer_of(data).name

    def older_forms(self) -> tuple[tuple[type, bytes, Path], ...]:
        """The older schemas governance events and commands are written in when their later
        fields are unset (and read in place, their later fields ``None``): ``(event type,
        8-byte fingerprint as on the wire, schema file)``, oldest first per type."""
        return tuple(self._older_files)

    def fingerprint_of(self, event_type: type) -> int:
        """CRC-64-AVRO fingerprint of the current schema of ``event_type``, as an unsigned int."""
        current = self._current.get(event_type)
        if current is None:
            raise CodecError(f"not a ledger event type: {event_type.__name__}")
        return current.fingerprint

    # ----------------------------------------------------------------------- internals

    @staticmethod
    def _decode_compiled(
        writer: _Writer,
        decode: Callable[[bytes, int], tuple[Any, int]],
        data: bytes | bytearray | memoryview,
    ) -> Event:
        if type(data) is not bytes:
            data = bytes(data)
        try:
            event, end = decode(data, _HEADER_LEN)
        except (IndexError, EOFError) as exc:
            raise CodecError(
                f"truncated record: {writer.name} body ends early ({len(data)} bytes)"
            ) from exc
        except Exception as exc:
            raise CodecError(f"malformed {writer.name} body: {_describe(exc)}") from exc
        if end > len(data):  # a length that ran past the end
            raise CodecError(
                f"truncated record: {writer.name} body ends early ({len(data)} bytes)"
            ) from EOFError(f"the body needs {end - len(data)} more bytes")
        if end < len(data):
            raise CodecError(
                f"malformed {writer.name} body: {len(data) - end} bytes after the record"
            )
        decoded: Event = event
        return decoded

    def _writer_of(self, data: bytes | bytearray | memoryview) -> _Writer:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise CodecError(f"not a ledger record: expected bytes, got {type(data).__name__}")
        head = bytes(data[:2])
        if not head or not MAGIC.startswith(head):
            raise CodecError(_bad_magic(head))
        if len(data) < _HEADER_LEN:
            raise CodecError(
                f"truncated record: {len(data)} bytes, shorter than the {_HEADER_LEN}-byte header"
            )
        writer = self._writers.get(bytes(data[2:_HEADER_LEN]))
        if writer is None:
            fingerprint = int.from_bytes(data[2:_HEADER_LEN], "little")
            raise UnknownSchemaError(
                f"unknown schema fingerprint 0x{fingerprint:016x} "
                "(a newer producer? update the ledger schemas)"
            )
        return writer

    def _explain_encode_failure(self, event: Event, current: _Current, exc: Exception) -> str:
        """Name the field that broke encoding; runs only on the error path."""
        kind = type(event).__name__
        # A converter refused a value: re-run them field by field to find which one.
        for name, encode in current.field_encoders:
            if encode is None:
                continue
            try:
                encode(getattr(event, name))
            except Exception as field_exc:  # reported with the field, not swallowed
                return f"cannot encode {kind}.{name}: {_describe(field_exc)}"
        # Every value converted, so the Avro writer refused a type or range: its validator
        # reports the field path. It does not read tuple notation, hence the untupling.
        try:
            validate(_untuple(current.to_avro(event)), current.schema, raise_errors=True)
        except ValidationError as invalid:
            problems = "; ".join(str(error) for error in invalid.errors)
            return f"cannot encode {kind}: {problems.replace(_NAMESPACE + '.', '')}"
        except Exception:  # fall back to the writer's own message
            pass
        return f"cannot encode {kind}: {_describe(exc)}"


def _untuple(record: Any) -> Any:
    """``record`` with every ``(branch, value)`` union pair replaced by its value."""
    if type(record) is tuple:
        return _untuple(record[1])
    if type(record) is dict:
        return {key: _untuple(value) for key, value in record.items()}
    if type(record) is list:
        return [_untuple(value) for value in record]
    return record


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, CodecError):
        return text  # already says what is wrong, in the ledger's words
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _bad_magic(head: bytes) -> str:
    if not head:
        return "not a ledger record: empty input"
    return f"not a ledger record: bad magic 0x{head.hex()} (expected C3 01)"


def _compile(schema: dict[str, Any], cls: type) -> CompiledEvent | None:
    """The compiled encoder/decoder of ``cls``; ``None`` (the generic path serves it) for a
    schema the compiler does not support, e.g. a test's variant schema."""
    try:
        return compile_event(schema, cls, _hints)
    except TypeError:
        return None


def _version_order(path: Path) -> tuple[str, int, str]:
    """History files by type, then version number (``X.v10`` after ``X.v2``)."""
    stem, _, version = path.stem.rpartition(".v")
    return (stem, int(version), str(path)) if version.isdigit() else (path.stem, 0, str(path))


def _only_lacks(schema: dict[str, Any], current: dict[str, Any]) -> bool:
    """Does the older ``schema`` only lack fields the ``current`` one has, every field it has
    typed as the current one types it?"""
    now = {f["name"]: f["type"] for f in current["fields"]}
    return all(
        f["name"] in now
        and json.dumps(f["type"], sort_keys=True, default=str)
        == json.dumps(now[f["name"]], sort_keys=True, default=str)
        for f in schema["fields"]
    )


def _compile_older(
    schema: dict[str, Any], cls: type
) -> tuple[Callable[[bytes, int], tuple[Any, int]] | None, Callable[[Any, bytearray], None] | None]:
    """The compiled reader and writer of an older schema of ``cls`` that only lacks fields
    added since (:func:`_only_lacks`; each read as None, and the writer is for events where
    they are None); ``(None, None)`` when the compiler does not support it (Avro's schema
    resolution reads it then, ~10 times slower: governance records are written in such older
    forms, and a processor's start decodes a million of them)."""
    try:
        compiled = compile_event(schema, cls, _hints, older=True)
        native = native_reader(schema, cls, _hints, older=True)
    except TypeError:
        return None, None
    return (native if native is not None else compiled.decode), compiled.encode


def _native(schema: dict[str, Any], cls: type) -> Callable[[bytes, int], tuple[Any, int]] | None:
    """The reader in C of ``cls``; ``None`` when it is not installed, or for a schema the
    compiler does not support."""
    try:
        return native_reader(schema, cls, _hints)
    except TypeError:
        return None


def _native_writer(
    schema: dict[str, Any], cls: type, header: bytes
) -> Callable[[Any], bytes] | None:
    """The writer in C of ``cls``; ``None`` when it is not installed, or for a schema the
    compiler does not support."""
    try:
        return native_writer(schema, cls, _hints, header)
    except TypeError:
        return None


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(_events))


@functools.cache
def default_codec() -> Codec:
    """The process-wide codec over the ledger's ``schemas/`` (built on first use)."""
    return Codec()
