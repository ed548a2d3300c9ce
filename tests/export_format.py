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
from datetime import datetime, timedelta
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
