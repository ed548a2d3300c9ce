"""The file half of an export: rows in, Parquet files and the manifest out, without Kafka.

:class:`RowFiles` buffers rows per topic, partition and date and writes them as complete
files (what the export's helper processes do); :class:`ExportWriter` adds the manifest, the
repair of what a killed run left, and the merging of small files. How that keeps an export
exact whatever happens to a run is in :mod:`ledger.audit.export`; every file is touched through
:mod:`ledger.audit.folder`. Tests and the audit benchmark write the export format with
:class:`ExportWriter` alone.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import json
import os
import stat
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from ledger.audit import folder
from ledger.audit.manifest import (
    MANIFEST,
    ExportPath,
    Manifest,
    file_path,
    read_manifest,
    readable_folder,
)
from ledger.audit.rows import RowMaker, TopicFormat, topic_formats
from ledger.codec import Codec
from ledger.core.events import Event
from ledger.core.jsonform import format_timestamp
from ledger.errors import ExportError
from ledger.settings import TopicNames

__all__ = [
    "ROW_GROUP_ROWS",
    "COMPACT_FANIN",
    "COMPACT_MAX_ROWS",
    "COMPACT_MAX_FILES",
    "RETIRE_AFTER_S",
    "CORES",
    "ExportSummary",
    "RowFiles",
    "ExportWriter",
    "row_date",
    "span_union",
]

ROW_GROUP_ROWS: Final = 16_384
"""Rows per Parquet row group. Ids and times grow with the offsets, so each group's min/max
narrows a lookup (a decision by id, a time window) to a few groups; at DuckDB's default of
122,880 rows a lookup by id over 10 M decisions decoded ~3.5 times more than it needed."""
COMPACT_FANIN: Final = 16
"""Consecutive small files (by offset) of one topic, partition and date that are merged into
one when this many have gathered: runs of files, so merged files never overlap in offsets and
keep their rows in offset order."""
COMPACT_MAX_ROWS: Final = 4_096
"""Files of this many rows or more are never merged: their footer costs a reader little per row
(~0.25 ms a file), and a one-shot export's files (a flush's rows per partition) are left as
written. A merged file under it can be merged again with the small files after it."""
COMPACT_MAX_FILES: Final = 256
"""Files one merge takes at most (the rest wait for the next flush): bounds one merge's time."""
RETIRE_AFTER_S: Final = 600.0
"""Seconds a file merged into another stays on disk, unlisted, for readers that listed it."""

_DAY_US: Final = 86_400_000_000
CORES: Final = (
    len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
)
"""Cores this process may run on."""
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

_CHUNK: Final = 4_096
"""Rows of one file made into an Arrow table at a time (bounds the memory rows take)."""


def _entry(
    relative: str, key: tuple[str, int, str], span: tuple[int, int], rows: int
) -> dict[str, Any]:
    """A data file's manifest entry (``key``: topic, partition, date; ``span``: first and last
    offset)."""
    topic, partition, date = key
    first, last = span
    return {
        "path": relative,
        "topic": topic,
        "partition": partition,
        "date": date,
        "first_offset": first,
        "last_offset": last,
        "rows": rows,
    }


@dataclass
class ExportSummary:
    """What one run (or one follow session) did."""

    out: Path
    records: dict[str, int]
    files_written: int
    duration_s: float
    removed: int = 0
    unlisted: tuple[str, ...] = ()
    """Data files found in the export's folders but not in its manifest, removed (among
    ``removed``): what a run stopped before its manifest left, or someone else put there."""
    compacted: int = 0
    problems: tuple[str, ...] = ()
    """Housekeeping that could not be done (a merge of small files), the export itself done."""
    retired_removed: int = 0
    """Files merged away removed at the end of the run rather than ten minutes after their
    merge (``remove_retired``): nothing but the listed files is left in the folders."""

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
            "removed_unlisted_files": list(self.unlisted),
            "files_compacted": self.compacted,
            "removed_retired_files": self.retired_removed,
            "problems": list(self.problems),
            "duration_s": round(self.duration_s, 3),
            "records_per_s": round(self.total / self.duration_s) if self.duration_s > 0 else None,
        }


