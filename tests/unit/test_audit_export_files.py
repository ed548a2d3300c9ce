"""The file half of an export: the manifest is the truth, leftovers of a killed run are removed,
re-adding is idempotent, and the audit wing keeps to its layer."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from export_format import rejected as command_rejected

from ledger.audit.export import LOCK, MANIFEST, ExportWriter, read_manifest
from ledger.audit.writer import _conform
from ledger.core.events import CommandRejected
from ledger.errors import ExportError
from ledger.settings import TopicNames

ROOT = Path(__file__).resolve().parents[2]
TOPICS = TopicNames(prefix="f.")
T0 = datetime(2026, 2, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def rejected(n: int) -> CommandRejected:
    return command_rejected(n, T0)


def write(out: Path, numbers: range) -> ExportWriter:
    writer = ExportWriter(out, TOPICS)
    for n in numbers:
        writer.add_event(TOPICS.command_results, 0, n, rejected(n))
    writer.flush()
    return writer


def rows(out: Path) -> int:
    manifest = read_manifest(out)
    assert manifest is not None
    files = [str(out / f["path"]) for f in manifest.files]
    con = duckdb.connect()
    try:
        (count,) = con.execute("SELECT count(*) FROM read_parquet(?)", [files]).fetchone() or (0,)
    finally:
        con.close()
    return int(count)


def test_leftovers_beyond_the_manifest_are_removed_and_nothing_else(tmp_path: Path) -> None:
    write(tmp_path, range(0, 30))
    topic_dir = tmp_path / f"topic={TOPICS.command_results}" / "date=2026-02-02"
    topic_dir.mkdir(parents=True, exist_ok=True)
    # What a killed run leaves: a complete file it never listed, a temporary file, a manifest
    # being written; and a file of the analyst's own, which must survive.
    unlisted = topic_dir / f"{TOPICS.command_results}+0+30.parquet"
    unlisted.write_bytes(b"PAR1 partial")
    (topic_dir / f".{unlisted.name}.tmp-123").write_bytes(b"half")
    (tmp_path / f".{MANIFEST}.tmp-123").write_text("{")
    (tmp_path / "notes.txt").write_text("mine")
    writer = ExportWriter(tmp_path, TOPICS)
    assert writer.removed == 3 and not unlisted.exists()
    # The data file is named (`ledger export` says so): it may be evidence someone planted.
    assert writer.unlisted == [f"topic={TOPICS.command_results}/date=2026-02-02/{unlisted.name}"]
    assert (tmp_path / "notes.txt").read_text() == "mine"
    for n in range(30, 40):
        writer.add_event(TOPICS.command_results, 0, n, rejected(n))
    writer.flush()
    assert rows(tmp_path) == 40


def test_offsets_and_files_are_committed_together(tmp_path: Path) -> None:
    writer = write(tmp_path, range(0, 5))
    manifest = read_manifest(tmp_path)
    assert manifest is not None
    assert manifest.offsets == {TOPICS.command_results: {0: 5}}
    assert writer.next_offset(TOPICS.command_results, 0) == 5
    # Rows buffered but not flushed are not in the manifest: a crash loses no committed row.
    writer.add_event(TOPICS.command_results, 0, 5, rejected(5))
    assert json.loads((tmp_path / MANIFEST).read_text())["offsets"] == {
        TOPICS.command_results: {"0": 5}
    }
    assert rows(tmp_path) == 5


def test_an_export_of_another_ledger_or_a_bad_manifest_is_refused(tmp_path: Path) -> None:
    write(tmp_path, range(0, 2))
    with pytest.raises(ExportError, match="prefixed"):
        ExportWriter(tmp_path, TopicNames(prefix="other."))
    (tmp_path / MANIFEST).write_text("not json")
    with pytest.raises(ExportError, match="not JSON"):
        ExportWriter(tmp_path, TOPICS)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="not a directory"):
        ExportWriter(tmp_path / "file", TOPICS)


def test_the_audit_wing_never_loads_the_launcher_or_the_cli() -> None:
    modules = [
        "ledger.audit",
        "ledger.audit.rows",
        "ledger.audit.export",
        "ledger.audit.sql",
        "ledger.audit.history",
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    bad = [
        m for m in done.stdout.split() if m.startswith(("ledger.local", "ledger.cli", "processors"))
    ]
    assert not bad, f"the audit wing loads {bad}"


def test_an_empty_ledger_exports_to_an_empty_export(tmp_path: Path) -> None:
    """Found by the point-in-time property: a history with no events left no manifest, and the
    views then said the directory held no export."""
    ExportWriter(tmp_path, TOPICS).flush()
    manifest = read_manifest(tmp_path)
    assert manifest is not None and manifest.files == []
    from ledger.audit.sql import connect

    con = connect(tmp_path)
    try:
        assert con.execute("SELECT count(*) FROM decisions").fetchone() == (0,)
    finally:
        con.close()


def test_helper_units_cover_every_range_once_each_partition_in_order() -> None:
    from ledger.audit.pool import _units

    ranges = {("a", 0): (10, 35), ("a", 1): (0, 5), ("b", 0): (7, 7)}
    units = _units(ranges, 10)
    # Every partition's first unit first, so helpers start on different partitions.
    assert [(u.topic, u.partition, u.start, u.stop) for u in units] == [
        ("a", 0, 10, 20),
        ("a", 1, 0, 5),
        ("a", 0, 20, 30),
        ("a", 0, 30, 35),
    ]


def test_units_are_committed_only_once_their_partition_prefix_is_done() -> None:
    """A helper may finish a partition's later unit first: its files wait, unlisted (a killed
    run's next run removes them), until every unit before it is done."""
    from ledger.audit.pool import _Prefixes, _UnitDone, _units

    ranges = {("a", 0): (0, 30), ("a", 1): (100, 110)}
    first, other, second, third = _units(ranges, 10)

    def done(unit: object) -> _UnitDone:
        assert isinstance(unit, type(first))
        name = f"{unit.topic}+{unit.partition}+{unit.start}"
        return _UnitDone(unit, [{"path": name, "rows": unit.stop - unit.start}], 10)

    prefixes = _Prefixes(ranges)
    assert prefixes.take([done(third), done(second)]) == ([], {})
    files, offsets = prefixes.take([done(other)])
    assert ([f["path"] for f in files], offsets) == (["a+1+100"], {("a", 1): 110})
    files, offsets = prefixes.take([done(first)])
    assert [f["path"] for f in files] == ["a+0+0", "a+0+10", "a+0+20"]
    assert offsets == {("a", 0): 30}


