"""An export row's columns read back into the record they came from (the export spec, in
reverse): what ``ledger audit verify`` hashes, and how it and the history reader
(:mod:`ledger.audit.history`) check that what analysts query is what was recorded.

Two ways, one answer:

- the slow path, :class:`Form`: every column parsed back to its field's JSON form, saying which
  column cannot be one (:class:`Mismatch`) or which differ from the record's own bytes
  (:func:`columns_disagree`);
- the fast path, :class:`Texts`: a row's canonical text built straight from a batch's columns,
  for the intact rows that are nearly all of an export.

A value no Python type holds (a timestamp outside year 1 to 9999, which pyarrow cannot make a
``datetime``) is read as an :class:`Unreadable` (:func:`python_rows`), never raised: it is
what a tampered file, or an older exporter's row of a record the codec refuses, holds.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from ledger.avro import INSTANTS
from ledger.core import events as _events
from ledger.core.chain import CHAINED_TYPES
from ledger.core.events import ChainCheckpoint
from ledger.core.jsonform import format_timestamp, to_json_value

__all__ = [
    "COORDINATES",
    "column_name",
    "FORMS",
    "TEXTS",
    "Form",
    "Mismatch",
    "Slow",
    "Texts",
    "Unreadable",
    "batch_columns",
    "python_rows",
    "columns_disagree",
    "differing",
    "show",
]

# Columns of every export row that are not event fields (and DuckDB's hive partition column).
COORDINATES: Final = frozenset(
    {"topic", "partition", "offset", "kafka_timestamp", "key", "event_type", "record", "date"}
)
_encode_str: Final[Callable[[str], str]] = json.encoder.encode_basestring


class Mismatch(Exception):
    """A column whose value cannot be the JSON form of its field."""


_UNITS: Final = {"s": "s", "ms": "ms", "us": "µs", "ns": "ns"}


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A column's value that no Python value holds: a timestamp outside year 1 to 9999, as
    its integer (``raw``, ``None`` if even that cannot be read) and unit. The exporter writes
    none (a record holding such an instant does not decode); an older one did."""

    raw: int | None
    unit: str

    @classmethod
    def of(cls, column: Any, index: int) -> Unreadable:
        import pyarrow as pa

        kind = column.type
        unit = _UNITS.get(getattr(kind, "unit", ""), "days" if kind == pa.date32() else str(kind))
        try:
            raw = column.slice(index, 1).cast(pa.int64()).to_pylist()[0]
        except (pa.ArrowException, OverflowError, ValueError):
            raw = None
        return cls(raw if isinstance(raw, int) else None, unit)

    def __str__(self) -> str:
        return f"{self.raw} {self.unit} after the epoch, outside year 1 to 9999"


def python_values(column: Any) -> list[Any]:
    """An Arrow column's values as Python values (``to_pylist``), each that none holds as an
    :class:`Unreadable`."""
    try:
        return list(column.to_pylist())
    except (OverflowError, ValueError):
        pass
    out: list[Any] = []
    for i in range(len(column)):
        try:
            out.append(column[i].as_py())
        except (OverflowError, ValueError):
            out.append(Unreadable.of(column, i))
    return out


def python_rows(data: Any) -> list[dict[str, Any]]:
    """An Arrow batch's or table's rows as dicts by column name (``to_pylist``), a value no
    Python value holds as an :class:`Unreadable`, so that one row cannot stop a reader."""
    try:
        return list(data.to_pylist())
    except (OverflowError, ValueError):
        pass
    names = data.schema.names
    columns = [python_values(column) for column in data.columns]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def _timestamp(value: Any) -> Any:
    if isinstance(value, Unreadable):
        raise Mismatch(f"holds {value}")
    if not isinstance(value, datetime):
        raise Mismatch(f"holds {type(value).__name__}, not a timestamp")
    return format_timestamp(value)


def _exact(kind: type) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if type(value) is not kind:
            raise Mismatch(f"holds {type(value).__name__}, not {kind.__name__}")
        return value

    return check


def _double(value: Any) -> Any:
    if type(value) is not float:
        raise Mismatch(f"holds {type(value).__name__}, not a double")
    return to_json_value(value)


def _blob(value: Any) -> Any:
    if not isinstance(value, bytes):
        raise Mismatch(f"holds {type(value).__name__}, not bytes")
    return value.hex()


def _json(value: Any) -> Any:
    if not isinstance(value, str):
        raise Mismatch(f"holds {type(value).__name__}, not JSON text")
    try:
        return json.loads(value)
    except ValueError as exc:
        raise Mismatch(f"is not valid JSON ({exc})") from None
    except RecursionError:  # tampering: nested deeper than the parser recurses
        raise Mismatch("is JSON nested too deeply to read (not what the exporter writes)") from None