_FIRST_DAY: Final = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(days=1)
_LAST_DAY: Final = (datetime(9999, 12, 31, tzinfo=UTC) - _EPOCH) // timedelta(days=1)


def _date(micros: int) -> str:
    """``YYYY-MM-DD`` (four digits of year) of a time in microseconds since 1970. A time a
    date cannot hold (any producer sets a record's timestamp) gets the first or last date."""
    day = min(max(micros // _DAY_US, _FIRST_DAY), _LAST_DAY)
    d = _EPOCH + timedelta(days=day)
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"


_DATES: dict[int, str] = {}


def row_date(row: tuple[Any, ...], occurred: int, *, sender_timed: bool = False) -> str:
    """The ``date=`` partition of a row: the UTC date of its ``occurred_at`` (column
    ``occurred``), or of its Kafka timestamp when the record did not decode, or, on a topic
    outsiders write (``sender_timed``: :meth:`TopicNames.sender_timed`), when the two are more
    than a day apart. There a sender chooses ``occurred_at``: requests stamped a day apart each
    made a folder and a file of their own, never merged (3,000 requests, 3,000 files), while
    those topics' timestamps are the broker's (``LogAppendTime``). The ledger's own writers'
    times are kept as they are (history written with its own times, a migration, stays filed
    by them)."""
    micros = row[occurred]
    stamp = row[3]
    if micros is None or (
        sender_timed and stamp is not None and abs(micros - stamp * 1000) > _DAY_US
    ):
        micros = (stamp or 0) * 1000
    day = micros // _DAY_US
    found = _DATES.get(day)
    if found is None:
        found = _DATES[day] = _date(micros)
    return found


class RowFiles:
    """Rows buffered per topic, partition and date, written as complete files: the half of an
    export that helper processes share with :class:`ExportWriter` (which adds the manifest).
    Rows are kept as Arrow tables of :data:`_CHUNK` rows (tuples only for the last few)."""

    def __init__(
        self,
        out: Path,
        topics: TopicNames,
        rows: RowMaker | None = None,
        *,
        codec: Codec | None = None,
        identity: tuple[int, int] | None = None,
    ) -> None:
        self.out = out
        self.identity = identity  # (device, inode) of the top folder, once known
        self._top: int | None = None
        self.topics = topics
        self._rows = rows
        self._codec = codec
        self.formats: dict[str, TopicFormat] = rows.formats if rows else topic_formats(topics)
        # (topic, partition, date) -> the rows in offset order: tables, then the rows not yet
        # made into one; and the first and last offset among them.
        self._tables: dict[tuple[str, int, str], list[pa.Table]] = {}
        self._buffers: dict[tuple[str, int, str], list[tuple[Any, ...]]] = {}
        self._spans: dict[tuple[str, int, str], list[int]] = {}
        self._pending: dict[tuple[str, int], int] = {}  # next offset of rows not yet written
        self.buffered = 0
        self.records: dict[str, int] = {topic: 0 for topic in self.formats}
        self._occurred = {
            topic: fmt.column_names.index("occurred_at") for topic, fmt in self.formats.items()
        }
        self._sent = topics.sender_timed()

    @property
    def top(self) -> int:
        """A descriptor of the export's top folder, opened once (its name is the user's choice
        and may be a link; from then on the run works in that folder whatever is renamed):
        every file operation starts from it. :class:`ExportError` if ``out`` is not the folder
        whose ``identity`` this run began with (a helper process opens its own)."""
        if self._top is None:
            try:
                fd = os.open(self.out, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                raise ExportError(f"cannot open {self.out}: {exc.strerror or exc}") from exc
            found = os.fstat(fd)
            if self.identity is not None and (found.st_dev, found.st_ino) != self.identity:
                os.close(fd)
                raise ExportError(
                    f"{self.out} is no longer the folder this export began in: something "
                    "renamed it (check who can write to its parent)"
                )
            self._top, self.identity = fd, (found.st_dev, found.st_ino)
        return self._top

    def close_top(self) -> None:
        fd, self._top = self._top, None
        if fd is not None:
            os.close(fd)

    def _folder(self, *parts: str, create: bool = False) -> AbstractContextManager[int]:
        """A descriptor of the export's folder ``parts…``, reached from :attr:`top` without
        following a link (:func:`ledger.audit.folder.directory`)."""
        return folder.directory(self.top, self.out, *parts, create=create)

    @property
    def rows(self) -> RowMaker:
        """The row maker, made when first needed (an export done by helper processes never
        makes rows here, and a row maker takes a while to generate its decoders)."""
        if self._rows is None:
            self._rows = RowMaker(self.topics, codec=self._codec)
        return self._rows

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
        key = (
            topic,
            partition,
            row_date(row, self._occurred[topic], sender_timed=topic in self._sent),
        )
        found = self._buffers.get(key)
        if found is None:
            self._buffers[key] = [row]
            self._tables[key] = []
            self._spans[key] = [offset, offset]
        else:
            found.append(row)
            self._spans[key][1] = offset
            if len(found) >= _CHUNK:  # a table holds them in a fraction of the memory
                self._tables[key].append(self.rows.table(topic, found))
                self._buffers[key] = []
        self._pending[(topic, partition)] = offset + 1
        self.buffered += 1
        self.records[topic] += 1

    def write_files(self) -> list[dict[str, Any]]:
        """Write the buffered rows (one file per topic, partition and date), each complete and
        durable before this returns; returns their manifest entries."""
        keys = sorted(self._spans)
        if len(keys) > 1 and CORES > 1:
            # Compression and fsync release the GIL: the files of a flush are written side by
            # side (a large run's last flush was one core writing six files while the other
            # idled).
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(len(keys), CORES)) as threads:
                written = list(threads.map(self._write_file, keys))
        else:
            written = [self._write_file(key) for key in keys]
        self._tables.clear()
        self._buffers.clear()
        self._spans.clear()
        self.buffered = 0
        return written

    def _write_file(self, key: tuple[str, int, str]) -> dict[str, Any]:
        """Write the buffered rows of ``key`` (topic, partition, date) to their file, durably;
        returns the file's manifest entry."""
        topic, partition, date = key
        first, last = self._spans[key]
        relative = file_path(topic, partition, date, first)
        tables = self._tables[key]
        if self._buffers[key]:
            tables.append(self.rows.table(topic, self._buffers[key]))
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        name = relative.rsplit("/", 1)[1]
        with self._folder(f"topic={topic}", f"date={date}", create=True) as where:
            with folder.new_file(where, name) as (out, tmp):
                pq.write_table(
                    table,
                    out,
                    compression="zstd",
                    row_group_size=ROW_GROUP_ROWS,
                    write_statistics=True,
                )
            folder.install(where, tmp, name)
        return _entry(relative, key, (first, last), table.num_rows)


class ExportWriter(RowFiles):
    """The file half of an export: rows in, Parquet files and the manifest out.

    Opening one repairs the directory (see the module docstring). :meth:`add` buffers a record's
    row; :meth:`flush` writes the buffered rows (one file per topic, partition and date) and then
    the manifest. Offsets must arrive in increasing order per partition, starting at
    :meth:`next_offset`.
    """

    def __init__(
        self,
        out: ExportPath,
        topics: TopicNames,
        *,
        codec: Codec | None = None,
        create: bool = True,
    ) -> None:
        out = Path(out)
        readable_folder(out)  # an export no reader could open is refused before it is written
        super().__init__(out, topics, codec=codec)
        if out.exists() and not out.is_dir():
            raise ExportError(f"{out} is not a directory; choose another --out")
        self._created: list[Path] = []  # the directories this writer made, deepest first
        if create:
            missing = list(itertools.takewhile(lambda d: not d.exists(), (out, *out.parents)))
            try:
                out.mkdir(mode=0o700, parents=True, exist_ok=True)  # see folder.shared
            except OSError as exc:
                raise ExportError(f"cannot create {out}: {exc.strerror or exc}") from exc
            self._created = missing
        self._lock = folder.DirectoryLock(out, self.top)  # before the repair: it removes leftovers
        manifest = read_manifest(out, at=self.top)
        if manifest is not None and manifest.prefix != topics.prefix:
            raise ExportError(
                f"{out} holds an export of topics prefixed {manifest.prefix!r}, not "
                f"{topics.prefix!r}: export each ledger to its own directory"
            )
        self.manifest = manifest or Manifest(prefix=topics.prefix)
        self.unlisted: list[str] = []
        self.removed = self._repair()
        self.files_written = 0
        self.files_compacted = 0
        self.compaction_problems: list[str] = []
        self.warnings: list[str] = []
        mode = os.fstat(self.top).st_mode & 0o777
        if mode & 0o004:  # what it writes inside takes that access (folder.shared)
            self.warnings.append(
                f"{out} is readable by every user of this machine (mode {mode:o}), and so is "
                "what the export writes in it, every request's facts: `chmod -R o-rwx "
                f"{out}` keeps them to you (and your group)"
            )
        self._unmergeable: set[str] = set()
        self.retire_after = RETIRE_AFTER_S
        self.complete = self.manifest.complete
        self.read_at = self.manifest.read_at

    def note_run(self, *, read_at: datetime, complete: bool) -> None:
        """What the next manifest rewrite records of this run: when it read the topics' end
        offsets, and whether everything up to them is in its files. A run says ``complete=False``
        before its first flush and ``True`` before its last, so a run killed in between leaves
        a manifest saying it stopped part-way (its topics end at different points)."""
        self.read_at = format_timestamp(read_at)
        self.complete = complete

    @property
    def unsaved(self) -> bool:
        """Whether what :meth:`note_run` said is not yet in the manifest on disk."""
        return (self.complete, self.read_at) != (self.manifest.complete, self.manifest.read_at)

    def close(self) -> None:
        """Let go of the directory (another writer may open it). Idempotent."""
        self._lock.release()
        self.close_top()

    def __enter__(self) -> ExportWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def discard(self) -> None:
        """Remove the directories this writer created, if nothing was written in them: a run
        that fails before it has exported anything (Kafka unreachable, the exporter refused)
        leaves no empty directory that readers would take for an export. Anything written
        (files, a manifest) is kept for the next run to repair. Closes the writer."""
        self._lock.release()
        emptied = False
        if self._created:
            try:  # its folders through the open top folder: never through a link
                emptied = folder.empty_tree(self.top)
            except (OSError, ExportError):
                emptied = False
        self.close()
        for directory in self._created if emptied else ():  # deepest first: out, its parents
            try:
                directory.rmdir()  # a folder swapped for a link is not one: refused
            except FileNotFoundError:
                continue
            except OSError:  # not empty (something arrived), or not ours to remove
                break
        self._created = []

    # ----------------------------------------------------------------------- repair

    def _repair(self) -> int:
        """Remove what a killed run left beyond the manifest (temporary and unlisted files)."""
        listed = {f["path"] for f in self.manifest.files}
        listed.update(f["path"] for f in self.manifest.retired)  # removed when their time comes
        removed = 0
        # Only the export's own folders, each opened without following a link (see
        # ledger.audit.folder), so nothing outside the export is ever removed.
        for topic_dir in self._folders((), "topic="):
            for date_dir in self._folders((topic_dir,), "date="):
                try:
                    with self._folder(topic_dir, date_dir) as where:
                        for entry in os.scandir(where):
                            name = entry.name
                            relative = f"{topic_dir}/{date_dir}/{name}"
                            temporary = name.startswith(".") and ".tmp-" in name
                            unlisted = name.endswith(".parquet") and relative not in listed
                            if (temporary or unlisted) and entry.is_file(follow_symlinks=False):
                                os.unlink(name, dir_fd=where)
                                removed += 1
                                if unlisted and not temporary:
                                    self.unlisted.append(relative)
                except (ExportError, FileNotFoundError):
                    continue  # swapped for a link, or gone, since it was listed
        with self._folder() as top:
            for entry in os.scandir(top):
                if entry.name.startswith(f".{MANIFEST}.tmp-") and not entry.is_dir(
                    follow_symlinks=False
                ):
                    os.unlink(entry.name, dir_fd=top)
                    removed += 1
        return removed

    def _folders(self, parts: tuple[str, ...], prefix: str) -> list[str]:
        """The names of the folders (not links) named ``prefix…`` in ``out/parts…``."""
        try:
            with self._folder(*parts) as where:
                return sorted(
                    e.name
                    for e in os.scandir(where)
                    if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False)
                )
        except (ExportError, FileNotFoundError):
            return []

    # ----------------------------------------------------------------------- offsets

    def next_offset(self, topic: str, partition: int) -> int:
        """The offset the next record of this partition must have (buffered rows included)."""
        pending = self._pending.get((topic, partition))
        return pending if pending is not None else self.manifest.next_offset(topic, partition)

    def mark(self, topic: str, partition: int, next_offset: int) -> None:
        """Record that ``partition`` has nothing to export before ``next_offset`` (a run that
        reached the end offset, past offsets that hold no record, e.g. transaction markers)."""
        if next_offset > self.next_offset(topic, partition):
            self._pending[(topic, partition)] = next_offset

    # ----------------------------------------------------------------------- files out

    def flush(self) -> int:
        """Write the buffered rows, then the manifest, then merge small files if enough have
        gathered (:meth:`compact`). Returns the number of files written."""
        idle = not self._spans and not self._pending and not self.unsaved
        if idle and folder.exists(self.top, MANIFEST):
            self.compact()  # a run with nothing new still tidies what earlier ones left
            return 0  # nothing new; a first run writes its (empty) manifest: an empty export
        written = self.write_files()
        offsets = dict(self._pending)
        self._pending.clear()
        self.commit(written, offsets)
        self.compact()
        return len(written)

    def commit(
        self,
        files: list[dict[str, Any]],
        offsets: dict[tuple[str, int], int],
        *,
        merged: Iterable[str] = (),
    ) -> None:
        """List ``files`` (complete on disk) in the manifest and move the partitions' next
        offsets to ``offsets``, in one atomic rewrite of the manifest. The files at ``merged``
        (now inside ``files``) move to the retired list; retired files whose time has come are
        dropped from it, and removed once the manifest no longer names them."""
        listed = {f["path"] for f in files}
        gone = set(merged)
        now = datetime.now(UTC)
        at = format_timestamp(now)
        due = format_timestamp(now - timedelta(seconds=self.retire_after))
        old = self.manifest
        expired = [f["path"] for f in old.retired if str(f["at"]) <= due]
        new = Manifest(
            prefix=old.prefix,
            offsets={topic: dict(parts) for topic, parts in old.offsets.items()},
            files=[f for f in old.files if f["path"] not in listed and f["path"] not in gone]
            + files,
            updated_at=at,
            retired=[f for f in old.retired if str(f["at"]) > due]
            + [{"path": path, "at": at} for path in sorted(gone)],
            complete=self.complete,
            read_at=self.read_at,
        )
        for (topic, partition), offset in offsets.items():
            new.offsets.setdefault(topic, {})[partition] = offset
        document = new.to_json()
        # Never write one no reader takes; on failure the manifest in memory is unchanged.
        Manifest.from_json(document, self.out / MANIFEST)
        folder.atomic_write(
            self.top, MANIFEST, json.dumps(document, indent=1, sort_keys=False).encode("utf-8")
        )
        self.manifest = new
        if not gone:  # merged files are counted as compacted (compact), not as exported
            self.files_written += len(files)
        listed_now = {f["path"] for f in self.manifest.files}
        for path in expired:  # unnamed now: a crash before this leaves them to the repair
            if path in listed_now:
                continue  # a name in use again is never removed
            topic_part, date_part, name = path.split("/")  # as the manifest's check made it
            with (
                contextlib.suppress(OSError, ExportError),  # gone, a link, a folder: left
                self._folder(topic_part, date_part) as where,
            ):
                if stat.S_ISREG(os.stat(name, dir_fd=where, follow_symlinks=False).st_mode):
                    os.unlink(name, dir_fd=where)

    def remove_retired(self) -> int:
        """Remove every file merged away now, not :data:`RETIRE_AFTER_S` after its merge: the
        export's folders then hold its listed files only, as a reader that lists folders
        (a glob, Spark, Trino, Athena) needs, else it counts their rows twice. A reader that
        listed them before their merge, still reading, fails to find them. Returns how many
        the manifest stopped naming."""
        count = len(self.manifest.retired)
        if count:
            self.retire_after = 0
            self.commit([], {})  # drops them from the manifest, then from the disk
        return count

    # ----------------------------------------------------------------------- compaction

    def compact(self) -> int:
        """Merge the small files that have gathered (see :data:`COMPACT_FANIN`): a long
        ``--follow`` writes a few files per partition every few seconds, and every reader pays
        per file (each query reads every footer). Each merged file is written like any other
        (temporary name, fsync, rename), then one manifest rewrite lists it in place of its
        inputs, which are removed :data:`RETIRE_AFTER_S` later. Returns the files merged away."""
        groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
        spans: dict[tuple[str, int], list[tuple[int, int]]] = {}
        for entry in self.manifest.files:
            key = (str(entry["topic"]), int(entry["partition"]), str(entry["date"]))
            groups.setdefault(key, []).append(entry)
            spans.setdefault(key[:2], []).append(
                (int(entry["first_offset"]), int(entry["last_offset"]))
            )
        covered = {where: span_union(found) for where, found in spans.items()}
        ready = [
            run
            for (topic, partition, _), group in groups.items()
            for run in self._runs(group, covered[(topic, partition)])
        ]
        expired = self._expired()
        if not ready:
            if expired:
                self.commit([], {})  # only to let retired files go
            return 0
        made: list[dict[str, Any]] = []
        merged: list[str] = []
        for group in ready:
            try:
                made.append(self._merge(group))
            except (OSError, pa.ArrowException) as exc:
                # Housekeeping must not stop the export (a listed file gone or damaged is for
                # `ledger audit verify` to report): this group stays as it is in this run.
                self._unmergeable.update(str(e["path"]) for e in group)
                self.compaction_problems.append(
                    f"could not merge {len(group)} files of {group[0]['topic']} partition "
                    f"{group[0]['partition']} on {group[0]['date']}: {exc}"
                )
                continue
            merged.extend(str(e["path"]) for e in group)
        if not made:
            return 0
        self.commit(made, {}, merged=merged)
        self.files_compacted += len(merged)
        return len(merged)

    def _runs(
        self, group: list[dict[str, Any]], covered: list[tuple[int, int]]
    ) -> list[list[dict[str, Any]]]:
        """The runs of consecutive small files (in offset order) in one topic, partition and
        date that are long enough to merge, each at most :data:`COMPACT_MAX_FILES` long. A run
        ends where the offsets between two files are in no file of the partition (``covered``:
        the union of its files' spans, every date's): retention deleted them between two export
        runs, and a merged file spanning them would hold offsets the export lacks, which
        `ledger audit verify` takes for rows deleted. Offsets another date's file holds (rows
        of a partition interleave across dates around midnight) do not end a run (a review:
        breaking there left thousands of files unmerged)."""
        runs: list[list[dict[str, Any]]] = []
        current: list[dict[str, Any]] = []
        for entry in sorted(group, key=lambda e: int(e["first_offset"])):
            small = int(entry["rows"]) < COMPACT_MAX_ROWS
            gap = (
                (int(current[-1]["last_offset"]) + 1, int(entry["first_offset"]) - 1)
                if current
                else None
            )
            if gap is not None and gap[0] <= gap[1] and not _within(covered, *gap):
                if len(current) >= COMPACT_FANIN:
                    runs.append(current)
                current = []
            if small and entry["path"] not in self._unmergeable:
                current.append(entry)
                if len(current) == COMPACT_MAX_FILES:
                    runs.append(current)
                    current = []
                continue
            if len(current) >= COMPACT_FANIN:
                runs.append(current)
            current = []
        if len(current) >= COMPACT_FANIN:
            runs.append(current)
        return runs

    def _expired(self) -> bool:
        due = format_timestamp(datetime.now(UTC) - timedelta(seconds=self.retire_after))
        return any(str(f["at"]) <= due for f in self.manifest.retired)

    def _merge(self, group: list[dict[str, Any]]) -> dict[str, Any]:
        """Write the rows of ``group`` (one topic, partition and date, in offset order) to one
        file, durably, reading a row group at a time; returns its manifest entry."""
        head = group[0]
        topic, partition, date = str(head["topic"]), int(head["partition"]), str(head["date"])
        first = int(head["first_offset"])
        last = max(int(e["last_offset"]) for e in group)
        relative = file_path(topic, partition, date, first, last)  # never an exported file's
        if any(f["path"] == relative for f in (*self.manifest.files, *self.manifest.retired)):
            # Runs never overlap, so this cannot happen; if it did, overwriting would lose rows.
            raise OSError(f"{relative} is already in the manifest")
        name = relative.rsplit("/", 1)[1]
        schema = self.formats[topic].schema
        rows = 0
        with self._folder(f"topic={topic}", f"date={date}") as where:
            with (
                folder.new_file(where, name) as (file, tmp),
                pq.ParquetWriter(file, schema, compression="zstd", write_statistics=True) as out,
            ):
                pending: list[pa.Table] = []
                held = 0
                for entry in group:
                    source_name = str(entry["path"]).rsplit("/", 1)[1]
                    with folder.listed(where, source_name) as data:
                        source = pq.ParquetFile(data)
                        if source.metadata.num_rows != entry["rows"]:
                            raise OSError(
                                f"{entry['path']} holds {source.metadata.num_rows} rows, its "
                                f"manifest entry says {entry['rows']}"
                            )
                        try:
                            for i in range(source.num_row_groups):
                                table = _conform(source.read_row_group(i), schema)
                                pending.append(table)
                                held += table.num_rows
                                rows += table.num_rows
                                if held >= ROW_GROUP_ROWS:
                                    pending, held = _write_groups(out, pending, final=False)
                        finally:
                            source.close()
                _write_groups(out, pending, final=True)
                if rows > last - first + 1:  # only a tampered manifest: entries that overlap
                    raise OSError(
                        f"the files to merge hold {rows} rows for {last - first + 1} offsets"
                    )
            folder.install(where, tmp, name)
        return _entry(relative, (topic, partition, date), (first, last), rows)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns: a file written before a column was added
    gets it as NULLs, as a reader matching columns by name would see it."""
    if table.schema.equals(schema):
        return table
    columns = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _write_groups(
    out: pq.ParquetWriter, tables: list[pa.Table], *, final: bool
) -> tuple[list[pa.Table], int]:
    """Write whole row groups of :data:`ROW_GROUP_ROWS` from ``tables`` (and, when ``final``,
    the rest); returns what is held back and its row count."""
    if not tables:
        return [], 0
    table = pa.concat_tables(tables)
    whole = table.num_rows if final else table.num_rows - table.num_rows % ROW_GROUP_ROWS
    if whole:
        out.write_table(table.slice(0, whole), row_group_size=ROW_GROUP_ROWS)
    rest = table.slice(whole)
    return ([rest] if rest.num_rows else []), rest.num_rows


def span_union(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` (inclusive offset ranges) merged where they overlap or touch, in order."""
    merged: list[tuple[int, int]] = []
    for low, high in sorted(spans):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def _within(union: list[tuple[int, int]], low: int, high: int) -> bool:
    """Does one range of ``union`` (from :func:`span_union`) hold all of ``low``..``high``?"""
    at = bisect.bisect_right(union, (low, float("inf"))) - 1
    return at >= 0 and union[at][0] <= low and high <= union[at][1]
