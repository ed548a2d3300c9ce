"""``ledger export``: every ledger topic to Parquet, incremental and idempotent (DESIGN §9).

Layout (the export spec)::

    DIR/topic=<topic>/date=YYYY-MM-DD/<topic>+<partition>+<first offset>.parquet
    DIR/_manifest.json

``date`` is the UTC date of the event's ``occurred_at`` (the Kafka timestamp's for a record that
does not decode, or, on a topic outsiders write, whose ``occurred_at`` is more than a day from
it: :func:`~ledger.audit.writer.row_date`). Rows are made by :class:`~ledger.audit.rows.RowMaker`.

How a run stays exact, whatever happens to it:

1. The manifest lists every data file of the export and, per topic and partition, the next
   offset to export. A file is written under a temporary name, flushed to disk and renamed;
   the manifest is rewritten (temporary name, fsync, rename) only after the files it lists are
   complete. So the manifest never names a partial file, and its offsets are exactly the rows
   of its files.
2. A run first removes whatever a killed run left beyond the manifest: temporary files, and
   data files the manifest does not list (their rows are exported again from the manifest's
   offsets, under the same deterministic names). Nothing else in the directory is touched.
   One writer at a time: a writer holds an exclusive lock on ``DIR/.export.lock`` while it
   lives (the kernel releases it if its process dies), so a second run cannot remove a first
   one's files before it lists them; it stops with one line naming the holder's pid.
3. It then reads each partition from the manifest's offset to the end offset seen at the start
   (a consistent prefix of the log) and flushes every ``batch_records`` rows (new files, then
   the manifest). Re-running adds exactly what is new; nothing is duplicated or dropped.
4. The manifest says whether the run that last wrote it finished: a run records
   ``complete: false`` (and when it read the end offsets) with its first flush and ``true``
   with its last, so a run killed or interrupted between them leaves a manifest that readers
   and ``ledger audit verify`` call incomplete (its topics end at different points: requests
   without their decisions) until a run finishes. ``--follow`` is complete once it has caught
   up with the end offsets it saw at its start.
5. A run that fails before it has written anything (Kafka unreachable, the exporter refused)
   removes the directories it created: it leaves no empty directory that readers would take
   for an export.

6. Small files are merged as they gather (:meth:`ExportWriter.compact`): the merged file is
   written like any other, one manifest rewrite lists it in place of its inputs, and the inputs
   stay on disk (the manifest's ``retired`` list) for :data:`RETIRE_AFTER_S`, for readers that
   listed them before. A merge cut short leaves an unlisted file, which the repair removes.

Readers (:func:`ledger.audit.sql.connect`) read the files the manifest lists, so a reader never
sees a file of a run that has not committed it.

Where each part lives:

- :mod:`ledger.audit.writer`: the file and manifest half (:class:`ExportWriter`), usable
  without Kafka (tests and the audit benchmark write the export format with it);
- :mod:`ledger.audit.folder`: every file touched safely in a folder that may be shared, so
  whoever can write into it is an attacker here (the manifest is checked as it is read, in
  :mod:`ledger.audit.manifest`): nothing planted or swapped in makes the writer write,
  truncate or remove a file outside the export, or copy one in;
- :mod:`ledger.audit.fromkafka`: reading the topics with librdkafka (``confluent-kafka``);
- :mod:`ledger.audit.pool`: a one-shot run with more than :data:`POOL_THRESHOLD` records to
  read is done by helper processes (one per core), a unit of consecutive offsets each, while
  this process keeps the manifest;
- here: :func:`export` and :func:`follow`, which put them together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Final

from ledger.audit.folder import LOCK
from ledger.audit.fromkafka import RDKAFKA_CONFIG, Idle, Ranges, Sink, Source
from ledger.audit.manifest import FORMAT_VERSION, MANIFEST, ExportPath, Manifest, read_manifest
from ledger.audit.pool import (
    POOL_HELPERS,
    POOL_THRESHOLD,
    Helpers,
    Progress,
    export_in_helpers,
    start_fork_server,
)
from ledger.audit.writer import (
    COMPACT_FANIN,
    COMPACT_MAX_FILES,
    COMPACT_MAX_ROWS,
    CORES,
    RETIRE_AFTER_S,
    ROW_GROUP_ROWS,
    ExportSummary,
    ExportWriter,
)
from ledger.codec import Codec
from ledger.core.events import Event
from ledger.settings import KafkaSecurity, TopicNames

__all__ = [
    "MANIFEST",
    "LOCK",
    "FORMAT_VERSION",
    "ExportPath",
    "DEFAULT_BATCH",
    "DEFAULT_FLUSH_INTERVAL",
    "POOL_THRESHOLD",
    "COMPACT_FANIN",
    "COMPACT_MAX_ROWS",
    "COMPACT_MAX_FILES",
    "RETIRE_AFTER_S",
    "RDKAFKA_CONFIG",
    "ROW_GROUP_ROWS",
    "ExportSummary",
    "Manifest",
    "ExportWriter",
    "export",
    "follow",
    "read_manifest",
    "write_events",
]

DEFAULT_BATCH: Final = 200_000
"""Rows buffered before a flush (files + manifest) during a one-shot export."""
DEFAULT_FLUSH_INTERVAL: Final = 2.0
"""Seconds between flushes in ``--follow`` mode (when something new arrived)."""


@contextlib.contextmanager
def _discarded_on_failure(writer: ExportWriter) -> Iterator[None]:
    """On any failure, remove what ``writer`` created if nothing was written there (see
    :meth:`ExportWriter.discard`), then let the failure through."""
    try:
        yield
    except BaseException:
        writer.discard()
        raise


def export(
    out: ExportPath,
    bootstrap: str,
    topics: TopicNames,
    *,
    batch_records: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    codec: Codec | None = None,
    security: KafkaSecurity | None = None,
    helpers: int | None = None,
    remove_retired: bool = False,
) -> ExportSummary:
    """Export everything new in the ledger at ``bootstrap`` into ``out`` (see module doc).

    ``remove_retired``: at the end, remove the files merged away now rather than ten minutes
    after their merge (:meth:`ExportWriter.remove_retired`), before handing the export to a
    reader that lists folders.

    ``helpers``: processes doing the export when there are more than :data:`POOL_THRESHOLD`
    records to read (default: one per core, at most :data:`POOL_HELPERS`, none on one core;
    0: none, this process does it). A run given another ``codec`` stays in this process. They
    are started the ``multiprocessing`` way: a script calling this must guard its top level
    with ``if __name__ == "__main__"``."""
    started = time.perf_counter()
    writer = ExportWriter(out, topics, codec=codec)
    with _discarded_on_failure(writer), writer:
        if helpers is None:
            helpers = min(CORES, POOL_HELPERS) if CORES > 1 else 0
        if helpers > 0 and codec is None:
            start_fork_server()
        source = Source(bootstrap, topics, security)
        try:
            read_at = datetime.now(UTC)  # before the end offsets are read: a lower bound
            ranges = source.plan(writer)
            writer.note_run(read_at=read_at, complete=False)
            total = sum(max(end - start, 0) for start, end in ranges.values())
            if progress is not None:
                progress(0, total)
            if helpers > 0 and total > POOL_THRESHOLD and codec is None:
                source.close()  # this process only keeps the manifest now
                pool = Helpers(writer, bootstrap, security, helpers)
                try:
                    export_in_helpers(
                        writer,
                        {where: span for where, span in ranges.items() if span[0] < span[1]},
                        pool,
                        batch_records=batch_records,
                        progress=progress,
                    )
                except BaseException:  # a Ctrl-C among them: the helpers stop now
                    pool.close(now=True)
                    raise
                pool.close()
            else:
                _export_here(writer, source, ranges, batch_records, progress, total)
            for (topic, partition), (_, end) in ranges.items():
                writer.mark(topic, partition, end)
            writer.note_run(read_at=read_at, complete=True)
            writer.flush()
            retired = writer.remove_retired() if remove_retired else 0
        finally:
            source.close()
    return dataclasses.replace(_summary(writer, started), retired_removed=retired)


def _export_here(
    writer: ExportWriter,
    source: Source,
    ranges: Ranges,
    batch_records: int,
    progress: Progress | None,
    total: int,
) -> None:
    """Export ``ranges`` in this process, flushing every ``batch_records`` rows."""
    source.watch(ranges, bounded=True)
    sink = Sink(writer, writer.next_offset)
    remaining = {where for where, (start, end) in ranges.items() if start < end}
    done = 0
    idle = Idle(source.bootstrap)
    while remaining:
        taken, arrived = source.read(sink, bounded=True)
        remaining -= source.done
        if arrived:
            idle.arrived()
        else:
            idle.check(f"{len(remaining)} partition(s) have more")
        done += taken
        if progress is not None:
            progress(done, total)
        if writer.buffered >= batch_records:
            writer.flush()


def follow(
    out: ExportPath,
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
    with _discarded_on_failure(writer), writer:
        source = Source(bootstrap, topics, security)
        sink = Sink(writer, writer.next_offset)
        try:
            read_at = datetime.now(UTC)
            ranges = source.plan(writer)
            source.watch(ranges, bounded=False)
            writer.note_run(read_at=read_at, complete=False)
            last_flush = time.monotonic()
            caught_up = False
            while not stop.is_set():
                source.read(sink, bounded=False, wait=min(interval, 0.5))
                # Complete once every partition reached the end offset seen at the start; from
                # then on each flush holds what was read about when it ran.
                caught_up = caught_up or source.done >= ranges.keys()
                due = time.monotonic() - last_flush >= interval
                if caught_up and (writer.buffered or not writer.complete):
                    writer.note_run(read_at=datetime.now(UTC), complete=True)
                if writer.buffered >= batch_records or (
                    due and (writer.buffered or writer.unsaved)
                ):
                    writer.flush()
                    last_flush = time.monotonic()
                    if on_flush is not None:
                        on_flush(_summary(writer, started))
                elif due:
                    last_flush = time.monotonic()
                    writer.compact()  # idle: still lets retired files go when their time comes
            writer.flush()
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
        unlisted=tuple(writer.unlisted),
        compacted=writer.files_compacted,
        problems=tuple(writer.warnings + writer.compaction_problems),
    )


def write_events(
    out: ExportPath,
    topics: TopicNames,
    events: Iterable[tuple[str, Event]],
    *,
    codec: Codec | None = None,
) -> ExportWriter:
    """Write ``(topic, event)`` pairs in the export format without Kafka (tests, benchmarks):
    each topic's events get partition 0 and consecutive offsets after what the directory holds.
    The writer it returns is closed (its manifest and counts stay readable)."""
    with ExportWriter(out, topics, codec=codec) as writer:
        for topic, event in events:
            writer.add_event(topic, 0, writer.next_offset(topic, 0), event)
        writer.flush()
    return writer
