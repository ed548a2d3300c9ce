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
   One writer at a time: a writer holds an exclusive lock on ``DIR/.export.lock`` while it
   lives (the kernel releases it if its process dies), so a second run cannot remove a first
   one's files before it lists them; it stops with one line naming the holder's pid.
3. It then reads each partition from the manifest's offset to the end offset seen at the start
   (a consistent prefix of the log) and flushes every ``batch_records`` rows (new files, then
   the manifest). Re-running adds exactly what is new; nothing is duplicated or dropped.
4. A run that fails before it has written anything (Kafka unreachable, the exporter refused)
   removes the directories it created: it leaves no empty directory that readers would take
   for an export.

5. Small files are merged as they gather (:meth:`ExportWriter.compact`): the merged file is
   written like any other, one manifest rewrite lists it in place of its inputs, and the inputs
   stay on disk (the manifest's ``retired`` list) for :data:`RETIRE_AFTER_S`, for readers that
   listed them before. A merge cut short leaves an unlisted file, which the repair removes.

Readers (:func:`ledger.audit.sql.connect`) read the files the manifest lists, so a reader never
sees a file of a run that has not committed it.

An export folder may be shared, so whoever can write into it is an attacker here: the manifest
is checked as it is read (:mod:`ledger.audit.manifest`), and the writer opens its top folder
once and every folder below it without following a link, and works relative to those open
folders (see :func:`_directory`): nothing planted or swapped in makes it write, truncate or
remove a file outside the export, or copy one in.

Kafka is read with librdkafka (``confluent-kafka``). A one-shot run with more than
:data:`POOL_THRESHOLD` records to read is done by helper processes (one per core): the run cuts
every partition's range into units of consecutive offsets, and a helper exports a unit end to
end (reads it, makes its rows, writes its files). This process only plans the units and keeps
the manifest: a unit's files are listed, and its partition's next offset moved past it, once
every unit before it in that partition is done too. Nothing crosses between processes but the
units and the names of the files written.

:class:`ExportWriter` is the file and manifest half, usable without Kafka (tests and the audit
benchmark write the export format with it); :func:`export` / :func:`follow` add Kafka.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import itertools
import json
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Final

import pyarrow as pa
import pyarrow.parquet as pq

from ledger.audit.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    ExportPath,
    Manifest,
    file_path,
    read_manifest,
)
from ledger.audit.rows import RowMaker, TopicFormat, topic_formats
from ledger.codec import Codec
from ledger.core.events import Event
from ledger.errors import ExportError
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
ROW_GROUP_ROWS: Final = 16_384
"""Rows per Parquet row group. Ids and times grow with the offsets, so each group's min/max
narrows a lookup (a decision by id, a time window) to a few groups; at DuckDB's default of
122,880 rows a lookup by id over 10 M decisions decoded ~3.5 times more than it needed."""
DEFAULT_FLUSH_INTERVAL: Final = 2.0
"""Seconds between flushes in ``--follow`` mode (when something new arrived)."""
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
_CORES: Final = (
    len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
)
"""Cores this process may run on."""
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

Progress = Callable[[int, int], None]
"""``progress(records done, records to do)`` during a one-shot export."""


# --------------------------------------------------------------------------- files


def _empty_tree(where: int) -> bool:
    """Remove the folders in the folder ``where`` (a descriptor) that hold nothing but empty
    folders, never following a link; whether ``where`` is empty now."""
    for entry in list(os.scandir(where)):
        if not entry.is_dir(follow_symlinks=False):
            return False  # a file (or a link): not an empty tree
        try:
            inner = os.open(entry.name, _NO_LINK, dir_fd=where)
        except OSError:
            return False
        try:
            empty = _empty_tree(inner)
        finally:
            os.close(inner)
        if not empty:
            return False
        try:
            os.rmdir(entry.name, dir_fd=where)
        except FileNotFoundError:
            continue
        except OSError:  # something arrived, or not ours to remove
            return False
    return True


LOCK: Final = ".export.lock"
"""The file whose ``flock`` a writer holds (it holds the holder's pid, for the message)."""