@pytest.mark.parametrize("text", ["{", "[" * 100_000 + "]" * 100_000])
def test_a_manifest_that_is_not_json_is_one_export_error(tmp_path: Path, text: str) -> None:
    # Nested past the parser's recursion: one ExportError (exit 9), not a RecursionError.
    from ledger.errors import ExportError

    (tmp_path / MANIFEST).write_text(text)
    with pytest.raises(ExportError, match=r"is not JSON|nested too deeply"):
        read_manifest(tmp_path)


def test_one_writer_at_a_time_so_a_second_cannot_remove_the_firsts_files(
    tmp_path: Path,
) -> None:
    # A writer writes its files, then lists them in the manifest. A second run opening the
    # directory in between took those files for a killed run's leftovers and removed them,
    # and the first then listed files that no longer existed: the export could not be read.
    first = write(tmp_path, range(0, 5))
    for n in range(5, 10):
        first.add_event(TOPICS.command_results, 0, n, rejected(n))
    written = first.write_files()  # on disk, not yet listed
    with pytest.raises(ExportError) as refused:
        ExportWriter(tmp_path, TOPICS)
    assert str(refused.value) == (
        f"another export is writing to {tmp_path} (pid {os.getpid()}): wait for it to finish, "
        "or stop it (`ledger export --follow` holds its directory until it stops)"
    )
    assert all((tmp_path / f["path"]).is_file() for f in written)
    first.commit(written, {(TOPICS.command_results, 0): 10})
    assert rows(tmp_path) == 10
    first.close()
    assert not (tmp_path / LOCK).exists()  # held only while a writer works
    with ExportWriter(tmp_path, TOPICS) as second:
        assert second.removed == 0 and second.next_offset(TOPICS.command_results, 0) == 10
    assert rows(tmp_path) == 10


