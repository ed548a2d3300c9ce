"""An export directory is often shared (a team's audit share, object storage mounted for
analysts), so whoever can write into it can plant links and rewrite its manifest. Nothing they
plant may make ``ledger export`` write, truncate or remove a file outside the directory, or make
a reader open one: each attack here did, before the writer refused links and the manifest was
checked as it is read (``ledger.audit.manifest``)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from export_format import rejected as command_rejected

from ledger.audit.export import LOCK, MANIFEST, ExportWriter, read_manifest
from ledger.cli.app import cli
from ledger.core.events import CommandRejected
from ledger.errors import ExportError
from ledger.settings import TopicNames

TOPICS = TopicNames(prefix="h.")
T0 = datetime(2026, 2, 1, tzinfo=UTC)
SECRET = b"the victim's own bytes\n" * 50


def rejected(n: int) -> CommandRejected:
    return command_rejected(n, T0)


def exported(out: Path, numbers: range = range(3)) -> None:
    with ExportWriter(out, TOPICS) as writer:
        for n in numbers:
            writer.add_event(TOPICS.command_results, 0, n, rejected(n))
        writer.flush()


def same_day(n: int) -> CommandRejected:
    return dataclasses.replace(rejected(n), occurred_at=T0 + timedelta(minutes=n))


def victim(tmp_path: Path, name: str = "victim.txt") -> Path:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    path = elsewhere / name
    path.write_bytes(SECRET)
    return path


def edit_manifest(out: Path, change: Any) -> None:
    path = out / MANIFEST
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


# --------------------------------------------------------------------------- links


def test_a_linked_lock_file_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    # The writer opened the lock through the link, truncated it and wrote its pid there.
    out = tmp_path / "export"
    out.mkdir()
    target = victim(tmp_path)
    (out / LOCK).symlink_to(target)
    with pytest.raises(ExportError, match="is a symbolic link, not an export's lock"):
        ExportWriter(out, TOPICS)
    assert target.read_bytes() == SECRET


def test_a_hard_linked_lock_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "export"
    out.mkdir()
    target = victim(tmp_path)
    os.link(target, out / LOCK)
    with pytest.raises(ExportError, match="not a plain file of its own"):
        ExportWriter(out, TOPICS)
    assert target.read_bytes() == SECRET


def test_links_planted_under_temporary_names_are_never_followed(tmp_path: Path) -> None:
    # Between two flushes of a --follow, a link under the manifest's temporary name (the
    # writer's pid is in the lock file) took the manifest's bytes to the link's target.
    out = tmp_path / "export"
    target = victim(tmp_path)
    with ExportWriter(out, TOPICS) as writer:
        writer.add_event(TOPICS.command_results, 0, 0, rejected(0))
        writer.flush()
        (out / f".{MANIFEST}.tmp-{os.getpid()}").symlink_to(target)
        directory = next((out / f"topic={TOPICS.command_results}").iterdir())
        name = f"{TOPICS.command_results}+0+1.parquet"
        (directory / f".{name}.tmp-{os.getpid()}").symlink_to(target)
        writer.add_event(TOPICS.command_results, 0, 1, rejected(1))
        writer.flush()
    assert target.read_bytes() == SECRET
    assert not (out / MANIFEST).is_symlink()
    manifest = read_manifest(out)
    assert manifest is not None and manifest.next_offset(TOPICS.command_results, 0) == 2


def test_a_linked_date_directory_is_neither_emptied_nor_written(tmp_path: Path) -> None:
    # The repair, looking for leftovers, followed the link and removed every .parquet file in
    # the directory it pointed at (even with Kafka unreachable).
    out = tmp_path / "export"
    exported(out)
    data_lake = tmp_path / "lake"
    data_lake.mkdir()
    (data_lake / "sales+0+0.parquet").write_bytes(SECRET)
    (data_lake / ".sales.tmp-1").write_bytes(SECRET)
    topic_dir = out / f"topic={TOPICS.command_results}"
    (topic_dir / "date=1999-01-01").symlink_to(data_lake, target_is_directory=True)
    (out / "topic=linked").symlink_to(data_lake, target_is_directory=True)
    ExportWriter(out, TOPICS).close()  # the repair runs when a writer opens
    assert sorted(p.name for p in data_lake.iterdir()) == [".sales.tmp-1", "sales+0+0.parquet"]

    # Rows of that date are not written through the link either.
    day = datetime(1999, 1, 1, 12, tzinfo=UTC)
    with ExportWriter(out, TOPICS) as writer:
        writer.add_event(
            TOPICS.command_results,
            0,
            3,
            dataclasses.replace(rejected(3), occurred_at=day),
        )
        with pytest.raises(ExportError, match="is not a folder of the export"):
            writer.flush()
    assert sorted(p.name for p in data_lake.iterdir()) == [".sales.tmp-1", "sales+0+0.parquet"]


# --------------------------------------------------------------------------- the manifest


def test_retired_paths_outside_the_directory_are_refused_not_removed(tmp_path: Path) -> None:
    out = tmp_path / "export"
    exported(out)
    relative, absolute = victim(tmp_path, "rel.txt"), victim(tmp_path, "abs.txt")
    stamp = "2000-01-01T00:00:00.000000Z"
    for path in (f"../elsewhere/{relative.name}", str(absolute)):
        edit_manifest(out, lambda m, p=path: m.__setitem__("retired", [{"path": p, "at": stamp}]))
        with pytest.raises(ExportError, match=r"retired\[0\]\.path .* is not where an export"):
            ExportWriter(out, TOPICS)
    assert relative.read_bytes() == absolute.read_bytes() == SECRET


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # A path under a hive-style directory: DuckDB took `actor` from the path over the
        # file's own column, and who_approved named the forger while actor verify passed.
        (
            lambda m: m["files"][0].__setitem__(
                "path",
                m["files"][0]["path"].replace("/h.", "/actor=human:mallory/h.", 1),
            ),
            r"files\[0\]\.path .* is not where an export keeps a file",
        ),
        (lambda m: m["files"][0].__setitem__("path", "/srv/hr/salaries.parquet"), "is not where"),
        (
            lambda m: m["files"][0].__setitem__("partition", 1),
            r"is not its topic's, partition's, date's and offsets'",
        ),
        (lambda m: m["files"][0].__setitem__("rows", "many"), r"files\[0\]\.rows is 'many'"),
        (lambda m: m["files"][0].__setitem__("rows", 10**9), r"files\[0\]\.rows"),
        (lambda m: m["files"][0].pop("topic"), r"files\[0\]\.topic: None is not a Kafka topic"),
        (lambda m: m["files"][0].__setitem__("date", "x/../.."), r"files\[0\]\.date"),
        (lambda m: m["files"][0].__setitem__("last_offset", -1), r"last_offset is -1"),
        (
            lambda m: m.__setitem__("retired", [{"path": m["files"][0]["path"]}]),
            r"retired\[0\]\.at None is not a time",
        ),
        (lambda m: m.__setitem__("topic_prefix", "../x"), r"topic_prefix '\.\./x' is not a topic"),
        (lambda m: m.__setitem__("updated_at", 5), "updated_at 5 is not a time"),
        # Of the right form, not a real time: `audit verify` and `actor verify` parsed it, to a
        # ValueError traceback (a maintainability review).
        (
            lambda m: m.__setitem__("read_at", "2026-19-45T99:99:99Z"),
            "read_at '2026-19-45T99:99:99Z' is not a time",
        ),
        (
            lambda m: m.__setitem__("updated_at", "2026-02-30T00:00:00Z"),
            "updated_at '2026-02-30T00:00:00Z' is not a time",
        ),
        (lambda m: m.__setitem__("files", {}), "files is a dict, not a list"),
        (lambda m: m.__setitem__("offsets", []), "offsets is a list, not an object"),
        (
            lambda m: m["offsets"][TOPICS.command_results].__setitem__("x", 1),
            "partition 'x' is not a partition number",
        ),
        # A red team's 150 MB manifest padded with an unknown key was read and accepted
        # (exit 0), and a writer copies such a key into every manifest it rewrites.
        (lambda m: m.__setitem__("pad", "x" * 1000), "the manifest holds 'pad', a key no "),
        (lambda m: m["files"][0].__setitem__("pad", 1), r"files\[0\] holds 'pad', a key no "),
        (
            lambda m: m.__setitem__(
                "retired", [{"path": m["files"][0]["path"], "at": m["updated_at"], "x": 1}]
            ),
            r"retired\[0\] holds 'x', a key no exporter writes",
        ),
    ],
)
def test_a_manifest_out_of_shape_is_one_export_error(
    tmp_path: Path, change: Any, message: str
) -> None:
    out = tmp_path / "export"
    exported(out)
    edit_manifest(out, change)
    with pytest.raises(ExportError, match=message):
        read_manifest(out)
    result = CliRunner().invoke(cli, ["audit", "sql", "--from", str(out), "SELECT 1"])
    assert result.exit_code == 9 and "is not a ledger export manifest" in result.stderr


@pytest.mark.parametrize(
    "text", ['{"offsets": {"t": {"0": 1e400}}}', '{"offsets": {"t": {"0": 1' + "0" * 5000 + "}}}"]
)
def test_numbers_json_cannot_hold_are_one_export_error(tmp_path: Path, text: str) -> None:
    # An OverflowError or ValueError traceback from every reader and the writer.
    (tmp_path / MANIFEST).write_text(text.replace("{", '{"format": 1, "files": [], ', 1))
    with pytest.raises(ExportError, match="is not a ledger export manifest"):
        read_manifest(tmp_path)


def test_a_manifest_that_is_a_device_or_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    # /dev/zero grew every reader to gigabytes; a FIFO nobody writes hung them, and an exporter
    # hung holding the lock blocked every later run.
    (tmp_path / MANIFEST).symlink_to("/dev/zero")
    with pytest.raises(ExportError, match="is not a regular file"):
        read_manifest(tmp_path)
    fifo_dir = tmp_path / "fifo"
    fifo_dir.mkdir()
    os.mkfifo(fifo_dir / MANIFEST)
    done = threading.Event()

    def read() -> None:
        with pytest.raises(ExportError, match="is not a regular file"):
            read_manifest(fifo_dir)
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert done.is_set(), "reading a FIFO manifest hung"


def test_an_honest_export_still_reads_and_grows(tmp_path: Path) -> None:
    out = tmp_path / "export"
    exported(out, range(3))
    exported(out, range(3, 5))
    manifest = read_manifest(out)
    assert manifest is not None and manifest.next_offset(TOPICS.command_results, 0) == 5
    assert [f["rows"] for f in manifest.files] == [3, 2]
    mode = os.stat(out / manifest.files[0]["path"]).st_mode & 0o777
    assert mode == 0o600  # its owner's: the folder it made shares with nobody (folder.shared)


# --------------------------------------------------------------------------- races


def _swap_for_link(folder: Path, target: Path) -> None:
    """What a racing attacker does between the writer's look at a folder and its use."""
    folder.rename(folder.with_name(folder.name + ".moved"))
    folder.symlink_to(target, target_is_directory=True)