class _DirectoryLock:
    """One writer per export directory: an exclusive ``flock`` on :data:`LOCK`, held until
    :meth:`release` (or the process dies: no stale lock survives a crash). The file is removed
    on release, so an export directory holds it only while a writer works in it."""

    def __init__(self, directory: Path, top: int) -> None:
        self.path = directory / LOCK  # for messages: the file is reached through ``top``
        self._top = top
        while True:
            try:  # never through a symbolic link: the writer truncates and writes this file
                fd = os.open(
                    LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600, dir_fd=top
                )
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise ExportError(
                        f"{self.path} is a symbolic link, not an export's lock: remove it and "
                        "run again (and check who can write to the directory)"
                    ) from None
                raise ExportError(f"cannot lock {directory}: {exc.strerror or exc}") from exc
            found = os.fstat(fd)
            if not stat.S_ISREG(found.st_mode) or found.st_nlink != 1:
                os.close(fd)
                raise ExportError(
                    f"{self.path} is not an export's lock (not a plain file of its own): remove "
                    "it and run again (and check who can write to the directory)"
                )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 16, 0).decode("ascii", "replace").strip()
                os.close(fd)
                pid = f" (pid {holder})" if holder.isdigit() else ""
                raise ExportError(
                    f"another export is writing to {directory}{pid}: wait for it to finish, or "
                    "stop it (`ledger export --follow` holds its directory until it stops)"
                ) from None
            if self._current(fd):
                break
            os.close(fd)  # locked a file its holder removed on release: take the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def _current(self, fd: int) -> bool:
        """Is ``fd`` still the file at :attr:`path`?"""
        try:
            here = os.stat(LOCK, dir_fd=self._top, follow_symlinks=False)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        try:
            if self._current(fd):
                os.unlink(LOCK, dir_fd=self._top)  # while still locked: an opener re-checks
        except OSError:
            pass
        finally:
            os.close(fd)

    def __del__(self) -> None:  # a writer dropped without close() still lets go
        if getattr(self, "_fd", -1) >= 0:
            with contextlib.suppress(Exception):  # at interpreter exit, the kernel lets go too
                self.release()


# Whoever can write into a shared export directory can swap any folder of it for a symbolic
# link at any moment. So the writer never uses a path below the export directory twice: it
# opens each folder from the one before it without following a link, and creates, renames,
# opens and removes files relative to that descriptor (``dir_fd``), which stays on that folder
# whatever is renamed meanwhile.

_NO_LINK: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@contextlib.contextmanager
def _directory(files: _Files, *parts: str, create: bool = False) -> Iterator[int]:
    """A descriptor of the export's folder ``parts…`` below its top folder (each part made when
    missing, with ``create``; no parts: the top folder itself). :class:`ExportError` when a
    part is a symbolic link or not a folder; ``FileNotFoundError`` when one is missing without
    ``create``."""
    top = fd = files.top
    try:
        for part in parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, dir_fd=fd)
            try:
                inner = os.open(part, _NO_LINK, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                raise ExportError(
                    f"{files.out.joinpath(*parts)} is not a folder of the export (a symbolic link "
                    "or a file): remove it and run again (and check who can write to the export)"
                ) from None
            if fd != top:
                os.close(fd)
            fd = inner
        yield fd
    finally:
        if fd != top:
            os.close(fd)


@contextlib.contextmanager
def _new_file(where: int, name: str) -> Iterator[tuple[BinaryIO, str]]:
    """A new file in the folder ``where`` (a descriptor), under a temporary name made from
    ``name``, open for writing: created exclusively, so nothing planted there beforehand (a
    link to another file) is ever followed or overwritten. Flushed to disk when the block ends;
    removed if it fails. Give it its name with :func:`_install`. The repair
    (:meth:`ExportWriter._repair`) removes one a killed writer left."""
    while True:
        tmp = f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666, dir_fd=where
            )
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as out:
            yield out, tmp
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=where)
        raise


def _install(where: int, tmp: str, name: str) -> None:
    """Rename the finished file ``tmp`` to ``name`` in the folder ``where``, durably."""
    os.replace(tmp, name, src_dir_fd=where, dst_dir_fd=where)
    with contextlib.suppress(OSError):  # not every file system syncs a folder
        os.fsync(where)


