"""A small writer of the export format (the export spec shared with ``ledger export``), for
tests of what reads exports — verification, reproduction and simulation — without depending on
the exporter itself.

``DIR/topic=<topic>/date=YYYY-MM-DD/<topic>+<partition>+<first offset>.parquet``, one row per
record: ``topic``, ``partition`` (int32), ``offset``, ``kafka_timestamp`` (ms, UTC), ``key``,
``event_type``, ``record`` (the raw bytes), then one column per top-level field of the topic's
event types (``event_<name>`` where a field shares a coordinate's name), typed from the field's
Python type (datetime → timestamp µs UTC, int → int64, bool, float → double, str/enum/Decimal →
string, bytes → binary, anything nested → its canonical JSON text as Arrow's JSON type); and
``DIR/_manifest.json`` (format 1: the topic prefix, each partition's next offset, every file),
as ``ledger export`` writes them.

Also :func:`rewrite`, the tests' way of tampering with an exported file.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ledger.codec import Codec, default_codec
from ledger.core import events
from ledger.core.jsonform import canonical_json, to_json_value
from ledger.errors import CodecError
from ledger.settings import TopicNames

__all__ = ["Exported", "write_export", "export_from_kafka", "rewrite", "topic_types"]


@dataclass(frozen=True)
class Exported:
    """One Kafka record as the exporter reads it."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes


def topic_types(topics: TopicNames) -> dict[str, tuple[type, ...]]:
    """The event types that can appear on each ledger topic."""
    return {
        topics.commands: events.COMMAND_TYPES,
        topics.command_results: (events.CommandAccepted, events.CommandRejected),
        topics.policy_events: (
            events.PolicyVersionProposed,
            events.PolicyVersionApproved,
            events.PolicyVersionPromoted,
            events.PolicyRolledBack,
            events.PolicyRetired,
        ),
        topics.grant_events: (
            events.GrantIssued,
            events.GrantRevoked,
            events.RoleAssigned,
            events.RoleRevoked,
        ),
        topics.evaluation_requests: (events.EvaluationRequested, events.BatchEvaluationRequested),
        topics.decisions: (events.DecisionRecorded, events.BatchDecisionRecorded),
        topics.corrections: (events.DecisionCorrected,),
        topics.dead_letters: (events.DeadLetter,),
        topics.chain_checkpoints: (events.ChainCheckpoint,),
    }


