"""Export directories as the audit wing takes them, and as a failed export leaves them.

Every public function of :mod:`ledger.audit` that takes an export directory takes it as a str,
a :class:`~pathlib.Path` or any other path-like object (the README shows
``connect("export")`` and ``verify_export(path)``). A run of ``ledger export`` that fails before
it has exported anything (Kafka unreachable: ``127.0.0.1:1`` refuses at once, no broker is
needed) leaves no directory it created, which the audit commands would otherwise report as
"holds no export"; a directory it did not create, or one holding an export, stays as it was.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import ledger.audit
from ledger.audit import export as exporting
from ledger.audit import history, sources, sql, verify
from ledger.cli.app import cli
from ledger.core.events import DecisionRecorded, Determination
from ledger.errors import LedgerError
from ledger.settings import TopicNames

TOPICS = TopicNames(prefix="paths.")
UNREACHABLE = "127.0.0.1:1"  # connection refused, at once


class Where:
    """A path-like object that is not a :class:`~pathlib.Path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __fspath__(self) -> str:
        return str(self.path)


def _decision() -> DecisionRecorded:
    return DecisionRecorded(
        event_id="dec-1",
        occurred_at=datetime(2026, 5, 1, 12, tzinfo=UTC),
        actor="service:evaluator",
        request_id="req-1",
        requested_at=datetime(2026, 5, 1, 12, tzinfo=UTC),
        action="refund.issue",
        principal="agent:bot",
        resource="account:1",
        determination=Determination.ALLOW,
    )


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("paths") / "export"
    exporting.write_events(directory, TOPICS, [(TOPICS.decisions, _decision())])
    return directory


def _count(con: Any) -> int:
    try:
        return int(con.execute("SELECT count(*) FROM decisions").fetchone()[0])
    finally:
        con.close()


def _decision_id(source: sources.ExportSource) -> str:
    try:
        return source.decision("req-1").event_id
    finally:
        source.close()


READERS: dict[str, Callable[[Any], object]] = {
    "ledger.audit.connect": lambda p: _count(ledger.audit.connect(p)),
    "sql.connect": lambda p: _count(sql.connect(p, read_only=True)),
    "sql.base_views_sql": lambda p: len(sql.base_views_sql(p)[1]),
    "export.read_manifest": lambda p: exporting.read_manifest(p) is not None,
    "history.load_export_history": lambda p: len(history.load_export_history(p)),
    "sources.export_dir": lambda p: sources.export_dir(p).name,
    "sources.resolve_topics": lambda p: sources.resolve_topics(p).prefix,
    "sources.topic_files": lambda p: len(sources.topic_files(p, TOPICS.decisions)),
    "sources.ExportSource": lambda p: _decision_id(sources.ExportSource(p)),
    "verify.verify_export": lambda p: verify.verify_export(p, allow_unchained=True).records,
}


@pytest.mark.parametrize("read", READERS.values(), ids=READERS.keys())
def test_every_reader_takes_a_str_or_any_path_like(
    export_dir: Path, read: Callable[[Any], object]
) -> None:
    expected = read(export_dir)
    assert read(str(export_dir)) == expected
    assert read(Where(export_dir)) == expected


def test_the_writers_take_a_str_or_any_path_like(tmp_path: Path) -> None:
    exporting.write_events(str(tmp_path / "a"), TOPICS, [(TOPICS.decisions, _decision())])
    writer = exporting.ExportWriter(Where(tmp_path / "b"), TOPICS)
    writer.add_event(TOPICS.decisions, 0, 0, _decision())
    writer.flush()
    assert writer.out == tmp_path / "b"
    for name in ("a", "b"):
        assert _count(sql.connect(tmp_path / name)) == 1


# --------------------------------------------------------------------------- a failed export


def test_a_failed_export_leaves_no_directory_it_created(tmp_path: Path) -> None:
    out = tmp_path / "new" / "export"  # its parent is created too, and removed
    with pytest.raises(LedgerError, match=re.escape(UNREACHABLE)):
        exporting.export(out, UNREACHABLE, TOPICS, helpers=0)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_follow_leaves_no_directory_it_created(tmp_path: Path) -> None:
    out = tmp_path / "export"
    with pytest.raises(LedgerError, match=re.escape(UNREACHABLE)):
        exporting.follow(out, UNREACHABLE, TOPICS, stop=threading.Event())
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_keeps_what_it_did_not_create(tmp_path: Path, export_dir: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(LedgerError):
        exporting.export(mine, UNREACHABLE, TOPICS, helpers=0)
    assert mine.is_dir() and list(mine.iterdir()) == []
    before = {p: p.read_bytes() for p in export_dir.rglob("*") if p.is_file()}
    with pytest.raises(LedgerError):
        exporting.export(export_dir, UNREACHABLE, TOPICS, helpers=0)
    assert {p: p.read_bytes() for p in export_dir.rglob("*") if p.is_file()} == before


@pytest.fixture
def unreachable_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's environment pointed at a Kafka that refuses at once, with no credentials."""
    monkeypatch.setenv("LEDGER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LEDGER_BOOTSTRAP", UNREACHABLE)
    for name in [n for n in os.environ if n.startswith(("LEDGER_SASL", "LEDGER_SSL"))]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("LEDGER_SECURITY_PROTOCOL", raising=False)


@pytest.mark.usefixtures("unreachable_cli")
def test_the_cli_fails_in_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "x"
    done = CliRunner().invoke(cli, ["export", "--out", str(out)], catch_exceptions=False)
    assert done.exit_code == 7, done.output
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not out.exists()
    # So the audit commands say what is wrong: no export was made there.
    done = CliRunner().invoke(cli, ["audit", "sql", "SELECT 1", "--from", str(out)])
    assert done.exit_code == 9 and "does not exist" in done.stderr


@pytest.mark.parametrize("option", ["--since", "--until"])
def test_a_time_range_is_told_why_there_is_none_and_what_to_do(tmp_path: Path, option: str) -> None:
    # An auditor's walkthrough: `export --since` was told only "No such option … Did you mean
    # --json?"; the README says why there is none and what to hand over instead.
    out = tmp_path / "x"
    done = CliRunner().invoke(cli, ["export", "--out", str(out), option, "2026-10-01"])
    assert done.exit_code == 2, done.output
    assert "an export has no time range" in done.stderr and "ledger audit sql" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()
    assert option not in CliRunner().invoke(cli, ["export", "--help"]).stdout


@pytest.mark.usefixtures("unreachable_cli")
def test_the_cli_refuses_a_directory_another_export_is_writing_to(tmp_path: Path) -> None:
    out = tmp_path / "x"
    with exporting.ExportWriter(out, TopicNames()):  # e.g. a running `ledger export --follow`
        done = CliRunner().invoke(cli, ["export", "--out", str(out)], catch_exceptions=False)
    assert done.exit_code == 9, done.output
    assert done.stderr == (
        f"error: another export is writing to {out} (pid {os.getpid()}): wait for it to "
        "finish, or stop it (`ledger export --follow` holds its directory until it stops) "
        "[export_error]\n"
    )