def test_a_reader_asking_whether_an_export_runs_keeps_no_writer_out(tmp_path: Path) -> None:
    # `audit verify` asks whether an export holds the lock (`writer_at`) with a shared lock
    # held for an instant: an export starting in that instant waits it out, it does not stop
    # saying another export is writing.
    import fcntl
    import threading

    from ledger.audit.folder import writer_at

    write(tmp_path, range(0, 5)).close()
    assert writer_at(tmp_path) is None  # none runs (and none left a lock file)
    (tmp_path / LOCK).write_text("4242\n")  # a dead writer's file: no lock held
    assert writer_at(tmp_path) is None
    fd = os.open(tmp_path / LOCK, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a reader's probe, caught in the act
    threading.Timer(0.02, os.close, [fd]).start()
    with ExportWriter(tmp_path, TOPICS) as writer:
        found = writer_at(tmp_path)
        assert found is not None and found.pid == os.getpid()
        assert writer.next_offset(TOPICS.command_results, 0) == 5
    assert writer_at(tmp_path) is None


def test_a_writer_killed_holding_the_directory_leaves_no_stale_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from ledger.audit.export import ExportWriter\n"
            "from ledger.settings import TopicNames\n"
            f"w = ExportWriter({str(tmp_path)!r}, TopicNames(prefix='f.'))\n"
            "print('ready', flush=True)\n"
            "time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(ExportError, match=rf"\(pid {holder.pid}\)"):
            ExportWriter(tmp_path, TOPICS)
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    # The kernel released its lock with the process; its lock file is taken over, not a block.
    with ExportWriter(tmp_path, TOPICS) as writer:
        writer.add_event(TOPICS.command_results, 0, 0, rejected(0))
        writer.flush()
    assert rows(tmp_path) == 1 and not (tmp_path / LOCK).exists()


# --------------------------------------------------------------------------- compaction


def flushes(writer: ExportWriter, sizes: list[int], start: int = 0) -> int:
    """Flush ``sizes`` rows at a time (one file each: one topic, partition and date)."""
    n = start
    for size in sizes:
        for _ in range(size):
            writer.add_event(TOPICS.command_results, 0, n, rejected(0))
            n += 1
        writer.flush()
    return n


def offsets_read(out: Path) -> list[int]:
    manifest = read_manifest(out)
    assert manifest is not None
    con = duckdb.connect()
    try:
        found = con.execute(
            'SELECT list("offset" ORDER BY "offset") FROM read_parquet(?)',
            [[str(out / f["path"]) for f in manifest.files]],
        ).fetchone()
    finally:
        con.close()
    return list(found[0]) if found else []


def test_small_files_are_merged_as_they_gather_and_nothing_is_lost(tmp_path: Path) -> None:
    # A long --follow writes a file per partition per flush: thousands a day, and every query
    # reads every footer. Sixteen files of one size tier become one.
    with ExportWriter(tmp_path, TOPICS) as writer:
        n = flushes(writer, [1] * 15)
        assert writer.files_compacted == 0 and len(writer.manifest.files) == 15
        n = flushes(writer, [2], start=n)  # the sixteenth file under 16 rows
        manifest = read_manifest(tmp_path)
        assert manifest is not None and writer.files_compacted == 16
        [merged] = manifest.files
        assert merged["path"].endswith(f"{TOPICS.command_results}+0+0~16.parquet")
        assert (merged["first_offset"], merged["last_offset"], merged["rows"]) == (0, 16, 17)
        # The inputs are unlisted at once, and stay on disk for readers that listed them.
        assert len(manifest.retired) == 16
        assert all((tmp_path / f["path"]).is_file() for f in manifest.retired)
        assert offsets_read(tmp_path) == list(range(17))
        # Tiers: sixteen files of 16-255 rows merge; the one of 17 rows counts among them.
        n = flushes(writer, [20] * 15, start=n)
        assert len(writer.manifest.files) == 1 and writer.manifest.files[0]["rows"] == 317
        assert offsets_read(tmp_path) == list(range(n))
        # A run's summary says so.
        assert writer.files_compacted == 32 and writer.files_written == 31
    # The next writer keeps the retired files (not leftovers) until their time has come.
    with ExportWriter(tmp_path, TOPICS) as writer:
        assert writer.removed == 0
        writer.retire_after = 0
        flushes(writer, [1], start=n)
    manifest = read_manifest(tmp_path)
    assert manifest is not None and manifest.retired == []
    on_disk = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet")}
    assert on_disk == {f["path"] for f in manifest.files}
    assert offsets_read(tmp_path) == list(range(n + 1))


def test_a_merge_cut_short_is_undone_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ExportWriter(tmp_path, TOPICS) as writer:
        n = flushes(writer, [1] * 15)
        real = ExportWriter.commit

        def crash(self: ExportWriter, files: Any, offsets: Any, **kw: Any) -> None:
            if kw.get("merged"):
                raise OSError("killed")  # the merged file is on disk, the manifest unchanged
            real(self, files, offsets, **kw)

        monkeypatch.setattr(ExportWriter, "commit", crash)
        with pytest.raises(OSError, match="killed"):
            flushes(writer, [1], start=n)
        monkeypatch.undo()
    assert len(list(tmp_path.rglob("*~*.parquet"))) == 1
    with ExportWriter(tmp_path, TOPICS) as writer:
        assert writer.removed == 1  # the unlisted merged file
        assert offsets_read(tmp_path) == list(range(16))
        writer.compact()  # the same sixteen files, merged again
        assert len(writer.manifest.files) == 1
    assert offsets_read(tmp_path) == list(range(16))


def test_files_written_before_a_column_was_added_merge_with_nulls_there() -> None:
    schema = pa.schema([("a", pa.int64()), ("b", pa.string())])
    older = pa.table({"a": [1, 2]})
    assert _conform(older, schema).to_pydict() == {"a": [1, 2], "b": [None, None]}
    assert _conform(pa.table({"a": [1], "b": ["x"]}), schema).schema.equals(schema)


def test_a_file_that_cannot_be_merged_leaves_its_group_and_the_export_going(
    tmp_path: Path,
) -> None:
    with ExportWriter(tmp_path, TOPICS) as writer:
        n = flushes(writer, [1] * 15)
        (tmp_path / writer.manifest.files[3]["path"]).write_bytes(b"not parquet")  # damaged
        n = flushes(writer, [1], start=n)  # the export goes on; its group stays unmerged
        assert writer.files_compacted == 0 and len(writer.manifest.files) == 16
        assert (
            writer.compaction_problems
            and "could not merge 16 files" in (writer.compaction_problems[0])
        )
        assert not list(tmp_path.rglob(".*.tmp-*"))
        n = flushes(writer, [1], start=n)  # not tried again by this run
        assert len(writer.compaction_problems) == 1
    assert read_manifest(tmp_path) is not None


def test_files_of_alternating_sizes_merge_without_overlap_or_loss(tmp_path: Path) -> None:
    # A review's case: with files grouped by size tier, 16 files of 5 rows interleaved with 15
    # of 20 merged into one covering offsets 0-379, then it and the 15 inside its range into a
    # file of the same name, which the retirement of the first later deleted: the export could
    # no longer be read. Only consecutive files merge now.
    with ExportWriter(tmp_path, TOPICS) as writer:
        writer.retire_after = 0  # retirements come due at once
        n = flushes(writer, [5, 20] * 15 + [5])
        n = flushes(writer, [0, 3], start=n)  # an empty flush, then three rows
        manifest = writer.manifest
    spans = sorted((int(f["first_offset"]), int(f["last_offset"])) for f in manifest.files)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))  # no overlap
    assert all((tmp_path / f["path"]).is_file() for f in manifest.files)
    assert offsets_read(tmp_path) == list(range(n)) == list(range(383))
    for f in manifest.files:  # rows in offset order within each file
        column = pq.read_table(tmp_path / f["path"], columns=["offset"]).column(0).to_pylist()
        assert column == sorted(column)


