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

Kafka is read with librdkafka (``confluent-kafka``). A one-shot run with more than
:data:`POOL_THRESHOLD` records to read makes rows in helper processes too, a chunk of one
partition at a time; results come back in the order the chunks were cut, so the writer still
sees every partition in offset order, and only this process writes files and the manifest.

:class:`ExportWriter` is the file and manifest half, usable without Kafka (tests and the audit
benchmark write the export format with it); :func:`export` / :func:`follow` add Kafka.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
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
    "POOL_THRESHOLD",
    "RDKAFKA_CONFIG",
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
_CORES: Final = (
    len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
)
"""Cores this process may run on."""
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


_DATES: dict[int, str] = {}


def row_date(row: tuple[Any, ...], occurred: int) -> str:
    """The ``date=`` partition of a row: the UTC date of its ``occurred_at`` (column
    ``occurred``), or of its Kafka timestamp when the record did not decode."""
    micros = row[occurred]
    if micros is None:
        micros = (row[3] or 0) * 1000
    day = micros // _DAY_US
    found = _DATES.get(day)
    if found is None:
        found = _DATES[day] = _date(micros)
    return found


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
        # (topic, partition, date) -> rows in offset order (tuples, or whole Arrow tables that
        # worker processes made), and the first and last offset among them.
        self._buffers: dict[tuple[str, int, str], list[tuple[Any, ...] | pa.Table]] = {}
        self._spans: dict[tuple[str, int, str], list[int]] = {}
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
        key = (topic, partition, row_date(row, self._occurred[topic]))
        found = self._buffers.get(key)
        if found is None:
            self._buffers[key] = [row]
            self._spans[key] = [offset, offset]
        else:
            found.append(row)
            self._spans[key][1] = offset
        self._pending[(topic, partition)] = offset + 1
        self.buffered += 1
        self.records[topic] += 1

    def add_table(self, topic: str, partition: int, date: str, table: pa.Table) -> None:
        """Buffer rows already made into a table of the topic's schema (by a worker process):
        rows of ``partition`` whose date is ``date``, in offset order, after every row buffered
        for the partition so far."""
        if not table.num_rows:
            return
        offsets = table.column("offset")
        first, last = offsets[0].as_py(), offsets[-1].as_py()
        key = (topic, partition, date)
        found = self._buffers.get(key)
        if found is None:
            self._buffers[key] = [table]
            self._spans[key] = [first, last]
        else:
            found.append(table)
            self._spans[key][1] = last
        pending = self._pending.get((topic, partition), -1)
        self._pending[(topic, partition)] = max(pending, last + 1)
        self.buffered += table.num_rows
        self.records[topic] += table.num_rows

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
        keys = sorted(self._buffers)
        if len(keys) > 1 and _CORES > 1:
            # Compression and fsync release the GIL: the files of a flush are written side by
            # side (a large run's last flush was one core writing six files while the other
            # idled). Every file is complete before the manifest below names it.
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(len(keys), _CORES)) as threads:
                written = list(threads.map(self._write_file, keys))
        else:
            written = [self._write_file(key) for key in keys]
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
        self._spans.clear()
        self._pending.clear()
        self.buffered = 0
        self.files_written += len(written)
        return len(written)

    def _write_file(self, key: tuple[str, int, str]) -> dict[str, Any]:
        """Write the buffered rows of ``key`` (topic, partition, date) to their file, durably;
        returns the file's manifest entry."""
        topic, partition, date = key
        first, last = self._spans[key]
        directory = self.out / f"topic={topic}" / f"date={date}"
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{topic}+{partition}+{first}.parquet"
        path = directory / name
        tmp = directory / f".{name}.tmp-{os.getpid()}"
        table = self._table(topic, self._buffers[key])
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
        return {
            "path": path.relative_to(self.out).as_posix(),
            "topic": topic,
            "partition": partition,
            "date": date,
            "first_offset": first,
            "last_offset": last,
            "rows": table.num_rows,
        }

    def _table(self, topic: str, parts: list[tuple[Any, ...] | pa.Table]) -> pa.Table:
        """One table of the buffered parts (runs of row tuples become tables, in order)."""
        tables: list[pa.Table] = []
        run: list[tuple[Any, ...]] = []
        for part in parts:
            if isinstance(part, pa.Table):
                if run:
                    tables.append(self.rows.table(topic, run))
                    run = []
                tables.append(part)
            else:
                run.append(part)
        if run:
            tables.append(self.rows.table(topic, run))
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


