"""Exports for the tests of what reads them — verification, reproduction and simulation —
written by the exporter itself (:class:`ledger.audit.export.ExportWriter` from records made in
the test, or :func:`ledger.audit.export.export` from the broker), so the tests read exactly
the format ``ledger export`` writes (README "For auditors").

Also :func:`rewrite`, the tests' way of tampering with an exported file, :func:`rows_of`, and
:func:`rejected`, a small event to fill an export with.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ledger.codec import Codec, default_codec
from ledger.core.events import CommandRejected
from ledger.settings import KafkaSecurity, TopicNames

__all__ = [
    "Exported",
    "write_export",
    "export_from_kafka",
    "rewrite",
    "hide_in_footer",
    "set_raw",
    "exported_as_before",
    "rows_of",
    "files_of",
    "rejected",
]


@dataclass(frozen=True)
class Exported:
    """One Kafka record as the exporter reads it."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes


def write_export(
    out: Path, records: Iterable[Exported], topics: TopicNames, *, codec: Codec | None = None
) -> list[Path]:
    """Write ``records`` under ``out`` with the exporter's own file half
    (:class:`ledger.audit.export.ExportWriter`); returns the files written."""
    from ledger.audit.export import ExportWriter

    before = set(out.rglob("*.parquet")) if out.exists() else set()
    with ExportWriter(out, topics, codec=codec or default_codec()) as writer:
        for r in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
            writer.add(r.topic, r.partition, r.offset, r.timestamp_ms, r.key, r.value)
        writer.flush()
    return sorted(set(out.rglob("*.parquet")) - before)


def export_from_kafka(
    bootstrap: str, topics: TopicNames, out: Path, *, security: KafkaSecurity | None = None
) -> list[Path]:
    """Everything in the ledger at ``bootstrap``, exported as ``ledger export`` does (with
    ``security``: the exporter's credential on a secured broker)."""
    from ledger.audit.export import export

    before = set(out.rglob("*.parquet")) if out.exists() else set()
    export(out, bootstrap, topics, security=security)
    return sorted(set(out.rglob("*.parquet")) - before)


def rewrite(path: Path, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
    """Tamper with an exported file: rows as dicts in, rows as dicts out, same schema."""
    table = pq.read_table(path)
    rows = change(table.to_pylist())
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)


def set_raw(path: Path, pick: Callable[[dict[str, Any]], bool], column: str, raw: int) -> None:
    """Tamper with a timestamp column of an exported file: the rows ``pick`` chooses (shown
    the row's other columns) hold ``raw``, the column unit's integer, even one no datetime
    holds (past year 9999: pyarrow cannot make it a Python value)."""
    table = pq.read_table(path)
    index = table.schema.get_field_index(column)
    field = table.schema.field(index)
    others = table.drop_columns([column]).to_pylist()
    values = table.column(column).cast(pa.int64()).to_pylist()
    changed = [raw if pick(row) else value for row, value in zip(others, values, strict=True)]
    table = table.set_column(index, field, pa.array(changed, pa.int64()).cast(field.type))
    pq.write_table(table, path)


def exported_as_before(
    path: Path, event_id: str, micros: int, *, codec: Codec | None = None
) -> None:
    """The row of event ``event_id`` in ``path`` as ``ledger export`` wrote one whose
    ``occurred_at`` is ``micros`` before it refused instants no datetime holds: its record
    holds ``micros`` (a red team's request, which the evaluator dead-letters), and its columns
    were filled from it, ``occurred_at`` with ``micros``."""
    from ledger.avro import write_long

    codec = codec or default_codec()
    epoch = datetime(1970, 1, 1, tzinfo=UTC)

    def hostile(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row in rows:
            if row["event_id"] == event_id:
                record = row["record"]
                varint = write_long(
                    (codec.decode(record).occurred_at - epoch) // timedelta(microseconds=1)
                )
                assert varint in record[10:]
                row["record"] = record[:10] + record[10:].replace(varint, write_long(micros), 1)
        return rows

    rewrite(path, hostile)
    set_raw(path, lambda row: row["event_id"] == event_id, "occurred_at", micros)


def hide_in_footer(path: Path, index: int, columns: Iterable[str]) -> dict[str, Any]:
    """A red team's forgery: row ``index`` of the file moved into a row group of its own, whose
    footer statistics for ``columns`` are then rewritten to a value of the same length that
    sorts after every real one (``~`` for the first byte). Every row and record byte stays
    genuine; DuckDB skips the group for a filter on those columns. Returns the hidden row."""
    table = pq.read_table(path)
    row = table.slice(index, 1).to_pylist()[0]
    with pq.ParquetWriter(path, table.schema) as out:
        for part in (table.slice(0, index), table.slice(index, 1), table.slice(index + 1)):
            if part.num_rows:
                out.write_table(part)
    data = bytearray(path.read_bytes())
    (size,) = struct.unpack("<I", bytes(data[-8:-4]))
    start = len(data) - 8 - size
    footer = bytes(data[start:-8])
    for column in columns:
        value = str(row[column]).encode()
        assert value in footer, column
        footer = footer.replace(value, b"~" + value[1:])
    data[start:-8] = footer
    path.write_bytes(bytes(data))
    return row


def rows_of(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


def files_of(out: Path, topic: str) -> list[Path]:
    return sorted((out / f"topic={topic}").rglob("*.parquet"))


def json_column(row: Mapping[str, Any], name: str) -> Any:
    return json.loads(row[name])


def rejected(n: int, start: datetime) -> CommandRejected:
    """The ``n``-th of a run of rejected commands, an hour apart from ``start``."""
    return CommandRejected(
        event_id=f"r{n}",
        occurred_at=start + timedelta(hours=n),
        actor="service:command-processor",
        command_id=f"c{n}",
        command_type="RetirePolicy",
        aggregate="refund",
        code="missing_reason",
        reason="a reason is needed",
    )