def _column_reader(hint: Any) -> Callable[[Any], Any]:
    """How a column's value becomes the field's JSON form (the export spec, in reverse)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            hint = args[0]
    if hint is datetime:
        return _timestamp
    if hint is bool:
        return _exact(bool)
    if hint is int:
        return _exact(int)
    if hint is float:
        return _double
    if hint in (str, Decimal) or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
        return _exact(str)
    if hint is bytes:
        return _blob
    return _json


@dataclass(frozen=True, slots=True)
class Form:
    """Rebuilds one event type's JSON form from an export row."""

    cls: type
    readers: tuple[tuple[str, str, Callable[[Any], Any]], ...]
    """(field, the column it is written to, how that column reads back as the field's JSON)"""
    names: frozenset[str]

    @classmethod
    def of(cls, event_type: type) -> Form:
        hints = typing.get_type_hints(event_type, vars(_events))
        readers = tuple(
            (f.name, column_name(f.name), _column_reader(hints[f.name]))
            for f in dataclasses.fields(event_type)
        )
        return cls(event_type, readers, frozenset(column for _, column, _ in readers))

    def build(self, row: Mapping[str, Any]) -> dict[str, Any]:
        form: dict[str, Any] = {}
        for name, column, read in self.readers:
            # A column no file of the export has (written before the field existed) reads as
            # NULL, as the views read it: a record that holds a value there still differs.
            value = row.get(column)
            try:
                form[name] = None if value is None else read(value)
            except Mismatch as exc:
                raise Mismatch(f"column {column} {exc}") from None
        for name, value in row.items():
            if value is not None and name not in self.names and name not in COORDINATES:
                raise Mismatch(f"column {name} is set, but a {self.cls.__name__} has no {name}")
        return form


def column_name(field: str) -> str:
    """The export's column of an event's ``field``: its own name, or ``event_<name>`` for one
    named like a Kafka coordinate (a dead letter's ``key``, ``partition``, ``offset``)."""
    return f"event_{field}" if field in COORDINATES - {"date"} else field


FORMS: Final = {cls.__name__: Form.of(cls) for cls in (*CHAINED_TYPES, ChainCheckpoint)}


def columns_disagree(event: Any, row: Mapping[str, Any]) -> str | None:
    """Why an export ``row``'s columns are not the JSON form of ``event``, decoded from the
    row's own ``record`` bytes (``None`` when they agree): what analysts query must be what was
    recorded. For any event type; decision chains are checked this way by :func:`verify_export`."""
    form = FORMS.get(type(event).__name__)
    if form is None:  # built once per event type: reading type hints is slow
        form = FORMS[type(event).__name__] = Form.of(type(event))
    try:
        columns = form.build(row)
    except Mismatch as exc:
        return str(exc)
    record = to_json_value(event)
    names = differing(columns, record)
    if names:
        shown = "; ".join(
            "{} (columns {}, record {})".format(n, *shown_apart(columns.get(n), record.get(n)))
            for n in names[:5]
        )
        more = f"; and {len(names) - 5} more" if len(names) > 5 else ""
        older = (
            # An operator's upgrade drill: an export by the earlier release's CLI, over records
            # the newer release wrote, read as tampering with no word of why. Still a finding:
            # a row whose columns are emptied is one no view shows.
            " (every column of the row is empty, as an export by a release older than the "
            "record leaves one it cannot decode: export again with this release into a new "
            "folder, and verify that)"
            if all(v is None for k, v in row.items() if k not in COORDINATES)
            else ""
        )
        return f"its columns disagree with its record bytes: {shown}{more}{older}"
    return None


def differing(columns: Mapping[str, Any], record: Mapping[str, Any]) -> list[str]:
    """The fields (``hash`` aside) whose JSON form differs between a row's columns and its
    record."""
    names = list(record) + [n for n in columns if n not in record]
    return [n for n in names if n != "hash" and columns.get(n) != record.get(n)]


def show(value: Any) -> str:
    """A field's JSON form for a problem's text, at most 120 characters; anything, whatever a
    tampered file holds (bytes in a text column show as their hex)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value[:60]).hex() + ("…" if len(value) > 60 else "")
    elif isinstance(value, str) and len(value) > 200:
        value = value[:200]  # cut before it is serialised: a column may hold megabytes
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=repr)
    return text if len(text) <= 120 else text[:117] + "..."


def shown_apart(a: Any, b: Any) -> tuple[str, str]:
    """Two differing values of one field as :func:`show` gives them, but, where both are longer
    than it shows and agree up to there, each from a little before where they first differ (an
    auditor's walkthrough: a changed pre-evaluation item was shown as the same 120-character
    start on both sides)."""
    left, right = show(a), show(b)
    if left != right:
        return left, right
    texts = [_whole(v) for v in (a, b)]
    shorter = min(len(t) for t in texts)  # where one ends, if it is the other's beginning
    at = next((i for i, (x, y) in enumerate(zip(*texts, strict=False)) if x != y), shorter)
    start = max(0, at - 40)

    def window(text: str) -> str:
        more = "..." if len(text) > start + 117 else ""
        return ("…" if start else "") + text[start : start + 117] + more

    return window(texts[0]), window(texts[1])


def _whole(value: Any) -> str:
    """A field's whole JSON form (a text cut at 100,000 characters: a column may hold
    megabytes, and where two differ is shown from their first 100,000)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value[:50_000]).hex()
    if isinstance(value, str) and len(value) > 100_000:
        value = value[:100_000]
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=repr)