@contextlib.contextmanager
def _listed(where: int, name: str) -> Iterator[BinaryIO]:
    """A data file the manifest lists, in the folder ``where``, open for reading: a regular
    file of the folder itself, never a link (which would have the writer copy into the export
    a file that whoever planted it could not read)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=where)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(f"{name} is a symbolic link, not a file of the export") from None
        raise
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{name} is not a regular file")
        yield file


def _exists(where: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=where, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _atomic_write(top: int, name: str, data: bytes) -> None:
    """Replace the file ``name`` in the folder ``top`` with ``data``, atomically."""
    with _new_file(top, name) as (file, tmp):
        file.write(data)
    _install(top, tmp, name)


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


# --------------------------------------------------------------------------- writing files


@dataclass
class ExportSummary:
    """What one run (or one follow session) did."""

    out: Path
    records: dict[str, int]
    files_written: int
    duration_s: float
    removed: int = 0
    compacted: int = 0
    problems: tuple[str, ...] = ()
    """Housekeeping that could not be done (a merge of small files), the export itself done."""

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
            "files_compacted": self.compacted,
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


class _Files:
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
        key = (topic, partition, row_date(row, self._occurred[topic]))
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
        if len(keys) > 1 and _CORES > 1:
            # Compression and fsync release the GIL: the files of a flush are written side by
            # side (a large run's last flush was one core writing six files while the other
            # idled).
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(len(keys), _CORES)) as threads:
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
        with _directory(self, f"topic={topic}", f"date={date}", create=True) as where:
            with _new_file(where, name) as (out, tmp):
                pq.write_table(
                    table,
                    out,
                    compression="zstd",
                    row_group_size=ROW_GROUP_ROWS,
                    write_statistics=True,
                )
            _install(where, tmp, name)
        return _entry(relative, key, (first, last), table.num_rows)


class ExportWriter(_Files):
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
        super().__init__(out, topics, codec=codec)
        if out.exists() and not out.is_dir():
            raise ExportError(f"{out} is not a directory; choose another --out")
        self._created: list[Path] = []  # the directories this writer made, deepest first
        if create:
            missing = list(itertools.takewhile(lambda d: not d.exists(), (out, *out.parents)))
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ExportError(f"cannot create {out}: {exc.strerror or exc}") from exc
            self._created = missing
        self._lock = _DirectoryLock(out, self.top)  # before the repair: it removes leftovers
        manifest = read_manifest(out, at=self.top)
        if manifest is not None and manifest.prefix != topics.prefix:
            raise ExportError(
                f"{out} holds an export of topics prefixed {manifest.prefix!r}, not "
                f"{topics.prefix!r}: export each ledger to its own directory"
            )
        self.manifest = manifest or Manifest(prefix=topics.prefix)
        self.removed = self._repair()
        self.files_written = 0
        self.files_compacted = 0
        self.compaction_problems: list[str] = []
        self._unmergeable: set[str] = set()
        self.retire_after = RETIRE_AFTER_S

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
                emptied = _empty_tree(self.top)
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
        # _directory), so nothing outside the export is ever removed.
        for topic_dir in self._folders((), "topic="):
            for date_dir in self._folders((topic_dir,), "date="):
                try:
                    with _directory(self, topic_dir, date_dir) as where:
                        for entry in os.scandir(where):
                            name = entry.name
                            leftover = (name.startswith(".") and ".tmp-" in name) or (
                                name.endswith(".parquet")
                                and f"{topic_dir}/{date_dir}/{name}" not in listed
                            )
                            if leftover and entry.is_file(follow_symlinks=False):
                                os.unlink(name, dir_fd=where)
                                removed += 1
                except (ExportError, FileNotFoundError):
                    continue  # swapped for a link, or gone, since it was listed
        with _directory(self) as top:
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
            with _directory(self, *parts) as where:
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
        if not self._spans and not self._pending and _exists(self.top, MANIFEST):
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
        at = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        due = (now - timedelta(seconds=self.retire_after)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
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
        )
        for (topic, partition), offset in offsets.items():
            new.offsets.setdefault(topic, {})[partition] = offset
        document = new.to_json()
        # Never write one no reader takes; on failure the manifest in memory is unchanged.
        Manifest.from_json(document, self.out / MANIFEST)
        _atomic_write(
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
                _directory(self, topic_part, date_part) as where,
            ):
                if stat.S_ISREG(os.stat(name, dir_fd=where, follow_symlinks=False).st_mode):
                    os.unlink(name, dir_fd=where)

    # ----------------------------------------------------------------------- compaction

    def compact(self) -> int:
        """Merge the small files that have gathered (see :data:`COMPACT_FANIN`): a long
        ``--follow`` writes a few files per partition every few seconds, and every reader pays
        per file (each query reads every footer). Each merged file is written like any other
        (temporary name, fsync, rename), then one manifest rewrite lists it in place of its
        inputs, which are removed :data:`RETIRE_AFTER_S` later. Returns the files merged away."""
        groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
        for entry in self.manifest.files:
            key = (str(entry["topic"]), int(entry["partition"]), str(entry["date"]))
            groups.setdefault(key, []).append(entry)
        ready = [run for group in groups.values() for run in self._runs(group)]
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

    def _runs(self, group: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """The runs of consecutive small files (in offset order) in one topic, partition and
        date that are long enough to merge, each at most :data:`COMPACT_MAX_FILES` long."""
        runs: list[list[dict[str, Any]]] = []
        current: list[dict[str, Any]] = []
        for entry in sorted(group, key=lambda e: int(e["first_offset"])):
            small = int(entry["rows"]) < COMPACT_MAX_ROWS
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
        due = datetime.now(UTC) - timedelta(seconds=self.retire_after)
        stamp = due.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return any(str(f["at"]) <= stamp for f in self.manifest.retired)

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
        with _directory(self, f"topic={topic}", f"date={date}") as where:
            with (
                _new_file(where, name) as (file, tmp),
                pq.ParquetWriter(file, schema, compression="zstd", write_statistics=True) as out,
            ):
                pending: list[pa.Table] = []
                held = 0
                for entry in group:
                    source_name = str(entry["path"]).rsplit("/", 1)[1]
                    with _listed(where, source_name) as data:
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
            _install(where, tmp, name)
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
    "fetch.queue.backoff.ms": 20,
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
"""A one-shot export with more records than this to read is done by helper processes (one per
core, at most :data:`POOL_HELPERS`); a smaller one does not pay their start-up."""
POOL_HELPERS: Final = 4
_CHUNK: Final = 4_096
"""Rows of one file made into an Arrow table at a time (bounds the memory rows take)."""
_MIN_UNIT: Final = 4_096
"""The fewest records a helper is given at once (unless the run's flush size is smaller)."""

Where = tuple[str, int]
Ranges = dict[Where, tuple[int, int]]
"""Per partition: the first offset to read and the end offset (exclusive)."""


class _Source:
    """A librdkafka consumer of the ledger's topics: :meth:`plan` says what a run has to read
    (from the writer's next offsets, never before the log start: a bounded topic, commands with
    its 7 days, may have dropped records since the last run, to the end offsets seen now), and
    :meth:`watch` assigns it."""

    def __init__(self, bootstrap: str, topics: TopicNames, security: KafkaSecurity | None) -> None:
        from ledger.kafka.acls import PROCESSOR_GROUPS
        from ledger.kafka.clients import make_rdkafka_consumer

        self.bootstrap = bootstrap
        self.start: dict[Where, int] = {}
        self.end: dict[Where, int] = {}
        self.done: set[Where] = set()  # partitions read up to their end offset
        self.closed = False
        # The exporter's group (its ACLs allow it); it is never joined nor committed to.
        group = {"group.id": f"{topics.prefix}{PROCESSOR_GROUPS['exporter']}.export"}
        self.consumer = make_rdkafka_consumer(
            bootstrap, security=security, **RDKAFKA_CONFIG, **group
        )

    def plan(self, writer: ExportWriter) -> Ranges:
        """Every partition of the ledger's topics: where the run starts, and its end offset."""
        from confluent_kafka import TopicPartition

        from ledger.kafka.reading import rdkafka_partitions

        ranges: Ranges = {}
        for topic in writer.formats:
            for partition in rdkafka_partitions(self.consumer, topic, bootstrap=self.bootstrap):
                low, high = self._watermarks(TopicPartition(topic, partition))
                start = writer.next_offset(topic, partition)
                if start > high:
                    raise ExportError(
                        f"{writer.out} has {topic} partition {partition} up to offset {start}, "
                        f"but Kafka's ends at {high}: the topic was recreated, or this is another "
                        "ledger's export; export into a fresh directory"
                    )
                ranges[(topic, partition)] = (max(start, low), high)
        return ranges

    def watch(self, ranges: Ranges, *, bounded: bool) -> None:
        """Read these partitions from their start (a bounded read: those with something before
        their end offset, up to it)."""
        from confluent_kafka import TopicPartition

        self.start = {where: start for where, (start, _) in ranges.items()}
        self.end = {where: end for where, (_, end) in ranges.items()}
        self.done = set()
        self.consumer.assign(
            [
                TopicPartition(topic, partition, start)
                for (topic, partition), (start, end) in ranges.items()
                if not bounded or start < end
            ]
        )

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

        want = _CONSUME_BATCH
        if bounded:
            # librdkafka returns when it has ``want`` records or the wait is over: never ask
            # for more than are left (a helper's unit ended with a second's wait for records
            # that were not coming), and wait less, should offsets without records be left.
            left = sum(e - sink.position(w) for w, e in self.end.items() if w not in self.done)
            want = max(1, min(want, left))
            wait = min(wait, 0.25)
        messages = self.consumer.consume(num_messages=want, timeout=wait)
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
                stop = end.get(where)
                if stop is None:
                    continue  # of a partition no longer assigned (a helper's previous unit)
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
        if not self.closed:
            self.closed = True
            self.consumer.close()


class _Sink:
    """Records into rows of ``files``, every partition's in offset order from the offset
    ``start`` names (skipping what was read already, or is not wanted)."""

    def __init__(self, files: _Files, start: Callable[[str, int], int]) -> None:
        self.files = files
        self.start = start
        self._next: dict[Where, int] = {}

    def position(self, where: Where) -> int:
        """The offset of the next record of partition ``where`` the sink takes."""
        found = self._next.get(where)
        return found if found is not None else self.start(*where)

    def add(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int | None,
        key: bytes | None,
        value: bytes | None,
    ) -> bool:
        expected = self._next.get((topic, partition))
        if expected is None:
            expected = self.start(topic, partition)
        if offset < expected:
            return False  # read again after a seek, or before what the manifest holds
        self._next[(topic, partition)] = offset + 1
        self.files.add(topic, partition, offset, timestamp_ms, key, value)
        return True


# --------------------------------------------------------------------------- helper processes


@dataclass(frozen=True, slots=True)
class _Unit:
    """Consecutive offsets of one partition that one helper exports: ``[start, stop)``."""

    topic: str
    partition: int
    start: int
    stop: int


@dataclass(frozen=True, slots=True)
class _UnitDone:
    unit: _Unit
    files: list[dict[str, Any]]
    records: int


def _units(ranges: Ranges, size: int) -> list[_Unit]:
    """The ranges cut into units of at most ``size`` records, every partition's first unit
    first (then the second ones …), so helpers start on different partitions and each
    partition's prefix completes early."""
    cut = [
        [_Unit(topic, partition, at, min(at + size, end)) for at in range(start, end, size)]
        for (topic, partition), (start, end) in ranges.items()
        if start < end
    ]
    return [
        units[i] for i in range(max(map(len, cut), default=0)) for units in cut if i < len(units)
    ]


_NEVER: Final = 1 << 63


class _Helper:
    """A helper process's state: its row maker, its consumer (made for the first unit), and
    the run's shared count of records read (the progress bar's)."""

    def __init__(
        self,
        out: Path,
        identity: tuple[int, int] | None,
        topics: TopicNames,
        bootstrap: str,
        security: KafkaSecurity | None,
        counter: Any,
    ) -> None:
        # The writer's own top folder, checked by its identity: not whatever bears its name now.
        self.files = _Files(out, topics, RowMaker(topics), identity=identity)
        self.topics = topics
        self.bootstrap = bootstrap
        self.security = security
        self.counter = counter
        self.source: _Source | None = None
        self.read_before: set[Where] = set()  # partitions the current consumer was given

    def run(self, unit: _Unit) -> _UnitDone:
        where = (unit.topic, unit.partition)
        if self.source is not None and where in self.read_before:
            # A consumer that read this partition before may still hold what it fetched then,
            # an end-of-partition event among it: one taken for this unit's end would move the
            # manifest past records never exported. A fresh consumer holds nothing.
            self.source.close()
            self.source = None
        if self.source is None:
            self.source = _Source(self.bootstrap, self.topics, self.security)
            self.read_before = set()
        self.read_before.add(where)
        source = self.source
        source.watch({where: (unit.start, unit.stop)}, bounded=True)
        sink = _Sink(self.files, lambda *other: unit.start if other == where else _NEVER)
        last_arrival = time.monotonic()
        while where not in source.done:
            taken, arrived = source.read(sink, bounded=True)
            if taken:
                with self.counter.get_lock():
                    self.counter.value += taken
            if arrived:
                last_arrival = time.monotonic()
            elif time.monotonic() - last_arrival > _IDLE_LIMIT:
                raise ExportError(
                    f"no records of {unit.topic} partition {unit.partition} arrived for "
                    f"{_IDLE_LIMIT:g} s although it has more: is the broker healthy?"
                )
        files = self.files.write_files()
        return _UnitDone(unit, files, sum(f["rows"] for f in files))


_HELPER: list[_Helper] = []


def _helper_init(
    parent: int,
    out: Path,
    identity: tuple[int, int] | None,
    topics: TopicNames,
    bootstrap: str,
    security: KafkaSecurity | None,
    counter: Any,
) -> None:
    server = os.getppid()  # the fork server (it exits once the export and its helpers have)

    def watch() -> None:
        # A helper outlives an export killed by SIGKILL (nothing tells it): it would keep the
        # export's stdout and stderr open, and its caller waiting for their end.
        while os.getppid() == server and _alive(parent):
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="ledger-export-parent-watch", daemon=True).start()
    _HELPER.append(_Helper(out, identity, topics, bootstrap, security, counter))


