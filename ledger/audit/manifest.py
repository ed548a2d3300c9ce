"""An export directory's manifest (``_manifest.json``): what it holds, checked as it is read.

The manifest lists every data file of an export and, per topic and partition, the next offset
to export (:mod:`ledger.audit.export` writes it). Whoever can write into a shared export
directory can write this file, and every reader and the writer act on it: they open the files
it lists, a writer removes the retired ones, and a read-only SQL connection is confined to
them. So it is read like any hostile input:

- a regular file of at most :data:`MANIFEST_BYTES` (a FIFO, a device or an endless file is
  refused, never read whole);
- it holds the keys an exporter writes and no other (a key of another writer's, or padding, is
  refused rather than read on and copied into the next manifest written);
- every field has its type and range (offsets and partitions non-negative and within Kafka's,
  a file's first offset at most its last, its rows at most its offsets' span);
- every path is exactly where an export keeps that file:
  ``topic=<topic>/date=<YYYY-MM-DD>/<topic>+<partition>+<first>[~<last>].parquet``, its parts
  those of the entry; a topic is a Kafka topic name. No path can leave the directory (no
  ``..``, nothing absolute), or name a file another entry does not describe;
- every file's rows come before its partition's next offset (a next offset moved back would
  have the next export read those offsets again, and every query count them twice).

It also says whether the run that last wrote it finished (``complete``: a run killed or
interrupted part-way leaves some topics read further than others, an export that is
consistent, file by file, but not yet whole) and when that run read the topics' end offsets
(``read_at``): what the ledger held before then is in a complete export.

Anything else is :class:`~ledger.errors.ExportError`, one line naming the entry.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, TypeAlias

from ledger.core.jsonform import parse_instant
from ledger.errors import ExportError
from ledger.files import UnreadableFile, read_bounded

__all__ = [
    "no_export",
    "incomplete_note",
    "MANIFEST",
    "MANIFEST_BYTES",
    "FORMAT_VERSION",
    "ExportPath",
    "Manifest",
    "file_path",
    "listed_file",
    "readable_folder",
    "read_manifest",
]

MANIFEST: Final = "_manifest.json"
FORMAT_VERSION: Final = 1
MANIFEST_BYTES: Final = 256 * 1024 * 1024
"""The largest manifest read (about a million files' entries; compaction keeps a long
``--follow`` to a few files per partition and day)."""

ExportPath: TypeAlias = str | os.PathLike[str]
"""An export directory, as every function of the audit wing takes it: ``"export"``, a
:class:`~pathlib.Path` or any other path-like object."""

_TOPIC: Final = r"[A-Za-z0-9._-]{1,249}"  # Kafka's topic names
_DATE: Final = r"[0-9]{1,4}-[0-9]{2}-[0-9]{2}"  # years before 1000 had fewer digits until v13
_PATH: Final = re.compile(
    rf"topic=(?P<topic>{_TOPIC})/date=(?P<date>{_DATE})/(?P=topic)"
    r"\+(?P<partition>[0-9]{1,10})\+(?P<first>[0-9]{1,19})(?:~(?P<last>[0-9]{1,19}))?\.parquet"
)
_STAMP: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{8,15}Z")


def _is_stamp(value: Any) -> bool:
    """Is ``value`` a time as an export writes one, and a real one: the form alone let
    ``2026-19-45T99:99:99Z`` through to readers that parse it (`audit verify` and `actor
    verify` ended in a traceback; a maintainability review)."""
    if not (isinstance(value, str) and _STAMP.fullmatch(value)):
        return False
    try:
        at = parse_instant(value)
    except ValueError:
        return False
    # A time an exporter's clock wrote: year 1 passed, and readers subtracting their grace
    # from it overflowed (a review).
    return _YEARS[0] <= at.year <= _YEARS[1]


_YEARS: Final = (1970, 9000)
"""The years an export's times may fall in."""


_KEYS: Final = frozenset(
    {"format", "topic_prefix", "updated_at", "complete", "read_at", "offsets", "files", "retired"}
)
"""Every key a manifest holds (some only in those written since they were added)."""
_FILE_KEYS: Final = frozenset(
    {"path", "topic", "partition", "date", "first_offset", "last_offset", "rows"}
)
_RETIRED_KEYS: Final = frozenset({"path", "at"})
_MAX_OFFSET: Final = 2**63 - 1
_MAX_PARTITION: Final = 2**31 - 1


def path_parts(relative: str) -> tuple[str, int, int, int | None] | None:
    """``(topic, partition, first offset, last offset of a merged file or None)`` of a data file
    path as :func:`file_path` writes it, else ``None``."""
    found = _PATH.fullmatch(relative)
    if found is None:
        return None
    last = found["last"]
    return (
        found["topic"],
        int(found["partition"]),
        int(found["first"]),
        None if last is None else int(last),
    )