# --------------------------------------------------------------------------- the fast path
# Most rows are intact: their canonical text is built straight from the batch's columns (typed
# columns rendered as the JSON form renders them, JSON columns verbatim: the export holds
# exactly their canonical text) and compared with the record's canonical text and hash. Any
# difference sends the row to the slow path (:func:`columns_disagree`, :class:`Form`), which parses every column and says what
# differs.


class Slow(Exception):
    """This row needs the slow path."""


def _text_of_str(value: Any) -> str:
    if type(value) is not str:
        raise Slow
    return _encode_str(value)


def _text_of_int(value: Any) -> str:
    if type(value) is not int:
        raise Slow
    return int.__repr__(value)


def _text_of_bool(value: Any) -> str:
    if type(value) is not bool:
        raise Slow
    return "true" if value else "false"


def _text_of_double(value: Any) -> str:
    if type(value) is not float:
        raise Slow
    return json.dumps(to_json_value(value))


def _text_of_time(value: Any) -> str:  # already rendered by the batch (see :func:`batch_columns`)
    if type(value) is not str:
        raise Slow
    return '"' + value + '"'


def _text_of_json(value: Any) -> str:
    if type(value) is not str:
        raise Slow
    return value


def _text_of_blob(value: Any) -> str:
    if not isinstance(value, bytes):
        raise Slow
    return '"' + value.hex() + '"'


def _column_text(hint: Any) -> Callable[[Any], str]:
    reader = _column_reader(hint)
    if reader is _timestamp:
        return _text_of_time
    if reader is _double:
        return _text_of_double
    if reader is _blob:
        return _text_of_blob
    if reader is _json:
        return _text_of_json
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    if hint is bool:
        return _text_of_bool
    if hint is int:
        return _text_of_int
    return _text_of_str


@dataclass(frozen=True, slots=True)
class Texts:
    """One event type's canonical text (without ``hash``), from a batch's column lists."""

    cls: type
    fields: tuple[str, ...]  # sorted, without "hash"
    names: frozenset[str]
    text: Callable[[tuple[list[Any], ...], int], str]

    @classmethod
    def of(cls, event_type: type) -> Texts:
        hints = typing.get_type_hints(event_type, vars(_events))
        fields = tuple(sorted(f.name for f in dataclasses.fields(event_type) if f.name != "hash"))
        names: dict[str, Any] = {}
        items = []
        for k, name in enumerate(fields):
            names[f"_t{k}"] = _column_text(hints[name])
            key = json.dumps(("{" if k == 0 else ",") + json.dumps(name) + ":")
            items.append(f"{key}, ('null' if (v{k} := c[{k}][i]) is None else _t{k}(v{k}))")
        source = f"def text(c, i):\n    return ''.join([{', '.join(items)}, '}}'])\n"
        exec(source, names)
        every = frozenset(f.name for f in dataclasses.fields(event_type))
        return cls(event_type, fields, every, names["text"])


TEXTS: Final = {cls.__name__: Texts.of(cls) for cls in CHAINED_TYPES}


def batch_columns(batch: Any) -> dict[str, list[Any]]:
    """The batch's columns as lists; timestamps already in their JSON text."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out: dict[str, list[Any]] = {}
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if name not in COORDINATES and pa.types.is_timestamp(column.type):
            if column.type.unit != "us":  # the export spec's unit; anything else is compared
                column = column.cast(pa.timestamp("us", tz=column.type.tz), safe=False)
            texts: list[Any] = pc.strftime(column, format="%Y-%m-%dT%H:%M:%SZ").to_pylist()
            micros = column.cast(pa.int64())
            if pc.any(
                pc.or_(pc.less(micros, INSTANTS[0]), pc.greater(micros, INSTANTS[1]))
            ).as_py():
                # strftime writes a text for any instant, past year 9999 a wrong one (the
                # year modulo 2**18: a time 262,144 years late reads as the true one).
                texts = [
                    Unreadable(m, "µs")
                    if m is not None and not INSTANTS[0] <= m <= INSTANTS[1]
                    else t
                    for t, m in zip(texts, micros.to_pylist(), strict=True)
                ]
            if any(type(t) is str and t[0] == "0" for t in texts):
                # Before year 1000 the JSON form's year is not zero-padded (strftime's %Y).
                values = python_values(column)
                texts = [
                    format_timestamp(v) if type(t) is str and t[0] == "0" else t
                    for t, v in zip(texts, values, strict=True)
                ]
            out[name] = texts
        else:
            out[name] = python_values(column)
    return out