def export_and_lake(tmp_path: Path, lake_file: str) -> tuple[Path, Path, Path]:
    """An export, its date= folder, and a directory elsewhere holding ``lake_file``."""
    out = tmp_path / "export"
    exported(out)
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / lake_file).write_bytes(SECRET)
    return out, next((out / f"topic={TOPICS.command_results}").iterdir()), lake


def test_a_folder_swapped_for_a_link_while_a_file_is_written_takes_nothing_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The writer checked the date= folder, then created and renamed its file by path: a link
    # swapped in between had it replace a same-named file in another directory.
    import ledger.audit.folder as safely

    out, folder, lake = export_and_lake(tmp_path, f"{TOPICS.command_results}+0+3.parquet")
    victim_file = next(lake.iterdir())
    original = safely.new_file

    def racing(where: int, name: str) -> Any:
        if name.endswith(".parquet") and not folder.is_symlink():
            _swap_for_link(folder, lake)
        return original(where, name)

    monkeypatch.setattr(safely, "new_file", racing)
    with ExportWriter(out, TOPICS) as writer:
        writer.add_event(TOPICS.command_results, 0, 3, rejected(3))
        writer.flush()
    assert victim_file.read_bytes() == SECRET and sorted(p.name for p in lake.iterdir()) == [
        victim_file.name
    ]
    # The file went to the folder the writer had opened (moved away now); a reader of the
    # export refuses the link that stands in its place.
    assert (folder.with_name(folder.name + ".moved") / victim_file.name).is_file()
    result = CliRunner().invoke(cli, ["audit", "sql", "--from", str(out), "SELECT 1"])
    assert result.exit_code == 9 and "is a symbolic link" in result.stderr