def file_path(topic: str, partition: int, date: str, first: int, last: int | None = None) -> str:
    """Where an export keeps a file (relative to the directory): ``last`` for a merged one."""
    merged = f"~{last}" if last is not None else ""
    return f"topic={topic}/date={date}/{topic}+{partition}+{first}{merged}.parquet"


@dataclass
class Manifest:
    """What an export directory holds: its files, and the next offset of every partition."""

    prefix: str = ""
    offsets: dict[str, dict[int, int]] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)
    updated_at: str | None = None
    retired: list[dict[str, Any]] = field(default_factory=list)
    """Files merged into others by compaction (``path``, ``at``: when, ISO 8601): no longer
    read, removed once :data:`~ledger.audit.writer.RETIRE_AFTER_S` has passed (a reader that
    listed them before the merge may still be reading them)."""
    complete: bool = True
    """Whether the run that last wrote the manifest read every topic up to the end offsets it
    set out to read (False: it was killed or interrupted part-way; a manifest written before
    this was recorded counts as complete)."""
    read_at: str | None = None
    """When that run read the topics' end offsets (ISO 8601): everything the ledger held then
    is in the export once it is complete. ``None``: not recorded (see :meth:`read_time`)."""

    def read_time(self) -> str | None:
        """When the export last read the topics: ``read_at``, else (a manifest written before
        it was recorded) ``updated_at``, a later bound."""
        return self.read_at or self.updated_at

    def read_instant(self) -> datetime | None:
        """:meth:`read_time` as an instant; ``None`` when not recorded, or when an old
        manifest's ``updated_at`` (text never checked) is not one."""
        read = self.read_time()
        try:
            return parse_instant(read) if read is not None else None
        except ValueError:
            return None

    def next_offset(self, topic: str, partition: int) -> int:
        return self.offsets.get(topic, {}).get(partition, 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "topic_prefix": self.prefix,
            "updated_at": self.updated_at,
            "complete": self.complete,
            "read_at": self.read_at,
            "offsets": {
                topic: {str(p): o for p, o in sorted(parts.items())}
                for topic, parts in self.offsets.items()
            },
            "files": self.files,
            "retired": self.retired,
        }

    @classmethod
    def from_json(cls, raw: Any, where: Path) -> Manifest:
        """The manifest in ``raw`` (parsed JSON), every field checked (see the module
        docstring); :class:`~ledger.errors.ExportError` naming the first bad one."""
        check = _Checker(where)
        data = check.mapping(raw, "the manifest")
        if data.get("format") != FORMAT_VERSION:
            raise ExportError(
                f"{where} is export format {data.get('format')!r}; this ledger reads format "
                f"{FORMAT_VERSION}"
            )
        check.mapping(data, "the manifest", _KEYS)  # after its format: a later one may hold more
        prefix = data.get("topic_prefix", "")
        if not isinstance(prefix, str) or (prefix and not re.fullmatch(_TOPIC, prefix)):
            check.fail(f"topic_prefix {prefix!r} is not a topic name prefix")
        offsets: dict[str, dict[int, int]] = {}
        for topic, parts in check.mapping(data.get("offsets"), "offsets").items():
            check.topic(topic, f"offsets[{topic!r}]")
            offsets[topic] = {
                check.partition_key(p, f"offsets[{topic!r}]"): check.number(
                    o, f"offsets[{topic!r}][{p!r}]", _MAX_OFFSET
                )
                for p, o in check.mapping(parts, f"offsets[{topic!r}]").items()
            }
        files = [
            check.file(entry, f"files[{i}]")
            for i, entry in enumerate(check.sequence(data.get("files"), "files"))
        ]
        check.distinct(files)
        check.behind(files, offsets)
        retired = [
            check.retired(entry, f"retired[{i}]")
            for i, entry in enumerate(check.sequence(data.get("retired", []), "retired"))
        ]
        updated = data.get("updated_at")
        if updated is not None and not _is_stamp(updated):
            # a time every exporter has written this way; `audit verify` reads it as when the
            # topics were read when read_at is absent, so it must not be text it skips
            check.fail(f"updated_at {updated!r:.40} is not a time (YYYY-MM-DDTHH:MM:SS.ffffffZ)")
        complete = data.get("complete", True)
        if not isinstance(complete, bool):
            check.fail(f"complete {complete!r:.40} is not true or false")
        read_at = data.get("read_at")
        if read_at is not None and not _is_stamp(read_at):
            check.fail(f"read_at {read_at!r:.40} is not a time (YYYY-MM-DDTHH:MM:SS.ffffffZ)")
        return cls(
            prefix=prefix,
            offsets=offsets,
            files=files,
            updated_at=updated,
            retired=retired,
            complete=complete,
            read_at=read_at,
        )


