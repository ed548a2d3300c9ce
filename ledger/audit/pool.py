"""The export's helper processes: a one-shot run with more than :data:`POOL_THRESHOLD`
records to read cuts every partition's range into units of consecutive offsets, and a helper
exports a unit end to end (reads it, makes its rows, writes its files). The run's own process
only plans the units and keeps the manifest: a unit's files are listed, and its partition's
next offset moved past it, once every unit before it in that partition is done too
(:class:`_Prefixes`). Nothing crosses between processes but the units and the names of the
files written.
"""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ledger.audit.fromkafka import Idle, Ranges, Sink, Source, Where
from ledger.audit.rows import RowMaker
from ledger.audit.writer import ExportWriter, RowFiles
from ledger.errors import ExportError
from ledger.pids import running
from ledger.settings import KafkaSecurity, TopicNames

__all__ = ["POOL_THRESHOLD", "POOL_HELPERS", "Helpers", "export_in_helpers", "start_fork_server"]

Progress = Callable[[int, int], None]
"""``progress(records done, records to do)`` during a one-shot export."""

POOL_THRESHOLD: Final = 20_000
"""A one-shot export with more records than this to read is done by helper processes (one per
core, at most :data:`POOL_HELPERS`); a smaller one does not pay their start-up."""
POOL_HELPERS: Final = 4
_MIN_UNIT: Final = 4_096
"""The fewest records a helper is given at once (unless the run's flush size is smaller)."""


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
        self.files = RowFiles(out, topics, RowMaker(topics), identity=identity)
        self.topics = topics
        self.bootstrap = bootstrap
        self.security = security
        self.counter = counter
        self.source: Source | None = None
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
            self.source = Source(self.bootstrap, self.topics, self.security)
            self.read_before = set()
        self.read_before.add(where)
        source = self.source
        source.watch({where: (unit.start, unit.stop)}, bounded=True)
        sink = Sink(self.files, lambda *other: unit.start if other == where else _NEVER)
        idle = Idle(self.bootstrap, f" of {unit.topic} partition {unit.partition}")
        while where not in source.done:
            taken, arrived = source.read(sink, bounded=True)
            if taken:
                with self.counter.get_lock():
                    self.counter.value += taken
            if arrived:
                idle.arrived()
            else:
                idle.check("it has more")
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
    signal.signal(
        signal.SIGINT, signal.SIG_IGN
    )  # as the server's preload does: the export stops us
    server = os.getppid()  # the fork server (it exits once the export and its helpers have)

    def watch() -> None:
        # A helper outlives an export killed by SIGKILL (nothing tells it): it would keep the
        # export's stdout and stderr open, and its caller waiting for their end.
        while os.getppid() == server and running(parent):
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="ledger-export-parent-watch", daemon=True).start()
    _HELPER.append(_Helper(out, identity, topics, bootstrap, security, counter))


def _helper_run(unit: _Unit) -> _UnitDone:
    (helper,) = _HELPER
    return helper.run(unit)


def _helper_context() -> Any:
    """The ``multiprocessing`` context helpers start from (its fork server preloads
    :mod:`ledger.audit._preload`)."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["ledger.audit._preload"])
    return context


def start_fork_server() -> None:
    """Start the helpers' fork server now, so that it imports and builds the codec while the
    run plans (~0.6 s of CPU, wasted when the run turns out small enough for one process)."""
    from multiprocessing import forkserver

    _helper_context()
    forkserver.ensure_running()


class Helpers:
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

    def close(self, *, now: bool = False) -> None:
        """Wait for the helpers to finish their units and exit; ``now`` (the export failed or
        was interrupted): stop them at once, their units' files left for the next run's repair.
        Helpers ignore Ctrl-C (:mod:`ledger.audit._preload`): this process stops them."""
        if now:
            # ProcessPoolExecutor has no public way to stop its processes before Python 3.14.
            for process in list(getattr(self.pool, "_processes", {}).values()):
                process.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)


def export_in_helpers(
    writer: ExportWriter,
    ranges: Ranges,
    helpers: Helpers,
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
    except OSError as exc:  # a folder of the export it could not write in, say
        # Its file names are relative (written through the folder's descriptor): a
        # topic's file, `.ledger.decisions+0+305.parquet.tmp-…`, names the folder.
        name = os.path.basename(exc.filename) if isinstance(exc.filename, str) else ""
        topic = name.lstrip(".").split("+", 1)[0] if "+" in name else ""
        folder = f" in the export's topic={topic} folder" if topic else ""
        raise ExportError(
            f"a helper process could not write{folder}: {exc.strerror or exc}; make the export "
            "folder writable (or choose another --out), then run the export again: it goes on "
            "from what was complete"
        ) from exc
    except Exception as exc:
        raise ExportError(f"a helper process failed exporting: {exc}") from exc
