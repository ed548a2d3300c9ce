"""``ledger export``: every ledger topic to Parquet (DESIGN §9), once or continuously.

Parsing and printing only: the export itself is :mod:`ledger.audit.export`.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import click

from ledger.cli.common import Seconds, bootstrap_option, connection, load_settings
from ledger.cli.output import err_console, handle_errors, json_option, print_json
from ledger.errors import UsageError
from ledger.settings import KafkaSecurity

__all__ = ["export_cmd"]


def _no_range(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """An export has no time range (an auditor's walkthrough: `--since` was told only that no
    such option exists, "did you mean --json?"): say why, and what to do instead."""
    if value is not None:
        raise click.BadParameter(
            "an export has no time range: it holds every record, since the chains and the "
            "governance history are verified whole. Export, verify, then hand over one "
            "period as a query's answer: ledger audit sql \"SELECT * EXCLUDE (record) FROM "
            "decisions WHERE decided_at >= TIMESTAMPTZ '2026-10-01 00:00:00Z'\" --csv "
            "(README: Export to Parquet)"
        )


@click.command("export", short_help="Export every ledger topic to Parquet.")
@click.option("--since", hidden=True, expose_value=False, callback=_no_range)
@click.option("--until", hidden=True, expose_value=False, callback=_no_range)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Export directory (default: $LEDGER_HOME/export).",
)
@click.option(
    "--follow",
    is_flag=True,
    help="Keep exporting as records arrive, flushing every --interval seconds, until Ctrl-C or "
    "SIGTERM (which stop it cleanly after the current flush).",
)
@click.option(
    "--interval",
    type=Seconds(0.1, 3600),
    default=2.0,
    show_default=True,
    help="With --follow: seconds between flushes (how far the export trails the ledger).",
)
@click.option(
    "--batch-records",
    type=click.IntRange(1, 10_000_000),
    default=200_000,
    show_default=True,
    help="Rows read before a flush (data files, then the manifest): bounds memory, and how much "
    "a killed run has to redo.",
)
@click.option(
    "--remove-retired",
    is_flag=True,
    help="At the end, remove the small files merged away now (else ten minutes after their "
    "merge): before handing the export to a reader that lists folders (a glob, Spark, Trino, "
    "Athena), which would count their rows twice. Not with --follow.",
)
@bootstrap_option
@json_option
@handle_errors
def export_cmd(
    out: Path | None,
    follow: bool,
    interval: float,
    batch_records: int,
    remove_retired: bool,
    bootstrap: str | None,
    as_json: bool,
) -> None:
    """Export every ledger topic to Parquet for SQL audits (`ledger audit`, DuckDB, Spark …).

    Layout: DIR/topic=<topic>/date=YYYY-MM-DD/<topic>+<partition>+<first offset>.parquet and
    DIR/_manifest.json. Incremental and idempotent: a re-run adds exactly what is new, and a run
    that was killed is repaired by the next one. Small files are merged as 16 in a row gather
    (<first>~<last offset>.parquet). One run per DIR at a time. A progress bar shows on a
    terminal; --json prints one summary (records per topic, files written and merged, duration)
    and nothing else.
    """
    from ledger.audit.export import export  # pyarrow, when asked for
    from ledger.audit.export import follow as follow_export

    if follow and remove_retired:
        raise UsageError(
            "--remove-retired is for a run that ends: stop the --follow run, then run "
            "`ledger export --out DIR --remove-retired`"
        )
    settings = load_settings(bootstrap)
    directory = out if out is not None else settings.export_dir
    if out is None:  # the home's own folder: checked as `ledger up` checks it (not a link…)
        from ledger.local.broker import private_home

        private_home(settings)
    address, security = connection(settings, "exporter")
    if follow:
        stop = threading.Event()

        def stop_now(signum: int, frame: FrameType | None) -> None:
            stop.set()

        previous = {sig: signal.signal(sig, stop_now) for sig in (signal.SIGINT, signal.SIGTERM)}
        if not as_json:
            err_console.print(
                f"exporting to {directory} every {interval:g} s; Ctrl-C stops after the "
                "current flush",
                markup=False,
            )

        def flushed(summary: Any) -> None:
            if not as_json:
                err_console.print(
                    f"  {summary.total:,} records, {summary.files_written} files so far",
                    markup=False,
                )

        try:
            summary = follow_export(
                directory,
                address,
                settings.topics,
                stop=stop,
                interval=interval,
                batch_records=batch_records,
                on_flush=flushed,
                security=security,
            )
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    elif as_json or not sys.stderr.isatty():
        summary = export(
            directory,
            address,
            settings.topics,
            batch_records=batch_records,
            security=security,
            remove_retired=remove_retired,
        )
    else:
        summary = _with_progress(
            directory,
            address,
            settings.topics,
            functools.partial(export, remove_retired=remove_retired),
            batch_records,
            security,
        )
    if as_json:
        print_json(summary.to_json())
        return
    for problem in summary.problems:
        err_console.print(f"warning: {problem}", markup=False)
    if summary.unlisted:
        shown = ", ".join(summary.unlisted[:5]) + (
            f" and {len(summary.unlisted) - 5} more" if len(summary.unlisted) > 5 else ""
        )
        err_console.print(
            f"note: removed {len(summary.unlisted)} data file(s) the manifest did not list "
            f"({shown}): left by an export stopped before writing its manifest, or put there by "
            "someone else",
            markup=False,
        )
    per_topic = ", ".join(f"{t}: {n:,}" for t, n in summary.records.items() if n)
    click.echo(
        f"exported {summary.total:,} new records to {directory} in {summary.duration_s:.1f} s "
        f"({summary.files_written} files"
        f"{f', {summary.compacted} small files merged' if summary.compacted else ''})"
        f"{': ' + per_topic if per_topic else ''}"
    )
    if remove_retired:
        click.echo(
            f"removed {summary.retired_removed} file(s) merged away: the folders hold the "
            "manifest's files only"
        )


def _with_progress(
    directory: Path,
    address: str,
    topics: Any,
    export: Any,
    batch_records: int,
    security: KafkaSecurity,
) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("exporting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
    task = bar.add_task("export", total=None)
    shown = False

    def progress(done: int, total: int) -> None:
        nonlocal shown
        if not shown:
            # Shown once the export knows how much it has to read.
            bar.start()
            shown = True
        bar.update(task, completed=done, total=total)

    try:
        return export(
            directory,
            address,
            topics,
            progress=progress,
            batch_records=batch_records,
            security=security,
        )
    finally:
        if shown:
            bar.stop()