class _Checker:
    """The checks of :meth:`Manifest.from_json`, each failing with one line naming the field."""

    def __init__(self, where: Path) -> None:
        self.where = where

    def fail(self, problem: str) -> None:
        raise ExportError(f"{self.where} is not a ledger export manifest: {problem}")

    def mapping(self, value: Any, name: str, keys: frozenset[str] | None = None) -> dict[str, Any]:
        """``value``, an object (with ``keys``: of those keys only; an exporter writes no
        other, and the writer would copy one into every manifest it rewrites)."""
        if not isinstance(value, dict):
            self.fail(f"{name} is {_kind(value)}, not an object")
        if keys is not None:
            other = next((k for k in value if k not in keys), None)
            if other is not None:
                self.fail(f"{name} holds {other!r:.40}, a key no exporter writes")
        return value  # type: ignore[no-any-return]  # checked above to be of the kind asked for (JSON values are Any)

    def sequence(self, value: Any, name: str) -> list[Any]:
        if not isinstance(value, list):
            self.fail(f"{name} is {_kind(value)}, not a list")
        return value  # type: ignore[no-any-return]  # checked above to be of the kind asked for (JSON values are Any)

    def number(self, value: Any, name: str, most: int) -> int:
        if type(value) is not int or not 0 <= value <= most:
            self.fail(f"{name} is {value!r:.40}, not a whole number from 0 to {most:,}")
        return value  # type: ignore[no-any-return]  # checked above to be of the kind asked for (JSON values are Any)

    def topic(self, value: Any, name: str) -> str:
        if not isinstance(value, str) or not re.fullmatch(_TOPIC, value):
            self.fail(f"{name}: {value!r:.80} is not a Kafka topic name")
        return value  # type: ignore[no-any-return]  # checked above to be of the kind asked for (JSON values are Any)

    def partition_key(self, value: str, name: str) -> int:
        if not (value.isascii() and value.isdigit() and len(value) <= 10):
            self.fail(f"{name}: partition {value!r:.40} is not a partition number")
        return self.number(int(value), f"{name}[{value!r}]", _MAX_PARTITION)

    def path(self, value: Any, name: str) -> re.Match[str]:
        found = _PATH.fullmatch(value) if isinstance(value, str) else None
        if found is None:
            self.fail(
                f"{name}.path {value!r:.120} is not where an export keeps a file "
                "(topic=T/date=YYYY-MM-DD/T+PARTITION+OFFSET.parquet)"
            )
        return found  # type: ignore[return-value]  # fail() raises: found is a match here

    def file(self, value: Any, name: str) -> dict[str, Any]:
        entry = dict(self.mapping(value, name, _FILE_KEYS))
        topic = self.topic(entry.get("topic"), f"{name}.topic")
        partition = self.number(entry.get("partition"), f"{name}.partition", _MAX_PARTITION)
        date = entry.get("date")
        if not isinstance(date, str) or not re.fullmatch(_DATE, date):
            self.fail(f"{name}.date {date!r:.40} is not a date (YYYY-MM-DD)")
        first = self.number(entry.get("first_offset"), f"{name}.first_offset", _MAX_OFFSET)
        last = self.number(entry.get("last_offset"), f"{name}.last_offset", _MAX_OFFSET)
        if first > last:
            self.fail(f"{name}: first_offset {first} is after last_offset {last}")
        self.number(entry.get("rows"), f"{name}.rows", last - first + 1)
        found = self.path(entry.get("path"), name)
        expected = file_path(
            topic, partition, str(date), first, last if found["last"] is not None else None
        )
        if entry["path"] != expected:
            self.fail(
                f"{name}.path {entry['path']!r} is not its topic's, partition's, date's "
                f"and offsets' ({expected})"
            )
        return entry

    def distinct(self, files: list[dict[str, Any]]) -> None:
        """No file is listed twice (readers would count its rows twice, and a merge take them
        twice). Files of one partition may span the same offsets: rows go to the file of their
        date, and dates need not grow with offsets."""
        seen: set[str] = set()
        for entry in files:
            if entry["path"] in seen:
                self.fail(f"{entry['path']} is listed twice")
            seen.add(entry["path"])

    def behind(self, files: list[dict[str, Any]], offsets: dict[str, dict[int, int]]) -> None:
        """Every file's rows come before its partition's next offset: the writer moves that
        offset past the rows it lists, in the same rewrite. One behind its files would have the
        next export read those offsets again, and every query count them twice."""
        for entry in files:
            topic, partition, last = entry["topic"], entry["partition"], entry["last_offset"]
            following = offsets.get(topic, {}).get(partition)
            if following is None or following <= last:
                said = "no next offset" if following is None else f"next offset {following}"
                self.fail(
                    f"{entry['path']} holds offsets up to {last}, but the manifest gives "
                    f"{topic} partition {partition} {said}: the manifest was altered (or is "
                    "not this export's); keep the directory as evidence, and export anew into "
                    "a fresh one"
                )

    def retired(self, value: Any, name: str) -> dict[str, Any]:
        entry = dict(self.mapping(value, name, _RETIRED_KEYS))
        self.path(entry.get("path"), name)
        at = entry.get("at")
        if not _is_stamp(at):
            self.fail(f"{name}.at {at!r:.40} is not a time (YYYY-MM-DDTHH:MM:SS.ffffffZ)")
        return entry