def _kind(hint: Any) -> tuple[pa.DataType, Callable[[Any], Any]]:
    """Arrow type of a field and how its JSON-form value becomes the column value."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)] or [str]
    if hint is datetime:
        return pa.timestamp("us", tz="UTC"), lambda v: datetime.fromisoformat(
            v.replace("Z", "+00:00")
        )
    if hint is bool:
        return pa.bool_(), lambda v: v
    if hint is int:
        return pa.int64(), lambda v: v
    if hint is float:
        return pa.float64(), lambda v: float(v)
    if hint is str or hint is Decimal or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
        return pa.string(), lambda v: v
    if hint is bytes:
        return pa.binary(), bytes.fromhex
    return pa.json_(), lambda v: canonical_json(v).decode("utf-8")


_COORDINATES = ("topic", "partition", "offset", "kafka_timestamp", "key", "event_type", "record")


def _columns(
    types_: tuple[type, ...],
) -> dict[str, tuple[str, pa.DataType, Callable[[Any], Any]]]:
    """field name → (column name, Arrow type, JSON form → column value)."""
    columns: dict[str, tuple[str, pa.DataType, Callable[[Any], Any]]] = {}
    for cls in types_:
        hints = typing.get_type_hints(cls, vars(events))
        for field in dataclasses.fields(cls):
            name = f"event_{field.name}" if field.name in _COORDINATES else field.name
            columns.setdefault(field.name, (name, *_kind(hints[field.name])))
    return columns


def _key_text(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return "hex:" + key.hex()


def write_export(
    out: Path, records: Iterable[Exported], topics: TopicNames, *, codec: Codec | None = None
) -> list[Path]:
    """Write ``records`` in the export layout under ``out``; returns the files written."""
    codec = codec or default_codec()
    by_topic = topic_types(topics)
    groups: dict[tuple[str, int, str], list[tuple[Exported, Any]]] = defaultdict(list)
    for record in records:
        try:
            event: Any = codec.decode(record.value)
        except CodecError:
            event = None
        when = (
            event.occurred_at
            if event is not None
            else datetime.fromtimestamp(record.timestamp_ms / 1000, UTC)
        )
        date = when.astimezone(UTC).strftime("%Y-%m-%d")
        groups[(record.topic, record.partition, date)].append((record, event))
    written: list[Path] = []
    listed: list[dict[str, Any]] = []
    for (topic, partition, date), rows in sorted(groups.items()):
        rows.sort(key=lambda pair: pair[0].offset)
        columns = _columns(by_topic[topic])
        data: dict[str, list[Any]] = {
            "topic": [r.topic for r, _ in rows],
            "partition": [r.partition for r, _ in rows],
            "offset": [r.offset for r, _ in rows],
            "kafka_timestamp": [
                datetime.fromtimestamp(r.timestamp_ms / 1000, UTC) for r, _ in rows
            ],
            "key": [_key_text(r.key) for r, _ in rows],
            "event_type": [type(e).__name__ if e is not None else None for _, e in rows],
            "record": [r.value for r, _ in rows],
        }
        forms = [to_json_value(e) if e is not None else {} for _, e in rows]
        for field_name, (name, _, convert) in columns.items():
            data[name] = [
                None if form.get(field_name) is None else convert(form[field_name])
                for form in forms
            ]
        schema = pa.schema(
            [
                ("topic", pa.string()),
                ("partition", pa.int32()),
                ("offset", pa.int64()),
                ("kafka_timestamp", pa.timestamp("ms", tz="UTC")),
                ("key", pa.string()),
                ("event_type", pa.string()),
                ("record", pa.binary()),
                *[(name, arrow) for name, arrow, _ in columns.values()],
            ]
        )
        folder = out / f"topic={topic}" / f"date={date}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{topic}+{partition}+{rows[0][0].offset}.parquet"
        pq.write_table(pa.table(data, schema=schema), path)
        written.append(path)
        listed.append(
            {
                "path": path.relative_to(out).as_posix(),
                "topic": topic,
                "partition": partition,
                "date": date,
                "first_offset": rows[0][0].offset,
                "last_offset": rows[-1][0].offset,
                "rows": len(rows),
            }
        )
    ends: dict[str, dict[str, int]] = defaultdict(dict)
    for (topic, partition, _), rows in groups.items():
        last = max(r.offset for r, _ in rows) + 1
        ends[topic][str(partition)] = max(last, ends[topic].get(str(partition), 0))
    manifest = {
        "format": 1,
        "topic_prefix": topics.prefix,
        "updated_at": None,
        "offsets": ends,
        "files": listed,
    }
    (out / "_manifest.json").write_text(json.dumps(manifest, indent=2))
    return written


def export_from_kafka(bootstrap: str, topics: TopicNames, out: Path) -> list[Path]:
    """Every record of every ledger topic, read from the beginning to the current end."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=2000,
    )
    try:
        parts = [
            TopicPartition(topic, p)
            for topic in topics.all()
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        remaining = {tp for tp in parts if end[tp] > 0}
        found: list[Exported] = []
        while remaining:
            batch = consumer.poll(timeout_ms=2000)
            if not batch and not any(consumer.position(tp) < end[tp] for tp in remaining):
                break
            for tp, records in batch.items():
                for r in records:
                    if r.offset < end[tp]:
                        found.append(
                            Exported(tp.topic, tp.partition, r.offset, r.timestamp, r.key, r.value)
                        )
                if consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    finally:
        consumer.close()
    return write_export(out, found, topics)


def rewrite(path: Path, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
    """Tamper with an exported file: rows as dicts in, rows as dicts out, same schema."""
    table = pq.read_table(path)
    rows = change(table.to_pylist())
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)


def rows_of(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


def files_of(out: Path, topic: str) -> list[Path]:
    return sorted((out / f"topic={topic}").rglob("*.parquet"))


def json_column(row: Mapping[str, Any], name: str) -> Any:
    return json.loads(row[name])