# --------------------------------------------------------------------------- from Kafka

# The topics are read with librdkafka (confluent-kafka), not kafka-python: on the benchmark's
# 200,000 decisions kafka-python spent ~85 µs a record in pure-Python batch parsing and CRC-32C
# (more than making the rows), librdkafka ~3-5 µs (see the README's status table).
RDKAFKA_CONFIG: Final[dict[str, Any]] = {
    "fetch.wait.max.ms": 100,
    "fetch.max.bytes": 64 * 1024 * 1024,
    "max.partition.fetch.bytes": 8 * 1024 * 1024,
    "queued.max.messages.kbytes": 64 * 1024,
    "socket.receive.buffer.bytes": 4 * 1024 * 1024,
    # As kafka-python read: every record, and each batch's CRC checked.
    "isolation.level": "read_uncommitted",
    "check.crcs": True,
    # An end-of-partition event: how a run knows it is past offsets that hold no record
    # (transaction markers, compacted gaps) just before the end offset it captured.
    "enable.partition.eof": True,
}
"""librdkafka settings of the export's consumer (on the ledger's consumer defaults)."""
_CONSUME_BATCH: Final = 10_000
"""Records taken from librdkafka's queue per call."""
_IDLE_LIMIT: Final = 30.0
"""Seconds without a record or an end-of-partition event before a one-shot export gives up."""
POOL_THRESHOLD: Final = 20_000
"""A one-shot export with more records than this to read makes its rows in helper processes
too (one per core, at most :data:`POOL_HELPERS`); a smaller one does not pay their start-up."""
POOL_HELPERS: Final = 4
_CHUNK: Final = 4_096
"""Records of one partition a process turns into rows at a time."""

Where = tuple[str, int]


