"""``ledger export``: every ledger topic to Parquet, incremental and idempotent (DESIGN §9).

Layout (the export spec)::

    DIR/topic=<topic>/date=YYYY-MM-DD/<topic>+<partition>+<first offset>.parquet
    DIR/_manifest.json

``date`` is the UTC date of the event's ``occurred_at`` (the Kafka timestamp's for a record that
does not decode). Rows are made by :class:`~ledger.audit.rows.RowMaker`.

How a run stays exact, whatever happens to it:

1. The manifest lists every data file of the export and, per topic and partition, the next
   offset to export. A file is written under a temporary name, flushed to disk and renamed;
   the manifest is rewritten (temporary name, fsync, rename) only after the files it lists are
   complete. So the manifest never names a partial file, and its offsets are exactly the rows
   of its files.
2. A run first removes whatever a killed run left beyond the manifest: temporary files, and
   data files the manifest does not list (their rows are exported again from the manifest's
   offsets, under the same deterministic names). Nothing else in the directory is touched.
3. It then reads each partition from the manifest's offset to the end offset seen at the start
   (a consistent prefix of the log) and flushes every ``batch_records`` rows (new files, then
   the manifest). Re-running adds exactly what is new; nothing is duplicated or dropped.

Readers (:func:`ledger.audit.sql.connect`) read the files the manifest lists, so a reader never
sees a file of a run that has not committed it.

:class:`ExportWriter` is the file and manifest half, usable without Kafka (tests and the audit
benchmark write the export format with it); :func:`export` / :func:`follow` add Kafka.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pyarrow.parquet as pq

from ledger.audit.rows import RowMaker, TopicFormat
from ledger.codec import Codec
from ledger.core.events import Event
from ledger.errors import ExportError
from ledger.settings import KafkaSecurity, TopicNames

__all__ = [
    "MANIFEST",
    "FORMAT_VERSION",
    "DEFAULT_BATCH",
    "DEFAULT_FLUSH_INTERVAL",
    "ExportSummary",
    "Manifest",
    "ExportWriter",
    "export",
    "follow",
    "read_manifest",
    "write_events",
]

MANIFEST: Final = "_manifest.json"
FORMAT_VERSION: Final = 1
DEFAULT_BATCH: Final = 200_000
ROW_GROUP_ROWS: Final = 16_384
"""Rows per Parquet row group. Ids and times grow with the offsets, so each group's min/max
narrows a lookup (a decision by id, a time window) to a few groups; at DuckDB's default of
122,880 rows a lookup by id over 10 M decisions decoded ~3.5 times more than it needed."""
"""Rows buffered before a flush (files + manifest) during a one-shot export."""
DEFAULT_FLUSH_INTERVAL: Final = 2.0
"""Seconds between flushes in ``--follow`` mode (when something new arrived)."""

_DAY_US: Final = 86_400_000_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

Progress = Callable[[int, int], None]
"""``progress(records done, records to do)`` during a one-shot export."""


# --------------------------------------------------------------------------- the manifest


@dataclass
class Manifest:
    """What an export directory holds: its files, and the next offset of every partition."""

    prefix: str = ""
    offsets: dict[str, dict[int, int]] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)
    updated_at: str | None = None

    def next_offset(self, topic: str, partition: int) -> int:
        return self.offsets.get(topic, {}).get(partition, 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "topic_prefix": self.prefix,
            "updated_at": self.updated_at,
            "offsets": {
                topic: {str(p): o for p, o in sorted(parts.items())}
                for topic, parts in self.offsets.items()
            },
            "files": self.files,
        }

    @classmethod
    def from_json(cls, raw: Any, where: Path) -> Manifest:
        try:
            if raw.get("format") != FORMAT_VERSION:
                raise ExportError(
                    f"{where} is export format {raw.get('format')!r}; this ledger reads format "
                    f"{FORMAT_VERSION}"
                )
            return cls(
                prefix=str(raw.get("topic_prefix", "")),
                offsets={
                    str(topic): {int(p): int(o) for p, o in parts.items()}
                    for topic, parts in raw["offsets"].items()
                },
                files=[dict(f) for f in raw["files"]],
                updated_at=raw.get("updated_at"),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ExportError(f"{where} is not a ledger export manifest ({exc})") from exc


def read_manifest(directory: Path) -> Manifest | None:
    """The manifest of an export directory, ``None`` when it has none."""
    path = directory / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ExportError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path} is not JSON ({exc})") from exc
    return Manifest.from_json(raw, path)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


# --------------------------------------------------------------------------- writing files


@dataclass
class ExportSummary:
    """What one run (or one follow session) did."""

    out: Path
    records: dict[str, int]
    files_written: int
    duration_s: float
    removed: int = 0

    @property
    def total(self) -> int:
        return sum(self.records.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "records": self.records,
            "total_records": self.total,
            "files_written": self.files_written,
            "removed_leftovers": self.removed,
            "duration_s": round(self.duration_s, 3),
            "records_per_s": round(self.total / self.duration_s) if self.duration_s > 0 else None,
        }


def _date(micros: int) -> str:
    return (_EPOCH + timedelta(microseconds=(micros // _DAY_US) * _DAY_US)).strftime("%Y-%m-%d")


class ExportWriter:
    """The file half of an export: rows in, Parquet files and the manifest out.

    Opening one repairs the directory (see the module docstring). :meth:`add` buffers a record's
    row; :meth:`flush` writes the buffered rows (one file per topic, partition and date) and then
    the manifest. Offsets must arrive in increasing order per partition, starting at
    :meth:`next_offset`.
    """

    def __init__(
        self, out: Path, topics: TopicNames, *, codec: Codec | None = None, create: bool = True
    ) -> None:
        self.out = out
        self.topics = topics
        self.rows = RowMaker(topics, codec=codec)
        self.formats: dict[str, TopicFormat] = self.rows.formats
        if out.exists() and not out.is_dir():
            raise ExportError(f"{out} is not a directory; choose another --out")
        if create:
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ExportError(f"cannot create {out}: {exc.strerror or exc}") from exc
        manifest = read_manifest(out)
        if manifest is not None and manifest.prefix != topics.prefix:
            raise ExportError(
                f"{out} holds an export of topics prefixed {manifest.prefix!r}, not "
                f"{topics.prefix!r}: export each ledger to its own directory"
            )
        self.manifest = manifest or Manifest(prefix=topics.prefix)
        self.removed = self._repair()
        self._buffers: dict[tuple[str, int, str], list[tuple[Any, ...]]] = {}
        self._pending: dict[tuple[str, int], int] = {}  # next offset of rows not yet flushed
        self.buffered = 0
        self.files_written = 0
        self.records: dict[str, int] = {topic: 0 for topic in self.formats}
        self._occurred = {
            topic: fmt.column_names.index("occurred_at") for topic, fmt in self.formats.items()
        }

    # ----------------------------------------------------------------------- repair

    def _repair(self) -> int:
        """Remove what a killed run left beyond the manifest (temporary and unlisted files)."""
        listed = {f["path"] for f in self.manifest.files}
        removed = 0
        for topic_dir in self.out.glob("topic=*"):
            if not topic_dir.is_dir():
                continue
            for path in topic_dir.glob("date=*/*"):
                name = path.name
                relative = path.relative_to(self.out).as_posix()
                leftover = (name.startswith(".") and ".tmp-" in name) or (
                    name.endswith(".parquet") and relative not in listed
                )
                if leftover and path.is_file():
                    path.unlink()
                    removed += 1
        for tmp in self.out.glob(f".{MANIFEST}.tmp-*"):
            tmp.unlink()
            removed += 1
        return removed

    # ----------------------------------------------------------------------- rows in

    def next_offset(self, topic: str, partition: int) -> int:
        """The offset the next record of this partition must have (buffered rows included)."""
        pending = self._pending.get((topic, partition))
        return pending if pending is not None else self.manifest.next_offset(topic, partition)

    def add(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int | None,
        key: bytes | None,
        value: bytes | None,
    ) -> None:
        """Buffer the row of one record."""
        row = self.rows.row(topic, partition, offset, timestamp_ms, key, value)
        self._buffer(topic, partition, offset, row)

    def add_event(
        self,
        topic: str,
        partition: int,
        offset: int,
        event: Event,
        *,
        key: bytes | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Buffer the row of ``event`` as if it had been read at ``partition``/``offset``
        (encoded with the codec; the Kafka timestamp defaults to the event's time)."""
        value = self.rows.codec.encode(event)
        if timestamp_ms is None:
            timestamp_ms = (event.occurred_at - _EPOCH) // timedelta(milliseconds=1)
        self.add(topic, partition, offset, timestamp_ms, key, value)

    def _buffer(self, topic: str, partition: int, offset: int, row: tuple[Any, ...]) -> None:
        micros = row[self._occurred[topic]]
        if micros is None:  # undecodable: the Kafka timestamp's date
            micros = (row[3] or 0) * 1000
        date = _date(micros)
        self._buffers.setdefault((topic, partition, date), []).append(row)
        self._pending[(topic, partition)] = offset + 1
        self.buffered += 1
        self.records[topic] += 1

    def mark(self, topic: str, partition: int, next_offset: int) -> None:
        """Record that ``partition`` has nothing to export before ``next_offset`` (a run that
        reached the end offset, past offsets that hold no record, e.g. transaction markers)."""
        if next_offset > self.next_offset(topic, partition):
            self._pending[(topic, partition)] = next_offset

    # ----------------------------------------------------------------------- files out

    def flush(self) -> int:
        """Write the buffered rows, then the manifest. Returns the number of files written."""
        if not self._buffers and not self._pending and (self.out / MANIFEST).exists():
            return 0  # nothing new; a first run writes its (empty) manifest: an empty export
        written: list[dict[str, Any]] = []
        for (topic, partition, date), rows in sorted(self._buffers.items()):
            first, last = rows[0][2], rows[-1][2]
            directory = self.out / f"topic={topic}" / f"date={date}"
            directory.mkdir(parents=True, exist_ok=True)
            name = f"{topic}+{partition}+{first}.parquet"
            path = directory / name
            tmp = directory / f".{name}.tmp-{os.getpid()}"
            table = self.rows.table(topic, rows)
            pq.write_table(
                table,
                tmp,
                compression="zstd",
                row_group_size=ROW_GROUP_ROWS,
                write_statistics=True,
            )
            with open(tmp, "rb+") as done:
                os.fsync(done.fileno())
            os.replace(tmp, path)
            _fsync_dir(directory)
            written.append(
                {
                    "path": path.relative_to(self.out).as_posix(),
                    "topic": topic,
                    "partition": partition,
                    "date": date,
                    "first_offset": first,
                    "last_offset": last,
                    "rows": len(rows),
                }
            )
        listed = {f["path"] for f in written}
        self.manifest.files = [f for f in self.manifest.files if f["path"] not in listed]
        self.manifest.files.extend(written)
        for (topic, partition), offset in self._pending.items():
            self.manifest.offsets.setdefault(topic, {})[partition] = offset
        self.manifest.updated_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        _atomic_write(
            self.out / MANIFEST,
            json.dumps(self.manifest.to_json(), indent=1, sort_keys=False).encode("utf-8"),
        )
        self._buffers.clear()
        self._pending.clear()
        self.buffered = 0
        self.files_written += len(written)
        return len(written)