def test_a_folder_swapped_for_a_link_during_the_repair_is_not_entered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, folder, lake = export_and_lake(tmp_path, "sales+0+0.parquet")
    original = ExportWriter._folders

    def racing(self: ExportWriter, parts: tuple[str, ...], prefix: str) -> list[str]:
        found = original(self, parts, prefix)
        if prefix == "date=" and not folder.is_symlink():
            _swap_for_link(folder, lake)  # listed as a folder, a link when it is entered
        return found

    monkeypatch.setattr(ExportWriter, "_folders", racing)
    ExportWriter(out, TOPICS).close()
    assert [p.name for p in lake.iterdir()] == ["sales+0+0.parquet"]


def test_a_listed_file_that_is_a_link_is_neither_read_nor_merged(tmp_path: Path) -> None:
    # A link at a listed name showed readers, and had a merge copy into the shared export,
    # the rows of a private export the planter could not read.
    private = tmp_path / "private"
    exported(private, range(100, 103))
    out = tmp_path / "export"
    with ExportWriter(out, TOPICS) as writer:
        for n in range(20):  # twenty one-row files: a merge is due
            writer.add_event(TOPICS.command_results, 0, n, same_day(n))
            writer.flush()
        assert writer.files_compacted == 16
    manifest = read_manifest(out)
    assert manifest is not None
    small = [f for f in manifest.files if f["rows"] == 1]
    assert len(small) == 4
    secret_file = next(private.rglob("*.parquet"))
    planted = out / small[0]["path"]
    planted.unlink()
    planted.symlink_to(secret_file)
    result = CliRunner().invoke(cli, ["audit", "sql", "--from", str(out), "SELECT 1"])
    assert result.exit_code == 9 and "is a symbolic link" in result.stderr
    with ExportWriter(out, TOPICS) as writer:
        for n in range(20, 32):
            writer.add_event(TOPICS.command_results, 0, n, same_day(n))
            writer.flush()
        assert writer.files_compacted == 0  # the group with the link stays as it is
        assert any("is a symbolic link" in p for p in writer.compaction_problems)