class _Source:
    """The ledger's topics, assigned from the writer's next offsets (never before the log
    start: a bounded topic, commands with its 7 days, may have dropped records since the last
    run), with the end offsets seen at the start."""

    def __init__(
        self,
        bootstrap: str,
        writer: ExportWriter,
        security: KafkaSecurity | None,
        *,
        bounded: bool,
    ) -> None:
        from confluent_kafka import TopicPartition

        from ledger.kafka.clients import make_rdkafka_consumer
        from ledger.kafka.reading import rdkafka_partitions

        self.bootstrap = bootstrap
        self.done: set[Where] = set()  # partitions read up to their end offset
        # The exporter's group (its ACLs allow it); it is never joined nor committed to.
        group = {"group.id": f"{writer.topics.prefix}ledger-exporter.export"}
        self.consumer = make_rdkafka_consumer(
            bootstrap, security=security, **RDKAFKA_CONFIG, **group
        )
        try:
            self.start: dict[Where, int] = {}
            self.end: dict[Where, int] = {}
            assignment = []
            for topic in writer.formats:
                for partition in rdkafka_partitions(self.consumer, topic, bootstrap=bootstrap):
                    tp = TopicPartition(topic, partition)
                    low, high = self._watermarks(tp)
                    where = (topic, partition)
                    self.start[where] = max(writer.next_offset(topic, partition), low)
                    self.end[where] = high
                    if not bounded or self.start[where] < high:
                        assignment.append(TopicPartition(topic, partition, self.start[where]))
            self.consumer.assign(assignment)
        except BaseException:
            self.consumer.close()
            raise

    def _watermarks(self, tp: Any) -> tuple[int, int]:
        from confluent_kafka import KafkaException

        give_up = time.monotonic() + 10.0
        while True:
            try:
                low, high = self.consumer.get_watermark_offsets(tp, timeout=10.0)
                return int(low), int(high)
            except KafkaException as exc:
                error = exc.args[0]
                # A topic created a moment ago may have no leader yet: ask again.
                if time.monotonic() >= give_up or not error.retriable():
                    raise self._error(error) from exc
            time.sleep(0.1)

    def _error(self, error: Any) -> Exception:
        from confluent_kafka import KafkaError

        from ledger.errors import KafkaAccessDenied, KafkaUnavailable

        if error.code() in (
            KafkaError._AUTHENTICATION,
            KafkaError.SASL_AUTHENTICATION_FAILED,
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
        ):
            return KafkaAccessDenied(f"Kafka at {self.bootstrap} refused the exporter: {error}")
        if error.fatal():
            return KafkaUnavailable(f"reading Kafka at {self.bootstrap} failed: {error}")
        return ExportError(f"reading Kafka at {self.bootstrap} failed: {error}")

    def read(self, sink: _Sink, *, bounded: bool, wait: float = 1.0) -> tuple[int, bool]:
        """Hand ``sink`` the next records (those of a bounded run below its end offsets only).
        Returns (records handed, whether anything arrived: a record or an end of partition)."""
        from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError

        messages = self.consumer.consume(num_messages=_CONSUME_BATCH, timeout=wait)
        if not messages:
            return 0, False
        end, done, add = self.end, self.done, sink.add
        taken = 0
        for message in messages:
            error = message.error()
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if error is not None:
                code = error.code()
                if code == KafkaError._PARTITION_EOF:
                    if offset >= end.get((topic, partition), 0):
                        done.add((topic, partition))
                    continue
                if code == KafkaError.GROUP_AUTHORIZATION_FAILED:
                    continue  # the never-used group: a role without it still exports
                if error.fatal() or code in (
                    KafkaError._AUTHENTICATION,
                    KafkaError.SASL_AUTHENTICATION_FAILED,
                    KafkaError.TOPIC_AUTHORIZATION_FAILED,
                ):
                    raise self._error(error)
                continue  # transient (a broker restarting): librdkafka retries
            where = (topic, partition)
            if bounded:
                stop = end[where]
                if offset + 1 >= stop:
                    done.add(where)
                    if offset >= stop:
                        continue
            kind, timestamp = message.timestamp()
            if add(
                topic,
                partition,
                offset,
                None if kind == TIMESTAMP_NOT_AVAILABLE else timestamp,
                message.key(),
                message.value(),
            ):
                taken += 1
        return taken, True

    def close(self) -> None:
        self.consumer.close()


class _Sink:
    """Rows into the writer, made in this process. Skips what the writer already has."""

    def __init__(self, writer: ExportWriter) -> None:
        self.writer = writer
        self._next: dict[Where, int] = {}

    def expected(self, topic: str, partition: int) -> int:
        found = self._next.get((topic, partition))
        return found if found is not None else self.writer.next_offset(topic, partition)

    def add(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int | None,
        key: bytes | None,
        value: bytes | None,
    ) -> bool:
        if offset < self.expected(topic, partition):
            return False  # read again after a seek, or before what the manifest holds
        self._next[(topic, partition)] = offset + 1
        self._take(topic, partition, offset, timestamp_ms, key, value)
        return True

    def _take(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int | None,
        key: bytes | None,
        value: bytes | None,
    ) -> None:
        self.writer.add(topic, partition, offset, timestamp_ms, key, value)

    @property
    def buffered(self) -> int:
        return self.writer.buffered

    def flush(self) -> int:
        return self.writer.flush()

    def close(self) -> None:
        pass