# --------------------------------------------------------------------------- from Kafka


_CONSUMER: Final[dict[str, Any]] = {
    "fetch_max_wait_ms": 100,
    "max_partition_fetch_bytes": 8 * 1024 * 1024,
    "fetch_max_bytes": 64 * 1024 * 1024,
    "max_poll_records": 20_000,
    "receive_buffer_bytes": 4 * 1024 * 1024,
}


@contextlib.contextmanager
def _assigned(
    bootstrap: str, writer: ExportWriter, security: KafkaSecurity | None
) -> Iterator[tuple[Any, list[Any]]]:
    from ledger.kafka.clients import make_consumer
    from ledger.kafka.reading import topic_partitions

    consumer = make_consumer(bootstrap, security=security, **_CONSUMER)
    try:
        parts: list[Any] = []
        for topic in writer.formats:
            parts.extend(topic_partitions(consumer, topic, bootstrap=bootstrap))
        consumer.assign(parts)
        beginning = consumer.beginning_offsets(parts)
        for tp in parts:
            # A bounded topic (commands: 7 days) may have dropped records since the last run.
            consumer.seek(tp, max(writer.next_offset(tp.topic, tp.partition), beginning[tp]))
        yield consumer, parts
    finally:
        consumer.close()


def _drain(writer: ExportWriter, batch: dict[Any, list[Any]], end: dict[Any, int] | None) -> int:
    taken = 0
    for tp, records in batch.items():
        topic, partition = tp.topic, tp.partition
        expected = writer.next_offset(topic, partition)
        stop = end[tp] if end is not None else None
        for record in records:
            offset = record.offset
            if offset < expected or (stop is not None and offset >= stop):
                continue
            writer.add(topic, partition, offset, record.timestamp, record.key, record.value)
            taken += 1
    return taken