def test_files_either_side_of_offsets_the_export_lacks_do_not_merge(tmp_path: Path) -> None:
    # Retention deleting records between two runs leaves offsets no file holds. A merged file
    # spanning them would hold offsets it lacks, which `ledger audit verify` takes for rows
    # deleted from the export: merging stops there.
    with ExportWriter(tmp_path, TOPICS) as writer:
        n = flushes(writer, [1] * 8)
        n = flushes(writer, [1] * 8, start=n + 5)  # offsets 8-12 gone before this run
        n = flushes(writer, [1] * 16, start=n)  # and sixteen consecutive small files
        manifest = writer.manifest
    spans = sorted((int(f["first_offset"]), int(f["last_offset"])) for f in manifest.files)
    assert not any(a <= 10 <= b for a, b in spans), spans  # no span covers the gap
    assert (13, 28) in spans  # the sixteen files after it did merge
    assert offsets_read(tmp_path) == [*range(8), *range(13, 37)]


def test_files_of_one_date_whose_gaps_another_date_holds_still_merge(tmp_path: Path) -> None:
    # A review: around midnight a partition's rows alternate between two dates, so each date's
    # files skip the other's offsets; ending a merge run at every such gap left 1,000 files
    # where 10 had been.
    day, night = T0, T0 + timedelta(days=1)
    with ExportWriter(tmp_path, TOPICS) as writer:
        n = 0
        for _ in range(40):  # a flush per two records, one of each date
            for when in (day, night):
                event = dataclasses.replace(command_rejected(n, T0), occurred_at=when)
                writer.add_event(TOPICS.command_results, 0, n, event)
                n += 1
            writer.flush()
        manifest = writer.manifest
    # 80 files written, 40 a date: 31 of each merged into one (before: none merged).
    assert sorted(int(f["rows"]) for f in manifest.files) == [1] * 18 + [31] * 2
    assert offsets_read(tmp_path) == list(range(n))