def _helper_run(unit: _Unit) -> _UnitDone:
    (helper,) = _HELPER
    return helper.run(unit)


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


def _helper_context() -> Any:
    """The ``multiprocessing`` context helpers start from (its fork server preloads
    :mod:`ledger.audit._preload`)."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["ledger.audit._preload"])
    return context


def _start_fork_server() -> None:
    """Start the helpers' fork server now, so that it imports and builds the codec while the
    run plans (~0.6 s of CPU, wasted when the run turns out small enough for one process)."""
    from multiprocessing import forkserver

    _helper_context()
    forkserver.ensure_running()


class _Helpers:
    """The helper processes of a run, forked from a fresh server process that has imported the
    row maker and built the codec once (:mod:`ledger.audit._preload`; a helper spawned from
    scratch spent ~0.8 s importing). Never forked from this process: pyarrow's and numpy's
    native threads run in it from import on (and librdkafka's once it reads), and a fork copies
    the locks those threads hold, not the threads."""

    def __init__(
        self,
        writer: ExportWriter,
        bootstrap: str,
        security: KafkaSecurity | None,
        count: int,
    ) -> None:
        from concurrent.futures import ProcessPoolExecutor

        context = _helper_context()
        self.count = count
        self.counter = context.Value("q", 0)  # records read, for progress
        self.pool = ProcessPoolExecutor(
            max_workers=count,
            mp_context=context,
            initializer=_helper_init,
            initargs=(
                os.getpid(),
                writer.out,
                writer.identity,
                writer.topics,
                bootstrap,
                security,
                self.counter,
            ),
        )

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _export_in_helpers(
    writer: ExportWriter,
    ranges: Ranges,
    helpers: _Helpers,
    *,
    batch_records: int,
    progress: Progress | None,
) -> None:
    """Export ``ranges`` with the helpers, a unit at a time (see the module doc); this
    process commits each partition's units to the manifest in offset order."""
    from concurrent.futures import FIRST_COMPLETED, wait

    total = sum(end - start for start, end in ranges.values())
    size = min(batch_records, max(_MIN_UNIT, -(-total // (2 * helpers.count))))
    prefixes = _Prefixes(ranges)
    pending = {helpers.pool.submit(_helper_run, unit) for unit in _units(ranges, size)}
    try:
        while pending:
            done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            files, offsets = prefixes.take([_unit_result(future) for future in done])
            for file in files:
                writer.records[file["topic"]] += file["rows"]
            if offsets:
                writer.commit(files, offsets)
            if progress is not None:
                progress(helpers.counter.value, total)
    except BaseException:
        for future in pending:
            future.cancel()
        raise


class _Prefixes:
    """Which finished units may be committed: a partition's units in offset order, each once
    every unit before it is done (the manifest's offsets are exactly the rows of its files)."""

    def __init__(self, ranges: Ranges) -> None:
        self.following = {where: start for where, (start, _) in ranges.items()}
        self.finished: dict[Where, dict[int, _UnitDone]] = collections.defaultdict(dict)

    def take(self, results: Iterable[_UnitDone]) -> tuple[list[dict[str, Any]], dict[Where, int]]:
        """The files now committable and the partitions' new next offsets."""
        files: list[dict[str, Any]] = []
        offsets: dict[Where, int] = {}
        for result in results:
            where = (result.unit.topic, result.unit.partition)
            self.finished[where][result.unit.start] = result
            while self.following[where] in self.finished[where]:  # the prefix grew
                ready = self.finished[where].pop(self.following[where])
                files.extend(ready.files)
                self.following[where] = offsets[where] = ready.unit.stop
        return files, offsets


def _unit_result(future: Future[_UnitDone]) -> _UnitDone:
    from ledger.errors import LedgerError

    try:
        return future.result()
    except LedgerError:
        raise  # the helper's own words (a refused login, a broker gone quiet)
    except Exception as exc:
        raise ExportError(f"a helper process failed exporting: {exc}") from exc


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
) -> ExportSummary:
    """Export everything new in the ledger at ``bootstrap`` into ``out`` (see module doc).

    ``helpers``: processes doing the export when there are more than :data:`POOL_THRESHOLD`
    records to read (default: one per core, at most :data:`POOL_HELPERS`, none on one core;
    0: none, this process does it). A run given another ``codec`` stays in this process. They
    are started the ``multiprocessing`` way: a script calling this must guard its top level
    with ``if __name__ == "__main__"``."""
    started = time.perf_counter()
    writer = ExportWriter(out, topics, codec=codec)
    with _discarded_on_failure(writer), writer:
        if helpers is None:
            helpers = min(_CORES, POOL_HELPERS) if _CORES > 1 else 0
        if helpers > 0 and codec is None:
            _start_fork_server()
        source = _Source(bootstrap, topics, security)
        try:
            ranges = source.plan(writer)
            total = sum(max(end - start, 0) for start, end in ranges.values())
            if progress is not None:
                progress(0, total)
            if helpers > 0 and total > POOL_THRESHOLD and codec is None:
                source.close()  # this process only keeps the manifest now
                pool = _Helpers(writer, bootstrap, security, helpers)
                try:
                    _export_in_helpers(
                        writer,
                        {where: span for where, span in ranges.items() if span[0] < span[1]},
                        pool,
                        batch_records=batch_records,
                        progress=progress,
                    )
                finally:
                    pool.close()
            else:
                _export_here(writer, source, ranges, batch_records, progress, total)
            for (topic, partition), (_, end) in ranges.items():
                writer.mark(topic, partition, end)
            writer.flush()
        finally:
            source.close()
    return _summary(writer, started)


def _export_here(
    writer: ExportWriter,
    source: _Source,
    ranges: Ranges,
    batch_records: int,
    progress: Progress | None,
    total: int,
) -> None:
    """Export ``ranges`` in this process, flushing every ``batch_records`` rows."""
    source.watch(ranges, bounded=True)
    sink = _Sink(writer, writer.next_offset)
    remaining = {where for where, (start, end) in ranges.items() if start < end}
    done = 0
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
        source = _Source(bootstrap, topics, security)
        sink = _Sink(writer, writer.next_offset)
        try:
            source.watch(source.plan(writer), bounded=False)
            last_flush = time.monotonic()
            while not stop.is_set():
                source.read(sink, bounded=False, wait=min(interval, 0.5))
                due = time.monotonic() - last_flush >= interval
                if writer.buffered >= batch_records or (due and writer.buffered):
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
        compacted=writer.files_compacted,
        problems=tuple(writer.compaction_problems),
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