def export(
    out: Path,
    bootstrap: str,
    topics: TopicNames,
    *,
    batch_records: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    codec: Codec | None = None,
    security: KafkaSecurity | None = None,
) -> ExportSummary:
    """Export everything new in the ledger at ``bootstrap`` into ``out`` (see module doc)."""
    started = time.perf_counter()
    writer = ExportWriter(out, topics, codec=codec)
    with _assigned(bootstrap, writer, security) as (consumer, parts):
        end = consumer.end_offsets(parts)
        todo = {tp: end[tp] - consumer.position(tp) for tp in parts}
        total = sum(max(0, n) for n in todo.values())
        remaining = {tp for tp in parts if consumer.position(tp) < end[tp]}
        done = 0
        if progress is not None:
            progress(0, total)
        idle_polls = 0
        while remaining:
            batch = consumer.poll(timeout_ms=1000, max_records=_CONSUMER["max_poll_records"])
            if not batch:
                idle_polls += 1
                if idle_polls > 30:
                    raise ExportError(
                        f"no records arrived for 30 s although {len(remaining)} partition(s) "
                        "have more: is the broker healthy?"
                    )
            else:
                idle_polls = 0
            done += _drain(writer, batch, end)
            for tp in list(remaining):
                if consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
            if progress is not None:
                progress(done, total)
            if writer.buffered >= batch_records:
                writer.flush()
        for tp in parts:
            writer.mark(tp.topic, tp.partition, end[tp])
        writer.flush()
    return ExportSummary(
        out=out,
        records=dict(writer.records),
        files_written=writer.files_written,
        duration_s=time.perf_counter() - started,
        removed=writer.removed,
    )