def test_an_export_is_its_owners_unless_its_folder_says_whom_to_share_it_with(
    tmp_path: Path,
) -> None:
    # A red team's find: `ledger export --out DIR` under umask 022 made 0755 folders and 0644
    # files holding every request's facts, readable by every local user, though $LEDGER_HOME is
    # 0700. A new export is now its owner's; a folder made 0750 to share gives 0640 files.
    def modes(top: Path) -> set[tuple[str, int]]:
        return {
            ("dir" if p.is_dir() else "file", p.stat().st_mode & 0o777)
            for p in top.rglob("*")
            if p.name != LOCK
        }

    old = os.umask(0o022)
    try:
        private = tmp_path / "new" / "export"
        writer = ExportWriter(private, TOPICS)
        writer.add_event(TOPICS.command_results, 0, 0, rejected(0))
        writer.flush()
        writer.close()
        assert private.stat().st_mode & 0o777 == 0o700
        assert modes(private) == {("dir", 0o700), ("file", 0o600)}
        shared = tmp_path / "shared"
        shared.mkdir(mode=0o750)
        shared.chmod(0o750)
        assert not write(shared, range(0, 3)).warnings
        assert modes(shared) == {("dir", 0o750), ("file", 0o640)}
        # A folder every user may read (plain `mkdir` under umask 022) shares the facts with
        # them all: the export says so, and how to stop it.
        everyone = tmp_path / "everyone"
        everyone.mkdir(mode=0o755)
        (warning,) = write(everyone, range(0, 3)).warnings
        assert "readable by every user of this machine (mode 755)" in warning
        assert f"`chmod -R o-rwx {everyone}`" in warning
        assert not write(private, range(1, 2)).warnings
    finally:
        os.umask(old)


def test_a_senders_clock_does_not_choose_the_date_folders(tmp_path: Path) -> None:
    """A red team's finding: rows went into `date=` folders by `occurred_at`, which a request's
    sender chooses, and files are merged only within a date: 3,000 requests stamped a day
    apart left 3,000 files, never merged. On the topics outsiders write, a time more than a
    day from the record's Kafka timestamp (the broker's there) now yields to it; the ledger's
    own records keep their times."""
    from ledger.core.events import EvaluationRequested

    out = tmp_path / "export"
    writer = ExportWriter(out, TOPICS)
    appended = int(T0.timestamp() * 1000)
    for n in range(200):  # one a day, back to 2025 and on to 2026-08
        request = EvaluationRequested(
            event_id=f"q{n}",
            occurred_at=T0 + (n - 100) * DAY,
            actor="agent:a",
            action="refund.issue",
            principal="agent:a",
            resource="account:1",
        )
        writer.add_event(TOPICS.evaluation_requests, 0, n, request, timestamp_ms=appended + n)
        own = dataclasses.replace(rejected(0), event_id=f"r{n}", occurred_at=T0 + (n - 100) * DAY)
        writer.add_event(TOPICS.command_results, 0, n, own, timestamp_ms=appended + n)
    late = EvaluationRequested(
        event_id="late",
        occurred_at=T0 - DAY / 2,
        actor="agent:a",
        action="refund.issue",
        principal="agent:a",
        resource="account:1",
    )
    writer.add_event(TOPICS.evaluation_requests, 0, 200, late, timestamp_ms=appended + 200)
    writer.flush()
    writer.close()
    folders = sorted(p.name for p in (out / f"topic={TOPICS.evaluation_requests}").iterdir())
    # Within a day of the broker's time each keeps its own date (the honest, late one too).
    assert folders == ["date=2026-01-31", "date=2026-02-01", "date=2026-02-02"]
    own_folders = list((out / f"topic={TOPICS.command_results}").iterdir())
    assert len(own_folders) == 200  # the ledger's own records: filed by their own times
    assert rows(out) == 401