def test_dates_before_year_1000_and_after_9999_keep_the_export_readable(tmp_path: Path) -> None:
    # Year 999 was written as date=999-02-01, which the manifest's check then refused: every
    # later export and audit stopped. A timestamp past year 9999 raised OverflowError.
    out = tmp_path / "export"
    early = dataclasses.replace(rejected(0), occurred_at=datetime(999, 2, 1, tzinfo=UTC))
    with ExportWriter(out, TOPICS) as writer:
        writer.add_event(TOPICS.command_results, 0, 0, early)
        writer.add(TOPICS.command_results, 0, 1, 2**62, None, b"not a record, far in the future")
        writer.flush()
    manifest = read_manifest(out)
    assert manifest is not None
    assert sorted(f["date"] for f in manifest.files) == ["0999-02-01", "9999-12-31"]
    # An export written before, with the year unpadded, still reads.
    edit_manifest(
        out,
        lambda m: [
            f.update(path=f["path"].replace("=0999", "=999"), date="999-02-01")
            for f in m["files"]
            if f["date"] == "0999-02-01"
        ],
    )
    assert read_manifest(out) is not None


def test_a_file_listed_twice_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "export"
    exported(out)
    edit_manifest(out, lambda m: m["files"].append(dict(m["files"][0])))
    with pytest.raises(ExportError, match="is listed twice"):
        read_manifest(out)


def test_a_next_offset_moved_behind_the_files_is_refused(tmp_path: Path) -> None:
    # It was read without complaint: the next export read those offsets again (exit 0, no
    # problem), and every query counted the rows twice (the auditor's walkthrough).
    out = tmp_path / "export"
    exported(out)

    def back(m: dict[str, Any]) -> None:
        entry = m["files"][0]
        m["offsets"][entry["topic"]][str(entry["partition"])] = entry["last_offset"]

    edit_manifest(out, back)
    with pytest.raises(ExportError, match=r"holds offsets up to \d+, but the manifest gives"):
        read_manifest(out)