def follow(
    out: Path,
    bootstrap: str,
    topics: TopicNames,
    *,
    stop: threading.Event,
    interval: float = DEFAULT_FLUSH_INTERVAL,
    batch_records: int = DEFAULT_BATCH,
    on_flush: Callable[[ExportSummary], None] | None = None,
    codec: Codec | None = None,
    security: KafkaSecurity | None = None,
) -> ExportSummary:
    """Export continuously until ``stop`` is set: everything new is flushed every ``interval``
    seconds (or every ``batch_records`` rows), so the export trails the ledger by about that.
    When ``stop`` is set, the rows read so far are flushed and the function returns."""
    started = time.perf_counter()
    writer = ExportWriter(out, topics, codec=codec)
    with _assigned(bootstrap, writer, security) as (consumer, _parts):
        last_flush = time.monotonic()
        while not stop.is_set():
            batch = consumer.poll(
                timeout_ms=int(min(interval, 0.5) * 1000),
                max_records=_CONSUMER["max_poll_records"],
            )
            _drain(writer, batch, None)
            due = time.monotonic() - last_flush >= interval
            if writer.buffered >= batch_records or (due and writer.buffered):
                writer.flush()
                last_flush = time.monotonic()
                if on_flush is not None:
                    on_flush(_summary(writer, started))
            elif due:
                last_flush = time.monotonic()
        writer.flush()
    return _summary(writer, started)


def _summary(writer: ExportWriter, started: float) -> ExportSummary:
    return ExportSummary(
        out=writer.out,
        records=dict(writer.records),
        files_written=writer.files_written,
        duration_s=time.perf_counter() - started,
        removed=writer.removed,
    )


def write_events(
    out: Path,
    topics: TopicNames,
    events: Iterable[tuple[str, Event]],
    *,
    codec: Codec | None = None,
) -> ExportWriter:
    """Write ``(topic, event)`` pairs in the export format without Kafka (tests, benchmarks):
    each topic's events get partition 0 and consecutive offsets after what the directory holds."""
    writer = ExportWriter(out, topics, codec=codec)
    for topic, event in events:
        writer.add_event(topic, 0, writer.next_offset(topic, 0), event)
    writer.flush()
    return writer