_PATTERN_CHARACTERS: Final = frozenset("*?[]{}")
"""What DuckDB expands in a file name it is given, even in a list of names."""


def readable_folder(export_dir: Path) -> str:
    """``export_dir``'s real path, or :class:`~ledger.errors.ExportError` when it holds a
    character DuckDB reads as a file pattern, even in a list of names: it would read other
    folders' files as this export's. Readers check it, and the writer before it writes."""
    real = os.path.realpath(export_dir)
    if any(c in _PATTERN_CHARACTERS for c in real):
        raise ExportError(
            f"{real} holds one of {' '.join(sorted(_PATTERN_CHARACTERS))}, which DuckDB reads "
            "as a file pattern (it would read other folders' files as this export's): move "
            "or rename the export folder"
        )
    return real


def listed_file(export_dir: Path, relative: str) -> Path:
    """The data file a manifest entry lists (``relative``: its checked path), as readers open
    it: :class:`~ledger.errors.ExportError` when it is missing, or when it or a folder on its
    way is a link, which would show a reader, and have a merge copy, a file that is not the
    export's; and when the export's path holds a character DuckDB reads as a pattern."""
    path = export_dir / relative
    real = readable_folder(export_dir)
    if os.path.realpath(path) != os.path.join(real, relative):
        raise ExportError(
            f"{path} is a symbolic link (or a folder on its way is), not a file of the export: "
            "remove it and export again (and check who can write to the export)"
        )
    if not path.is_file():
        raise ExportError(
            f"{path} is listed in the manifest of {export_dir} but missing: deleted since the "
            f"export; run `ledger audit verify --from {export_dir}`"
        )
    return path


def _kind(value: Any) -> str:
    return "missing" if value is None else f"a {type(value).__name__}"


def read_manifest(directory: ExportPath, *, at: int | None = None) -> Manifest | None:
    """The manifest of an export directory, checked (see the module docstring); ``None`` when
    it has none. With ``at`` (a descriptor of the directory: the writer's), it is read from
    that folder and must not be a link: the writer would adopt, and rewrite here, a manifest
    planted from elsewhere."""
    path = Path(directory) / MANIFEST
    try:
        data = (
            read_bounded(path, MANIFEST_BYTES, what="manifest")
            if at is None
            else read_bounded(
                Path(MANIFEST), MANIFEST_BYTES, what="manifest", dir_fd=at, shown=path
            )
        )
    except UnreadableFile as exc:
        if exc.missing:
            return None
        raise ExportError(str(exc)) from None
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path} is not JSON ({exc})") from exc
    except RecursionError:
        raise ExportError(f"{path} is JSON nested too deeply to be a manifest") from None
    except ValueError as exc:  # a number of too many digits
        raise ExportError(f"{path} is not a ledger export manifest ({exc})") from None
    return Manifest.from_json(raw, path)


def incomplete_note(directory: ExportPath, manifest: Manifest) -> str | None:
    """The one line readers print about an export whose last run stopped part-way (its topics
    end at different points: requests without their decisions, say); ``None`` when complete."""
    if manifest.complete:
        return None
    return (
        f"{directory} is incomplete: the export that last wrote it stopped part-way (its topics "
        f"end at different points); run `ledger export --out {directory}` again to complete it"
    )


def no_export(directory: Path) -> ExportError:
    """The one-line error for a directory that holds no export: where the export probably is
    when ``directory`` holds one below it (a ledger home holds its default export in
    ``export/``), else how to make one. Never advises exporting into a folder that holds other
    things."""
    below = sorted(
        child
        for child in (directory.iterdir() if directory.is_dir() else ())
        if child.is_dir() and (child / MANIFEST).is_file()
    )[:3]
    if below:
        return ExportError(
            f"{directory} holds no export (no {MANIFEST}), but {', '.join(map(str, below))} "
            f"does: pass that with --from (e.g. --from {below[0]})"
        )
    empty = directory.is_dir() and not any(directory.iterdir())
    advice = (
        f"run `ledger export --out {directory}` first"
        if empty or not directory.exists()
        else "pass the directory `ledger export` wrote with --from (it holds _manifest.json)"
    )
    return ExportError(f"{directory} holds no export (no {MANIFEST}): {advice}")