def test_the_export_folder_renamed_mid_run_takes_nothing_from_another_export(
    tmp_path: Path,
) -> None:
    # The writer looked its top folder up by name for each operation: with write access to the
    # parent, the folder swapped for a link to a private export had the repair delete that
    # export's files and overwrite its manifest.
    private = tmp_path / "private"
    exported(private, range(100, 103))
    before = sorted(p.relative_to(private) for p in private.rglob("*"))
    manifest_before = (private / MANIFEST).read_bytes()
    share = tmp_path / "share"
    share.mkdir()
    out = share / "ledger"
    with ExportWriter(out, TOPICS) as writer:
        writer.add_event(TOPICS.command_results, 0, 0, rejected(0))
        out.rename(share / "moved")
        out.symlink_to(private, target_is_directory=True)
        writer.flush()
        writer.add_event(TOPICS.command_results, 0, 1, rejected(1))
        writer.flush()
    assert sorted(p.relative_to(private) for p in private.rglob("*")) == before
    assert (private / MANIFEST).read_bytes() == manifest_before
    moved = read_manifest(share / "moved")
    assert moved is not None and moved.next_offset(TOPICS.command_results, 0) == 2
    # A helper process checks that the folder it opens is the writer's.
    from ledger.audit.writer import RowFiles

    with pytest.raises(ExportError, match="is no longer the folder this export began in"):
        _ = RowFiles(out, TOPICS, identity=(0, 0)).top


def test_a_manifest_that_is_a_link_is_not_adopted_by_the_writer(tmp_path: Path) -> None:
    # The writer adopted another export's manifest through a link, rewrote it here (readable
    # by all), and its repair removed this export's own files as unlisted.
    private = tmp_path / "private"
    exported(private, range(100, 103))
    out = tmp_path / "export"
    exported(out)
    (out / MANIFEST).unlink()
    (out / MANIFEST).symlink_to(private / MANIFEST)
    files = sorted(out.rglob("*.parquet"))
    with pytest.raises(ExportError, match="is a symbolic link; it must be the manifest itself"):
        ExportWriter(out, TOPICS)
    assert sorted(out.rglob("*.parquet")) == files


def test_a_failed_first_run_removes_only_its_own_empty_folders(tmp_path: Path) -> None:
    out = tmp_path / "new" / "export"
    spool = tmp_path / "spool" / "incoming"
    spool.mkdir(parents=True)
    writer = ExportWriter(out, TOPICS)
    (out / "topic=x").mkdir()
    (out / "topic=x" / "date=2026-01-01").mkdir()
    (out / "topic=y").symlink_to(spool.parent, target_is_directory=True)
    writer.discard()
    assert spool.is_dir()  # not entered through the link
    assert out.is_dir()  # not empty: the link is left where it is
    other = tmp_path / "other" / "export"
    ExportWriter(other, TOPICS).discard()
    assert not (tmp_path / "other").exists()  # nothing written: everything it made is gone


def test_an_export_whose_path_duckdb_would_read_as_a_pattern_is_refused(tmp_path: Path) -> None:
    """A red team's finding: `--from '.../ex*'`, a folder so named beside `exA` and `exB`, read
    all three exports' files and reported tampering that was not there."""
    from ledger.audit.verify import verify_export

    for name in ("exA", "exB"):
        exported(tmp_path / name)
    odd = tmp_path / "ex*"
    shutil.copytree(tmp_path / "exA", odd)  # made elsewhere, then moved here
    with pytest.raises(
        ExportError, match=r"which DuckDB reads as a file pattern .* move or rename"
    ):
        verify_export(odd)
    # And an export is not written where no reader could open it (a reviewer's finding).
    with pytest.raises(ExportError, match="which DuckDB reads as a file pattern"):
        exported(tmp_path / "ex[1]")
    assert not (tmp_path / "ex[1]").exists()


@pytest.mark.parametrize("at", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"])
def test_a_manifest_time_no_exporter_writes_is_one_export_error(tmp_path: Path, at: str) -> None:
    # A review: year 1 passed the check, and `audit verify` and `actor verify` subtracted their
    # grace from it, to an OverflowError traceback.
    out = tmp_path / "export"
    exported(out)
    edit_manifest(out, lambda m: m.__setitem__("read_at", at))
    with pytest.raises(ExportError, match=f"read_at '{at}' is not a time"):
        read_manifest(out)