def test_an_export_folder_it_cannot_write_in_is_one_line_saying_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An auditor's walkthrough: a read-only export folder said "cannot lock exro2: Operation not
    # permitted", and a read-only topic folder named a helper's temporary file.
    import errno
    from concurrent.futures import Future

    import ledger.audit.folder as folder
    from ledger.audit.pool import _unit_result
    from ledger.errors import ExportError

    real_open = os.open

    def refused(path: Any, *args: Any, **kwargs: Any) -> int:
        if path == folder.LOCK:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return real_open(path, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(folder.os, "open", refused)
        with pytest.raises(
            ExportError, match=r"cannot write in .* make it writable, or choose another --out"
        ):
            ExportWriter(tmp_path / "out", TOPICS)
    failed: Future[Any] = Future()
    failed.set_exception(
        PermissionError(
            errno.EPERM, "Operation not permitted", ".ledger.decisions+0+305.parquet.tmp-1"
        )
    )
    with pytest.raises(
        ExportError,
        match=r"could not write in the export's topic=ledger.decisions folder: Operation not permitted; make the export folder writable",
    ):
        _unit_result(failed)


def test_a_run_stopped_part_way_leaves_a_manifest_saying_so(tmp_path: Path) -> None:
    """An auditor's walkthrough: an export killed part-way listed requests but no decisions,
    and `audit verify` called it intact. A run says it is incomplete with its first flush and
    complete with its last, even when that last one has nothing new to write."""
    from ledger.audit.manifest import incomplete_note

    read_at = datetime(2026, 2, 3, tzinfo=UTC)
    with ExportWriter(tmp_path, TOPICS) as writer:
        writer.note_run(read_at=read_at, complete=False)
        writer.add_event(TOPICS.command_results, 0, 0, rejected(0))
        writer.flush()  # a flush mid-run; the run is killed after it
    stopped = read_manifest(tmp_path)
    assert stopped is not None and not stopped.complete
    assert stopped.read_at == "2026-02-03T00:00:00.000000Z"
    note = incomplete_note(tmp_path, stopped)
    assert note is not None and f"run `ledger export --out {tmp_path}` again" in note
    with ExportWriter(tmp_path, TOPICS) as writer:  # the next run finds nothing new
        writer.note_run(read_at=read_at, complete=False)
        writer.note_run(read_at=read_at + DAY, complete=True)
        assert writer.flush() == 0
    finished = read_manifest(tmp_path)
    assert finished is not None and finished.complete
    assert finished.read_time() == "2026-02-04T00:00:00.000000Z"
    assert incomplete_note(tmp_path, finished) is None


def test_a_manifest_from_before_runs_were_recorded_reads_as_complete(tmp_path: Path) -> None:
    write(tmp_path, range(0, 2))
    document = json.loads((tmp_path / MANIFEST).read_text())
    del document["complete"], document["read_at"]
    (tmp_path / MANIFEST).write_text(json.dumps(document))
    manifest = read_manifest(tmp_path)
    assert manifest is not None and manifest.complete
    assert manifest.read_time() == document["updated_at"]  # the later bound it has
    for field, value in (("complete", "yes"), ("read_at", "yesterday")):
        (tmp_path / MANIFEST).write_text(json.dumps({**document, field: value}))
        with pytest.raises(ExportError, match=field):
            read_manifest(tmp_path)


def test_export_helpers_ignore_ctrl_c_and_the_export_stops_them(tmp_path: Path) -> None:
    """An auditor's walkthrough: Ctrl-C while the helpers started printed their tracebacks
    (KeyboardInterrupt in _helper_init). The terminal's Ctrl-C reaches every process of its
    group: helpers ignore it, and the export's own process stops them."""
    import signal
    import time

    from ledger.audit.pool import Helpers
    from ledger.pids import running

    with ExportWriter(tmp_path, TOPICS) as writer:
        helpers = Helpers(writer, "127.0.0.1:9", None, 1)
        try:
            pid = helpers.pool.submit(os.getpid).result(timeout=60)
            os.kill(pid, signal.SIGINT)
            time.sleep(0.3)
            assert helpers.pool.submit(os.getpid).result(timeout=10) == pid  # still serving
        finally:
            helpers.close(now=True)
    assert not running(pid)


def test_an_export_reads_each_topics_end_before_those_its_records_cite() -> None:
    # A helper's note: ends were read in the writer's order, governance first, so a decision
    # written between reading the governance and the decision ends cited a governance record
    # the export did not hold, and `audit verify` called a healthy export's record missing.
    from ledger.audit.fromkafka import _citing_first
    from ledger.audit.rows import topic_formats
    from ledger.settings import TopicNames

    topics = TopicNames()
    order = sorted(topic_formats(topics), key=_citing_first(topics))
    assert len(set(map(_citing_first(topics), order))) == len(order)  # every topic ranked
    position = order.index
    assert position(topics.chain_checkpoints) < position(topics.decisions)
    assert position(topics.corrections) < position(topics.decisions)
    assert position(topics.decisions) < position(topics.evaluation_requests)
    assert position(topics.decisions) < min(
        position(topics.policy_events), position(topics.grant_events)
    )
    assert position(topics.command_results) < position(topics.commands)
    assert position(topics.dead_letters) < position(topics.evaluation_requests)


def test_files_merged_away_can_be_removed_now_for_readers_that_list_folders(
    tmp_path: Path,
) -> None:
    # An auditor's walkthrough: a glob over an export read 58,929 rows for 27,747 offsets, the
    # merged-away files still on disk for their ten minutes. Spark, Trino and Athena list
    # folders too.
    def globbed(out: Path) -> int:
        con = duckdb.connect()
        try:
            found = con.execute(
                "SELECT count(*) FROM read_parquet(?)", [str(out / "**" / "*.parquet")]
            ).fetchone()
        finally:
            con.close()
        return found[0] if found else 0

    with ExportWriter(tmp_path, TOPICS) as writer:
        n = flushes(writer, [1] * 16)
        assert len(writer.manifest.retired) == 16
        assert globbed(tmp_path) == 2 * n  # each row twice: merged and merged away
        assert writer.remove_retired() == 16
        assert writer.remove_retired() == 0  # nothing left to remove
    manifest = read_manifest(tmp_path)
    assert manifest is not None and manifest.retired == []
    on_disk = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet")}
    assert on_disk == {f["path"] for f in manifest.files}
    assert globbed(tmp_path) == n and offsets_read(tmp_path) == list(range(n))


def test_the_lock_is_readable_where_the_exports_files_are(tmp_path: Path) -> None:
    # A review: the lock was 0600, so an auditor of the folder's group could not ask whether
    # an export runs, and took a flush's files for inserted ones.
    shared_dir, private_dir = tmp_path / "shared", tmp_path / "private"
    for folder, mode in ((shared_dir, 0o750), (private_dir, 0o700)):
        folder.mkdir()
        folder.chmod(mode)
        with ExportWriter(folder, TOPICS):
            assert stat.S_IMODE((folder / LOCK).stat().st_mode) == (
                0o640 if mode == 0o750 else 0o600
            )


def test_an_export_waiting_on_a_silent_broker_says_so_then_gives_up(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # An operator's drill: an export whose broker was killed sat silent for its 30 s.
    from ledger.audit import fromkafka

    now = [100.0]
    monkeypatch.setattr(fromkafka.time, "monotonic", lambda: now[0])
    idle = fromkafka.Idle("127.0.0.1:9092", " of ledger.decisions partition 3")
    with caplog.at_level("WARNING", logger="ledger.export"):
        now[0] += fromkafka.IDLE_SAY - 1
        idle.check("it has more")
        assert caplog.messages == []
        now[0] += 2
        idle.check("it has more")
        idle.check("it has more")  # said once
        assert caplog.messages == [
            "waiting for Kafka at 127.0.0.1:9092: no records of ledger.decisions partition 3 "
            "for 5 s although it has more (a broker restarting?); giving up after 30 s"
        ]
        idle.arrived()  # the broker came back: a later silence is said again
        now[0] += fromkafka.IDLE_SAY + 1
        idle.check("it has more")
        assert len(caplog.messages) == 2
    now[0] += fromkafka.IDLE_LIMIT
    with pytest.raises(ExportError) as ended:
        idle.check("it has more")
    assert str(ended.value) == (
        "no records of ledger.decisions partition 3 arrived for 30 s although it has more: "
        "is the broker at 127.0.0.1:9092 healthy? (`ledger ps`)"
    )