class _PooledSink(_Sink):
    """Rows made a chunk of one partition's records at a time, by helper processes and by this
    one: a chunk goes to a helper when one is free, else this process makes it while the
    helpers work. Results are taken back in the order the chunks were cut, so every
    partition's rows reach the writer in offset order; this process writes the files and the
    manifest."""

    def __init__(self, writer: ExportWriter, helpers: int) -> None:
        from concurrent.futures import ProcessPoolExecutor

        super().__init__(writer)
        self._pool = ProcessPoolExecutor(
            max_workers=helpers,
            mp_context=_helper_context(),
            initializer=_worker_init,
            initargs=(writer.topics, os.getpid()),
        )
        self._helpers = helpers
        self._chunks: dict[Where, list[_Record]] = {}
        # In the order cut: (where, a helper's future, or the tables made here, and the count).
        self._ordered: collections.deque[tuple[Where, Future[Any] | _Made]] = collections.deque()
        self._busy = 0  # chunks sent to helpers and not yet taken back
        self._held = 0  # records in chunks and in flight

    def _take(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int | None,
        key: bytes | None,
        value: bytes | None,
    ) -> None:
        where = (topic, partition)
        chunk = self._chunks.get(where)
        if chunk is None:
            chunk = self._chunks[where] = []
        chunk.append((offset, timestamp_ms, key, value))
        self._held += 1
        if len(chunk) >= _CHUNK:
            self._cut(where)

    def _cut(self, where: Where) -> None:
        chunk = self._chunks.pop(where)
        while self._ordered and self._ready(self._ordered[0][1]):
            self._collect()
        if self._busy < 4 * self._helpers:  # one at work and one queued, per helper
            self._ordered.append((where, self._pool.submit(_worker_tables, *where, chunk)))
            self._busy += 1
        else:  # every helper is busy: this process makes this chunk's rows meanwhile
            made = make_tables(self.writer.rows, *where, chunk)
            self._ordered.append((where, (made, len(chunk))))
        while len(self._ordered) > 4 * (self._helpers + 1):  # bounds memory
            self._collect()

    @staticmethod
    def _ready(item: Future[Any] | _Made) -> bool:
        return not isinstance(item, Future) or item.done()

    def _collect(self) -> None:
        (topic, partition), item = self._ordered.popleft()
        if isinstance(item, Future):
            self._busy -= 1
            try:
                tables, count = item.result()
            except Exception as exc:
                raise ExportError(f"a worker process failed making rows of {topic}: {exc}") from exc
        else:
            tables, count = item
        for date, table in tables:
            self.writer.add_table(topic, partition, date, table)
        self._held -= count

    @property
    def buffered(self) -> int:
        return self.writer.buffered + self._held

    def flush(self) -> int:
        for where in list(self._chunks):
            self._cut(where)
        while self._ordered:
            self._collect()
        return self.writer.flush()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


_Record = tuple[int, int | None, bytes | None, bytes | None]
_Made = tuple[list[tuple[str, pa.Table]], int]


_WORKER_ROWS: list[RowMaker] = []


def _worker_init(topics: TopicNames, parent: int) -> None:
    server = os.getppid()  # the fork server (it exits once the export and its helpers have)

    def watch() -> None:
        # A helper outlives an export killed by SIGKILL (nothing tells it): it would keep the
        # export's stdout and stderr open, and its caller waiting for their end.
        while os.getppid() == server and _alive(parent):
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="ledger-export-parent-watch", daemon=True).start()
    _WORKER_ROWS.append(RowMaker(topics))


_PROC: Final = Path("/proc/self/stat").exists()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs. A killed export stays a zombie until its own parent reaps
    it, and a parent waiting for the export's output to end reaps it only after that: a zombie
    counts as gone (Linux tells, from ``/proc``)."""
    if _PROC:
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            return False
        return stat.rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _worker_tables(topic: str, partition: int, records: list[_Record]) -> _Made:
    """In a worker: the rows of one partition's records, a table per date in offset order."""
    (rows,) = _WORKER_ROWS
    return make_tables(rows, topic, partition, records), len(records)


def make_tables(
    rows: RowMaker, topic: str, partition: int, records: list[_Record]
) -> list[tuple[str, pa.Table]]:
    """``records`` (offset, Kafka timestamp, key, value) of one partition as Arrow tables of the
    topic's schema, one per ``date=`` partition, rows in offset order."""
    occurred = rows.formats[topic].column_names.index("occurred_at")
    by_date: dict[str, list[tuple[Any, ...]]] = {}
    row = rows.row
    for offset, timestamp_ms, key, value in records:
        made = row(topic, partition, offset, timestamp_ms, key, value)
        date = row_date(made, occurred)
        found = by_date.get(date)
        if found is None:
            by_date[date] = [made]
        else:
            found.append(made)
    return [(date, rows.table(topic, made)) for date, made in by_date.items()]


def _helper_context() -> Any:
    """Helpers are forked from a fresh server process that has imported the row maker once
    (each of them spawned from scratch spent ~0.8 s importing), never from this process:
    it already runs librdkafka's threads."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["ledger.audit.export"])
    return context


def _sink(writer: ExportWriter, backlog: int, codec: Codec | None, helpers: int | None) -> _Sink:
    if helpers is None:
        helpers = min(_CORES, POOL_HELPERS) if _CORES > 1 else 0
    # Helpers make rows with the default codec: a run given another codec stays in one process.
    if helpers < 1 or backlog <= POOL_THRESHOLD or codec is not None:
        return _Sink(writer)
    return _PooledSink(writer, helpers)


def export(
    out: Path,
    bootstrap: str,
    topics: TopicNames,
    *,
    batch_records: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    codec: Codec | None = None,
    security: KafkaSecurity | None = None,
    helpers: int | None = None,
) -> ExportSummary:
    """Export everything new in the ledger at ``bootstrap`` into ``out`` (see module doc).

    ``helpers``: processes making rows beside this one when there are more than
    :data:`POOL_THRESHOLD` records to read (default: one per core, at most
    :data:`POOL_HELPERS`, none on one core; 0: none). They are started the ``multiprocessing``
    way: a script calling this must guard its top level with ``if __name__ == "__main__"``."""
    started = time.perf_counter()
    writer = ExportWriter(out, topics, codec=codec)
    source = _Source(bootstrap, writer, security, bounded=True)
    try:
        end = source.end
        remaining = {where for where, start in source.start.items() if start < end[where]}
        total = sum(end[where] - source.start[where] for where in remaining)
        sink = _sink(writer, total, codec, helpers)
        try:
            done = 0
            if progress is not None:
                progress(0, total)
            last_arrival = time.monotonic()
            while remaining:
                taken, arrived = source.read(sink, bounded=True)
                remaining -= source.done
                if arrived:
                    last_arrival = time.monotonic()
                elif time.monotonic() - last_arrival > _IDLE_LIMIT:
                    raise ExportError(
                        f"no records arrived for {_IDLE_LIMIT:g} s although {len(remaining)} "
                        "partition(s) have more: is the broker healthy?"
                    )
                done += taken
                if progress is not None:
                    progress(done, total)
                if sink.buffered >= batch_records:
                    sink.flush()
            for topic, partition in end:
                writer.mark(topic, partition, end[(topic, partition)])
            sink.flush()
        finally:
            sink.close()
    finally:
        source.close()
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
    source = _Source(bootstrap, writer, security, bounded=False)
    sink = _Sink(writer)
    try:
        last_flush = time.monotonic()
        while not stop.is_set():
            source.read(sink, bounded=False, wait=min(interval, 0.5))
            due = time.monotonic() - last_flush >= interval
            if sink.buffered >= batch_records or (due and sink.buffered):
                sink.flush()
                last_flush = time.monotonic()
                if on_flush is not None:
                    on_flush(_summary(writer, started))
            elif due:
                last_flush = time.monotonic()
        sink.flush()
    finally:
        source.close()
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
